//! Retransmitted segments of watched connections.

use core::ffi::c_void;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::event::{EventKind, Retransmit};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{TCP_SYN_SENT, sk_state},
    maps::{SOCKS, emit, now},
    probes::{hold::release_before_failure, state::connect_started},
};

/// Hook: BTF tracepoint `tcp:tcp_retransmit_skb(const struct sock *sk, const struct sk_buff
/// *skb, int err)` (`err` from 6.12; unused). Fires for SYN retransmits too. Checked on 6.18.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> u32 {
    let sk = ctx.arg::<*const c_void>(0) as u64;
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, used within this program run.
    let info = unsafe { &mut *p };
    let state = sk_state(sk);
    info.retrans += 1;
    let tuple = info.tuple_of(sk);
    if state as i32 == TCP_SYN_SENT {
        info.syn_retrans += 1;
        connect_started(sk, info, &tuple);
    }
    release_before_failure(sk, info);
    let payload = Retransmit {
        state,
        _pad: [0; 3],
        total: info.retrans,
    };
    emit(EventKind::Retransmit, sk, info, &tuple, now(), payload);
    0
}
