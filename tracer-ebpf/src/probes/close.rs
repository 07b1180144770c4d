//! The end of a watched socket: a summary, and the deletion of its in-flight state.

use core::ffi::c_void;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::event::{Closed, EventKind};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{off, read, sk_state},
    maps::{FLOWS, SOCKS, emit, flow_key, now},
    probes::{hold::fold_into, ttfb::write_summary},
};

/// Hook: BTF tracepoint `tcp:tcp_destroy_sock(struct sock *sk)`, from tcp_v4_destroy_sock()
/// (IPv6 shares it). Every socket that entered `SOCKS` passes here, also failed connects and
/// sockets that go on to TIME_WAIT. Checked on 6.18.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> u32 {
    let sk = ctx.arg::<*const c_void>(0) as u64;
    // SAFETY: the reference lives only within this program run, before the remove below.
    let Some(info) = (unsafe { SOCKS.get(&sk) }) else {
        return 0;
    };
    let ts = now();
    // The tuple kept since the handshake (the FLOWS entry below is keyed by it), or read now
    // for a socket that never got that far.
    let tuple = info.tuple_of(sk);
    let mut payload = Closed {
        duration_ns: ts - info.start_ns,
        bytes_acked: read::<u64>(sk, off!(tcp_bytes_acked)),
        bytes_received: read::<u64>(sk, off!(tcp_bytes_received)),
        srtt_us: read::<u32>(sk, off!(tcp_srtt_us)) >> 3,
        total_retrans: read::<u32>(sk, off!(tcp_total_retrans)),
        state: sk_state(sk),
        ..Closed::default()
    };
    fold_into(info, &mut payload);
    // The requests tallied since the last summary, before the record that ends the connection.
    write_summary(sk, info, ts);
    emit(EventKind::Closed, sk, info, &tuple, ts, payload);
    let _ = FLOWS.remove(&flow_key(&tuple));
    let _ = SOCKS.remove(&sk);
    0
}
