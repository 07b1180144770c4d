//! The bench's lab: a client host running wrk, a proxy host running nginx (the process under
//! test), and an upstream host running a second nginx that answers a small static response,
//! so that the proxy is the bottleneck. Built on the test lab's namespaces and veth links.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tracer_tests::{Lab, lab::wait_for};

/// Port of the healthy upstream (nginx).
pub const UPSTREAM_PORT: u16 = 8080;
/// Port of the upstream that resets every connection (the test upstream, `rstnow`).
const RESET_PORT: u16 = 8081;
/// A port nobody listens on: connects are refused.
const REFUSED_PORT: u16 = 9;
/// Port the proxy listens on.
const PROXY_PORT: u16 = 8000;

/// Whether the proxy pools its upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `keepalive 64` towards the upstream, HTTP/1.1.
    KeepAlive,
    /// nginx's default: a new upstream connection per request, HTTP/1.0.
    NoKeepAlive,
}

impl Mode {
    /// Both modes, in the order they run.
    pub const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::NoKeepAlive];

    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::NoKeepAlive => "no_keepalive",
        }
    }

    /// The proxy route of this mode.
    pub fn path(self) -> &'static str {
        match self {
            Mode::KeepAlive => "/ka/",
            Mode::NoKeepAlive => "/nk/",
        }
    }
}

/// CPUs the lab's processes are pinned to.
#[derive(Debug, Clone, Copy)]
pub struct Pinning {
    /// The proxy's single worker.
    pub proxy: Option<usize>,
    /// wrk and the upstream nginx.
    pub load: Option<usize>,
}

impl Pinning {
    /// The proxy on CPU 0, wrk and the upstream on CPU 1; nothing pinned on one CPU. Observers
    /// (the tracer, tcpdump) are never pinned: the scheduler places them as it would in
    /// production.
    pub fn for_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            Self {
                proxy: Some(0),
                load: Some(1),
            }
        } else {
            Self {
                proxy: None,
                load: None,
            }
        }
    }

    /// The JSON form for the report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"proxy_cpu": self.proxy, "load_cpu": self.load, "observers": "not pinned"})
    }
}

/// The running lab.
pub struct BenchLab {
    pub lab: Lab,
    /// Master process of the proxy nginx: the tracer watches it and its worker by `--pid`.
    pub proxy_pid: u32,
    /// The proxy's access log (read by configuration C).
    pub access_log: std::path::PathBuf,
    /// Interface of the proxy host towards the upstream (where tcpdump listens).
    pub upstream_if: &'static str,
    pub pinning: Pinning,
    front: String,
}

/// `worker_cpu_affinity` mask for one CPU.
fn affinity(cpu: Option<usize>) -> String {
    match cpu {
        Some(cpu) => format!("worker_cpu_affinity {:b};\n", 1u64 << cpu),
        None => String::new(),
    }
}

/// The nginx settings both instances share: one worker, no daemon, files in `dir`.
fn nginx_head(dir: &str, name: &str, cpu: Option<usize>) -> String {
    format!(
        "user root;\nworker_processes 1;\n{aff}daemon off;\npid {dir}/{name}.pid;\n\
         error_log {dir}/{name}-error.log warn;\n\
         events {{ worker_connections 8192; }}\n",
        aff = affinity(cpu)
    )
}

fn temp_paths(dir: &str, name: &str) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {dir}/{name}-{t};\n"))
        .collect()
}

impl BenchLab {
    /// Builds the namespaces and starts the upstreams and the proxy.
    pub fn start(pinning: Pinning) -> anyhow::Result<Self> {
        let mut lab = Lab::new("bench")?;
        let dir = lab.dir.display().to_string();
        let up = lab.up_addr.clone();
        let front = format!("{}:{PROXY_PORT}", lab.px_front);

        let upstream_conf = format!(
            "{head}http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n{tmp}\
             \x20 server {{\n    listen {up}:{UPSTREAM_PORT} backlog=4096;\n    default_type text/plain;\n\
             \x20   location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            head = nginx_head(&dir, "upstream", pinning.load),
            tmp = temp_paths(&dir, "upstream"),
        );
        let upstream_path = lab.dir.join("upstream.conf");
        std::fs::write(&upstream_path, upstream_conf)?;
        let up_ns = lab.up.clone();
        lab.spawn(
            &up_ns,
            &["nginx", "-c", &upstream_path.display().to_string()],
        )?;
        lab.upstream("rstnow", RESET_PORT, None)?;

        let access_log = lab.dir.join("access.log");
        let proxy_conf = format!(
            "{head}http {{\n  access_log {log};\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n{tmp}\
             \x20 proxy_connect_timeout 1s;\n  proxy_read_timeout 2s;\n\
             \x20 upstream pooled {{ server {up}:{UPSTREAM_PORT}; keepalive 64; keepalive_requests 1000000; }}\n\
             \x20 server {{\n    listen {front} backlog=4096;\n\
             \x20   location = /health {{ return 200 \"ok\\n\"; }}\n\
             \x20   location /ka/ {{ proxy_pass http://pooled; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
             \x20   location /nk/ {{ proxy_pass http://{up}:{UPSTREAM_PORT}; }}\n\
             \x20   location /refused/ {{ proxy_pass http://{up}:{REFUSED_PORT}; proxy_next_upstream off; }}\n\
             \x20   location /reset/ {{ proxy_pass http://{up}:{RESET_PORT}; proxy_next_upstream off; }}\n\
             \x20 }}\n}}\n",
            head = nginx_head(&dir, "proxy", pinning.proxy),
            log = access_log.display(),
            tmp = temp_paths(&dir, "proxy"),
        );
        let proxy_path = lab.dir.join("proxy.conf");
        std::fs::write(&proxy_path, proxy_conf)?;
        let px_ns = lab.px.clone();
        let proxy_pid = lab.spawn(&px_ns, &["nginx", "-c", &proxy_path.display().to_string()])?;

        let bench = Self {
            lab,
            proxy_pid,
            access_log,
            upstream_if: "vpx",
            pinning,
            front,
        };
        for path in ["/health", Mode::KeepAlive.path(), Mode::NoKeepAlive.path()] {
            let answered = wait_for(Duration::from_secs(10), || {
                (bench.status(path).ok()? == 200).then_some(())
            });
            if answered.is_none() {
                let log = std::fs::read_to_string(bench.lab.dir.join("proxy-error.log"))
                    .unwrap_or_default();
                bail!("the proxy did not answer 200 on {path}: {log}");
            }
        }
        for (path, want) in [("/refused/", 502), ("/reset/", 502)] {
            let got = bench.status(path)?;
            if got != want {
                bail!("GET {path} answered {got}, not {want}: the fault routes are broken");
            }
        }
        Ok(bench)
    }

    /// The URL of `path` on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.front)
    }

    /// One request from the client host; returns the status.
    fn status(&self, path: &str) -> anyhow::Result<u16> {
        let out = self.lab.run(
            &self.lab.cl,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                "-w",
                "%{http_code}",
                &self.url(path),
            ],
        );
        let out = match out {
            Ok(o) => o,
            // curl exits non-zero on a refused connection; the proxy is not up yet.
            Err(_) => return Ok(0),
        };
        let code = String::from_utf8_lossy(&out.stdout);
        code.trim()
            .parse()
            .with_context(|| format!("curl printed {code:?}"))
    }

    /// CPU seconds (user + system) the proxy's processes used so far: its master and workers.
    /// Syscall hooks and probes run in the proxy's own context, so the kernel side of the
    /// tracer shows up here, as CPU time per request.
    pub fn proxy_cpu_seconds(&self) -> f64 {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.proxy_pid))
                .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .chain([self.proxy_pid])
            .filter_map(crate::host::cpu_seconds)
            .sum()
    }

    /// Empties the proxy's access log, so that it does not grow over the whole bench. nginx
    /// writes with O_APPEND, so it carries on at the new end.
    pub fn truncate_access_log(&self) -> anyhow::Result<()> {
        std::fs::File::create(&self.access_log)
            .with_context(|| format!("truncating {}", self.access_log.display()))?;
        Ok(())
    }
}
