//! Network namespaces, veth links, nftables rules and upstream servers.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

const UPSTREAM_PY: &str = include_str!("upstream.py");
const LOAD_PY: &str = include_str!("load.py");

/// Runs a command, failing with its output when it fails.
pub fn sh(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Two hosts: `px` (the proxy host, where watched processes run) and `up` (the upstream host),
/// each in its own namespace, joined by a veth pair on a private /24.
pub struct Lab {
    /// Namespace of the proxy host.
    pub px: String,
    /// Namespace of the upstream host.
    pub up: String,
    /// Address of the proxy host.
    pub px_addr: String,
    /// Address of the upstream host.
    pub up_addr: String,
    /// Namespace of the client host, joined to the proxy host by a second link.
    pub cl: String,
    /// The proxy host's address on the client link.
    pub px_front: String,
    /// Address of the client host.
    pub cl_addr: String,
    /// A directory for this lab's files.
    pub dir: PathBuf,
    children: Vec<Child>,
    /// Leave `dir` behind when the lab is dropped (see [`Lab::keep_files`]).
    keep_dir: bool,
}

impl Lab {
    /// Creates the two namespaces and the link between them.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let subnet = 10 + (std::process::id() as u32 * 7 + n) % 200;
        let px = format!("tr{id}{tag}px");
        let up = format!("tr{id}{tag}up");
        let cl = format!("tr{id}{tag}cl");
        let dir = std::env::temp_dir().join(format!("tracer-lab-{id}-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let lab = Self {
            px_addr: format!("10.231.{subnet}.1"),
            up_addr: format!("10.231.{subnet}.2"),
            px_front: format!("10.232.{subnet}.1"),
            cl_addr: format!("10.232.{subnet}.2"),
            px,
            up,
            cl,
            dir,
            children: Vec::new(),
            keep_dir: false,
        };
        lab.setup().with_context(|| format!("building lab {tag}"))?;
        std::fs::write(lab.dir.join("upstream.py"), UPSTREAM_PY)?;
        std::fs::write(lab.dir.join("load.py"), LOAD_PY)?;
        Ok(lab)
    }

    fn setup(&self) -> anyhow::Result<()> {
        sh(&["ip", "netns", "add", &self.px])?;
        sh(&["ip", "netns", "add", &self.up])?;
        sh(&["ip", "netns", "add", &self.cl])?;
        sh(&[
            "ip", "link", "add", "vpx", "netns", &self.px, "type", "veth", "peer", "name", "vup",
            "netns", &self.up,
        ])?;
        sh(&[
            "ip", "link", "add", "vpc", "netns", &self.px, "type", "veth", "peer", "name", "vcl",
            "netns", &self.cl,
        ])?;
        for (ns, dev, addr) in [
            (&self.px, "vpx", &self.px_addr),
            (&self.up, "vup", &self.up_addr),
            (&self.px, "vpc", &self.px_front),
            (&self.cl, "vcl", &self.cl_addr),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// A command that runs inside a namespace.
    pub fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// Runs a command inside a namespace to completion.
    pub fn run(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Keeps the lab's directory, with every file written there, when the lab is dropped;
    /// the namespaces and processes still go.
    pub fn keep_files(&mut self) {
        self.keep_dir = true;
    }

    /// Starts a process inside a namespace; it is killed when the lab drops.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> anyhow::Result<u32> {
        self.spawn_to(ns, args, None)
    }

    /// Like [`Lab::spawn`], with standard output appended to a file.
    pub fn spawn_to(
        &mut self,
        ns: &str,
        args: &[&str],
        stdout: Option<&std::path::Path>,
    ) -> anyhow::Result<u32> {
        let out = match stdout {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Stdio::null(),
        };
        let child = self
            .cmd(ns, args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {args:?} in {ns}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts healthy background load from the client host (`load.py`): `threads` clients,
    /// each sending `rate` requests/s to `url` for `seconds`, and waits until it runs.
    pub fn load(&self, url: &str, threads: u32, rate: u32, seconds: u32) -> anyhow::Result<Load> {
        let script = self.dir.join("load.py");
        let (threads, rate, seconds) = (threads.to_string(), rate.to_string(), seconds.to_string());
        let args = [
            "python3",
            script.to_str().unwrap_or_default(),
            url,
            &threads,
            &rate,
            &seconds,
        ];
        let mut child = self
            .cmd(&self.cl, &args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the load")?;
        let mut out = BufReader::new(child.stdout.take().context("load stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let load = Load { child, out };
        if line.trim() != "ready" {
            bail!("load did not start: {line:?}");
        }
        Ok(load)
    }

    /// Leaves the proxy host two local ports (40000-40001) and has an unwatched process hold
    /// both towards `addr` (`ip:port`), so that the next connect() there finds none free.
    pub fn exhaust_ports(&mut self, addr: &str) -> anyhow::Result<()> {
        self.run(
            &self.px,
            &["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001"],
        )?;
        let (host, port) = addr.split_once(':').context("address without a port")?;
        let hold = format!(
            "import socket,time\ns=[socket.create_connection(('{host}',{port})) for _ in range(2)]\nprint('held',flush=True)\ntime.sleep(60)"
        );
        let mut holder = self
            .cmd(&self.px, &["python3", "-c", &hold])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the port holder")?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().context("holder stdout")?).read_line(&mut line)?;
        self.children.push(holder);
        if line.trim() != "held" {
            bail!("port holder did not start: {line:?}");
        }
        Ok(())
    }

    /// Starts a test upstream on the upstream host and waits until it listens.
    pub fn upstream(
        &mut self,
        mode: &str,
        port: u16,
        arg: Option<&str>,
    ) -> anyhow::Result<Upstream> {
        let script = self.dir.join("upstream.py");
        let port_s = port.to_string();
        let mut args = vec![
            "python3",
            script.to_str().unwrap_or_default(),
            mode,
            &self.up_addr,
            &port_s,
        ];
        if let Some(a) = arg {
            args.push(a);
        }
        let mut child = self
            .cmd(&self.up.clone(), &args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the test upstream")?;
        let stdout = child.stdout.take().context("upstream stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("test upstream {mode} on port {port} did not start: {line:?}");
        }
        let pid = child.id();
        self.children.push(child);
        Ok(Upstream {
            addr: format!("{}:{port}", self.up_addr),
            pid,
        })
    }

    /// Installs an nftables ruleset in a namespace (`nft -f -`).
    pub fn nft(&self, ns: &str, ruleset: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = self
            .cmd(ns, &["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft rejected the ruleset: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs curl on the proxy host and returns its pid and its output. curl's own failure
    /// (a refused or reset connection) is the point of most tests, so it is not an error.
    pub fn curl(&self, args: &[&str]) -> anyhow::Result<(u32, Output)> {
        let child = self
            .cmd(&self.px, &["curl", "-sS", "-o", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting curl")?;
        let pid = child.id();
        let out = child.wait_with_output()?;
        Ok((pid, out))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace also removes its end of the veth, and with it the peer.
        for ns in [&self.px, &self.up, &self.cl] {
            let _ = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.keep_dir {
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Background load started by [`Lab::load`]; stopped when dropped unfinished.
pub struct Load {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Load {
    /// Waits for the load to end and returns its requests by status (`"0"`: no response).
    pub fn finish(mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        self.child.wait()?;
        serde_json::from_str(line.trim()).with_context(|| format!("load printed {line:?}"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running test upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `ip:port` it listens on.
    pub addr: String,
    /// Its process id.
    pub pid: u32,
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
