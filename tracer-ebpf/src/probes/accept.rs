//! Connections accepted by watched processes (the client side of a proxy).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    event::{Accepted, EventKind, ROLE_CLIENT},
    maps::Counter,
};

use crate::{
    kernel::{current_comm, is_tcp, off, read, sk_tuple, watched_current},
    maps::{F_ESTABLISHED, FLOWS, SOCKS, SockInfo, count, emit, flow_key, now},
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
/// from the returned descriptor: task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
fn try_accept_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let offset = off!(tp_accept_exit_ret) as usize;
    // SAFETY: the offset comes from this tracepoint's format file; the read is checked.
    let ret: i64 = unsafe { ctx.read_at(offset)? };
    if ret < 0 {
        return Ok(());
    }
    let comm = current_comm();
    if !watched_current(&comm) {
        return Ok(());
    }
    // SAFETY: the current task pointer, only ever used with probe reads.
    let task = unsafe { bpf_get_current_task() };
    let files = read::<u64>(task, off!(task_files));
    let fdt = read::<u64>(files, off!(files_fdt));
    let fds = read::<u64>(fdt, off!(fdtable_fd));
    let file = read::<u64>(fds, (ret as u32).wrapping_mul(8));
    let sock = read::<u64>(file, off!(file_private_data));
    let sk = read::<u64>(sock, off!(socket_sk));
    if sk == 0 || !is_tcp(sk) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let ts = now();
    let info = SockInfo {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        comm,
        start_ns: ts,
        // Filled in at the socket's first read or write, where a trusted pointer exists.
        cookie: read::<u64>(sk, off!(skc_cookie)),
        req_start_ns: 0,
        req_bytes: 0,
        last_rx_ns: ts,
        syn_retrans: 0,
        retrans: 0,
        requests: 0,
        role: ROLE_CLIENT,
        flags: F_ESTABLISHED,
        _pad: [0; 2],
    };
    if SOCKS.insert(&sk, &info, 0).is_err() {
        count(Counter::MapFull);
        return Ok(());
    }
    let tuple = sk_tuple(sk);
    let _ = FLOWS.insert(&flow_key(&tuple), &sk, 0);
    let payload = Accepted {
        fd: ret as i32,
        _pad: 0,
    };
    emit(EventKind::Accepted, sk, &info, &tuple, ts, payload);
    Ok(())
}
