//! The link from an upstream connection to the client whose request it carries (`peer`):
//! made from the client connection the proxy thread last read (`LAST_CLIENT`, a slot per
//! thread id), kept when the thread reads other clients before it writes upstream, and kept
//! when another thread takes the slot.

use serde_json::Value;
use tracer_tests::{Lab, Records, TracerRun, require_root};

/// The start of both proxies: a Python process named `trc-proxy` (the watched name; threads
/// inherit it) that listens on `px:PORT` and accepts two client connections, `a` and `b`,
/// from another process (python3, not watched), which sends one request on each and waits
/// for the answers. Takes `px up_host up_port` as arguments.
const TWO_CLIENTS_PY: &str = r#"
import ctypes, select, socket, subprocess, sys, threading
px, up_host, up_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctypes.CDLL(None).prctl(15, b"trc-proxy", 0, 0, 0)  # PR_SET_NAME
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((px, PORT))
ls.listen(8)
clients = subprocess.Popen([sys.executable, "-c", """
import socket, sys
cs = [socket.create_connection((sys.argv[1], PORT)) for _ in "ab"]
for c, path in zip(cs, "ab"):
    c.sendall(b"GET /%s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % path.encode())
for c in cs:
    c.recv(4096)
""", px])
a, _ = ls.accept()
b, _ = ls.accept()
if b"/a" not in a.recv(4096, socket.MSG_PEEK):
    a, b = b, a
"#;

/// One thread plays a proxy worker: it reads client A's request, starts a non-blocking
/// connect upstream for it, reads client B's request while the handshake completes, then
/// writes A's request upstream. It answers A with a 502 and B with a 503, so that both client
/// connections leave a `response` record with their cookies. Prints the ports of A's and B's
/// client connections and of the upstream connection.
const LINK_PY: &str = r#"
a.recv(4096)
u = socket.socket()
u.setblocking(False)
u.connect_ex((up_host, up_port))
b.recv(4096)
select.select([], [u], [], 5)
u.setblocking(True)
u.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
got = u.recv(4096)
assert got.startswith(b"HTTP/1.1 200"), got
a.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
b.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
clients.wait(timeout=10)
print(a.getpeername()[1], b.getpeername()[1], u.getsockname()[1], flush=True)
"#;

/// Thread A reads client a's request, then a thread B whose id shares A's slot (16,384
/// apart) reads client b's, and only then A opens the upstream connection for a. Prints the
/// two clients' ports, the upstream connection's port and the two thread ids.
const SHARED_SLOT_PY: &str = r#"
SLOTS = 16384
tids = {}
b_read = threading.Event()
def thread_b():
    # Only a thread whose id shares A's slot reads b; the others end at once.
    if threading.get_native_id() % SLOTS != tids["a"] % SLOTS:
        return
    tids["b"] = threading.get_native_id()
    b.recv(4096)
    b_read.set()
def thread_a():
    tids["a"] = threading.get_native_id()
    a.recv(4096)
    # Thread ids are handed out in order and wrap at pid_max: within 40,000 threads one
    # shares A's slot.
    for _ in range(40000):
        t = threading.Thread(target=thread_b)
        t.start()
        t.join()
        if b_read.is_set():
            break
    assert b_read.is_set(), "no thread id shared the slot of %d" % tids["a"]
    u = socket.create_connection((up_host, up_port))
    u.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = u.recv(4096)
    assert got.startswith(b"HTTP/1.1 200"), got
    a.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    b.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    tids["u"] = u.getsockname()[1]
    u.close()
t = threading.Thread(target=thread_a)
t.start()
t.join()
clients.wait(timeout=10)
print(a.getpeername()[1], b.getpeername()[1], tids["u"], tids["a"], tids["b"], flush=True)
"#;

/// Runs `TWO_CLIENTS_PY` on `port` followed by `rest` as the proxy, in the proxy host of a new
/// lab with an upstream on `up_port`, under the tracer. Returns the lab, the records and the
/// words the script printed.
fn run_proxy(
    name: &str,
    port: u16,
    up_port: u16,
    rest: &str,
) -> anyhow::Result<(Lab, Records, Vec<String>)> {
    let mut lab = Lab::new(name)?;
    lab.upstream("ok", up_port, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "trc-proxy"])?;
    let script = TWO_CLIENTS_PY.replace("PORT", &port.to_string()) + rest;
    let up_port = up_port.to_string();
    let out = lab.run(
        &lab.px,
        &[
            "python3",
            "-c",
            &script,
            &lab.px_addr,
            &lab.up_addr,
            &up_port,
        ],
    )?;
    let recs = tracer.stop()?;
    let words = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok((lab, recs, words))
}

/// The one `response` written to the client connection whose port is `port`.
fn response(lab: &Lab, recs: &Records, port: &str) -> Value {
    let found = recs.to("response", &format!("{}:{port}", lab.px_addr));
    assert_eq!(found.len(), 1, "response to {port}:\n{}", recs.dump());
    found[0].clone()
}

#[test]
fn a_new_upstream_connection_stays_linked_to_the_client_it_was_opened_for() -> anyhow::Result<()> {
    require_root();
    let (lab, recs, words) = run_proxy("link", 9100, 8091, LINK_PY)?;
    let [a_port, b_port, u_port] = &words[..] else {
        panic!("script output: {words:?}");
    };
    // The accepted end of each client connection wrote a status line, found by the client's
    // port.
    let (a, b) = (
        response(&lab, &recs, a_port)["cookie"].clone(),
        response(&lab, &recs, b_port)["cookie"].clone(),
    );
    assert!(a.is_u64() && b.is_u64() && a != b, "cookies {a} {b}");
    let u_laddr = format!("{}:{u_port}", lab.px_addr);
    // The upstream connection was still open when A's 502 was written: the response released
    // what it held, so its connect and first byte come before the response, naming client A.
    let at = |kind: &str, laddr: &str| {
        recs.0
            .iter()
            .position(|r| r["type"] == kind && r["laddr"] == laddr)
            .unwrap_or(usize::MAX)
    };
    let a_laddr = format!("{}:{a_port}", lab.px_addr);
    for kind in ["connect", "ttfb"] {
        let found = recs.from(kind, &u_laddr);
        assert_eq!(found.len(), 1, "{kind} from {u_laddr}:\n{}", recs.dump());
        assert_eq!(
            found[0]["peer"], a,
            "{kind} must name client A (B is {b}): {}",
            found[0]
        );
        assert!(
            at(kind, &u_laddr) < at("response", &a_laddr),
            "{kind} before A's response:\n{}",
            recs.dump()
        );
        // And the client connection names the upstream one it was served by.
        assert_eq!(
            response(&lab, &recs, a_port)["peer"],
            found[0]["cookie"],
            "{}",
            found[0]
        );
    }
    let close = recs.from("close", &u_laddr);
    assert_eq!(close.len(), 1, "close from {u_laddr}:\n{}", recs.dump());
    assert!(close[0].get("connect_us").is_none(), "{}", close[0]);
    Ok(())
}

#[test]
fn an_upstream_connection_is_linked_to_its_client_when_two_threads_share_a_slot()
-> anyhow::Result<()> {
    require_root();
    let (lab, recs, words) = run_proxy("slot", 9102, 8092, SHARED_SLOT_PY)?;
    let [a_port, b_port, u_port, tid_a, tid_b] = &words[..] else {
        panic!("script output: {words:?}");
    };
    let (tid_a, tid_b): (u32, u32) = (tid_a.parse()?, tid_b.parse()?);
    assert!(
        tid_a != tid_b && tid_a % 16_384 == tid_b % 16_384,
        "threads {tid_a} and {tid_b} do not share a slot"
    );
    let (a, b) = (response(&lab, &recs, a_port), response(&lab, &recs, b_port));
    assert_eq!(a["tid"], tid_a, "{a}");
    let u_laddr = format!("{}:{u_port}", lab.px_addr);
    let close = recs.from("close", &u_laddr);
    assert_eq!(close.len(), 1, "close from {u_laddr}:\n{}", recs.dump());
    // B took the slot after A read client a; A's upstream connection still names a, and a's
    // response names the connection that served it.
    assert_eq!(
        close[0]["peer"], a["cookie"],
        "the upstream connection must name client a (b is {}): {}",
        b["cookie"], close[0]
    );
    assert_eq!(a["peer"], close[0]["cookie"], "{a}");
    Ok(())
}
