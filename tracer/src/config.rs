//! `tracer run --config PATH`: every option of `tracer run` in a TOML file. Flags given on the
//! command line win over the file. A bad value names its file, line and key.
//!
//! ```toml
//! comm = ["nginx", "haproxy"]
//! output = "/var/lib/tracer/trace.jsonl"
//! status = [502, 503, 504]
//! rotate_size = "100MiB"
//! rotate_keep = 10
//! rotate_gzip = true
//! access_log = ["/var/log/nginx/access.log:nginx"]
//! ```

use std::{ops::Range, path::PathBuf};

use clap::{ArgMatches, parser::ValueSource};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    cli::{RunArgs, parse_statuses},
    sink::jsonl::parse_size,
    source::accesslog::LogSpec,
};

/// A problem in the configuration file, located.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// The file's contents; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    comm: Option<Spanned<Vec<String>>>,
    pid: Option<Spanned<Vec<u32>>>,
    output: Option<Spanned<PathBuf>>,
    duration: Option<Spanned<f64>>,
    stats_interval: Option<Spanned<f64>>,
    status: Option<Spanned<Vec<u16>>>,
    rotate_size: Option<Spanned<String>>,
    rotate_keep: Option<Spanned<u32>>,
    rotate_gzip: Option<Spanned<bool>>,
    access_log: Option<Spanned<Vec<String>>>,
    ring_size: Option<Spanned<u32>>,
    ttfb_every: Option<Spanned<u32>>,
    no_hold: Option<Spanned<bool>>,
    fallback_hooks: Option<Spanned<bool>>,
    socket: Option<Spanned<PathBuf>>,
    no_socket: Option<Spanned<bool>>,
    live: Option<Spanned<bool>>,
}

/// Line number (from 1) of a byte offset.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The key written on the line where `span` starts, for errors that name no key.
fn key_at(text: &str, span: &Range<usize>) -> String {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or_default();
    line.split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Reads and checks a configuration file.
pub fn load(path: &std::path::Path) -> Result<(ConfigFile, String), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: shown.clone(),
        line: 0,
        key: "-".into(),
        message: format!("cannot read the file: {e}"),
    })?;
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError {
            path: shown.clone(),
            line: line_of(&text, span.start),
            key: key_at(&text, &span),
            message: e.message().trim().to_string(),
        }
    })?;
    Ok((cfg, text))
}

/// Applies the file to the options the command line left at their defaults.
pub fn apply(
    args: &mut RunArgs,
    matches: &ArgMatches,
    cfg: ConfigFile,
    path: &std::path::Path,
    text: &str,
) -> Result<(), ConfigError> {
    let from_flag = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let err = |key: &str, span: Range<usize>, message: String| ConfigError {
        path: path.display().to_string(),
        line: line_of(text, span.start),
        key: key.to_string(),
        message,
    };
    macro_rules! take {
        ($key:literal, $id:literal, $field:expr, $value:ident => $convert:expr) => {
            if let Some(v) = cfg.$value {
                if !from_flag($id) {
                    let span = v.span();
                    let $value = v.into_inner();
                    $field = ($convert).map_err(|m: String| err($key, span, m))?;
                }
            }
        };
    }
    take!("comm", "comms", args.watch.comms, comm => {
        if comm.len() > tracer_common::config::MAX_COMMS {
            Err(format!("at most {} names", tracer_common::config::MAX_COMMS))
        } else {
            Ok(comm)
        }
    });
    take!("pid", "pids", args.watch.pids, pid => Ok::<_, String>(pid));
    take!("output", "output", args.output, output => Ok::<_, String>(output));
    take!("duration", "duration", args.duration, duration => {
        if duration > 0.0 { Ok(Some(duration)) } else { Err("must be more than 0 seconds".to_string()) }
    });
    take!("stats_interval", "stats_interval", args.stats_interval, stats_interval => {
        if stats_interval >= 0.1 { Ok(stats_interval) } else { Err("must be at least 0.1 seconds".to_string()) }
    });
    take!("status", "status", args.status, status => {
        let text = status.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        parse_statuses(&text)
    });
    take!("rotate_size", "rotate_size", args.rotate_size, rotate_size => parse_size(&rotate_size).map(Some));
    take!("rotate_keep", "rotate_keep", args.rotate_keep, rotate_keep => {
        if (1..=1000).contains(&rotate_keep) { Ok(rotate_keep) } else { Err("must be from 1 to 1000".to_string()) }
    });
    take!("rotate_gzip", "rotate_gzip", args.rotate_gzip, rotate_gzip => Ok::<_, String>(rotate_gzip));
    take!("access_log", "access_logs", args.access_logs, access_log => {
        access_log.iter().map(|s| LogSpec::parse(s)).collect::<Result<Vec<_>, _>>()
    });
    take!("ring_size", "ring_size", args.ring_size, ring_size => {
        if ring_size >= 4096 && ring_size.is_power_of_two() {
            Ok(ring_size)
        } else {
            Err(format!("{ring_size} is not a power of two of at least 4096"))
        }
    });
    take!("ttfb_every", "ttfb_every", args.ttfb_every, ttfb_every => {
        if (1..=1_000_000).contains(&ttfb_every) { Ok(ttfb_every) } else { Err("must be from 1 to 1000000".to_string()) }
    });
    take!("no_hold", "no_hold", args.no_hold, no_hold => Ok::<_, String>(no_hold));
    take!("fallback_hooks", "fallback_hooks", args.fallback_hooks, fallback_hooks => Ok::<_, String>(fallback_hooks));
    take!("socket", "socket", args.socket, socket => Ok::<_, String>(socket));
    take!("no_socket", "no_socket", args.no_socket, no_socket => Ok::<_, String>(no_socket));
    take!("live", "live", args.live, live => Ok::<_, String>(live));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_with(argv: &[&str], toml_text: &str) -> Result<RunArgs, ConfigError> {
        // Tests run in parallel: every file gets a name of its own, and is removed once read.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tracer-config-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml_text).unwrap();
        let matches = Cli::command().get_matches_from(argv);
        let Command::Run(mut args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not run")
        };
        let (_, sub) = matches.subcommand().unwrap();
        let loaded = load(&path);
        let _ = std::fs::remove_file(&path);
        let (cfg, text) = loaded?;
        apply(&mut args, sub, cfg, &path, &text)?;
        Ok(args)
    }

    #[test]
    fn the_file_fills_in_and_flags_win() {
        let text = "comm = [\"nginx\"]\noutput = \"/tmp/x.jsonl\"\nstatus = [502]\nrotate_size = \"1MiB\"\nrotate_gzip = true\naccess_log = [\"/var/log/a.log:haproxy\"]\n";
        let a = run_with(&["tracer", "run", "--output", "/tmp/flag.jsonl"], text).unwrap();
        assert_eq!(a.watch.comms, vec!["nginx"]);
        assert_eq!(a.output, PathBuf::from("/tmp/flag.jsonl"));
        assert_eq!(a.status.0, vec![502]);
        assert_eq!(a.rotate_size, Some(1 << 20));
        assert!(a.rotate_gzip);
        assert_eq!(a.access_logs[0].path, PathBuf::from("/var/log/a.log"));
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let e = run_with(
            &["tracer", "run"],
            "comm = [\"nginx\"]\nstatus = [502, 700]\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "status"));
        assert!(e.message.contains("700"), "{e}");
        let e = run_with(&["tracer", "run"], "\n\nrotate_size = \"10XB\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "rotate_size"));
        let e = run_with(&["tracer", "run"], "ring_size = 5000\n").unwrap_err();
        assert_eq!(e.key, "ring_size");
        assert!(e.to_string().contains(".toml:1: ring_size: "), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_located() {
        let e = run_with(&["tracer", "run"], "comm = [\"nginx\"]\ncoms = [\"x\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "coms"));
        assert!(e.message.contains("unknown field"), "{e}");
        let e = run_with(&["tracer", "run"], "\nrotate_keep = \"ten\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "rotate_keep"));
        let e = run_with(&["tracer", "run"], "output = [\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn every_flag_has_a_key() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for arg in run.get_arguments() {
            let id = arg.get_id().as_str();
            // Benchmarks' switches: a daemon's file must not turn tracing off.
            if ["config", "help", "version", "hooks_only", "status_only"].contains(&id) {
                continue;
            }
            let key = match id {
                "comms" => "comm",
                "pids" => "pid",
                "access_logs" => "access_log",
                other => other,
            };
            // A table fits no option: the error must be about its type, not an unknown key.
            let e = run_with(&["tracer", "run"], &format!("{key} = {{ x = 1 }}\n")).unwrap_err();
            assert!(
                !e.message.contains("unknown field"),
                "--{id} has no key: {e}"
            );
        }
        let a = run_with(
            &["tracer", "run"],
            "socket = \"/tmp/t.sock\"\nno_socket = true\nlive = true\nno_hold = true\n",
        )
        .unwrap();
        assert_eq!(a.socket, PathBuf::from("/tmp/t.sock"));
        assert!(a.no_socket && a.live && a.no_hold);
    }
}
