//! Socket reads and writes: time to first byte on upstream connections, the status lines of
//! responses (see `response`), and adoption of sockets that existed before the tracer started.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_socket_cookie},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::event::{Accepted, EventKind, ROLE_CLIENT, ROLE_UPSTREAM, VIA_OTHER};

use crate::{
    kernel::{
        TCP_ESTABLISHED, Task, current_comm, is_ephemeral, is_tcp, msg_mid_buffer, msg_user_start,
        rx_bytes_and_write_seq, sk_state, sk_tuple, user_status, watched_thread,
    },
    maps::{
        F_ESTABLISHED, FLOWS, LISTEN_PORTS, NEW_SOCK_RECV, NEW_SOCK_SEND, SOCKS, SockInfo, emit,
        flow_key, link_to_client, new_entry, now, set_last_client, track,
    },
    probes::{
        hold,
        response::{emit_status, on_client_send, on_client_write, syscall_status},
        ttfb::on_first_byte,
    },
};

const MSG_PEEK: i32 = 2;

/// Hook: BTF tracepoint `tcp:tcp_sendmsg_locked(const struct sock *sk, const struct msghdr
/// *msg, const struct sk_buff *skb, int size_goal)`, from tcp_sendmsg_locked(): every send on
/// a TCP socket, in the sending task, before its data is queued, once per segment it fills.
/// The tracepoint exists from 6.16; checked on 6.18. Where it does not, `sock_send_length`
/// does the same work after the send (the attach table's fallback).
///
/// It is the cheaper of the two: the msghdr holds the user address of the data, where
/// `sock_send_length` must find it through the system call's saved registers, and it does not
/// run for sends on other kinds of sockets.
#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn tcp_sendmsg_locked(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    // A later pass of one send: its first pass started the request or read the status line.
    // Checked first, so that a large send costs what a small one does.
    if msg_mid_buffer(msg) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(info) = watched_sock(skp, pid_tgid, NEW_SOCK_SEND) else {
        return 0;
    };
    if info.role == ROLE_CLIENT {
        on_client_send(skp, msg, info, pid_tgid as u32);
    } else if info.role == ROLE_UPSTREAM {
        // Nothing is queued yet.
        on_upstream_write(skp, info, pid_tgid as u32, 0);
    }
    0
}

/// Hook: BTF tracepoint `tcp:tcp_sendmsg_locked`, reading only the status lines of responses,
/// as `status_sock_send_length` does on the fallback hook: the thread check and the status
/// line at the start of every send of a watched thread, the socket's entry only for a send
/// that carried a reported status (`tracer run --status-only`, configuration F of `cargo
/// xtask bench`). Never attached otherwise.
#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn status_tcp_sendmsg_locked(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    if msg_mid_buffer(msg) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched_thread(pid_tgid) {
        return 0;
    }
    if let Some(status) = msg_user_start(msg).and_then(user_status) {
        emit_status_only(skp, pid_tgid, status, VIA_OTHER);
    }
    0
}

/// Hook: BTF tracepoint `sock:sock_send_length(struct sock *sk, int ret, int flags)`, from
/// sock_sendmsg_nosec(): every write/send/sendmsg on a socket, in the writing task, after it.
/// The tracepoint exists from 6.3; checked on 6.18. Attached where `tcp_sendmsg_locked` is
/// not (before 6.16).
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(info) = watched_sock(skp, pid_tgid, NEW_SOCK_SEND) else {
        return 0;
    };
    if info.role == ROLE_CLIENT {
        on_client_write(skp as u64, info, pid_tgid as u32);
    } else if info.role == ROLE_UPSTREAM {
        // The write's bytes are queued already.
        on_upstream_write(skp, info, pid_tgid as u32, ret as u32);
    }
    0
}

/// Hook: BTF tracepoint `sock:sock_send_length`, reading only the status lines of responses:
/// the thread check and the status line of every write of a watched thread, and the socket's
/// entry only for a write that carried a reported status. No time to first byte, no link to
/// the client, no entry for other sockets. With empty programs on every other hook
/// (`tracer run --status-only`) it measures the least that in-kernel status capture costs
/// (`cargo xtask bench`, configuration F). Never attached otherwise.
#[btf_tracepoint(function = "sock_send_length")]
pub fn status_sock_send_length(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched_thread(pid_tgid) {
        return 0;
    }
    if let Some((status, via)) = syscall_status(Task::current()) {
        emit_status_only(skp, pid_tgid, status, via);
    }
    0
}

/// The status-only programs' end: a reported status line written by watched thread
/// `pid_tgid` to socket `skp` is a `response` if the socket is a client's.
#[inline(always)]
fn emit_status_only(skp: *const c_void, pid_tgid: u64, status: u16, via: u8) {
    let Some(info) = watched_sock(skp, pid_tgid, NEW_SOCK_SEND) else {
        return;
    };
    if info.role == ROLE_CLIENT {
        emit_status(EventKind::Response, skp as u64, info, status, via, now());
    }
}

/// A write of thread `tid` to upstream socket `skp`, after `queued` of its bytes were queued:
/// the first of a request starts it.
#[inline(always)]
fn on_upstream_write(skp: *const c_void, info: &mut SockInfo, tid: u32, queued: u32) {
    if info.req_start_ns != 0 {
        return;
    }
    let ts = now();
    info.req_start_ns = ts;
    let (rx, seq) = rx_bytes_and_write_seq(skp);
    info.rx_at_req = rx;
    // The request's bytes are counted from here when its response starts (`ttfb`).
    info.seq_mark = seq.wrapping_sub(queued);
    info.req_idle_ns = if info.requests > 0 {
        ts.saturating_sub(info.last_rx_ns)
    } else {
        0
    };
    // A reused connection is linked to the request it now carries, through the thread
    // writing it now: HAProxy hands pooled connections between threads. A new connection
    // keeps the link made at its connect(), right after the thread read its client's
    // request: its first write waits for the handshake, and by then the thread may have read
    // other clients' requests.
    info.tid = tid;
    if info.requests > 0 || info.peer == 0 {
        link_to_client(skp as u64, info);
    }
}

/// Hook: BTF tracepoint `sock:sock_recv_length(struct sock *sk, int ret, int flags)`, from
/// sock_recvmsg_nosec(): every read/recv/recvmsg on a socket, in the reading task. Checked on
/// 6.18 (the tracepoint exists from 6.3).
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> u32 {
    let skp: *const c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if ret <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    // The task, not just its ids: an upstream response's status line is found through it.
    let task = Task::current();
    let pid_tgid = task.pid_tgid();
    let Some(info) = watched_sock(skp, pid_tgid, NEW_SOCK_RECV) else {
        return 0;
    };
    let sk = skp as u64;
    if info.role == ROLE_CLIENT {
        // The thread reads a request: what it opens or writes upstream next is for this client.
        set_last_client(pid_tgid as u32, sk, info.cookie);
        hold::on_client_read(sk, info);
        return 0;
    }
    if info.role != ROLE_UPSTREAM {
        return 0;
    }
    let ts = now();
    let answering = info.req_start_ns != 0;
    // The buffer of the read around us starts with the status line.
    let status = if answering && ret >= 12 {
        syscall_status(task)
    } else {
        None
    };
    if hold::due(info, answering, status.is_some(), ts) {
        hold::release(sk, info);
    }
    if answering {
        info.requests += 1;
        let ttfb_ns = ts - info.req_start_ns;
        info.req_start_ns = 0;
        on_first_byte(sk, info, ttfb_ns, ts, status.is_some());
        if let Some((status, via)) = status {
            emit_status(EventKind::UpstreamResponse, sk, info, status, via, ts);
        }
    }
    info.last_rx_ns = ts;
    0
}

/// The state of a watched socket read or written by a thread of a watched process (the running
/// thread `pid_tgid`). An established TCP socket that the tracer has not seen open (accepted,
/// or older than the tracer) is adopted. The thread is asked first: on a shared host most
/// socket I/O is other processes', and it then costs one helper call and a per-CPU array slot.
#[inline(always)]
fn watched_sock(skp: *const c_void, pid_tgid: u64, slot: u32) -> Option<&'static mut SockInfo> {
    if !watched_thread(pid_tgid) {
        return None;
    }
    let sk = skp as u64;
    if let Some(p) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer; reads and writes of one socket are serialised by
        // the socket lock the kernel holds around these tracepoints' callers.
        return Some(unsafe { &mut *p });
    }
    adopt(skp, pid_tgid, slot)?;
    let p = SOCKS.get_ptr_mut(&sk)?;
    // SAFETY: as above.
    let info = unsafe { &mut *p };
    // SAFETY: `skp` is the tracepoint's trusted `struct sock *` argument.
    info.cookie = unsafe { bpf_get_socket_cookie(skp as *mut c_void) };
    // A client connection's accept record, written at its first read or write: no hook sees
    // accept() return without slowing every system call on the host. Held while the
    // connection is young (`probes::hold`).
    if info.role == ROLE_CLIENT && !hold::hold_accept(info) {
        emit(
            EventKind::Accepted,
            sk,
            info,
            &info.tuple,
            now(),
            Accepted::default(),
        );
    }
    Some(info)
}

// Kept out of line: its stack frame is then only live while it runs.
#[inline(never)]
fn adopt(skp: *const c_void, pid_tgid: u64, slot: u32) -> Option<()> {
    let sk = skp as u64;
    if !is_tcp(sk) || sk_state(sk) as i32 != TCP_ESTABLISHED {
        return None;
    }
    let comm = current_comm();
    let tuple = sk_tuple(sk);
    let ts = now();
    // SAFETY: a lookup of a plain value.
    let listening = unsafe { LISTEN_PORTS.get(&tuple.lport) }.is_some();
    let role = if !listening && is_ephemeral(tuple.lport) {
        ROLE_UPSTREAM
    } else {
        ROLE_CLIENT
    };
    let info = new_entry(slot, pid_tgid, comm, ts, role, F_ESTABLISHED)?;
    info.tuple = tuple;
    if !track(sk, info) {
        return None;
    }
    let _ = FLOWS.insert(&flow_key(&tuple), &sk, 0);
    Some(())
}
