//! connect() system calls: the destination asked for, the start of the handshake as seen when
//! connect() returns, and errors that never reach the wire (EADDRNOTAVAIL, ENETUNREACH).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    event::{ConnectFailed, ConnectStart, EventKind, FAIL_SYSCALL, ROLE_UPSTREAM},
    net::{AF_INET, AF_INET6, SockTuple},
};

use crate::{
    kernel::{current_comm, fd_to_sk, sk_tuple, sys_arg, sys_ret, watched_thread},
    maps::{CONNECTS, F_NO_WIRE, PendingConnect, SOCKS, SockInfo, emit, link_to_client, now, put},
};

const EINTR: i32 = 4;
const EISCONN: i32 = 106;
const EALREADY: i32 = 114;
const EINPROGRESS: i32 = 115;

/// `struct sockaddr_in6`, whose first bytes are laid out like `struct sockaddr_in`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawSockaddr {
    family: u16,
    port: u16,
    v4_or_flowinfo: [u8; 4],
    v6: [u8; 16],
}

/// Hook: tracepoint `syscalls:sys_enter_connect`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Result<(), i32> {
    if !watched_thread(bpf_get_current_pid_tgid()) {
        return Ok(());
    }
    let uaddr = sys_arg(ctx, 1)?;
    // A sockaddr_in is only 16 bytes and may end at a page boundary, so read it on its own
    // first and the IPv6 part only for AF_INET6.
    // SAFETY: bpf_probe_read_user fails instead of faulting.
    let head: [u8; 8] = unsafe { bpf_probe_read_user(uaddr as *const [u8; 8])? };
    let family = u16::from_ne_bytes([head[0], head[1]]) as u8;
    let mut tuple = SockTuple {
        family,
        rport: u16::from_be_bytes([head[2], head[3]]),
        ..SockTuple::default()
    };
    if family == AF_INET {
        tuple.raddr[..4].copy_from_slice(&head[4..8]);
    } else if family == AF_INET6 {
        // SAFETY: as above.
        let full: RawSockaddr = unsafe { bpf_probe_read_user(uaddr as *const RawSockaddr)? };
        tuple.raddr = full.v6;
    } else {
        return Ok(());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let fd = sys_arg(ctx, 0)?;
    let pending = PendingConnect {
        start_ns: now(),
        sk: 0,
        tuple,
        fd: fd as u32,
        _pad: 0,
    };
    put(&CONNECTS, tid, &pending);
    Ok(())
}

/// Hook: tracepoint `syscalls:sys_exit_connect`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = CONNECTS.get_ptr_mut(&tid) else {
        return Ok(());
    };
    // SAFETY: a valid map value pointer; only this thread uses its entry, which is kept for its
    // next connect() and marked as ended (`start_ns` 0) instead of deleted.
    let pending = unsafe {
        let pending = *p;
        (*p).start_ns = 0;
        pending
    };
    if pending.start_ns == 0 {
        return Ok(());
    }
    let ret = sys_ret(ctx)?;
    let err = (-ret) as i32;
    let sk = pending.sk;
    let on_wire = match SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer; the connecting thread holds the socket here.
        Some(p) if sk != 0 && unsafe { (*p).flags } & F_NO_WIRE == 0 => Some(p),
        _ => None,
    };
    if ret == 0 || err == EINPROGRESS {
        if let Some(p) = on_wire {
            // SAFETY: as above, used within this program run.
            let info = unsafe { &mut *p };
            // The source port and address are chosen by now: kept for the socket's later
            // records, so that they need not read the socket again.
            let tuple = sk_tuple(sk);
            info.tuple = tuple;
            let payload = ConnectStart {
                syn_ns: info.start_ns,
            };
            emit(EventKind::ConnectStart, sk, info, &tuple, now(), payload);
        }
        return Ok(());
    }
    // Retries of a connect in progress, and a signal interrupting a blocking one, are not
    // failures: the handshake goes on. A socket that reached the wire reports its own failure.
    if err == EALREADY || err == EISCONN || err == EINTR || on_wire.is_some() {
        return Ok(());
    }
    // A repeated connect() on a socket whose handshake started in an earlier call returns the
    // handshake's error (HAProxy learns ICMP errors this way). Keep it for the socket's own
    // failure record instead of reporting a second failure.
    if sk == 0 {
        let earlier = fd_to_sk(pending.fd);
        if let Some(p) = SOCKS.get_ptr_mut(&earlier) {
            // SAFETY: a valid map value pointer, used within this program run.
            let info = unsafe { &mut *p };
            if info.flags & F_NO_WIRE == 0 {
                if info.soft_err == 0 {
                    info.soft_err = err;
                }
                return Ok(());
            }
        }
    }
    let ts = now();
    let mut info = SockInfo::new(pid_tgid, current_comm(), ts, ROLE_UPSTREAM, 0);
    info.start_ns = pending.start_ns;
    link_to_client(&mut info);
    let payload = ConnectFailed {
        duration_ns: ts - pending.start_ns,
        errno: err,
        syn_retransmits: 0,
        source: FAIL_SYSCALL,
        _pad: [0; 7],
    };
    emit(
        EventKind::ConnectFailed,
        sk,
        &info,
        &pending.tuple,
        ts,
        payload,
    );
    Ok(())
}
