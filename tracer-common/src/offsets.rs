//! Byte offsets of kernel struct fields, read from BTF by user space at load time and handed to
//! the kernel programs as a read-only global. Nothing here is a compile-time constant: struct
//! layouts move between kernel versions and configurations.

/// Marks an offset that BTF did not provide; programs skip the read and report zero.
pub const UNKNOWN: u32 = u32::MAX;

/// Offsets of the fields the kernel programs read. All are relative to the start of the named
/// struct (`struct sock` begins with its `struct sock_common`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sock / sock_common
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    /// `inet_sock.inet_sport`: unlike `skc_num` it survives the unhash that precedes the
    /// CLOSE state change, and stays 0 when connect() found no free port.
    pub inet_sport: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_cookie: u32,
    pub sk_err: u32,
    pub sk_err_soft: u32,
    pub sk_protocol: u32,
    pub sk_type: u32,
    // struct tcp_sock
    pub tcp_srtt_us: u32,
    pub tcp_total_retrans: u32,
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    /// Next sequence number expected, and how far the application has read: the difference is
    /// what sits unread in the receive queue (a FIN counts one).
    pub tcp_rcv_nxt: u32,
    pub tcp_copied_seq: u32,
    /// Sequence number after the last byte the application queued for sending: how much a
    /// request wrote is the difference between two readings.
    pub tcp_write_seq: u32,
    /// `sock.sk_error_queue`, the errors queued for applications that set IP_RECVERR or
    /// IPV6_RECVERR, and its `prev`, the last of them (the queue itself when it is empty).
    pub sk_error_queue: u32,
    pub sk_error_queue_last: u32,
    /// `sk_buff.cb` plus `sock_exterr_skb.ee`: the `struct sock_extended_err` of a queued error
    /// (`ee_errno`, then `ee_origin`).
    pub skb_exterr: u32,
    // struct sk_buff
    pub skb_sk: u32,
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    // struct task_struct (the process filter's parent check)
    pub task_real_parent: u32,
    pub task_tgid: u32,
    /// `task_struct.pid`, the thread id: with `tgid`, what bpf_get_current_pid_tgid returns.
    pub task_pid: u32,
    // BTF tracepoint argument positions that only some kernels have
    /// Index of `reason` in `tcp_send_reset` (6.10+), or UNKNOWN.
    pub arg_send_reset_reason: u32,
    /// Index of `rx_sk` in `kfree_skb` (6.12+), or UNKNOWN.
    pub arg_kfree_skb_rx_sk: u32,
    // The system call a task is in, from the user registers it saved on entry
    // (`bpf_task_pt_regs`): socket tracepoints know the socket but not the user buffer.
    /// `struct pt_regs` offset of the syscall number (x86-64 `orig_ax`, arm64 `syscallno`).
    pub regs_syscall: u32,
    /// `struct pt_regs` offsets of the first four syscall arguments (x86-64 `di`, `si`, `dx`,
    /// `r10`; arm64 `orig_x0`, `regs[1..4]`). They keep their values until the call returns.
    pub regs_args: [u32; 4],
    /// This architecture's numbers of the syscalls whose buffers can hold a status line.
    pub syscalls: SyscallNumbers,
    /// Where a send's data stands, for `tcp_sendmsg_locked`'s `struct msghdr *` (6.16+): the
    /// iterator's offset in the msghdr, then its type, its offset in the current buffer and
    /// its buffer pointer (`ubuf` for one buffer, `__iov` for several: one union), relative
    /// to the iterator. UNKNOWN where the tracepoint does not exist.
    pub msg_iter: MsgIterOffsets,
}

/// Offsets into `struct msghdr` and `struct iov_iter`, and the iterator types whose data is
/// in user memory (see [`KernelOffsets::msg_iter`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgIterOffsets {
    pub iter: u32,
    pub iter_type: u32,
    pub iov_offset: u32,
    pub ptr: u32,
    /// `struct iovec.iov_base`.
    pub iov_base: u32,
    /// `enum iter_type` values of one user buffer (`ITER_UBUF`) and of an array of them
    /// (`ITER_IOVEC`).
    pub type_ubuf: u32,
    pub type_iovec: u32,
}

impl MsgIterOffsets {
    /// Every offset unknown.
    pub const UNSET: Self = Self {
        iter: UNKNOWN,
        iter_type: UNKNOWN,
        iov_offset: UNKNOWN,
        ptr: UNKNOWN,
        iov_base: UNKNOWN,
        type_ubuf: UNKNOWN,
        type_iovec: UNKNOWN,
    };
}

/// Syscall numbers of the architecture the tracer was built for (UNKNOWN where it has none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallNumbers {
    pub write: u32,
    pub writev: u32,
    pub sendto: u32,
    pub sendmsg: u32,
    pub read: u32,
    pub readv: u32,
    pub recvfrom: u32,
    pub recvmsg: u32,
}

impl SyscallNumbers {
    /// Every number unknown.
    pub const UNSET: Self = Self {
        write: UNKNOWN,
        writev: UNKNOWN,
        sendto: UNKNOWN,
        sendmsg: UNKNOWN,
        read: UNKNOWN,
        readv: UNKNOWN,
        recvfrom: UNKNOWN,
        recvmsg: UNKNOWN,
    };
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 52 * 4);

impl KernelOffsets {
    /// Every offset unknown.
    pub const UNSET: Self = Self {
        skc_daddr: UNKNOWN,
        skc_rcv_saddr: UNKNOWN,
        skc_dport: UNKNOWN,
        inet_sport: UNKNOWN,
        skc_family: UNKNOWN,
        skc_state: UNKNOWN,
        skc_v6_daddr: UNKNOWN,
        skc_v6_rcv_saddr: UNKNOWN,
        skc_cookie: UNKNOWN,
        sk_err: UNKNOWN,
        sk_err_soft: UNKNOWN,
        sk_protocol: UNKNOWN,
        sk_type: UNKNOWN,
        tcp_srtt_us: UNKNOWN,
        tcp_total_retrans: UNKNOWN,
        tcp_bytes_acked: UNKNOWN,
        tcp_bytes_received: UNKNOWN,
        tcp_rcv_nxt: UNKNOWN,
        tcp_copied_seq: UNKNOWN,
        tcp_write_seq: UNKNOWN,
        sk_error_queue: UNKNOWN,
        sk_error_queue_last: UNKNOWN,
        skb_exterr: UNKNOWN,
        skb_sk: UNKNOWN,
        skb_head: UNKNOWN,
        skb_network_header: UNKNOWN,
        skb_protocol: UNKNOWN,
        task_real_parent: UNKNOWN,
        task_tgid: UNKNOWN,
        task_pid: UNKNOWN,
        arg_send_reset_reason: UNKNOWN,
        arg_kfree_skb_rx_sk: UNKNOWN,
        regs_syscall: UNKNOWN,
        regs_args: [UNKNOWN; 4],
        syscalls: SyscallNumbers::UNSET,
        msg_iter: MsgIterOffsets::UNSET,
    };
}

crate::impl_pod!(KernelOffsets);
