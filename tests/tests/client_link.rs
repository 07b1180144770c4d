//! The link from an upstream connection to the client whose request it carries, when the
//! kernel's per-thread memory of the last client read (`LAST_CLIENT`, a slot per thread id)
//! is shared by two threads: the one that takes the slot moves the other's entry aside, and
//! the other still finds its client there.

use tracer_tests::{Lab, TracerRun, require_root};

/// A proxy in Python whose thread A reads client a's request, then a thread B whose id
/// shares A's slot (16,384 apart) reads client b's, and only then A opens the upstream
/// connection for a. Prints the two clients' ports, the upstream connection's port and the
/// two thread ids.
const SHARED_SLOT_PY: &str = r#"
import ctypes, socket, subprocess, sys, threading
SLOTS = 16384
px, up_host, up_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctypes.CDLL(None).prctl(15, b"trc-proxy", 0, 0, 0)  # PR_SET_NAME; new threads inherit it
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((px, 9102))
ls.listen(8)
clients = subprocess.Popen([sys.executable, "-c", """
import socket, sys
cs = [socket.create_connection((sys.argv[1], 9102)) for _ in "ab"]
for c, path in zip(cs, "ab"):
    c.sendall(b"GET /%s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % path.encode())
for c in cs:
    c.recv(4096)
""", px])
a, _ = ls.accept()
b, _ = ls.accept()
if b"/a" not in a.recv(4096, socket.MSG_PEEK):
    a, b = b, a
tids = {}
a_read, b_read = threading.Event(), threading.Event()
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
    a_read.set()
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

#[test]
fn an_upstream_connection_is_linked_to_its_client_when_two_threads_share_a_slot()
-> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("slot")?;
    lab.upstream("ok", 8092, None)?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "trc-proxy"])?;
    let out = lab.run(
        &lab.px,
        &[
            "python3",
            "-c",
            SHARED_SLOT_PY,
            &lab.px_addr,
            &lab.up_addr,
            "8092",
        ],
    )?;
    let recs = tracer.stop()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let [a_port, b_port, u_port, tid_a, tid_b] = fields[..] else {
        panic!("script output: {out:?}");
    };
    let (tid_a, tid_b): (u32, u32) = (tid_a.parse()?, tid_b.parse()?);
    assert!(
        tid_a != tid_b && tid_a % 16_384 == tid_b % 16_384,
        "threads {tid_a} and {tid_b} do not share a slot"
    );
    let response = |port: &str| {
        let found = recs.to("response", &format!("{}:{port}", lab.px_addr));
        assert_eq!(found.len(), 1, "response to {port}:\n{}", recs.dump());
        found[0].clone()
    };
    let (a, b) = (response(a_port), response(b_port));
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
