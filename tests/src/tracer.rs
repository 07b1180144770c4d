//! The tracer binary as a child process, and the records it wrote.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::lab::wait_for;

/// The tracer binary under test: `$TRACER_BIN`, else the workspace's debug build.
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/debug/tracer"
            ))
        })
}

/// A running `tracer run`.
pub struct TracerRun {
    child: Option<Child>,
    /// Its JSON Lines output.
    pub output: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
}

impl TracerRun {
    /// Starts `tracer run --output <dir>/trace.jsonl <args>` and waits for its `start` record,
    /// which it writes once every hook is attached.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        let output = dir.join("trace.jsonl");
        let _ = std::fs::remove_file(&output);
        let bin = tracer_bin();
        if !bin.exists() {
            bail!(
                "{} does not exist: build it with `cargo build -p tracer`",
                bin.display()
            );
        }
        // Each run gets its own control socket, so that runs never meet.
        let socket = dir.join("tracer.sock");
        let child = Command::new(&bin)
            .arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut run = Self {
            child: Some(child),
            output,
            socket,
        };
        let started = wait_for(Duration::from_secs(20), || {
            if let Some(c) = run.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!("tracer exited early: {status}")));
            }
            let text = std::fs::read_to_string(&run.output).ok()?;
            text.lines()
                .any(|l| l.contains("\"type\":\"start\""))
                .then_some(Ok(()))
        });
        match started {
            Some(r) => r?,
            None => bail!("tracer wrote no start record within 20 s"),
        }
        Ok(run)
    }

    /// The tracer's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal to the tracer.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Stops the tracer with SIGINT, waits for it to exit 0, and parses what it wrote.
    pub fn stop(self) -> anyhow::Result<Records> {
        self.stop_with(libc::SIGINT).map(|(r, _)| r)
    }

    /// Stops the tracer with `sig`, waits for it to exit 0, and returns what it wrote and how
    /// long it took to exit.
    pub fn stop_with(mut self, sig: i32) -> anyhow::Result<(Records, std::time::Duration)> {
        let mut child = self.child.take().context("tracer already stopped")?;
        let asked = std::time::Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = child.kill();
            bail!("tracer did not stop within 10 s of SIGINT");
        };
        let took = asked.elapsed();
        if !status.success() {
            bail!("tracer exited with {status}");
        }
        Ok((Records::read(&self.output)?, took))
    }
}

impl Drop for TracerRun {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Parsed trace records.
#[derive(Debug)]
pub struct Records(pub Vec<Value>);

impl Records {
    /// Reads a JSON Lines file; every line must be a complete JSON object.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line).with_context(|| {
                format!("{}:{}: not a JSON object: {line}", path.display(), i + 1)
            })?;
            out.push(v);
        }
        if !text.is_empty() && !text.ends_with('\n') {
            bail!("{} ends with a partial line", path.display());
        }
        Ok(Self(out))
    }

    /// Records of one type.
    pub fn of_type<'a>(&'a self, t: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.0.iter().filter(move |r| r["type"] == t)
    }

    /// Records of one type towards a remote address.
    pub fn to(&self, t: &str, raddr: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|r| r["type"] == t && r["raddr"] == raddr)
            .collect()
    }

    /// The one record of a type towards a remote address; fails the test, with every record
    /// in the message, when there are none or several.
    pub fn only_to(&self, t: &str, raddr: &str) -> &Value {
        let found = self.to(t, raddr);
        assert_eq!(
            found.len(),
            1,
            "expected one {t} to {raddr}, got:\n{}",
            self.dump()
        );
        found[0]
    }

    /// Records of one type from a local address.
    pub fn from(&self, t: &str, laddr: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|r| r["type"] == t && r["laddr"] == laddr)
            .collect()
    }

    /// The last `stats` record (written at exit).
    pub fn final_stats(&self) -> Option<&Value> {
        self.of_type("stats").last()
    }

    /// All records as text, for assertion messages.
    pub fn dump(&self) -> String {
        self.0
            .iter()
            .filter(|r| r["type"] != "start")
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
