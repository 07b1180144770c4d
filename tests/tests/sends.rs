//! Privileged tests of status lines on their way out: every write call a proxy answers with,
//! at both hooks the tracer reads sends at (`tp_btf/tcp_sendmsg_locked` where the kernel has
//! it, `tp_btf/sock_send_length` before 6.16 or with `--fallback-hooks`), and a write that the
//! kernel refuses with EAGAIN before it succeeds.

use serde_json::Value;
use tracer_tests::{Lab, Records, STATUS_CALLS_PY, TracerRun, require_root};

/// A hook the tracer reads sends at, chosen by its flags.
#[derive(Clone, Copy, Debug)]
struct SendHook(&'static str);

/// Both: the preferred one first, then the fallback, which `--fallback-hooks` forces.
const SEND_HOOKS: [SendHook; 2] = [
    SendHook("tp_btf/tcp_sendmsg_locked"),
    SendHook("tp_btf/sock_send_length"),
];

impl SendHook {
    fn args<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if self.0 == SEND_HOOKS[1].0 {
            all.push("--fallback-hooks");
        }
        all
    }

    /// The start record says that this hook, and no other, reads the sends.
    fn assert_attached(self, recs: &Records) {
        let start = recs.of_type("start").next().expect("a start record");
        let sends: Vec<&Value> = start["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| {
                h["feature"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("status lines")
            })
            .filter(|h| h["hook"].as_str().unwrap_or_default().contains("send"))
            .collect();
        assert_eq!(sends.len(), 1, "{start}");
        let name = sends[0]["hook"].as_str().unwrap_or_default();
        assert!(name.starts_with(self.0), "{name} attached, not {}", self.0);
        assert_eq!(sends[0]["attached"], true, "{start}");
    }
}

#[test]
fn status_lines_are_seen_through_every_read_and_write_call() -> anyhow::Result<()> {
    require_root();
    for hook in SEND_HOOKS {
        status_lines_through_every_call(hook)?;
    }
    Ok(())
}

/// Runs `status_calls.py` in a lab of its own (`tag`) under the tracer, watching python3 with
/// the `extra` flags, and checks that `hook` read the sends. Returns the lab (whose addresses
/// the records carry), the records and the script's output.
fn status_calls(
    tag: &str,
    hook: SendHook,
    extra: &[&str],
) -> anyhow::Result<(Lab, Records, String)> {
    let lab = Lab::new(tag)?;
    let mut args = vec!["--comm", "python3"];
    args.extend_from_slice(extra);
    let tracer = TracerRun::start(&lab.dir, &hook.args(&args))?;
    let out = lab.run(
        &lab.px,
        &["python3", "-c", STATUS_CALLS_PY, &lab.px_addr, "9000"],
    )?;
    let recs = tracer.stop()?;
    hook.assert_attached(&recs);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stdout.lines().count(), 4, "script output: {out:?}");
    Ok((lab, recs, stdout))
}

fn status_lines_through_every_call(hook: SendHook) -> anyhow::Result<()> {
    let (lab, recs, stdout) = status_calls("calls", hook, &[])?;
    let pairs: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for pair in pairs {
        let [port, write, read, status] = pair[..] else {
            panic!("bad script line {pair:?}");
        };
        let status: u64 = status.parse()?;
        let upstream = format!("{}:{port}", lab.px_addr);
        // The accepted end wrote the status line: a response to the client at `upstream`.
        let resp = recs.only_to("response", &upstream);
        assert_eq!(resp["via"], write, "{resp}");
        assert_eq!(resp["status"], status, "{resp}");
        assert_eq!(resp["role"], "client", "{resp}");
        // The connecting end read it: an upstream response on the socket bound to `upstream`.
        let got = recs.from("upstream_response", &upstream);
        assert_eq!(
            got.len(),
            1,
            "upstream_response of {upstream}:\n{}",
            recs.dump()
        );
        assert_eq!(got[0]["via"], read, "{}", got[0]);
        assert_eq!(got[0]["status"], status, "{}", got[0]);
        assert_eq!(got[0]["role"], "upstream", "{}", got[0]);
    }
    Ok(())
}

/// `--status-only` (the bench's configuration F, the floor of status capture) reads each
/// response's status line and traces nothing else: its measurements are of a program that
/// does that work. Its sockets are never forgotten (the program on socket destruction is
/// empty), so a new socket at a freed one's address carries the old one's addresses: only the
/// statuses are checked.
#[test]
fn status_only_writes_each_response_and_nothing_else() -> anyhow::Result<()> {
    require_root();
    for hook in SEND_HOOKS {
        let (_lab, recs, stdout) = status_calls("stonly", hook, &["--status-only"])?;
        let start = recs.of_type("start").next().expect("a start record");
        assert_eq!(start["status_only"], true, "{start}");
        let mut written: Vec<u64> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
            .collect();
        assert_eq!(written.len(), 4, "script output: {stdout}");
        let mut seen: Vec<u64> = recs
            .of_type("response")
            .map(|r| {
                assert_eq!(r["role"], "client", "{r}");
                r["status"].as_u64().unwrap_or(0)
            })
            .collect();
        written.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, written, "{hook:?}:\n{}", recs.dump());
        for kind in [
            "upstream_response",
            "ttfb",
            "connect_start",
            "connect",
            "close",
        ] {
            assert_eq!(recs.of_type(kind).count(), 0, "{hook:?} traced {kind}s");
        }
    }
    Ok(())
}

/// A watched server whose client does not read: it fills the connection's send buffer until a
/// send queues nothing (EAGAIN), tries its status line three times into the full buffer, then
/// lets the client read everything and sends the line for real. Prints the client's port and
/// how many of the status line's sends were refused with nothing queued.
const EAGAIN_PY: &str = r#"
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(1)
c = socket.create_connection((host, port))
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s, _ = ls.accept()
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
s.setblocking(False)
filler = b"x" * 1024
deadline = time.monotonic() + 10
while True:
    assert time.monotonic() < deadline, "the send buffer never filled"
    try:
        s.send(filler)
    except BlockingIOError:
        break
line = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
refused = 0
for _ in range(3):
    try:
        n = s.send(line)
        sys.exit("the full buffer took %d bytes of the status line" % n)
    except BlockingIOError:
        refused += 1
got = bytearray()
def drain():
    while not got.endswith(b"\r\n\r\n"):
        chunk = c.recv(65536)
        assert chunk, "the server closed"
        got.extend(chunk)
reader = threading.Thread(target=drain)
reader.start()
s.setblocking(True)
s.sendall(line)
reader.join(10)
assert got.endswith(line), got[-64:]
print(c.getsockname()[1], refused, flush=True)
c.close()
s.close()
"#;

/// A status line whose sends the kernel refused with EAGAIN, nothing queued, is reported once:
/// the preferred hook runs before the data is queued and sees every try, and must not report
/// the tries; the fallback runs after the send and sees only the one that succeeded.
#[test]
fn a_status_line_refused_with_eagain_and_sent_again_is_reported_once() -> anyhow::Result<()> {
    require_root();
    for hook in SEND_HOOKS {
        let lab = Lab::new("eagain")?;
        let tracer = TracerRun::start(&lab.dir, &hook.args(&["--comm", "python3"]))?;
        let out = lab.run(&lab.px, &["python3", "-c", EAGAIN_PY, &lab.px_addr, "9000"])?;
        let recs = tracer.stop()?;
        hook.assert_attached(&recs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let [port, refused] = stdout.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("bad script output: {out:?}");
        };
        assert_eq!(refused, "3", "{out:?}");
        let client = format!("{}:{port}", lab.px_addr);
        let resp = recs.only_to("response", &client);
        assert_eq!(resp["status"], 502, "{resp}");
        assert_eq!(resp["via"], "sendto", "{resp}");
    }
    Ok(())
}
