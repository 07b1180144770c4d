//! The live view's state: what the screen shows, built from trace records and changed by key
//! actions. Pure: no terminal and no clock. Time comes from the records' own `time` fields, so
//! a replayed stream gives the same screen as the live one, and tests feed records directly.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use crate::report::{nearest_rank, parse_rfc3339};

/// Upstreams tracked at once; the one seen least recently makes room for a new one.
pub const MAX_UPSTREAMS: usize = 512;
/// Verdicts kept for the verdicts pane.
pub const MAX_VERDICTS: usize = 500;
/// Latency samples kept per upstream for its percentiles.
const SAMPLES: usize = 512;
/// Seconds over which rates are averaged.
const RATE_WINDOW_S: i64 = 10;

/// The record types that are kernel events (counted for events/s).
const EVENT_TYPES: &[&str] = &[
    "connect_start",
    "connect",
    "connect_error",
    "reset_received",
    "reset_sent",
    "peer_close",
    "local_close",
    "retransmit",
    "drop",
    "close",
    "ttfb",
    "ttfb_summary",
    "accept",
    "response",
    "upstream_response",
];

/// Counts per whole second over the last [`RATE_WINDOW_S`] seconds of record time.
#[derive(Debug, Clone, Default)]
struct Rate {
    /// (second, count), oldest first.
    buckets: VecDeque<(i64, u64)>,
}

impl Rate {
    fn add(&mut self, second: i64) {
        match self.buckets.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            // Records of one stream come in time order except for small reorderings between
            // CPUs; a late one is counted in the newest bucket rather than dropped.
            Some((s, n)) if *s > second => *n += 1,
            _ => self.buckets.push_back((second, 1)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s <= second - RATE_WINDOW_S)
        {
            self.buckets.pop_front();
        }
    }

    /// Per second over the window ending at `now` (a whole second of record time).
    fn per_second(&self, now: i64) -> f64 {
        let n: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s > now - RATE_WINDOW_S && *s <= now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / RATE_WINDOW_S as f64
    }
}

/// The most recent samples of one latency, in microseconds.
#[derive(Debug, Clone, Default)]
struct Samples(VecDeque<f64>);

impl Samples {
    fn push(&mut self, us: f64) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(us);
    }

    /// Nearest-rank percentiles `ps` (0-100) of the kept samples.
    fn percentiles<const N: usize>(&self, ps: [u64; N]) -> [Option<f64>; N] {
        let mut v: Vec<f64> = self.0.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        ps.map(|p| nearest_rank(&v, p))
    }
}

/// What is known about one upstream address.
#[derive(Debug, Clone, Default)]
struct Upstream {
    connects: Rate,
    connect_us: Samples,
    ttfb_us: Samples,
    retransmits: u64,
    refused: u64,
    timeouts: u64,
    resets: u64,
    errors_5xx: BTreeMap<String, u64>,
    /// Record time (ns) of the latest record about it, for eviction.
    last_seen: i128,
}

/// One verdict as the pane lists it.
#[derive(Debug, Clone)]
pub struct VerdictRow {
    /// Wall-clock time of the response, `HH:MM:SS.mmm`.
    pub time: String,
    pub status: u64,
    pub cause: String,
    /// The upstream's address, or `-` when none was found.
    pub upstream: String,
    pub confidence: f64,
    pub summary: String,
    /// The whole record, for the evidence timeline.
    pub record: Value,
}

/// One row of the upstream table, with its percentiles computed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    pub addr: String,
    pub conns_per_s: f64,
    pub connect_p50_us: Option<f64>,
    pub connect_p99_us: Option<f64>,
    pub ttfb_p50_us: Option<f64>,
    pub ttfb_p99_us: Option<f64>,
    pub retransmits: u64,
    pub refused: u64,
    pub timeouts: u64,
    pub resets: u64,
    /// 5xx verdicts by cause, most frequent first.
    pub errors_5xx: Vec<(String, u64)>,
}

impl UpstreamRow {
    /// All 5xx verdicts blamed on this upstream.
    pub fn total_5xx(&self) -> u64 {
        self.errors_5xx.iter().map(|(_, n)| n).sum()
    }
}

/// The tracer's health, for the header.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Hooks from the `start` record: (name, attached).
    pub hooks: Vec<(String, bool)>,
    pub kernel: Option<String>,
    pub tracer_pid: Option<u64>,
    /// When the tracer started (ns since the Unix epoch), from the `start` record.
    pub started_ns: Option<i128>,
    /// From the latest `stats` record.
    pub uptime_s: Option<f64>,
    pub lost: u64,
    pub events_total: Option<u64>,
    pub write_errors: u64,
    /// Records this reader missed because it fell behind (`lagged` notes).
    pub missed_by_view: u64,
    /// Records that were not JSON objects with a `type`.
    pub malformed: u64,
}

/// Everything the stream has told us.
#[derive(Debug, Clone, Default)]
struct State {
    health: Health,
    events: Rate,
    upstreams: BTreeMap<String, Upstream>,
    verdicts: VecDeque<VerdictRow>,
    /// Latest record time seen (ns since the Unix epoch).
    now_ns: i128,
}

/// Which pane the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Upstreams,
    Verdicts,
}

/// How the upstream table is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Most 5xx first.
    Errors,
    /// Most connections per second first.
    ConnRate,
    /// Slowest connect p99 first.
    ConnectP99,
    /// Slowest time-to-first-byte p99 first.
    TtfbP99,
    /// By address.
    Address,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Errors => Sort::ConnRate,
            Sort::ConnRate => Sort::ConnectP99,
            Sort::ConnectP99 => Sort::TtfbP99,
            Sort::TtfbP99 => Sort::Address,
            Sort::Address => Sort::Errors,
        }
    }

    /// The name shown in the table's title.
    pub fn label(self) -> &'static str {
        match self {
            Sort::Errors => "5xx",
            Sort::ConnRate => "conn/s",
            Sort::ConnectP99 => "connect p99",
            Sort::TtfbP99 => "ttfb p99",
            Sort::Address => "address",
        }
    }
}

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    /// Switches the pane the arrows move in.
    SwitchPane,
    /// Opens the selected verdict with its evidence.
    Open,
    /// Closes the open verdict, or cancels filter editing.
    Back,
    TogglePause,
    CycleSort,
    /// Starts editing the filter.
    StartFilter,
    FilterChar(char),
    FilterBackspace,
    /// Ends editing and applies the filter.
    FilterApply,
}

/// The screen's model.
#[derive(Debug, Clone)]
pub struct Model {
    live: State,
    /// While paused, the screen shows this copy; records keep going into `live`.
    frozen: Option<Box<State>>,
    pub focus: Focus,
    /// Selected row in the upstream table (index into the sorted, filtered rows).
    pub upstream_sel: usize,
    /// Selected row in the verdicts pane (0 = newest).
    pub verdict_sel: usize,
    pub sort: Sort,
    /// The applied filter (lower case); empty shows everything.
    pub filter: String,
    /// The filter being typed, while editing.
    pub filter_input: Option<String>,
    /// The verdict open in the detail view.
    pub detail: Option<VerdictRow>,
    pub quit: bool,
    /// Why the record stream ended (the daemon stopped), if it did.
    pub ended: Option<String>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn num_of(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `HH:MM:SS.mmm` of an RFC 3339 UTC time.
fn clock_text(time: &str) -> String {
    time.get(11..23).unwrap_or(time).to_string()
}

impl Model {
    /// An empty screen.
    pub fn new() -> Self {
        Self {
            live: State::default(),
            frozen: None,
            focus: Focus::Verdicts,
            upstream_sel: 0,
            verdict_sel: 0,
            sort: Sort::Errors,
            filter: String::new(),
            filter_input: None,
            detail: None,
            quit: false,
            ended: None,
        }
    }

    /// The state the screen shows: the frozen copy while paused.
    fn shown(&self) -> &State {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    /// Whether the screen is frozen.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Takes in one serialised record (a line of the trace).
    pub fn ingest_line(&mut self, line: &str) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => self.ingest(&v),
            Err(_) => self.live.health.malformed += 1,
        }
    }

    /// Takes in one record.
    pub fn ingest(&mut self, r: &Value) {
        let s = &mut self.live;
        let Some(kind) = str_of(r, "type") else {
            s.health.malformed += 1;
            return;
        };
        let time = str_of(r, "time").and_then(parse_rfc3339);
        if let Some(t) = time {
            s.now_ns = s.now_ns.max(t);
        }
        let second = time.map(|t| t.div_euclid(1_000_000_000) as i64);
        if EVENT_TYPES.contains(&kind)
            && let Some(sec) = second
        {
            s.events.add(sec);
        }
        match kind {
            "start" => {
                let h = &mut s.health;
                h.kernel = str_of(r, "kernel").map(str::to_string);
                h.started_ns = time;
                h.tracer_pid = r.get("pid").and_then(Value::as_u64);
                h.hooks = r
                    .get("hooks")
                    .and_then(Value::as_array)
                    .map(|hooks| {
                        hooks
                            .iter()
                            .filter_map(|h| {
                                let name = str_of(h, "hook")?.to_string();
                                let up = h.get("attached").and_then(Value::as_bool)?;
                                Some((name, up))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            }
            "stats" => {
                let h = &mut s.health;
                h.uptime_s = num_of(r, "uptime_s");
                h.lost = r.get("lost").and_then(Value::as_u64).unwrap_or(h.lost);
                h.events_total = r.get("events").and_then(Value::as_u64);
                h.write_errors = r.get("write_errors").and_then(Value::as_u64).unwrap_or(0);
            }
            "lagged" => {
                s.health.missed_by_view += r.get("missed").and_then(Value::as_u64).unwrap_or(0);
            }
            "verdict" => self.on_verdict(r, time),
            _ if str_of(r, "role") == Some("upstream") => {
                if let Some(addr) = str_of(r, "raddr") {
                    let u = s.upstream(addr, time.unwrap_or(s.now_ns));
                    match kind {
                        "connect" => {
                            if let Some(sec) = second {
                                u.connects.add(sec);
                            }
                            if let Some(us) = num_of(r, "latency_us") {
                                u.connect_us.push(us);
                            }
                        }
                        // A connection's held `connect` and first `ttfb`, with its close.
                        "close" => {
                            if let Some(us) = num_of(r, "connect_us") {
                                if let Some(sec) = second {
                                    u.connects.add(sec);
                                }
                                u.connect_us.push(us);
                            }
                            if let Some(us) = num_of(r, "ttfb_us") {
                                u.ttfb_us.push(us);
                            }
                        }
                        "connect_error" => match r.get("errno").and_then(Value::as_u64) {
                            Some(111) => u.refused += 1,
                            Some(110) => u.timeouts += 1,
                            _ => {}
                        },
                        // The one-in-N sample only: the other `ttfb` records were chosen for
                        // what happened to their request, and would skew the percentiles.
                        "ttfb" if matches!(str_of(r, "why"), None | Some("sample")) => {
                            if let Some(us) = num_of(r, "ttfb_us") {
                                u.ttfb_us.push(us);
                            }
                        }
                        "retransmit" => u.retransmits += 1,
                        "reset_received" | "reset_sent" => u.resets += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn on_verdict(&mut self, r: &Value, time: Option<i128>) {
        let s = &mut self.live;
        let cause = str_of(r, "cause").unwrap_or("unknown").to_string();
        let upstream = str_of(r, "upstream").unwrap_or("-").to_string();
        if upstream != "-" {
            let u = s.upstream(&upstream, time.unwrap_or(s.now_ns));
            *u.errors_5xx.entry(cause.clone()).or_default() += 1;
        }
        if s.verdicts.len() == MAX_VERDICTS {
            s.verdicts.pop_back();
        }
        s.verdicts.push_front(VerdictRow {
            time: str_of(r, "time").map(clock_text).unwrap_or_default(),
            status: r.get("status").and_then(Value::as_u64).unwrap_or(0),
            cause,
            upstream,
            confidence: num_of(r, "confidence").unwrap_or(0.0),
            summary: str_of(r, "summary").unwrap_or_default().to_string(),
            record: r.clone(),
        });
        // Keep the selection on the same verdict while new ones arrive on top, unless the
        // reader is at the top, where following the newest is what they want.
        if self.frozen.is_none() && self.verdict_sel > 0 {
            self.verdict_sel = (self.verdict_sel + 1).min(s.verdicts.len() - 1);
        }
    }

    /// The clock moved on (ns since the Unix epoch) with no record to say so: rates decay when
    /// the records stop.
    pub fn tick(&mut self, now_ns: i128) {
        self.live.now_ns = self.live.now_ns.max(now_ns);
    }

    /// Seconds since the tracer started: from the `start` record and the clock, else from the
    /// latest `stats` record.
    pub fn uptime_s(&self) -> Option<f64> {
        let s = self.shown();
        match s.health.started_ns {
            Some(t) if s.now_ns >= t => Some((s.now_ns - t) as f64 / 1e9),
            _ => s.health.uptime_s,
        }
    }

    /// The stream ended; the screen stays up until the user quits.
    pub fn end(&mut self, why: impl Into<String>) {
        self.ended = Some(why.into());
    }

    /// Applies one key action.
    pub fn apply(&mut self, a: Action) {
        if let Some(input) = &mut self.filter_input {
            match a {
                Action::FilterChar(c) => input.push(c),
                Action::FilterBackspace => {
                    input.pop();
                }
                Action::FilterApply => {
                    self.filter = input.trim().to_lowercase();
                    self.filter_input = None;
                    self.upstream_sel = 0;
                    self.verdict_sel = 0;
                }
                Action::Back => self.filter_input = None,
                Action::Quit => self.quit = true,
                _ => {}
            }
            return;
        }
        match a {
            Action::Quit => self.quit = true,
            Action::Back => self.detail = None,
            Action::Up => match (self.detail.is_some(), self.focus) {
                (true, _) => {}
                (false, Focus::Upstreams) => {
                    self.upstream_sel = self.upstream_sel.saturating_sub(1)
                }
                (false, Focus::Verdicts) => self.verdict_sel = self.verdict_sel.saturating_sub(1),
            },
            Action::Down => match (self.detail.is_some(), self.focus) {
                (true, _) => {}
                (false, Focus::Upstreams) => {
                    let n = self.upstream_rows().len();
                    self.upstream_sel = (self.upstream_sel + 1).min(n.saturating_sub(1));
                }
                (false, Focus::Verdicts) => {
                    let n = self.verdict_rows().len();
                    self.verdict_sel = (self.verdict_sel + 1).min(n.saturating_sub(1));
                }
            },
            Action::SwitchPane => {
                self.focus = match self.focus {
                    Focus::Upstreams => Focus::Verdicts,
                    Focus::Verdicts => Focus::Upstreams,
                }
            }
            Action::Open => {
                self.detail = match self.focus {
                    Focus::Verdicts => self.verdict_rows().get(self.verdict_sel).cloned().cloned(),
                    // Enter on an upstream filters the verdicts down to it.
                    Focus::Upstreams => {
                        if let Some(row) = self.upstream_rows().get(self.upstream_sel) {
                            self.filter = row.addr.to_lowercase();
                            self.focus = Focus::Verdicts;
                            self.verdict_sel = 0;
                            self.upstream_sel = 0;
                        }
                        None
                    }
                }
            }
            Action::TogglePause => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(Box::new(self.live.clone())),
                }
            }
            Action::CycleSort => {
                self.sort = self.sort.next();
                self.upstream_sel = 0;
            }
            Action::StartFilter => self.filter_input = Some(self.filter.clone()),
            Action::FilterChar(_) | Action::FilterBackspace | Action::FilterApply => {}
        }
    }

    /// The header's numbers.
    pub fn health(&self) -> &Health {
        &self.shown().health
    }

    /// Kernel events per second over the last ten seconds of record time.
    pub fn events_per_second(&self) -> f64 {
        let s = self.shown();
        s.events
            .per_second(s.now_ns.div_euclid(1_000_000_000) as i64)
    }

    fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter)
    }

    /// The upstream table: filtered by address or cause, in the chosen order.
    pub fn upstream_rows(&self) -> Vec<UpstreamRow> {
        let s = self.shown();
        let now = s.now_ns.div_euclid(1_000_000_000) as i64;
        let mut rows: Vec<UpstreamRow> = s
            .upstreams
            .iter()
            .filter(|(addr, u)| self.matches(addr) || u.errors_5xx.keys().any(|c| self.matches(c)))
            .map(|(addr, u)| {
                let [c50, c99] = u.connect_us.percentiles([50, 99]);
                let [t50, t99] = u.ttfb_us.percentiles([50, 99]);
                let mut errors_5xx: Vec<(String, u64)> =
                    u.errors_5xx.iter().map(|(c, n)| (c.clone(), *n)).collect();
                errors_5xx.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                UpstreamRow {
                    addr: addr.clone(),
                    conns_per_s: u.connects.per_second(now),
                    connect_p50_us: c50,
                    connect_p99_us: c99,
                    ttfb_p50_us: t50,
                    ttfb_p99_us: t99,
                    retransmits: u.retransmits,
                    refused: u.refused,
                    timeouts: u.timeouts,
                    resets: u.resets,
                    errors_5xx,
                }
            })
            .collect();
        let desc = |a: Option<f64>, b: Option<f64>| b.unwrap_or(-1.0).total_cmp(&a.unwrap_or(-1.0));
        // Ties fall back to the address, so that rows do not jump around between frames.
        rows.sort_by(|a, b| {
            match self.sort {
                Sort::Errors => b.total_5xx().cmp(&a.total_5xx()),
                Sort::ConnRate => b.conns_per_s.total_cmp(&a.conns_per_s),
                Sort::ConnectP99 => desc(a.connect_p99_us, b.connect_p99_us),
                Sort::TtfbP99 => desc(a.ttfb_p99_us, b.ttfb_p99_us),
                Sort::Address => std::cmp::Ordering::Equal,
            }
            .then_with(|| a.addr.cmp(&b.addr))
        });
        rows
    }

    /// The verdicts pane, newest first, filtered by upstream or cause.
    pub fn verdict_rows(&self) -> Vec<&VerdictRow> {
        self.shown()
            .verdicts
            .iter()
            .filter(|v| self.matches(&v.upstream) || self.matches(&v.cause))
            .collect()
    }
}

impl State {
    /// The upstream at `addr`, made room for if new.
    fn upstream(&mut self, addr: &str, time: i128) -> &mut Upstream {
        if !self.upstreams.contains_key(addr) && self.upstreams.len() >= MAX_UPSTREAMS {
            let oldest = self
                .upstreams
                .iter()
                .min_by_key(|(_, u)| u.last_seen)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                self.upstreams.remove(&a);
            }
        }
        let u = self.upstreams.entry(addr.to_string()).or_default();
        u.last_seen = u.last_seen.max(time);
        u
    }
}

/// One line of a verdict's evidence timeline: offset from the response, record type, and the
/// fields that matter for that type.
pub fn evidence_lines(verdict: &Value) -> Vec<(f64, String, String)> {
    let Some(items) = verdict.get("evidence").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|e| {
            let t = num_of(e, "t_ms").unwrap_or(0.0);
            let kind = str_of(e, "type").unwrap_or("?").to_string();
            let mut parts: Vec<String> = Vec::new();
            if let (Some(l), Some(r)) = (str_of(e, "laddr"), str_of(e, "raddr")) {
                parts.push(format!("{l} -> {r}"));
            }
            for key in [
                "error",
                "cause",
                "state",
                "reason",
                "status",
                "latency_us",
                "ttfb_us",
                "request_no",
                "idle_us",
                "requests",
                "total",
            ] {
                match e.get(key) {
                    Some(Value::String(s)) => parts.push(format!("{key}={s}")),
                    Some(Value::Number(n)) => parts.push(format!("{key}={n}")),
                    _ => {}
                }
            }
            if e.get("awaiting_response").and_then(Value::as_bool) == Some(true) {
                parts.push("awaiting response".into());
            }
            (t, kind, parts.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn connect(t: &str, up: &str, latency: f64) -> Value {
        json!({"type":"connect","time":t,"role":"upstream","laddr":"10.0.0.1:40000","raddr":up,"latency_us":latency})
    }

    fn verdict(t: &str, up: Option<&str>, cause: &str) -> Value {
        json!({"type":"verdict","time":t,"status":502,"upstream":up,"cause":cause,
               "confidence":0.9,"summary":format!("502 by nginx[1]: {cause}"),
               "evidence":[{"type":"connect_error","t_ms":-1.5,"laddr":"0.0.0.0:0","raddr":up,
                            "error":"ECONNREFUSED","cause":"rst"}]})
    }

    fn at(s: u32) -> String {
        format!("2026-11-24T12:00:{s:02}.000000000Z")
    }

    #[test]
    fn upstream_rows_aggregate_records() {
        let mut m = Model::new();
        for i in 0..10 {
            m.ingest(&connect(&at(i), "10.0.2.2:8080", f64::from(100 + i)));
        }
        m.ingest(&json!({"type":"connect_error","time":at(9),"role":"upstream","raddr":"10.0.2.2:8081","errno":111}));
        m.ingest(&json!({"type":"connect_error","time":at(9),"role":"upstream","raddr":"10.0.2.2:8081","errno":110}));
        m.ingest(&json!({"type":"ttfb","time":at(9),"role":"upstream","raddr":"10.0.2.2:8080","ttfb_us":2500.0}));
        m.ingest(&json!({"type":"reset_received","time":at(9),"role":"upstream","raddr":"10.0.2.2:8080"}));
        m.ingest(
            &json!({"type":"retransmit","time":at(9),"role":"upstream","raddr":"10.0.2.2:8080"}),
        );
        // Client sockets are not upstreams.
        m.ingest(
            &json!({"type":"reset_received","time":at(9),"role":"client","raddr":"10.0.1.2:5555"}),
        );
        m.ingest(&verdict(&at(9), Some("10.0.2.2:8081"), "connect_refused"));
        m.ingest(&verdict(&at(9), Some("10.0.2.2:8081"), "connect_refused"));
        m.ingest(&verdict(&at(9), Some("10.0.2.2:8081"), "connect_timeout"));

        let rows = m.upstream_rows();
        assert_eq!(rows.len(), 2);
        // Sorted by 5xx: the failing upstream first.
        assert_eq!(rows[0].addr, "10.0.2.2:8081");
        assert_eq!((rows[0].refused, rows[0].timeouts), (1, 1));
        assert_eq!(
            rows[0].errors_5xx,
            vec![("connect_refused".into(), 2), ("connect_timeout".into(), 1)]
        );
        let ok = &rows[1];
        assert_eq!(ok.conns_per_s, 1.0);
        assert_eq!(ok.connect_p50_us, Some(104.0));
        assert_eq!(ok.connect_p99_us, Some(109.0));
        assert_eq!(ok.ttfb_p50_us, Some(2500.0));
        assert_eq!((ok.resets, ok.retransmits), (1, 1));
        assert_eq!(m.events_per_second(), 1.6);
    }

    /// A connection's held `connect` and first `ttfb` come as fields of its `close`.
    #[test]
    fn a_close_with_held_records_counts_its_connect_and_first_byte() {
        let mut m = Model::new();
        for i in 0..10 {
            m.ingest(
                &json!({"type":"close","time":at(i),"role":"upstream","raddr":"10.0.3.3:80",
                             "connect_us":f64::from(200 + i),"ttfb_us":f64::from(3000 + i)}),
            );
        }
        // A close that held nothing is no connect.
        m.ingest(&json!({"type":"close","time":at(9),"role":"upstream","raddr":"10.0.3.3:80"}));
        let rows = m.upstream_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].conns_per_s, 1.0);
        assert_eq!(rows[0].connect_p50_us, Some(204.0));
        assert_eq!(rows[0].ttfb_p50_us, Some(3004.0));
    }

    #[test]
    fn rates_only_count_the_last_ten_seconds() {
        let mut m = Model::new();
        m.ingest(&connect("2026-11-24T12:00:00Z", "a:1", 1.0));
        m.ingest(&connect("2026-11-24T12:00:30Z", "a:1", 1.0));
        assert_eq!(m.upstream_rows()[0].conns_per_s, 0.1);
    }

    #[test]
    fn rates_decay_when_records_stop() {
        let mut m = Model::new();
        m.ingest(&connect("2026-11-24T12:00:00Z", "a:1", 1.0));
        assert_eq!(m.events_per_second(), 0.1);
        let later = parse_rfc3339("2026-11-24T12:00:20Z").unwrap();
        m.tick(later);
        assert_eq!(m.events_per_second(), 0.0);
        assert_eq!(m.upstream_rows()[0].conns_per_s, 0.0);
        // A clock behind the records does not move time back.
        m.tick(0);
        assert_eq!(m.events_per_second(), 0.0);
    }

    #[test]
    fn uptime_runs_from_the_start_record() {
        let mut m = Model::new();
        assert_eq!(m.uptime_s(), None);
        m.ingest(&json!({"type":"stats","time":at(5),"uptime_s":4.0}));
        assert_eq!(m.uptime_s(), Some(4.0));
        m.ingest(&json!({"type":"start","time":at(1)}));
        m.tick(parse_rfc3339(&at(31)).unwrap());
        assert_eq!(m.uptime_s(), Some(30.0));
    }

    #[test]
    fn sort_cycles_and_orders_rows() {
        let mut m = Model::new();
        m.ingest(&connect(&at(1), "b:1", 500.0));
        m.ingest(&connect(&at(1), "a:1", 100.0));
        m.ingest(&connect(&at(1), "a:1", 100.0));
        let addrs = |m: &Model| {
            m.upstream_rows()
                .into_iter()
                .map(|r| r.addr)
                .collect::<Vec<_>>()
        };
        assert_eq!(m.sort, Sort::Errors);
        assert_eq!(addrs(&m), ["a:1", "b:1"]); // no 5xx: by address
        m.apply(Action::CycleSort);
        assert_eq!(m.sort, Sort::ConnRate);
        assert_eq!(addrs(&m), ["a:1", "b:1"]);
        m.apply(Action::CycleSort);
        assert_eq!(m.sort, Sort::ConnectP99);
        assert_eq!(addrs(&m), ["b:1", "a:1"]);
        for _ in 0..4 {
            m.apply(Action::CycleSort);
        }
        assert_eq!(m.sort, Sort::ConnRate);
    }

    #[test]
    fn filter_by_upstream_or_cause() {
        let mut m = Model::new();
        m.ingest(&verdict(&at(1), Some("10.0.2.2:8081"), "connect_refused"));
        m.ingest(&verdict(&at(2), Some("10.0.2.2:8082"), "upstream_reset"));
        m.ingest(&verdict(&at(3), None, "no_network_cause"));
        assert_eq!(m.verdict_rows().len(), 3);
        m.apply(Action::StartFilter);
        for c in "RESET".chars() {
            m.apply(Action::FilterChar(c));
        }
        // Not applied until Enter.
        assert_eq!(m.verdict_rows().len(), 3);
        m.apply(Action::FilterApply);
        assert_eq!(m.filter, "reset");
        let v = m.verdict_rows();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].upstream, "10.0.2.2:8082");
        assert_eq!(m.upstream_rows().len(), 1);
        // By address; Esc while editing keeps the old filter.
        m.apply(Action::StartFilter);
        m.apply(Action::FilterChar('x'));
        m.apply(Action::Back);
        assert_eq!(m.filter, "reset");
        m.apply(Action::StartFilter);
        for _ in 0..5 {
            m.apply(Action::FilterBackspace);
        }
        for c in ":8081".chars() {
            m.apply(Action::FilterChar(c));
        }
        m.apply(Action::FilterApply);
        assert_eq!(m.verdict_rows()[0].cause, "connect_refused");
        // q while typing is a letter, not quit.
        m.apply(Action::StartFilter);
        m.apply(Action::FilterChar('q'));
        assert!(!m.quit);
    }

    #[test]
    fn pause_freezes_the_screen_but_not_the_counting() {
        let mut m = Model::new();
        m.ingest(&verdict(&at(1), Some("u:1"), "connect_refused"));
        m.apply(Action::TogglePause);
        assert!(m.paused());
        m.ingest(&verdict(&at(2), Some("u:1"), "upstream_reset"));
        assert_eq!(m.verdict_rows().len(), 1);
        m.apply(Action::TogglePause);
        assert_eq!(m.verdict_rows().len(), 2);
        assert_eq!(m.verdict_rows()[0].cause, "upstream_reset");
    }

    #[test]
    fn enter_opens_the_selected_verdict_and_esc_closes_it() {
        let mut m = Model::new();
        m.ingest(&verdict(&at(1), Some("u:1"), "connect_refused"));
        m.ingest(&verdict(&at(2), Some("u:2"), "upstream_reset"));
        m.apply(Action::Down);
        assert_eq!(m.verdict_sel, 1);
        m.apply(Action::Down); // stays on the last row
        assert_eq!(m.verdict_sel, 1);
        m.apply(Action::Open);
        let d = m.detail.as_ref().expect("open");
        assert_eq!(d.cause, "connect_refused");
        assert_eq!(d.time, "12:00:01.000");
        let lines = evidence_lines(&d.record);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, -1.5);
        assert_eq!(lines[0].1, "connect_error");
        assert!(lines[0].2.contains("error=ECONNREFUSED"), "{:?}", lines[0]);
        m.apply(Action::Back);
        assert!(m.detail.is_none());
        m.apply(Action::Quit);
        assert!(m.quit);
    }

    #[test]
    fn the_selection_stays_on_its_verdict_as_new_ones_arrive() {
        let mut m = Model::new();
        m.ingest(&verdict(&at(1), Some("u:1"), "a"));
        m.ingest(&verdict(&at(2), Some("u:1"), "b"));
        m.apply(Action::Down);
        assert_eq!(m.verdict_rows()[m.verdict_sel].cause, "a");
        m.ingest(&verdict(&at(3), Some("u:1"), "c"));
        assert_eq!(m.verdict_rows()[m.verdict_sel].cause, "a");
    }

    #[test]
    fn enter_on_an_upstream_filters_verdicts_to_it() {
        let mut m = Model::new();
        m.ingest(&verdict(&at(1), Some("u:1"), "a"));
        m.ingest(&verdict(&at(2), Some("u:2"), "b"));
        m.ingest(&verdict(&at(2), Some("u:2"), "b"));
        m.apply(Action::SwitchPane);
        assert_eq!(m.focus, Focus::Upstreams);
        m.apply(Action::Open);
        assert_eq!(m.focus, Focus::Verdicts);
        assert_eq!(m.filter, "u:2");
        assert!(m.verdict_rows().iter().all(|v| v.upstream == "u:2"));
    }

    #[test]
    fn health_comes_from_start_stats_and_lag_notes() {
        let mut m = Model::new();
        m.ingest(
            &json!({"type":"start","time":at(0),"kernel":"6.18.0","pid":42,
            "hooks":[{"hook":"tp_btf/tcp_receive_reset","attached":true},
                     {"hook":"uprobe/libssl:SSL_write","attached":false}]}),
        );
        m.ingest(&json!({"type":"stats","time":at(10),"uptime_s":10.0,"events":1234,"lost":7}));
        m.ingest_line("{\"type\":\"lagged\",\"missed\":3}");
        m.ingest_line("not json");
        m.ingest_line("[1,2]");
        let h = m.health();
        assert_eq!(h.hooks.len(), 2);
        assert!(!h.hooks[1].1);
        assert_eq!(
            (h.lost, h.events_total, h.uptime_s),
            (7, Some(1234), Some(10.0))
        );
        assert_eq!((h.missed_by_view, h.malformed), (3, 2));
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = Model::new();
        for i in 0..(MAX_UPSTREAMS + 10) {
            m.ingest(&connect(
                &at(1),
                &format!("10.0.{}.{}:80", i / 250, i % 250),
                1.0,
            ));
        }
        for _ in 0..(MAX_VERDICTS + 10) {
            m.ingest(&verdict(&at(2), Some("x:1"), "a"));
        }
        assert_eq!(m.upstream_rows().len(), MAX_UPSTREAMS);
        assert_eq!(m.verdict_rows().len(), MAX_VERDICTS);
        for i in 0..(SAMPLES * 2) {
            m.ingest(&connect(&at(3), "x:1", i as f64));
        }
        let row = m
            .upstream_rows()
            .into_iter()
            .find(|r| r.addr == "x:1")
            .unwrap();
        // Only the latest SAMPLES samples count.
        assert_eq!(row.connect_p50_us, Some((SAMPLES + SAMPLES / 2 - 1) as f64));
    }
}
