//! The tracer daemon: loads the kernel programs and writes what they see.

use clap::Parser as _;
use tracer::{
    check,
    cli::{Cli, Command},
    run,
};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check(watch) => match check::check(&watch) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("tracer check: {msg}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tracer: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(run::run(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tracer: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
