//! Privileged tests of the time-to-first-byte records on keep-alive upstream connections: one
//! request in N gets a `ttfb` record (`--ttfb-every`), the rest are tallied into `ttfb_summary`
//! records, and the requests a verdict may need are recorded whatever their number. A Python
//! client on the proxy host plays the proxy; the tracer watches it from outside.

use serde_json::Value;
use tracer_tests::{Lab, Records, TracerRun, require_root};

/// Plays a proxy with keep-alive upstream connections. Usage: MODE UPSTREAM [ARGS]
///   plain HOST:PORT N PAUSE_AFTER: N requests on one connection, sleeping 1.1 s after
///         request PAUSE_AFTER (0: never)
///   retry LISTEN_HOST HOST:PORT FAIL_HOST:PORT: accepts a client connection, and for each of
///         its requests asks an upstream: three on a kept-alive connection, one on a new
///         connection to an upstream that resets, then two more on the kept-alive one
///   hold HOST:PORT SECONDS: one request, prints the port, then keeps the connection open
/// Prints the local port of the kept-alive connection.
const CLIENT_PY: &str = r#"
import socket, sys, time

def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)

def read_response(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += c.recv(4096)
    return head.split(b"\r\n")[0]

def ask(u):
    u.sendall(b"GET / HTTP/1.1\r\nHost: up\r\n\r\n")
    return read_response(u)

mode = sys.argv[1]
if mode == "plain":
    n, pause_after = int(sys.argv[3]), int(sys.argv[4])
    u = socket.create_connection(addr(sys.argv[2]))
    for i in range(1, n + 1):
        ask(u)
        if i == pause_after:
            time.sleep(1.1)
    print(u.getsockname()[1], flush=True)
    u.close()
elif mode == "hold":
    u = socket.create_connection(addr(sys.argv[2]))
    ask(u)
    print(u.getsockname()[1], flush=True)
    time.sleep(float(sys.argv[3]))
    u.close()
elif mode == "retry":
    ls = socket.socket()
    ls.bind((sys.argv[2], 0))
    ls.listen(1)
    cs = socket.create_connection(ls.getsockname())
    ss, _ = ls.accept()
    def client_request():
        cs.sendall(b"GET /x HTTP/1.1\r\nHost: px\r\n\r\n")
        ss.recv(4096)
    u = socket.create_connection(addr(sys.argv[3]))
    for _ in range(3):
        client_request()
        ask(u)
    client_request()
    f = socket.create_connection(addr(sys.argv[4]))
    try:
        ask(f)
        sys.exit("the failing upstream answered")
    except (ConnectionError, OSError):
        pass
    f.close()
    # The retry, on the kept-alive connection: request 4 there.
    ask(u)
    for _ in range(2):
        client_request()
        ask(u)
    print(u.getsockname()[1], flush=True)
    u.close()
"#;

/// Runs the client script on the proxy host; returns the kept-alive connection's `ip:port`.
fn client(lab: &Lab, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["python3", "-c", CLIENT_PY];
    argv.extend_from_slice(args);
    let out = lab.run(&lab.px, &argv)?;
    anyhow::ensure!(out.status.success(), "client script failed: {out:?}");
    let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        port.parse::<u16>().is_ok(),
        "client script printed {port:?}"
    );
    Ok(format!("{}:{port}", lab.px_addr))
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

fn us(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The `request_no` and `why` of the `ttfb` records of the connection bound to `laddr`.
fn recorded(recs: &Records, laddr: &str) -> Vec<(u64, String)> {
    recs.from("ttfb", laddr)
        .iter()
        .map(|r| {
            (
                num(&r["request_no"]),
                r["why"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn keepalive_requests_are_sampled_and_the_rest_summarised() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfbs")?;
    let up = lab.upstream("ok", 8080, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3", "--ttfb-every", "8"])?;
    // 40 requests; the pause after the 20th ends the first summary's period at the 21st.
    let laddr = client(&lab, &["plain", &up.addr, "40", "20"])?;
    let recs = tracer.stop()?;

    let sample = |n: u64| (n, "sample".to_string());
    assert_eq!(
        recorded(&recs, &laddr),
        [1, 9, 17, 25, 33].map(sample),
        "{}",
        recs.dump()
    );
    let summaries = recs.from("ttfb_summary", &laddr);
    assert_eq!(summaries.len(), 2, "{}", recs.dump());
    let (first, last) = (summaries[0], summaries[1]);
    // Requests 2-8, 10-16 and 18-21: written with the 21st, the first past the period.
    assert_eq!(num(&first["requests"]), 18, "{first}");
    assert_eq!(num(&first["request_no"]), 21, "{first}");
    assert!(
        us(&first["idle_max_us"]) >= 1_000_000.0,
        "the 21st request came after 1.1 s idle: {first}"
    );
    // The other 17 unsampled requests, written when the connection was destroyed.
    assert_eq!(num(&last["requests"]), 17, "{last}");
    assert_eq!(num(&last["request_no"]), 40, "{last}");
    assert!(us(&last["idle_max_us"]) < 1_000_000.0, "{last}");
    for s in &summaries {
        let (min, mean, max) = (
            us(&s["ttfb_min_us"]),
            us(&s["ttfb_mean_us"]),
            us(&s["ttfb_max_us"]),
        );
        assert!(
            0.0 < min && min <= mean && mean <= max && max < 1_000_000.0,
            "{s}"
        );
        assert_eq!(s["role"], "upstream", "{s}");
        assert!(s["since"].as_str().is_some(), "{s}");
    }
    let close = recs.from("close", &laddr);
    assert_eq!(close.len(), 1, "{}", recs.dump());
    assert!(
        last["time"].as_str() <= close[0]["time"].as_str(),
        "the summary precedes the close"
    );
    Ok(())
}

#[test]
fn ttfb_every_one_records_every_request() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfb1")?;
    let up = lab.upstream("ok", 8080, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3", "--ttfb-every", "1"])?;
    let laddr = client(&lab, &["plain", &up.addr, "12", "0"])?;
    let recs = tracer.stop()?;
    let want: Vec<_> = (1..=12).map(|n| (n, "sample".to_string())).collect();
    assert_eq!(recorded(&recs, &laddr), want, "{}", recs.dump());
    assert!(recs.from("ttfb_summary", &laddr).is_empty());
    Ok(())
}

/// Every response of this upstream is a 502, a status the tracer reports: each request's first
/// byte is recorded, whatever the sample.
#[test]
fn a_reported_upstream_status_has_its_first_byte_recorded() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfb5")?;
    let up = lab.upstream("status502", 8080, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3", "--ttfb-every", "1000"])?;
    let laddr = client(&lab, &["plain", &up.addr, "5", "0"])?;
    let recs = tracer.stop()?;
    let mut want = vec![(1, "sample".to_string())];
    want.extend((2..=5).map(|n| (n, "status".to_string())));
    assert_eq!(recorded(&recs, &laddr), want, "{}", recs.dump());
    assert_eq!(recs.from("upstream_response", &laddr).len(), 5);
    assert!(recs.from("ttfb_summary", &laddr).is_empty());
    Ok(())
}

/// A client whose upstream connection failed: the proxy's next request for it, on another
/// connection that the sample would skip, is recorded, so that the correlator can see the retry.
#[test]
fn the_request_after_an_upstream_failure_has_its_first_byte_recorded() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfbr")?;
    let ok = lab.upstream("ok", 8080, None)?;
    let failing = lab.upstream("rstnow", 8081, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3", "--ttfb-every", "1000"])?;
    let px = lab.px_addr.clone();
    let laddr = client(&lab, &["retry", &px, &ok.addr, &failing.addr])?;
    let recs = tracer.stop()?;

    let failed = recs.to("reset_received", &failing.addr);
    assert_eq!(failed.len(), 1, "{}", recs.dump());
    let ttfb = recs.from("ttfb", &laddr);
    assert_eq!(
        recorded(&recs, &laddr),
        [(1, "sample".to_string()), (4, "retry".to_string())],
        "{}",
        recs.dump()
    );
    // Both upstream connections were linked to the one client connection.
    assert!(failed[0]["peer"].as_u64().is_some(), "{}", failed[0]);
    assert_eq!(ttfb[1]["peer"], failed[0]["peer"], "{}", recs.dump());
    // Requests 2, 3, 5 and 6.
    let summaries = recs.from("ttfb_summary", &laddr);
    let tallied: u64 = summaries.iter().map(|s| num(&s["requests"])).sum();
    assert_eq!(tallied, 4, "{}", recs.dump());
    Ok(())
}

/// The index of the first record of `kind` from `laddr` in the trace, which is the order the
/// kernel wrote them in.
fn position(recs: &Records, kind: &str, laddr: &str) -> usize {
    recs.0
        .iter()
        .position(|r| r["type"] == kind && r["laddr"] == laddr)
        .unwrap_or_else(|| panic!("no {kind} from {laddr}:\n{}", recs.dump()))
}

/// A connection whose response takes longer than a second: its held `connect_start`,
/// `connect` and first `ttfb` are released at the first read past the second, as the records
/// they would have been, with their own times, and before the close.
#[test]
fn a_connection_that_lives_on_releases_its_held_records() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfbh")?;
    let up = lab.upstream("trickle", 8080, Some("1.3"))?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    let laddr = client(&lab, &["plain", &up.addr, "1", "0"])?;
    let recs = tracer.stop()?;

    let one = |kind: &str| -> &Value {
        let found = recs.from(kind, &laddr);
        assert_eq!(found.len(), 1, "{kind} from {laddr}:\n{}", recs.dump());
        found[0]
    };
    let (start, connect, ttfb) = (one("connect_start"), one("connect"), one("ttfb"));
    let close = recs.from("close", &laddr);
    assert_eq!(close.len(), 1, "{}", recs.dump());
    let close = close[0];
    assert_eq!(num(&ttfb["request_no"]), 1, "{ttfb}");
    assert_eq!(ttfb["why"], "sample", "{ttfb}");
    // Dated when they happened: the SYN, the handshake, then the first byte, well before the
    // rest of the body came 1.3 s later and the connection closed.
    let time = |r: &Value| r["time"].as_str().unwrap_or_default().to_string();
    assert!(
        time(start) <= time(connect) && time(connect) <= time(ttfb) && time(ttfb) < time(close),
        "{start}\n{connect}\n{ttfb}\n{close}"
    );
    assert!(
        position(&recs, "ttfb", &laddr) < position(&recs, "close", &laddr),
        "released before the close:\n{}",
        recs.dump()
    );
    // Released, so no longer held: the close carries none of their fields.
    for held in ["connect_us", "ttfb_us"] {
        assert!(close.get(held).is_none(), "{held} in {close}");
    }
    assert_eq!(num(&close["requests"]), 1, "{close}");
    Ok(())
}

/// A connection still open when the tracer stops: its held records are written at exit, with
/// their own times.
#[test]
fn held_records_of_connections_open_at_exit_are_written() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfbx")?;
    let up = lab.upstream("ok", 8080, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    let out = lab.dir.join("hold.out");
    lab.spawn_to(
        &lab.px.clone(),
        &["python3", "-c", CLIENT_PY, "hold", &up.addr, "30"],
        Some(&out),
    )?;
    let port = tracer_tests::lab::wait_for(std::time::Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&out).ok()?;
        text.trim().parse::<u16>().ok()
    })
    .ok_or_else(|| anyhow::anyhow!("the client printed no port"))?;
    let laddr = format!("{}:{port}", lab.px_addr);
    let recs = tracer.stop()?;

    for kind in ["connect_start", "connect", "ttfb"] {
        assert_eq!(
            recs.from(kind, &laddr).len(),
            1,
            "{kind} from {laddr}:\n{}",
            recs.dump()
        );
    }
    let ttfb = recs.from("ttfb", &laddr)[0];
    assert_eq!(num(&ttfb["request_no"]), 1, "{ttfb}");
    assert!(us(&ttfb["ttfb_us"]) > 0.0, "{ttfb}");
    assert!(recs.from("close", &laddr).is_empty(), "{}", recs.dump());
    let stopped = recs.final_stats().expect("a final stats record");
    assert!(
        ttfb["time"].as_str() < stopped["time"].as_str(),
        "dated when the first byte came: {ttfb}"
    );
    Ok(())
}

/// The upstream's end of a kept-alive connection is a client connection of a watched process:
/// its held `accept` is released at its second request, dated when it was adopted. The
/// client's FIN, with no request outstanding, is held for the close.
#[test]
fn a_client_connection_that_lives_on_releases_its_accept() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ttfba")?;
    let up = lab.upstream("ok", 8080, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    let laddr = client(&lab, &["plain", &up.addr, "3", "0"])?;
    let recs = tracer.stop()?;

    // The server's records of that connection name the client's end as their remote address.
    let accept = recs.to("accept", &laddr);
    assert_eq!(accept.len(), 1, "{}", recs.dump());
    let accept = accept[0];
    assert_eq!(accept["role"], "client", "{accept}");
    let close = recs.to("close", &laddr);
    assert_eq!(close.len(), 1, "{}", recs.dump());
    let close = close[0];
    assert!(
        accept["time"].as_str() < close["time"].as_str(),
        "{accept}\n{close}"
    );
    let at = |kind: &str| {
        recs.0
            .iter()
            .position(|r| r["type"] == kind && r["raddr"] == laddr.as_str())
            .unwrap_or(usize::MAX)
    };
    assert!(at("accept") < at("close"), "{}", recs.dump());
    // Released at the server's read of request 2, before the client's first byte of it
    // released the client's own held connect: not at the close.
    let client_connect = recs
        .0
        .iter()
        .position(|r| r["type"] == "connect" && r["laddr"] == laddr.as_str())
        .unwrap_or_else(|| panic!("no connect from {laddr}:\n{}", recs.dump()));
    assert!(at("accept") < client_connect, "{}", recs.dump());
    assert!(recs.to("peer_close", &laddr).is_empty(), "{}", recs.dump());
    assert!(
        us(&close["peer_close_idle_us"]) >= 0.0,
        "the client's FIN, held: {close}"
    );
    Ok(())
}
