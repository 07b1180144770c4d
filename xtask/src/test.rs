//! `cargo xtask test`: every check and test, in order, stopping at the first failure.

use anyhow::{Result, bail};
use clap::Args;

use crate::{Profile, cargo, cmd, setup, tracer_bin};

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Skip the privileged integration tests (no root needed).
    #[arg(long)]
    unit: bool,
    /// Only run the integration tests whose name contains this string.
    #[arg(long, value_name = "STR")]
    filter: Option<String>,
}

/// Numbered banners so a CI log shows which step is running and how many remain.
struct Steps {
    done: usize,
    total: usize,
}

impl Steps {
    fn start(&mut self, name: &str) {
        self.done += 1;
        eprintln!("\n==> [{}/{}] {name}", self.done, self.total);
    }
}

/// Runs the test pipeline described by `args`.
pub fn test(args: &TestArgs) -> Result<()> {
    let privileged = !args.unit;
    if privileged && !cmd::is_root() {
        // Said up front so a non-root user need not wait for the slow steps to learn it.
        eprintln!("xtask test: note: not root, so the last step will fail; pass --unit to skip it");
    }
    let mut steps = Steps {
        done: 0,
        total: if privileged { 6 } else { 5 },
    };

    steps.start("setup");
    setup::setup()?;

    steps.start("rustfmt");
    cmd::run("rustfmt", &mut cargo(["fmt", "--all", "--", "--check"]))?;

    steps.start("clippy");
    // tracer-ebpf only builds for the BPF target; tracer's build script compiles it.
    cmd::run(
        "clippy",
        &mut cargo([
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;

    steps.start("unit tests");
    cmd::run("unit tests", &mut cargo(["test"]))?;

    steps.start("build tracer");
    cmd::run("build tracer", &mut cargo(["build", "-p", "tracer"]))?;

    if !privileged {
        eprintln!("\nxtask test: skipped the privileged integration tests (--unit)");
        return Ok(());
    }

    const STEP: &str = "integration tests";
    steps.start(STEP);
    if !cmd::is_root() {
        bail!(
            "{STEP}: root is required (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): \
             run `cargo xtask test` as root, or `cargo xtask test --unit` to skip this step"
        );
    }
    let mut command = cargo(["test", "-p", "tracer-tests", "--", "--test-threads=1"]);
    if let Some(filter) = &args.filter {
        command.arg(filter);
    }
    command.env("TRACER_BIN", tracer_bin(Profile::Debug));
    cmd::run(STEP, &mut command)
}
