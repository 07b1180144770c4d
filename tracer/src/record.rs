//! Turns decoded events into trace records: one JSON object per line. The field names are the
//! public trace format (docs/trace-format.md); renaming one is a breaking change.

use serde_json::{Map, Value};
use tracer_common::event::{
    Exchange, FAIL_ABORTED, FAIL_ICMP, FAIL_RST, FAIL_SYSCALL, FAIL_TIMEOUT, ROLE_CLIENT,
    ROLE_UPSTREAM, TTFB_RETRY, TTFB_SAMPLE, TTFB_STATUS, VIA_READ, VIA_READV, VIA_RECVFROM,
    VIA_RECVMSG, VIA_SENDMSG, VIA_SENDTO, VIA_TLS, VIA_WRITE, VIA_WRITEV,
};
use tracer_common::sock::{HELD_CONNECT, HELD_PEER_CLOSE, HELD_TTFB};

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
        Payload::FirstByteSummary(_) => "ttfb_summary",
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
    /// An address, written `ip:port` (nothing in it needs escaping).
    Addr(std::net::SocketAddr),
    /// A kernel `comm`, NUL-padded, possibly not UTF-8.
    Comm([u8; 16]),
    /// A monotonic timestamp, written as RFC 3339 wall-clock time.
    Time(u64),
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

/// The keys of event records, declared in the byte order of their names, which is the order
/// serde_json's map writes them in: sorting fields by key is then an integer sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Key {
    AwaitingResponse,
    BytesReceived,
    BytesSent,
    Cause,
    Comm,
    ConnectUs,
    Cookie,
    Direction,
    DurationUs,
    Errno,
    Error,
    IdleMaxUs,
    IdleUs,
    Laddr,
    LatencyUs,
    Location,
    Peer,
    PeerCloseIdleUs,
    Pid,
    Raddr,
    Reason,
    RequestAgeUs,
    RequestBytes,
    RequestNo,
    Requests,
    Role,
    Since,
    SrttUs,
    State,
    Status,
    SynRetransmits,
    Tid,
    Time,
    Total,
    TotalRetrans,
    TtfbMaxUs,
    TtfbMeanUs,
    TtfbMinUs,
    TtfbUs,
    Type,
    Via,
    Why,
}

impl Key {
    /// The key as written.
    fn name(self) -> &'static str {
        match self {
            Key::AwaitingResponse => "awaiting_response",
            Key::BytesReceived => "bytes_received",
            Key::BytesSent => "bytes_sent",
            Key::Cause => "cause",
            Key::Comm => "comm",
            Key::ConnectUs => "connect_us",
            Key::Cookie => "cookie",
            Key::Direction => "direction",
            Key::DurationUs => "duration_us",
            Key::Errno => "errno",
            Key::Error => "error",
            Key::IdleMaxUs => "idle_max_us",
            Key::IdleUs => "idle_us",
            Key::Laddr => "laddr",
            Key::LatencyUs => "latency_us",
            Key::Location => "location",
            Key::Peer => "peer",
            Key::PeerCloseIdleUs => "peer_close_idle_us",
            Key::Pid => "pid",
            Key::Raddr => "raddr",
            Key::Reason => "reason",
            Key::RequestAgeUs => "request_age_us",
            Key::RequestBytes => "request_bytes",
            Key::RequestNo => "request_no",
            Key::Requests => "requests",
            Key::Role => "role",
            Key::Since => "since",
            Key::SrttUs => "srtt_us",
            Key::State => "state",
            Key::Status => "status",
            Key::SynRetransmits => "syn_retransmits",
            Key::Tid => "tid",
            Key::Time => "time",
            Key::Total => "total",
            Key::TotalRetrans => "total_retrans",
            Key::TtfbMaxUs => "ttfb_max_us",
            Key::TtfbMeanUs => "ttfb_mean_us",
            Key::TtfbMinUs => "ttfb_min_us",
            Key::TtfbUs => "ttfb_us",
            Key::Type => "type",
            Key::Via => "via",
            Key::Why => "why",
        }
    }
}

/// Every key, in declaration (and so name) order: `KEYS[k as usize] == k`.
const KEYS: [Key; 42] = [
    Key::AwaitingResponse,
    Key::BytesReceived,
    Key::BytesSent,
    Key::Cause,
    Key::Comm,
    Key::ConnectUs,
    Key::Cookie,
    Key::Direction,
    Key::DurationUs,
    Key::Errno,
    Key::Error,
    Key::IdleMaxUs,
    Key::IdleUs,
    Key::Laddr,
    Key::LatencyUs,
    Key::Location,
    Key::Peer,
    Key::PeerCloseIdleUs,
    Key::Pid,
    Key::Raddr,
    Key::Reason,
    Key::RequestAgeUs,
    Key::RequestBytes,
    Key::RequestNo,
    Key::Requests,
    Key::Role,
    Key::Since,
    Key::SrttUs,
    Key::State,
    Key::Status,
    Key::SynRetransmits,
    Key::Tid,
    Key::Time,
    Key::Total,
    Key::TotalRetrans,
    Key::TtfbMaxUs,
    Key::TtfbMeanUs,
    Key::TtfbMinUs,
    Key::TtfbUs,
    Key::Type,
    Key::Via,
    Key::Why,
];

/// The fields of one event record, one slot per key: reading the slots in order gives the
/// fields in key order, with no sort and no allocation.
struct Fields([Option<Field>; KEYS.len()]);

impl Fields {
    fn new() -> Self {
        Self([const { None }; KEYS.len()])
    }

    fn put(&mut self, key: Key, v: Field) {
        self.0[key as usize] = Some(v);
    }

    /// The fields that were set, in key order.
    fn into_iter(self) -> impl Iterator<Item = (Key, Field)> {
        KEYS.into_iter()
            .zip(self.0)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// The fields that were set, in key order.
    fn iter(&self) -> impl Iterator<Item = (Key, &Field)> {
        KEYS.iter()
            .zip(&self.0)
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
    }
}

fn exchange_fields(m: &mut Fields, x: &Exchange) {
    m.put(Key::AwaitingResponse, Field::Bool(x.awaiting_response != 0));
    m.put(Key::Requests, Field::U64(x.requests.into()));
    m.put(Key::IdleUs, us(x.idle_ns));
    m.put(Key::RequestAgeUs, us(x.request_age_ns));
    m.put(Key::BytesReceived, Field::U64(x.bytes_received));
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
        VIA_READV => "readv",
        VIA_RECVMSG => "recvmsg",
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
    let mut m = Fields::new();
    m.put(Key::Type, Field::Static(type_name(&ev.payload)));
    m.put(Key::Time, Field::Time(event_time_ns(ev)));
    m.put(Key::Pid, Field::U64(h.tgid.into()));
    m.put(Key::Tid, Field::U64(h.tid.into()));
    m.put(Key::Comm, Field::Comm(h.comm));
    let (l, r) = addrs(&h.tuple);
    m.put(Key::Laddr, Field::Addr(l));
    m.put(Key::Raddr, Field::Addr(r));
    let role = match h.role {
        ROLE_UPSTREAM => "upstream",
        ROLE_CLIENT => "client",
        _ => "unknown",
    };
    m.put(Key::Role, Field::Static(role));
    if h.cookie != 0 {
        m.put(Key::Cookie, Field::U64(h.cookie));
    }
    if h.peer != 0 {
        m.put(Key::Peer, Field::U64(h.peer));
    }
    match ev.payload {
        Payload::ConnectStart(_) | Payload::Accepted(_) => {}
        Payload::Connected(p) => {
            m.put(Key::LatencyUs, us(p.latency_ns));
            m.put(Key::SynRetransmits, Field::U64(p.syn_retransmits.into()));
            m.put(Key::SrttUs, Field::U64(p.srtt_us.into()));
        }
        Payload::ConnectFailed(p) => {
            m.put(Key::Errno, Field::I64(p.errno.into()));
            m.put(Key::Error, Field::Static(errno_name(p.errno)));
            m.put(Key::Cause, Field::Static(failure_cause(p.source)));
            m.put(Key::DurationUs, us(p.duration_ns));
            m.put(Key::SynRetransmits, Field::U64(p.syn_retransmits.into()));
        }
        Payload::ResetReceived(p) | Payload::ResetSent(p) => {
            m.put(Key::State, Field::Static(tcp_state_name(p.state)));
            if matches!(ev.payload, Payload::ResetSent(_)) {
                m.put(Key::Reason, Field::Text(ctx.names.reset(p.reason)));
            }
            exchange_fields(&mut m, &p.exchange);
        }
        Payload::PeerClose(p) | Payload::LocalClose(p) => exchange_fields(&mut m, &p.exchange),
        Payload::Response(p) | Payload::UpstreamResponse(p) => {
            m.put(Key::Status, Field::U64(p.status.into()));
            m.put(Key::Via, Field::Static(via_name(p.via)));
        }
        Payload::Retransmit(p) => {
            m.put(Key::State, Field::Static(tcp_state_name(p.state)));
            m.put(Key::Total, Field::U64(p.total.into()));
        }
        Payload::Drop(p) => {
            m.put(Key::Reason, Field::Text(ctx.names.drop(p.reason)));
            let dir = if p.inbound != 0 {
                "inbound"
            } else {
                "outbound"
            };
            m.put(Key::Direction, Field::Static(dir));
            m.put(Key::Location, Field::Text(format!("{:#x}", p.location)));
        }
        Payload::Closed(p) => {
            m.put(Key::State, Field::Static(tcp_state_name(p.state)));
            m.put(Key::DurationUs, us(p.duration_ns));
            m.put(Key::SrttUs, Field::U64(p.srtt_us.into()));
            m.put(Key::TotalRetrans, Field::U64(p.total_retrans.into()));
            m.put(Key::BytesSent, Field::U64(p.bytes_acked));
            m.put(Key::BytesReceived, Field::U64(p.bytes_received));
            if h.role == ROLE_UPSTREAM {
                m.put(Key::Requests, Field::U64(p.requests.into()));
            }
            // What the connection's held records would have said (trace-format.md, `close`).
            if p.held & HELD_CONNECT != 0 {
                m.put(Key::ConnectUs, us(p.connect_latency_ns));
            }
            if p.held & HELD_TTFB != 0 {
                m.put(Key::TtfbUs, us(p.ttfb_ns));
                m.put(Key::RequestBytes, Field::U64(p.request_bytes));
            }
            if p.held & HELD_PEER_CLOSE != 0 {
                m.put(Key::PeerCloseIdleUs, us(p.peer_idle_ns));
            }
        }
        Payload::FirstByte(p) => {
            m.put(Key::TtfbUs, us(p.ttfb_ns));
            m.put(Key::RequestBytes, Field::U64(p.request_bytes));
            m.put(Key::RequestNo, Field::U64(p.request_no.into()));
            m.put(Key::IdleUs, us(p.idle_ns));
            m.put(Key::Why, Field::Static(ttfb_why(p.why)));
        }
        Payload::FirstByteSummary(p) => {
            let n = u64::from(p.requests.max(1));
            m.put(Key::Since, Field::Time(p.since_ns));
            m.put(Key::Requests, Field::U64(p.requests.into()));
            m.put(Key::RequestNo, Field::U64(p.last_request_no.into()));
            m.put(Key::TtfbMeanUs, us(p.ttfb_sum_ns / n));
            m.put(Key::TtfbMinUs, us(p.ttfb_min_ns));
            m.put(Key::TtfbMaxUs, us(p.ttfb_max_ns));
            m.put(Key::IdleMaxUs, us(p.idle_max_ns));
        }
    }
    m
}

/// Why a request has a `ttfb` record of its own.
fn ttfb_why(why: u32) -> &'static str {
    match why {
        TTFB_SAMPLE => "sample",
        TTFB_RETRY => "retry",
        TTFB_STATUS => "status",
        _ => "other",
    }
}

impl Field {
    fn into_value(self, ctx: &RecordContext) -> Value {
        match self {
            Field::U64(n) => n.into(),
            Field::I64(n) => n.into(),
            Field::F64(x) => x.into(),
            Field::Bool(b) => b.into(),
            Field::Static(s) => s.into(),
            Field::Text(s) => s.into(),
            Field::Addr(a) => a.to_string().into(),
            Field::Comm(c) => comm_str(&c).into(),
            Field::Time(t) => ctx.clock.rfc3339(t).into(),
        }
    }
}

/// Appends a decimal number.
fn write_decimal(out: &mut Vec<u8>, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `ip:port` as `SocketAddr`'s `Display` writes it, IPv4 without the formatter.
fn write_addr(out: &mut Vec<u8>, a: &std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(out, octet.into());
            }
            out.push(b':');
            write_decimal(out, v4.port().into());
        }
        v6 => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Builds the JSON record of an event.
pub fn event_record(ev: &Event, ctx: &RecordContext) -> Value {
    let m: Map<String, Value> = event_fields(ev, ctx)
        .into_iter()
        .map(|(k, v)| (k.name().to_string(), v.into_value(ctx)))
        .collect();
    Value::Object(m)
}

/// Writes the JSON record of an event to `out`, without its newline: the same text as
/// serialising [`event_record`] (keys in order), without building the map. This is the path
/// of every event, tens of thousands a second on a busy proxy.
pub fn write_event_record(ev: &Event, ctx: &RecordContext, out: &mut Vec<u8>) {
    let fields = event_fields(ev, ctx);
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.name().as_bytes());
        out.extend_from_slice(b"\":");
        // serde_json writes single values without allocating, and exactly as in a map.
        let written = match value {
            Field::U64(n) => serde_json::to_writer(&mut *out, n),
            Field::I64(n) => serde_json::to_writer(&mut *out, n),
            Field::F64(x) => serde_json::to_writer(&mut *out, x),
            Field::Bool(b) => serde_json::to_writer(&mut *out, b),
            Field::Static(s) => serde_json::to_writer(&mut *out, s),
            Field::Text(s) => serde_json::to_writer(&mut *out, s),
            Field::Addr(a) => {
                out.push(b'"');
                write_addr(out, a);
                out.push(b'"');
                Ok(())
            }
            Field::Comm(c) => {
                let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&c[..end]))
            }
            Field::Time(t) => {
                out.push(b'"');
                crate::clock::write_rfc3339(out, ctx.clock.wall_ns(*t));
                out.push(b'"');
                Ok(())
            }
        };
        // Writing to a Vec cannot fail, and these values always serialise.
        debug_assert!(written.is_ok());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use tracer_common::event::{Closed, ConnectFailed, EventKind, Record, Reset};

    use super::*;

    #[test]
    fn keys_are_listed_in_declaration_and_name_order() {
        for (i, k) in KEYS.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        for pair in KEYS.windows(2) {
            assert!(pair[0].name() < pair[1].name(), "{pair:?}");
        }
    }
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

    /// A close carries what the connection's held records would have said, and nothing of
    /// those it did not hold.
    #[test]
    fn a_close_carries_its_held_records() {
        let close = |held: u8| Record {
            header: header(EventKind::Closed),
            payload: Closed {
                held,
                requests: 1,
                connect_latency_ns: 61_250,
                ttfb_ns: 811_005,
                request_bytes: 77,
                peer_idle_ns: 2_000,
                ..Default::default()
            },
        };
        let all = HELD_CONNECT | HELD_TTFB | HELD_PEER_CLOSE;
        let v = event_record(&decode(&bytes_of(&close(all))).unwrap(), &ctx());
        assert_eq!(v["type"], "close");
        assert_eq!(v["requests"], 1);
        assert_eq!(v["connect_us"], 61.25);
        assert_eq!(v["ttfb_us"], 811.005);
        assert_eq!(v["request_bytes"], 77);
        assert_eq!(v["peer_close_idle_us"], 2.0);
        let v = event_record(&decode(&bytes_of(&close(HELD_TTFB))).unwrap(), &ctx());
        assert_eq!(v["ttfb_us"], 811.005);
        for absent in ["connect_us", "peer_close_idle_us"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        let v = event_record(&decode(&bytes_of(&close(0))).unwrap(), &ctx());
        for absent in [
            "connect_us",
            "ttfb_us",
            "request_bytes",
            "peer_close_idle_us",
        ] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        // A client connection counts no requests.
        let mut client = close(0);
        client.header.role = tracer_common::event::ROLE_CLIENT;
        let v = event_record(&decode(&bytes_of(&client)).unwrap(), &ctx());
        assert!(v.get("requests").is_none(), "{v}");
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
            Payload::Closed(Closed {
                state: 9,
                held: HELD_CONNECT | HELD_TTFB | HELD_PEER_CLOSE,
                requests: 1,
                connect_latency_ns: 61_250,
                ttfb_ns: 811_005,
                request_bytes: 77,
                peer_idle_ns: 2,
                ..Default::default()
            }),
            Payload::FirstByte(FirstByte {
                ttfb_ns: 400,
                request_bytes: 78,
                request_no: 2,
                idle_ns: 3,
                ..Default::default()
            }),
            Payload::Accepted(Accepted::default()),
            Payload::FirstByteSummary(FirstByteSummary {
                since_ns: 1_000,
                ttfb_sum_ns: 9_000,
                ttfb_min_ns: 1_000,
                ttfb_max_ns: 5_000,
                idle_max_ns: 70,
                requests: 3,
                last_request_no: 17,
            }),
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
    fn keys_are_declared_in_name_order() {
        let mut k = Key::AwaitingResponse;
        let all: Vec<Key> = (0..=Key::Why as u8)
            .map(|i| {
                // SAFETY: Key is a fieldless enum with discriminants 0..=Why.
                unsafe { std::mem::transmute::<u8, Key>(i) }
            })
            .collect();
        for next in &all[1..] {
            assert!(k.name() < next.name(), "{:?} before {:?}", k, next);
            k = *next;
        }
        let a: std::net::SocketAddr = "10.0.255.1:65535".parse().unwrap();
        let mut out = Vec::new();
        write_addr(&mut out, &a);
        assert_eq!(out, b"10.0.255.1:65535");
    }

    #[test]
    fn comm_is_trimmed_and_lossy() {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&[b'a', 0xff, b'b', b'"']);
        assert_eq!(comm_str(&c), "a\u{fffd}b\"");
    }
}
