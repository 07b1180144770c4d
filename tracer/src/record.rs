//! Turns decoded events into trace records: one JSON object per line. The field names are the
//! public trace format (docs/trace-format.md); renaming one is a breaking change.

use serde_json::{Map, Value, json};
use tracer_common::event::{
    Exchange, FAIL_ABORTED, FAIL_ICMP, FAIL_RST, FAIL_SYSCALL, FAIL_TIMEOUT, ROLE_CLIENT,
    ROLE_UPSTREAM, VIA_READ, VIA_RECVFROM, VIA_SENDMSG, VIA_SENDTO, VIA_TLS, VIA_WRITE, VIA_WRITEV,
};

use crate::{
    clock::Clock,
    decode::{Event, Payload, addrs},
    names::{ReasonNames, errno_name, tcp_state_name},
};

/// What a record needs beyond the event: the clock and the kernel's enum names.
pub struct RecordContext {
    pub clock: Clock,
    pub names: ReasonNames,
}

/// The `type` of a record for an event.
pub fn type_name(p: &Payload) -> &'static str {
    match p {
        Payload::ConnectStart(_) => "connect_start",
        Payload::Connected(_) => "connect",
        Payload::ConnectFailed(_) => "connect_error",
        Payload::ResetReceived(_) => "reset_received",
        Payload::ResetSent(_) => "reset_sent",
        Payload::PeerClose(_) => "peer_close",
        Payload::Retransmit(_) => "retransmit",
        Payload::Drop(_) => "drop",
        Payload::Closed(_) => "close",
        Payload::FirstByte(_) => "ttfb",
        Payload::Accepted(_) => "accept",
        Payload::Response(_) => "response",
        Payload::UpstreamResponse(_) => "upstream_response",
        Payload::LocalClose(_) => "local_close",
    }
}

/// Microseconds with nanosecond precision, as a JSON number.
fn us(ns: u64) -> Value {
    json!(ns as f64 / 1000.0)
}

fn failure_cause(source: u8) -> &'static str {
    match source {
        FAIL_RST => "rst",
        FAIL_ICMP => "icmp",
        FAIL_TIMEOUT => "timeout",
        FAIL_ABORTED => "aborted",
        FAIL_SYSCALL => "syscall",
        _ => "other",
    }
}

fn exchange_fields(m: &mut Map<String, Value>, x: &Exchange) {
    m.insert(
        "awaiting_response".into(),
        (x.awaiting_response != 0).into(),
    );
    m.insert("requests".into(), x.requests.into());
    m.insert("idle_us".into(), us(x.idle_ns));
    m.insert("request_age_us".into(), us(x.request_age_ns));
    m.insert("bytes_received".into(), x.bytes_received.into());
}

fn via_name(via: u8) -> &'static str {
    match via {
        VIA_WRITE => "write",
        VIA_WRITEV => "writev",
        VIA_SENDTO => "sendto",
        VIA_SENDMSG => "sendmsg",
        VIA_READ => "read",
        VIA_RECVFROM => "recvfrom",
        VIA_TLS => "tls",
        _ => "other",
    }
}

/// The trimmed command name of a NUL-padded kernel `comm`.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// When an event happened (monotonic ns): connect() returns after the SYN went out, so a
/// `connect_start` is dated by its SYN.
pub fn event_time_ns(ev: &Event) -> u64 {
    match ev.payload {
        Payload::ConnectStart(p) if p.syn_ns != 0 => p.syn_ns,
        _ => ev.header.ts_ns,
    }
}

/// Builds the JSON record of an event.
pub fn event_record(ev: &Event, ctx: &RecordContext) -> Value {
    let h = &ev.header;
    let mut m = Map::new();
    m.insert("type".into(), type_name(&ev.payload).into());
    let ts = event_time_ns(ev);
    m.insert("time".into(), ctx.clock.rfc3339(ts).into());
    m.insert("pid".into(), h.tgid.into());
    m.insert("tid".into(), h.tid.into());
    m.insert("comm".into(), comm_str(&h.comm).into());
    let (l, r) = addrs(&h.tuple);
    m.insert("laddr".into(), l.to_string().into());
    m.insert("raddr".into(), r.to_string().into());
    let role = match h.role {
        ROLE_UPSTREAM => "upstream",
        ROLE_CLIENT => "client",
        _ => "unknown",
    };
    m.insert("role".into(), role.into());
    if h.cookie != 0 {
        m.insert("cookie".into(), h.cookie.into());
    }
    if h.peer != 0 {
        m.insert("peer".into(), h.peer.into());
    }
    match ev.payload {
        Payload::ConnectStart(_) => {}
        Payload::Connected(p) => {
            m.insert("latency_us".into(), us(p.latency_ns));
            m.insert("syn_retransmits".into(), p.syn_retransmits.into());
            m.insert("srtt_us".into(), p.srtt_us.into());
        }
        Payload::ConnectFailed(p) => {
            m.insert("errno".into(), p.errno.into());
            m.insert("error".into(), errno_name(p.errno).into());
            m.insert("cause".into(), failure_cause(p.source).into());
            m.insert("duration_us".into(), us(p.duration_ns));
            m.insert("syn_retransmits".into(), p.syn_retransmits.into());
        }
        Payload::ResetReceived(p) | Payload::ResetSent(p) => {
            m.insert("state".into(), tcp_state_name(p.state).into());
            if matches!(ev.payload, Payload::ResetSent(_)) {
                m.insert("reason".into(), ctx.names.reset(p.reason).into());
            }
            exchange_fields(&mut m, &p.exchange);
        }
        Payload::PeerClose(p) | Payload::LocalClose(p) => exchange_fields(&mut m, &p.exchange),
        Payload::Response(p) | Payload::UpstreamResponse(p) => {
            m.insert("status".into(), p.status.into());
            m.insert("via".into(), via_name(p.via).into());
        }
        Payload::Retransmit(p) => {
            m.insert("state".into(), tcp_state_name(p.state).into());
            m.insert("total".into(), p.total.into());
        }
        Payload::Drop(p) => {
            m.insert("reason".into(), ctx.names.drop(p.reason).into());
            let dir = if p.inbound != 0 {
                "inbound"
            } else {
                "outbound"
            };
            m.insert("direction".into(), dir.into());
            m.insert("location".into(), format!("{:#x}", p.location).into());
        }
        Payload::Closed(p) => {
            m.insert("state".into(), tcp_state_name(p.state).into());
            m.insert("duration_us".into(), us(p.duration_ns));
            m.insert("srtt_us".into(), p.srtt_us.into());
            m.insert("total_retrans".into(), p.total_retrans.into());
            m.insert("bytes_sent".into(), p.bytes_acked.into());
            m.insert("bytes_received".into(), p.bytes_received.into());
        }
        Payload::FirstByte(p) => {
            m.insert("ttfb_us".into(), us(p.ttfb_ns));
            m.insert("request_bytes".into(), p.request_bytes.into());
            m.insert("request_no".into(), p.request_no.into());
            m.insert("idle_us".into(), us(p.idle_ns));
        }
        Payload::Accepted(p) => {
            m.insert("fd".into(), p.fd.into());
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use tracer_common::event::{ConnectFailed, EventKind, Record, Reset};

    use super::*;
    use crate::decode::{
        decode,
        tests::{bytes_of, header},
    };

    fn ctx() -> RecordContext {
        RecordContext {
            clock: Clock::fixed(1_000_000_000),
            names: ReasonNames::new(&[("SK_RST_REASON_TCP_STATE".into(), 14)], &[]),
        }
    }

    #[test]
    fn connect_error_record() {
        let rec = Record {
            header: header(EventKind::ConnectFailed),
            payload: ConnectFailed {
                duration_ns: 312_500,
                errno: 111,
                syn_retransmits: 0,
                source: FAIL_RST,
                _pad: [0; 7],
            },
        };
        let v = event_record(&decode(&bytes_of(&rec)).unwrap(), &ctx());
        assert_eq!(v["type"], "connect_error");
        assert_eq!(v["time"], "1970-01-01T00:00:01.000001000Z");
        assert_eq!(v["pid"], 812);
        assert_eq!(v["comm"], "nginx");
        assert_eq!(v["laddr"], "10.0.0.1:40000");
        assert_eq!(v["raddr"], "10.0.0.5:8080");
        assert_eq!(v["role"], "upstream");
        assert_eq!(v["errno"], 111);
        assert_eq!(v["error"], "ECONNREFUSED");
        assert_eq!(v["cause"], "rst");
        assert_eq!(v["duration_us"], 312.5);
    }

    #[test]
    fn reset_sent_names_reason_and_state() {
        let rec = Record {
            header: header(EventKind::ResetSent),
            payload: Reset {
                reason: 14,
                state: 1,
                ..Default::default()
            },
        };
        let v = event_record(&decode(&bytes_of(&rec)).unwrap(), &ctx());
        assert_eq!(v["type"], "reset_sent");
        assert_eq!(v["reason"], "TCP_STATE");
        assert_eq!(v["state"], "ESTABLISHED");
        assert_eq!(v["awaiting_response"], false);
    }

    #[test]
    fn comm_is_trimmed_and_lossy() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&[b'a', 0xff, b'b', b'"']);
        assert_eq!(comm_str(&c), "a\u{fffd}b\"");
    }
}
