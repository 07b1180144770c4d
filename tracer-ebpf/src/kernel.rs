//! Reading kernel memory through the offsets that user space found in BTF, and the process
//! filter. Nothing here knows a struct layout at compile time.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf,
    bpf_probe_read_kernel, bpf_task_pt_regs, generated::bpf_skc_to_tcp_sock,
};
use tracer_common::{
    config::{Filter, MAX_COMMS},
    net::{AF_INET, AF_INET6, SockTuple},
    offsets::{KernelOffsets, UNKNOWN},
};

use crate::maps::{PIDS, THREAD_CACHE, THREAD_SLOTS, ThreadKey, WATCHED};

/// Field offsets, filled in by user space before load (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets::UNSET;

/// Which processes to watch, filled in by user space before load.
#[unsafe(no_mangle)]
static FILTER: Filter = Filter {
    comms: [[0; 2]; MAX_COMMS],
    n_comms: 0,
    n_pids: 0,
    ephemeral_lo: 32768,
    ephemeral_hi: 60999,
    wake_bytes: 0,
    drop_ignore: [0; 4],
    statuses: [0; 10],
    ttfb_every: 1,
    hold: 0,
};

/// Reads one offset. The volatile read keeps the compiler from folding in the placeholder value
/// the object file carries: the loader rewrites `.rodata` before the verifier sees it.
macro_rules! off {
    ($($field:ident).+) => {
        // SAFETY: OFFSETS is a plain static; reading a field of it is always valid.
        unsafe { core::ptr::read_volatile(&crate::kernel::OFFSETS.$($field).+) }
    };
}
pub(crate) use off;

macro_rules! filter {
    ($field:ident) => {
        // SAFETY: FILTER is a plain static; reading a field of it is always valid.
        unsafe { core::ptr::read_volatile(&FILTER.$field) }
    };
}

/// TCP states, from include/net/tcp_states.h (a stable uapi-visible enum).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_FIN_WAIT1: i32 = 4;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LISTEN: i32 = 10;

pub const IPPROTO_TCP: u16 = 6;
pub const SOCK_STREAM: u16 = 1;

/// Reads a `T` at `base + offset`, or the default when the offset is unknown or the read faults.
#[inline(always)]
pub fn read<T: Default>(base: u64, offset: u32) -> T {
    if base == 0 || offset == UNKNOWN {
        return T::default();
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.unwrap_or_default()
}

/// Reads the TCP state of a socket.
#[inline(always)]
pub fn sk_state(sk: u64) -> u8 {
    read::<u8>(sk, off!(skc_state))
}

/// Whether `sk` is a TCP stream socket of an internet family.
#[inline(never)]
pub fn is_tcp(sk: u64) -> bool {
    let family = read::<u16>(sk, off!(skc_family)) as u8;
    (family == AF_INET || family == AF_INET6)
        && read::<u16>(sk, off!(sk_protocol)) == IPPROTO_TCP
        && read::<u16>(sk, off!(sk_type)) == SOCK_STREAM
}

/// Reads both ends of a socket.
// Out of line, like the other multi-read helpers: LLVM gives each inlined probe read its own
// stack slot, and the callers would not fit in the 512-byte BPF stack.
#[inline(never)]
pub fn sk_tuple(sk: u64) -> SockTuple {
    let mut t = SockTuple {
        family: read::<u16>(sk, off!(skc_family)) as u8,
        lport: u16::from_be(read::<u16>(sk, off!(inet_sport))),
        rport: u16::from_be(read::<u16>(sk, off!(skc_dport))),
        ..SockTuple::default()
    };
    if t.family == AF_INET6 {
        t.laddr = read::<[u8; 16]>(sk, off!(skc_v6_rcv_saddr));
        t.raddr = read::<[u8; 16]>(sk, off!(skc_v6_daddr));
    } else {
        let l = read::<[u8; 4]>(sk, off!(skc_rcv_saddr));
        let r = read::<[u8; 4]>(sk, off!(skc_daddr));
        t.laddr = [l[0], l[1], l[2], l[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        t.raddr = [r[0], r[1], r[2], r[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    }
    t
}

/// The running task's comm, as two words.
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or_default()
}

/// Raised by every exec() and thread rename on the host (`probes::thread`): cached answers of
/// [`watched_thread`] carry the generation they were given in. Every socket read and write
/// reads it, so it starts at 1: an initialised global goes to `.data`, a map of its own, and
/// does not share a cache line with the `.bss` globals that programs write.
#[unsafe(no_mangle)]
pub(crate) static mut FILTER_GEN: u32 = 1;

/// Whether the running thread `pid_tgid` belongs to a watched process, answered from this
/// CPU's cache when it holds the thread's answer of the current generation: one helper call
/// and an inlined array lookup. Socket reads and writes ask this first, so that other
/// processes' I/O costs the least possible.
#[inline(always)]
pub fn watched_thread(pid_tgid: u64) -> bool {
    let tid = pid_tgid as u32;
    // SAFETY: a plain global; a stale read at worst answers from the previous generation once.
    let generation = unsafe { core::ptr::read_volatile(&raw const FILTER_GEN) } & 0x7fff_ffff;
    let key = ((tid as u64) << 32) | ((generation as u64) << 1);
    let slot = THREAD_CACHE.get_ptr_mut((tid ^ (tid >> 5)) % THREAD_SLOTS);
    if let Some(p) = slot {
        // SAFETY: a per-CPU slot of this map, read as one word.
        let v = unsafe { core::ptr::read_volatile(p) };
        if v & !1 == key {
            return v & 1 != 0;
        }
    }
    let watched = watched_current(&current_comm());
    if let Some(p) = slot {
        // SAFETY: as above, written as one word.
        unsafe { core::ptr::write_volatile(p, key | watched as u64) };
    }
    watched
}

/// Whether the running task belongs to a watched process, on a miss of [`watched_thread`].
/// The answer is remembered per thread and name, behind the per-CPU cache.
#[inline(never)]
fn watched_current(comm: &[u8; 16]) -> bool {
    let key = ThreadKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: *comm,
    };
    // SAFETY: a lookup of a plain value.
    if let Some(known) = unsafe { WATCHED.get(&key) } {
        return *known != 0;
    }
    let watched = filter_current(comm);
    let _ = WATCHED.insert(&key, &(watched as u8), 0);
    watched
}

/// The process filter itself: a watched thread name, a `--pid`, or a child of one.
#[inline(always)]
fn filter_current(comm: &[u8; 16]) -> bool {
    let words = [
        u64::from_ne_bytes([
            comm[0], comm[1], comm[2], comm[3], comm[4], comm[5], comm[6], comm[7],
        ]),
        u64::from_ne_bytes([
            comm[8], comm[9], comm[10], comm[11], comm[12], comm[13], comm[14], comm[15],
        ]),
    ];
    let n = filter!(n_comms) as usize;
    let mut i = 0;
    while i < MAX_COMMS {
        if i >= n {
            break;
        }
        // SAFETY: FILTER is a plain static and `i` is in bounds.
        let want = unsafe { core::ptr::read_volatile(&FILTER.comms[i]) };
        if want[0] == words[0] && want[1] == words[1] {
            return true;
        }
        i += 1;
    }
    if filter!(n_pids) == 0 {
        return false;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a lookup in a hash map of plain values.
    if unsafe { PIDS.get(&tgid) }.is_some() {
        return true;
    }
    // Worker processes of a proxy are children of the master the user named with --pid.
    // SAFETY: the helper returns the current task pointer, only ever used with probe reads.
    let task = unsafe { bpf_get_current_task() };
    let parent = read::<u64>(task, off!(task_real_parent));
    let ptgid = read::<u32>(parent, off!(task_tgid));
    // SAFETY: as above.
    ptgid != 0 && unsafe { PIDS.get(&ptgid) }.is_some()
}

/// Whether a drop reason is one the user-space filter marked as not being packet loss.
#[inline(always)]
pub fn drop_ignored(reason: u32) -> bool {
    let word = (reason / 64) as usize;
    if word >= 4 {
        return false;
    }
    // SAFETY: FILTER is a plain static and `word` is in bounds.
    let w = unsafe { core::ptr::read_volatile(&FILTER.drop_ignore[word]) };
    w & (1 << (reason % 64)) != 0
}

/// The running task, as the typed pointer `bpf_get_current_task_btf` gives: programs load
/// from it directly, and pass it to helpers that take a task.
#[derive(Clone, Copy)]
pub struct Task(*const u8);

impl Task {
    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: the helper has no preconditions and never returns null.
        Task(unsafe { bpf_get_current_task_btf() } as *const u8)
    }

    /// Its `tgid << 32 | pid`, as `bpf_get_current_pid_tgid` gives it, loaded from the task
    /// instead: a program that needs the task anyway saves a helper call, each of which costs
    /// more than 100 ns on a CPU whose returns go through a mitigation thunk.
    #[inline(always)]
    pub fn pid_tgid(self) -> u64 {
        let (pid, tgid) = (off!(task_pid), off!(task_tgid));
        if pid == UNKNOWN || tgid == UNKNOWN {
            return bpf_get_current_pid_tgid();
        }
        // SAFETY: a typed task pointer; offsets from BTF through `.rodata`, checked by the
        // verifier against `struct task_struct`.
        unsafe {
            let pid = core::ptr::read_volatile(self.0.add(pid as usize) as *const u32);
            let tgid = core::ptr::read_volatile(self.0.add(tgid as usize) as *const u32);
            (tgid as u64) << 32 | pid as u64
        }
    }
}

/// Arguments `FROM..FROM + N` of the system call the running task `task` is in, from the user
/// registers it saved on entry; `nr` is set to the call's number, or stays UNKNOWN (not in a
/// system call, or registers user space could not describe). Valid from the call's entry to
/// its `sys_exit` tracepoint.
// Out of line, so that the registers pointer (a typed kernel pointer to the verifier) lives
// only here: the compiler cannot reuse its register for another value.
#[inline(never)]
pub fn syscall_args<const FROM: usize, const N: usize>(task: Task, nr: &mut u32) -> [u64; N] {
    let mut args = [0u64; N];
    let nr_off = off!(regs_syscall);
    if nr_off == UNKNOWN {
        return args;
    }
    // SAFETY: the helper returns the running task's saved user registers, a typed kernel
    // pointer the verifier lets programs load from directly (a faulting load reads 0). The
    // offsets come from BTF through `.rodata`, which the verifier reads as constants, so each
    // load is checked against `struct pt_regs`. Direct loads instead of bpf_probe_read_kernel
    // save a helper call each: these run in every response the proxy reads and writes.
    unsafe {
        let regs = bpf_task_pt_regs(task.0 as *mut _) as *const u8;
        // -1 (not in a system call) reads as UNKNOWN.
        *nr = core::ptr::read_volatile(regs.add(nr_off as usize) as *const u64) as u32;
        let mut i = 0;
        while i < N && FROM + i < 4 {
            let off = core::ptr::read_volatile(&OFFSETS.regs_args[FROM + i]);
            if off != UNKNOWN {
                args[i] = core::ptr::read_volatile(regs.add(off as usize) as *const u64);
            }
            i += 1;
        }
    }
    args
}

/// `tcp_sock.bytes_received` and `tcp_sock.write_seq` of socket `skp` (a tracepoint's typed
/// `struct sock *`), for one helper call: the cast to `tcp_sock` gives a typed pointer, loaded
/// from directly, where two kernel reads would cost two calls.
#[inline(always)]
pub fn rx_bytes_and_write_seq(skp: *const c_void) -> (u64, u32) {
    // SAFETY: the helper checks that the socket is a TCP one and returns null otherwise.
    let tp = unsafe { bpf_skc_to_tcp_sock(skp as *mut c_void) } as *const u8;
    if tp.is_null() {
        return (0, 0);
    }
    let (rx, seq) = (off!(tcp_bytes_received), off!(tcp_write_seq));
    // SAFETY: offsets from BTF through `.rodata`, which the verifier reads as constants and
    // checks against `struct tcp_sock`; a faulting load reads 0.
    unsafe {
        (
            if rx == UNKNOWN {
                0
            } else {
                core::ptr::read_volatile(tp.add(rx as usize) as *const u64)
            },
            if seq == UNKNOWN {
                0
            } else {
                core::ptr::read_volatile(tp.add(seq as usize) as *const u32)
            },
        )
    }
}

/// Whether the send of `tcp_sendmsg_locked`'s `struct msghdr *` stands inside a buffer it
/// has begun (`iov_offset` > 0): a later pass of a send that fills more than one segment,
/// whose first pass was seen. One load from the typed msghdr.
#[inline(always)]
pub fn msg_mid_buffer(msg: *const u8) -> bool {
    let (iter, pos) = (off!(msg_iter.iter), off!(msg_iter.iov_offset));
    if iter == UNKNOWN || pos == UNKNOWN {
        return false;
    }
    // SAFETY: as in `msg_user_start`.
    unsafe { core::ptr::read_volatile(msg.add(iter as usize + pos as usize) as *const u64) != 0 }
}

/// The user address at which the data of a send begins, from the `struct msghdr *` of
/// `tcp_sendmsg_locked`, when its iterator stands at the start of a user buffer: the one
/// buffer of write/send (`ITER_UBUF`), or the current one of writev/sendmsg (`ITER_IOVEC`).
/// Pages spliced in by sendfile, and a later pass of a send that fills more than one segment,
/// give none. Loads straight from the typed msghdr; an array costs one kernel read for the
/// buffer's address, which its typed pointer (a `__user` union member to BTF) does not give.
#[inline(always)]
pub fn msg_user_start(msg: *const u8) -> Option<u64> {
    if msg_mid_buffer(msg) {
        return None;
    }
    let (iter, ty, ptr) = (
        off!(msg_iter.iter),
        off!(msg_iter.iter_type),
        off!(msg_iter.ptr),
    );
    if iter == UNKNOWN || ty == UNKNOWN || ptr == UNKNOWN {
        return None;
    }
    // SAFETY: `msg` is the tracepoint's typed `struct msghdr *`; the offsets come from BTF
    // through `.rodata`, so the verifier checks each load against the struct.
    let (kind, ptr) = unsafe {
        let it = msg.add(iter as usize);
        (
            core::ptr::read_volatile(it.add(ty as usize)) as u32,
            core::ptr::read_volatile(it.add(ptr as usize) as *const u64),
        )
    };
    if ptr == 0 {
        return None;
    }
    if kind == off!(msg_iter.type_ubuf) {
        return Some(ptr);
    }
    if kind == off!(msg_iter.type_iovec) {
        let base = read::<u64>(ptr, off!(msg_iter.iov_base));
        return (base != 0).then_some(base);
    }
    None
}

/// The reported status of the status line at user address `buf`, if the buffer starts with
/// one: the first 12 bytes are read, nothing more.
#[inline(always)]
pub fn user_status(buf: u64) -> Option<u16> {
    // SAFETY: user-space reads through bpf_probe_read_user fail instead of faulting.
    let head: [u8; 12] =
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(buf as *const [u8; 12]) }.ok()?;
    reported_status(&head)
}

/// The status of an HTTP/1.x status line (`HTTP/1.1 502 …`), if `head` starts with one and
/// the status is one the user asked for.
#[inline(always)]
pub fn reported_status(head: &[u8; 12]) -> Option<u16> {
    if head[0] != b'H'
        || head[1] != b'T'
        || head[2] != b'T'
        || head[3] != b'P'
        || head[4] != b'/'
        || head[5] != b'1'
        || head[6] != b'.'
        || head[8] != b' '
    {
        return None;
    }
    let d = |b: u8| -> Option<u16> { b.is_ascii_digit().then_some((b - b'0') as u16) };
    let status = d(head[9])? * 100 + d(head[10])? * 10 + d(head[11])?;
    let word = (status / 64) as usize;
    if word >= 10 {
        return None;
    }
    // SAFETY: FILTER is a plain static and `word` is in bounds.
    let w = unsafe { core::ptr::read_volatile(&FILTER.statuses[word]) };
    (w & (1 << (status % 64)) != 0).then_some(status)
}

/// One upstream request in this many gets its own `ttfb` record (never 0).
#[inline(always)]
pub fn ttfb_every() -> u32 {
    filter!(ttfb_every).max(1)
}

/// Whether the routine records of young upstream connections are held (`sock::Held`).
#[inline(always)]
pub fn hold() -> bool {
    filter!(hold) != 0
}

/// Bytes of routine records one CPU writes before it wakes the reader anyway.
#[inline(always)]
pub fn wake_bytes() -> u64 {
    filter!(wake_bytes) as u64
}

/// Whether a local port lies in the ephemeral range, i.e. the socket was most likely opened
/// actively. Used only for sockets that existed before the tracer started.
#[inline(always)]
pub fn is_ephemeral(port: u16) -> bool {
    port >= filter!(ephemeral_lo) && port <= filter!(ephemeral_hi)
}
