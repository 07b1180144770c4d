//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::source::accesslog::LogSpec;

/// Where the daemon's control socket is, by default.
pub const DEFAULT_SOCKET: &str = "/run/tracer/tracer.sock";

/// Proxies watched when neither --comm nor --pid is given.
pub const DEFAULT_COMMS: &[&str] = &[
    "nginx", "haproxy", "envoy", "caddy", "traefik", "apache2", "httpd",
];

/// eBPF tracer that explains a reverse proxy's 502/503/504 responses from kernel TCP events.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and write trace records as JSON Lines until stopped.
    Run(RunArgs),
    /// Check that this host can run the tracer: kernel, BTF, privileges, each hook.
    Check(WatchArgs),
    /// Summarise trace files: verdicts by cause and upstream, latency, keep-alive races,
    /// 5xx per minute. Plain or gzip files; rotated files are read oldest first.
    Report(ReportArgs),
    /// Live terminal view of a running daemon, read from its control socket.
    Live(LiveArgs),
}

/// Options of `tracer live`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// The daemon's control socket (its --socket).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Options of `tracer report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Trace files (JSON Lines, plain or gzip).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Puts rotated files (`PATH.N`, `PATH.N.gz`) before the file they rotated from, oldest (highest
/// N) first, so that a shell glob's order does not matter.
pub fn oldest_first(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    let rank = |p: &PathBuf| -> u64 {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(name);
        name.rsplit_once('.')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    files.sort_by_key(|p| std::cmp::Reverse(rank(p)));
    files
}

/// Which processes to watch.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Watch processes with this command name (repeatable; at most 8).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Watch this process and its children (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
}

impl WatchArgs {
    /// The command names to watch: the defaults when neither --comm nor --pid was given.
    pub fn effective_comms(&self) -> Vec<String> {
        if self.comms.is_empty() && self.pids.is_empty() {
            DEFAULT_COMMS.iter().map(|s| s.to_string()).collect()
        } else {
            self.comms.clone()
        }
    }
}

/// Options of `tracer run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Read options from a TOML file (flags on the command line win).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where to write JSON Lines records (`-` for stdout). Files are appended to.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// Stop cleanly after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Seconds between `stats` records.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub stats_interval: f64,
    /// HTTP statuses that get a verdict, comma separated.
    #[arg(long, value_name = "LIST", default_value = "502,503,504", value_parser = parse_statuses)]
    pub status: Statuses,
    /// Rotate the output file when it would grow past SIZE (e.g. 100MiB).
    #[arg(long, value_name = "SIZE", value_parser = crate::sink::jsonl::parse_size)]
    pub rotate_size: Option<u64>,
    /// Rotated files to keep (OUTPUT.1 … OUTPUT.N).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rotate_keep: u32,
    /// Compress rotated files with gzip (OUTPUT.N.gz).
    #[arg(long)]
    pub rotate_gzip: bool,
    /// Also read responses from an access log: PATH[:FORMAT], FORMAT being nginx (default),
    /// haproxy or envoy. Repeatable. Rotation (rename or copytruncate) is followed.
    #[arg(long = "access-log", value_name = "PATH[:FORMAT]", value_parser = LogSpec::parse)]
    pub access_logs: Vec<LogSpec>,
    /// Unix socket (mode 0600) from which `tracer live` reads the live records.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Do not open the control socket.
    #[arg(long)]
    pub no_socket: bool,
    /// Show the live terminal view while tracing (needs --output FILE); q stops the tracer.
    #[arg(long)]
    pub live: bool,
    /// Size of the kernel-to-user ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::maps::EVENTS_BYTES)]
    pub ring_size: u32,
    /// Give one request in N on an upstream connection its own `ttfb` record (1: every
    /// request). The others are counted in the connection's `ttfb_summary` records: count,
    /// mean, min and max. A connection's first request, a retry and a reported upstream status
    /// are always recorded.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TTFB_EVERY, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ttfb_every: u32,
    /// Write every upstream connection's `connect_start`, `connect`, first `ttfb` and
    /// `peer_close` as they happen. By default a young connection's are held in the kernel and
    /// written as fields of its `close`, or as records of their own at its second request or
    /// a second after its handshake: one record instead of five per connection when every
    /// request opens one.
    #[arg(long)]
    pub no_hold: bool,
    /// Attach the older hooks where the attach table prefers newer ones: sends are read at
    /// tp_btf/sock_send_length, as on kernels before 6.16, instead of tp_btf/tcp_sendmsg_locked,
    /// which costs less per send. For comparison, or should the newer hook misbehave.
    #[arg(long)]
    pub fallback_hooks: bool,
    /// For benchmarks: attach every hook, but with programs that return at once and trace
    /// nothing. What the host pays then is what any tracer on these hooks pays before doing
    /// any work (`cargo xtask bench`, configuration E).
    #[arg(long)]
    pub hooks_only: bool,
    /// For benchmarks: attach every hook, with programs that return at once except on writes
    /// to clients, where the status line of a response is read and nothing more: the least
    /// that in-kernel status capture costs (`cargo xtask bench`, configuration F). Its verdicts
    /// say nothing: no upstream is traced.
    #[arg(long, conflicts_with = "hooks_only")]
    pub status_only: bool,
}

/// Default of `--ttfb-every`.
pub const DEFAULT_TTFB_EVERY: u32 = 16;

/// A list of HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses(pub Vec<u16>);

/// Parses `502,503,504`.
pub fn parse_statuses(s: &str) -> Result<Statuses, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: u16 = part
            .parse()
            .map_err(|_| format!("{part:?} is not an HTTP status"))?;
        if !(100..=599).contains(&v) {
            return Err(format!("{v} is not an HTTP status (100-599)"));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err("no status given".into());
    }
    Ok(Statuses(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_only_without_filters() {
        let cli = Cli::parse_from(["tracer", "run"]);
        let Command::Run(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.watch.effective_comms().len(), DEFAULT_COMMS.len());
        let cli = Cli::parse_from(["tracer", "run", "--pid", "5", "-o", "x.jsonl"]);
        let Command::Run(a) = cli.command else {
            panic!()
        };
        assert!(a.watch.effective_comms().is_empty());
        assert_eq!(a.watch.pids, vec![5]);
        let cli = Cli::parse_from(["tracer", "check", "--comm", "curl", "--comm", "nginx"]);
        let Command::Check(w) = cli.command else {
            panic!()
        };
        assert_eq!(w.effective_comms(), vec!["curl", "nginx"]);
    }

    #[test]
    fn rotated_files_come_oldest_first() {
        let given = ["t.jsonl", "t.jsonl.1.gz", "t.jsonl.3.gz", "t.jsonl.2.gz"];
        let sorted = oldest_first(given.iter().map(PathBuf::from).collect());
        let names: Vec<_> = sorted.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            names,
            vec!["t.jsonl.3.gz", "t.jsonl.2.gz", "t.jsonl.1.gz", "t.jsonl"]
        );
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(parse_statuses("502, 503").unwrap().0, vec![502, 503]);
        assert!(parse_statuses("5o2").is_err());
        assert!(parse_statuses("700").is_err());
        assert!(parse_statuses("").is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["tracer", "run", "--pid", "abc"]).is_err());
        assert!(Cli::try_parse_from(["tracer", "run", "--duration", "x"]).is_err());
    }
}
