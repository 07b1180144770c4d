//! `cargo xtask bench`: what the tracer costs a busy reverse proxy. Real nginx proxies to a
//! cheap upstream (a second nginx) in network namespaces while wrk loads it. Seven
//! configurations alternate within every round: A no tracer, B the tracer, C the tracer with
//! an access log, D `tcpdump -w` on the upstream port, E the tracer's hooks with empty
//! programs (the floor of any tracer on those hooks), F the same with status lines read (the
//! floor of in-kernel status capture), G the tracer on its fallback hooks (as on kernels
//! before 6.16). Then a fault mix measures how quickly
//! verdicts follow their 5xx, and a profiling run reads the kernel programs' run times.
//! Prints a table and the budgets of issue #5, and writes everything as JSON.
//! The method and how to read the JSON are in docs/performance.md.

mod bpfstats;
mod host;
mod lab;
mod micro;
mod observer;
mod progcost;
mod report;
mod verdicts;
mod wrk;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tracer::report::nearest_rank;
use tracer_tests::{require_root, tracer::tracer_bin};

use crate::{
    lab::{BenchLab, Mode, Pinning},
    observer::{Config, Observer},
    report::Run,
    wrk::Load,
};

/// Version of the JSON layout; raised when a field changes meaning.
const SCHEMA: u32 = 1;

#[derive(Parser)]
#[command(about = "Measure the tracer's cost on a saturated nginx (run as root)")]
struct Args {
    /// A seconds-long run for smoke tests: one short round, budgets not asserted.
    #[arg(long)]
    quick: bool,
    /// Rounds per mode; each round runs every configuration once, in rotating order.
    #[arg(long)]
    rounds: Option<u32>,
    /// Seconds of load per measured run.
    #[arg(long)]
    duration: Option<u64>,
    /// Connections wrk keeps open.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Criterion's directory of the decode → correlate benchmark, to include its events/s.
    #[arg(long, value_name = "DIR")]
    criterion: Option<PathBuf>,
    /// Directory for the JSON results.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Keep every trace and capture file in the lab directory, which is then left behind and
    /// named at the end (the files are large).
    #[arg(long)]
    keep_output: bool,
    /// The configurations to run, as letters (e.g. `AB` for a quicker look at the tracer's
    /// cost alone). A always runs: the ratios need it. Budgets on the others show SKIP.
    #[arg(long, value_name = "LETTERS", default_value = "ABCDEFG", value_parser = parse_configs)]
    configs: Configs,
    /// Instead of the lab: time one run of each of the tracer's programs on a loopback
    /// ping-pong of N round trips, with BPF run-time statistics on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    progcost: Option<u32>,
    /// With --progcost: an argument for `tracer run` (repeatable), e.g. `--status-only`.
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "progcost"
    )]
    tracer_arg: Vec<String>,
}

/// The configurations a run compares, in their base order.
#[derive(Debug, Clone)]
struct Configs(Vec<Config>);

/// Parses `--configs`: letters out of A to G, each at most once; A is always added.
fn parse_configs(s: &str) -> Result<Configs, String> {
    let mut out = vec![Config::Baseline];
    for ch in s.chars() {
        let c = Config::ALL
            .into_iter()
            .find(|c| c.id().starts_with(ch.to_ascii_uppercase()))
            .ok_or_else(|| {
                let letters: String = Config::ALL.iter().map(|c| c.id()).collect();
                format!("`{ch}` is not a configuration: use letters out of {letters}")
            })?;
        match (c, out.contains(&c)) {
            (Config::Baseline, _) => {}
            (_, true) => return Err(format!("configuration {} is given twice", c.id())),
            (_, false) => out.push(c),
        }
    }
    out.sort_by_key(|c| Config::ALL.iter().position(|x| x == c));
    Ok(Configs(out))
}

/// How long each part runs.
struct Plan {
    rounds: u32,
    duration: Duration,
    warmup: Duration,
    fault: Duration,
    profile: Duration,
    /// Longest wait for the host to become idle before a run.
    settle: Duration,
    connections: u32,
    configs: Vec<Config>,
}

impl Plan {
    fn from_args(a: &Args) -> Self {
        let (rounds, duration, fault, profile, settle) = if a.quick {
            (1, 1, 1, 1, 0)
        } else {
            (5, 10, 10, 5, 10)
        };
        Self {
            rounds: a.rounds.unwrap_or(rounds).max(1),
            duration: Duration::from_secs(a.duration.unwrap_or(duration).max(1)),
            warmup: Duration::from_secs(1),
            fault: Duration::from_secs(fault),
            profile: Duration::from_secs(profile),
            settle: Duration::from_secs(settle),
            connections: a.connections,
            configs: a.configs.0.clone(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "rounds": self.rounds,
            "duration_s": self.duration.as_secs(),
            "warmup_s": self.warmup.as_secs(),
            "fault_s": self.fault.as_secs(),
            "profile_s": self.profile.as_secs(),
            "connections": self.connections,
            "wrk_threads": 1,
            "configurations": self.configs.iter().map(|c| c.id()).collect::<String>(),
            "order": "the configurations rotated by one position each round",
        })
    }
}

/// Set by SIGINT or SIGTERM: the bench stops after the current run and removes its lab.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Fails once the user asked the bench to stop, so that the lab is dropped on the way out.
fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: no results written, the lab was removed");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Without a handler, Ctrl-C would kill the bench before it removes its namespaces and
    // processes. SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let result = match args.progcost {
        Some(n) => {
            require_root();
            progcost::run(n, &args.tracer_arg).map(|()| true)
        }
        None => bench(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; returns whether every budget passed (always true for `--quick`).
fn bench(args: &Args) -> anyhow::Result<bool> {
    require_root();
    for tool in [
        "nginx", "wrk", "tcpdump", "bpftool", "taskset", "curl", "python3",
    ] {
        if !host::have(tool) {
            bail!("`{tool}` is not installed: run `cargo xtask setup`");
        }
    }
    let plan = Plan::from_args(args);
    let micro = match &args.criterion {
        Some(dir) => Some(micro::read(dir)?),
        None => None,
    };
    let pinning = Pinning::for_host();
    let mut bench = BenchLab::start(pinning)?;
    if args.keep_output {
        // The traces and captures are written in the lab's directory, which goes with the lab.
        bench.lab.keep_files();
    }
    eprintln!(
        "bench: nginx[{}] proxying {} → upstream nginx, wrk -t1 -c{}, {} round(s) of {} s per configuration",
        bench.proxy_pid,
        bench.url("/"),
        plan.connections,
        plan.rounds,
        plan.duration.as_secs()
    );

    let mut runs = Vec::new();
    for mode in Mode::ALL {
        for round in 1..=plan.rounds {
            for position in 0..plan.configs.len() {
                check_stop()?;
                // Rotating the order spreads slow drifts (page cache, other users) evenly.
                let config = plan.configs[(position + round as usize - 1) % plan.configs.len()];
                let run = measure(
                    &bench,
                    &plan,
                    mode,
                    config,
                    round,
                    position,
                    args.keep_output,
                )
                .with_context(|| {
                    format!(
                        "{} round {round}, configuration {}",
                        mode.name(),
                        config.id()
                    )
                })?;
                eprintln!(
                    "bench: {:<12} round {round} {} {:<20} {:>8.0} req/s  p99 {:>6.2} ms  observer CPU {}",
                    mode.name(),
                    config.id(),
                    config.describe(),
                    run.wrk.rps,
                    run.wrk.p99_ms,
                    run.observer_cpu_s
                        .map_or_else(|| "-".into(), |c| format!("{c:.2} s")),
                );
                runs.push(run);
            }
        }
    }

    check_stop()?;
    let (fault_run, delays) = fault_run(&bench, &plan, args.keep_output).context("fault run")?;
    let mut profiles = serde_json::Map::new();
    for mode in Mode::ALL {
        check_stop()?;
        profiles.insert(
            mode.name().into(),
            profile(&bench, &plan, mode).with_context(|| format!("profiling {}", mode.name()))?,
        );
    }

    let summaries: Vec<(Mode, Vec<(Config, report::Summary)>)> = Mode::ALL
        .iter()
        .map(|&m| (m, report::summarise(&runs, m)))
        .collect();
    let steadiness: Vec<(Mode, Option<f64>)> = Mode::ALL
        .iter()
        .map(|&m| (m, report::baseline_spread_pct(&runs, m)))
        .collect();
    let tracer_runs: Vec<&Run> = runs
        .iter()
        .filter(|r| r.config.is_tracer())
        .chain([&fault_run])
        .collect();
    check_stop()?;
    let micro_eps = micro.as_ref().and_then(|m| m["events_per_s"].as_f64());
    let budgets = report::budgets(
        &summaries,
        &tracer_runs,
        micro_eps,
        nearest_rank(&delays.file.delays_ms, 99),
        nearest_rank(&delays.socket.delays_ms, 99),
    );

    let started = SystemTime::now();
    let doc = json!({
        "schema": SCHEMA,
        "time": unix_to_rfc3339(started),
        "quick": args.quick,
        "git": git_describe(),
        "tracer": tracer_bin().display().to_string(),
        "host": host::describe(),
        "plan": plan.json(),
        "pinning": pinning.json(),
        "steadiness": steadiness.iter().map(|(m, spread)| (m.name().to_string(), json!({
            "a_rps_spread_pct": spread,
            "steady": spread.map(|s| s <= report::STEADY_SPREAD_PCT),
        }))).collect::<serde_json::Map<_, _>>(),
        "summary": summaries.iter().map(|(m, rows)| (m.name().to_string(), Value::Object(
            rows.iter().map(|(c, s)| (c.id().to_string(), s.json())).collect()))).collect::<serde_json::Map<_, _>>(),
        "budgets": budgets.iter().map(report::Budget::json).collect::<Vec<_>>(),
        "fault": {
            "run": fault_run.json(),
            "verdicts": {
                "trace_file": delays.file.json(),
                "control_socket": delays.socket.json(),
            },
        },
        "kernel_profile": profiles,
        "micro": micro,
        "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
    });
    let path = write_results(args, &doc, started)?;

    report::print_table(&summaries);
    for (mode, spread) in &steadiness {
        if let Some(s) = spread.filter(|s| *s > report::STEADY_SPREAD_PCT) {
            println!(
                "\nWARNING: A's requests/s spread {s:.0} % across the {} rounds: the host was not \
                 steady, and the ratios of this mode are not reliable (see `paired`)",
                mode.name()
            );
        }
    }
    println!(
        "\nfault mix (B, 5% refused + 5% reset, {}): {:.0} req/s, {} verdicts",
        Mode::NoKeepAlive.name(),
        fault_run.wrk.rps,
        delays.file.causes.values().sum::<u64>(),
    );
    for (reader, d) in [
        ("trace file", &delays.file),
        ("control socket", &delays.socket),
    ] {
        let d = d.json();
        println!(
            "  delay from the 5xx write to its verdict in the {reader}: p50 {} ms, p99 {} ms, max {} ms",
            fmt_ms(&d["delay_ms"]["p50"]),
            fmt_ms(&d["delay_ms"]["p99"]),
            fmt_ms(&d["delay_ms"]["max"]),
        );
    }
    for (mode, p) in &profiles {
        println!(
            "kernel side ({mode}, bpf stats on): {} ns of BPF programs per request",
            fmt_ms(&p["bpf"]["ns_per_request"]),
        );
    }
    if let Some(eps) = micro_eps {
        println!("decode → correlate (criterion, one core): {eps:.0} events/s");
    }
    report::print_budgets(&budgets, !args.quick);
    println!("\nresults: {}", path.display());
    Ok(args.quick || budgets.iter().all(|b| b.pass != Some(false)))
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// One measured run: start the observer, warm up, measure, stop the observer.
fn measure(
    bench: &BenchLab,
    plan: &Plan,
    mode: Mode,
    config: Config,
    round: u32,
    position: usize,
    keep_output: bool,
) -> anyhow::Result<Run> {
    let probe = Probe {
        start: |_: &Observer| Ok(()),
        finish: |()| (),
    };
    measure_with(
        bench,
        plan,
        mode,
        config,
        round,
        position,
        keep_output,
        None,
        probe,
    )
    .map(|(run, ())| run)
}

/// Something that watches the observer during a run: `start` runs once the observer is
/// ready, `finish` after the load and before the observer stops.
struct Probe<S, F> {
    start: S,
    finish: F,
}

/// [`measure`] with a wrk script and a [`Probe`], whose result is returned with the run.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site each; a struct would only rename them"
)]
fn measure_with<T, U>(
    bench: &BenchLab,
    plan: &Plan,
    mode: Mode,
    config: Config,
    round: u32,
    position: usize,
    keep_output: bool,
    script: Option<PathBuf>,
    probe: Probe<impl FnOnce(&Observer) -> anyhow::Result<T>, impl FnOnce(T) -> U>,
) -> anyhow::Result<(Run, U)> {
    bench.truncate_access_log()?;
    let background_busy_pct = host::settle(plan.settle);
    let foreign_bpf_programs = host::loaded_bpf_programs();
    let dir = bench
        .lab
        .dir
        .join(format!("{}-{round}-{}", mode.name(), config.id()));
    // The observer's own bound, in case the bench dies without killing it.
    let limit = plan.warmup + plan.duration + Duration::from_secs(120);
    let observer = Observer::start(config, bench, &dir, limit)?;
    let watching = (probe.start)(&observer)?;
    let url = bench.url(mode.path());
    let load = |duration| Load {
        connections: plan.connections,
        duration,
        script: script.clone(),
        cpu: bench.pinning.load,
    };
    let warmup = wrk::run(&bench.lab.cl, &url, &load(plan.warmup))?;
    let cpu_before = observer.cpu_seconds();
    let proxy_before = bench.proxy_cpu_seconds();
    let cpus_before = host::CpuTimes::sample();
    let result = wrk::run(&bench.lab.cl, &url, &load(plan.duration))?;
    let cpus = cpus_before.busy_pct_until(&host::CpuTimes::sample());
    let proxy_cpu_s = bench.proxy_cpu_seconds() - proxy_before;
    let observer_cpu_s = observer.cpu_seconds().zip(cpu_before).map(|(b, a)| b - a);
    let watched = (probe.finish)(watching);
    let end = observer.stop(keep_output)?;
    if result.requests == 0 {
        bail!("wrk completed no request");
    }
    Ok((
        Run {
            mode,
            config,
            round,
            position,
            warmup_requests: warmup.requests,
            wrk: result,
            observer_cpu_s,
            peak_rss_mib: end.peak_rss_mib,
            stats: end.stats,
            tcpdump_dropped: end.tcpdump_dropped,
            output_bytes: end.output_bytes,
            proxy_cpu_s,
            cpu_busy_pct: cpus,
            background_busy_pct,
            foreign_bpf_programs,
        },
        watched,
    ))
}

/// Verdict delays seen by the two readers of the fault run.
struct FaultDelays {
    file: verdicts::VerdictDelays,
    socket: verdicts::VerdictDelays,
}

/// How long the readers keep reading after the load stopped, so that verdicts still on their
/// way are counted (their delay included) rather than dropped.
const VERDICT_DRAIN: Duration = Duration::from_secs(1);

/// Configuration B under a fault mix, with readers timing each verdict's arrival in the trace
/// file and on the control socket.
fn fault_run(
    bench: &BenchLab,
    plan: &Plan,
    keep_output: bool,
) -> anyhow::Result<(Run, FaultDelays)> {
    let mode = Mode::NoKeepAlive;
    let script = bench.lab.dir.join("faults.lua");
    std::fs::write(
        &script,
        wrk::fault_script(mode.path(), "/refused/", "/reset/"),
    )?;
    let fault_plan = Plan {
        duration: plan.fault,
        configs: plan.configs.clone(),
        ..*plan
    };
    let probe = Probe {
        start: |obs: &Observer| {
            let socket = obs
                .socket
                .as_deref()
                .context("the tracer has no control socket")?;
            Ok((
                verdicts::VerdictReader::tail_file(obs.output())?,
                verdicts::VerdictReader::connect(socket)?,
            ))
        },
        finish: |(file, socket): (verdicts::VerdictReader, verdicts::VerdictReader)| {
            std::thread::sleep(VERDICT_DRAIN);
            FaultDelays {
                file: file.finish(),
                socket: socket.finish(),
            }
        },
    };
    let (run, delays) = measure_with(
        bench,
        &fault_plan,
        mode,
        Config::Tracer,
        0,
        0,
        keep_output,
        Some(script),
        probe,
    )?;
    eprintln!(
        "bench: fault mix            {:>8.0} req/s, {} non-2xx, {} verdicts timed",
        run.wrk.rps,
        run.wrk.non_2xx,
        delays.file.delays_ms.len()
    );
    Ok((run, delays))
}

/// Configuration B with BPF run-time statistics on: each kernel program's runs and time per
/// request. Not part of the comparison, since the statistics themselves cost time.
fn profile(bench: &BenchLab, plan: &Plan, mode: Mode) -> anyhow::Result<Value> {
    let dir = bench.lab.dir.join(format!("{}-profile", mode.name()));
    let observer = Observer::start(
        Config::Tracer,
        bench,
        &dir,
        plan.profile + Duration::from_secs(120),
    )?;
    let pid = observer.pid().context("the tracer has no pid")?;
    let load = Load {
        connections: plan.connections,
        duration: plan.profile,
        script: None,
        cpu: bench.pinning.load,
    };
    let stats = bpfstats::StatsOn::enable()?;
    let before = bpfstats::Snapshot::take(pid)?;
    let cpu_before = observer.cpu_seconds();
    let result = wrk::run(&bench.lab.cl, &bench.url(mode.path()), &load)?;
    let after = bpfstats::Snapshot::take(pid)?;
    let cpu = observer.cpu_seconds().zip(cpu_before).map(|(b, a)| b - a);
    drop(stats);
    let end = observer.stop(false)?;
    Ok(json!({
        "wrk": result.json(),
        "bpf": before.cost_until(&after, result.requests),
        "tracer_cpu_s": cpu,
        "tracer_stats": end.stats,
    }))
}

/// Writes the results to `<out>/bench-<time>.json` and returns the path.
fn write_results(args: &Args, doc: &Value, started: SystemTime) -> anyhow::Result<PathBuf> {
    let dir = args.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp: String = unix_to_rfc3339(started)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    let name = format!(
        "bench-{}{stamp}Z.json",
        if args.quick { "quick-" } else { "" }
    );
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `target/bench` of this workspace, honouring `CARGO_TARGET_DIR`.
fn default_out_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    target.join("bench")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a system time.
fn unix_to_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let full = tracer::clock::rfc3339_from_unix_ns(i128::from(secs) * 1_000_000_000);
    // The full form ends in `.nnnnnnnnnZ`; whole seconds are enough here.
    format!("{}Z", full.get(..19).unwrap_or(&full))
}

/// The workspace's commit and whether the tracer's sources differ from it.
fn git_describe() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "commit": git(&["rev-parse", "HEAD"]),
        "tracer_sources_modified": git(&["status", "--porcelain", "--", "tracer", "tracer-ebpf", "tracer-common"]).map(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_as_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_526_027);
        assert_eq!(unix_to_rfc3339(t), "2026-11-24T13:13:47Z");
        let back = tracer::report::parse_rfc3339(&unix_to_rfc3339(t));
        assert_eq!(back, Some(1_795_526_027_000_000_000));
    }
}
