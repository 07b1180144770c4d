//! The per-socket state the kernel programs keep between events.

use crate::{
    event::{ConnectStart, Connected, FirstByte, FirstByteSummary, TTFB_SAMPLE},
    net::SockTuple,
};

/// What the kernel programs remember about a watched socket: the value of the `SOCKS` map.
/// Deleted in `tcp_destroy_sock`; the map is an LRU so that a socket whose destruction was
/// missed cannot pin an entry forever. User space reads it only at exit, for the `ttfb`
/// tallies that no request or close has written yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockInfo {
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    /// SYN_SENT or accept time.
    pub start_ns: u64,
    pub cookie: u64,
    /// First write of the request now waiting for its response; 0 when none is outstanding.
    pub req_start_ns: u64,
    /// Last read that returned response bytes (or the handshake), to measure idle time at reuse.
    pub last_rx_ns: u64,
    /// Idle time before the outstanding request (0 on a connection's first request).
    pub req_idle_ns: u64,
    /// The kernel's `tcp_sock.bytes_received` when the outstanding request started: more bytes
    /// since then mean the response has begun to arrive, read by the application or not.
    pub rx_at_req: u64,
    /// Cookie of the linked socket (see `EventHeader::peer`).
    pub peer: u64,
    /// The linked socket (`struct sock *`), 0 when not linked. On an upstream socket, the
    /// client, to mark it when this connection fails; on a client socket, the upstream, whose
    /// held records a reported response releases.
    pub peer_sk: u64,
    pub syn_retrans: u32,
    pub retrans: u32,
    pub requests: u32,
    /// The errno of the first ICMP error reported on a connecting socket: kept because the
    /// kernel may store it only as a soft error, which the application clears when it reads
    /// SO_ERROR.
    pub soft_err: i32,
    pub role: u8,
    pub flags: u8,
    /// Which routine records of this connection are held in [`SockInfo::held_records`]
    /// (`HELD_*`), to be written with its `close` or released as records of their own.
    pub held: u8,
    /// Reads of a client socket while its `accept` is held (saturating).
    pub client_reads: u8,
    /// The kernel's `tcp_sock.write_seq` at a mark. On an upstream socket, where the
    /// outstanding request's bytes begin (its `request_bytes` are counted from here when its
    /// response starts). On a client socket, where the bytes of the last reported status line
    /// were to be queued: a write the kernel retries or the proxy repeats after EAGAIN finds
    /// nothing queued since, and is not reported again.
    pub seq_mark: u32,
    /// Both ends, once known (`lport` 0 before): from the handshake's outcome or first SYN
    /// retransmit, or from adoption. The records of every request copy them from here instead
    /// of reading the socket again.
    pub tuple: SockTuple,
    /// Answered requests without a `ttfb` record of their own, not yet written as a
    /// `ttfb_summary` (`tracer-ebpf/src/probes/ttfb.rs`); `requests` 0 when none.
    pub tally: FirstByteSummary,
    /// What the held records would have said (see `held`).
    pub held_records: Held,
}

const _: () = assert!(core::mem::size_of::<SockInfo>() == 264);

/// [`SockInfo::held`]: the connection's `connect_start` and `connect` are held.
pub const HELD_CONNECT: u8 = 1;
/// [`SockInfo::held`]: the first request's `ttfb` is held.
pub const HELD_TTFB: u8 = 2;
/// [`SockInfo::held`]: a `peer_close` with no request outstanding is held.
pub const HELD_PEER_CLOSE: u8 = 4;
/// [`SockInfo::held`]: a client connection's `accept` is held.
pub const HELD_ACCEPT: u8 = 8;

/// The routine records of a young connection, held in the kernel instead of written.
///
/// An upstream connection that carries one request (nginx's default towards upstreams) wrote
/// five records: `connect_start`, `connect`, `ttfb`, `peer_close` and `close`; a client
/// connection that carries one request, `accept`, `peer_close` and `close`. Held, what the
/// others say goes into the `close` (`Closed`), or, for a connection that lives on or fails,
/// out as their own records (`tracer-ebpf/src/probes/hold.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    /// When the handshake completed ([`HELD_CONNECT`]).
    pub connect_ns: u64,
    /// When the first request's response began ([`HELD_TTFB`]).
    pub first_byte_ns: u64,
    /// The first request's time to first byte.
    pub ttfb_ns: u64,
    /// Bytes written for the first request.
    pub request_bytes: u64,
    /// When the upstream's FIN arrived with no request outstanding ([`HELD_PEER_CLOSE`]).
    pub peer_close_ns: u64,
    /// How long the connection had been idle then.
    pub peer_idle_ns: u64,
    /// Bytes received by then, the FIN not counted.
    pub peer_bytes: u64,
    /// Smoothed RTT right after the handshake, microseconds.
    pub connect_srtt_us: u32,
    pub _pad: u32,
}

impl SockInfo {
    /// The held `connect_start` ([`HELD_CONNECT`]), dated [`Held::connect_ns`].
    pub fn held_start(&self) -> ConnectStart {
        ConnectStart {
            syn_ns: self.start_ns,
        }
    }

    /// The held `connect` ([`HELD_CONNECT`]), dated [`Held::connect_ns`].
    pub fn held_connected(&self) -> Connected {
        let h = &self.held_records;
        Connected {
            latency_ns: h.connect_ns.saturating_sub(self.start_ns),
            syn_retransmits: self.syn_retrans,
            srtt_us: h.connect_srtt_us,
        }
    }

    /// The held `ttfb` of the first request ([`HELD_TTFB`]), dated [`Held::first_byte_ns`].
    pub fn held_first_byte(&self) -> FirstByte {
        let h = &self.held_records;
        FirstByte {
            ttfb_ns: h.ttfb_ns,
            request_bytes: h.request_bytes,
            idle_ns: 0,
            request_no: 1,
            why: TTFB_SAMPLE,
        }
    }
}

crate::impl_pod!(SockInfo, Held);
