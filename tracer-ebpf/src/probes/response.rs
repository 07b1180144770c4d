//! HTTP status lines: the one a watched proxy writes to a client (the response it answered)
//! and the one it reads from an upstream (the response it was given). Only the first 12 bytes
//! of a buffer are read, and only after the cheap tests passed: the writer owns watched
//! sockets, the descriptor is a watched socket of the right role, the bytes are a status line.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::event::{
    EventKind, ROLE_CLIENT, ROLE_UPSTREAM, Response, VIA_READ, VIA_RECVFROM, VIA_SENDMSG,
    VIA_SENDTO, VIA_TLS, VIA_WRITE, VIA_WRITEV,
};

use crate::{
    kernel::{fd_to_sk, sk_tuple, sys_arg, sys_ret, user_status},
    maps::{OWNERS, PendingRead, READS, SOCKS, SockInfo, TLS_STATUS, emit, now, put},
};

/// `struct user_msghdr.msg_iov`: user-space ABI, identical on every 64-bit kernel.
const MSGHDR_IOV: u64 = 16;

/// Hook: tracepoint `syscalls:sys_enter_write`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    let _ = on_send(&ctx, VIA_WRITE);
    0
}

/// Hook: tracepoint `syscalls:sys_enter_writev` (nginx writes response headers with it).
/// Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    let _ = on_send(&ctx, VIA_WRITEV);
    0
}

/// Hook: tracepoint `syscalls:sys_enter_sendto` (send() and HAProxy). Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let _ = on_send(&ctx, VIA_SENDTO);
    0
}

/// Hook: tracepoint `syscalls:sys_enter_sendmsg`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let _ = on_send(&ctx, VIA_SENDMSG);
    0
}

#[inline(always)]
pub(crate) fn owner_watched(pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a lookup of a plain value.
    unsafe { OWNERS.get(&tgid) }.is_some()
}

fn on_send(ctx: &TracePointContext, via: u8) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !owner_watched(pid_tgid) {
        return Ok(());
    }
    let fd = sys_arg(ctx, 0)?;
    let arg = sys_arg(ctx, 1)?;
    let sk = fd_to_sk(fd as u32);
    // SAFETY: copied out at once.
    let Some(mut info) = (unsafe { SOCKS.get(&sk) }).copied() else {
        return Ok(());
    };
    if info.role != ROLE_CLIENT {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    // A status line handed to SSL_write by this thread leaves in this (encrypted) write.
    // SAFETY: copied out at once.
    if let Some(status) = (unsafe { TLS_STATUS.get(&tid) }).copied() {
        let _ = TLS_STATUS.remove(&tid);
        info.tid = tid;
        emit_status(EventKind::Response, sk, &info, status, VIA_TLS);
        return Ok(());
    }
    // SAFETY: user-space reads through bpf_probe_read_user fail instead of faulting.
    let buf: u64 = unsafe {
        match via {
            VIA_WRITEV => bpf_probe_read_user(arg as *const u64)?,
            VIA_SENDMSG => {
                let iov: u64 = bpf_probe_read_user((arg + MSGHDR_IOV) as *const u64)?;
                bpf_probe_read_user(iov as *const u64)?
            }
            _ => arg,
        }
    };
    let Some(status) = user_status(buf) else {
        return Ok(());
    };
    // The writer, not the acceptor, is the thread that answered.
    info.tid = pid_tgid as u32;
    emit_status(EventKind::Response, sk, &info, status, via);
    Ok(())
}

/// Emits a status line seen on socket `sk`: a `Response` written to a client or an
/// `UpstreamResponse` read from an upstream.
#[inline(always)]
fn emit_status(kind: EventKind, sk: u64, info: &SockInfo, status: u16, via: u8) {
    let payload = Response {
        status,
        via,
        _pad: [0; 5],
    };
    emit(kind, sk, info, &sk_tuple(sk), now(), payload);
}

/// Hook: tracepoint `syscalls:sys_enter_read`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    let _ = on_read_enter(&ctx);
    0
}

/// Hook: tracepoint `syscalls:sys_enter_recvfrom` (recv(), used by nginx and HAProxy).
/// Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_recvfrom")]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    let _ = on_read_enter(&ctx);
    0
}

fn on_read_enter(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !owner_watched(pid_tgid) {
        return Ok(());
    }
    let pending = PendingRead {
        buf: sys_arg(ctx, 1)?,
        want_sk: 0,
    };
    put(&READS, pid_tgid as u32, &pending);
    Ok(())
}

/// Hook: tracepoint `syscalls:sys_exit_read`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    let _ = on_read_exit(&ctx, VIA_READ);
    0
}

/// Hook: tracepoint `syscalls:sys_exit_recvfrom`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    let _ = on_read_exit(&ctx, VIA_RECVFROM);
    0
}

fn on_read_exit(ctx: &TracePointContext, via: u8) -> Result<(), i32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(p) = READS.get_ptr_mut(&tid) else {
        return Ok(());
    };
    // SAFETY: a valid map value pointer; only this thread uses its entry. The entry is kept
    // for the thread's next read and marked as ended (`buf` 0) instead of deleted.
    let pending = unsafe {
        let pending = *p;
        (*p).buf = 0;
        (*p).want_sk = 0;
        pending
    };
    if pending.buf == 0 {
        return Ok(());
    }
    // `want_sk` is set by sock_recv_length when this read returned an upstream's first
    // response bytes.
    if pending.want_sk == 0 || sys_ret(ctx)? < 12 {
        return Ok(());
    }
    let sk = pending.want_sk;
    // SAFETY: copied out at once.
    let Some(info) = (unsafe { SOCKS.get(&sk) }).copied() else {
        return Ok(());
    };
    if info.role != ROLE_UPSTREAM {
        return Ok(());
    }
    let Some(status) = user_status(pending.buf) else {
        return Ok(());
    };
    emit_status(EventKind::UpstreamResponse, sk, &info, status, via);
    Ok(())
}
