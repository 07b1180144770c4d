//! `tracer report` on trace files written by a real run: rotated, gzip-compressed, with a line
//! cut short at the end.

use std::process::Command;

use serde_json::Value;
use tracer_tests::{
    Lab, TracerRun,
    proxy::{Proxy, ProxyKind, Route},
    require_root,
    tracer::tracer_bin,
};

#[test]
fn report_summarises_rotated_gzip_traces_of_real_errors() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("rep")?;
    let refused = format!("{}:9", lab.up_addr);
    let reset = lab.upstream("rstnow", 8097, None)?;
    let ok = lab.upstream("ok", 8098, Some("2000"))?;
    let routes = [
        Route::new("refused", &refused),
        Route::new("reset", &reset.addr),
        Route::new("ok", &ok.addr),
    ];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    let tracer = TracerRun::start(
        &lab.dir,
        &[
            "--pid",
            &proxy.pid.to_string(),
            "--rotate-size",
            "8KiB",
            "--rotate-keep",
            "50",
            "--rotate-gzip",
        ],
    )?;
    for _ in 0..3 {
        assert_eq!(proxy.get(&lab, "refused")?, 502);
    }
    for _ in 0..2 {
        assert_eq!(proxy.get(&lab, "reset")?, 502);
    }
    for _ in 0..20 {
        assert_eq!(proxy.get(&lab, "ok")?, 200);
    }
    let output = tracer.output.clone();
    tracer.stop()?;
    // A crash would leave a cut last line: the report must skip it and say so.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&output)?
        .write_all(b"{\"type\":\"conn")?;
    let mut files: Vec<_> = std::fs::read_dir(&lab.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("trace.jsonl"))
        })
        .collect();
    files.sort(); // glob order: newest rotation first is not what the report needs
    assert!(files.len() >= 3, "no rotation happened: {files:?}");

    let out = Command::new(tracer_bin())
        .arg("report")
        .arg("--json")
        .args(&files)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(r["totals"]["verdicts"], 5, "{r}");
    assert_eq!(r["totals"]["malformed"], 1, "{r}");
    assert_eq!(r["totals"]["lost"], 0);
    let causes: Vec<(String, u64)> = r["verdicts_by_cause"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["cause"].as_str().unwrap_or_default().to_string(),
                c["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        causes,
        vec![("connect_refused".into(), 3), ("upstream_reset".into(), 2)]
    );
    let ok_latency = r["latency_by_upstream"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["upstream"] == ok.addr.as_str())
        .expect("latency of the healthy upstream");
    assert!(
        ok_latency["ttfb"]["count"].as_u64().unwrap_or(0) >= 20,
        "{ok_latency}"
    );

    let text = Command::new(tracer_bin())
        .arg("report")
        .args(&files)
        .output()?;
    let text = String::from_utf8(text.stdout)?;
    assert!(
        text.contains("connect_refused") && text.contains("5xx per minute"),
        "{text}"
    );

    let missing = Command::new(tracer_bin())
        .args(["report", "/nonexistent/trace.jsonl"])
        .output()?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/trace.jsonl"));
    Ok(())
}
