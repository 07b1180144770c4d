//! Project automation, run as `cargo xtask <command>`.

mod bench;
mod cmd;
mod setup;
mod test;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Setup, build and test automation for the tracer"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install whatever building and testing needs; a no-op when everything is present.
    Setup,
    /// Run setup, build the tracer and print the path of its binary.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run every check and test: setup, rustfmt, clippy, unit tests, privileged integration tests.
    Test(test::TestArgs),
    /// Run setup, build the tracer and run the demo from the tests crate with the given arguments.
    Demo {
        /// Arguments passed through to the demo.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what the tracer costs a saturated nginx against the budgets (root; minutes).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::Build { release } => build(release),
        Task::Test(args) => test::test(&args),
        Task::Demo { args } => demo(&args),
        Task::Bench(args) => bench::bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cargo profile a tracer binary was built with.
#[derive(Clone, Copy)]
pub enum Profile {
    /// `target/debug`.
    Debug,
    /// `target/release`.
    Release,
}

/// Workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` the way the child cargo runs will.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match env::var_os("CARGO_TARGET_DIR") {
        // Child cargo commands run in the workspace root, so a relative path is relative to it.
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Absolute path of the tracer binary for `profile`.
pub fn tracer_bin(profile: Profile) -> PathBuf {
    let dir = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    target_dir().join(dir).join("tracer")
}

/// A `cargo` command with `args`, run from the workspace root.
pub fn cargo<const N: usize>(args: [&str; N]) -> Command {
    let mut command = Command::new("cargo");
    command.args(args).current_dir(workspace_root());
    command
}

fn build(release: bool) -> Result<()> {
    setup::setup()?;
    let mut command = cargo(["build", "-p", "tracer"]);
    let profile = if release {
        command.arg("--release");
        Profile::Release
    } else {
        Profile::Debug
    };
    cmd::run("build", &mut command)?;
    // The only line on stdout, so scripts can capture it.
    println!("{}", tracer_bin(profile).display());
    Ok(())
}

fn demo(args: &[String]) -> Result<()> {
    setup::setup()?;
    cmd::run("build", &mut cargo(["build", "-p", "tracer"]))?;
    let mut command = cargo([
        "run",
        "--quiet",
        "-p",
        "tracer-tests",
        "--bin",
        "demo",
        "--",
    ]);
    command
        .args(args)
        .env("TRACER_BIN", tracer_bin(Profile::Debug));
    cmd::run("demo", &mut command)
}
