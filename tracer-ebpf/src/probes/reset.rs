//! TCP resets, received and sent.

use core::ffi::c_void;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{
    event::{EventKind, Reset},
    offsets::UNKNOWN,
};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{off, read, sk_state},
    maps::{F_RST_RX, SOCKS, emit, emit_as, exchange, now},
    probes::hold::release_before_failure,
};

/// Hook: BTF tracepoint `tcp:tcp_receive_reset(struct sock *sk)`, from tcp_reset() before the
/// state changes, so the state read here is the one the RST hit. Checked on 6.18.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> u32 {
    let sk = ctx.arg::<*const c_void>(0) as u64;
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, used within this program run.
    let info = unsafe { &mut *p };
    info.flags |= F_RST_RX;
    release_before_failure(sk, info);
    let ts = now();
    let payload = Reset {
        reason: 0,
        state: sk_state(sk),
        _pad: [0; 3],
        exchange: exchange(info, read::<u64>(sk, off!(tcp_bytes_received)), ts),
    };
    emit(
        EventKind::ResetReceived,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        payload,
    );
    0
}

/// Hook: BTF tracepoint `tcp:tcp_send_reset(const struct sock *sk, const struct sk_buff *skb,
/// enum sk_rst_reason reason)`; `reason` exists from 6.10 and `sk` may be NULL (reset for a
/// packet that matched no socket). Checked on 6.18.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> u32 {
    let sk = ctx.arg::<*const c_void>(0) as u64;
    if sk == 0 {
        return 0;
    }
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, used within this program run.
    let info = unsafe { &mut *p };
    // With no request outstanding, a reset is how the proxy closes (HAProxy closes upstream
    // connections abortively): routine, like a close, and it leaves held records held. With
    // one outstanding, the proxy gave up on the upstream.
    let awaiting = info.req_start_ns != 0;
    if awaiting {
        release_before_failure(sk, info);
    }
    let reason = if off!(arg_send_reset_reason) != UNKNOWN {
        ctx.arg::<u32>(2)
    } else {
        0
    };
    let ts = now();
    let payload = Reset {
        reason,
        state: sk_state(sk),
        _pad: [0; 3],
        exchange: exchange(info, read::<u64>(sk, off!(tcp_bytes_received)), ts),
    };
    emit_as(
        EventKind::ResetSent,
        !awaiting,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        payload,
    );
    0
}
