//! Access-log lines as a source of responses. A line for a response the kernel already saw
//! is linked to that response's verdict; a line for one it did not see (HTTP/2, a TLS library
//! without a probe) gets a verdict of its own from the failures on the logged upstream.

use std::{collections::VecDeque, net::IpAddr};

use super::{Correlator, Finding, UpstreamConn, Verdict, cause, is_failure};
use crate::{
    decode::{Event, Payload, addrs},
    source::accesslog::LogEntry,
};
use tracer_common::event::{EventHeader, EventKind, ROLE_CLIENT, Response};

/// How long an emitted verdict waits for its access-log line.
const LOG_MATCH_NS: u64 = 10_000_000_000;
/// Verdicts remembered for log matching.
const RECENT_VERDICTS: usize = 4_096;
/// How far back a log-only response looks for the failure that explains it.
const LOG_LOOKBACK_NS: u64 = 5_000_000_000;

/// `via` of responses known only from an access log.
pub const VIA_LOG: u8 = 100;

/// A verdict already written, waiting for its log line.
#[derive(Debug, Clone)]
pub(super) struct Emitted {
    ts_ns: u64,
    status: u16,
    client: Option<(IpAddr, u16)>,
    cause: &'static str,
    matched: bool,
}

/// Emitted verdicts, oldest first.
#[derive(Debug, Default)]
pub(super) struct RecentVerdicts(VecDeque<Emitted>);

impl RecentVerdicts {
    pub(super) fn push(&mut self, v: &Verdict) {
        let Payload::Response(r) = v.response.payload else {
            return;
        };
        if r.via == VIA_LOG {
            return;
        }
        let client = addrs(&v.response.header.tuple).1;
        if self.0.len() == RECENT_VERDICTS {
            self.0.pop_front();
        }
        self.0.push_back(Emitted {
            ts_ns: v.response.header.ts_ns,
            status: r.status,
            client: Some((client.ip(), client.port())),
            cause: v.cause.id(),
            matched: false,
        });
    }

    /// Claims the verdict a log line describes: same status and client, the oldest unmatched
    /// one that is recent enough (log lines are written in response order).
    fn claim(&mut self, e: &LogEntry, now_ns: u64) -> Option<(u64, &'static str)> {
        let hit = self.0.iter_mut().find(|v| {
            !v.matched
                && v.status == e.status
                && now_ns.saturating_sub(v.ts_ns) < LOG_MATCH_NS
                && match (v.client, e.client_ip) {
                    (Some((ip, port)), Some(lip)) => {
                        same_ip(ip, lip) && e.client_port.is_none_or(|p| p == port)
                    }
                    _ => true,
                }
        })?;
        hit.matched = true;
        Some((hit.ts_ns, hit.cause))
    }
}

/// IPv4 clients show up as IPv4-mapped IPv6 addresses on dual-stack listeners.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// What reading one access-log line concluded.
#[derive(Debug, Clone)]
pub enum LogFinding {
    /// The line describes a response that already has a verdict (its time and cause).
    Matched {
        verdict_ns: u64,
        cause: &'static str,
    },
    /// The line is the only sign of the response: a verdict made from it.
    Verdict(Box<Verdict>),
}

impl Correlator {
    /// Reads one access-log line for a status of interest, at monotonic time `now_ns`.
    pub fn on_log(&mut self, e: &LogEntry, now_ns: u64) -> LogFinding {
        if let Some((verdict_ns, cause)) = self.recent.claim(e, now_ns) {
            return LogFinding::Matched { verdict_ns, cause };
        }
        // The latest failure on a connection to a logged upstream (any, if none is logged).
        // nginx and Envoy log upstream addresses; HAProxy logs backend/server names, which
        // cannot be matched to a socket, so any connection is a candidate then.
        let logged: Vec<&String> = e
            .upstreams
            .iter()
            .filter(|u| u.parse::<std::net::SocketAddr>().is_ok())
            .collect();
        let wanted = |c: &&UpstreamConn| {
            let raddr = addrs(&c.last.header.tuple).1.to_string();
            logged.is_empty() || logged.contains(&&raddr)
        };
        // The latest failure not yet used by another log-only response: lines read together
        // each get their own.
        let chosen = self
            .conns
            .values()
            .map(|c| &**c)
            .filter(wanted)
            .filter_map(|c| {
                c.evidence
                    .iter()
                    .rev()
                    .find(|ev| {
                        is_failure(ev)
                            && now_ns.saturating_sub(ev.header.ts_ns) < LOG_LOOKBACK_NS
                            && !self.log_claimed.contains(&(c.key, ev.header.ts_ns))
                    })
                    .map(|ev| (ev.header.ts_ns, c))
            })
            .max_by_key(|(ts, _)| *ts)
            .map(|(ts, c)| (ts, c.clone()));
        let conn = chosen.as_ref().map(|(_, c)| c);
        if let Some((ts, c)) = &chosen {
            if self.log_claimed.len() >= RECENT_VERDICTS {
                self.log_claimed.pop_front();
            }
            self.log_claimed.push_back((c.key, *ts));
        }
        let resp = synthetic_response(e, conn.map(|c| &c.last), now_ns);
        let mut v = cause::judge(&resp, e.status, conn, "log", None, 0, now_ns);
        v.confidence = (v.confidence * 0.8 * 100.0).round() / 100.0;
        LogFinding::Verdict(Box::new(v))
    }

    /// Remembers a verdict so that its log line can be linked to it.
    pub(super) fn remember(&mut self, f: &Finding) {
        if let Finding::Verdict(v) = f {
            self.recent.push(v);
        }
    }
}

/// A `response` event standing for a response known only from the log: owner from the
/// upstream connection (the same process), client from the log line.
fn synthetic_response(e: &LogEntry, upstream: Option<&Event>, now_ns: u64) -> Event {
    let mut header = EventHeader {
        kind: EventKind::Response as u16,
        role: ROLE_CLIENT,
        ts_ns: now_ns,
        ..upstream.map(|u| u.header).unwrap_or_default()
    };
    header.cookie = 0;
    header.peer = 0;
    header.sock = 0;
    let mut t = header.tuple;
    t.raddr = [0; 16];
    match e.client_ip {
        Some(IpAddr::V4(v4)) => {
            t.family = tracer_common::net::AF_INET;
            t.raddr[..4].copy_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            t.family = tracer_common::net::AF_INET6;
            t.raddr = v6.octets();
        }
        None => {}
    }
    t.rport = e.client_port.unwrap_or(0);
    header.tuple = t;
    Event {
        header,
        payload: Payload::Response(Response {
            status: e.status,
            via: VIA_LOG,
            _pad: [0; 5],
        }),
    }
}
