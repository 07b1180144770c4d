//! Kernel packet drops on watched connections.

use core::ffi::c_void;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{
    event::{Drop, EventKind},
    net::FlowKey,
    offsets::UNKNOWN,
};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{drop_ignored, off, read},
    maps::{FLOWS, SOCKS, emit, now},
    probes::hold::release_before_failure,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// Hook: BTF tracepoint `skb:kfree_skb(struct sk_buff *skb, void *location, enum
/// skb_drop_reason reason, struct sock *rx_sk)` (`rx_sk` from 6.12). Checked on 6.18.
///
/// A packet dropped on ingress (netfilter, a full backlog) has not met its socket yet, so when
/// neither `rx_sk` nor `skb->sk` names a watched socket the TCP/IP header is parsed and the
/// addresses looked up in `FLOWS`. Only headers are read, never payload.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> u32 {
    let skb = ctx.arg::<*const c_void>(0) as u64;
    let location = ctx.arg::<u64>(1);
    let reason = ctx.arg::<u32>(2);
    if drop_ignored(reason) {
        return 0;
    }
    let mut sk = 0u64;
    let mut inbound = 0u8;
    if off!(arg_kfree_skb_rx_sk) != UNKNOWN {
        sk = ctx.arg::<*const c_void>(3) as u64;
        inbound = 1;
    }
    if sk == 0 {
        sk = read::<u64>(skb, off!(skb_sk));
        inbound = 0;
    }
    // SAFETY: lookups whose references live only within this program run.
    let known = sk != 0 && unsafe { SOCKS.get(&sk) }.is_some();
    if !known {
        let Some((found, dir)) = lookup_flow(skb) else {
            return 0;
        };
        sk = found;
        inbound = dir;
    }
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, used within this program run.
    let info = unsafe { &mut *p };
    release_before_failure(sk, info);
    let payload = Drop {
        reason,
        inbound,
        _pad: [0; 3],
        location,
    };
    emit(
        EventKind::Drop,
        sk,
        info,
        &info.tuple_of(sk),
        now(),
        payload,
    );
    0
}

/// Finds the watched socket of a TCP packet from its addresses: first as sent by the socket,
/// then as sent to it. Returns the socket and whether the packet was inbound.
#[inline(always)]
fn lookup_flow(skb: u64) -> Option<(u64, u8)> {
    let proto = u16::from_be(read::<u16>(skb, off!(skb_protocol)));
    let head = read::<u64>(skb, off!(skb_head));
    let nh = read::<u16>(skb, off!(skb_network_header)) as u32;
    if head == 0 || off!(skb_network_header) == UNKNOWN {
        return None;
    }
    let mut key = FlowKey::default();
    let ports: [u8; 4];
    if proto == ETH_P_IP {
        let ip = read::<[u8; 20]>(head, nh);
        if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
            return None;
        }
        let ihl = ((ip[0] & 0x0f) as u32) * 4;
        ports = read::<[u8; 4]>(head, nh + ihl);
        key.laddr[..4].copy_from_slice(&ip[12..16]);
        key.raddr[..4].copy_from_slice(&ip[16..20]);
    } else if proto == ETH_P_IPV6 {
        let fixed = read::<[u8; 8]>(head, nh);
        // Extension headers are not followed: TCP straight after the fixed header only.
        if fixed[0] >> 4 != 6 || fixed[6] != IPPROTO_TCP {
            return None;
        }
        ports = read::<[u8; 4]>(head, nh + 40);
        key.laddr = read::<[u8; 16]>(head, nh + 8);
        key.raddr = read::<[u8; 16]>(head, nh + 24);
    } else {
        return None;
    }
    key.lport = u16::from_be_bytes([ports[0], ports[1]]);
    key.rport = u16::from_be_bytes([ports[2], ports[3]]);
    // SAFETY: lookups of plain values, copied out at once.
    if let Some(sk) = unsafe { FLOWS.get(&key) } {
        return Some((*sk, 0));
    }
    let rev = FlowKey {
        laddr: key.raddr,
        raddr: key.laddr,
        lport: key.rport,
        rport: key.lport,
        _pad: 0,
    };
    // SAFETY: as above.
    unsafe { FLOWS.get(&rev) }.map(|sk| (*sk, 1))
}
