//! Verdict delay: how long after a proxy wrote a 5xx its verdict reached a reader. A
//! verdict's `time` is its response's time (the kernel's timestamp of the write, see
//! docs/trace-format.md), so the delay is the moment the verdict line arrived minus that
//! time, both on the wall clock. Two readers run side by side: one follows the trace file
//! (what the tracer wrote and flushed, polled every millisecond), one reads the control
//! socket (what a live reader such as `tracer live` gets).

use std::{
    collections::{BTreeMap, HashSet},
    io::Read,
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use tracer::report::{nearest_rank, parse_rfc3339};

/// How often the file reader looks for new lines: the resolution of its delays.
const FILE_POLL: Duration = Duration::from_millis(1);

/// A verdict line and when it arrived, in wall-clock nanoseconds.
struct Arrival {
    at_ns: i128,
    line: String,
}

/// Reads records on its own thread until stopped.
pub struct VerdictReader {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Collected>,
}

#[derive(Default)]
struct Collected {
    verdicts: Vec<Arrival>,
    /// `(time, client)` of every `response` record, to check each verdict against its response.
    responses: HashSet<(String, String)>,
    lagged: u64,
}

impl VerdictReader {
    /// Connects to the tracer's control socket and starts reading.
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        // Bounded reads, so that the stop flag is seen even when the stream goes quiet.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        Self::spawn("verdicts-socket", stream, false)
    }

    /// Follows the trace file from its beginning.
    pub fn tail_file(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::spawn("verdicts-file", file, true)
    }

    fn spawn(name: &str, source: impl Read + Send + 'static, follow: bool) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || read_records(source, follow, &flag))?;
        Ok(Self { stop, thread })
    }

    /// Stops reading and computes the delays.
    pub fn finish(self) -> VerdictDelays {
        self.stop.store(true, Ordering::Relaxed);
        let collected = self.thread.join().unwrap_or_default();
        VerdictDelays::from_collected(collected)
    }
}

/// Reads lines until stopped; at the end of a `follow`ed file, waits for more.
fn read_records(mut source: impl Read, follow: bool, stop: &AtomicBool) -> Collected {
    // The reader is the measuring instrument: on a saturated host its own scheduling delay
    // would be counted as the tracer's. The highest priority keeps it out of the way; the
    // tracer itself keeps its default priority.
    // SAFETY: setpriority on this thread's own id; failure only leaves the default priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20);
    }
    let mut out = Collected::default();
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        match source.read(&mut chunk) {
            Ok(0) if follow => std::thread::sleep(FILE_POLL),
            Ok(0) => break,
            Ok(n) => {
                let at_ns = wall_now_ns();
                pending.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                while let Some(len) = pending[start..].iter().position(|&b| b == b'\n') {
                    if let Ok(line) = std::str::from_utf8(&pending[start..start + len]) {
                        record(line, at_ns, &mut out);
                    }
                    start += len + 1;
                }
                pending.drain(..start);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    out
}

/// Keeps what a line says about verdicts; only the few record types of interest are parsed.
fn record(line: &str, at_ns: i128, out: &mut Collected) {
    if line.contains("\"type\":\"verdict\"") {
        out.verdicts.push(Arrival {
            at_ns,
            line: line.to_string(),
        });
    } else if line.contains("\"type\":\"response\"") {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            out.responses
                .insert((str_of(&v, "time"), str_of(&v, "raddr")));
        }
    } else if line.contains("\"type\":\"lagged\"") {
        out.lagged += serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["missed"].as_u64())
            .unwrap_or(0);
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn wall_now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The measured delays.
#[derive(Debug, Default)]
pub struct VerdictDelays {
    /// Delay of each verdict with `source` `kernel`, in milliseconds.
    pub delays_ms: Vec<f64>,
    /// Kernel verdicts whose `time` and `client` equal a `response` record's.
    pub matched_to_response: usize,
    /// Verdicts by cause.
    pub causes: BTreeMap<String, u64>,
    /// Delays of kernel verdicts by cause, in milliseconds.
    pub delays_by_cause_ms: BTreeMap<String, Vec<f64>>,
    /// Records the socket reported as missed by this reader.
    pub lagged: u64,
    /// `response` records seen without a verdict read for them.
    pub responses_without_verdict: usize,
}

impl VerdictDelays {
    fn from_collected(c: Collected) -> Self {
        let mut out = Self {
            lagged: c.lagged,
            ..Self::default()
        };
        let mut answered = HashSet::new();
        for a in &c.verdicts {
            let Ok(v) = serde_json::from_str::<Value>(&a.line) else {
                continue;
            };
            let cause = str_of(&v, "cause");
            *out.causes.entry(cause.clone()).or_default() += 1;
            // Access-log verdicts are dated when their line was read, not by a response.
            if v["source"] != "kernel" {
                continue;
            }
            let time = str_of(&v, "time");
            let Some(t) = parse_rfc3339(&time) else {
                continue;
            };
            let key = (time, str_of(&v, "client"));
            if c.responses.contains(&key) {
                out.matched_to_response += 1;
            }
            answered.insert(key);
            let delay_ms = (a.at_ns - t) as f64 / 1e6;
            out.delays_ms.push(delay_ms);
            out.delays_by_cause_ms
                .entry(cause)
                .or_default()
                .push(delay_ms);
        }
        out.responses_without_verdict = c.responses.difference(&answered).count();
        out.delays_ms.sort_by(f64::total_cmp);
        for d in out.delays_by_cause_ms.values_mut() {
            d.sort_by(f64::total_cmp);
        }
        out
    }

    /// The summary for the report.
    pub fn json(&self) -> Value {
        let dist = |d: &[f64]| {
            json!({
                "p50": nearest_rank(d, 50),
                "p90": nearest_rank(d, 90),
                "p99": nearest_rank(d, 99),
                "max": d.last().copied(),
            })
        };
        json!({
            "verdicts": self.causes.values().sum::<u64>(),
            "kernel_verdicts": self.delays_ms.len(),
            "matched_to_response": self.matched_to_response,
            "responses_without_verdict": self.responses_without_verdict,
            "causes": self.causes,
            "lagged": self.lagged,
            "delay_ms": dist(&self.delays_ms),
            "delay_ms_by_cause": self.delays_by_cause_ms
                .iter()
                .map(|(cause, d)| (cause.clone(), dist(d)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_from_arrivals() {
        let verdict = |time: &str, source: &str| {
            format!(
                "{{\"type\":\"verdict\",\"time\":\"{time}\",\"client\":\"10.0.0.2:5\",\"cause\":\"connect_refused\",\"source\":\"{source}\"}}\n"
            )
        };
        let t0 = parse_rfc3339("2026-11-24T13:00:00Z").unwrap();
        let collected = Collected {
            verdicts: vec![
                Arrival {
                    at_ns: t0 + 2_000_000,
                    line: verdict("2026-11-24T13:00:00Z", "kernel"),
                },
                Arrival {
                    at_ns: t0 + 9_000_000,
                    line: verdict("2026-11-24T13:00:00.001Z", "kernel"),
                },
                Arrival {
                    at_ns: t0,
                    line: verdict("2026-11-24T12:59:00Z", "access_log"),
                },
            ],
            responses: [("2026-11-24T13:00:00Z".to_string(), "10.0.0.2:5".to_string())].into(),
            lagged: 0,
        };
        let d = VerdictDelays::from_collected(collected);
        assert_eq!(d.delays_ms, vec![2.0, 8.0]);
        assert_eq!(d.matched_to_response, 1);
        assert_eq!(d.causes["connect_refused"], 3);
    }
}
