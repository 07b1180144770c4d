//! The configurations compared, and the observer process each one runs next to the proxy:
//! nothing, the tracer (with or without an access log, or with its hooks only), or tcpdump
//! writing a capture.

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tracer_tests::{lab::wait_for, tracer::tracer_bin};

use crate::{host, lab::BenchLab};

/// One configuration of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// A: the proxy alone.
    Baseline,
    /// B: the tracer with its default probes and in-kernel status capture.
    Tracer,
    /// C: the tracer also following the proxy's access log.
    TracerAccessLog,
    /// D: `tcpdump -w` capturing the upstream port to a file.
    Tcpdump,
    /// E: the tracer's hooks attached with programs that return at once (`--hooks-only`):
    /// the floor that any tracer on the same hooks pays before it does any work.
    HooksOnly,
    /// F: E, but writes to clients read the status line of each response and do nothing
    /// more (`--status-only`): the least that in-kernel status capture costs.
    StatusOnly,
    /// G: B on the attach table's fallback hooks (`--fallback-hooks`), as the tracer runs on
    /// kernels older than its preferred hooks: sends read at `sock_send_length` instead of
    /// `tcp_sendmsg_locked`. Side by side with B, it measures what the newer hook saves.
    TracerFallback,
}

impl Config {
    /// All configurations, in their base order.
    pub const ALL: [Config; 7] = [
        Config::Baseline,
        Config::Tracer,
        Config::TracerAccessLog,
        Config::Tcpdump,
        Config::HooksOnly,
        Config::StatusOnly,
        Config::TracerFallback,
    ];

    /// The letter used in the report.
    pub fn id(self) -> &'static str {
        match self {
            Config::Baseline => "A",
            Config::Tracer => "B",
            Config::TracerAccessLog => "C",
            Config::Tcpdump => "D",
            Config::HooksOnly => "E",
            Config::StatusOnly => "F",
            Config::TracerFallback => "G",
        }
    }

    /// What runs next to the proxy.
    pub fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no tracer",
            Config::Tracer => "tracer",
            Config::TracerAccessLog => "tracer + access log",
            Config::Tcpdump => "tcpdump -w",
            Config::HooksOnly => "hooks, empty programs",
            Config::StatusOnly => "status lines only",
            Config::TracerFallback => "tracer, fallback hooks",
        }
    }

    /// Whether this configuration runs the tracer and traces: the budgets on the tracer's
    /// memory and lost events are judged on these.
    pub fn is_tracer(self) -> bool {
        matches!(
            self,
            Config::Tracer | Config::TracerAccessLog | Config::TracerFallback
        )
    }

    /// Whether this configuration runs the tracer's binary, tracing or not.
    pub fn runs_tracer(self) -> bool {
        self.is_tracer() || matches!(self, Config::HooksOnly | Config::StatusOnly)
    }
}

/// A running observer. Dropping it kills the process.
pub struct Observer {
    config: Config,
    child: Option<Child>,
    /// The tracer's JSON Lines, or tcpdump's capture.
    output: PathBuf,
    stderr: PathBuf,
    /// The tracer's control socket.
    pub socket: Option<PathBuf>,
}

/// What an observer reported when it stopped.
#[derive(Debug, Default)]
pub struct ObserverEnd {
    /// `VmHWM` just before it was asked to stop.
    pub peak_rss_mib: Option<f64>,
    /// The tracer's final `stats` record.
    pub stats: Option<Value>,
    /// Packets tcpdump reported as dropped by the kernel.
    pub tcpdump_dropped: Option<u64>,
    /// Packets tcpdump captured.
    pub tcpdump_captured: Option<u64>,
    /// Size of what it wrote.
    pub output_bytes: u64,
}

impl Observer {
    /// Starts the observer of `config` and waits until it is ready: the tracer has written its
    /// `start` record (every hook attached), tcpdump is listening. `limit` bounds its life.
    pub fn start(
        config: Config,
        bench: &BenchLab,
        dir: &Path,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stderr = dir.join("observer.stderr");
        let mut obs = Self {
            config,
            child: None,
            output: PathBuf::new(),
            stderr: stderr.clone(),
            socket: None,
        };
        let log = || -> anyhow::Result<Stdio> { Ok(std::fs::File::create(&stderr)?.into()) };
        match config {
            Config::Baseline => {}
            Config::Tracer
            | Config::TracerAccessLog
            | Config::HooksOnly
            | Config::StatusOnly
            | Config::TracerFallback => {
                let bin = tracer_bin();
                if !bin.exists() {
                    bail!(
                        "{} does not exist: run `cargo build -p tracer --release`",
                        bin.display()
                    );
                }
                obs.output = dir.join("trace.jsonl");
                let socket = dir.join("tracer.sock");
                let mut cmd = Command::new(&bin);
                cmd.arg("run")
                    .arg("--pid")
                    .arg(bench.proxy_pid.to_string())
                    .arg("--output")
                    .arg(&obs.output)
                    .arg("--socket")
                    .arg(&socket)
                    .arg("--duration")
                    .arg(limit.as_secs().to_string());
                match config {
                    Config::TracerAccessLog => {
                        cmd.arg("--access-log")
                            .arg(format!("{}:nginx", bench.access_log.display()));
                    }
                    Config::HooksOnly => {
                        cmd.arg("--hooks-only");
                    }
                    Config::StatusOnly => {
                        cmd.arg("--status-only");
                    }
                    Config::TracerFallback => {
                        cmd.arg("--fallback-hooks");
                    }
                    Config::Baseline | Config::Tracer | Config::Tcpdump => {}
                }
                // The tracer runs in the host's namespaces: tracepoints see every namespace,
                // and `ip netns exec` would hide tracefs from it.
                obs.child = Some(
                    cmd.stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log()?)
                        .spawn()
                        .with_context(|| format!("starting {}", bin.display()))?,
                );
                obs.socket = Some(socket);
                obs.wait_ready(|o| {
                    let mut text = String::new();
                    std::fs::File::open(&o.output)
                        .ok()?
                        .take(1 << 20)
                        .read_to_string(&mut text)
                        .ok()?;
                    text.contains("\"type\":\"start\"").then_some(())
                })?;
            }
            Config::Tcpdump => {
                obs.output = dir.join("upstream.pcap");
                let filter = format!("tcp port {}", crate::lab::UPSTREAM_PORT);
                let mut cmd = bench.lab.cmd(
                    &bench.lab.px,
                    &["tcpdump", "-i", bench.upstream_if, "-n", "-w"],
                );
                cmd.arg(&obs.output).arg(filter);
                obs.child = Some(
                    cmd.stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log()?)
                        .spawn()
                        .context("starting tcpdump")?,
                );
                obs.wait_ready(|o| {
                    let text = std::fs::read_to_string(&o.stderr).ok()?;
                    text.contains("listening on").then_some(())
                })?;
            }
        }
        Ok(obs)
    }

    fn wait_ready(&mut self, ready: impl Fn(&Self) -> Option<()>) -> anyhow::Result<()> {
        let ok = wait_for(Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow::anyhow!("exited early ({status})")));
            }
            ready(self).map(Ok)
        });
        let result = ok.unwrap_or_else(|| Err(anyhow::anyhow!("not ready within 30 s")));
        result.with_context(|| {
            format!(
                "{} ({}): {}",
                self.config.describe(),
                self.config.id(),
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            )
        })
    }

    /// The tracer's JSON Lines file, or tcpdump's capture.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The observer's process id, if it runs one.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its CPU time so far (user + system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.pid().and_then(host::cpu_seconds)
    }

    /// Stops it with SIGINT (the tracer drains its ring buffer and writes its final `stats`
    /// record; tcpdump prints its counters), waits at most 20 s, and reads what it reported.
    /// The output file is removed: a run writes hundreds of MB.
    pub fn stop(mut self, keep_output: bool) -> anyhow::Result<ObserverEnd> {
        let mut end = ObserverEnd::default();
        let Some(mut child) = self.child.take() else {
            return Ok(end);
        };
        end.peak_rss_mib = host::peak_rss_mib(child.id());
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not stop within 20 s of SIGINT",
                    self.config.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        if !status.success() {
            bail!("{} exited with {status}: {stderr}", self.config.describe());
        }
        end.output_bytes = std::fs::metadata(&self.output).map_or(0, |m| m.len());
        if self.config.runs_tracer() {
            end.stats = Some(final_stats(&self.output)?);
        } else if self.config == Config::Tcpdump {
            end.tcpdump_captured = tcpdump_counter(&stderr, "packets captured");
            end.tcpdump_dropped = tcpdump_counter(&stderr, "packets dropped by kernel");
        }
        if !keep_output {
            let _ = std::fs::remove_file(&self.output);
        }
        Ok(end)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The final `stats` record of a trace, read from the file's last 256 KiB.
fn final_stats(path: &Path) -> anyhow::Result<Value> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let tail = String::from_utf8_lossy(&tail);
    tail.lines()
        .rev()
        .filter(|l| l.contains("\"type\":\"stats\""))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["final"] == true)
        .with_context(|| format!("{} has no final stats record", path.display()))
}

/// A counter line of tcpdump's exit report, e.g. `12 packets dropped by kernel`.
fn tcpdump_counter(stderr: &str, what: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_suffix(what))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_exit_counters() {
        let err = "tcpdump: listening on vpx, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n\
                   4200 packets captured\n4210 packets received by filter\n10 packets dropped by kernel\n";
        assert_eq!(tcpdump_counter(err, "packets captured"), Some(4200));
        assert_eq!(tcpdump_counter(err, "packets dropped by kernel"), Some(10));
        assert_eq!(tcpdump_counter("", "packets captured"), None);
    }
}
