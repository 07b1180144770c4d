//! `verdict` and `retried` records: a correlator finding as one JSON line, with a sentence a
//! person can act on.

use serde_json::{Map, Value, json};

use crate::{
    correlate::{Cause, Finding, Retried, VIA_LOG, Verdict, keepalive_advice},
    decode::{Event, Payload, addrs},
    record::{RecordContext, comm_str, event_record, event_time_ns},
};

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// The record of a finding.
pub fn finding_record(f: &Finding, ctx: &RecordContext) -> Value {
    match f {
        Finding::Verdict(v) => verdict_record(v, ctx),
        Finding::Retried(r) => retried_record(r, ctx),
    }
}

/// The record of one verdict.
pub fn verdict_record(v: &Verdict, ctx: &RecordContext) -> Value {
    let r = &v.response;
    let (status, via) = match r.payload {
        Payload::Response(p) => (p.status, p.via),
        _ => (0, 0),
    };
    // Where the response was seen: the plaintext write, OpenSSL, or only the access log.
    let source = match via {
        tracer_common::event::VIA_TLS => "tls",
        VIA_LOG => "access_log",
        _ => "kernel",
    };
    let t = r.header.ts_ns;
    let comm = comm_str(&r.header.comm);
    let client = addrs(&r.header.tuple).1.to_string();
    let upstream = v.upstream.map(|u| addrs(&u.header.tuple).1.to_string());
    let mut ordered: Vec<&Event> = v.evidence.iter().collect();
    ordered.sort_by_key(|e| event_time_ns(e));
    let evidence: Vec<Value> = ordered
        .into_iter()
        .map(|e| {
            let mut rec = event_record(e, ctx);
            if let Value::Object(m) = &mut rec {
                let at = event_time_ns(e) as i128 - t as i128;
                m.insert("t_ms".into(), json!((at as f64 / 1e3).round() / 1e3));
            }
            rec
        })
        .collect();
    let mut m = Map::new();
    m.insert("type".into(), "verdict".into());
    m.insert("time".into(), ctx.clock.rfc3339(t).into());
    m.insert("status".into(), status.into());
    m.insert("pid".into(), r.header.tgid.into());
    m.insert("tid".into(), r.header.tid.into());
    m.insert("comm".into(), comm.clone().into());
    m.insert("client".into(), client.into());
    m.insert("upstream".into(), upstream.clone().into());
    m.insert("cause".into(), v.cause.id().into());
    m.insert(
        "contributing".into(),
        v.contributing
            .iter()
            .map(|c| c.id())
            .collect::<Vec<_>>()
            .into(),
    );
    m.insert(
        "confidence".into(),
        json!((v.confidence * 100.0).round() / 100.0),
    );
    m.insert("matched_by".into(), v.matched_by.into());
    m.insert("source".into(), source.into());
    if let Some(idle) = v.idle_at_reuse_ns {
        m.insert("idle_at_reuse_ms".into(), json!(ms(idle)));
    }
    if let Some(limit) = v.upstream_idle_timeout_ns {
        m.insert("upstream_idle_timeout_ms".into(), json!(ms(limit)));
    }
    if v.cause == Cause::KeepaliveRace {
        m.insert(
            "advice".into(),
            keepalive_advice(&comm, v.upstream_idle_timeout_ns).into(),
        );
    }
    m.insert("evidence".into(), evidence.into());
    m.insert(
        "summary".into(),
        summary(v, status, &comm, r.header.tgid, upstream.as_deref()).into(),
    );
    Value::Object(m)
}

fn failure(v: &Verdict) -> Option<&Event> {
    v.evidence.iter().rev().find(|e| {
        matches!(
            e.payload,
            Payload::ConnectFailed(_)
                | Payload::ResetReceived(_)
                | Payload::PeerClose(_)
                | Payload::LocalClose(_)
                | Payload::ResetSent(_)
                | Payload::UpstreamResponse(_)
        )
    })
}

/// How long the outstanding request had waited when the connection failed.
fn request_age(p: &Payload) -> Option<u64> {
    match p {
        Payload::LocalClose(c) | Payload::PeerClose(c) => Some(c.exchange.request_age_ns),
        Payload::ResetSent(r) | Payload::ResetReceived(r) => Some(r.exchange.request_age_ns),
        _ => None,
    }
}

/// One sentence: who answered what, and why.
fn summary(v: &Verdict, status: u16, comm: &str, pid: u32, upstream: Option<&str>) -> String {
    let up = upstream.unwrap_or("?");
    let retransmits = v
        .evidence
        .iter()
        .filter(|e| matches!(e.payload, Payload::Retransmit(_)))
        .count();
    let f = failure(v).map(|e| e.payload);
    let waited = f.as_ref().and_then(request_age).map(ms).unwrap_or(0.0);
    let why = match (v.cause, f) {
        (Cause::ConnectRefused, Some(Payload::ConnectFailed(c))) => format!(
            "upstream {up} refused the connection (RST to SYN after {} ms)",
            ms(c.duration_ns)
        ),
        (Cause::ConnectTimeout, Some(Payload::ConnectFailed(c))) => format!(
            "upstream {up} never answered the SYN ({} SYN retransmits; the proxy gave up after {} ms)",
            c.syn_retransmits,
            ms(c.duration_ns)
        ),
        (Cause::HostUnreachable, Some(Payload::ConnectFailed(c))) => format!(
            "upstream {up} is unreachable ({} reported by the network)",
            crate::names::errno_name(c.errno)
        ),
        (Cause::PortExhaustion, _) => {
            format!("no free local port to connect to upstream {up} (EADDRNOTAVAIL)")
        }
        (Cause::UpstreamReset, _) => {
            format!("upstream {up} reset the connection before the response was complete")
        }
        (Cause::UpstreamClosed, _) => {
            format!("upstream {up} closed the connection without sending a response")
        }
        (Cause::KeepaliveRace, _) => format!(
            "upstream {up} closed a reused keep-alive connection as the request was sent (idle {} ms)",
            ms(v.idle_at_reuse_ns.unwrap_or(0))
        ),
        (Cause::UpstreamTimeout, _) => {
            format!("upstream {up} sent no response; the proxy gave up after {waited} ms")
        }
        (Cause::PacketLoss, _) => format!(
            "packets between the proxy and upstream {up} were lost ({retransmits} retransmits) and the proxy gave up after {waited} ms"
        ),
        (Cause::UpstreamStatus, Some(Payload::UpstreamResponse(u))) => {
            format!(
                "upstream {up} itself answered {}; the proxy relayed it",
                u.status
            )
        }
        (_, _) if v.upstream.is_some() => format!(
            "the connection to upstream {up} was clean; the proxy made the error itself (an invalid or oversized response, or its own limits)"
        ),
        _ => "no upstream connection was seen for this response".to_string(),
    };
    format!("{status} by {comm}[{pid}]: {why}")
}

/// The record of a silent retry.
pub fn retried_record(r: &Retried, ctx: &RecordContext) -> Value {
    let f = &r.failure.header;
    let idle = match r.failure.payload {
        Payload::ResetReceived(p) => p.exchange.idle_ns,
        Payload::PeerClose(p) => p.exchange.idle_ns,
        _ => 0,
    };
    json!({
        "type": "retried",
        "time": ctx.clock.rfc3339(r.retry.header.ts_ns),
        "pid": f.tgid,
        "comm": comm_str(&f.comm),
        "upstream": addrs(&f.tuple).1.to_string(),
        "retry_upstream": addrs(&r.retry.header.tuple).1.to_string(),
        "cause": Cause::KeepaliveRace.id(),
        "idle_at_reuse_ms": ms(idle),
        "added_latency_ms": ms(r.retry.header.ts_ns.saturating_sub(r.failure.header.ts_ns)),
        "summary": format!(
            "{}[{}] retried a request after a reused connection to {} failed (idle {} ms); no error reached the client",
            comm_str(&f.comm), f.tgid, addrs(&f.tuple).1, ms(idle)
        ),
    })
}
