//! Held records: the routine records of a young connection are kept in its `SOCKS` entry
//! instead of written, and go out with its `close`, or as records of their own once the
//! connection lives on or fails.
//!
//! Without keep-alive towards the upstream, every request opened a connection that wrote five
//! records (`connect_start`, `connect`, `ttfb`, `peer_close`, `close`), all routine when the
//! request went well: five ring reservations in the proxy's system calls and softirqs, and
//! five records for the tracer to decode, correlate and write. Held, such a connection writes
//! one. A client connection that carries one request wrote three (`accept`, `peer_close`,
//! `close`), and writes one. None of the held records explains a failure, so no verdict waits
//! for them; what a verdict needs (resets, refused connects, a close with a request
//! outstanding, a retry's first byte, a response's status) is never held.

use tracer_common::{
    event::{Accepted, Closed, EventKind, ROLE_CLIENT, ROLE_UPSTREAM},
    sock::{HELD_ACCEPT, HELD_CONNECT, HELD_PEER_CLOSE, HELD_TTFB},
};

use crate::maps::SockEntry as _;
use crate::{
    kernel::hold,
    maps::{F_AFTER_FAILURE, SOCKS, SockInfo, emit},
};

/// A connection still holding its `connect` releases it at its first read this long after
/// the handshake: a pooled connection's records then arrive within about a second.
const HOLD_NS: u64 = 1_000_000_000;

/// A client connection releases its held `accept` at this read: a connection kept alive
/// for a second request is one that lives on. Counted rather than timed, because the client
/// read path takes no timestamp.
const ACCEPT_HELD_READS: u8 = 2;

/// Records that release what a connection holds.
const RELEASED_BY_FAILURE: u8 = HELD_ACCEPT | HELD_CONNECT;

/// Holds the `connect_start` and `connect` of upstream socket `info`, whose handshake
/// completed at `ts`. Returns false when they are to be written now: holding is off, or the
/// `connect_start` is out already (a SYN was retransmitted).
#[inline(always)]
pub fn hold_connect(info: &mut SockInfo, ts: u64, srtt_us: u32) -> bool {
    if !hold() || info.role != ROLE_UPSTREAM {
        return false;
    }
    info.held = HELD_CONNECT;
    info.held_records.connect_ns = ts;
    info.held_records.connect_srtt_us = srtt_us;
    true
}

/// Holds the `ttfb` of a connection's first request when its `connect` is held too.
#[inline(always)]
pub fn hold_first_byte(info: &mut SockInfo, ttfb_ns: u64, ts: u64, request_bytes: u64) -> bool {
    if info.held & HELD_CONNECT == 0 || info.requests != 1 {
        return false;
    }
    info.held |= HELD_TTFB;
    info.held_records.first_byte_ns = ts;
    info.held_records.ttfb_ns = ttfb_ns;
    info.held_records.request_bytes = request_bytes;
    true
}

/// Holds the `accept` of a client connection adopted now. Returns false when it is to be
/// written now.
#[inline(always)]
pub fn hold_accept(info: &mut SockInfo) -> bool {
    if !hold() || info.role != ROLE_CLIENT {
        return false;
    }
    info.held = HELD_ACCEPT;
    true
}

/// Counts a read of client socket `info`; the read that shows the connection lives on
/// releases its held `accept`.
#[inline(always)]
pub fn on_client_read(sk: u64, info: &mut SockInfo) {
    if info.held & HELD_ACCEPT == 0 {
        return;
    }
    info.client_reads = info.client_reads.saturating_add(1);
    if info.client_reads >= ACCEPT_HELD_READS {
        release(sk, info);
    }
}

/// Holds a `peer_close` that came with no request outstanding (the upstream closed after its
/// answer, or an idle pooled connection; a client that closed).
#[inline(always)]
pub fn hold_peer_close(info: &mut SockInfo, ts: u64, idle_ns: u64, bytes: u64) -> bool {
    if !hold() {
        return false;
    }
    info.held |= HELD_PEER_CLOSE;
    info.held_records.peer_close_ns = ts;
    info.held_records.peer_idle_ns = idle_ns;
    info.held_records.peer_bytes = bytes;
    true
}

/// Whether a read at `ts` of upstream socket `info` releases its held `connect` (and first
/// `ttfb`): a second request's first byte (`answering` with responses completed before), any
/// read a second after the handshake, or a first byte that is written at once: its status is
/// reported, or it may be a retry.
#[inline(always)]
pub fn due(info: &SockInfo, answering: bool, reported: bool, ts: u64) -> bool {
    info.held & HELD_CONNECT != 0
        && ((answering && (info.requests > 0 || reported || info.flags & F_AFTER_FAILURE != 0))
            || ts.wrapping_sub(info.held_records.connect_ns) >= HOLD_NS)
}

/// A response with a reported status on client socket `info`: the upstream connection that
/// served it releases what it holds. A proxy may write its 502 before the upstream socket is
/// destroyed (nginx closes an upstream that sent a bad header, and the socket lives on in
/// FIN_WAIT until the upstream closes too): without this the correlator would not know, when
/// the response came, which upstream carried it. The cookie check keeps a socket address
/// reused by another connection from being released.
#[inline(always)]
pub fn release_upstream_of(info: &SockInfo) {
    if info.peer_sk == 0 {
        return;
    }
    let Some(p) = SOCKS.get_ptr_mut(&info.peer_sk) else {
        return;
    };
    // SAFETY: a valid map value pointer, used within this program run. The upstream's own
    // programs may run at the same time on another CPU: a race can release its records
    // twice, which a reader sees as one record written again.
    let up = unsafe { &mut *p };
    if up.cookie == info.peer && up.role == ROLE_UPSTREAM {
        release_before_failure(info.peer_sk, up);
    }
}

/// Before a record that may explain a failure of socket `info` (or a client's response
/// status): what it holds is written first, so that the failure follows the connection's
/// story in the file and in a verdict's evidence.
#[inline(always)]
pub fn release_before_failure(sk: u64, info: &mut SockInfo) {
    if info.held & RELEASED_BY_FAILURE != 0 {
        release(sk, info);
    }
}

/// Writes the held `accept`, or `connect_start`, `connect` and first `ttfb`, as the records
/// they would have been, with their own times. A held `peer_close` stays for the `close`: the
/// proxy closes the connection right after it.
// Out of line: four records' worth of code, run once per long-lived connection.
#[inline(never)]
pub fn release(sk: u64, info: &mut SockInfo) {
    let tuple = info.tuple_of(sk);
    if info.held & HELD_ACCEPT != 0 {
        info.held &= !HELD_ACCEPT;
        emit(
            EventKind::Accepted,
            sk,
            info,
            &tuple,
            info.start_ns,
            Accepted::default(),
        );
    }
    if info.held & HELD_CONNECT == 0 {
        return;
    }
    let h = info.held_records;
    let start = info.held_start();
    emit(
        EventKind::ConnectStart,
        sk,
        info,
        &tuple,
        h.connect_ns,
        start,
    );
    let connected = info.held_connected();
    emit(
        EventKind::Connected,
        sk,
        info,
        &tuple,
        h.connect_ns,
        connected,
    );
    if info.held & HELD_TTFB != 0 {
        let first = info.held_first_byte();
        emit(
            EventKind::FirstByte,
            sk,
            info,
            &tuple,
            h.first_byte_ns,
            first,
        );
    }
    info.held &= !(HELD_CONNECT | HELD_TTFB);
}

/// Copies what the held records say into the connection's `close`.
#[inline(always)]
pub fn fold_into(info: &SockInfo, close: &mut Closed) {
    let h = &info.held_records;
    close.held = info.held;
    close.requests = info.requests;
    if info.held & HELD_CONNECT != 0 {
        close.connect_latency_ns = h.connect_ns - info.start_ns;
    }
    if info.held & HELD_TTFB != 0 {
        close.ttfb_ns = h.ttfb_ns;
        close.request_bytes = h.request_bytes;
    }
    if info.held & HELD_PEER_CLOSE != 0 {
        close.peer_idle_ns = h.peer_idle_ns;
        close.peer_close_ns = h.peer_close_ns;
    }
}
