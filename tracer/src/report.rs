//! `tracer report`: reads JSON Lines trace files (docs/trace-format.md) and sums them up: totals,
//! verdicts by cause and upstream, upstream latency percentiles, keep-alive races and a
//! minute-by-minute timeline of 5xx verdicts, as text for a terminal or as one JSON document.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek},
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;
use serde::Serialize;
use serde_json::{Map, Value};

/// Values kept per distribution; beyond this, a reservoir sample keeps memory bounded.
const SAMPLE_CAP: usize = 1_000_000;

/// Malformed lines listed by file and line number; the rest are only counted.
const MALFORMED_LISTED: usize = 10;

/// Shown for a verdict whose `upstream` is `null` or missing.
const NO_UPSTREAM: &str = "(none)";

/// Shown for a verdict without a `cause`.
const UNKNOWN_CAUSE: &str = "(unknown)";

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No trace file was named.
    #[error("no trace file given")]
    NoFiles,
    /// A trace file could not be opened or read.
    #[error("cannot read trace file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A gzip trace file holds data that does not decompress (not just a cut-short end).
    #[error("trace file {} is not valid gzip after line {line}: {source}", .path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// Lines read before the bad data.
        line: u64,
        /// What the decompressor said.
        #[source]
        source: io::Error,
    },
}

/// What the report found, also serialisable as one JSON document.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Counts over all files.
    pub totals: Totals,
    /// Verdicts per cause, most frequent first.
    pub verdicts_by_cause: Vec<CauseShare>,
    /// Verdicts per upstream and cause, most frequent upstream first.
    pub verdicts_by_upstream: Vec<UpstreamVerdicts>,
    /// Connect and first-byte latency per upstream address.
    pub latency_by_upstream: Vec<UpstreamLatency>,
    /// Keep-alive race findings per upstream.
    pub keepalive_races: Vec<KeepaliveRaces>,
    /// 5xx verdicts per UTC minute, in time order; minutes without verdicts are left out.
    pub timeline_5xx: Vec<MinuteCount>,
}

/// Counts over all files.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Files read.
    pub files: u64,
    /// Lines read (after decompression).
    pub lines: u64,
    /// Lines that were JSON objects.
    pub records: u64,
    /// Lines skipped because they were not JSON objects (blank lines included).
    pub malformed: u64,
    /// The first malformed lines, at most ten.
    pub malformed_lines: Vec<MalformedLine>,
    /// The earliest record `time`, RFC 3339 UTC.
    pub first_time: Option<String>,
    /// The latest record `time`, RFC 3339 UTC.
    pub last_time: Option<String>,
    /// `start` records, i.e. tracer runs.
    pub runs: u64,
    /// `verdict` records.
    pub verdicts: u64,
    /// `retried` records.
    pub retried: u64,
    /// Events lost in the kernel: the `lost` of the last `stats` record of each run, summed.
    pub lost: u64,
}

/// Where a malformed line is.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct MalformedLine {
    /// The file, as given.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// The file's last line, without its newline: cut short by a crash or `kill -9`.
    pub cut: bool,
}

/// Verdicts of one cause.
#[derive(Debug, Default, Serialize)]
pub struct CauseShare {
    /// Cause id.
    pub cause: String,
    /// Verdicts.
    pub count: u64,
    /// Share of all verdicts, percent with one decimal.
    pub share_pct: f64,
}

/// A count for one cause.
#[derive(Debug, Default, Serialize)]
pub struct CauseCount {
    /// Cause id.
    pub cause: String,
    /// Verdicts.
    pub count: u64,
}

/// Verdicts blaming one upstream.
#[derive(Debug, Default, Serialize)]
pub struct UpstreamVerdicts {
    /// Upstream `ip:port`, `None` when the verdict named none.
    pub upstream: Option<String>,
    /// Verdicts.
    pub total: u64,
    /// Split by cause, most frequent first.
    pub causes: Vec<CauseCount>,
}

/// Latencies to one upstream address.
#[derive(Debug, Default, Serialize)]
pub struct UpstreamLatency {
    /// Upstream `ip:port` (`raddr` of `role` `upstream` records).
    pub upstream: String,
    /// Handshake latency (`connect.latency_us`).
    pub connect: Distribution,
    /// Time to first byte: percentiles of the sampled `ttfb.ttfb_us`, count and max of every
    /// request (`ttfb` records and `ttfb_summary` tallies).
    pub ttfb: Distribution,
    /// `connect_error` records.
    pub connect_errors: u64,
}

/// Percentiles of one set of values, in milliseconds rounded to the microsecond.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Distribution {
    /// Values seen.
    pub count: u64,
    /// Values the percentiles were computed from (fewer than `count` beyond the sample cap).
    pub sampled: u64,
    /// Nearest-rank 50th percentile.
    pub p50_ms: Option<f64>,
    /// Nearest-rank 90th percentile.
    pub p90_ms: Option<f64>,
    /// Nearest-rank 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest value (exact, even beyond the sample cap).
    pub max_ms: Option<f64>,
}

/// Keep-alive races on one upstream.
#[derive(Debug, Default, Serialize)]
pub struct KeepaliveRaces {
    /// Upstream `ip:port`, `None` when the verdict named none.
    pub upstream: Option<String>,
    /// `keepalive_race` verdicts: races that reached the client as an error.
    pub verdicts: u64,
    /// `retried` records: races the proxy recovered from.
    pub retried: u64,
    /// Shortest `idle_at_reuse_ms` of those verdicts and retries.
    pub idle_at_reuse_min_ms: Option<f64>,
    /// Nearest-rank median `idle_at_reuse_ms`.
    pub idle_at_reuse_median_ms: Option<f64>,
    /// Shortest `upstream_idle_timeout_ms` the verdicts reported.
    pub upstream_idle_timeout_ms: Option<f64>,
    /// The distinct `advice` sentences, in order of first appearance.
    pub advice: Vec<String>,
}

/// 5xx verdicts within one minute.
#[derive(Debug, Default, Serialize)]
pub struct MinuteCount {
    /// The minute, UTC, `YYYY-MM-DDTHH:MMZ`.
    pub minute: String,
    /// Verdicts.
    pub total: u64,
    /// Split by cause, most frequent first.
    pub causes: Vec<CauseCount>,
}

/// Reads trace files (plain or gzip, detected by the 1f 8b magic, not by name), skipping malformed lines (counted, and a warning logged for a last line cut short by a crash).
pub fn read(files: &[PathBuf]) -> Result<Report, ReportError> {
    read_capped(files, SAMPLE_CAP)
}

fn read_capped(files: &[PathBuf], cap: usize) -> Result<Report, ReportError> {
    if files.is_empty() {
        return Err(ReportError::NoFiles);
    }
    let mut acc = Acc::new(cap);
    // Runs continue across files (a rotated trace splits one run), so only `start` records
    // begin a new one: give the files oldest first.
    for path in files {
        read_file(path, &mut acc)?;
    }
    Ok(acc.finish())
}

fn read_file(path: &Path, acc: &mut Acc) -> Result<(), ReportError> {
    let err = |source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let gzip = has_gzip_magic(&mut file).map_err(err)?;
    let mut reader: Box<dyn BufRead> = if gzip {
        // Multi-member: gzip files may be concatenated, and `cat a.gz b.gz` is valid gzip.
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    acc.totals.files += 1;
    let name = path.display().to_string();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let stream_cut = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => false,
            // A gzip writer killed mid-stream leaves a truncated stream: keep what decoded.
            Err(e) if gzip && e.kind() == io::ErrorKind::UnexpectedEof => {
                log::warn!(
                    "{name}: the gzip stream ends early after line {line_no} (cut short by a crash?); reading what it holds"
                );
                true
            }
            Err(e) if gzip && is_corrupt(&e) => {
                return Err(ReportError::Gzip {
                    path: path.to_path_buf(),
                    line: line_no,
                    source: e,
                });
            }
            Err(e) => return Err(err(e)),
        };
        if !buf.is_empty() {
            line_no += 1;
            acc.line(&name, line_no, &buf);
        }
        if stream_cut {
            break;
        }
    }
    Ok(())
}

fn is_corrupt(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    )
}

/// Whether the file starts with the gzip magic; leaves the file at its start.
fn has_gzip_magic(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut n = 0;
    // A short read is allowed by `read`, so loop until two bytes or the end.
    while n < magic.len() {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.rewind()?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// A bounded set of values: all of them up to `cap`, then a uniform reservoir sample. Count,
/// min and max stay exact.
#[derive(Debug)]
struct Sample {
    cap: usize,
    values: Vec<f64>,
    seen: u64,
    min: Option<f64>,
    max: Option<f64>,
    rng: u64,
}

impl Sample {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            values: Vec::new(),
            seen: 0,
            min: None,
            max: None,
            // Fixed seed: the same files give the same report.
            rng: 0x5eed,
        }
    }

    fn push(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.seen += 1;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
        if self.values.len() < self.cap {
            self.values.push(v);
        } else {
            // Algorithm R: the n-th value replaces a kept one with probability cap/n.
            let j = self.next_rand() % self.seen;
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.values.get_mut(j)) {
                *slot = v;
            }
        }
    }

    /// Counts `n` values that are not part of the sample the percentiles come from (a
    /// `ttfb_summary`, or a `ttfb` recorded for another reason than the sample), the largest
    /// being `max`.
    fn count_only(&mut self, n: u64, max: f64) {
        if n == 0 || !max.is_finite() {
            return;
        }
        self.seen += n;
        self.max = Some(self.max.map_or(max, |m| m.max(max)));
    }

    /// splitmix64: enough randomness for sampling without a crate.
    fn next_rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn sorted(&mut self) -> &[f64] {
        self.values.sort_by(f64::total_cmp);
        &self.values
    }

    /// Percentiles of values in microseconds, as milliseconds.
    fn distribution_us(&mut self) -> Distribution {
        let seen = self.seen;
        let max = self.max;
        let sorted = self.sorted();
        let ms = |v: Option<f64>| v.map(|us| round3(us / 1000.0));
        Distribution {
            count: seen,
            sampled: sorted.len() as u64,
            p50_ms: ms(nearest_rank(sorted, 50)),
            p90_ms: ms(nearest_rank(sorted, 90)),
            p99_ms: ms(nearest_rank(sorted, 99)),
            max_ms: ms(max),
        }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p` percent
/// of the values at or below it.
pub fn nearest_rank(sorted: &[f64], p: u64) -> Option<f64> {
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    usize::try_from(rank - 1)
        .ok()
        .and_then(|i| sorted.get(i))
        .copied()
}

/// Rounds to three decimals, so that text and JSON show the same number.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Debug)]
struct Latency {
    connect: Sample,
    ttfb: Sample,
    connect_errors: u64,
}

#[derive(Debug)]
struct Races {
    verdicts: u64,
    retried: u64,
    idle: Sample,
    timeout_ms: Option<f64>,
    advice: Vec<String>,
}

/// Running totals while lines are read.
#[derive(Debug)]
struct Acc {
    cap: usize,
    totals: Totals,
    first_ns: Option<i128>,
    last_ns: Option<i128>,
    /// `lost` of the last `stats` record of the current run.
    run_lost: u64,
    by_cause: BTreeMap<String, u64>,
    by_upstream: BTreeMap<Option<String>, BTreeMap<String, u64>>,
    latency: BTreeMap<String, Latency>,
    races: BTreeMap<Option<String>, Races>,
    /// Minutes since the Unix epoch → cause → 5xx verdicts.
    timeline: BTreeMap<i64, BTreeMap<String, u64>>,
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn f64_field(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key).and_then(Value::as_f64)
}

impl Acc {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            totals: Totals::default(),
            first_ns: None,
            last_ns: None,
            run_lost: 0,
            by_cause: BTreeMap::new(),
            by_upstream: BTreeMap::new(),
            latency: BTreeMap::new(),
            races: BTreeMap::new(),
            timeline: BTreeMap::new(),
        }
    }

    fn line(&mut self, file: &str, line_no: u64, bytes: &[u8]) {
        self.totals.lines += 1;
        let complete = bytes.ends_with(b"\n");
        let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(m)) => self.record(&m),
            _ => {
                // Lines are written whole, so only a crash leaves a last line without its
                // newline; any other bad line is counted without noise.
                if !complete {
                    log::warn!(
                        "{file}: last line {line_no} is cut short (the tracer crashed or was killed?); skipped"
                    );
                }
                self.totals.malformed += 1;
                if self.totals.malformed_lines.len() < MALFORMED_LISTED {
                    self.totals.malformed_lines.push(MalformedLine {
                        file: file.to_string(),
                        line: line_no,
                        cut: !complete,
                    });
                }
            }
        }
    }

    fn record(&mut self, m: &Map<String, Value>) {
        self.totals.records += 1;
        let time = str_field(m, "time").and_then(parse_rfc3339);
        if let Some(t) = time {
            self.first_ns = Some(self.first_ns.map_or(t, |f| f.min(t)));
            self.last_ns = Some(self.last_ns.map_or(t, |l| l.max(t)));
        }
        match str_field(m, "type") {
            Some("start") => {
                self.totals.runs += 1;
                self.totals.lost += self.run_lost;
                self.run_lost = 0;
            }
            Some("stats") => {
                // Cumulative since the run's start: the last one of a run counts.
                if let Some(lost) = m.get("lost").and_then(Value::as_u64) {
                    self.run_lost = lost;
                }
            }
            Some("verdict") => self.verdict(m, time),
            Some("retried") => self.retried(m),
            Some(ty @ ("connect" | "ttfb" | "ttfb_summary" | "connect_error" | "close")) => {
                if str_field(m, "role") != Some("upstream") {
                    return;
                }
                let Some(raddr) = str_field(m, "raddr") else {
                    return;
                };
                let cap = self.cap;
                let lat = self
                    .latency
                    .entry(raddr.to_string())
                    .or_insert_with(|| Latency {
                        connect: Sample::new(cap),
                        ttfb: Sample::new(cap),
                        connect_errors: 0,
                    });
                match ty {
                    "connect" => {
                        if let Some(v) = f64_field(m, "latency_us") {
                            lat.connect.push(v);
                        }
                    }
                    // Only the one-in-N sample (`why` absent in older traces) gives
                    // percentiles; the other records and the summaries count.
                    "ttfb" => match (f64_field(m, "ttfb_us"), str_field(m, "why")) {
                        (Some(v), None | Some("sample")) => lat.ttfb.push(v),
                        (Some(v), Some(_)) => lat.ttfb.count_only(1, v),
                        (None, _) => {}
                    },
                    "ttfb_summary" => {
                        let n = m.get("requests").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(max) = f64_field(m, "ttfb_max_us") {
                            lat.ttfb.count_only(n, max);
                        }
                    }
                    // A connection's held `connect` and first `ttfb`, written with its close.
                    "close" => {
                        if let Some(v) = f64_field(m, "connect_us") {
                            lat.connect.push(v);
                        }
                        if let Some(v) = f64_field(m, "ttfb_us") {
                            lat.ttfb.push(v);
                        }
                    }
                    _ => lat.connect_errors += 1,
                }
            }
            _ => {}
        }
    }

    fn races(&mut self, upstream: Option<String>) -> &mut Races {
        let cap = self.cap;
        self.races.entry(upstream).or_insert_with(|| Races {
            verdicts: 0,
            retried: 0,
            idle: Sample::new(cap),
            timeout_ms: None,
            advice: Vec::new(),
        })
    }

    fn verdict(&mut self, m: &Map<String, Value>, time: Option<i128>) {
        self.totals.verdicts += 1;
        let cause = str_field(m, "cause").unwrap_or(UNKNOWN_CAUSE).to_string();
        let upstream = str_field(m, "upstream").map(str::to_string);
        *self.by_cause.entry(cause.clone()).or_default() += 1;
        *self
            .by_upstream
            .entry(upstream.clone())
            .or_default()
            .entry(cause.clone())
            .or_default() += 1;
        let status = m.get("status").and_then(Value::as_u64);
        if let (Some(500..=599), Some(t)) = (status, time) {
            let minute = i64::try_from(t.div_euclid(60_000_000_000)).unwrap_or(i64::MAX);
            *self
                .timeline
                .entry(minute)
                .or_default()
                .entry(cause.clone())
                .or_default() += 1;
        }
        if cause == "keepalive_race" {
            let idle = f64_field(m, "idle_at_reuse_ms");
            let timeout = f64_field(m, "upstream_idle_timeout_ms");
            let advice = str_field(m, "advice");
            let r = self.races(upstream);
            r.verdicts += 1;
            if let Some(v) = idle {
                r.idle.push(v);
            }
            if let Some(t) = timeout {
                r.timeout_ms = Some(r.timeout_ms.map_or(t, |m| m.min(t)));
            }
            if let Some(a) = advice
                && !r.advice.iter().any(|x| x == a)
            {
                r.advice.push(a.to_string());
            }
        }
    }

    fn retried(&mut self, m: &Map<String, Value>) {
        self.totals.retried += 1;
        let upstream = str_field(m, "upstream").map(str::to_string);
        let idle = f64_field(m, "idle_at_reuse_ms");
        let r = self.races(upstream);
        r.retried += 1;
        if let Some(v) = idle {
            r.idle.push(v);
        }
    }

    fn finish(mut self) -> Report {
        let mut totals = std::mem::take(&mut self.totals);
        totals.lost += self.run_lost;
        totals.first_time = self.first_ns.map(crate::clock::rfc3339_from_unix_ns);
        totals.last_time = self.last_ns.map(crate::clock::rfc3339_from_unix_ns);

        let all = totals.verdicts;
        let mut verdicts_by_cause: Vec<CauseShare> = self
            .by_cause
            .iter()
            .map(|(cause, &count)| CauseShare {
                cause: cause.clone(),
                count,
                share_pct: if all == 0 {
                    0.0
                } else {
                    (count as f64 * 1000.0 / all as f64).round() / 10.0
                },
            })
            .collect();
        // Stable sort over the BTreeMap's name order: ties stay alphabetical.
        verdicts_by_cause.sort_by_key(|c| std::cmp::Reverse(c.count));

        let mut verdicts_by_upstream: Vec<UpstreamVerdicts> = self
            .by_upstream
            .iter()
            .map(|(upstream, causes)| UpstreamVerdicts {
                upstream: upstream.clone(),
                total: causes.values().sum(),
                causes: cause_counts(causes),
            })
            .collect();
        verdicts_by_upstream.sort_by_key(|u| std::cmp::Reverse(u.total));

        let mut latency_by_upstream: Vec<UpstreamLatency> = self
            .latency
            .iter_mut()
            .map(|(upstream, l)| UpstreamLatency {
                upstream: upstream.clone(),
                connect: l.connect.distribution_us(),
                ttfb: l.ttfb.distribution_us(),
                connect_errors: l.connect_errors,
            })
            .collect();
        latency_by_upstream
            .sort_by_key(|l| std::cmp::Reverse(l.connect.count + l.ttfb.count + l.connect_errors));

        let mut keepalive_races: Vec<KeepaliveRaces> = self
            .races
            .iter_mut()
            .map(|(upstream, r)| {
                let min = r.idle.min;
                let idle = r.idle.sorted();
                KeepaliveRaces {
                    upstream: upstream.clone(),
                    verdicts: r.verdicts,
                    retried: r.retried,
                    idle_at_reuse_min_ms: min.map(round3),
                    idle_at_reuse_median_ms: nearest_rank(idle, 50).map(round3),
                    upstream_idle_timeout_ms: r.timeout_ms.map(round3),
                    advice: std::mem::take(&mut r.advice),
                }
            })
            .collect();
        keepalive_races.sort_by_key(|r| std::cmp::Reverse(r.verdicts + r.retried));

        let timeline_5xx = self
            .timeline
            .iter()
            .map(|(&minute, causes)| MinuteCount {
                minute: minute_text(minute),
                total: causes.values().sum(),
                causes: cause_counts(causes),
            })
            .collect();

        Report {
            totals,
            verdicts_by_cause,
            verdicts_by_upstream,
            latency_by_upstream,
            keepalive_races,
            timeline_5xx,
        }
    }
}

fn cause_counts(causes: &BTreeMap<String, u64>) -> Vec<CauseCount> {
    let mut v: Vec<CauseCount> = causes
        .iter()
        .map(|(cause, &count)| CauseCount {
            cause: cause.clone(),
            count,
        })
        .collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.count));
    v
}

/// `YYYY-MM-DDTHH:MMZ` for minutes since the Unix epoch.
fn minute_text(minute: i64) -> String {
    let full = crate::clock::rfc3339_from_unix_ns(i128::from(minute) * 60_000_000_000);
    // The full form is `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`; keep up to the minutes.
    format!("{}Z", full.get(..16).unwrap_or(&full))
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`) into nanoseconds since the Unix
/// epoch. Fraction digits beyond nanoseconds are dropped.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if !sep(i + 3, b":") {
                return None;
            }
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let off = oh * 3600 + om * 60;
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    // A leap second (60) is allowed by RFC 3339; it lands on the next minute's first second.
    if i != b.len()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Years start in March so that the leap day is the last day of a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Left or right alignment of a table column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Appends an indented table with columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], align: &[Align], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(" ");
        for ((cell, &w), &a) in cells.zip(&widths).zip(align) {
            l.push(' ');
            match a {
                Align::Left => l.push_str(&format!("{cell:<w$} ")),
                Align::Right => l.push_str(&format!("{cell:>w$} ")),
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn upstream_text(u: &Option<String>) -> String {
    u.clone().unwrap_or_else(|| NO_UPSTREAM.to_string())
}

fn heading(out: &mut String, title: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(title);
    out.push('\n');
}

fn none(out: &mut String) {
    out.push_str("  none\n");
}

impl Report {
    /// Plain text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.totals_text(&mut out);
        self.verdicts_text(&mut out);
        self.latency_text(&mut out);
        self.races_text(&mut out);
        self.timeline_text(&mut out);
        out
    }

    /// The same content as one JSON document.
    pub fn to_json(&self) -> Value {
        // Only strings, numbers, options and vectors: serialisation cannot fail, but say so
        // in the document rather than panic if it ever does.
        serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("cannot serialise: {e}") }))
    }

    fn totals_text(&self, out: &mut String) {
        let t = &self.totals;
        heading(out, "Totals");
        let span = match (&t.first_time, &t.last_time) {
            (Some(f), Some(l)) => format!("{f} to {l}"),
            _ => "none".to_string(),
        };
        let rows = [
            ("files", t.files.to_string()),
            ("lines", t.lines.to_string()),
            ("records", t.records.to_string()),
            ("malformed lines", t.malformed.to_string()),
            ("time span", span),
            ("runs", t.runs.to_string()),
            ("verdicts", t.verdicts.to_string()),
            ("retried", t.retried.to_string()),
            ("lost events", t.lost.to_string()),
        ];
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            out.push_str(&format!("  {k:<w$}  {v}\n"));
            if k == "malformed lines" {
                for m in &t.malformed_lines {
                    let cut = if m.cut { " (cut short)" } else { "" };
                    out.push_str(&format!("    {}:{}{cut}\n", m.file, m.line));
                }
                let more = t.malformed - t.malformed_lines.len() as u64;
                if more > 0 {
                    out.push_str(&format!("    and {more} more\n"));
                }
            }
        }
        if t.lost > 0 {
            out.push_str(
                "  (events were lost in the kernel: verdicts may rest on missing evidence; raise --ring-size)\n",
            );
        }
    }

    fn verdicts_text(&self, out: &mut String) {
        heading(out, "Verdicts by cause");
        if self.verdicts_by_cause.is_empty() {
            none(out);
        } else {
            let rows: Vec<Vec<String>> = self
                .verdicts_by_cause
                .iter()
                .map(|c| {
                    vec![
                        c.cause.clone(),
                        c.count.to_string(),
                        format!("{:.1}%", c.share_pct),
                    ]
                })
                .collect();
            table(
                out,
                &["cause", "count", "share"],
                &[Align::Left, Align::Right, Align::Right],
                &rows,
            );
        }

        heading(out, "Verdicts by upstream");
        if self.verdicts_by_upstream.is_empty() {
            none(out);
        } else {
            let mut rows = Vec::new();
            for u in &self.verdicts_by_upstream {
                for (i, c) in u.causes.iter().enumerate() {
                    let (name, total) = if i == 0 {
                        (upstream_text(&u.upstream), u.total.to_string())
                    } else {
                        (String::new(), String::new())
                    };
                    rows.push(vec![name, total, c.cause.clone(), c.count.to_string()]);
                }
            }
            table(
                out,
                &["upstream", "total", "cause", "count"],
                &[Align::Left, Align::Right, Align::Left, Align::Right],
                &rows,
            );
        }
    }

    fn latency_text(&self, out: &mut String) {
        heading(out, "Latency by upstream (ms)");
        if self.latency_by_upstream.is_empty() {
            none(out);
            return;
        }
        let mut rows = Vec::new();
        let mut sampled = false;
        for l in &self.latency_by_upstream {
            let dist = |metric: &str, d: &Distribution| {
                vec![
                    String::new(),
                    metric.to_string(),
                    d.count.to_string(),
                    opt_ms(d.p50_ms),
                    opt_ms(d.p90_ms),
                    opt_ms(d.p99_ms),
                    opt_ms(d.max_ms),
                ]
            };
            let mut connect = dist("connect", &l.connect);
            connect[0] = l.upstream.clone();
            rows.push(connect);
            rows.push(dist("first byte", &l.ttfb));
            if l.connect_errors > 0 {
                let mut errors = vec![String::new(); 7];
                errors[1] = "connect errors".to_string();
                errors[2] = l.connect_errors.to_string();
                rows.push(errors);
            }
            sampled |= l.connect.sampled < l.connect.count || l.ttfb.sampled < l.ttfb.count;
        }
        let right = Align::Right;
        table(
            out,
            &["upstream", "", "count", "p50", "p90", "p99", "max"],
            &[Align::Left, Align::Left, right, right, right, right, right],
            &rows,
        );
        if sampled {
            out.push_str(&format!(
                "  (percentiles from a sample where count is larger: a random sample of at most {SAMPLE_CAP} values, and for first bytes only the tracer's one-in-N `ttfb` records (--ttfb-every); count and max are exact)\n"
            ));
        }
    }

    fn races_text(&self, out: &mut String) {
        heading(out, "Keep-alive races");
        if self.keepalive_races.is_empty() {
            none(out);
            return;
        }
        let rows: Vec<Vec<String>> = self
            .keepalive_races
            .iter()
            .map(|r| {
                vec![
                    upstream_text(&r.upstream),
                    r.verdicts.to_string(),
                    r.retried.to_string(),
                    opt_ms(r.idle_at_reuse_min_ms),
                    opt_ms(r.idle_at_reuse_median_ms),
                    opt_ms(r.upstream_idle_timeout_ms),
                ]
            })
            .collect();
        let right = Align::Right;
        table(
            out,
            &[
                "upstream",
                "errors",
                "retried",
                "idle min ms",
                "idle median ms",
                "upstream idle timeout ms",
            ],
            &[Align::Left, right, right, right, right, right],
            &rows,
        );
        for r in &self.keepalive_races {
            for a in &r.advice {
                out.push_str(&format!(
                    "  advice for {}: {a}\n",
                    upstream_text(&r.upstream)
                ));
            }
        }
    }

    fn timeline_text(&self, out: &mut String) {
        heading(out, "5xx per minute");
        if self.timeline_5xx.is_empty() {
            none(out);
            return;
        }
        let rows: Vec<Vec<String>> = self
            .timeline_5xx
            .iter()
            .map(|m| {
                let causes: Vec<String> = m
                    .causes
                    .iter()
                    .map(|c| format!("{} {}", c.cause, c.count))
                    .collect();
                vec![m.minute.clone(), m.total.to_string(), causes.join(", ")]
            })
            .collect();
        table(
            out,
            &["minute (UTC)", "total", "causes"],
            &[Align::Left, Align::Right, Align::Left],
            &rows,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::atomic::{AtomicU64, Ordering},
    };

    use flate2::{Compression, write::GzEncoder};
    use serde_json::json;

    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tracer-report-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }

        fn lines(&self, name: &str, records: &[Value]) -> PathBuf {
            self.write(name, jsonl(records).as_bytes())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn jsonl(records: &[Value]) -> String {
        records.iter().map(|r| format!("{r}\n")).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn verdict(time: &str, status: u16, upstream: Option<&str>, cause: &str) -> Value {
        json!({
            "type": "verdict", "time": time, "status": status, "comm": "nginx", "pid": 7,
            "client": "10.0.0.1:50000", "upstream": upstream, "cause": cause,
            "contributing": [], "confidence": 0.95, "summary": "s",
        })
    }

    fn race(time: &str, upstream: &str, idle: f64, timeout: Option<f64>, advice: &str) -> Value {
        let mut v = verdict(time, 502, Some(upstream), "keepalive_race");
        v["idle_at_reuse_ms"] = json!(idle);
        if let Some(t) = timeout {
            v["upstream_idle_timeout_ms"] = json!(t);
        }
        v["advice"] = json!(advice);
        v
    }

    fn retried(upstream: &str, idle: f64) -> Value {
        json!({
            "type": "retried", "time": "2026-11-24T13:14:17.964688236Z", "upstream": upstream,
            "retry_upstream": upstream, "cause": "keepalive_race", "idle_at_reuse_ms": idle,
            "added_latency_ms": 0.841, "comm": "nginx", "pid": 7, "summary": "s",
        })
    }

    fn event(ty: &str, raddr: &str, field: &str, us: f64) -> Value {
        json!({
            "type": ty, "time": "2026-11-24T12:36:51.051428763Z", "pid": 1, "tid": 1,
            "comm": "nginx", "laddr": "10.0.0.2:40000", "raddr": raddr, "role": "upstream",
            field: us,
        })
    }

    fn start(time: &str) -> Value {
        json!({"type": "start", "time": time, "version": "0.1.0", "pid": 1})
    }

    fn stats(lost: u64) -> Value {
        json!({"type": "stats", "time": "2026-11-24T13:14:19.389754510Z", "lost": lost})
    }

    const T: &str = "2026-11-24T13:14:17.000000000Z";
    const A: &str = "10.0.0.5:8080";
    const B: &str = "10.0.0.6:8080";

    #[test]
    fn counts_verdicts_by_cause_and_upstream() {
        let dir = TempDir::new("counts");
        let f = dir.lines(
            "t.jsonl",
            &[
                start(T),
                verdict(T, 502, Some(A), "connect_refused"),
                verdict(T, 502, Some(A), "connect_refused"),
                verdict(T, 504, Some(A), "upstream_timeout"),
                verdict(T, 502, Some(B), "connect_refused"),
                verdict(T, 502, None, "no_network_cause"),
                json!({"type": "some_future_type", "time": T}),
            ],
        );
        let r = read(&[f]).unwrap();
        assert_eq!(r.totals.files, 1);
        assert_eq!(r.totals.lines, 7);
        assert_eq!(r.totals.records, 7);
        assert_eq!(r.totals.malformed, 0);
        assert_eq!(r.totals.verdicts, 5);
        assert_eq!(r.totals.runs, 1);
        let causes: Vec<(&str, u64, f64)> = r
            .verdicts_by_cause
            .iter()
            .map(|c| (c.cause.as_str(), c.count, c.share_pct))
            .collect();
        assert_eq!(
            causes,
            [
                ("connect_refused", 3, 60.0),
                ("no_network_cause", 1, 20.0),
                ("upstream_timeout", 1, 20.0)
            ]
        );
        let a = &r.verdicts_by_upstream[0];
        assert_eq!(a.upstream.as_deref(), Some(A));
        assert_eq!(a.total, 3);
        assert_eq!(a.causes[0].cause, "connect_refused");
        assert_eq!(a.causes[0].count, 2);
        assert_eq!(a.causes[1].cause, "upstream_timeout");
        assert_eq!(r.verdicts_by_upstream.len(), 3);
        assert!(r.verdicts_by_upstream.iter().any(|u| u.upstream.is_none()));

        let text = r.to_text();
        assert!(text.contains("Verdicts by cause"), "{text}");
        assert!(text.contains("(none)"), "{text}");
        assert!(
            text.contains("Latency by upstream (ms)\n  none\n"),
            "{text}"
        );
        assert!(text.contains("Keep-alive races\n  none\n"), "{text}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let dir = TempDir::new("pct");
        let mut recs = Vec::new();
        // Connect latencies 1..=100 ms, in shuffled order; 10 first-byte times of 1..=10 ms.
        for i in (1..=100).rev() {
            recs.push(event("connect", A, "latency_us", f64::from(i) * 1000.0));
        }
        for i in [7, 3, 10, 1, 9, 2, 8, 4, 6, 5] {
            recs.push(event("ttfb", A, "ttfb_us", f64::from(i) * 1000.0));
        }
        recs.push(event("connect", B, "latency_us", 95.309));
        let mut client = event("connect", "10.0.0.9:1", "latency_us", 1.0);
        client["role"] = json!("client");
        recs.push(client);
        recs.push(json!({"type": "connect_error", "raddr": B, "role": "upstream", "time": T}));
        let r = read(&[dir.lines("t.jsonl", &recs)]).unwrap();
        assert_eq!(r.latency_by_upstream.len(), 2);
        let a = &r.latency_by_upstream[0];
        assert_eq!(a.upstream, A);
        let want = |count, p50, p90, p99, max| Distribution {
            count,
            sampled: count,
            p50_ms: Some(p50),
            p90_ms: Some(p90),
            p99_ms: Some(p99),
            max_ms: Some(max),
        };
        assert_eq!(a.connect, want(100, 50.0, 90.0, 99.0, 100.0));
        assert_eq!(a.ttfb, want(10, 5.0, 9.0, 10.0, 10.0));
        let b = &r.latency_by_upstream[1];
        assert_eq!(b.connect, want(1, 0.095, 0.095, 0.095, 0.095));
        assert_eq!(b.ttfb, Distribution::default());
        assert_eq!(b.connect_errors, 1);
        let text = r.to_text();
        assert!(text.contains("connect errors"), "{text}");
    }

    /// A connection's held `connect` and first `ttfb` come as fields of its `close`: they
    /// count as those records would have.
    #[test]
    fn held_records_in_closes_count() {
        let dir = TempDir::new("held");
        let mut recs = Vec::new();
        for i in 1..=4 {
            let mut close = event("close", A, "connect_us", f64::from(i) * 1000.0);
            close["ttfb_us"] = json!(f64::from(i) * 10_000.0);
            recs.push(close);
        }
        recs.push(event("connect", A, "latency_us", 5000.0));
        recs.push(event("close", A, "duration_us", 1.0));
        let r = read(&[dir.lines("t.jsonl", &recs)]).unwrap();
        let a = &r.latency_by_upstream[0];
        assert_eq!((a.connect.count, a.connect.max_ms), (5, Some(5.0)));
        assert_eq!((a.ttfb.count, a.ttfb.p50_ms), (4, Some(20.0)));
    }

    #[test]
    fn nearest_rank_edges() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[4.0], 1), Some(4.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50), Some(2.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 99), Some(4.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 0), Some(1.0));
    }

    #[test]
    fn sample_is_capped_but_count_and_max_exact() {
        let dir = TempDir::new("cap");
        let recs: Vec<Value> = (1..=1000)
            .map(|i| event("connect", A, "latency_us", f64::from(i)))
            .collect();
        let r = read_capped(&[dir.lines("t.jsonl", &recs)], 10).unwrap();
        let d = &r.latency_by_upstream[0].connect;
        assert_eq!(d.count, 1000);
        assert_eq!(d.sampled, 10);
        assert_eq!(d.max_ms, Some(1.0));
        // A uniform sample of 1..=1000: its median is very unlikely to sit at the first values.
        assert!(d.p50_ms.unwrap() > 0.05, "{d:?}");
        assert!(r.to_text().contains("random sample"));
    }

    #[test]
    fn first_byte_percentiles_come_from_the_sample_and_counts_from_everything() {
        let dir = TempDir::new("ttfb");
        let mut recs: Vec<Value> = (1..=10)
            .map(|i| event("ttfb", A, "ttfb_us", f64::from(i) * 1000.0))
            .collect();
        // A retry's first byte and a summary of 30 requests count, but are no sample.
        let mut retry = event("ttfb", A, "ttfb_us", 900_000.0);
        retry["why"] = "retry".into();
        recs.push(retry);
        let mut summary = event("ttfb_summary", A, "ttfb_max_us", 50_000.0);
        summary["requests"] = 30.into();
        recs.push(summary);
        let r = read_capped(&[dir.lines("t.jsonl", &recs)], 100).unwrap();
        let d = &r.latency_by_upstream[0].ttfb;
        assert_eq!(d.count, 41);
        assert_eq!(d.sampled, 10);
        assert_eq!(d.p99_ms, Some(10.0));
        assert_eq!(d.max_ms, Some(900.0));
    }

    #[test]
    fn keepalive_races_per_upstream() {
        let dir = TempDir::new("races");
        let f = dir.lines(
            "t.jsonl",
            &[
                race(T, A, 311.0, None, "set keepalive_timeout"),
                race(T, A, 305.5, Some(4000.0), "set keepalive_timeout 4.0 s"),
                race(T, A, 320.0, Some(3500.0), "set keepalive_timeout"),
                retried(A, 290.25),
                retried(B, 100.0),
            ],
        );
        let r = read(&[f]).unwrap();
        assert_eq!(r.totals.retried, 2);
        assert_eq!(r.keepalive_races.len(), 2);
        let a = &r.keepalive_races[0];
        assert_eq!(a.upstream.as_deref(), Some(A));
        assert_eq!((a.verdicts, a.retried), (3, 1));
        assert_eq!(a.idle_at_reuse_min_ms, Some(290.25));
        // Sorted 290.25, 305.5, 311, 320: the nearest-rank median is the second.
        assert_eq!(a.idle_at_reuse_median_ms, Some(305.5));
        assert_eq!(a.upstream_idle_timeout_ms, Some(3500.0));
        assert_eq!(
            a.advice,
            ["set keepalive_timeout", "set keepalive_timeout 4.0 s"]
        );
        let b = &r.keepalive_races[1];
        assert_eq!((b.verdicts, b.retried), (0, 1));
        assert_eq!(b.upstream_idle_timeout_ms, None);
        let text = r.to_text();
        assert!(
            text.contains("advice for 10.0.0.5:8080: set keepalive_timeout 4.0 s"),
            "{text}"
        );
    }

    #[test]
    fn timeline_buckets_by_utc_minute() {
        let dir = TempDir::new("timeline");
        let f = dir.lines(
            "t.jsonl",
            &[
                // Out of order on purpose: the file is in emission order, not time order.
                verdict(
                    "2026-11-24T13:15:00.000000000Z",
                    502,
                    Some(A),
                    "upstream_reset",
                ),
                verdict(
                    "2026-11-24T13:14:59.999999999Z",
                    502,
                    Some(A),
                    "connect_refused",
                ),
                verdict(
                    "2026-11-24T13:14:00.000000001Z",
                    503,
                    Some(A),
                    "connect_refused",
                ),
                // 14:15:30 at UTC+01:00 is 13:15:30 UTC.
                verdict(
                    "2026-11-24T14:15:30+01:00",
                    504,
                    Some(A),
                    "upstream_timeout",
                ),
                verdict("2026-11-24T13:17:00Z", 404, Some(A), "no_network_cause"),
                verdict("not a time", 502, Some(A), "connect_refused"),
                // Midnight of a new year.
                verdict("2026-12-31T23:59:59.5Z", 502, Some(B), "connect_refused"),
                verdict("2027-01-01T00:00:00Z", 502, Some(B), "connect_refused"),
            ],
        );
        let r = read(&[f]).unwrap();
        // One string per minute: `minute total cause:count,...`.
        let got: Vec<String> = r
            .timeline_5xx
            .iter()
            .map(|m| {
                let causes: Vec<String> = m
                    .causes
                    .iter()
                    .map(|c| format!("{}:{}", c.cause, c.count))
                    .collect();
                format!("{} {} {}", m.minute, m.total, causes.join(","))
            })
            .collect();
        assert_eq!(
            got,
            [
                "2026-11-24T13:14Z 2 connect_refused:2",
                "2026-11-24T13:15Z 2 upstream_reset:1,upstream_timeout:1",
                "2026-12-31T23:59Z 1 connect_refused:1",
                "2027-01-01T00:00Z 1 connect_refused:1",
            ]
        );
        assert_eq!(r.totals.verdicts, 8);
        assert_eq!(
            r.totals.first_time.as_deref(),
            Some("2026-11-24T13:14:00.000000001Z")
        );
        assert_eq!(
            r.totals.last_time.as_deref(),
            Some("2027-01-01T00:00:00.000000000Z")
        );
        let text = r.to_text();
        assert!(
            text.contains("2026-11-24T13:15Z      2  upstream_reset 1, upstream_timeout 1"),
            "{text}"
        );
    }

    #[test]
    fn parses_rfc3339() {
        use crate::clock::rfc3339_from_unix_ns;
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.000001000Z"),
            Some(1_000_001_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.9Z"), Some(-100_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00.1234567891Z"),
            Some(123_456_789)
        );
        for ns in [
            0i128,
            951_782_400_123_456_789, // 2000-02-29
            1_795_523_211_051_428_763,
            4_107_542_400_000_000_000, // 2100-03-01
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_from_unix_ns(ns)), Some(ns), "{ns}");
        }
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24T13:14:17",
            "2026-11-24T13:14:17.Z",
            "2026-13-24T13:14:17Z",
            "2026-02-29T13:14:17Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T13:14:17Zjunk",
            "2026-11-24T13:14:17+0100",
            "2026-1a-24T13:14:17Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_gzip_by_magic_not_name() {
        let dir = TempDir::new("gzip");
        let recs = [
            start(T),
            verdict(T, 502, Some(A), "connect_refused"),
            stats(0),
        ];
        // Compressed under a plain name, and plain under a .gz name.
        let gz = dir.write("a.jsonl", &gzip(jsonl(&recs).as_bytes()));
        let plain = dir.lines("b.jsonl.gz", &recs);
        let r = read(&[gz, plain]).unwrap();
        assert_eq!(r.totals.files, 2);
        assert_eq!(r.totals.records, 6);
        assert_eq!(r.totals.malformed, 0);
        assert_eq!(r.totals.runs, 2);
        assert_eq!(r.verdicts_by_cause[0].count, 2);
    }

    #[test]
    fn truncated_gzip_keeps_what_decoded() {
        let dir = TempDir::new("gzcut");
        let mut recs = vec![start(T)];
        for _ in 0..200 {
            recs.push(verdict(T, 502, Some(A), "connect_refused"));
        }
        let bytes = gzip(jsonl(&recs).as_bytes());
        let f = dir.write("cut.gz", &bytes[..bytes.len() * 2 / 3]);
        let r = read(&[f]).unwrap();
        assert!(r.totals.records > 0, "{:?}", r.totals);
        assert!(r.totals.records < 201, "{:?}", r.totals);
        assert!(r.totals.malformed <= 1, "{:?}", r.totals);
        if let Some(last) = r.totals.malformed_lines.last() {
            assert!(last.cut, "{:?}", r.totals);
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = TempDir::new("gzbad");
        let mut bytes = gzip(b"{\"type\":\"start\"}\n");
        // Break the deflate block type bits right after the 10-byte header.
        bytes[10] = 0xff;
        let f = dir.write("bad.gz", &bytes);
        let e = read(std::slice::from_ref(&f)).unwrap_err();
        assert!(matches!(e, ReportError::Gzip { .. }), "{e:?}");
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    }

    #[test]
    fn malformed_lines_are_counted_and_located() {
        let dir = TempDir::new("malformed");
        let mut text = jsonl(&[start(T), verdict(T, 502, Some(A), "connect_refused")]);
        text.push_str("not json\n");
        text.push('\n');
        text.push_str("[1,2]\n");
        text.push_str(&format!(
            "{}\r\n",
            verdict(T, 502, Some(A), "connect_refused")
        ));
        text.push_str("{\"type\":\"verdict\",\"time\":\"2026-11-24T13:1");
        let f = dir.write("m.jsonl", text.as_bytes());
        let r = read(std::slice::from_ref(&f)).unwrap();
        assert_eq!(r.totals.lines, 7);
        assert_eq!(r.totals.records, 3);
        assert_eq!(r.totals.malformed, 4);
        assert_eq!(r.totals.verdicts, 2);
        let name = f.display().to_string();
        let at = |line, cut| MalformedLine {
            file: name.clone(),
            line,
            cut,
        };
        assert_eq!(
            r.totals.malformed_lines,
            [at(3, false), at(4, false), at(5, false), at(7, true)]
        );
        let text = r.to_text();
        assert!(text.contains(&format!("{name}:7 (cut short)")), "{text}");
    }

    #[test]
    fn malformed_listing_is_capped() {
        let dir = TempDir::new("manybad");
        let f = dir.write("m.jsonl", "x\n".repeat(25).as_bytes());
        let r = read(&[f]).unwrap();
        assert_eq!(r.totals.malformed, 25);
        assert_eq!(r.totals.malformed_lines.len(), MALFORMED_LISTED);
        assert!(r.to_text().contains("and 15 more"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = TempDir::new("missing");
        let ok = dir.lines("ok.jsonl", &[start(T)]);
        let missing = dir.0.join("nope.jsonl");
        let e = read(&[ok, missing.clone()]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("cannot read trace file "), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(matches!(e, ReportError::Read { .. }));
        assert!(matches!(read(&[]), Err(ReportError::NoFiles)));
        // A directory opens but cannot be read.
        assert!(matches!(
            read(std::slice::from_ref(&dir.0)),
            Err(ReportError::Read { .. })
        ));
    }

    #[test]
    fn lost_sums_the_last_stats_of_each_run() {
        let dir = TempDir::new("lost");
        let run1 = dir.lines("1.jsonl", &[start(T), stats(5), stats(7)]);
        // The second file continues run 1 (rotation) and then holds run 2, cut before its final
        // stats record.
        let run2 = dir.lines("2.jsonl", &[stats(9), start(T), stats(3)]);
        let r = read(&[run1, run2]).unwrap();
        assert_eq!(r.totals.runs, 2);
        assert_eq!(r.totals.lost, 12);
        assert!(r.to_text().contains("raise --ring-size"));
    }

    #[test]
    fn json_has_the_numbers_of_the_text() {
        let dir = TempDir::new("json");
        let f = dir.lines(
            "t.jsonl",
            &[
                start(T),
                verdict(T, 502, Some(A), "connect_refused"),
                verdict(T, 502, Some(A), "connect_refused"),
                verdict(T, 504, Some(B), "upstream_timeout"),
                race(T, A, 311.032, Some(4000.0), "advice"),
                retried(A, 290.5),
                event("connect", A, "latency_us", 95.309),
                event("connect", A, "latency_us", 1234.5678),
                event("ttfb", A, "ttfb_us", 2001465.398),
                stats(2),
            ],
        );
        let r = read(&[f]).unwrap();
        let j = r.to_json();
        let text = r.to_text();
        // The cells of the first text line that starts with `first`, from section `from` on.
        let row_after = |from: &str, first: &str| -> Vec<String> {
            let at = text
                .find(from)
                .unwrap_or_else(|| panic!("no {from} in\n{text}"));
            text[at..]
                .lines()
                .map(str::split_whitespace)
                .map(|c| c.map(str::to_string).collect::<Vec<_>>())
                .find(|c| c.first().map(String::as_str) == Some(first))
                .unwrap_or_else(|| panic!("no row {first} in\n{text}"))
        };
        let row = |first: &str| row_after("Totals", first);
        let t = &j["totals"];
        for (label, key) in [
            ("files", "files"),
            ("lines", "lines"),
            ("records", "records"),
            ("runs", "runs"),
            ("verdicts", "verdicts"),
            ("retried", "retried"),
        ] {
            assert_eq!(row(label)[1], t[key].to_string(), "{label}");
        }
        assert_eq!(row("lost")[2], t["lost"].to_string());
        assert_eq!(t["lost"], 2);
        for c in j["verdicts_by_cause"].as_array().unwrap() {
            let cells = row(c["cause"].as_str().unwrap());
            assert_eq!(cells[1], c["count"].to_string());
            let share: f64 = cells[2].trim_end_matches('%').parse().unwrap();
            assert_eq!(share, c["share_pct"].as_f64().unwrap());
        }
        let lat = &j["latency_by_upstream"][0];
        let cells = row_after("Latency by upstream", A);
        assert_eq!(cells[1], "connect");
        assert_eq!(cells[2], lat["connect"]["count"].to_string());
        for (i, k) in ["p50_ms", "p90_ms", "p99_ms", "max_ms"].iter().enumerate() {
            let v: f64 = cells[3 + i].parse().unwrap();
            assert_eq!(v, lat["connect"][k].as_f64().unwrap(), "{k}");
        }
        assert_eq!(lat["connect"]["p50_ms"], 0.095);
        assert_eq!(lat["connect"]["max_ms"], 1.235);
        let ttfb = row_after("Latency by upstream", "first");
        assert_eq!(ttfb[3].parse::<f64>().unwrap(), 2001.465);
        assert_eq!(lat["ttfb"]["p50_ms"], 2001.465);
        let race = &j["keepalive_races"][0];
        assert_eq!(race["verdicts"], 1);
        assert_eq!(race["retried"], 1);
        assert_eq!(race["idle_at_reuse_min_ms"], 290.5);
        assert!(text.contains("290.500"), "{text}");
        let minute = &j["timeline_5xx"][0];
        assert_eq!(minute["minute"], "2026-11-24T13:14Z");
        assert_eq!(row("2026-11-24T13:14Z")[1], minute["total"].to_string());
        assert_eq!(minute["total"], 4);
    }

    #[test]
    fn empty_file_gives_zeros() {
        let dir = TempDir::new("empty");
        let r = read(&[dir.write("e.jsonl", b"")]).unwrap();
        assert_eq!(r.totals.files, 1);
        assert_eq!(r.totals.lines, 0);
        assert_eq!(r.totals.records, 0);
        assert_eq!(r.totals.malformed, 0);
        assert_eq!(r.totals.verdicts, 0);
        assert_eq!(r.totals.lost, 0);
        assert!(r.totals.first_time.is_none());
        assert!(r.verdicts_by_cause.is_empty());
        let text = r.to_text();
        for section in [
            "Verdicts by cause",
            "Verdicts by upstream",
            "Latency by upstream (ms)",
            "Keep-alive races",
            "5xx per minute",
        ] {
            assert!(text.contains(&format!("{section}\n  none\n")), "{text}");
        }
        assert!(text.contains("time span        none"), "{text}");
        let j = r.to_json();
        assert_eq!(j["totals"]["records"], 0);
        assert_eq!(j["totals"]["first_time"], Value::Null);
        assert_eq!(j["timeline_5xx"], json!([]));
    }
}
