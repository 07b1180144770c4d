//! Load from Debian's `wrk`, run on the client host, and what it reports.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// One wrk run's parameters.
#[derive(Debug, Clone)]
pub struct Load {
    /// Open connections (wrk `-c`).
    pub connections: u32,
    /// Length of the run.
    pub duration: Duration,
    /// A Lua script choosing each request (wrk `-s`).
    pub script: Option<std::path::PathBuf>,
    /// CPU to pin wrk to, if any.
    pub cpu: Option<usize>,
}

/// What wrk measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Responses with a status other than 2xx or 3xx.
    pub non_2xx: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
}

impl WrkResult {
    /// The result as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        })
    }
}

/// Runs wrk in `netns` against `url` and parses its report. wrk stops itself after the
/// duration; it is killed if it runs 30 s longer than that.
pub fn run(netns: &str, url: &str, load: &Load) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    if let Some(cpu) = load.cpu {
        cmd.args(["taskset", "-c", &cpu.to_string()]);
    }
    let secs = load.duration.as_secs_f64().max(1.0).round() as u64;
    cmd.args(["wrk", "-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{secs}s"));
    if let Some(script) = &load.script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(url);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let limit = Duration::from_secs(secs + 30);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("wrk did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .context("wrk stdout")?
        .read_to_string(&mut out)?;
    child
        .stderr
        .take()
        .context("wrk stderr")?
        .read_to_string(&mut err)?;
    if !status.success() {
        bail!("wrk failed ({status}): {out}{err}");
    }
    parse(&out).with_context(|| format!("reading wrk's report:\n{out}{err}"))
}

/// Parses wrk's text report (`--latency`).
pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_rps = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = duration_ms(v)?,
            ["90%", v] => r.p90_ms = duration_ms(v)?,
            ["99%", v] => r.p99_ms = duration_ms(v)?,
            ["Requests/sec:", v] => {
                r.rps = v.parse()?;
                seen_rps = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse()?;
                r.seconds = duration_ms(t.trim_end_matches(','))? / 1000.0;
            }
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !seen_rps || (r.requests == 0 && r.rps > 0.0) {
        bail!("no `Requests/sec:` or `requests in` line");
    }
    Ok(r)
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("{v:?} has no unit"))?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("{v:?}"))?;
    Ok(match unit {
        "us" => num / 1000.0,
        "ms" => num,
        "s" => num * 1000.0,
        "m" => num * 60_000.0,
        "h" => num * 3_600_000.0,
        _ => bail!("unknown unit in {v:?}"),
    })
}

/// A wrk script sending a fault mix: one request in twenty to a port nobody listens on
/// (refused), one in twenty to an upstream that resets, the rest to `ok`.
pub fn fault_script(ok: &str, refused: &str, reset: &str) -> String {
    format!(
        "-- Fault mix of `cargo xtask bench`: 5% refused, 5% reset, 90% healthy.\n\
         local n = 0\n\
         request = function()\n\
         \x20 n = n + 1\n\
         \x20 local m = n % 20\n\
         \x20 local path = \"{ok}\"\n\
         \x20 if m == 0 then path = \"{refused}\" elseif m == 10 then path = \"{reset}\" end\n\
         \x20 return wrk.format(\"GET\", path)\n\
         end\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://10.252.0.1:8000/ka/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.40ms  305.21us  12.48ms   93.73%
    Req/Sec    45.75k     3.09k   50.10k    56.00%
  Latency Distribution
     50%    1.36ms
     75%    1.45ms
     90%    1.58ms
     99%  812.00us
  227354 requests in 5.00s, 32.52MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 11368
Requests/sec:  45456.71
Transfer/sec:      6.50MB
";

    #[test]
    fn parses_a_latency_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 227_354);
        assert_eq!(r.seconds, 5.0);
        assert_eq!(r.rps, 45456.71);
        assert_eq!(r.p50_ms, 1.36);
        assert_eq!(r.p90_ms, 1.58);
        assert_eq!(r.p99_ms, 0.812);
        assert_eq!(r.non_2xx, 11_368);
        assert_eq!(r.socket_errors, 3);
    }

    #[test]
    fn rejects_a_truncated_report() {
        assert!(parse("Running 5s test @ http://x/\n").is_err());
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_ms("2.00s").unwrap(), 2000.0);
        assert_eq!(duration_ms("1.50m").unwrap(), 90_000.0);
        assert!(duration_ms("12").is_err());
    }
}
