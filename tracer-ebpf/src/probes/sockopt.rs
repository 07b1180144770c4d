//! getsockopt(SO_ERROR): the error an application reads for a failed non-blocking connect.
//! Reading it clears it from the socket, so it is kept here for the socket's failure record.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    kernel::{current_comm, fd_to_sk, sys_arg, sys_ret, watched_current},
    maps::{PendingSockopt, SOCKOPTS, SOCKS},
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
    let comm = current_comm();
    if !watched_current(&comm) {
        return Ok(());
    }
    let (fd, optval) = (sys_arg(ctx, 0)?, sys_arg(ctx, 3)?);
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = PendingSockopt {
        optval,
        fd: fd as u32,
        _pad: 0,
    };
    SOCKOPTS.insert(&tid, &pending, 0).map_err(|e| e as i32)
}

/// Hook: tracepoint `syscalls:sys_exit_getsockopt`. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_getsockopt")]
pub fn sys_exit_getsockopt(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out at once.
    let Some(pending) = (unsafe { SOCKOPTS.get(&tid) }).copied() else {
        return Ok(());
    };
    let _ = SOCKOPTS.remove(&tid);
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
