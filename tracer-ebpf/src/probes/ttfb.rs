//! Time to first byte of upstream requests: one request in N gets a `ttfb` record of its own,
//! the others are tallied on their connection and written as a `ttfb_summary`.
//!
//! On a keep-alive connection a `ttfb` record per request was most of the ring's traffic and
//! of the tracer's own CPU, for requests that went well. The sample keeps the distribution
//! (it is taken by request index, whatever the latency), the tally keeps exact counts and
//! extremes, and the requests a verdict may need are always recorded: a connection's first,
//! a possible retry, and one whose upstream status line is reported.

use tracer_common::event::{EventKind, FirstByte, TTFB_RETRY, TTFB_SAMPLE, TTFB_STATUS};

use crate::maps::SockEntry as _;
use crate::{
    kernel::{off, read, ttfb_every},
    maps::{F_AFTER_FAILURE, SockInfo, emit},
    probes::hold::hold_first_byte,
};

/// A summary is written at the first request that ends at least this long after the first
/// one it holds (or when the connection is destroyed): a busy connection writes about one a
/// second.
const SUMMARY_EVERY_NS: u64 = 1_000_000_000;

/// The response to the outstanding request of upstream socket `sk` began at `ts`, `ttfb_ns`
/// after the request; `info.requests` already counts it. `status_reported` tells whether its
/// status line is one the user asked for.
#[inline(always)]
pub fn on_first_byte(sk: u64, info: &mut SockInfo, ttfb_ns: u64, ts: u64, status_reported: bool) {
    let after_failure = info.flags & F_AFTER_FAILURE != 0;
    info.flags &= !F_AFTER_FAILURE;
    let sampled = info.requests.wrapping_sub(1) % ttfb_every() == 0;
    if !(sampled || after_failure || status_reported) {
        tally(sk, info, ttfb_ns, ts);
        return;
    }
    // Recorded (or held): what the request queued since it started. A tallied request needs
    // no count, and saves the read.
    let request_bytes = read::<u32>(sk, off!(tcp_write_seq)).wrapping_sub(info.seq_mark) as u64;
    let why = if sampled {
        // A first request that may be a retry, or whose status is reported, is written now.
        if !after_failure && !status_reported && hold_first_byte(info, ttfb_ns, ts, request_bytes) {
            return;
        }
        TTFB_SAMPLE
    } else if after_failure {
        TTFB_RETRY
    } else {
        TTFB_STATUS
    };
    let payload = FirstByte {
        ttfb_ns,
        request_bytes,
        idle_ns: info.req_idle_ns,
        request_no: info.requests,
        why,
    };
    emit(
        EventKind::FirstByte,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        payload,
    );
}

/// Adds a request to the connection's tally, writing the summary when its period is over.
#[inline(always)]
fn tally(sk: u64, info: &mut SockInfo, ttfb_ns: u64, ts: u64) {
    let t = &mut info.tally;
    if t.requests == 0 {
        t.since_ns = ts;
        t.ttfb_sum_ns = 0;
        t.ttfb_min_ns = ttfb_ns;
        t.ttfb_max_ns = ttfb_ns;
        t.idle_max_ns = 0;
    }
    t.requests += 1;
    t.ttfb_sum_ns += ttfb_ns;
    t.ttfb_min_ns = t.ttfb_min_ns.min(ttfb_ns);
    t.ttfb_max_ns = t.ttfb_max_ns.max(ttfb_ns);
    t.idle_max_ns = t.idle_max_ns.max(info.req_idle_ns);
    t.last_request_no = info.requests;
    if ts.wrapping_sub(t.since_ns) >= SUMMARY_EVERY_NS {
        write_summary(sk, info, ts);
        info.tally.requests = 0;
    }
}

/// Writes the connection's tally, if it holds any request. The caller clears it, or is about
/// to forget the socket.
#[inline(always)]
pub fn write_summary(sk: u64, info: &SockInfo, ts: u64) {
    if info.tally.requests == 0 {
        return;
    }
    emit(
        EventKind::FirstByteSummary,
        sk,
        info,
        &info.tuple_of(sk),
        ts,
        info.tally,
    );
}
