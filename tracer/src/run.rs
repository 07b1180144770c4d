//! `tracer run`: ring buffer -> decoder -> records -> JSON Lines, with periodic stats.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    cli::RunArgs,
    clock::Clock,
    correlate::{Correlator, Finding, LogFinding},
    decode::{Event, decode},
    probe::{KernelCounters, LoadOptions, Probes, ProgramSet},
    record::{RecordContext, type_name, write_event_record},
    sink::{
        fanout::{Fanout, Pinned},
        jsonl::{JsonlSink, Rotation},
        socket::ControlSocket,
    },
    source::{
        accesslog::{self, LogEntry, LogSpec},
        follow::Follower,
    },
    verdict::finding_record,
};

/// How long a routine record may wait in the ring when no wake-up comes, while records keep
/// coming. The kernel wakes the reader at once only for records that explain failures
/// (tracer-ebpf/src/maps.rs, `wake_flags`).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// The longest wait between drains: each drain that finds the ring empty doubles the wait, up
/// to this, so that an idle tracer wakes a few times a second instead of fifty.
const DRAIN_EVERY_IDLE: Duration = Duration::from_millis(160);

/// Counts kept in user space for the `stats` record.
#[derive(Debug, Default)]
struct Stats {
    by_type: BTreeMap<&'static str, u64>,
    events: u64,
    decode_errors: u64,
    verdicts: u64,
    retried: u64,
    log_lines: u64,
    log_unparsed: u64,
}

/// Runs until a signal or the --duration deadline.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let comms = args.watch.effective_comms();
    let opts = LoadOptions {
        comms: comms.clone(),
        pids: args.watch.pids.clone(),
        ring_bytes: args.ring_size,
        statuses: args.status.0.clone(),
        ttfb_every: args.ttfb_every,
        hold: !args.no_hold,
        fallback_hooks: args.fallback_hooks,
        programs: ProgramSet::from_flags(args.hooks_only, args.status_only),
    };
    let mut probes = Probes::load(&opts).context("setting up the kernel probes")?;
    let ring = probes.take_events()?;
    // SAFETY: the AsyncFd owns the ring buffer, so its descriptor stays open while registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .context("polling the event ring buffer")?;
    let logger = probes.take_logger();
    let mut logger = match logger {
        // SAFETY: as above, the AsyncFd owns the logger and its descriptor.
        Some(l) => {
            Some(unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }?)
        }
        None => None,
    };
    let rotation = Rotation {
        max_bytes: args.rotate_size,
        keep: args.rotate_keep as usize,
        gzip: args.rotate_gzip,
    };
    let mut sink = JsonlSink::open_rotating(&args.output, rotation)?;
    let fanout = Fanout::new();
    sink.attach(fanout.clone());
    let _socket = if args.no_socket {
        None
    } else {
        Some(ControlSocket::bind(&args.socket, fanout.clone())?)
    };
    let mut ctx = RecordContext {
        clock: Clock::sample(),
        names: probes.names.clone(),
    };

    let hooks: Vec<Value> = probes
        .hooks
        .iter()
        .map(|h| {
            json!({
                "hook": h.name,
                "attached": h.error.is_none(),
                "feature": h.feature,
                "error": h.error,
            })
        })
        .collect();
    for h in probes.hooks.iter().filter(|h| h.error.is_some()) {
        log::warn!(
            "hook {} did not attach, so {} is missing: {}",
            h.name,
            h.feature,
            h.error.as_deref().unwrap_or_default()
        );
    }
    for m in &probes.missing {
        log::warn!("kernel field {} not found: {}", m.field, m.error);
    }
    let started = Instant::now();
    sink.write_pinned(Pinned::Start, &json!({
        "type": "start",
        "time": ctx.clock.rfc3339(Clock::monotonic_now()),
        "version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel_release(),
        "pid": std::process::id(),
        "watch": {"comms": comms, "pids": args.watch.pids},
        "access_logs": args.access_logs.iter().map(|l| l.path.display().to_string()).collect::<Vec<_>>(),
        "hooks": hooks,
        "hooks_only": opts.programs == ProgramSet::Empty,
        "status_only": opts.programs == ProgramSet::StatusOnly,
    }));
    sink.flush();
    if let Some(note) = opts.programs.benchmark_note() {
        log::warn!("{note}");
    }
    log::info!("tracing; writing to {}", args.output.display());
    // The view reads the same stream as the control socket, from this process.
    let (live_stop, live_stop_rx) = tokio::sync::watch::channel(false);
    let mut live_view = if args.live {
        crate::logging::hold();
        let source = crate::live::view::Source {
            label: format!("writing {}", args.output.display()),
        };
        Some(crate::live::spawn(fanout.clone(), source, live_stop_rx)?)
    } else {
        None
    };

    let mut stats = Stats::default();
    let mut correlator = Correlator::new();
    // Only lines of interest cross it (see `follow_log`): a full channel makes the follower
    // wait, and the lines wait in the file.
    let (log_tx, mut log_rx) = tokio::sync::mpsc::channel::<LogLine>(LOG_CHANNEL);
    let logs_stop = Arc::new(AtomicBool::new(false));
    for spec in &args.access_logs {
        let interesting = args.status.0.clone();
        follow_log(spec.clone(), interesting, log_tx.clone(), logs_stop.clone())?;
    }
    drop(log_tx);
    let mut logs_open = !args.access_logs.is_empty();
    let statuses = args.status.0.clone();
    let stats_every = Duration::from_secs_f64(args.stats_interval.max(0.1));
    let mut tick = tokio::time::interval_at(Instant::now() + stats_every, stats_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(Duration::from_secs_f64);
    let stop_at = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(stop_at);
    // Routine records wait in the ring for a drain: this timer's, or one that a failure's
    // wake-up causes.
    let mut drain_every = DRAIN_EVERY;
    let drain_timer = tokio::time::sleep(drain_every);
    tokio::pin!(drain_timer);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut sink, &ctx, &mut stats, &mut correlator);
                guard.clear_ready();
                sink.flush();
            }
            _ = &mut drain_timer => {
                let n = drain(ring.get_mut(), &mut sink, &ctx, &mut stats, &mut correlator);
                sink.flush();
                drain_every = if n > 0 {
                    DRAIN_EVERY
                } else {
                    (drain_every * 2).min(DRAIN_EVERY_IDLE)
                };
                drain_timer.as_mut().reset(Instant::now() + drain_every);
            }
            guard = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = settle_at(correlator.next_deadline()), if correlator.next_deadline().is_some() => {
                // What the kernel wrote up to now, routine records included, is evidence.
                drain(ring.get_mut(), &mut sink, &ctx, &mut stats, &mut correlator);
                for finding in correlator.tick(Clock::monotonic_now()) {
                    write_finding(&finding, &mut sink, &ctx, &mut stats);
                }
                sink.flush();
            }
            line = log_rx.recv(), if logs_open => match line {
                Some(line) => {
                    on_log_line(line, &statuses, &mut correlator, &mut sink, &ctx, &mut stats);
                    sink.flush();
                }
                None => logs_open = false,
            },
            _ = tick.tick() => {
                ctx.clock = Clock::sample();
                let k = probes.counters().unwrap_or_default();
                let record = stats_record(&ctx, &stats, &k, &sink, started, false);
                sink.write_pinned(Pinned::Stats, &record);
                sink.flush();
            }
            _ = sighup.recv() => {
                // logrotate moved the file away: write to a new one at the same path.
                match sink.reopen() {
                    Ok(()) => log::info!("reopened {}", args.output.display()),
                    Err(e) => log::error!("reopening {} failed: {e}", args.output.display()),
                }
            }
            ended = async { live_view.as_mut().expect("guarded").await }, if live_view.is_some() => {
                live_view = None;
                match ended {
                    Ok(Ok(())) => log::info!("live view closed: stopping"),
                    Ok(Err(e)) => log::error!("live view failed, stopping: {e}"),
                    Err(_) => log::error!("live view crashed, stopping"),
                }
                break;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = &mut stop_at, if deadline.is_some() => break,
        }
    }
    logs_stop.store(true, Ordering::Relaxed);
    // The terminal is given back before the last records are written.
    let _ = live_stop.send(true);
    if let Some(view) = live_view.take() {
        let _ = view.await;
    }
    crate::logging::release();
    // Everything the kernel wrote before we stopped is still in the ring: read it all.
    drain(ring.get_mut(), &mut sink, &ctx, &mut stats, &mut correlator);
    // Then the requests still tallied on open connections, which no record has counted.
    match probes.unwritten_tallies(Clock::monotonic_now()) {
        Ok(events) => {
            for ev in &events {
                on_event(ev, &mut sink, &ctx, &mut stats, &mut correlator);
            }
        }
        Err(e) => log::warn!("the open connections' ttfb tallies could not be read: {e}"),
    }
    for finding in correlator.flush() {
        write_finding(&finding, &mut sink, &ctx, &mut stats);
    }
    let k = probes.counters().unwrap_or_default();
    let last = stats_record(&ctx, &stats, &k, &sink, started, true);
    sink.write_pinned(Pinned::Stats, &last);
    sink.flush();
    log::info!(
        "stopped: {} events, {} lost in the kernel, {} write errors",
        stats.events,
        k.lost,
        sink.write_errors
    );
    drop(probes);
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    sink: &mut JsonlSink,
    ctx: &RecordContext,
    stats: &mut Stats,
    correlator: &mut Correlator,
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        match decode(&item) {
            Ok(ev) => {
                stats.events += 1;
                on_event(&ev, sink, ctx, stats, correlator);
            }
            Err(e) => {
                stats.decode_errors += 1;
                if stats.decode_errors == 1 {
                    log::error!("undecodable event: {e}");
                }
            }
        }
    }
    n
}

/// Writes one event's record and feeds it to the correlator. `stats.events` counts only what
/// came from the ring, so the caller counts it.
fn on_event(
    ev: &Event,
    sink: &mut JsonlSink,
    ctx: &RecordContext,
    stats: &mut Stats,
    correlator: &mut Correlator,
) {
    *stats.by_type.entry(type_name(&ev.payload)).or_default() += 1;
    sink.write_with(|line| write_event_record(ev, ctx, line));
    for finding in correlator.on_event(ev) {
        write_finding(&finding, sink, ctx, stats);
    }
}

/// Messages an access-log follower may have waiting for the main loop.
const LOG_CHANNEL: usize = 1024;

/// What an access-log follower thread hands to the main loop.
enum LogLine {
    /// A line whose status is one of `--status`.
    Entry(Box<LogEntry>, Arc<PathBuf>),
    Unparsed(String, Arc<PathBuf>),
    /// Lines read and parsed whose status is of no interest: counted, nothing more.
    Skipped(u64),
}

/// Follows one access log on its own thread (file reads block), parsing lines as they come.
/// Only lines with a status in `interesting` are sent on: a busy proxy logs thousands of
/// healthy requests a second, and sending each one woke the main loop for nothing (and, when
/// it fell behind, filled the channel with parsed lines: 10 MiB of peak memory in the bench).
fn follow_log(
    spec: LogSpec,
    interesting: Vec<u16>,
    tx: tokio::sync::mpsc::Sender<LogLine>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let path = Arc::new(spec.path.clone());
    let mut follower = Follower::open(&spec.path, true)
        .with_context(|| format!("opening access log {}", spec.path.display()))?;
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // A poll that stopped at its batch limit left more in the file: read on.
                let more = match follower.poll() {
                    Ok(lines) => {
                        let mut skipped = 0;
                        for line in lines {
                            let msg = match accesslog::parse_line(spec.format, &line) {
                                Ok(e) if interesting.contains(&e.status) => {
                                    LogLine::Entry(Box::new(e), path.clone())
                                }
                                Ok(_) => {
                                    skipped += 1;
                                    continue;
                                }
                                Err(e) => LogLine::Unparsed(e.to_string(), path.clone()),
                            };
                            if tx.blocking_send(msg).is_err() {
                                return;
                            }
                        }
                        if skipped > 0 && tx.blocking_send(LogLine::Skipped(skipped)).is_err() {
                            return;
                        }
                        !follower.caught_up()
                    }
                    Err(e) => {
                        log::warn!("reading access log {}: {e}", path.display());
                        false
                    }
                };
                if !more {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .context("starting the access-log thread")?;
    Ok(())
}

fn on_log_line(
    line: LogLine,
    statuses: &[u16],
    correlator: &mut Correlator,
    sink: &mut JsonlSink,
    ctx: &RecordContext,
    stats: &mut Stats,
) {
    let (entry, path) = match line {
        LogLine::Skipped(n) => {
            stats.log_lines += n;
            return;
        }
        LogLine::Entry(e, p) => (e, p),
        LogLine::Unparsed(err, path) => {
            stats.log_lines += 1;
            stats.log_unparsed += 1;
            if stats.log_unparsed == 1 || stats.log_unparsed.is_power_of_two() {
                log::warn!(
                    "{}: skipped a line that does not parse ({} so far): {err}",
                    path.display(),
                    stats.log_unparsed
                );
            }
            return;
        }
    };
    stats.log_lines += 1;
    if !statuses.contains(&entry.status) {
        return;
    }
    let now = Clock::monotonic_now();
    let finding = correlator.on_log(&entry, now);
    let (verdict_time, cause) = match &finding {
        LogFinding::Matched { verdict_ns, cause } => {
            (Some(ctx.clock.rfc3339(*verdict_ns)), Some(*cause))
        }
        LogFinding::Verdict(_) => (None, None),
    };
    sink.write(&access_log_record(
        &entry,
        &path,
        now,
        verdict_time,
        cause,
        ctx,
    ));
    if let LogFinding::Verdict(v) = finding {
        write_finding(&Finding::Verdict(v), sink, ctx, stats);
    }
}

fn access_log_record(
    e: &LogEntry,
    path: &std::path::Path,
    now: u64,
    verdict_time: Option<String>,
    cause: Option<&str>,
    ctx: &RecordContext,
) -> Value {
    let client = match (e.client_ip, e.client_port) {
        (Some(ip), Some(port)) => Some(std::net::SocketAddr::new(ip, port).to_string()),
        (Some(ip), None) => Some(ip.to_string()),
        _ => None,
    };
    json!({
        "type": "access_log",
        "time": ctx.clock.rfc3339(now),
        "log": path.display().to_string(),
        "status": e.status,
        "client": client,
        "upstreams": e.upstreams,
        "upstream_statuses": e.upstream_statuses,
        "upstream_connect_time_s": e.upstream_connect_time_s,
        "upstream_response_time_s": e.upstream_response_time_s,
        "termination_state": e.termination_state,
        "response_flags": e.response_flags,
        "retries": e.retries,
        "verdict_time": verdict_time,
        "cause": cause,
    })
}

fn write_finding(finding: &Finding, sink: &mut JsonlSink, ctx: &RecordContext, stats: &mut Stats) {
    match finding {
        Finding::Verdict(_) => stats.verdicts += 1,
        Finding::Retried(_) => stats.retried += 1,
    }
    sink.write(&finding_record(finding, ctx));
}

/// Sleeps until a monotonic deadline (in `bpf_ktime_get_ns` terms).
async fn settle_at(deadline_ns: Option<u64>) {
    let now = Clock::monotonic_now();
    let wait = deadline_ns.map_or(0, |d| d.saturating_sub(now));
    tokio::time::sleep(Duration::from_nanos(wait)).await;
}

fn stats_record(
    ctx: &RecordContext,
    stats: &Stats,
    k: &KernelCounters,
    sink: &JsonlSink,
    started: Instant,
    last: bool,
) -> Value {
    json!({
        "type": "stats",
        "time": ctx.clock.rfc3339(Clock::monotonic_now()),
        "uptime_s": started.elapsed().as_secs_f64(),
        "events": stats.events,
        "by_type": stats.by_type,
        "lost": k.lost,
        "kernel_emitted": k.emitted,
        "map_full": k.map_full,
        "decode_errors": stats.decode_errors,
        "verdicts": stats.verdicts,
        "log_lines": stats.log_lines,
        "log_unparsed": stats.log_unparsed,
        "retried": stats.retried,
        "write_errors": sink.write_errors,
        "final": last,
    })
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
