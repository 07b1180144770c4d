//! getsockopt(SO_ERROR): the error an application reads for a failed non-blocking connect.
//! Reading it clears it from the socket, so it is kept here for the socket's failure record.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::offsets::UNKNOWN;

use crate::{
    kernel::{fd_to_sk, sys_ret, syscall_args, watched_thread},
    maps::SOCKS,
};

const SOL_SOCKET: u64 = 1;
const SO_ERROR: u64 = 4;

/// Hook: tracepoint `syscalls:sys_exit_getsockopt`. The arguments come from the registers the
/// task saved on entry, so no entry hook is needed: nginx reads SO_ERROR before every request
/// it sends upstream. Checked on 6.18.
#[tracepoint(category = "syscalls", name = "sys_exit_getsockopt")]
pub fn sys_exit_getsockopt(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    if sys_ret(ctx)? != 0 {
        return Ok(());
    }
    // Only a socket the tracer tracks can take the error, and those belong to watched threads.
    if !watched_thread(bpf_get_current_pid_tgid()) {
        return Ok(());
    }
    let mut nr = UNKNOWN;
    let [fd, level, optname, optval] = syscall_args::<0, 4>(&mut nr);
    if nr == UNKNOWN
        || level & 0xffff_ffff != SOL_SOCKET
        || optname & 0xffff_ffff != SO_ERROR
        || optval == 0
    {
        return Ok(());
    }
    // SAFETY: bpf_probe_read_user fails instead of faulting.
    let err: i32 = unsafe { bpf_probe_read_user(optval as *const i32)? };
    if err == 0 {
        return Ok(());
    }
    let sk = fd_to_sk(fd as u32);
    if let Some(p) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer, used within this program run.
        let info = unsafe { &mut *p };
        if info.app_err == 0 {
            info.app_err = err;
        }
    }
    Ok(())
}
