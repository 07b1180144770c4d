//! `cargo xtask bench`: the criterion micro-benchmark of decode → correlate, then the lab
//! benchmark of the tracer on a saturated nginx (tests/src/bin/bench). See docs/performance.md.

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{Profile, cargo, cmd, setup, target_dir, tracer_bin};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A seconds-long run (one short round, a short micro-benchmark); budgets are not asserted.
    #[arg(long)]
    quick: bool,
    /// Skip the criterion micro-benchmark.
    #[arg(long)]
    no_micro: bool,
    /// Arguments passed through to the lab benchmark, e.g. `--rounds 9 --duration 20`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Runs the benchmarks; fails when a budget is missed (except with `--quick`).
pub fn bench(args: &BenchArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "bench: root is required (network namespaces, the tracer's BPF programs): \
             run `cargo xtask bench` as root"
        );
    }
    setup::setup()?;
    cmd::run(
        "build tracer",
        &mut cargo(["build", "-p", "tracer", "--release"]),
    )?;

    let mut lab = cargo([
        "run",
        "--quiet",
        "--release",
        "-p",
        "tracer-tests",
        "--bin",
        "bench",
        "--",
    ]);
    lab.arg("--out").arg(target_dir().join("bench"));
    if args.quick {
        lab.arg("--quick");
    }
    if !args.no_micro {
        let mut micro = cargo(["bench", "-p", "tracer", "--bench", "pipeline", "--"]);
        if args.quick {
            micro.args(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        cmd::run("micro-benchmark", &mut micro)?;
        // Where criterion keeps the estimates of group `decode_correlate`, function
        // `busy_proxy_stream` (tracer/benches/pipeline.rs).
        lab.arg("--criterion")
            .arg(target_dir().join("criterion/decode_correlate/busy_proxy_stream"));
    }
    lab.args(&args.args)
        .env("TRACER_BIN", tracer_bin(Profile::Release));

    let line = cmd::render(&lab);
    eprintln!("+ {line}");
    let status = lab
        .status()
        .with_context(|| format!("bench: could not start `{line}`"))?;
    match status.code() {
        Some(0) => Ok(()),
        // The bench binary's status for "ran to the end, but a budget was missed".
        Some(1) => bail!("bench: a budget was missed (MISS lines above)"),
        _ => bail!("bench: `{line}` failed ({status})"),
    }
}
