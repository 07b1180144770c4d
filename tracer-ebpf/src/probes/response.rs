//! HTTP status lines: the one a watched proxy writes to a client (the response it answered)
//! and the one it reads from an upstream (the response it was given).
//!
//! They are read in the socket tracepoints, which already run inside every read and write of
//! a watched socket, from the user buffer of the system call around them: no hook on the
//! read and write system calls themselves, which every process on the host would pay for.
//! Only the first 12 bytes of a buffer are read, and only after the cheap tests passed: the
//! socket is watched and has the right role.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_user;
use tracer_common::{
    event::{
        EventKind, Response, VIA_OTHER, VIA_READ, VIA_READV, VIA_RECVFROM, VIA_RECVMSG,
        VIA_SENDMSG, VIA_SENDTO, VIA_TLS, VIA_WRITE, VIA_WRITEV,
    },
    offsets::UNKNOWN,
};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{Task, msg_user_start, rx_bytes_and_write_seq, syscall_args, user_status},
    maps::{F_STATUS_MARK, SockInfo, TLS_STATUS, emit, now},
    probes::hold::{release_before_failure, release_upstream_of},
};

/// `struct user_msghdr.msg_iov`: user-space ABI, identical on every 64-bit kernel.
const MSGHDR_IOV: u64 = 16;

/// Set by the SSL_write uprobe once it has seen a status line: until then no write looks for
/// one it left.
#[unsafe(no_mangle)]
pub(crate) static mut TLS_SEEN: u8 = 0;

/// After a write to client socket `sk` by the running thread `tid` (`sock_send_length`): the
/// status line at the start of the system call's buffer, or the one SSL_write was handed.
#[inline(always)]
pub fn on_client_write(sk: u64, info: &mut SockInfo, tid: u32) {
    let Some((status, via)) =
        syscall_status(Task::current()).or_else(|| tls_status(tid).map(|status| (status, VIA_TLS)))
    else {
        return;
    };
    on_client_status(sk, info, tid, status, via);
}

/// As a send to client socket `skp` begins (`tcp_sendmsg_locked`, given the send's `msg`):
/// the status line at the start of its data, read through the msghdr instead of the saved
/// registers. The call it came by is asked only for a reported status. This runs before the
/// data is queued, so a send that queues nothing and is tried again (EAGAIN, or a blocking
/// send waiting for room) shows the same line twice: the second finds `write_seq` where the
/// first left it, and is not reported.
#[inline(always)]
pub fn on_client_send(skp: *const c_void, msg: *const u8, info: &mut SockInfo, tid: u32) {
    let status = match msg_user_start(msg).and_then(user_status) {
        Some(status) => (status, syscall_via()),
        // Asked also when the send has no user buffer: with kernel TLS, what SSL_write was
        // handed reaches TCP as pages.
        None => match tls_status(tid) {
            Some(status) => (status, VIA_TLS),
            None => return,
        },
    };
    let (_, seq) = rx_bytes_and_write_seq(skp);
    if info.flags & F_STATUS_MARK != 0 && info.seq_mark == seq {
        return;
    }
    info.flags |= F_STATUS_MARK;
    info.seq_mark = seq;
    on_client_status(skp as u64, info, tid, status.0, status.1);
}

/// A reported status line `status` leaving on client socket `sk`, written by thread `tid`.
#[inline(always)]
fn on_client_status(sk: u64, info: &mut SockInfo, tid: u32, status: u16, via: u8) {
    // The writer, not the acceptor, is the thread that answered.
    info.tid = tid;
    release_upstream_of(info);
    release_before_failure(sk, info);
    emit_status(EventKind::Response, sk, info, status, via, now());
}

/// Writes a status line `status`, read or written by call `via`, as a record of `kind`.
#[inline(always)]
pub fn emit_status(kind: EventKind, sk: u64, info: &SockInfo, status: u16, via: u8, ts: u64) {
    let payload = Response {
        status,
        via,
        _pad: [0; 5],
    };
    emit(kind, sk, info, &info.tuple_of(sk), ts, payload);
}

/// A status line handed to SSL_write by this thread leaves in its next (encrypted) write.
#[inline(always)]
fn tls_status(tid: u32) -> Option<u16> {
    // SAFETY: a plain global; a stale read only delays the first TLS status by one write.
    if unsafe { core::ptr::read_volatile(&raw const TLS_SEEN) } == 0 {
        return None;
    }
    // SAFETY: copied out at once.
    let status = (unsafe { TLS_STATUS.get(&tid) }).copied()?;
    let _ = TLS_STATUS.remove(&tid);
    Some(status)
}

/// The status line at the start of the user buffer of the read or write system call the
/// running task is in, and which call that is. Other calls (io_uring, sendfile, splice) and
/// kernels whose registers user space could not describe give none.
#[inline(always)]
pub fn syscall_status(task: Task) -> Option<(u16, u8)> {
    let (via, [arg]) = current_call::<1, 1>(task)?;
    // SAFETY: user-space reads through bpf_probe_read_user fail instead of faulting.
    let buf: u64 = unsafe {
        match via {
            VIA_WRITEV | VIA_READV => bpf_probe_read_user(arg as *const u64).ok()?,
            VIA_SENDMSG | VIA_RECVMSG => {
                let iov: u64 = bpf_probe_read_user((arg + MSGHDR_IOV) as *const u64).ok()?;
                bpf_probe_read_user(iov as *const u64).ok()?
            }
            _ => arg,
        }
    };
    Some((user_status(buf)?, via))
}

/// Which call the running task sends by, for a status line read through the msghdr: one of
/// the write system calls, or `VIA_OTHER` (io_uring, a kernel sender).
#[inline(always)]
fn syscall_via() -> u8 {
    current_call::<0, 0>(Task::current()).map_or(VIA_OTHER, |(via, [])| via)
}

/// The read or write system call the running task `task` is in, and its arguments `FROM..FROM
/// + N`; none for any other call, or outside one.
#[inline(always)]
fn current_call<const FROM: usize, const N: usize>(task: Task) -> Option<(u8, [u64; N])> {
    let mut nr = UNKNOWN;
    let args = syscall_args::<FROM, N>(task, &mut nr);
    if nr == UNKNOWN {
        return None;
    }
    Some((via_of(nr)?, args))
}

/// Which read or write system call number `nr` is on this architecture.
#[inline(always)]
fn via_of(nr: u32) -> Option<u8> {
    macro_rules! nr {
        ($name:ident) => {
            // SAFETY: OFFSETS is a plain static; reading a field of it is always valid.
            unsafe { core::ptr::read_volatile(&crate::kernel::OFFSETS.syscalls.$name) }
        };
    }
    Some(if nr == nr!(write) {
        VIA_WRITE
    } else if nr == nr!(writev) {
        VIA_WRITEV
    } else if nr == nr!(sendto) {
        VIA_SENDTO
    } else if nr == nr!(sendmsg) {
        VIA_SENDMSG
    } else if nr == nr!(read) {
        VIA_READ
    } else if nr == nr!(readv) {
        VIA_READV
    } else if nr == nr!(recvfrom) {
        VIA_RECVFROM
    } else if nr == nr!(recvmsg) {
        VIA_RECVMSG
    } else {
        return None;
    })
}
