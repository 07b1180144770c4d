//! `bench --progcost N`: what one run of each of the tracer's programs costs, on a loopback
//! ping-pong of N round trips (`pingpong.py`) whose both ends the tracer watches, with BPF
//! run-time statistics on. Unlike the lab it has no load generator to share the CPUs with,
//! so it tells builds and flags apart (`--tracer-arg --status-only`) by tens of ns when the
//! lab's throughput cannot. performance.md ("The eighth round") has results.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tracer_tests::{TracerRun, lab::wait_for};

use crate::bpfstats::{Snapshot, StatsOn};

const PINGPONG_PY: &str = include_str!("pingpong.py");

/// Runs the ping-pong under `tracer run --pid <it> <tracer_args>` and prints each program's
/// runs and ns per run, busiest first.
pub fn run(round_trips: u32, tracer_args: &[String]) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tracer-progcost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, round_trips, tracer_args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &std::path::Path, round_trips: u32, tracer_args: &[String]) -> anyhow::Result<()> {
    let go = dir.join("go");
    let mut pingpong = Command::new("python3")
        .args(["-c", PINGPONG_PY, &round_trips.to_string()])
        .arg(&go)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the ping-pong")?;
    let pid = pingpong.id().to_string();
    let mut args = vec!["--pid", &pid];
    args.extend(tracer_args.iter().map(String::as_str));
    let tracer = TracerRun::start(dir, &args);
    let tracer = match tracer {
        Ok(t) => t,
        Err(e) => {
            let _ = pingpong.kill();
            let _ = pingpong.wait();
            return Err(e);
        }
    };
    let stats = StatsOn::enable()?;
    let before = Snapshot::take(tracer.pid())?;
    std::fs::write(&go, b"")?;
    let status = wait_for(Duration::from_secs(300), || {
        pingpong.try_wait().ok().flatten()
    });
    let after = Snapshot::take(tracer.pid())?;
    drop(stats);
    tracer.stop()?;
    match status {
        Some(s) if s.success() => {}
        Some(s) => bail!("the ping-pong failed: {s}"),
        None => {
            let _ = pingpong.kill();
            bail!("the ping-pong did not finish within 300 s");
        }
    }
    let cost = before.cost_until(&after, u64::from(round_trips));
    println!("{:<28} {:>10} {:>10}", "program", "runs", "ns/run");
    for p in cost["programs"].as_array().into_iter().flatten() {
        println!(
            "{:<28} {:>10} {:>10.1}",
            p["name"].as_str().unwrap_or("?"),
            p["runs"].as_u64().unwrap_or(0),
            p["ns_per_run"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
