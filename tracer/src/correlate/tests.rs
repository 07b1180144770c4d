//! Recorded event sequences in, verdicts out.

use tracer_common::event::{
    ConnectFailed, EventHeader, EventKind, Exchange, FAIL_ABORTED, FAIL_RST, FAIL_SYSCALL,
    FirstByte, PeerClose, ROLE_CLIENT, ROLE_UPSTREAM, Reset, Response, Retransmit,
};

use super::*;

const MS: u64 = 1_000_000;
const NGINX: u32 = 812;

fn header(kind: EventKind, role: u8, cookie: u64, peer: u64, ts_ms: u64) -> EventHeader {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    let mut h = EventHeader {
        kind: kind as u16,
        role,
        ts_ns: 1_000_000 * MS + ts_ms * MS,
        tgid: NGINX,
        tid: NGINX,
        cookie,
        sock: cookie << 8,
        peer,
        comm,
        ..Default::default()
    };
    h.tuple.family = 2;
    h.tuple.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    h.tuple.raddr[..4].copy_from_slice(&[10, 0, 0, 5]);
    h.tuple.lport = 40000u16.wrapping_add(cookie as u16);
    h.tuple.rport = 8080;
    h
}

fn up(payload: Payload, cookie: u64, client: u64, ts_ms: u64) -> Event {
    let kind = Event {
        header: EventHeader::default(),
        payload,
    }
    .kind();
    Event {
        header: header(kind, ROLE_UPSTREAM, cookie, client, ts_ms),
        payload,
    }
}

fn response(status: u16, client: u64, ts_ms: u64) -> Event {
    let mut h = header(EventKind::Response, ROLE_CLIENT, client, 0, ts_ms);
    h.tuple.rport = 50000;
    Event {
        header: h,
        payload: Payload::Response(Response {
            status,
            via: 2,
            _pad: [0; 5],
        }),
    }
}

fn exchange(requests: u32, awaiting: bool, idle_ms: u64, age_ms: u64) -> Exchange {
    Exchange {
        requests,
        awaiting_response: awaiting as u8,
        idle_ns: idle_ms * MS,
        request_age_ns: age_ms * MS,
        ..Default::default()
    }
}

fn verdict(findings: Vec<Finding>) -> Verdict {
    match findings.into_iter().next() {
        Some(Finding::Verdict(v)) => *v,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

/// A response that may wait for its upstream: settle it at once if it is waiting.
fn answer(c: &mut Correlator, status: u16, client: u64, ts_ms: u64) -> Verdict {
    let r = response(status, client, ts_ms);
    let mut f = c.on_event(&r);
    if f.is_empty() {
        f = c.tick(r.header.ts_ns + SETTLE_NS);
    }
    verdict(f)
}

fn failed(errno: i32, source: u8, syn_retransmits: u32) -> Payload {
    Payload::ConnectFailed(ConnectFailed {
        errno,
        source,
        syn_retransmits,
        ..Default::default()
    })
}

#[test]
fn refused_connect_is_linked_to_its_client() {
    let mut c = Correlator::new();
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 100, 10));
    let v = answer(&mut c, 502, 100, 11);
    assert_eq!(v.cause, Cause::ConnectRefused);
    assert_eq!(v.matched_by, "link");
    assert!(v.confidence > 0.9);
    assert_eq!(v.upstream.unwrap().header.cookie, 7);
}

#[test]
fn concurrent_requests_get_their_own_upstream() {
    let mut c = Correlator::new();
    // Client 100's upstream is refused; client 200's upstream resets; both on one worker.
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 100, 10));
    let rst = Reset {
        state: 1,
        exchange: exchange(0, true, 0, 5),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(rst), 8, 200, 12));
    let a = answer(&mut c, 502, 200, 13);
    let b = answer(&mut c, 502, 100, 14);
    assert_eq!(a.cause, Cause::UpstreamReset);
    assert_eq!(b.cause, Cause::ConnectRefused);
}

#[test]
fn syn_timeouts_and_port_exhaustion_and_unreachable() {
    let mut c = Correlator::new();
    c.on_event(&up(failed(110, FAIL_ABORTED, 1), 7, 100, 10));
    assert_eq!(answer(&mut c, 504, 100, 1010).cause, Cause::ConnectTimeout);
    c.on_event(&up(failed(99, FAIL_SYSCALL, 0), 8, 101, 10));
    assert_eq!(answer(&mut c, 502, 101, 11).cause, Cause::PortExhaustion);
    c.on_event(&up(failed(113, 2, 0), 9, 102, 10));
    assert_eq!(answer(&mut c, 502, 102, 11).cause, Cause::HostUnreachable);
}

#[test]
fn reused_connection_reset_at_once_is_a_keepalive_race() {
    let mut c = Correlator::new();
    let rst = Reset {
        state: 1,
        exchange: exchange(1, true, 2500, 1),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(rst), 7, 100, 10));
    let v = answer(&mut c, 502, 100, 11);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.idle_at_reuse_ns, Some(2500 * MS));
}

#[test]
fn fin_before_response_is_upstream_closed_unless_reused() {
    let mut c = Correlator::new();
    let fin = PeerClose {
        exchange: exchange(0, true, 0, 3),
    };
    c.on_event(&up(Payload::PeerClose(fin), 7, 100, 10));
    assert_eq!(answer(&mut c, 502, 100, 11).cause, Cause::UpstreamClosed);
}

#[test]
fn proxy_giving_up_is_a_timeout_or_packet_loss() {
    let mut c = Correlator::new();
    let close = PeerClose {
        exchange: exchange(0, true, 0, 1000),
    };
    c.on_event(&up(Payload::LocalClose(close), 7, 100, 1010));
    let v = answer(&mut c, 504, 100, 1011);
    assert_eq!(v.cause, Cause::UpstreamTimeout);

    c.on_event(&up(
        Payload::Retransmit(Retransmit {
            state: 1,
            total: 1,
            ..Default::default()
        }),
        8,
        101,
        300,
    ));
    c.on_event(&up(Payload::LocalClose(close), 8, 101, 1010));
    let v = answer(&mut c, 504, 101, 1011);
    assert_eq!(v.cause, Cause::PacketLoss);
    assert_eq!(v.contributing, vec![Cause::UpstreamTimeout]);
}

#[test]
fn relayed_upstream_status_and_clean_upstreams() {
    let mut c = Correlator::new();
    let ur = Response {
        status: 502,
        via: 6,
        _pad: [0; 5],
    };
    c.on_event(&up(Payload::UpstreamResponse(ur), 7, 100, 10));
    assert_eq!(answer(&mut c, 502, 100, 11).cause, Cause::UpstreamStatus);
    // A clean exchange the proxy then rejected (invalid header): no network cause.
    c.on_event(&up(
        Payload::FirstByte(FirstByte {
            request_no: 1,
            ..Default::default()
        }),
        8,
        101,
        10,
    ));
    let v = answer(&mut c, 502, 101, 11);
    assert_eq!(v.cause, Cause::NoNetworkCause);
    assert_eq!(v.matched_by, "link");
}

#[test]
fn unlinked_response_falls_back_to_same_process_failure() {
    let mut c = Correlator::new();
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 0, 10));
    let v = answer(&mut c, 503, 555, 12);
    assert_eq!(v.cause, Cause::ConnectRefused);
    assert_eq!(v.matched_by, "process");
    assert!(v.confidence < 0.9);
    // Nothing at all: no network cause, low confidence, no upstream.
    let v = answer(&mut Correlator::new(), 502, 1, 10);
    assert_eq!(v.cause, Cause::NoNetworkCause);
    assert!(v.upstream.is_none());
}

#[test]
fn an_old_failure_does_not_explain_a_later_response_on_the_same_client() {
    let mut c = Correlator::new();
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 100, 10));
    assert_eq!(answer(&mut c, 502, 100, 11).cause, Cause::ConnectRefused);
    let v = answer(&mut c, 502, 100, 5000);
    assert_eq!(v.cause, Cause::NoNetworkCause);
}

#[test]
fn a_response_written_before_the_upstream_closes_waits_for_it() {
    let mut c = Correlator::new();
    // HAProxy: connect starts, the 503 is written, then the aborted connect is closed.
    c.on_event(&up(Payload::ConnectStart(Default::default()), 7, 100, 0));
    assert!(c.on_event(&response(503, 100, 1000)).is_empty());
    assert!(c.next_deadline().is_some());
    let v = verdict(c.on_event(&up(failed(110, FAIL_ABORTED, 0), 7, 100, 1000)));
    assert_eq!(v.cause, Cause::ConnectTimeout);
    assert!(c.next_deadline().is_none());
    // With nothing more to come, the wait ends at the deadline.
    c.on_event(&up(
        Payload::FirstByte(FirstByte {
            request_no: 1,
            ..Default::default()
        }),
        8,
        101,
        2000,
    ));
    let r = response(502, 101, 2001);
    assert!(c.on_event(&r).is_empty());
    assert!(c.tick(r.header.ts_ns + SETTLE_NS - 1).is_empty());
    let v = verdict(c.tick(r.header.ts_ns + SETTLE_NS));
    assert_eq!(v.cause, Cause::NoNetworkCause);
}

#[test]
fn the_upstream_idle_timeout_is_learned_from_its_closes() {
    let mut c = Correlator::new();
    // The upstream closed a connection idle for 1 s; the closed socket's addresses are gone.
    let fin = PeerClose {
        exchange: exchange(1, false, 1000, 0),
    };
    c.on_event(&up(Payload::PeerClose(fin), 7, 0, 10));
    let mut gone = up(Payload::Closed(Default::default()), 7, 0, 11);
    gone.header.tuple.rport = 0;
    c.on_event(&gone);
    let rst = Reset {
        state: 1,
        exchange: exchange(1, true, 20, 1),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(rst), 8, 100, 3000));
    let mut gone = up(Payload::Closed(Default::default()), 8, 100, 3001);
    gone.header.tuple.rport = 0;
    c.on_event(&gone);
    let v = answer(&mut c, 502, 100, 3002);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.upstream_idle_timeout_ns, Some(1000 * MS));
    assert_eq!(v.upstream.unwrap().header.tuple.rport, 8080);
}

/// The kernel holds a peer close that came with no request outstanding and writes it with
/// the connection's close: the correlator learns from it just the same.
#[test]
fn the_upstream_idle_timeout_is_learned_from_a_held_peer_close() {
    use tracer_common::{event::Closed, sock::HELD_PEER_CLOSE};
    let mut c = Correlator::new();
    let close = Closed {
        held: HELD_PEER_CLOSE,
        peer_idle_ns: 1000 * MS,
        peer_close_ns: 1_000_000 * MS + 10 * MS,
        requests: 1,
        ..Default::default()
    };
    c.on_event(&up(Payload::Closed(close), 7, 0, 11));
    let rst = Reset {
        state: 1,
        exchange: exchange(1, true, 20, 1),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(rst), 8, 100, 3000));
    let v = answer(&mut c, 502, 100, 3002);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.upstream_idle_timeout_ns, Some(1000 * MS));
    // A close that held no peer close teaches nothing.
    let mut c = Correlator::new();
    c.on_event(&up(Payload::Closed(Closed::default()), 7, 0, 11));
    c.on_event(&up(Payload::ResetReceived(rst), 8, 100, 3000));
    assert_eq!(
        answer(&mut c, 502, 100, 3002).upstream_idle_timeout_ns,
        None
    );
}

#[test]
fn a_silent_retry_is_reported() {
    let mut c = Correlator::new();
    let rst = Reset {
        state: 1,
        exchange: exchange(1, true, 2000, 1),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(rst), 7, 100, 10));
    let f = c.on_event(&up(
        Payload::FirstByte(FirstByte {
            request_no: 1,
            ..Default::default()
        }),
        8,
        100,
        12,
    ));
    assert!(matches!(f.as_slice(), [Finding::Retried(r)] if r.failure.header.cookie == 7));
}

#[test]
fn memory_is_bounded() {
    let mut c = Correlator::new();
    for i in 0..(MAX_CONNS as u64 + 100) {
        c.on_event(&up(failed(111, FAIL_RST, 0), i + 1, 0, 10));
    }
    assert!(c.conns() <= MAX_CONNS);
}

#[test]
fn log_only_responses_each_claim_their_own_failure() {
    use crate::source::accesslog::LogEntry;
    let mut c = Correlator::new();
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 100, 10));
    c.on_event(&up(failed(111, FAIL_RST, 0), 8, 101, 20));
    let line = LogEntry {
        status: 502,
        ..Default::default()
    };
    let now = 1_000_000 * MS + 500 * MS;
    let blamed: Vec<u64> = (0..2)
        .map(|_| match c.on_log(&line, now) {
            LogFinding::Verdict(v) => {
                assert_eq!(v.cause, Cause::ConnectRefused);
                assert_eq!(v.matched_by, "log");
                v.upstream.expect("an upstream").header.cookie
            }
            other => panic!("expected a verdict, got {other:?}"),
        })
        .collect();
    assert_eq!(blamed, vec![8, 7]);
    // A third line finds no unexplained failure left.
    let LogFinding::Verdict(v) = c.on_log(&line, now) else {
        panic!("expected a verdict")
    };
    assert_eq!(v.cause, Cause::NoNetworkCause);
}

#[test]
fn a_log_line_is_linked_to_the_kernel_verdict_it_describes() {
    use crate::source::accesslog::LogEntry;
    let mut c = Correlator::new();
    c.on_event(&up(failed(111, FAIL_RST, 0), 7, 100, 10));
    let r = response(502, 100, 11);
    verdict(c.on_event(&r));
    let line = LogEntry {
        status: 502,
        client_ip: Some("10.0.0.5".parse().unwrap()),
        ..Default::default()
    };
    match c.on_log(&line, r.header.ts_ns + 300 * MS) {
        LogFinding::Matched { verdict_ns, cause } => {
            assert_eq!(verdict_ns, r.header.ts_ns);
            assert_eq!(cause, "connect_refused");
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

#[test]
fn memory_stays_bounded_under_healthy_traffic() {
    use tracer_common::event::{Closed, Connected};
    let mut c = Correlator::new();
    // 100,000 short healthy connections, 10 per millisecond of event time.
    for i in 0..100_000u64 {
        let (cookie, client, t) = (i + 1, 1_000_000 + i, i / 10);
        c.on_event(&up(
            Payload::Connected(Connected::default()),
            cookie,
            client,
            t,
        ));
        c.on_event(&up(
            Payload::FirstByte(FirstByte {
                request_no: 1,
                ..Default::default()
            }),
            cookie,
            client,
            t,
        ));
        c.on_event(&up(Payload::Closed(Closed::default()), cookie, client, t));
    }
    // At 10,000 connections/s, the last 2 s of healthy connections at most.
    assert!(c.conns() <= 21_000, "{} connections remembered", c.conns());
    // One keep-alive connection serving 10,000 requests keeps one first byte, and its failure.
    for n in 0..10_000u64 {
        c.on_event(&up(
            Payload::FirstByte(FirstByte {
                request_no: n as u32 + 1,
                ..Default::default()
            }),
            7,
            8,
            20_000 + n,
        ));
    }
    let reset = Reset {
        exchange: exchange(10_000, true, 0, 1),
        ..Default::default()
    };
    c.on_event(&up(Payload::ResetReceived(reset), 7, 8, 30_001));
    let conn = c.conns.get(&7).expect("kept");
    assert_eq!(conn.evidence.len(), 2, "{:?}", conn.evidence);
}
