//! Socket error reports: the errno of an ICMP error that reached a connecting socket while
//! connect() held its lock. The kernel then keeps it only as a soft error, which the
//! application clears when it reads SO_ERROR, before the socket closes.

use core::ffi::c_void;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    kernel::{off, read},
    maps::{F_ESTABLISHED, SOCKS},
};

const SO_EE_ORIGIN_ICMP: u8 = 2;
const SO_EE_ORIGIN_ICMP6: u8 = 3;

/// `struct sock_extended_err` up to `ee_origin`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ExtendedErr {
    errno: u32,
    origin: u8,
    _rest: [u8; 3],
}

/// Hook: BTF tracepoint `sock:inet_sk_error_report(const struct sock *sk)`.
///
/// For a socket in SYN_SENT, tcp_v4_err() queues the ICMP error (ip_icmp_error()) whether or
/// not the application asked for IP_RECVERR, and the report wakes the application at once:
/// it reads SO_ERROR, which clears the soft error, and closes the socket. The report runs in
/// the softirq that handles the ICMP message, before tcp_v4_err() stores the soft error, so
/// the errno is read from the queued error itself. Seen on 6.18 for curl, a plain Python
/// socket, nginx and HAProxy, over IPv4 (IPv6 queues the error only for IPV6_RECVERR
/// sockets; the others keep the soft error until the close reads it). Reports fire only on errors, so the hook costs nothing per
/// request.
#[btf_tracepoint(function = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: BtfTracePointContext) -> u32 {
    let sk = ctx.arg::<*const c_void>(0) as u64;
    let Some(p) = SOCKS.get_ptr_mut(&sk) else {
        return 0;
    };
    // SAFETY: a valid map value pointer, used within this program run.
    let info = unsafe { &mut *p };
    if info.flags & F_ESTABLISHED != 0 || info.soft_err != 0 {
        return 0;
    }
    let last = read::<u64>(sk, off!(sk_error_queue_last));
    if last == sk + off!(sk_error_queue) as u64 {
        // Empty: a report of an error stored in sk_err, which the socket's close reads.
        return 0;
    }
    let ee = read::<ExtendedErr>(last, off!(skb_exterr));
    if ee.origin == SO_EE_ORIGIN_ICMP || ee.origin == SO_EE_ORIGIN_ICMP6 {
        info.soft_err = ee.errno as i32;
    }
    0
}
