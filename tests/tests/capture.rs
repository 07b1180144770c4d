//! Privileged tests of the kernel capture: a real client (curl) on the proxy host, a real server
//! on the upstream host, faults made with nftables, and the tracer watching from outside both
//! namespaces. Each test asserts the records the tracer wrote for that traffic.

use std::time::Duration;

use serde_json::Value;
use tracer_tests::{Lab, Records, STATUS_CALLS_PY, TracerRun, require_root};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn assert_owner(r: &Value, pid: u32, lab: &Lab) {
    assert_eq!(r["pid"], pid, "wrong pid in {r}");
    assert_eq!(r["comm"], "curl", "wrong comm in {r}");
    assert_eq!(r["role"], "upstream", "wrong role in {r}");
    let laddr = r["laddr"].as_str().unwrap_or_default();
    assert!(
        laddr.starts_with(&format!("{}:", lab.px_addr)),
        "wrong laddr in {r}"
    );
}

/// With `--no-hold`, every record of the connection is written as it happens.
#[test]
fn healthy_request_reports_connect_ttfb_and_close() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ok")?;
    let up = lab.upstream("ok", 8080, Some("5000"))?;
    let tracer = TracerRun::start(
        &lab.dir,
        &["--comm", "curl", "--comm", "python3", "--no-hold"],
    )?;
    let (pid, out) = lab.curl(&[&format!("http://{}/", up.addr)])?;
    assert!(out.status.success(), "curl failed: {out:?}");
    let recs = tracer.stop()?;

    let c = recs.only_to("connect", &up.addr);
    assert_owner(c, pid, &lab);
    let lat = f(&c["latency_us"]);
    assert!(
        lat > 0.0 && lat < 1_000_000.0,
        "implausible connect latency {lat} µs"
    );
    assert_eq!(c["syn_retransmits"], 0);
    let start = recs.only_to("connect_start", &up.addr);
    assert_eq!(
        start["cookie"], c["cookie"],
        "connect_start and connect name one socket"
    );

    let t = recs.only_to("ttfb", &up.addr);
    assert_owner(t, pid, &lab);
    let ttfb = f(&t["ttfb_us"]);
    assert!(
        ttfb > 0.0 && ttfb < 5_000_000.0,
        "implausible ttfb {ttfb} µs"
    );
    assert!(
        t["request_bytes"].as_u64().unwrap_or(0) > 20,
        "request bytes in {t}"
    );
    assert_eq!(t["request_no"], 1);

    let close = recs.only_to("close", &up.addr);
    assert_eq!(close["laddr"], c["laddr"]);
    assert!(
        close["bytes_received"].as_u64().unwrap_or(0) >= 5000,
        "bytes in {close}"
    );
    assert!(
        close["srtt_us"].as_u64().unwrap_or(0) > 0,
        "srtt in {close}"
    );

    // The upstream's side: the server accepted the connection, so it is a client socket there.
    let acc: Vec<_> = recs
        .of_type("accept")
        .filter(|r| r["raddr"] == c["laddr"])
        .collect();
    assert_eq!(acc.len(), 1, "accept of {}:\n{}", c["laddr"], recs.dump());
    assert_eq!(acc[0]["role"], "client");
    assert_eq!(acc[0]["pid"], up.pid);
    assert!(recs.to("connect_error", &up.addr).is_empty());
    // Nothing was held: the close carries no held record's fields.
    for held in ["connect_us", "ttfb_us", "peer_close_idle_us"] {
        assert!(close.get(held).is_none(), "{held} in {close}");
    }
    Ok(())
}

/// By default a connection's routine records are held in the kernel: one that carries a single
/// request and closes writes only its `close`, which says what they would have.
#[test]
fn a_healthy_connection_writes_one_close_with_its_held_records() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("held")?;
    let up = lab.upstream("ok", 8080, Some("5000"))?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&[&format!("http://{}/", up.addr)])?;
    assert!(out.status.success(), "curl failed: {out:?}");
    let recs = tracer.stop()?;

    for kind in ["connect_start", "connect", "ttfb", "peer_close"] {
        assert!(
            recs.to(kind, &up.addr).is_empty(),
            "{kind} was not held:\n{}",
            recs.dump()
        );
    }
    let close = recs.only_to("close", &up.addr);
    assert_owner(close, pid, &lab);
    let (connect, ttfb, duration) = (
        f(&close["connect_us"]),
        f(&close["ttfb_us"]),
        f(&close["duration_us"]),
    );
    assert!(
        connect > 0.0 && ttfb > 0.0 && connect + ttfb < duration,
        "the handshake and the first byte fall within the connection's life: {close}"
    );
    assert!(
        close["request_bytes"].as_u64().unwrap_or(0) > 20,
        "request bytes in {close}"
    );
    assert_eq!(close["requests"], 1, "{close}");
    assert!(
        close["bytes_received"].as_u64().unwrap_or(0) >= 5000,
        "bytes in {close}"
    );
    Ok(())
}

#[test]
fn refused_connect_reports_econnrefused_from_rst() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("ref")?;
    let target = format!("{}:9", lab.up_addr);
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&[&format!("http://{target}/")])?;
    assert!(!out.status.success());
    let recs = tracer.stop()?;

    let e = recs.only_to("connect_error", &target);
    assert_owner(e, pid, &lab);
    assert_eq!(e["errno"], 111);
    assert_eq!(e["error"], "ECONNREFUSED");
    assert_eq!(e["cause"], "rst");
    let d = f(&e["duration_us"]);
    assert!(
        d > 0.0 && d < 1_000_000.0,
        "implausible refusal time {d} µs"
    );
    let rst = recs.only_to("reset_received", &target);
    assert_eq!(rst["state"], "SYN_SENT");
    assert_owner(rst, pid, &lab);
    assert_eq!(recs.to("close", &target).len(), 1);
    assert!(recs.to("connect", &target).is_empty());
    Ok(())
}

#[test]
fn dropped_syn_reports_timeout_with_syn_retransmits() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("tmo")?;
    lab.nft(
        &lab.up,
        "table inet fault {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8080 drop\n }\n}\n",
    )?;
    let target = format!("{}:8080", lab.up_addr);
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&["--connect-timeout", "2.5", &format!("http://{target}/")])?;
    assert!(!out.status.success());
    let recs = tracer.stop()?;

    let e = recs.only_to("connect_error", &target);
    assert_owner(e, pid, &lab);
    assert_eq!(e["errno"], 110);
    assert_eq!(e["error"], "ETIMEDOUT");
    // curl gave up before the kernel did: the socket was closed mid-handshake.
    assert_eq!(e["cause"], "aborted");
    assert!(e["syn_retransmits"].as_u64().unwrap_or(0) >= 1, "{e}");
    let d = f(&e["duration_us"]);
    assert!(
        (2_000_000.0..4_000_000.0).contains(&d),
        "timeout after {d} µs"
    );
    let rt = recs.to("retransmit", &target);
    assert!(!rt.is_empty(), "no retransmit:\n{}", recs.dump());
    assert!(rt.iter().all(|r| r["state"] == "SYN_SENT"));
    Ok(())
}

#[test]
fn icmp_host_unreachable_reports_ehostunreach() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("unr")?;
    lab.nft(
        &lab.up,
        "table inet fault {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8081 reject with icmp type host-unreachable\n }\n}\n",
    )?;
    let target = format!("{}:8081", lab.up_addr);
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&["--connect-timeout", "5", &format!("http://{target}/")])?;
    assert!(!out.status.success());
    let recs = tracer.stop()?;

    let e = recs.only_to("connect_error", &target);
    assert_owner(e, pid, &lab);
    assert_eq!(e["errno"], 113, "{e}");
    assert_eq!(e["error"], "EHOSTUNREACH");
    assert_eq!(e["cause"], "icmp");
    assert!(recs.to("reset_received", &target).is_empty());
    Ok(())
}

#[test]
fn reset_mid_response_reports_reset_received_in_established() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("rst")?;
    let up = lab.upstream("reset", 8082, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&[&format!("http://{}/", up.addr)])?;
    assert!(!out.status.success(), "curl should see the reset");
    let recs = tracer.stop()?;

    let r = recs.only_to("reset_received", &up.addr);
    assert_owner(r, pid, &lab);
    assert_eq!(r["state"], "ESTABLISHED");
    // The upstream sent part of a response before the reset.
    assert!(r["bytes_received"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["awaiting_response"], false);
    assert!(recs.to("peer_close", &up.addr).is_empty());
    // The socket's summary names both ends, as its other records do.
    let close = recs.only_to("close", &up.addr);
    assert_eq!(close["laddr"], r["laddr"], "{close}");
    // The reset released what the connection held, just before it: its connect_start,
    // connect and first byte come first, with their own times.
    let at = |kind: &str| {
        recs.0
            .iter()
            .position(|x| x["type"] == kind && x["raddr"] == up.addr.as_str())
            .unwrap_or_else(|| panic!("no {kind}:\n{}", recs.dump()))
    };
    assert!(
        at("connect_start") < at("connect")
            && at("connect") < at("ttfb")
            && at("ttfb") < at("reset_received"),
        "{}",
        recs.dump()
    );
    let ttfb = recs.only_to("ttfb", &up.addr);
    assert!(ttfb["time"].as_str() < r["time"].as_str(), "{ttfb}\n{r}");
    for held in ["connect_us", "ttfb_us"] {
        assert!(close.get(held).is_none(), "{held} in {close}");
    }
    Ok(())
}

#[test]
fn fin_before_response_reports_peer_close_awaiting_response() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("fin")?;
    let up = lab.upstream("fin", 8083, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&[&format!("http://{}/", up.addr)])?;
    assert!(!out.status.success(), "curl should see an empty reply");
    let recs = tracer.stop()?;

    let p = recs.only_to("peer_close", &up.addr);
    assert_owner(p, pid, &lab);
    assert_eq!(p["awaiting_response"], true);
    assert_eq!(p["bytes_received"], 0);
    // A failure releases the held connect first, so the close has no `connect_us`.
    let c = recs.only_to("connect", &up.addr);
    assert!(c["time"].as_str() < p["time"].as_str(), "{c}\n{p}");
    assert!(recs.only_to("close", &up.addr).get("connect_us").is_none());
    assert!(recs.to("ttfb", &up.addr).is_empty());
    assert!(recs.to("reset_received", &up.addr).is_empty());
    Ok(())
}

#[test]
fn packet_loss_reports_retransmits_and_netfilter_drops() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("loss")?;
    let up = lab.upstream("drain", 8084, None)?;
    // Every third packet towards the upstream is lost at the upstream's ingress: the proxy
    // host retransmits, and the receiving side frees the packet with NETFILTER_DROP.
    lab.nft(
        &lab.up,
        "table netdev loss {\n chain in {\n  type filter hook ingress device \"vup\" priority 0;\n  tcp dport 8084 numgen inc mod 3 == 0 drop\n }\n}\n",
    )?;
    let body = lab.dir.join("body.bin");
    std::fs::write(&body, vec![b'a'; 256 * 1024])?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let data = format!("@{}", body.display());
    let (pid, out) = lab.curl(&[
        "--max-time",
        "30",
        "--data-binary",
        &data,
        &format!("http://{}/", up.addr),
    ])?;
    assert!(out.status.success(), "curl failed: {out:?}");
    // curl has exited, but under loss its socket may still be retransmitting its last
    // segments: the socket (and its `close` record) ends when that is over.
    tracer_tests::lab::wait_for(Duration::from_secs(10), || {
        let recs = Records::read(&tracer.output).ok()?;
        (!recs.to("close", &up.addr).is_empty()).then_some(())
    });
    let recs = tracer.stop()?;

    let rt = recs.to("retransmit", &up.addr);
    assert!(!rt.is_empty(), "no retransmits:\n{}", recs.dump());
    for r in &rt {
        assert_owner(r, pid, &lab);
    }
    let drops = recs.to("drop", &up.addr);
    assert!(
        drops.iter().any(|d| d["reason"] == "NETFILTER_DROP"),
        "no NETFILTER_DROP drop:\n{}",
        recs.dump()
    );
    let close = recs.only_to("close", &up.addr);
    assert!(close["total_retrans"].as_u64().unwrap_or(0) >= 1, "{close}");
    Ok(())
}

#[test]
fn exhausted_ports_report_eaddrnotavail_before_the_wire() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("port")?;
    let up = lab.upstream("slow", 8085, Some("30"))?;
    // An unwatched process holds both local ports towards the upstream.
    lab.exhaust_ports(&up.addr)?;

    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl"])?;
    let (pid, out) = lab.curl(&["--connect-timeout", "3", &format!("http://{}/", up.addr)])?;
    assert!(!out.status.success());
    let recs = tracer.stop()?;

    let e = recs.only_to("connect_error", &up.addr);
    assert_eq!(e["pid"], pid);
    assert_eq!(e["comm"], "curl");
    assert_eq!(e["errno"], 99);
    assert_eq!(e["error"], "EADDRNOTAVAIL");
    assert_eq!(e["cause"], "syscall");
    assert!(
        recs.to("connect_start", &up.addr).is_empty(),
        "nothing went on the wire"
    );
    assert!(recs.to("retransmit", &up.addr).is_empty());
    Ok(())
}

#[test]
fn lost_events_are_counted_when_the_reader_falls_behind() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("lost")?;
    const ATTEMPTS: u64 = 300;
    // A one-page ring holds about thirty records.
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3", "--ring-size", "4096"])?;
    // Stop the reader so that the kernel keeps writing into a ring nobody drains.
    tracer.signal(libc::SIGSTOP);
    let script = format!(
        "import socket\nfor _ in range({ATTEMPTS}):\n  s=socket.socket()\n  try: s.connect(('{}',9))\n  except OSError: pass\n  s.close()",
        lab.up_addr
    );
    let out = lab.run(&lab.px, &["python3", "-c", &script]);
    tracer.signal(libc::SIGCONT);
    out?;
    std::thread::sleep(Duration::from_millis(200));
    let recs = tracer.stop()?;

    let stats = recs.final_stats().expect("a final stats record");
    assert_eq!(stats["final"], true);
    let lost = stats["lost"].as_u64().unwrap_or(0);
    let events = stats["events"].as_u64().unwrap_or(0);
    // Each refused attempt makes at least reset_received, connect_error and close.
    assert!(lost > 0, "nothing counted as lost: {stats}");
    assert!(
        events + lost >= 3 * ATTEMPTS,
        "events {events} + lost {lost} < {}",
        3 * ATTEMPTS
    );
    // Everything the kernel did write was read and decoded.
    assert_eq!(stats["kernel_emitted"], stats["events"], "{stats}");
    let written = recs
        .0
        .iter()
        .filter(|r| r["type"] != "start" && r["type"] != "stats")
        .count() as u64;
    assert_eq!(written, events);
    Ok(())
}

/// The port in the middle of the host's `net.ipv4.ip_local_port_range`.
fn mid_ephemeral_port() -> anyhow::Result<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let [lo, hi] = range
        .split_whitespace()
        .map(str::parse::<u16>)
        .collect::<Result<Vec<_>, _>>()?[..]
    else {
        anyhow::bail!("ip_local_port_range: {range:?}");
    };
    Ok(lo + (hi - lo) / 2)
}

/// Accepted sockets are adopted at their first read, and a local port in the ephemeral range
/// would make one look like an upstream connection: ports that sockets start listening on are
/// learned from the LISTEN state change, so a listener on such a port still has clients.
#[test]
fn a_listener_on_an_ephemeral_port_has_client_sockets() -> anyhow::Result<()> {
    require_root();
    let port = mid_ephemeral_port()?;
    let lab = Lab::new("lsn")?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    let out = lab.run(
        &lab.px,
        &[
            "python3",
            "-c",
            STATUS_CALLS_PY,
            &lab.px_addr,
            &port.to_string(),
        ],
    )?;
    let recs = tracer.stop()?;
    let listener = format!("{}:{port}", lab.px_addr);
    let ports: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(ports.len(), 4, "script output: {out:?}");
    for p in ports {
        let client = format!("{}:{p}", lab.px_addr);
        let acc = recs.only_to("accept", &client);
        assert_eq!(acc["laddr"], listener.as_str(), "{acc}");
        assert_eq!(acc["role"], "client", "{acc}");
        let resp = recs.only_to("response", &client);
        assert_eq!(resp["role"], "client", "{resp}");
        assert_eq!(resp["laddr"], listener.as_str(), "{resp}");
    }
    Ok(())
}

/// A listener on an ephemeral port that is older than the tracer, in another network
/// namespace, is found at start-up: the tracer reads the listening sockets of every namespace.
#[test]
fn a_listener_older_than_the_tracer_on_an_ephemeral_port_has_client_sockets() -> anyhow::Result<()>
{
    require_root();
    let port = mid_ephemeral_port()?;
    let mut lab = Lab::new("eph")?;
    let up = lab.upstream("ok", port, Some("500"))?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl", "--comm", "python3"])?;
    let (_, out) = lab.curl(&[&format!("http://{}/", up.addr)])?;
    assert!(out.status.success(), "curl failed: {out:?}");
    let recs = tracer.stop()?;

    let c = recs.only_to("close", &up.addr);
    // The server's end: a client connection with one request, whose accept was held and
    // whose close is its one record.
    let curl_end = c["laddr"].as_str().unwrap_or_default();
    let server_end = recs.only_to("close", curl_end);
    assert_eq!(server_end["role"], "client", "{server_end}");
    assert_eq!(server_end["pid"], up.pid, "{server_end}");
    assert!(recs.to("accept", curl_end).is_empty(), "{}", recs.dump());
    Ok(())
}

/// One thread, three names: python3 (not watched), then renamed with prctl, then exec()ed
/// through a link with another name. Each phase makes one connection and prints its port.
/// The process filter's answers are cached per CPU by thread id, and the thread keeps its id
/// through both changes: only the rename and exec hooks make the cache ask again.
const RENAME_EXEC_PY: &str = r#"
import ctypes, os, socket, sys
host, port, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def exchange():
    c = socket.create_connection((host, port))
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = c.recv(4096)
    assert got.startswith(b"HTTP/1.1 200"), got
    print(phase, c.getsockname()[1], flush=True)
    c.close()
if phase == "before":
    for _ in range(20):
        exchange()
    ctypes.CDLL(None).prctl(15, b"trc-renamed", 0, 0, 0)  # PR_SET_NAME
    phase = "renamed"
    exchange()
    link = sys.argv[4]
    os.execv(link, [link, "-c", sys.argv[5], host, str(port), "execed"])
exchange()
"#;

#[test]
fn a_thread_renamed_or_execed_into_a_watched_name_is_watched_from_then_on() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("rename")?;
    lab.upstream("ok", 8089, None)?;
    let link = lab.dir.join("trc-execed");
    std::os::unix::fs::symlink(std::fs::canonicalize("/usr/bin/python3")?, &link)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "trc-renamed", "--comm", "trc-execed"])?;
    let link = link.to_string_lossy().to_string();
    // One CPU, so that every phase meets the answer the earlier ones left in its cache.
    let out = lab.run(
        &lab.px,
        &[
            "taskset",
            "-c",
            "0",
            "python3",
            "-c",
            RENAME_EXEC_PY,
            &lab.up_addr,
            "8089",
            "before",
            &link,
            RENAME_EXEC_PY,
        ],
    )?;
    let recs = tracer.stop()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let port_of = |phase: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{phase} ")))
            .map(|p| format!("{}:{p}", lab.px_addr))
            .collect()
    };
    let (before, renamed, execed) = (port_of("before"), port_of("renamed"), port_of("execed"));
    assert_eq!(
        (before.len(), renamed.len(), execed.len()),
        (20, 1, 1),
        "script output: {out:?}"
    );
    for laddr in &before {
        assert!(
            recs.from("close", laddr).is_empty(),
            "python3 is not watched:\n{}",
            recs.dump()
        );
    }
    // Each watched connection is one `close`, with its held connect and first byte.
    for (laddr, comm) in [(&renamed[0], "trc-renamed"), (&execed[0], "trc-execed")] {
        let found = recs.from("close", laddr);
        assert_eq!(found.len(), 1, "close from {laddr}:\n{}", recs.dump());
        assert_eq!(found[0]["comm"], comm, "{}", found[0]);
        assert!(f(&found[0]["connect_us"]) > 0.0, "{}", found[0]);
        assert!(f(&found[0]["ttfb_us"]) > 0.0, "{}", found[0]);
    }
    Ok(())
}
