//! Fills [`KernelOffsets`] from the running kernel's BTF and tracepoint format files.

use tracer_common::offsets::{KernelOffsets, UNKNOWN};

use super::{
    btf::{Btf, BtfError},
    tracefs::{Format, FormatError},
};

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
    /// A tracepoint format file could not be read or lacks a field.
    #[error("tracepoint format: {0}")]
    Format(#[from] FormatError),
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
    o.skc_num = required("sock", "__sk_common.skc_num")?;
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
    o.skb_sk = optional("sk_buff", "sk");
    o.skb_head = optional("sk_buff", "head");
    o.skb_network_header = optional("sk_buff", "network_header");
    o.skb_protocol = optional("sk_buff", "protocol");
    o.task_real_parent = optional("task_struct", "real_parent");
    o.task_tgid = optional("task_struct", "tgid");
    o.task_files = optional("task_struct", "files");
    o.files_fdt = optional("files_struct", "fdt");
    o.fdtable_fd = optional("fdtable", "fd");
    o.file_private_data = optional("file", "private_data");
    o.socket_sk = optional("socket", "sk");
    // Tracepoint argument lists grew over time: read an argument only where this kernel has it.
    if btf.trace_arg_count("tcp_send_reset").unwrap_or(0) >= 3 {
        o.arg_send_reset_reason = 2;
    }
    if btf.trace_arg_count("kfree_skb").unwrap_or(0) >= 4 {
        o.arg_kfree_skb_rx_sk = 3;
    }
    let field = |cat: &str, name: &str, field: &str| -> Result<u32, FormatError> {
        Ok(Format::load(cat, name)?.field(field)?.offset)
    };
    let connect_enter = field("syscalls", "sys_enter_connect", "uservaddr");
    let connect_len = field("syscalls", "sys_enter_connect", "addrlen");
    let connect_exit = field("syscalls", "sys_exit_connect", "ret");
    let accept_exit = field("syscalls", "sys_exit_accept4", "ret");
    let connect_fd = field("syscalls", "sys_enter_connect", "fd");
    let gso_fd = field("syscalls", "sys_enter_getsockopt", "fd");
    let gso_level = field("syscalls", "sys_enter_getsockopt", "level");
    let gso_optname = field("syscalls", "sys_enter_getsockopt", "optname");
    let gso_optval = field("syscalls", "sys_enter_getsockopt", "optval");
    let gso_exit = field("syscalls", "sys_exit_getsockopt", "ret");
    for (slot, res, what) in [
        (&mut o.tp_connect_fd, connect_fd, "sys_enter_connect.fd"),
        (&mut o.tp_getsockopt_fd, gso_fd, "sys_enter_getsockopt.fd"),
        (
            &mut o.tp_getsockopt_level,
            gso_level,
            "sys_enter_getsockopt.level",
        ),
        (
            &mut o.tp_getsockopt_optname,
            gso_optname,
            "sys_enter_getsockopt.optname",
        ),
        (
            &mut o.tp_getsockopt_optval,
            gso_optval,
            "sys_enter_getsockopt.optval",
        ),
        (
            &mut o.tp_getsockopt_exit_ret,
            gso_exit,
            "sys_exit_getsockopt.ret",
        ),
        (
            &mut o.tp_connect_uservaddr,
            connect_enter,
            "sys_enter_connect.uservaddr",
        ),
        (
            &mut o.tp_connect_addrlen,
            connect_len,
            "sys_enter_connect.addrlen",
        ),
        (
            &mut o.tp_connect_exit_ret,
            connect_exit,
            "sys_exit_connect.ret",
        ),
        (
            &mut o.tp_accept_exit_ret,
            accept_exit,
            "sys_exit_accept4.ret",
        ),
    ] {
        match res {
            Ok(v) => *slot = v,
            Err(e) => missing.push(MissingField {
                field: what.to_string(),
                error: e.to_string(),
            }),
        }
    }
    Ok(Resolved {
        offsets: o,
        missing,
    })
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
            r.missing.iter().all(|m| m.field.starts_with("sys_")),
            "unexpected missing fields: {:?}",
            r.missing
        );
    }
}
