//! Connections accepted by watched processes (the client side of a proxy).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::event::{Accepted, EventKind, ROLE_CLIENT};

use crate::{
    kernel::{current_comm, fd_to_sk, is_tcp, off, read, sk_tuple, sys_ret, watched_thread},
    maps::{F_ESTABLISHED, FLOWS, SockInfo, emit, flow_key, now, track},
};

/// Hook: tracepoint `syscalls:sys_exit_accept4`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = try_accept_exit(&ctx);
    0
}

/// Hook: tracepoint `syscalls:sys_exit_accept`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_accept_exit(&ctx);
    0
}

/// No tracepoint sees an accepted socket together with its new owner, so the socket is found
/// from the returned descriptor.
fn try_accept_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let ret = sys_ret(ctx)?;
    if ret < 0 {
        return Ok(());
    }
    if !watched_thread(bpf_get_current_pid_tgid()) {
        return Ok(());
    }
    let comm = current_comm();
    let sk = fd_to_sk(ret as u32);
    if sk == 0 || !is_tcp(sk) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let ts = now();
    let mut info = SockInfo::new(pid_tgid, comm, ts, ROLE_CLIENT, F_ESTABLISHED);
    // Filled in at the socket's first read or write, where a trusted pointer exists.
    info.cookie = read::<u64>(sk, off!(skc_cookie));
    let tuple = sk_tuple(sk);
    info.tuple = tuple;
    if !track(sk, &info) {
        return Ok(());
    }
    let _ = FLOWS.insert(&flow_key(&tuple), &sk, 0);
    let payload = Accepted {
        fd: ret as i32,
        _pad: 0,
    };
    emit(EventKind::Accepted, sk, &info, &tuple, ts, payload);
    Ok(())
}
