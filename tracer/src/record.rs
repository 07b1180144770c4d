//! Turns decoded events into trace records: one JSON object per line. The field names are the
//! public trace format (docs/trace-format.md); renaming one is a breaking change.

use serde_json::{Map, Value};
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

/// One field value of an event record.
#[derive(Debug, Clone)]
pub enum Field {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Static(&'static str),
    Text(String),
}

/// Microseconds with nanosecond precision, as a JSON number.
fn us(ns: u64) -> Field {
    Field::F64(ns as f64 / 1000.0)
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

/// The fields of an event record, at most this many.
const MAX_FIELDS: usize = 24;

/// The fields of one event record, in no particular order.
struct Fields(Vec<(&'static str, Field)>);

impl Fields {
    fn put(&mut self, key: &'static str, v: Field) {
        self.0.push((key, v));
    }
}

fn exchange_fields(m: &mut Fields, x: &Exchange) {
    m.put("awaiting_response", Field::Bool(x.awaiting_response != 0));
    m.put("requests", Field::U64(x.requests.into()));
    m.put("idle_us", us(x.idle_ns));
    m.put("request_age_us", us(x.request_age_ns));
    m.put("bytes_received", Field::U64(x.bytes_received));
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

/// Every field of an event's record: the one list both record writers below use.
fn event_fields(ev: &Event, ctx: &RecordContext) -> Fields {
    let h = &ev.header;
    let mut m = Fields(Vec::with_capacity(MAX_FIELDS));
    m.put("type", Field::Static(type_name(&ev.payload)));
    m.put("time", Field::Text(ctx.clock.rfc3339(event_time_ns(ev))));
    m.put("pid", Field::U64(h.tgid.into()));
    m.put("tid", Field::U64(h.tid.into()));
    m.put("comm", Field::Text(comm_str(&h.comm)));
    let (l, r) = addrs(&h.tuple);
    m.put("laddr", Field::Text(l.to_string()));
    m.put("raddr", Field::Text(r.to_string()));
    let role = match h.role {
        ROLE_UPSTREAM => "upstream",
        ROLE_CLIENT => "client",
        _ => "unknown",
    };
    m.put("role", Field::Static(role));
    if h.cookie != 0 {
        m.put("cookie", Field::U64(h.cookie));
    }
    if h.peer != 0 {
        m.put("peer", Field::U64(h.peer));
    }
    match ev.payload {
        Payload::ConnectStart(_) => {}
        Payload::Connected(p) => {
            m.put("latency_us", us(p.latency_ns));
            m.put("syn_retransmits", Field::U64(p.syn_retransmits.into()));
            m.put("srtt_us", Field::U64(p.srtt_us.into()));
        }
        Payload::ConnectFailed(p) => {
            m.put("errno", Field::I64(p.errno.into()));
            m.put("error", Field::Static(errno_name(p.errno)));
            m.put("cause", Field::Static(failure_cause(p.source)));
            m.put("duration_us", us(p.duration_ns));
            m.put("syn_retransmits", Field::U64(p.syn_retransmits.into()));
        }
        Payload::ResetReceived(p) | Payload::ResetSent(p) => {
            m.put("state", Field::Static(tcp_state_name(p.state)));
            if matches!(ev.payload, Payload::ResetSent(_)) {
                m.put("reason", Field::Text(ctx.names.reset(p.reason)));
            }
            exchange_fields(&mut m, &p.exchange);
        }
        Payload::PeerClose(p) | Payload::LocalClose(p) => exchange_fields(&mut m, &p.exchange),
        Payload::Response(p) | Payload::UpstreamResponse(p) => {
            m.put("status", Field::U64(p.status.into()));
            m.put("via", Field::Static(via_name(p.via)));
        }
        Payload::Retransmit(p) => {
            m.put("state", Field::Static(tcp_state_name(p.state)));
            m.put("total", Field::U64(p.total.into()));
        }
        Payload::Drop(p) => {
            m.put("reason", Field::Text(ctx.names.drop(p.reason)));
            let dir = if p.inbound != 0 {
                "inbound"
            } else {
                "outbound"
            };
            m.put("direction", Field::Static(dir));
            m.put("location", Field::Text(format!("{:#x}", p.location)));
        }
        Payload::Closed(p) => {
            m.put("state", Field::Static(tcp_state_name(p.state)));
            m.put("duration_us", us(p.duration_ns));
            m.put("srtt_us", Field::U64(p.srtt_us.into()));
            m.put("total_retrans", Field::U64(p.total_retrans.into()));
            m.put("bytes_sent", Field::U64(p.bytes_acked));
            m.put("bytes_received", Field::U64(p.bytes_received));
        }
        Payload::FirstByte(p) => {
            m.put("ttfb_us", us(p.ttfb_ns));
            m.put("request_bytes", Field::U64(p.request_bytes));
            m.put("request_no", Field::U64(p.request_no.into()));
            m.put("idle_us", us(p.idle_ns));
        }
        Payload::Accepted(p) => m.put("fd", Field::I64(p.fd.into())),
    }
    m
}

impl From<Field> for Value {
    fn from(f: Field) -> Self {
        match f {
            Field::U64(n) => n.into(),
            Field::I64(n) => n.into(),
            Field::F64(x) => x.into(),
            Field::Bool(b) => b.into(),
            Field::Static(s) => s.into(),
            Field::Text(s) => s.into(),
        }
    }
}

/// Builds the JSON record of an event.
pub fn event_record(ev: &Event, ctx: &RecordContext) -> Value {
    let m: Map<String, Value> = event_fields(ev, ctx)
        .0
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    Value::Object(m)
}

/// Writes the JSON record of an event to `out`, without its newline: the same text as
/// serialising [`event_record`] (keys in order), without building the map. This is the path
/// of every event, tens of thousands a second on a busy proxy.
pub fn write_event_record(ev: &Event, ctx: &RecordContext, out: &mut Vec<u8>) {
    let mut fields = event_fields(ev, ctx).0;
    fields.sort_unstable_by_key(|(k, _)| *k);
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        // serde_json writes single values without allocating, and exactly as in a map.
        let written = match value {
            Field::U64(n) => serde_json::to_writer(&mut *out, n),
            Field::I64(n) => serde_json::to_writer(&mut *out, n),
            Field::F64(x) => serde_json::to_writer(&mut *out, x),
            Field::Bool(b) => serde_json::to_writer(&mut *out, b),
            Field::Static(s) => serde_json::to_writer(&mut *out, s),
            Field::Text(s) => serde_json::to_writer(&mut *out, s),
        };
        // Writing to a Vec cannot fail, and these values always serialise.
        debug_assert!(written.is_ok());
    }
    out.push(b'}');
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

    /// The fast writer and the map give the same bytes, for every kind of event.
    #[test]
    fn written_records_equal_serialised_maps() {
        use tracer_common::event::*;
        let mut h = header(EventKind::Closed);
        h.peer = 77;
        let x = Exchange {
            requests: 3,
            awaiting_response: 1,
            idle_ns: 1_234_567,
            request_age_ns: 89,
            bytes_received: 4096,
            ..Default::default()
        };
        let payloads = [
            Payload::ConnectStart(ConnectStart { syn_ns: 5_000 }),
            Payload::Connected(Connected {
                latency_ns: 12_345,
                syn_retransmits: 1,
                srtt_us: 99,
            }),
            Payload::ConnectFailed(ConnectFailed {
                duration_ns: 1,
                errno: -3,
                syn_retransmits: 2,
                source: FAIL_ICMP,
                _pad: [0; 7],
            }),
            Payload::ResetReceived(Reset {
                state: 1,
                exchange: x,
                ..Default::default()
            }),
            Payload::ResetSent(Reset {
                state: 8,
                reason: 14,
                exchange: x,
                ..Default::default()
            }),
            Payload::PeerClose(PeerClose { exchange: x }),
            Payload::LocalClose(PeerClose { exchange: x }),
            Payload::Response(Response {
                status: 502,
                via: VIA_WRITEV,
                _pad: [0; 5],
            }),
            Payload::UpstreamResponse(Response {
                status: 503,
                via: VIA_READ,
                _pad: [0; 5],
            }),
            Payload::Retransmit(Retransmit {
                state: 2,
                total: 4,
                ..Default::default()
            }),
            Payload::Drop(Drop {
                reason: 6,
                inbound: 1,
                location: 0xffff_ffff_81fb_e3ff,
                ..Default::default()
            }),
            Payload::Closed(Closed {
                state: 7,
                duration_ns: 10_000_000_001,
                srtt_us: 5,
                total_retrans: 1,
                bytes_acked: 80,
                bytes_received: 1 << 40,
                ..Default::default()
            }),
            Payload::FirstByte(FirstByte {
                ttfb_ns: 400,
                request_bytes: 78,
                request_no: 2,
                idle_ns: 3,
                ..Default::default()
            }),
            Payload::Accepted(Accepted { fd: 7, _pad: 0 }),
        ];
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"ng\"x\\\n");
        for (i, payload) in payloads.into_iter().enumerate() {
            let mut ev = Event { header: h, payload };
            ev.header.cookie = i as u64; // 0: no cookie field
            if i % 2 == 1 {
                ev.header.comm = comm;
                ev.header.tuple.family = tracer_common::net::AF_INET6;
            }
            let mut fast = Vec::new();
            write_event_record(&ev, &ctx(), &mut fast);
            let slow = serde_json::to_vec(&event_record(&ev, &ctx())).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow),
                "{:?}",
                ev.payload
            );
        }
    }

    #[test]
    fn comm_is_trimmed_and_lossy() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&[b'a', 0xff, b'b', b'"']);
        assert_eq!(comm_str(&c), "a\u{fffd}b\"");
    }
}
