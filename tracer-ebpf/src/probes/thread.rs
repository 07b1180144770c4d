//! Thread names changing: exec() and renames. The process filter's answers are cached per CPU
//! by thread id (see `kernel::watched_thread`); a thread that changes its name may change its
//! answer, so every cached answer is asked again after one.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::kernel::FILTER_GEN;

/// Hook: BTF tracepoint `sched:sched_process_exec(struct task_struct *p, pid_t old_pid,
/// struct linux_binprm *bprm)`, after a successful exec(). Checked on 6.18.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> u32 {
    new_generation();
    0
}

/// Hook: BTF tracepoint `task:task_rename(struct task_struct *task, const char *comm)`, from
/// prctl(PR_SET_NAME) and writes to /proc/PID/comm. Checked on 6.18.
#[btf_tracepoint(function = "task_rename")]
pub fn task_rename(_ctx: BtfTracePointContext) -> u32 {
    new_generation();
    0
}

#[inline(always)]
fn new_generation() {
    // SAFETY: a plain global. Two CPUs racing may store the same new value, which still differs
    // from the one every cached answer carries.
    unsafe {
        let g = core::ptr::read_volatile(&raw const FILTER_GEN);
        core::ptr::write_volatile(&raw mut FILTER_GEN, g.wrapping_add(1));
    }
}
