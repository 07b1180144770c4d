//! Fills [`KernelOffsets`] from the running kernel's BTF.

use tracer_common::offsets::{KernelOffsets, MsgIterOffsets, SyscallNumbers, UNKNOWN};

use super::btf::{Btf, BtfError};

/// Why the offsets the programs need could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    /// A field the capture cannot work without is missing from BTF.
    #[error("kernel BTF has no {strukt}.{path}, which the tracer needs: {source}")]
    Required {
        strukt: &'static str,
        path: &'static str,
        source: BtfError,
    },
}

/// A field that could not be found but that only part of the capture needs.
#[derive(Debug, Clone)]
pub struct MissingField {
    pub field: String,
    pub error: String,
}

/// The offsets and the optional fields that were missing.
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing: Vec<MissingField>,
}

/// Where the syscall number and the first four arguments sit in the user registers a task
/// saved on syscall entry, as `(struct pt_regs member, extra bytes)`.
#[cfg(target_arch = "x86_64")]
const REGS: [(&str, u32); 5] = [("orig_ax", 0), ("di", 0), ("si", 0), ("dx", 0), ("r10", 0)];
#[cfg(target_arch = "aarch64")]
const REGS: [(&str, u32); 5] = [
    ("syscallno", 0),
    ("orig_x0", 0),
    ("regs", 8),
    ("regs", 16),
    ("regs", 24),
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const REGS: [(&str, u32); 5] = [("", 0); 5];

/// The numbers of the syscalls a status line is written or read with, on this architecture.
pub fn syscall_numbers() -> SyscallNumbers {
    let n = |nr: libc::c_long| u32::try_from(nr).unwrap_or(UNKNOWN);
    SyscallNumbers {
        write: n(libc::SYS_write),
        writev: n(libc::SYS_writev),
        sendto: n(libc::SYS_sendto),
        sendmsg: n(libc::SYS_sendmsg),
        read: n(libc::SYS_read),
        readv: n(libc::SYS_readv),
        recvfrom: n(libc::SYS_recvfrom),
        recvmsg: n(libc::SYS_recvmsg),
    }
}

/// Looks every field up. Fields of `struct sock` are required; the rest degrade one feature
/// each (listed in `Resolved::missing`).
pub fn resolve(btf: &Btf) -> Result<Resolved, OffsetError> {
    let mut missing = Vec::new();
    let required = |strukt: &'static str, path: &'static str| {
        btf.member_offset(strukt, path)
            .map_err(|source| OffsetError::Required {
                strukt,
                path,
                source,
            })
    };
    let mut optional = |strukt: &str, path: &str| match btf.member_offset(strukt, path) {
        Ok(v) => v,
        Err(e) => {
            missing.push(MissingField {
                field: format!("{strukt}.{path}"),
                error: e.to_string(),
            });
            UNKNOWN
        }
    };
    let mut o = KernelOffsets::UNSET;
    o.skc_daddr = required("sock", "__sk_common.skc_daddr")?;
    o.skc_rcv_saddr = required("sock", "__sk_common.skc_rcv_saddr")?;
    o.skc_dport = required("sock", "__sk_common.skc_dport")?;
    o.inet_sport = required("inet_sock", "inet_sport")?;
    o.skc_family = required("sock", "__sk_common.skc_family")?;
    o.skc_state = required("sock", "__sk_common.skc_state")?;
    o.sk_err = required("sock", "sk_err")?;
    o.sk_err_soft = required("sock", "sk_err_soft")?;
    o.sk_protocol = required("sock", "sk_protocol")?;
    o.sk_type = required("sock", "sk_type")?;
    o.skc_v6_daddr = optional("sock", "__sk_common.skc_v6_daddr");
    o.skc_v6_rcv_saddr = optional("sock", "__sk_common.skc_v6_rcv_saddr");
    o.skc_cookie = optional("sock", "__sk_common.skc_cookie");
    o.tcp_srtt_us = optional("tcp_sock", "srtt_us");
    o.tcp_total_retrans = optional("tcp_sock", "total_retrans");
    o.tcp_bytes_acked = optional("tcp_sock", "bytes_acked");
    o.tcp_bytes_received = optional("tcp_sock", "bytes_received");
    o.tcp_rcv_nxt = optional("tcp_sock", "rcv_nxt");
    o.tcp_copied_seq = optional("tcp_sock", "copied_seq");
    o.tcp_write_seq = optional("tcp_sock", "write_seq");
    o.sk_error_queue = optional("sock", "sk_error_queue");
    o.sk_error_queue_last = optional("sock", "sk_error_queue.prev");
    o.skb_exterr = match (optional("sk_buff", "cb"), optional("sock_exterr_skb", "ee")) {
        (UNKNOWN, _) | (_, UNKNOWN) => UNKNOWN,
        (cb, ee) => cb + ee,
    };
    o.skb_sk = optional("sk_buff", "sk");
    o.skb_head = optional("sk_buff", "head");
    o.skb_network_header = optional("sk_buff", "network_header");
    o.skb_protocol = optional("sk_buff", "protocol");
    o.task_real_parent = optional("task_struct", "real_parent");
    o.task_tgid = optional("task_struct", "tgid");
    o.task_pid = optional("task_struct", "pid");
    let regs = REGS.map(|(field, extra)| match optional("pt_regs", field) {
        UNKNOWN => UNKNOWN,
        offset => offset + extra,
    });
    if !regs.contains(&UNKNOWN) {
        o.regs_syscall = regs[0];
        o.regs_args = [regs[1], regs[2], regs[3], regs[4]];
        o.syscalls = syscall_numbers();
    }
    // Only where the send tracepoint that passes the msghdr exists (6.16+): older kernels
    // have other iterator layouts, and use the fallback hook, which needs none of these.
    if btf.trace_arg_count("tcp_sendmsg_locked").unwrap_or(0) >= 2 {
        o.msg_iter = msg_iter_offsets(btf, &mut optional);
    }
    // Tracepoint argument lists grew over time: read an argument only where this kernel has it.
    if btf.trace_arg_count("tcp_send_reset").unwrap_or(0) >= 3 {
        o.arg_send_reset_reason = 2;
    }
    if btf.trace_arg_count("kfree_skb").unwrap_or(0) >= 4 {
        o.arg_kfree_skb_rx_sk = 3;
    }
    Ok(Resolved {
        offsets: o,
        missing,
    })
}

/// Where a send's data stands in `struct msghdr` (see `MsgIterOffsets`). `ubuf` and `__iov`
/// share one union member of `struct iov_iter`, so one offset serves both.
fn msg_iter_offsets(btf: &Btf, optional: &mut impl FnMut(&str, &str) -> u32) -> MsgIterOffsets {
    let types = btf.enum_values("iter_type").unwrap_or_default();
    let value = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| u32::try_from(*v).ok())
            .unwrap_or(UNKNOWN)
    };
    let m = MsgIterOffsets {
        iter: optional("msghdr", "msg_iter"),
        iter_type: optional("iov_iter", "iter_type"),
        iov_offset: optional("iov_iter", "iov_offset"),
        ptr: optional("iov_iter", "ubuf"),
        iov_base: optional("iovec", "iov_base"),
        type_ubuf: value("ITER_UBUF"),
        type_iovec: value("ITER_IOVEC"),
    };
    // The iovec pointer must be where the one-buffer pointer is, or only ITER_UBUF is read.
    if optional("iov_iter", "__iov") != m.ptr {
        return MsgIterOffsets {
            type_iovec: UNKNOWN,
            ..m
        };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_this_kernel() {
        let btf = match Btf::from_sys_fs() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipped: no kernel BTF here: {e}");
                return;
            }
        };
        let r = resolve(&btf).expect("required fields");
        let o = r.offsets;
        // struct sock starts with struct sock_common, so its fields come first.
        assert!(o.skc_state < o.sk_err);
        assert_eq!(
            o.skc_daddr,
            btf.member_offset("sock_common", "skc_daddr").unwrap()
        );
        assert_ne!(o.tcp_srtt_us, UNKNOWN);
        assert_ne!(o.skb_head, UNKNOWN);
        assert!(
            r.missing.is_empty(),
            "unexpected missing fields: {:?}",
            r.missing
        );
        assert_ne!(o.regs_syscall, UNKNOWN);
        assert!(!o.regs_args.contains(&UNKNOWN));
        assert_eq!(o.syscalls, syscall_numbers());
        let m = o.msg_iter;
        if btf.trace_arg_count("tcp_sendmsg_locked").is_none() {
            assert_eq!(m, MsgIterOffsets::UNSET);
            return;
        }
        // Where the send tracepoint exists (6.18 has it), the layout its program reads.
        assert_eq!(m.iter, btf.member_offset("msghdr", "msg_iter").unwrap());
        assert_eq!(m.ptr, btf.member_offset("iov_iter", "__iov").unwrap());
        assert_ne!(m.type_ubuf, m.type_iovec);
        let fields = [
            m.iter_type,
            m.iov_offset,
            m.iov_base,
            m.type_ubuf,
            m.type_iovec,
        ];
        assert!(!fields.contains(&UNKNOWN), "{m:?}");
    }
}
