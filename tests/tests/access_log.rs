//! Access logs as a source of responses: lines linked to kernel verdicts, verdicts from the log
//! alone when the kernel cannot read the status (HTTP/2), and rotation while tracing.

use std::time::Duration;

use serde_json::Value;
use tracer_tests::{
    Lab, Records, TracerRun,
    proxy::{Front, Proxy, ProxyKind, Route},
    require_root,
};

fn start(kind: ProxyKind, front: Front, tag: &str) -> anyhow::Result<(Lab, Proxy, TracerRun)> {
    require_root();
    let mut lab = Lab::new(tag)?;
    let refused = format!("{}:9", lab.up_addr);
    let ok = lab.upstream("ok", 8095, None)?;
    let routes = [Route::new("refused", &refused), Route::new("ok", &ok.addr)];
    let proxy = Proxy::start_with(&mut lab, kind, 8000, &routes, front)?;
    let spec = format!("{}:{}", proxy.access_log.display(), kind.comm());
    let tracer = TracerRun::start(
        &lab.dir,
        &["--pid", &proxy.pid.to_string(), "--access-log", &spec],
    )?;
    Ok((lab, proxy, tracer))
}

/// Stops the tracer once the follower (polling every 200 ms) has read the last lines.
fn finish(tracer: TracerRun) -> anyhow::Result<Records> {
    std::thread::sleep(Duration::from_millis(700));
    tracer.stop()
}

fn access_logs(recs: &Records) -> Vec<&Value> {
    recs.of_type("access_log").collect()
}

#[test]
fn nginx_log_lines_are_linked_to_kernel_verdicts() -> anyhow::Result<()> {
    let (lab, proxy, tracer) = start(ProxyKind::Nginx, Front::Plain, "nglog")?;
    for _ in 0..2 {
        assert_eq!(proxy.get(&lab, "refused")?, 502);
    }
    assert_eq!(proxy.get(&lab, "ok")?, 200);
    let recs = finish(tracer)?;
    let verdicts: Vec<_> = recs.of_type("verdict").collect();
    assert_eq!(verdicts.len(), 2, "{}", recs.dump());
    assert!(
        verdicts
            .iter()
            .all(|v| v["source"] == "kernel" && v["cause"] == "connect_refused")
    );
    let logs = access_logs(&recs);
    assert_eq!(
        logs.len(),
        2,
        "one access_log per 502, none for the 200:\n{}",
        recs.dump()
    );
    for l in &logs {
        assert_eq!(l["status"], 502);
        assert_eq!(l["cause"], "connect_refused", "{l}");
        assert!(l["verdict_time"].is_string(), "{l}");
        assert_eq!(l["client"], lab.cl_addr.as_str());
    }
    Ok(())
}

#[test]
fn http2_responses_get_verdicts_from_the_log_alone() -> anyhow::Result<()> {
    let (lab, proxy, tracer) = start(ProxyKind::Nginx, Front::Http2, "ngh2")?;
    assert_eq!(proxy.get(&lab, "refused")?, 502);
    let recs = finish(tracer)?;
    // HTTP/2 status is a binary HEADERS frame: no kernel `response` record.
    assert_eq!(recs.of_type("response").count(), 0, "{}", recs.dump());
    let verdicts: Vec<_> = recs.of_type("verdict").collect();
    assert_eq!(verdicts.len(), 1, "{}", recs.dump());
    let v = verdicts[0];
    assert_eq!(v["source"], "access_log");
    assert_eq!(v["cause"], "connect_refused", "{v}");
    assert_eq!(v["upstream"], format!("{}:9", lab.up_addr).as_str());
    assert_eq!(v["comm"], "nginx");
    Ok(())
}

#[test]
fn haproxy_log_lines_carry_the_termination_state() -> anyhow::Result<()> {
    let (lab, proxy, tracer) = start(ProxyKind::Haproxy, Front::Plain, "halog")?;
    assert_eq!(proxy.get(&lab, "refused")?, 503);
    let recs = finish(tracer)?;
    let logs = access_logs(&recs);
    assert_eq!(logs.len(), 1, "{}", recs.dump());
    assert_eq!(logs[0]["termination_state"], "SC--", "{}", logs[0]);
    assert_eq!(logs[0]["cause"], "connect_refused");
    assert_eq!(logs[0]["retries"], 0);
    Ok(())
}

#[test]
fn rotated_logs_are_followed_and_bad_lines_counted() -> anyhow::Result<()> {
    let (lab, proxy, tracer) = start(ProxyKind::Nginx, Front::Plain, "ngrot")?;
    let log = proxy.access_log.clone();
    assert_eq!(proxy.get(&lab, "refused")?, 502);
    std::thread::sleep(Duration::from_millis(400));
    // Rename rotation, then nginx reopens its log on SIGUSR1.
    std::fs::rename(&log, log.with_extension("log.1"))?;
    // SAFETY: kill(2) on the lab's nginx master.
    unsafe { libc::kill(proxy.pid as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(proxy.get(&lab, "refused")?, 502);
    std::thread::sleep(Duration::from_millis(400));
    // copytruncate rotation: the same file, cut to nothing.
    std::fs::copy(&log, log.with_extension("log.2"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)?
        .set_len(0)?;
    assert_eq!(proxy.get(&lab, "refused")?, 502);
    std::thread::sleep(Duration::from_millis(400));
    // A line nothing can parse is counted and skipped.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)?
        .write_all(b"garbage line\n")?;
    assert_eq!(proxy.get(&lab, "refused")?, 502);
    // Healthy lines are read and counted, and nothing more.
    for _ in 0..3 {
        assert_eq!(proxy.get(&lab, "ok")?, 200);
    }
    let recs = finish(tracer)?;
    let logs = access_logs(&recs);
    assert_eq!(
        logs.len(),
        4,
        "every 502 read across rotations:\n{}",
        recs.dump()
    );
    assert!(
        logs.iter().all(|l| l["cause"] == "connect_refused"),
        "{}",
        recs.dump()
    );
    let stats = recs.final_stats().expect("stats");
    assert_eq!(stats["log_unparsed"], 1, "{stats}");
    // Four 502s, three 200s and the garbage line.
    assert_eq!(stats["log_lines"], 8, "{stats}");
    Ok(())
}
