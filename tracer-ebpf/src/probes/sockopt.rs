//! getsockopt(SO_ERROR): the error an application reads for a failed non-blocking connect.
//! Reading it clears it from the socket, so it is kept here for the socket's failure record.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    kernel::{fd_to_sk, sys_arg, sys_ret},
    maps::{PendingSockopt, SOCKOPTS, SOCKS, owner_watched, put},
};

const SOL_SOCKET: u64 = 1;
const SO_ERROR: u64 = 4;

/// Hook: tracepoint `syscalls:sys_enter_getsockopt`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_enter_getsockopt")]
pub fn sys_enter_getsockopt(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Result<(), i32> {
    let (level, optname) = (sys_arg(ctx, 1)?, sys_arg(ctx, 2)?);
    if level & 0xffff_ffff != SOL_SOCKET || optname & 0xffff_ffff != SO_ERROR {
        return Ok(());
    }
    // Only a socket the tracer tracks can take the error, and every tracked socket's owner is
    // in OWNERS: one lookup instead of the full process filter. nginx reads SO_ERROR before
    // every request it sends upstream.
    let pid_tgid = bpf_get_current_pid_tgid();
    if !owner_watched(pid_tgid) {
        return Ok(());
    }
    let (fd, optval) = (sys_arg(ctx, 0)?, sys_arg(ctx, 3)?);
    let pending = PendingSockopt {
        optval,
        fd: fd as u32,
        _pad: 0,
    };
    put(&SOCKOPTS, pid_tgid as u32, &pending);
    Ok(())
}

/// Hook: tracepoint `syscalls:sys_exit_getsockopt`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_getsockopt")]
pub fn sys_exit_getsockopt(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(p) = SOCKOPTS.get_ptr_mut(&tid) else {
        return Ok(());
    };
    // SAFETY: a valid map value pointer; only this thread uses its entry, which is kept for its
    // next call and marked as ended (`optval` 0) instead of deleted.
    let pending = unsafe {
        let pending = *p;
        (*p).optval = 0;
        pending
    };
    if pending.optval == 0 {
        return Ok(());
    }
    let ret = sys_ret(ctx)?;
    if ret != 0 {
        return Ok(());
    }
    // SAFETY: bpf_probe_read_user fails instead of faulting.
    let err: i32 = unsafe { bpf_probe_read_user(pending.optval as *const i32)? };
    if err == 0 {
        return Ok(());
    }
    let sk = fd_to_sk(pending.fd);
    if let Some(p) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer, used within this program run.
        let info = unsafe { &mut *p };
        if info.app_err == 0 {
            info.app_err = err;
        }
    }
    Ok(())
}
