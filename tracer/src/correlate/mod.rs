//! Matches each gateway-error response to the network events that caused it.
//!
//! The kernel links every upstream socket to the client connection its request came from (the
//! worker thread read that client just before it connected or wrote upstream), so a response on
//! client connection C is explained by the events of the upstream sockets linked to C. Timing
//! alone is only the last resort, for responses with no linked upstream.
//!
//! Pure logic over decoded events: no clock but the events' own timestamps, no I/O.

mod cause;
mod keepalive;
mod log;

use std::collections::{HashMap, VecDeque};

pub use cause::Cause;
pub use keepalive::{IdleStats, advice as keepalive_advice};
pub use log::{LogFinding, VIA_LOG};

use crate::decode::{Event, Payload};
use tracer_common::{event::ROLE_UPSTREAM, sock::HELD_PEER_CLOSE};

/// Evidence kept per upstream connection.
const EVIDENCE_PER_CONN: usize = 24;
/// How long a closed connection's evidence stays available to responses written after it.
const CLOSED_GRACE_NS: u64 = 30_000_000_000;
/// Responses without a linked upstream may be explained by a same-process failure this recent.
const FALLBACK_WINDOW_NS: u64 = 2_000_000_000;
/// How long a connection that closed without a failure stays available: long enough for the
/// proxy to write the response that follows its close (nginx closes the upstream before it
/// answers with the upstream's own 502), short enough that a proxy opening thousands of
/// connections a second does not fill memory with healthy ones.
const QUIET_GRACE_NS: u64 = 2_000_000_000;
/// Upstream connections remembered at once; the oldest are forgotten first.
const MAX_CONNS: usize = 65_536;
/// How long a response with no failure on its linked upstream waits for one: HAProxy writes
/// its 503/504 before it closes the failed upstream socket.
pub const SETTLE_NS: u64 = 50_000_000;
/// A reused connection that fails this soon after the request was written raced the upstream's
/// close of an idle connection.
const RACE_WINDOW_NS: u64 = 1_000_000_000;

/// What is remembered about one upstream connection.
#[derive(Debug, Clone)]
pub struct UpstreamConn {
    /// Socket cookie (or kernel address when the kernel gave no cookie).
    pub key: u64,
    /// The latest event of the connection; its header names owner and addresses.
    pub last: Event,
    /// Recent events, oldest first.
    pub evidence: VecDeque<Event>,
    /// When the socket was destroyed.
    pub closed_ns: Option<u64>,
}

/// One response explained.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The `response` event.
    pub response: Event,
    pub cause: Cause,
    /// Other causes that contributed (packet loss under a timeout).
    pub contributing: Vec<Cause>,
    pub confidence: f64,
    /// The upstream connection blamed, when there is one.
    pub upstream: Option<Event>,
    /// The events the verdict rests on, oldest first.
    pub evidence: Vec<Event>,
    /// Keep-alive facts for `keepalive_race`: idle time at reuse and the upstream's learned
    /// idle timeout, nanoseconds.
    pub idle_at_reuse_ns: Option<u64>,
    pub upstream_idle_timeout_ns: Option<u64>,
    /// How the response was tied to the upstream: "link" (kernel link), "process" (timing
    /// within the same process) or "none".
    pub matched_by: &'static str,
    /// Whether a failure was found (otherwise the cause is `no_network_cause`).
    pub failed: bool,
}

/// A failed reused connection that the proxy retried without answering an error.
#[derive(Debug, Clone)]
pub struct Retried {
    /// The failure on the reused connection.
    pub failure: Event,
    /// The first response byte of the retry, on another connection.
    pub retry: Event,
}

/// What the correlator produces besides forwarding events.
#[derive(Debug, Clone)]
pub enum Finding {
    Verdict(Box<Verdict>),
    Retried(Box<Retried>),
}

/// Hashes the kernel's socket cookies (a counter, not chosen by any peer) with one multiply
/// instead of SipHash: every event looks its connection up.
#[derive(Debug, Default, Clone, Copy)]
struct CookieHasher(u64);

impl std::hash::Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The table takes buckets from the low bits and tags from the high ones: fold both.
        self.0 = h ^ (h >> 32);
    }
}

/// A map keyed by socket cookie (or another kernel-made u64 key).
type CookieMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<CookieHasher>>;

/// The correlation state.
#[derive(Debug, Default)]
pub struct Correlator {
    /// Boxed: a proxy opening 10,000 connections a second keeps 20,000 quietly closed ones
    /// for their grace period, and a table of whole entries (an event each) doubled and
    /// copied them all at every growth: 10 MiB of peak memory at once in the bench.
    conns: CookieMap<Box<UpstreamConn>>,
    /// Upstream connection keys linked to each client cookie, most recent last.
    by_client: CookieMap<VecDeque<u64>>,
    /// Failures on reused connections that no error response has claimed yet, by client.
    unanswered: CookieMap<Event>,
    /// Per upstream address: idle times at reuse and at the upstream's closes.
    pub idle: HashMap<std::net::SocketAddr, IdleStats>,
    /// Insertion order of `conns`, to forget the oldest beyond `MAX_CONNS`.
    order: VecDeque<u64>,
    /// Time of the last verdict per client connection: a later response on the same client
    /// connection is explained only by events after it.
    answered: CookieMap<u64>,
    /// Responses waiting for their upstream to fail or close, by client cookie.
    pending: CookieMap<Event>,
    /// Verdicts written recently, for linking access-log lines to them.
    recent: log::RecentVerdicts,
    /// Failures (connection key, time) already used by access-log-only verdicts.
    log_claimed: VecDeque<(u64, u64)>,
    /// Connections that closed with nothing a verdict could use, with their close time,
    /// oldest first: they are forgotten after `QUIET_GRACE_NS`.
    quiet_closed: VecDeque<(u64, u64)>,
}

/// Whether a verdict can rest on this event: a failure, or a sign of packet loss.
fn is_evidence(ev: &Event) -> bool {
    is_failure(ev) || matches!(ev.payload, Payload::Retransmit(_) | Payload::Drop(_))
}

fn conn_key(ev: &Event) -> u64 {
    if ev.header.cookie != 0 {
        ev.header.cookie
    } else {
        ev.header.sock
    }
}

/// Whether an event says the connection failed (as opposed to carrying traffic).
fn is_failure(ev: &Event) -> bool {
    match ev.payload {
        Payload::ConnectFailed(_) | Payload::ResetReceived(_) | Payload::LocalClose(_) => true,
        Payload::PeerClose(p) => p.exchange.awaiting_response != 0,
        Payload::ResetSent(p) => p.exchange.awaiting_response != 0,
        Payload::UpstreamResponse(_) => true,
        _ => false,
    }
}

impl Correlator {
    /// A correlator with no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of upstream connections remembered.
    pub fn conns(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one event; returns what it concluded.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Finding> {
        let out = self.on_event_inner(ev);
        for f in &out {
            self.remember(f);
        }
        out
    }

    fn on_event_inner(&mut self, ev: &Event) -> Vec<Finding> {
        let mut out = Vec::new();
        match ev.payload {
            Payload::Response(_) => {
                let client = ev.header.cookie;
                // A response already waiting is settled first: one verdict per response.
                if let Some(prev) = self.pending.remove(&client) {
                    out.push(self.settle(&prev, ev.header.ts_ns));
                }
                let v = self.explain(ev, ev.header.ts_ns);
                if v.matched_by == "link" && v.failed {
                    self.finish(ev);
                    out.push(Finding::Verdict(Box::new(v)));
                } else {
                    self.pending.insert(client, *ev);
                }
            }
            _ if ev.header.role == ROLE_UPSTREAM => {
                self.on_upstream(ev, &mut out);
                // The failure (or the end) of the upstream a response waits for settles it.
                let client = ev.header.peer;
                if client != 0
                    && (is_failure(ev) || matches!(ev.payload, Payload::Closed(_)))
                    && let Some(resp) = self.pending.remove(&client)
                {
                    out.push(self.settle(&resp, ev.header.ts_ns));
                }
            }
            Payload::Closed(_) => {
                if let Some(resp) = self.pending.remove(&ev.header.cookie) {
                    out.push(self.settle(&resp, ev.header.ts_ns));
                }
                // A client connection ends: its links go with it.
                self.by_client.remove(&ev.header.cookie);
                self.unanswered.remove(&ev.header.cookie);
                self.answered.remove(&ev.header.cookie);
            }
            _ => {}
        }
        out
    }

    /// Settles responses whose wait is over at `now_ns` (monotonic, as event times).
    pub fn tick(&mut self, now_ns: u64) -> Vec<Finding> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, r)| now_ns >= r.header.ts_ns + SETTLE_NS)
            .map(|(c, _)| *c)
            .collect();
        let mut out = Vec::new();
        for c in due {
            if let Some(resp) = self.pending.remove(&c) {
                out.push(self.settle(&resp, now_ns));
            }
        }
        for f in &out {
            self.remember(f);
        }
        out
    }

    /// Settles every waiting response (at shutdown).
    pub fn flush(&mut self) -> Vec<Finding> {
        let all: Vec<Event> = self.pending.drain().map(|(_, r)| r).collect();
        all.iter()
            .map(|r| self.settle(r, r.header.ts_ns + SETTLE_NS))
            .collect()
    }

    /// When the earliest waiting response is due, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .values()
            .map(|r| r.header.ts_ns + SETTLE_NS)
            .min()
    }

    fn settle(&mut self, resp: &Event, now_ns: u64) -> Finding {
        let until = now_ns.min(resp.header.ts_ns + SETTLE_NS);
        let v = self.explain(resp, until);
        self.finish(resp);
        Finding::Verdict(Box::new(v))
    }

    fn finish(&mut self, resp: &Event) {
        self.unanswered.remove(&resp.header.cookie);
        self.answered.insert(resp.header.cookie, resp.header.ts_ns);
    }

    fn on_upstream(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let key = conn_key(ev);
        let client = ev.header.peer;
        let raddr = crate::decode::addrs(&ev.header.tuple).1;
        match ev.payload {
            Payload::FirstByte(p) if p.request_no > 1 => {
                self.idle.entry(raddr).or_default().reused(1, p.idle_ns);
            }
            // Every request of a summary was on a reused connection.
            Payload::FirstByteSummary(p) => {
                self.idle
                    .entry(raddr)
                    .or_default()
                    .reused(p.requests.into(), p.idle_max_ns);
            }
            Payload::PeerClose(p) if p.exchange.awaiting_response == 0 => {
                self.idle
                    .entry(raddr)
                    .or_default()
                    .closed_idle(p.exchange.idle_ns, ev.header.ts_ns);
            }
            // The same peer close, held in the kernel and written with the close, which
            // names the upstream from the tuple kept since the handshake.
            Payload::Closed(p) if p.held & HELD_PEER_CLOSE != 0 && ev.header.tuple.rport != 0 => {
                self.idle
                    .entry(raddr)
                    .or_default()
                    .closed_idle(p.peer_idle_ns, p.peer_close_ns);
            }
            _ => {}
        }
        // A retry on another connection for a client whose reused connection just failed.
        if let Payload::FirstByte(_) = ev.payload
            && client != 0
            && let Some(failure) = self.unanswered.get(&client)
            && conn_key(failure) != key
        {
            let failure = *failure;
            self.unanswered.remove(&client);
            out.push(Finding::Retried(Box::new(Retried {
                failure,
                retry: *ev,
            })));
        }
        if client != 0 && is_failure(ev) && reused_failure(ev) {
            self.unanswered.insert(client, *ev);
        }
        let conn = self.conns.entry(key).or_insert_with(|| {
            self.order.push_back(key);
            Box::new(UpstreamConn {
                key,
                last: *ev,
                evidence: VecDeque::new(),
                closed_ns: None,
            })
        });
        // A socket torn down by a reset has its addresses cleared by the time it is destroyed:
        // keep the last header that still names the upstream.
        if ev.header.tuple.rport != 0 {
            conn.last = *ev;
        }
        if let Payload::Closed(_) = ev.payload {
            conn.closed_ns = Some(ev.header.ts_ns);
            if !conn.evidence.iter().any(is_evidence) {
                // Routine events only: nothing a verdict could cite. The connection stays
                // known for its grace period (a response may still name it), without them.
                conn.evidence = VecDeque::new();
                self.quiet_closed.push_back((key, ev.header.ts_ns));
            }
        } else {
            // Only the latest first byte (or summary of them) matters: on a long keep-alive
            // connection the others would push its failures out of the bounded evidence.
            let first_byte =
                |p: &Payload| matches!(p, Payload::FirstByte(_) | Payload::FirstByteSummary(_));
            if first_byte(&ev.payload) {
                conn.evidence.retain(|e| !first_byte(&e.payload));
            }
            if conn.evidence.len() == EVIDENCE_PER_CONN {
                conn.evidence.pop_front();
            }
            conn.evidence.push_back(*ev);
        }
        if client != 0 {
            let links = self.by_client.entry(client).or_default();
            if links.back() != Some(&key) {
                links.retain(|k| *k != key);
                links.push_back(key);
                if links.len() > 8 {
                    links.pop_front();
                }
            }
        }
        self.expire(ev.header.ts_ns);
    }

    /// Forgets closed connections past their grace period and the oldest beyond the bound.
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(k, closed)) = self.quiet_closed.front() {
            if now_ns.saturating_sub(closed) <= QUIET_GRACE_NS {
                break;
            }
            self.quiet_closed.pop_front();
            if self
                .conns
                .get(&k)
                .is_some_and(|c| c.closed_ns == Some(closed))
            {
                self.conns.remove(&k);
            }
        }
        while self.order.len() > MAX_CONNS {
            if let Some(k) = self.order.pop_front() {
                self.conns.remove(&k);
            }
        }
        while let Some(k) = self.order.front().copied() {
            match self.conns.get(&k) {
                Some(c)
                    if c.closed_ns
                        .is_some_and(|t| now_ns.saturating_sub(t) > CLOSED_GRACE_NS) =>
                {
                    self.conns.remove(&k);
                    self.order.pop_front();
                }
                None => {
                    self.order.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Explains one response from the events up to `until` (the response's own time, or a
    /// little after it while the proxy finishes closing the upstream).
    pub fn explain(&self, resp: &Event, until: u64) -> Verdict {
        let Payload::Response(r) = resp.payload else {
            unreachable!("explain is only called for responses")
        };
        let t = until;
        let since = self.answered.get(&resp.header.cookie).copied().unwrap_or(0);
        let fresh = |e: &Event| is_failure(e) && e.header.ts_ns <= t && e.header.ts_ns > since;
        // Linked upstream connections, most recent first.
        let mut linked: Vec<&UpstreamConn> = self
            .by_client
            .get(&resp.header.cookie)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|k| self.conns.get(k).map(|c| &**c))
            .collect();
        if resp.header.peer != 0
            && let Some(c) = self.conns.get(&resp.header.peer)
            && !linked.iter().any(|l| l.key == c.key)
        {
            linked.insert(0, c);
        }
        let mut matched_by = "link";
        let mut chosen = linked
            .iter()
            .find(|c| c.evidence.iter().any(fresh))
            .or(linked.first())
            .copied();
        let active = |c: &UpstreamConn| {
            c.evidence
                .iter()
                .any(|e| e.header.ts_ns <= t && e.header.ts_ns > since)
        };
        if chosen.is_none_or(|c| !active(c)) {
            // No linked connection carried this request: the latest failure in the process.
            let fallback = self
                .conns
                .values()
                .filter(|c| c.last.header.tgid == resp.header.tgid)
                .filter_map(|c| {
                    c.evidence
                        .iter()
                        .rev()
                        .find(|e| {
                            is_failure(e)
                                && e.header.ts_ns <= t
                                && t - e.header.ts_ns < FALLBACK_WINDOW_NS
                        })
                        .map(|e| (e.header.ts_ns, c))
                })
                .max_by_key(|(ts, _)| *ts)
                .map(|(_, c)| c);
            if let Some(c) = fallback {
                chosen = Some(c);
                matched_by = "process";
            } else if chosen.is_none() {
                matched_by = "none";
            }
        }
        let idle = chosen.and_then(|c| {
            let raddr = crate::decode::addrs(&c.last.header.tuple).1;
            self.idle.get(&raddr).cloned()
        });
        cause::judge(resp, r.status, chosen, matched_by, idle.as_ref(), since, t)
    }
}

/// Whether a failure hit a connection that had served requests before (a reused one).
fn reused_failure(ev: &Event) -> bool {
    match ev.payload {
        Payload::ResetReceived(p) => p.exchange.requests > 0 && p.exchange.awaiting_response != 0,
        Payload::PeerClose(p) => p.exchange.requests > 0 && p.exchange.awaiting_response != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
