//! Real proxies under healthy traffic, and nginx's silent retry of a failed reused connection.

use tracer_tests::{
    Lab, TracerRun,
    proxy::{Front, Proxy, ProxyKind, Route},
    require_root,
};

fn healthy(kind: ProxyKind) -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new(&format!("{}ok", &kind.comm()[..2]))?;
    let ok = lab.upstream("ok", 8091, Some("256"))?;
    let pooled = lab.upstream("ok", 8092, Some("256"))?;
    let routes = [
        Route::new("ok", &ok.addr),
        Route::new("pooled", &pooled.addr).keepalive(),
    ];
    let proxy = Proxy::start(&mut lab, kind, 8000, &routes)?;
    // Watch this lab's proxy only (its workers are its children), not every proxy on the host.
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    let mut loads = Vec::new();
    for route in ["ok", "pooled"] {
        loads.push(lab.load(&format!("http://{}/{route}", proxy.listen), 3, 20, 4)?);
    }
    let mut total = 0u64;
    for load in loads {
        let counts = load.finish()?;
        let ok = counts.get("200").copied().unwrap_or(0);
        let all: u64 = counts.values().sum();
        assert_eq!(ok, all, "healthy load got errors: {counts:?}");
        total += all;
    }
    assert!(total >= 400, "only {total} requests");
    let recs = tracer.stop()?;
    assert_eq!(
        recs.of_type("verdict").count(),
        0,
        "verdicts on healthy traffic:\n{}",
        recs.dump()
    );
    assert_eq!(recs.of_type("response").count(), 0);
    assert_eq!(recs.of_type("retried").count(), 0);
    // The tracer was watching: it saw the proxy's upstream connections and their first bytes,
    // as records of their own or held and written with the connection's close.
    let of_proxy = |t: &'static str| {
        recs.of_type(t)
            .filter(|r| r["comm"] == kind.comm() && r["role"] == "upstream")
    };
    let held = |field: &'static str| of_proxy("close").filter(|r| r.get(field).is_some()).count();
    let connects = of_proxy("connect").count() + held("connect_us");
    let ttfb = (of_proxy("ttfb").count() + held("ttfb_us")) as u64;
    // Pooled requests mostly have no `ttfb` of their own (one in --ttfb-every): their
    // connections' summaries count them.
    let summarised: u64 = recs
        .of_type("ttfb_summary")
        .filter(|r| r["comm"] == kind.comm())
        .map(|r| r["requests"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        connects > 0 && summarised > 0 && ttfb + summarised == total,
        "connects {connects}, ttfb {ttfb}, summarised {summarised}, requests {total}"
    );
    let stats = recs.final_stats().expect("stats");
    assert_eq!(stats["lost"], 0, "{stats}");
    println!(
        "{}: {total} healthy requests, {connects} upstream connects, {ttfb} ttfb, {summarised} summarised, 0 verdicts",
        kind.comm()
    );
    Ok(())
}

#[test]
fn nginx_healthy_traffic_produces_no_verdict() -> anyhow::Result<()> {
    healthy(ProxyKind::Nginx)
}

#[test]
fn haproxy_healthy_traffic_produces_no_verdict() -> anyhow::Result<()> {
    healthy(ProxyKind::Haproxy)
}

#[test]
fn nginx_silent_retry_of_a_reused_connection_is_reported() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ngretry")?;
    // Every reused connection is reset; nginx's default proxy_next_upstream retries it.
    let up = lab.upstream("race", 8093, None)?;
    let routes = [Route::new("race", &up.addr).keepalive().retry()];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(proxy.get(&lab, "race")?);
    }
    let recs = tracer.stop()?;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the client saw {statuses:?}"
    );
    assert_eq!(recs.of_type("verdict").count(), 0, "{}", recs.dump());
    let retried: Vec<_> = recs.of_type("retried").collect();
    assert!(!retried.is_empty(), "no retried record:\n{}", recs.dump());
    for r in &retried {
        assert_eq!(r["cause"], "keepalive_race");
        assert_eq!(r["upstream"], up.addr.as_str());
        assert_eq!(r["comm"], "nginx");
    }
    println!(
        "{} retried records for {} requests",
        retried.len(),
        statuses.len()
    );
    Ok(())
}

fn https(kind: ProxyKind) -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new(&format!("{}tls", &kind.comm()[..2]))?;
    let refused = format!("{}:9", lab.up_addr);
    let reset = lab.upstream("rstnow", 8094, None)?;
    let routes = [
        Route::new("refused", &refused),
        Route::new("reset", &reset.addr),
    ];
    let proxy = Proxy::start_with(&mut lab, kind, 8443, &routes, Front::Tls)?;
    // Watch this lab's proxy only (its workers are its children), not every proxy on the host.
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    let a = proxy.get(&lab, "refused")?;
    let b = proxy.get(&lab, "reset")?;
    let recs = tracer.stop()?;
    assert!((502..=504).contains(&a) && b == 502, "statuses {a} {b}");
    let responses: Vec<_> = recs.of_type("response").collect();
    assert_eq!(responses.len(), 2, "{}", recs.dump());
    assert!(
        responses.iter().all(|r| r["via"] == "tls"),
        "{}",
        recs.dump()
    );
    let causes: Vec<_> = recs
        .of_type("verdict")
        .map(|v| v["cause"].clone())
        .collect();
    assert_eq!(
        causes,
        vec!["connect_refused", "upstream_reset"],
        "{}",
        recs.dump()
    );
    Ok(())
}

#[test]
fn nginx_https_gateway_errors_get_verdicts() -> anyhow::Result<()> {
    https(ProxyKind::Nginx)
}

#[test]
fn haproxy_https_gateway_errors_get_verdicts() -> anyhow::Result<()> {
    https(ProxyKind::Haproxy)
}

#[test]
fn nginx_keepalive_race_verdict_reports_the_learned_upstream_idle_timeout() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ngidle")?;
    // The upstream closes connections idle for 1 s, and resets one reused before that.
    let up = lab.upstream("idlerace", 8096, Some("1"))?;
    let routes = [Route::new("idle", &up.addr).keepalive()];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    // Pool connections, let the upstream close them idle (it learns 1 s)... Each worker's
    // second request on a pooled connection is reset, so an odd count leaves at least one
    // worker with a pooled connection to idle out, however the requests are spread.
    for _ in 0..3 {
        proxy.get(&lab, "idle")?;
    }
    std::thread::sleep(std::time::Duration::from_millis(1600));
    // ...then pool fresh ones and reuse them at once: races.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(proxy.get(&lab, "idle")?);
    }
    let recs = tracer.stop()?;
    // An idle close is a routine `peer_close`, held and written with the connection's close.
    let idle_closes: Vec<_> = recs
        .to("close", &up.addr)
        .into_iter()
        .filter(|c| c.get("peer_close_idle_us").is_some())
        .collect();
    assert!(
        !idle_closes.is_empty(),
        "no idle close seen:\n{}",
        recs.dump()
    );
    // Races before the first idle close cannot know the timeout yet (RFC 3339 times of one
    // format compare as text).
    let first_close = idle_closes[0]["time"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let races: Vec<_> = recs
        .of_type("verdict")
        .filter(|v| v["cause"] == "keepalive_race")
        .filter(|v| v["time"].as_str().unwrap_or_default() > first_close.as_str())
        .collect();
    assert!(
        !races.is_empty(),
        "no race among {statuses:?}:\n{}",
        recs.dump()
    );
    for v in &races {
        let learned = v["upstream_idle_timeout_ms"].as_f64().unwrap_or(0.0);
        assert!(
            (900.0..1600.0).contains(&learned),
            "learned {learned} ms from idle closes {idle_closes:?}: {v}"
        );
        let advice = v["advice"].as_str().unwrap_or_default();
        assert!(
            advice.contains("keepalive_timeout") && advice.contains("1.0 s"),
            "{advice}"
        );
    }
    println!(
        "{} races; learned idle timeout {} ms",
        races.len(),
        races[0]["upstream_idle_timeout_ms"]
    );
    Ok(())
}
