//! The tracer daemon: loads the kernel programs and writes what they see.

use clap::{CommandFactory as _, FromArgMatches as _};
use tracer::{
    check,
    cli::{self, Cli, Command},
    config, report, run,
};

fn main() -> std::process::ExitCode {
    tracer::logging::init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Check(watch) => match check::check(&watch) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("tracer check: {msg}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Report(args) => match report::read(&cli::oldest_first(args.files)) {
            Ok(r) if args.json => {
                println!("{}", r.to_json());
                std::process::ExitCode::SUCCESS
            }
            Ok(r) => {
                print!("{}", r.to_text());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracer report: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Live(args) => match runtime() {
            Ok(rt) => match rt.block_on(tracer::live::attach(&args.socket)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tracer live: {e}");
                    std::process::ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("tracer: cannot start the runtime: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(mut args) => {
            if let Some(path) = args.config.clone() {
                let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
                let applied = config::load(&path)
                    .and_then(|(cfg, text)| config::apply(&mut args, sub, cfg, &path, &text));
                if let Err(e) = applied {
                    eprintln!("tracer: bad configuration: {e}");
                    return std::process::ExitCode::from(2);
                }
            }
            if args.live && args.output.as_os_str() == "-" {
                eprintln!(
                    "tracer: --live draws on the terminal, so the records need a file: add --output FILE"
                );
                return std::process::ExitCode::from(2);
            }
            if args.live && !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                eprintln!(
                    "tracer: --live needs a terminal on stdout; leave it off to trace without the view"
                );
                return std::process::ExitCode::from(2);
            }
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tracer: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let result = rt.block_on(run::run(args));
            // Log lines held while the live view was up come out now, also after an error.
            tracer::logging::release();
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tracer: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
