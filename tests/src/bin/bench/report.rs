//! Per-run measurements, their medians and ratios, the budgets, and how they are printed.

use serde_json::{Value, json};

use crate::{lab::Mode, observer::Config, wrk::WrkResult};

/// Everything measured in one run of one configuration.
#[derive(Debug)]
pub struct Run {
    pub mode: Mode,
    pub config: Config,
    pub round: u32,
    /// Position of this configuration within its round (0-based): the order rotates per round.
    pub position: usize,
    /// Requests of the warm-up that preceded the measurement, observer already running.
    pub warmup_requests: u64,
    pub wrk: WrkResult,
    /// Observer CPU (user + system) during the measured window.
    pub observer_cpu_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// The tracer's final `stats` record.
    pub stats: Option<Value>,
    pub tcpdump_dropped: Option<u64>,
    pub output_bytes: u64,
    /// The proxy's CPU (master and worker) during the measured window.
    pub proxy_cpu_s: f64,
    /// How busy each CPU was during the measured window.
    pub cpu_busy_pct: Vec<f64>,
    /// How busy the host was just before the run, with nothing of the bench running.
    pub background_busy_pct: f64,
    /// BPF programs loaded on the host by others when the run started.
    pub foreign_bpf_programs: usize,
}

impl Run {
    /// Events the tracer decoded, per proxied request (warm-up included, as the counter is).
    pub fn events_per_request(&self) -> Option<f64> {
        let events = self.stats.as_ref()?["events"].as_u64()?;
        Some(events as f64 / (self.warmup_requests + self.wrk.requests).max(1) as f64)
    }

    /// Events per second at the measured request rate.
    pub fn events_per_s(&self) -> Option<f64> {
        self.events_per_request().map(|e| e * self.wrk.rps)
    }

    /// Events lost: the tracer's ring buffer was full, or tcpdump's capture buffer.
    pub fn lost(&self) -> Option<u64> {
        match &self.stats {
            Some(s) => s["lost"].as_u64(),
            None => self.tcpdump_dropped,
        }
    }

    /// Observer CPU seconds per 100,000 requests.
    pub fn cpu_s_per_100k(&self) -> Option<f64> {
        self.observer_cpu_s
            .map(|cpu| cpu * 100_000.0 / self.wrk.requests.max(1) as f64)
    }

    /// The proxy's CPU microseconds per request, kernel time in its syscalls included.
    pub fn proxy_us_per_request(&self) -> f64 {
        self.proxy_cpu_s * 1e6 / self.wrk.requests.max(1) as f64
    }

    /// The run as JSON.
    pub fn json(&self) -> Value {
        json!({
            "mode": self.mode.name(),
            "config": self.config.id(),
            "round": self.round,
            "position": self.position,
            "warmup_requests": self.warmup_requests,
            "wrk": self.wrk.json(),
            "observer": {
                "cpu_s": self.observer_cpu_s,
                "cpu_s_per_100k_requests": self.cpu_s_per_100k(),
                "peak_rss_mib": self.peak_rss_mib,
                "events_per_request": self.events_per_request(),
                "events_per_s": self.events_per_s(),
                "lost": self.lost(),
                "output_bytes": self.output_bytes,
                "stats": self.stats,
            },
            "proxy": {
                "cpu_s": self.proxy_cpu_s,
                "cpu_share": self.proxy_cpu_s / self.wrk.seconds.max(1e-9),
                "us_per_request": self.proxy_us_per_request(),
            },
            "cpu_busy_pct": self.cpu_busy_pct,
            "background_busy_pct": self.background_busy_pct,
            "foreign_bpf_programs": self.foreign_bpf_programs,
        })
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Largest spread of A's requests/s across rounds, in percent of the smallest, that still
/// counts as a steady host. On a quiet run of the development VM A stayed within ±6 %.
pub const STEADY_SPREAD_PCT: f64 = 15.0;

/// How far A's requests/s spread across the rounds of `mode`: (largest − smallest) over the
/// smallest, in percent. `None` with fewer than two rounds.
pub fn baseline_spread_pct(runs: &[Run], mode: Mode) -> Option<f64> {
    let rps: Vec<f64> = runs
        .iter()
        .filter(|r| r.mode == mode && r.config == Config::Baseline)
        .map(|r| r.wrk.rps)
        .collect();
    if rps.len() < 2 {
        return None;
    }
    let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rps.iter().copied().fold(0.0, f64::max);
    (lo > 0.0).then(|| (hi - lo) / lo * 100.0)
}

/// Medians of one configuration in one mode over its rounds.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub rounds: usize,
    pub rps: Option<f64>,
    pub p99_ms: Option<f64>,
    pub rps_ratio: Option<f64>,
    /// Median over rounds of this configuration's requests/s over A's in the same round: less
    /// moved by a host whose speed drifts during the run than the ratio of the medians.
    pub rps_ratio_paired: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub cpu_s_per_100k: Option<f64>,
    /// Median of the proxy's CPU microseconds per request.
    pub proxy_us_per_request: Option<f64>,
    /// The largest peak RSS of any round.
    pub peak_rss_mib: Option<f64>,
    pub events_per_s: Option<f64>,
    /// Sum over the rounds.
    pub lost: Option<u64>,
}

/// Summaries of every configuration in `mode`, with ratios to configuration A's medians.
pub fn summarise(runs: &[Run], mode: Mode) -> Vec<(Config, Summary)> {
    let of = |c: Config| runs.iter().filter(move |r| r.mode == mode && r.config == c);
    let base_rps = median(of(Config::Baseline).map(|r| r.wrk.rps));
    let base_p99 = median(of(Config::Baseline).map(|r| r.wrk.p99_ms));
    Config::ALL
        .iter()
        .map(|&c| {
            let rps = median(of(c).map(|r| r.wrk.rps));
            let p99 = median(of(c).map(|r| r.wrk.p99_ms));
            let lost: Vec<u64> = of(c).filter_map(Run::lost).collect();
            let s = Summary {
                rounds: of(c).count(),
                rps,
                p99_ms: p99,
                rps_ratio: rps.zip(base_rps).map(|(x, b)| x / b),
                rps_ratio_paired: median(of(c).filter_map(|r| {
                    of(Config::Baseline)
                        .find(|a| a.round == r.round)
                        .map(|a| r.wrk.rps / a.wrk.rps)
                })),
                p99_ratio: p99.zip(base_p99).map(|(x, b)| x / b),
                cpu_s_per_100k: median(of(c).filter_map(Run::cpu_s_per_100k)),
                proxy_us_per_request: median(of(c).map(Run::proxy_us_per_request)),
                peak_rss_mib: of(c).filter_map(|r| r.peak_rss_mib).reduce(f64::max),
                events_per_s: median(of(c).filter_map(Run::events_per_s)),
                lost: (!lost.is_empty()).then(|| lost.iter().sum()),
            };
            (c, s)
        })
        .collect()
}

impl Summary {
    /// The summary as JSON.
    pub fn json(&self) -> Value {
        json!({
            "rounds": self.rounds,
            "rps_median": self.rps,
            "p99_ms_median": self.p99_ms,
            "rps_ratio_to_a": self.rps_ratio,
            "rps_ratio_to_a_paired_median": self.rps_ratio_paired,
            "p99_ratio_to_a": self.p99_ratio,
            "observer_cpu_s_per_100k_requests_median": self.cpu_s_per_100k,
            "proxy_cpu_us_per_request_median": self.proxy_us_per_request,
            "observer_peak_rss_mib_max": self.peak_rss_mib,
            "events_per_s_median": self.events_per_s,
            "lost_total": self.lost,
        })
    }
}

/// One budget of issue #5 and whether it was met.
#[derive(Debug)]
pub struct Budget {
    pub name: String,
    /// The limit as text, e.g. `>= 0.99`.
    pub limit: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    /// `None` when the value was not measured in this run.
    pub pass: Option<bool>,
}

impl Budget {
    fn at_least(name: String, min: f64, value: Option<f64>, unit: &'static str) -> Self {
        Self {
            name,
            limit: format!(">= {min}"),
            pass: value.map(|v| v >= min),
            value,
            unit,
        }
    }

    fn at_most(name: String, max: f64, value: Option<f64>, unit: &'static str) -> Self {
        Self {
            name,
            limit: format!("<= {max}"),
            pass: value.map(|v| v <= max),
            value,
            unit,
        }
    }

    /// The budget as JSON.
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "limit": self.limit,
            "value": self.value,
            "unit": self.unit,
            "pass": self.pass,
        })
    }
}

/// The budgets, from the summaries of both modes, every tracer run (B and C, and the fault
/// run), the micro-benchmark and the verdict delays as seen in the trace file and on the
/// control socket.
pub fn budgets(
    summaries: &[(Mode, Vec<(Config, Summary)>)],
    tracer_runs: &[&Run],
    micro_events_per_s: Option<f64>,
    verdict_file_p99_ms: Option<f64>,
    verdict_socket_p99_ms: Option<f64>,
) -> Vec<Budget> {
    let mut out = Vec::new();
    for (mode, rows) in summaries {
        let b = rows
            .iter()
            .find(|(c, _)| *c == Config::Tracer)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        out.push(Budget::at_least(
            format!("requests/s B/A, {}", mode.name()),
            0.99,
            b.rps_ratio,
            "",
        ));
        out.push(Budget::at_most(
            format!("p99 latency B/A, {}", mode.name()),
            1.03,
            b.p99_ratio,
            "",
        ));
    }
    let rss = tracer_runs
        .iter()
        .filter_map(|r| r.peak_rss_mib)
        .reduce(f64::max);
    out.push(Budget::at_most("tracer peak RSS".into(), 48.0, rss, "MiB"));
    let lost: Vec<u64> = tracer_runs.iter().filter_map(|r| r.lost()).collect();
    let lost = (!lost.is_empty()).then(|| lost.iter().sum::<u64>() as f64);
    out.push(Budget::at_most(
        "lost events (B, C, fault)".into(),
        0.0,
        lost,
        "",
    ));
    out.push(Budget::at_least(
        "decode+correlate, one core".into(),
        2_000_000.0,
        micro_events_per_s,
        "events/s",
    ));
    out.push(Budget::at_most(
        "verdict delay p99, trace file".into(),
        50.0,
        verdict_file_p99_ms,
        "ms",
    ));
    out.push(Budget::at_most(
        "verdict delay p99, control socket".into(),
        50.0,
        verdict_socket_p99_ms,
        "ms",
    ));
    out
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The comparison table, one line per mode and configuration.
pub fn print_table(summaries: &[(Mode, Vec<(Config, Summary)>)]) {
    println!(
        "\n{:<13} {:<22} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>6}",
        "mode",
        "configuration",
        "req/s",
        "p99 ms",
        "req÷A",
        "paired",
        "p99÷A",
        "nginx µs",
        "CPU s/100k",
        "RSS MiB",
        "events/s",
        "lost"
    );
    for (mode, rows) in summaries {
        // Configurations left out with --configs have no rounds and no row.
        for (c, s) in rows.iter().filter(|(_, s)| s.rounds > 0) {
            println!(
                "{:<13} {:<22} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>6}",
                mode.name(),
                format!("{} {}", c.id(), c.describe()),
                num(s.rps, 0),
                num(s.p99_ms, 2),
                num(s.rps_ratio, 3),
                num(s.rps_ratio_paired, 3),
                num(s.p99_ratio, 3),
                num(s.proxy_us_per_request, 1),
                num(s.cpu_s_per_100k, 3),
                num(s.peak_rss_mib, 1),
                num(s.events_per_s, 0),
                s.lost.map_or_else(|| "-".into(), |l| l.to_string()),
            );
        }
    }
}

/// The budgets with PASS, MISS, or SKIP when not measured.
pub fn print_budgets(budgets: &[Budget], asserted: bool) {
    println!(
        "\nbudgets{}:",
        if asserted {
            ""
        } else {
            " (quick run: not asserted)"
        }
    );
    for b in budgets {
        let verdict = match b.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "SKIP",
        };
        let value = match b.value {
            Some(v) if v >= 1000.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "not measured".into(),
        };
        println!(
            "  {verdict:<4}  {:<32} {value:>12} {:<8} (budget {})",
            b.name, b.unit, b.limit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([]), None);
    }

    #[test]
    fn a_budget_without_a_value_is_skipped() {
        let b = Budget::at_least("x".into(), 1.0, None, "");
        assert_eq!(b.pass, None);
        assert_eq!(
            Budget::at_most("y".into(), 0.0, Some(0.0), "").pass,
            Some(true)
        );
    }
}
