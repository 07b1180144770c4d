//! Real proxies from Debian's packages, run inside the lab's proxy host with one route per
//! scenario. Each route `/NAME` proxies to one upstream address.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::lab::{Lab, wait_for};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Nginx,
    Haproxy,
}

impl ProxyKind {
    /// The process name the tracer watches.
    pub fn comm(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }
}

/// One route of the proxy.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix without the slash, e.g. `refused`.
    pub name: String,
    /// `ip:port` of the upstream.
    pub upstream: String,
    /// Pool idle upstream connections and reuse them.
    pub keepalive: bool,
    /// Retry a failed request on another connection (nginx `proxy_next_upstream`).
    pub retry: bool,
}

impl Route {
    /// A route without keep-alive or retries.
    pub fn new(name: &str, upstream: &str) -> Self {
        Self {
            name: name.into(),
            upstream: upstream.into(),
            keepalive: false,
            retry: false,
        }
    }

    /// The same route with pooled upstream connections.
    pub fn keepalive(mut self) -> Self {
        self.keepalive = true;
        self
    }

    /// The same route with the proxy's default retry on a failed connection.
    pub fn retry(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// How clients talk to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Plain HTTP/1.1.
    Plain,
    /// HTTPS (HTTP/1.1 over TLS).
    Tls,
    /// HTTP/2 over TLS: status lines are binary frames the kernel capture cannot read.
    Http2,
}

/// Timeouts short enough for tests, the same for both proxies.
pub const CONNECT_TIMEOUT_S: u32 = 1;
/// How long a proxy waits for a response.
pub const READ_TIMEOUT_S: u32 = 2;

/// A running proxy.
pub struct Proxy {
    pub kind: ProxyKind,
    /// `ip:port` it listens on.
    pub listen: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Whether requests use HTTP/2.
    pub http2: bool,
    /// Where the proxy's access log is written.
    pub access_log: std::path::PathBuf,
    /// Master process id.
    pub pid: u32,
}

fn nginx_conf(lab: &Lab, listen: &str, routes: &[Route], tls: bool, http2: bool) -> String {
    let dir = lab.dir.display();
    let h2 = if http2 { " http2" } else { "" };
    let ssl = if tls {
        format!(
            " ssl{h2};\n    ssl_certificate {dir}/tls.crt;\n    ssl_certificate_key {dir}/tls.key"
        )
    } else {
        String::new()
    };
    let mut upstreams = String::new();
    let mut locations = String::new();
    for r in routes {
        let next = if r.retry { "error timeout" } else { "off" };
        if r.keepalive {
            upstreams += &format!(
                "  upstream u_{n} {{ server {u}; keepalive 16; keepalive_timeout 60s; }}\n",
                n = r.name,
                u = r.upstream
            );
            locations += &format!(
                "    location /{n} {{ proxy_pass http://u_{n}; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_next_upstream {next}; }}\n",
                n = r.name
            );
        } else {
            locations += &format!(
                "    location /{n} {{ proxy_pass http://{u}; proxy_next_upstream {next}; }}\n",
                n = r.name,
                u = r.upstream
            );
        }
    }
    format!(
        "user root;\nworker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log info;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log {dir}/nginx-access.log;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
           proxy_connect_timeout {CONNECT_TIMEOUT_S}s;\n  proxy_read_timeout {READ_TIMEOUT_S}s;\n  keepalive_timeout 60s;\n\
         {upstreams}  server {{\n    listen {listen}{ssl};\n    location = /health {{ return 200 \"ok\\n\"; }}\n{locations}  }}\n}}\n"
    )
}

fn haproxy_conf(lab: &Lab, listen: &str, routes: &[Route], tls: bool, http2: bool) -> String {
    let dir = lab.dir.display();
    let ssl = if tls {
        let alpn = if http2 { " alpn h2,http/1.1" } else { "" };
        format!(" ssl crt {dir}/tls.pem{alpn}")
    } else {
        String::new()
    };
    let mut uses = String::new();
    let mut backends = String::new();
    for r in routes {
        uses += &format!("  use_backend b_{n} if {{ path_beg /{n} }}\n", n = r.name);
        let reuse = if r.keepalive { "always" } else { "never" };
        let retries = if r.retry { 3 } else { 0 };
        backends += &format!(
            "backend b_{n}\n  http-reuse {reuse}\n  retries {retries}\n  server s1 {u}\n",
            n = r.name,
            u = r.upstream
        );
    }
    format!(
        "global\n  maxconn 2000\n  nbthread 2\n  pidfile {dir}/haproxy.pid\n  log stdout format raw local0\n\
         defaults\n  mode http\n  log global\n  option httplog\n  timeout connect {CONNECT_TIMEOUT_S}s\n  timeout client 30s\n  timeout server {READ_TIMEOUT_S}s\n  \
         timeout http-keep-alive 60s\n  option http-keep-alive\n\
         frontend fe\n  bind {listen}{ssl}\n  http-request return status 200 content-type text/plain string ok if {{ path /health }}\n\
         {uses}{backends}"
    )
}

impl Proxy {
    /// Starts the proxy on the proxy host, listening on port `port` of its address, and waits
    /// until it answers.
    pub fn start(
        lab: &mut Lab,
        kind: ProxyKind,
        port: u16,
        routes: &[Route],
    ) -> anyhow::Result<Self> {
        Self::start_with(lab, kind, port, routes, Front::Plain)
    }

    /// Like [`Proxy::start`], serving HTTPS with a throw-away self-signed certificate when
    /// `tls` is set.
    pub fn start_with(
        lab: &mut Lab,
        kind: ProxyKind,
        port: u16,
        routes: &[Route],
        front: Front,
    ) -> anyhow::Result<Self> {
        let tls = front != Front::Plain;
        let http2 = front == Front::Http2;
        if tls {
            let (key, cert) = (lab.dir.join("tls.key"), lab.dir.join("tls.crt"));
            crate::lab::sh(&[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=tracer-lab",
                "-keyout",
                key.to_str().unwrap_or_default(),
                "-out",
                cert.to_str().unwrap_or_default(),
            ])?;
            let pem = std::fs::read_to_string(&cert)? + &std::fs::read_to_string(&key)?;
            std::fs::write(lab.dir.join("tls.pem"), pem)?;
        }
        let scheme = if tls { "https" } else { "http" };
        // Clients reach the proxy over their own link, as they would in production.
        let listen = format!("{}:{port}", lab.px_front);
        let (conf_path, args): (_, Vec<String>) = match kind {
            ProxyKind::Nginx => {
                for d in ["body", "proxy", "fcgi", "uwsgi", "scgi"] {
                    std::fs::create_dir_all(lab.dir.join(d))?;
                }
                let p = lab.dir.join("nginx.conf");
                std::fs::write(&p, nginx_conf(lab, &listen, routes, tls, http2))?;
                let a = vec!["nginx".into(), "-c".into(), p.display().to_string()];
                (p, a)
            }
            ProxyKind::Haproxy => {
                let p = lab.dir.join("haproxy.cfg");
                std::fs::write(&p, haproxy_conf(lab, &listen, routes, tls, http2))?;
                let a = vec![
                    "haproxy".into(),
                    "-db".into(),
                    "-f".into(),
                    p.display().to_string(),
                ];
                (p, a)
            }
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // nginx writes its access log itself; HAProxy logs to stdout (`log stdout`).
        let access_log = match kind {
            ProxyKind::Nginx => lab.dir.join("nginx-access.log"),
            ProxyKind::Haproxy => lab.dir.join("haproxy.log"),
        };
        let stdout = (kind == ProxyKind::Haproxy).then_some(access_log.as_path());
        let pid = lab.spawn_to(&lab.px.clone(), &argv, stdout)?;
        let url = format!("{scheme}://{listen}/health");
        let up = wait_for(Duration::from_secs(10), || {
            let out = lab
                .cmd(
                    &lab.cl,
                    &["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", &url],
                )
                .stderr(Stdio::null())
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
        });
        if up.is_none() {
            let log = std::fs::read_to_string(lab.dir.join("nginx-error.log")).unwrap_or_default();
            bail!(
                "{kind:?} with {} did not start answering: {log}",
                conf_path.display()
            );
        }
        Ok(Self {
            kind,
            listen,
            scheme,
            http2,
            access_log,
            pid,
        })
    }

    /// Sends one request to `/NAME` from the client host and returns the status.
    pub fn get(&self, lab: &Lab, route: &str) -> anyhow::Result<u16> {
        let url = format!("{}://{}/{route}", self.scheme, self.listen);
        let out = lab
            .cmd(
                &lab.cl,
                &[
                    "curl",
                    "-sk",
                    if self.http2 { "--http2" } else { "--http1.1" },
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "10",
                    "-w",
                    "%{http_code}",
                    &url,
                ],
            )
            .stderr(Stdio::null())
            .output()
            .context("running curl")?;
        let code = String::from_utf8_lossy(&out.stdout);
        code.trim()
            .parse()
            .with_context(|| format!("curl printed {code:?}"))
    }
}

/// Whether a proxy binary is installed.
pub fn installed(kind: ProxyKind) -> bool {
    Command::new(kind.comm())
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
