//! The rules that turn an upstream connection's events into a cause.

use super::{IdleStats, RACE_WINDOW_NS, UpstreamConn, Verdict, is_failure};
use crate::decode::{Event, Payload};

/// Stable cause ids (docs/causes.md). Renaming one is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    ConnectRefused,
    ConnectTimeout,
    HostUnreachable,
    PortExhaustion,
    UpstreamReset,
    UpstreamClosed,
    KeepaliveRace,
    UpstreamTimeout,
    PacketLoss,
    UpstreamStatus,
    NoNetworkCause,
}

impl Cause {
    /// The id written in `verdict` records.
    pub fn id(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::HostUnreachable => "host_unreachable",
            Self::PortExhaustion => "port_exhaustion",
            Self::UpstreamReset => "upstream_reset",
            Self::UpstreamClosed => "upstream_closed",
            Self::KeepaliveRace => "keepalive_race",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::PacketLoss => "packet_loss",
            Self::UpstreamStatus => "upstream_status",
            Self::NoNetworkCause => "no_network_cause",
        }
    }

    /// Every cause, for documentation and tests.
    pub const ALL: [Cause; 11] = [
        Self::ConnectRefused,
        Self::ConnectTimeout,
        Self::HostUnreachable,
        Self::PortExhaustion,
        Self::UpstreamReset,
        Self::UpstreamClosed,
        Self::KeepaliveRace,
        Self::UpstreamTimeout,
        Self::PacketLoss,
        Self::UpstreamStatus,
        Self::NoNetworkCause,
    ];
}

const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EADDRNOTAVAIL: i32 = 99;

/// Decides the cause of `resp` from the chosen upstream connection's events.
pub(super) fn judge(
    resp: &Event,
    status: u16,
    conn: Option<&UpstreamConn>,
    matched_by: &'static str,
    idle: Option<&IdleStats>,
    since: u64,
    until: u64,
) -> Verdict {
    let t = until;
    let mut v = Verdict {
        response: *resp,
        cause: Cause::NoNetworkCause,
        contributing: Vec::new(),
        confidence: 0.3,
        upstream: None,
        evidence: Vec::new(),
        idle_at_reuse_ns: None,
        upstream_idle_timeout_ns: None,
        matched_by,
        failed: false,
    };
    let Some(conn) = conn else {
        return v;
    };
    v.upstream = Some(conn.last);
    // The events of the last exchange before the response.
    let events: Vec<&Event> = conn
        .evidence
        .iter()
        .filter(|e| e.header.ts_ns <= t && e.header.ts_ns > since)
        .collect();
    v.evidence = events.iter().rev().take(8).rev().map(|e| **e).collect();
    let retransmits = events
        .iter()
        .filter(|e| matches!(e.payload, Payload::Retransmit(_)))
        .count();
    let base = if matched_by == "link" { 0.95 } else { 0.6 };
    let failure = events.iter().rev().find(|e| is_failure(e));
    let Some(failure) = failure else {
        // A linked upstream with no failure: the proxy judged the response itself (an invalid
        // or oversized header, for example).
        v.confidence = if matched_by == "link" { 0.7 } else { 0.3 };
        return v;
    };
    let (cause, confidence) = match failure.payload {
        Payload::UpstreamResponse(u) if u.status == status || u.status >= 500 => {
            (Cause::UpstreamStatus, base)
        }
        Payload::UpstreamResponse(_) => (Cause::NoNetworkCause, base * 0.8),
        Payload::ConnectFailed(c) => match c.errno {
            ECONNREFUSED if c.source == tracer_common::event::FAIL_RST => {
                (Cause::ConnectRefused, base)
            }
            EADDRNOTAVAIL => (Cause::PortExhaustion, base),
            ETIMEDOUT => {
                if c.syn_retransmits > 1 || retransmits > 1 {
                    // Every SYN was lost; the timeout is the symptom.
                    v.contributing.push(Cause::PacketLoss);
                }
                (Cause::ConnectTimeout, base)
            }
            _ => (Cause::HostUnreachable, base),
        },
        Payload::ResetReceived(r) => {
            let x = r.exchange;
            if x.requests > 0
                && (x.awaiting_response != 0 || r.state == 8)
                && x.request_age_ns < RACE_WINDOW_NS
            {
                v.idle_at_reuse_ns = Some(x.idle_ns);
                (Cause::KeepaliveRace, base)
            } else {
                (Cause::UpstreamReset, base)
            }
        }
        Payload::PeerClose(p) => {
            let x = p.exchange;
            if x.requests > 0 && x.request_age_ns < RACE_WINDOW_NS {
                v.idle_at_reuse_ns = Some(x.idle_ns);
                (Cause::KeepaliveRace, base)
            } else {
                (Cause::UpstreamClosed, base)
            }
        }
        Payload::LocalClose(_) | Payload::ResetSent(_) => {
            if retransmits > 0 {
                v.contributing.push(Cause::UpstreamTimeout);
                (Cause::PacketLoss, base * 0.9)
            } else {
                (Cause::UpstreamTimeout, base)
            }
        }
        _ => (Cause::NoNetworkCause, 0.3),
    };
    v.cause = cause;
    v.confidence = confidence;
    v.failed = true;
    if cause == Cause::KeepaliveRace {
        v.upstream_idle_timeout_ns = idle.and_then(IdleStats::upstream_timeout_ns);
    }
    if retransmits > 0 && cause != Cause::PacketLoss && !v.contributing.contains(&Cause::PacketLoss)
    {
        v.contributing.push(Cause::PacketLoss);
    }
    v
}
