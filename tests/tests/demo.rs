//! `cargo xtask demo` as a newcomer runs it: with and without the live view, leaving a trace
//! that `tracer report` reads and no namespace behind.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tracer_tests::{require_root, tracer::tracer_bin};

const DEMO: &str = env!("CARGO_BIN_EXE_demo");

/// Network namespaces the demo run with process id `pid` created and left behind.
fn leftover_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let prefix = format!("tr{}", pid % 100_000);
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix) && n.contains("demo"))
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

fn report(trace: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(tracer_bin())
        .args(["report", "--json", trace])
        .output()?;
    anyhow::ensure!(out.status.success(), "tracer report failed: {out:?}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Verdict counts by cause in a `tracer report --json` document.
fn cause_count(report: &serde_json::Value, cause: &str) -> u64 {
    report["verdicts_by_cause"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cause"] == cause)
        .and_then(|c| c["count"].as_u64())
        .unwrap_or(0)
}

#[test]
fn demo_without_live_view_explains_every_phase() -> anyhow::Result<()> {
    require_root();
    let child = Command::new(DEMO)
        .args(["--no-live", "--phase-seconds", "3"])
        .env("TRACER_BIN", tracer_bin())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{text}");
    for phase in ["refusing", "resetting", "too slow", "keep-alive race"] {
        assert!(text.contains(phase), "no {phase} phase:\n{text}");
    }
    for cause in [
        "connect_refused",
        "upstream_reset",
        "upstream_timeout",
        "keepalive_race",
    ] {
        assert!(
            text.contains(&format!("verdict {cause}")),
            "no {cause} verdict printed:\n{text}"
        );
    }
    let hint = text
        .lines()
        .find(|l| l.contains(" report "))
        .context("no report command printed")?;
    let trace = hint.split_whitespace().last().unwrap_or_default();
    let r = report(trace)?;
    assert!(cause_count(&r, "connect_refused") >= 3, "{r}");
    assert!(cause_count(&r, "upstream_reset") >= 3, "{r}");
    assert!(
        leftover_namespaces(pid).is_empty(),
        "{:?}",
        leftover_namespaces(pid)
    );
    Ok(())
}

#[test]
fn demo_live_view_quits_on_ctrl_c_and_cleans_up() -> anyhow::Result<()> {
    require_root();
    let session = "tracer-demo-test";
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", session])
        .stderr(std::process::Stdio::null())
        .status();
    // The demo's pid names its namespaces: the other demo test may be running beside this one.
    let cmd = format!(
        "sh -c 'echo DEMO-PID=$$; exec env TRACER_BIN={} {DEMO} --phase-seconds 2'; \
         echo DEMO-EXIT=$?; sleep 60",
        tracer_bin().display()
    );
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "200",
            "-y",
            "50",
            &cmd,
        ])
        .status()?;
    anyhow::ensure!(ok.success(), "tmux failed");
    let screen = || {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let wait = |what: &str, f: &dyn Fn(&str) -> bool| -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = screen();
            if f(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("the screen never showed {what}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let result = (|| -> anyhow::Result<()> {
        // The second phase refuses connections: its verdicts reach the live view.
        let s = wait("refused verdicts in the live view", &|s| {
            s.contains("Upstreams (") && s.contains("connect_refused")
        })?;
        assert!(s.contains("hooks") && s.contains("attached"), "{s}");
        // Raw mode turns Ctrl-C into a key: the view quits, the demo stops and cleans up.
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", session, "C-c"])
            .status();
        let s = wait("the demo's exit", &|s| s.contains("DEMO-EXIT="))?;
        assert!(s.contains("DEMO-EXIT=0"), "{s}");
        assert!(
            !s.contains("Upstreams ("),
            "the terminal was not restored:\n{s}"
        );
        assert!(s.contains("report /tmp/tracer-demo.jsonl"), "{s}");
        let r = report("/tmp/tracer-demo.jsonl")?;
        assert!(cause_count(&r, "connect_refused") >= 1, "{r}");
        let pid: u32 = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("DEMO-PID="))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no DEMO-PID on the screen:\n{s}"))?;
        let left = leftover_namespaces(pid);
        assert!(left.is_empty(), "namespaces left: {left:?}");
        Ok(())
    })();
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", session])
        .stderr(std::process::Stdio::null())
        .status();
    result
}
