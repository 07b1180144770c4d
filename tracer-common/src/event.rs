//! Events written by the kernel programs: a fixed [`EventHeader`] followed by one payload type
//! chosen by [`EventKind`]. The ring buffer record for kind `K` is `Record<PayloadOf<K>>`.

use crate::net::SockTuple;

/// What an event reports. The numeric values are part of the kernel/user contract.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// connect() put a SYN on the wire ([`ConnectStart`]).
    ConnectStart = 1,
    /// Handshake completed ([`Connected`]).
    Connected = 2,
    /// Active open failed, on the wire or before it ([`ConnectFailed`]).
    ConnectFailed = 3,
    /// RST received ([`Reset`]).
    ResetReceived = 4,
    /// RST sent ([`Reset`]).
    ResetSent = 5,
    /// FIN received on an established connection ([`PeerClose`]).
    PeerClose = 6,
    /// Segment retransmitted ([`Retransmit`]).
    Retransmit = 7,
    /// Packet of a watched connection dropped by the kernel ([`Drop`]).
    Drop = 8,
    /// Socket destroyed, with a summary ([`Closed`]).
    Closed = 9,
    /// First response bytes read after a request was written ([`FirstByte`]).
    FirstByte = 10,
    /// A watched process accepted a connection ([`Accepted`]).
    Accepted = 11,
    /// A watched process wrote an HTTP status line to a client ([`Response`]).
    Response = 12,
    /// A watched process read an HTTP status line from an upstream ([`Response`]).
    UpstreamResponse = 13,
    /// The watched process closed an upstream connection still waiting for its response
    /// ([`LocalClose`]).
    LocalClose = 14,
    /// Requests on one upstream connection that got a response and have no [`FirstByte`] of
    /// their own, in aggregate ([`FirstByteSummary`]).
    FirstByteSummary = 15,
}

impl EventKind {
    /// Converts the wire value back, `None` for values this build does not know.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::ConnectStart,
            2 => Self::Connected,
            3 => Self::ConnectFailed,
            4 => Self::ResetReceived,
            5 => Self::ResetSent,
            6 => Self::PeerClose,
            7 => Self::Retransmit,
            8 => Self::Drop,
            9 => Self::Closed,
            10 => Self::FirstByte,
            11 => Self::Accepted,
            12 => Self::Response,
            13 => Self::UpstreamResponse,
            14 => Self::LocalClose,
            15 => Self::FirstByteSummary,
            _ => return None,
        })
    }
}

/// Socket role: opened actively by the watched process, or accepted by it.
pub const ROLE_UNKNOWN: u8 = 0;
/// Actively opened by the watched process (a connection to an upstream).
pub const ROLE_UPSTREAM: u8 = 1;
/// Accepted by the watched process (a connection from a client).
pub const ROLE_CLIENT: u8 = 2;

/// Common start of every event.
///
/// `tgid`/`tid`/`comm` name the owner of the socket as recorded when the socket was first seen
/// in process context, not the task that happened to be running when the event fired: resets,
/// handshakes and drops are handled in softirq context, on whatever task was interrupted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u16,
    /// [`ROLE_UPSTREAM`], [`ROLE_CLIENT`] or [`ROLE_UNKNOWN`].
    pub role: u8,
    pub _pad: [u8; 5],
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Socket cookie, 0 when the kernel had not assigned one yet.
    pub cookie: u64,
    /// Kernel address of the `struct sock`; unique while the socket lives.
    pub sock: u64,
    /// Cookie of the linked socket: for an upstream socket, the client connection it was last
    /// opened or written for; for a client socket, the upstream last used for it. 0 if none.
    pub peer: u64,
    pub comm: [u8; 16],
    pub tuple: SockTuple,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 104);

/// A header and its payload, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Record<P> {
    pub header: EventHeader,
    pub payload: P,
}

/// Payload of [`EventKind::ConnectStart`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectStart {
    /// When the socket entered SYN_SENT (the header's time is when connect() returned).
    pub syn_ns: u64,
}

/// Payload of [`EventKind::Connected`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Connected {
    /// SYN_SENT to ESTABLISHED.
    pub latency_ns: u64,
    pub syn_retransmits: u32,
    /// Smoothed RTT in microseconds right after the handshake.
    pub srtt_us: u32,
}

/// How an active open failed.
pub const FAIL_RST: u8 = 1;
/// An ICMP error (host/net/port unreachable) was recorded on the socket.
pub const FAIL_ICMP: u8 = 2;
/// The kernel gave up retransmitting the SYN.
pub const FAIL_TIMEOUT: u8 = 3;
/// The application closed the socket while the handshake was in progress.
pub const FAIL_ABORTED: u8 = 4;
/// connect() itself returned the error; nothing went on the wire.
pub const FAIL_SYSCALL: u8 = 5;
/// None of the above could be told apart.
pub const FAIL_OTHER: u8 = 6;

/// Payload of [`EventKind::ConnectFailed`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectFailed {
    /// SYN_SENT (or connect() entry) to failure.
    pub duration_ns: u64,
    /// Positive errno: `sk_err`, else `sk_err_soft`, else connect()'s return value.
    pub errno: i32,
    pub syn_retransmits: u32,
    /// One of the `FAIL_*` values.
    pub source: u8,
    pub _pad: [u8; 7],
}

/// Where a connection stood in its request/response cycle when something happened to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Exchange {
    /// Responses completed on this connection before (a reused connection has at least one).
    pub requests: u32,
    /// 1 when a request was written and no response byte read yet.
    pub awaiting_response: u8,
    pub _pad: [u8; 3],
    /// Idle time before the outstanding request was written (when awaiting a response), or
    /// since the last response byte (otherwise).
    pub idle_ns: u64,
    /// Time since the outstanding request was first written, 0 when none is outstanding.
    pub request_age_ns: u64,
    pub bytes_received: u64,
}

/// Payload of [`EventKind::ResetReceived`] and [`EventKind::ResetSent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Reset {
    /// Kernel `enum sk_rst_reason` value for sent resets (names come from BTF), 0 otherwise.
    pub reason: u32,
    /// TCP state (`TCP_ESTABLISHED` = 1 …) when the reset happened.
    pub state: u8,
    pub _pad: [u8; 3],
    pub exchange: Exchange,
}

/// Payload of [`EventKind::PeerClose`] and [`EventKind::LocalClose`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerClose {
    pub exchange: Exchange,
}

/// Payload of [`EventKind::LocalClose`].
pub type LocalClose = PeerClose;

/// Through which system call a status line was written or read.
pub const VIA_WRITE: u8 = 1;
pub const VIA_WRITEV: u8 = 2;
pub const VIA_SENDTO: u8 = 3;
pub const VIA_SENDMSG: u8 = 4;
pub const VIA_READ: u8 = 5;
pub const VIA_RECVFROM: u8 = 6;
/// Written through OpenSSL's `SSL_write`: the plaintext status line, the client socket of the
/// thread's next write.
pub const VIA_TLS: u8 = 7;
pub const VIA_READV: u8 = 8;
pub const VIA_RECVMSG: u8 = 9;
/// A send by another way than the write system calls above: io_uring, or a kernel sender.
pub const VIA_OTHER: u8 = 10;

/// Payload of [`EventKind::Response`] and [`EventKind::UpstreamResponse`]: the status of an
/// HTTP/1.x response. Nothing else of the payload is read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Response {
    pub status: u16,
    /// One of the `VIA_*` values.
    pub via: u8,
    pub _pad: [u8; 5],
}

/// Payload of [`EventKind::Retransmit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Retransmit {
    pub state: u8,
    pub _pad: [u8; 3],
    /// Retransmits of this socket so far, this one included.
    pub total: u32,
}

/// Payload of [`EventKind::Drop`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Drop {
    /// Kernel `enum skb_drop_reason` value (names come from BTF).
    pub reason: u32,
    /// 1 when the dropped packet was travelling towards the watched socket.
    pub inbound: u8,
    pub _pad: [u8; 3],
    /// Kernel address of the code that dropped it.
    pub location: u64,
}

/// Payload of [`EventKind::Closed`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Closed {
    /// From SYN_SENT or accept to destruction.
    pub duration_ns: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub srtt_us: u32,
    pub total_retrans: u32,
    pub state: u8,
    /// Which held records this close carries (`sock::HELD_*`); the fields below are valid
    /// only for those.
    pub held: u8,
    pub _pad: [u8; 2],
    /// Responses the connection completed (upstream connections; 0 for clients).
    pub requests: u32,
    /// SYN_SENT to ESTABLISHED ([`crate::sock::HELD_CONNECT`]).
    pub connect_latency_ns: u64,
    /// The first request's time to first byte ([`crate::sock::HELD_TTFB`]).
    pub ttfb_ns: u64,
    /// Bytes written for the first request ([`crate::sock::HELD_TTFB`]).
    pub request_bytes: u64,
    /// Idle time when the peer closed the connection with no request outstanding
    /// ([`crate::sock::HELD_PEER_CLOSE`]).
    pub peer_idle_ns: u64,
    /// When the peer's FIN came ([`crate::sock::HELD_PEER_CLOSE`]).
    pub peer_close_ns: u64,
}

/// Payload of [`EventKind::FirstByte`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstByte {
    /// From the first write of the request to the first read that returned response bytes.
    pub ttfb_ns: u64,
    /// Bytes written for the request before the response started.
    pub request_bytes: u64,
    /// Idle time of the connection before this request (0 for its first request).
    pub idle_ns: u64,
    /// Index of the request on this connection, starting at 1.
    pub request_no: u32,
    /// Why this request has its own record (`TTFB_*`).
    pub why: u32,
}

/// [`FirstByte::why`]: the request is one of the one-in-N sample (`--ttfb-every`), which
/// always includes a connection's first request. Only these are a sample of all requests.
pub const TTFB_SAMPLE: u32 = 0;
/// [`FirstByte::why`]: the request's client saw an upstream connection fail before: this may
/// be the proxy's retry, and the correlator pairs the two.
pub const TTFB_RETRY: u32 = 1;
/// [`FirstByte::why`]: the upstream's status line is one the user asked for (`--status`).
pub const TTFB_STATUS: u32 = 2;

/// Payload of [`EventKind::FirstByteSummary`]: requests answered on one upstream connection
/// since its last summary that had no [`FirstByte`] record. All of them were on a reused
/// connection: a connection's first request is always recorded. Written when the connection
/// is destroyed, or with the request that ends a summary period.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstByteSummary {
    /// When the first of these requests got its first byte.
    pub since_ns: u64,
    /// Sum of their times to first byte, to give the mean.
    pub ttfb_sum_ns: u64,
    pub ttfb_min_ns: u64,
    pub ttfb_max_ns: u64,
    /// The longest a connection sat idle before one of these requests reused it.
    pub idle_max_ns: u64,
    /// How many requests.
    pub requests: u32,
    /// Index on the connection of the last of them.
    pub last_request_no: u32,
}

/// Payload of [`EventKind::Accepted`]: nothing beyond the header, written at the client
/// connection's first read or write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Accepted {
    pub _reserved: u64,
}

crate::impl_pod!(
    EventHeader,
    ConnectStart,
    Connected,
    ConnectFailed,
    Reset,
    PeerClose,
    Retransmit,
    Drop,
    Closed,
    FirstByte,
    FirstByteSummary,
    Accepted,
    Exchange,
    Response,
);

#[cfg(feature = "user")]
// SAFETY: `Record` is `#[repr(C)]` over two Pod types whose sizes are multiples of 8, so there is
// no padding between or after them.
unsafe impl<P: aya::Pod> aya::Pod for Record<P> {}
