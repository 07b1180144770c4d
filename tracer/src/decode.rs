//! Turns ring buffer bytes into typed events. One function, [`decode`], from bytes to [`Event`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::{
    event::{
        Accepted, Closed, ConnectFailed, ConnectStart, Connected, Drop, EventHeader, EventKind,
        FirstByte, FirstByteSummary, PeerClose, Reset, Response, Retransmit,
    },
    net::{AF_INET6, SockTuple},
};

/// Why a ring buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its header or payload claims.
    #[error("event record of {len} bytes is too short for {what} ({need} bytes)")]
    Short {
        len: usize,
        need: usize,
        what: &'static str,
    },
    /// The kind field holds a value this build does not know (kernel object and binary differ).
    #[error("unknown event kind {0}: the kernel programs and the tracer binary do not match")]
    UnknownKind(u16),
}

/// The payload of an event, by kind.
#[derive(Debug, Clone, Copy)]
pub enum Payload {
    ConnectStart(ConnectStart),
    Connected(Connected),
    ConnectFailed(ConnectFailed),
    ResetReceived(Reset),
    ResetSent(Reset),
    PeerClose(PeerClose),
    Retransmit(Retransmit),
    Drop(Drop),
    Closed(Closed),
    FirstByte(FirstByte),
    FirstByteSummary(FirstByteSummary),
    Accepted(Accepted),
    Response(Response),
    UpstreamResponse(Response),
    LocalClose(PeerClose),
}

/// A decoded kernel event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub header: EventHeader,
    pub payload: Payload,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }
}

impl Payload {
    /// The kind of event this payload belongs to.
    pub fn kind(&self) -> EventKind {
        match self {
            Payload::ConnectStart(_) => EventKind::ConnectStart,
            Payload::Connected(_) => EventKind::Connected,
            Payload::ConnectFailed(_) => EventKind::ConnectFailed,
            Payload::ResetReceived(_) => EventKind::ResetReceived,
            Payload::ResetSent(_) => EventKind::ResetSent,
            Payload::PeerClose(_) => EventKind::PeerClose,
            Payload::Retransmit(_) => EventKind::Retransmit,
            Payload::Drop(_) => EventKind::Drop,
            Payload::Closed(_) => EventKind::Closed,
            Payload::FirstByte(_) => EventKind::FirstByte,
            Payload::FirstByteSummary(_) => EventKind::FirstByteSummary,
            Payload::Accepted(_) => EventKind::Accepted,
            Payload::Response(_) => EventKind::Response,
            Payload::UpstreamResponse(_) => EventKind::UpstreamResponse,
            Payload::LocalClose(_) => EventKind::LocalClose,
        }
    }
}

/// Reads a plain-old-data value from the start of `bytes`.
fn read_pod<T: aya::Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
            what,
        });
    }
    // SAFETY: `T: Pod` accepts any bit pattern and the slice holds at least size_of::<T>()
    // bytes; read_unaligned copes with the slice's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(bytes, "the event header")?;
    let rest = &bytes[size_of::<EventHeader>()..];
    let kind = EventKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let payload = match kind {
        EventKind::ConnectStart => Payload::ConnectStart(read_pod(rest, "connect_start")?),
        EventKind::Connected => Payload::Connected(read_pod(rest, "connect")?),
        EventKind::ConnectFailed => Payload::ConnectFailed(read_pod(rest, "connect_error")?),
        EventKind::ResetReceived => Payload::ResetReceived(read_pod(rest, "reset_received")?),
        EventKind::ResetSent => Payload::ResetSent(read_pod(rest, "reset_sent")?),
        EventKind::PeerClose => Payload::PeerClose(read_pod(rest, "peer_close")?),
        EventKind::Retransmit => Payload::Retransmit(read_pod(rest, "retransmit")?),
        EventKind::Drop => Payload::Drop(read_pod(rest, "drop")?),
        EventKind::Closed => Payload::Closed(read_pod(rest, "close")?),
        EventKind::FirstByte => Payload::FirstByte(read_pod(rest, "first_byte")?),
        EventKind::FirstByteSummary => Payload::FirstByteSummary(read_pod(rest, "ttfb_summary")?),
        EventKind::Accepted => Payload::Accepted(read_pod(rest, "accept")?),
        EventKind::Response => Payload::Response(read_pod(rest, "response")?),
        EventKind::UpstreamResponse => {
            Payload::UpstreamResponse(read_pod(rest, "upstream_response")?)
        }
        EventKind::LocalClose => Payload::LocalClose(read_pod(rest, "local_close")?),
    };
    Ok(Event { header, payload })
}

/// The local and remote socket addresses of a tuple (IPv4 when the family is not AF_INET6).
pub fn addrs(t: &SockTuple) -> (SocketAddr, SocketAddr) {
    let ip = |b: &[u8; 16]| -> IpAddr {
        if t.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(*b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    (
        SocketAddr::new(ip(&t.laddr), t.lport),
        SocketAddr::new(ip(&t.raddr), t.rport),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use tracer_common::{
        event::{ROLE_UPSTREAM, Record},
        net::AF_INET,
    };

    use super::*;

    /// The bytes the kernel would write for a record.
    pub(crate) fn bytes_of<P: aya::Pod>(r: &Record<P>) -> Vec<u8> {
        // SAFETY: Record<P> is Pod: every byte is initialised and meaningful.
        unsafe {
            std::slice::from_raw_parts((r as *const Record<P>).cast::<u8>(), size_of::<Record<P>>())
        }
        .to_vec()
    }

    pub(crate) fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        EventHeader {
            kind: kind as u16,
            role: ROLE_UPSTREAM,
            ts_ns: 1_000,
            tgid: 812,
            tid: 813,
            cookie: 42,
            sock: 0xffff_8880_0000_1000,
            comm,
            tuple: SockTuple {
                family: AF_INET,
                lport: 40000,
                rport: 8080,
                laddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                raddr: [10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn connect_failed_round_trips() {
        let rec = Record {
            header: header(EventKind::ConnectFailed),
            payload: ConnectFailed {
                duration_ns: 300_000,
                errno: 111,
                syn_retransmits: 0,
                source: 1,
                _pad: [0; 7],
            },
        };
        let ev = decode(&bytes_of(&rec)).unwrap();
        assert_eq!(ev.kind(), EventKind::ConnectFailed);
        assert_eq!(ev.header.tgid, 812);
        let Payload::ConnectFailed(p) = ev.payload else {
            panic!("wrong payload {:?}", ev.payload)
        };
        assert_eq!(p.errno, 111);
        assert_eq!(p.duration_ns, 300_000);
        let (l, r) = addrs(&ev.header.tuple);
        assert_eq!(l.to_string(), "10.0.0.1:40000");
        assert_eq!(r.to_string(), "10.0.0.5:8080");
    }

    #[test]
    fn every_kind_round_trips() {
        let cases: Vec<Vec<u8>> = vec![
            bytes_of(&Record {
                header: header(EventKind::ConnectStart),
                payload: ConnectStart::default(),
            }),
            bytes_of(&Record {
                header: header(EventKind::Connected),
                payload: Connected {
                    latency_ns: 5,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::ResetReceived),
                payload: Reset {
                    state: 1,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::ResetSent),
                payload: Reset {
                    reason: 14,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::PeerClose),
                payload: PeerClose::default(),
            }),
            bytes_of(&Record {
                header: header(EventKind::Retransmit),
                payload: Retransmit {
                    total: 3,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::Drop),
                payload: Drop {
                    reason: 12,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::Closed),
                payload: Closed {
                    srtt_us: 77,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::FirstByte),
                payload: FirstByte {
                    ttfb_ns: 9,
                    ..Default::default()
                },
            }),
            bytes_of(&Record {
                header: header(EventKind::Accepted),
                payload: Accepted::default(),
            }),
            bytes_of(&Record {
                header: header(EventKind::FirstByteSummary),
                payload: FirstByteSummary {
                    requests: 4,
                    ..Default::default()
                },
            }),
        ];
        for bytes in cases {
            let kind = u16::from_ne_bytes([bytes[0], bytes[1]]);
            let ev = decode(&bytes).unwrap();
            assert_eq!(ev.kind() as u16, kind);
        }
    }

    #[test]
    fn ipv6_addresses_decode() {
        let mut h = header(EventKind::Connected);
        h.tuple.family = AF_INET6;
        h.tuple.raddr = "fd00::5".parse::<Ipv6Addr>().unwrap().octets();
        let (_, r) = addrs(&h.tuple);
        assert_eq!(r.to_string(), "[fd00::5]:8080");
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short { .. })));
        let rec = Record {
            header: header(EventKind::Connected),
            payload: Connected::default(),
        };
        let bytes = bytes_of(&rec);
        let cut = &bytes[..bytes.len() - 4];
        assert!(matches!(decode(cut), Err(DecodeError::Short { .. })));
        let mut bad = bytes.clone();
        bad[0] = 0xff;
        bad[1] = 0x7f;
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::UnknownKind(0x7fff));
    }
}
