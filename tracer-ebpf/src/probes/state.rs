//! The TCP state machine: the start, outcome and peer close of connections.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_socket_cookie},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{
    event::{
        ConnectFailed, ConnectStart, Connected, EventKind, FAIL_ABORTED, FAIL_ICMP, FAIL_RST,
        FAIL_SYSCALL, FAIL_TIMEOUT, PeerClose, ROLE_UPSTREAM,
    },
    net::SockTuple,
};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{
        TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_LISTEN, TCP_SYN_SENT,
        current_comm, is_tcp, off, read, sk_tuple, watched_thread,
    },
    maps::{
        F_ESTABLISHED, F_RST_RX, F_START_PENDING, FLOWS, LISTEN_PORTS, NEW_SOCK_STATE, SOCKS,
        SockInfo, emit, emit_as, exchange, exchange_as, flow_key, link_to_client, new_entry, now,
        track,
    },
    probes::hold::{hold_connect, hold_peer_close, release_before_failure},
};

const EADDRNOTAVAIL: i32 = 99;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;

/// Hook: BTF tracepoint `sock:inet_sock_set_state(const struct sock *sk, int oldstate,
/// int newstate)`. Checked on 6.18.
///
/// CLOSE→SYN_SENT runs in the connecting task (connect() holds the socket), so the owner is
/// recorded there. The other transitions run in softirq context and find the owner in `SOCKS`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => on_syn_sent(skp),
        (TCP_CLOSE, TCP_LISTEN) => on_listen(skp as u64),
        (TCP_SYN_SENT, TCP_ESTABLISHED) => on_established(skp as u64),
        (TCP_SYN_SENT, TCP_CLOSE) => on_connect_failed(skp as u64),
        (TCP_ESTABLISHED, TCP_CLOSE_WAIT) => on_peer_close(skp as u64),
        (TCP_ESTABLISHED, TCP_FIN_WAIT1) => on_local_close(skp as u64),
        _ => {}
    }
    0
}

#[inline(always)]
fn on_syn_sent(skp: *const c_void) {
    let sk = skp as u64;
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched_thread(pid_tgid) || !is_tcp(sk) {
        return;
    }
    let Some(info) = new_entry(
        NEW_SOCK_STATE,
        pid_tgid,
        current_comm(),
        now(),
        ROLE_UPSTREAM,
        F_START_PENDING,
    ) else {
        return;
    };
    // SAFETY: `skp` is the tracepoint's trusted `struct sock *` argument.
    info.cookie = unsafe { bpf_get_socket_cookie(skp as *mut c_void) };
    link_to_client(sk, info);
    let _ = track(sk, info);
}

/// listen() on any socket of the host: its port is remembered, so that the sockets it accepts
/// are recognised as clients when they are adopted (`probes::io`). Rare, so not filtered.
#[inline(always)]
fn on_listen(sk: u64) {
    if !is_tcp(sk) {
        return;
    }
    let port = sk_tuple(sk).lport;
    if port != 0 {
        let _ = LISTEN_PORTS.insert(&port, &1, 0);
    }
}

/// Writes the `connect_start` of a socket whose handshake began while the tracer ran, once, as
/// soon as its source port is known: at the handshake's outcome or first SYN retransmit.
/// It is dated by the SYN. The tuple is kept for the socket's later records.
#[inline(always)]
pub fn connect_started(sk: u64, info: &mut SockInfo, tuple: &SockTuple) {
    if info.flags & F_START_PENDING == 0 {
        return;
    }
    info.flags &= !F_START_PENDING;
    info.tuple = *tuple;
    let payload = ConnectStart {
        syn_ns: info.start_ns,
    };
    emit(EventKind::ConnectStart, sk, info, tuple, now(), payload);
}

#[inline(always)]
fn on_established(sk: u64) {
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: a valid map value pointer; state changes of one socket are serialised by its lock.
    let info = unsafe { &mut *p };
    let ts = now();
    info.flags |= F_ESTABLISHED;
    info.last_rx_ns = ts;
    let tuple = info.tuple_of(sk);
    let _ = FLOWS.insert(&flow_key(&tuple), &sk, 0);
    // tcp_ack() has already taken an RTT sample from the SYN-ACK when the state changes.
    let srtt_us = read::<u32>(sk, off!(tcp_srtt_us)) >> 3;
    // A handshake with no SYN retransmit: both records are held (`probes::hold`).
    if info.flags & F_START_PENDING != 0 && hold_connect(info, ts, srtt_us) {
        info.flags &= !F_START_PENDING;
        info.tuple = tuple;
        return;
    }
    // Keeps the tuple for the connection's later records, unless a SYN retransmit did.
    connect_started(sk, info, &tuple);
    let payload = Connected {
        latency_ns: ts - info.start_ns,
        syn_retransmits: info.syn_retrans,
        srtt_us,
    };
    emit(EventKind::Connected, sk, info, &tuple, ts, payload);
}

#[inline(always)]
fn on_connect_failed(sk: u64) {
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: as in `on_established`.
    let info = unsafe { &mut *p };
    let tuple = sk_tuple(sk);
    let (errno, source) = if tuple.lport == 0 {
        // tcp_v4_connect() enters SYN_SENT before it picks a port; failing with no source port
        // means no port was free (EADDRNOTAVAIL) and no packet left. This runs in connect().
        (EADDRNOTAVAIL, FAIL_SYSCALL)
    } else {
        connect_started(sk, info, &tuple);
        failure_cause(sk, info)
    };
    let ts = now();
    let payload = ConnectFailed {
        duration_ns: ts - info.start_ns,
        errno,
        syn_retransmits: info.syn_retrans,
        source,
        _pad: [0; 7],
    };
    emit(EventKind::ConnectFailed, sk, info, &tuple, ts, payload);
}

/// Why a handshake that reached the wire failed, as (errno, source).
#[inline(always)]
fn failure_cause(sk: u64, info: &SockInfo) -> (i32, u8) {
    // tcp_done_with_error() stores sk_err before the state changes. An ICMP error that arrived
    // while connect() held the socket lock is only in sk_err_soft.
    let err = read::<i32>(sk, off!(sk_err));
    let soft = read::<i32>(sk, off!(sk_err_soft));
    if info.flags & F_RST_RX != 0 {
        (if err != 0 { err } else { ECONNREFUSED }, FAIL_RST)
    } else if err == ETIMEDOUT {
        (err, FAIL_TIMEOUT)
    } else if err != 0 {
        (err, FAIL_ICMP)
    } else if soft != 0 {
        (soft, FAIL_ICMP)
    } else if info.soft_err != 0 {
        // The application already read (and so cleared) the soft error, which the error
        // report kept (`probes::error`).
        (info.soft_err, FAIL_ICMP)
    } else {
        // The application closed the socket mid-handshake: from its side, a connect timeout.
        (ETIMEDOUT, FAIL_ABORTED)
    }
}

#[inline(always)]
fn on_peer_close(sk: u64) {
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: as in `on_established`.
    let info = unsafe { &mut *p };
    let ts = now();
    // The kernel counts the FIN's sequence number in bytes_received; it carries no data.
    let bytes = read::<u64>(sk, off!(tcp_bytes_received)).saturating_sub(1);
    // An upstream speaking HTTP/1.0 (nginx's default towards upstreams) sends its response and
    // its FIN together, so the FIN usually arrives before the proxy has read the response.
    // Data received since the request started means the upstream answered before closing. So
    // does data waiting unread: `rx_at_req` is read just after the request's write returned,
    // and a fast upstream's response can already be in by then (seen on veth, about once in
    // 10,000 requests). The FIN itself takes one sequence number.
    // Read only when the cheaper tests leave the question open.
    let awaiting = info.req_start_ns != 0 && bytes <= info.rx_at_req && unread(sk) <= 1;
    if awaiting {
        release_before_failure(sk, info);
    } else if hold_peer_close(info, ts, ts.saturating_sub(info.last_rx_ns), bytes) {
        return;
    }
    let payload = PeerClose {
        exchange: exchange_as(info, awaiting, bytes, ts),
    };
    // Only a close without an answer explains a failure; the others are routine.
    emit_as(
        EventKind::PeerClose,
        !awaiting,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        payload,
    );
}

/// Sequence numbers received but not yet read by the application (a FIN counts one).
#[inline(always)]
fn unread(sk: u64) -> u32 {
    read::<u32>(sk, off!(tcp_rcv_nxt)).wrapping_sub(read::<u32>(sk, off!(tcp_copied_seq)))
}

/// The watched process closes an upstream connection first. Only reported while a response
/// is outstanding: that is a proxy giving up (a read timeout), not a keep-alive close.
#[inline(always)]
fn on_local_close(sk: u64) {
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: as in `on_established`.
    let info = unsafe { &mut *p };
    if info.role != ROLE_UPSTREAM || info.req_start_ns == 0 {
        return;
    }
    release_before_failure(sk, info);
    let ts = now();
    let bytes = read::<u64>(sk, off!(tcp_bytes_received));
    let payload = PeerClose {
        exchange: exchange(info, bytes, ts),
    };
    emit(
        EventKind::LocalClose,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        payload,
    );
}
