//! The live view on a real terminal: the tracer binary in a tmux session, watching real nginx
//! in front of healthy, refusing and resetting upstreams, read back with `tmux capture-pane`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tracer_tests::{
    Lab, Records, TracerRun,
    lab::wait_for,
    proxy::{Proxy, ProxyKind, Route},
    require_root,
    tracer::tracer_bin,
};

/// A detached tmux session running one command; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> anyhow::Result<Self> {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .stderr(std::process::Stdio::null())
            .status();
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "200",
                "-y",
                "50",
                command,
            ])
            .status()
            .context("running tmux (cargo xtask setup installs it)")?;
        anyhow::ensure!(status.success(), "tmux new-session failed");
        Ok(Self { name: name.into() })
    }

    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let _ = Command::new("tmux")
                .args(["send-keys", "-t", &self.name, k])
                .status();
            // One key per frame: the view reads keys on their own thread.
            std::thread::sleep(Duration::from_millis(80));
        }
    }

    /// Waits until the screen satisfies `ok`, and returns it.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if ok(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("screen never showed {what}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// nginx in front of a healthy upstream, a port nothing listens on, and an upstream that
/// resets every connection.
fn nginx_lab(tag: &str) -> anyhow::Result<(Lab, Proxy, String, String)> {
    let mut lab = Lab::new(tag)?;
    let ok = lab.upstream("ok", 8091, None)?;
    let reset = lab.upstream("rstnow", 8093, None)?;
    let refused = format!("{}:8099", lab.up_addr);
    let routes = [
        Route::new("ok", &ok.addr),
        Route::new("refused", &refused),
        Route::new("reset", &reset.addr),
    ];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    Ok((lab, proxy, refused, reset.addr))
}

fn traffic(lab: &Lab, proxy: &Proxy) -> anyhow::Result<()> {
    for (route, want, n) in [("ok", 200, 5), ("refused", 502, 3), ("reset", 502, 3)] {
        for _ in 0..n {
            assert_eq!(proxy.get(lab, route)?, want, "GET /{route}");
        }
    }
    Ok(())
}

/// The line of the upstream table for `addr`.
fn row<'a>(screen: &'a str, addr: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(addr) && (l.contains("µs") || l.contains("ms") || l.contains(" - ")))
}

#[test]
fn tracer_live_attaches_to_the_daemon_and_answers_keys() -> anyhow::Result<()> {
    require_root();
    let (lab, proxy, refused, reset) = nginx_lab("lv")?;
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    traffic(&lab, &proxy)?;
    // The daemon has judged all six before the view attaches: the view must rebuild them from
    // the records the socket replays.
    wait_for(Duration::from_secs(5), || {
        let n = Records::read(&tracer.output)
            .ok()?
            .of_type("verdict")
            .count();
        (n >= 6).then_some(())
    })
    .context("the daemon wrote no six verdicts")?;

    let cmd = format!(
        "{} live --socket {}; echo LIVE-EXIT=$?; sleep 60",
        tracer_bin().display(),
        tracer.socket.display()
    );
    let tmux = Tmux::start("tracer-live-test", &cmd)?;
    let s = tmux.wait("the refused upstream's verdicts", |s| {
        row(s, &refused).is_some_and(|r| r.contains("connect_refused 3"))
    })?;
    assert!(s.contains("hooks") && s.contains("attached"), "{s}");
    assert!(s.contains("lost 0"), "{s}");
    let reset_row = row(&s, &reset).unwrap_or_default();
    assert!(reset_row.contains("upstream_reset 3"), "{s}");
    // The healthy upstream has connect and first-byte latencies, and no 5xx.
    let ok_row = row(&s, ":8091").context("no row for the healthy upstream")?;
    assert!(!ok_row.contains("connect_"), "{ok_row}");
    assert!(s.contains("Verdicts (6"), "{s}");
    assert!(s.contains("refused the connection"), "{s}");

    // Filter down to resets: the refused upstream leaves both panes.
    tmux.keys(&["/", "r", "e", "s", "e", "t", "Enter"]);
    let s = tmux.wait("the filter", |s| s.contains("filter: reset"))?;
    assert!(!s.contains("connect_refused"), "{s}");
    assert!(s.contains("Verdicts (3"), "{s}");
    // Enter opens the newest verdict with its evidence.
    tmux.keys(&["Enter"]);
    let s = tmux.wait("the evidence", |s| {
        s.contains("evidence (ms from the response)")
    })?;
    assert!(s.contains("reset_received"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait("the panes again", |s| !s.contains("evidence (ms"))?;
    // Sort, pause, quit.
    tmux.keys(&["s"]);
    tmux.wait("the new sort", |s| s.contains("sorted by conn/s"))?;
    tmux.keys(&["p"]);
    tmux.wait("the pause", |s| s.contains("PAUSED"))?;
    tmux.keys(&["q"]);
    let s = tmux.wait("the view's exit", |s| s.contains("LIVE-EXIT="))?;
    assert!(s.contains("LIVE-EXIT=0"), "{s}");
    // The terminal is back: the alternate screen with the panes is gone.
    assert!(!s.contains("Upstreams ("), "{s}");
    // Leaving the view leaves the daemon running.
    assert!(
        std::path::Path::new(&format!("/proc/{}", tracer.pid())).exists(),
        "the daemon stopped with the view"
    );
    let recs = tracer.stop()?;
    assert_eq!(recs.final_stats().context("final stats")?["final"], true);
    Ok(())
}

#[test]
fn run_live_shows_verdicts_and_q_stops_the_tracer_cleanly() -> anyhow::Result<()> {
    require_root();
    let (lab, proxy, refused, _) = nginx_lab("rl")?;
    let output = lab.dir.join("live.jsonl");
    let cmd = format!(
        "{} run --live --pid {} --output {} --no-socket; echo RUN-EXIT=$?; sleep 60",
        tracer_bin().display(),
        proxy.pid,
        output.display()
    );
    let tmux = Tmux::start("tracer-run-live-test", &cmd)?;
    tmux.wait("the attached hooks", |s| s.contains("attached"))?;
    traffic(&lab, &proxy)?;
    let s = tmux.wait("the refused upstream's verdicts", |s| {
        row(s, &refused).is_some_and(|r| r.contains("connect_refused 3"))
    })?;
    // Log lines do not scribble over the view.
    assert!(!s.contains("INFO"), "{s}");
    tmux.keys(&["q"]);
    let s = tmux.wait("the tracer's exit", |s| s.contains("RUN-EXIT="))?;
    assert!(s.contains("RUN-EXIT=0"), "{s}");
    // The log lines held during the view come out afterwards.
    assert!(s.contains("live view closed: stopping"), "{s}");
    let recs = Records::read(&output)?;
    assert_eq!(recs.of_type("verdict").count(), 6, "{}", recs.dump());
    assert_eq!(recs.final_stats().context("final stats")?["final"], true);
    Ok(())
}

#[test]
fn tracer_live_without_a_daemon_says_what_to_do() -> anyhow::Result<()> {
    let out = Command::new(tracer_bin())
        .args(["live", "--socket", "/nonexistent/tracer.sock"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/tracer.sock"), "{err}");
    assert!(err.contains("Is `tracer run` running?"), "{err}");
    // No terminal and no file: --live refuses to start instead of drawing into a pipe.
    let out = Command::new(tracer_bin())
        .args(["run", "--live"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output FILE"));
    Ok(())
}
