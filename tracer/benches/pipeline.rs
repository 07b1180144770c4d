//! decode → correlate on one core, on a generated stream shaped like a busy proxy's: every
//! request has a client accept, an upstream connect, a first byte and two closes; one in twenty
//! upstreams is refused and its client gets a 502 (a `response` event and a verdict).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    clock::Clock,
    correlate::Correlator,
    decode::decode,
    names::ReasonNames,
    record::{RecordContext, event_record, write_event_record},
    sink::{fanout::Fanout, jsonl::JsonlSink},
};
use tracer_common::{
    event::{
        Accepted, Closed, ConnectFailed, ConnectStart, Connected, EventHeader, EventKind, FAIL_RST,
        FirstByte, ROLE_CLIENT, ROLE_UPSTREAM, Record, Response,
    },
    net::AF_INET,
};

fn bytes<P: aya::Pod>(r: &Record<P>) -> Vec<u8> {
    // SAFETY: Record<P> is Pod: every byte is initialised.
    unsafe {
        std::slice::from_raw_parts((r as *const Record<P>).cast::<u8>(), size_of::<Record<P>>())
    }
    .to_vec()
}

fn header(kind: EventKind, role: u8, cookie: u64, peer: u64, ts: u64, port: u16) -> EventHeader {
    let mut h = EventHeader {
        kind: kind as u16,
        role,
        ts_ns: ts,
        tgid: 812,
        tid: 812,
        cookie,
        sock: cookie << 12,
        peer,
        ..Default::default()
    };
    h.comm[..5].copy_from_slice(b"nginx");
    h.tuple.family = AF_INET;
    h.tuple.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    h.tuple.raddr[..4].copy_from_slice(&[10, 0, (cookie % 7) as u8, 5]);
    h.tuple.lport = port;
    h.tuple.rport = 8080;
    h
}

/// The event stream of `requests` proxied requests.
fn stream(requests: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut ts = 1_000_000_000u64;
    for i in 0..requests {
        let (client, upstream) = (2 * i + 1, 2 * i + 2);
        let port = (i % 60_000) as u16;
        ts += 10_000;
        out.push(bytes(&Record {
            header: header(EventKind::Accepted, ROLE_CLIENT, client, 0, ts, 8000),
            payload: Accepted::default(),
        }));
        let up = |kind, ts| header(kind, ROLE_UPSTREAM, upstream, client, ts, port);
        if i % 20 == 0 {
            out.push(bytes(&Record {
                header: up(EventKind::ConnectFailed, ts + 100),
                payload: ConnectFailed {
                    errno: 111,
                    source: FAIL_RST,
                    ..Default::default()
                },
            }));
            out.push(bytes(&Record {
                header: header(
                    EventKind::Response,
                    ROLE_CLIENT,
                    client,
                    upstream,
                    ts + 200,
                    8000,
                ),
                payload: Response {
                    status: 502,
                    via: 2,
                    _pad: [0; 5],
                },
            }));
        } else {
            out.push(bytes(&Record {
                header: up(EventKind::ConnectStart, ts + 50),
                payload: ConnectStart { syn_ns: ts },
            }));
            out.push(bytes(&Record {
                header: up(EventKind::Connected, ts + 100),
                payload: Connected {
                    latency_ns: 100,
                    ..Default::default()
                },
            }));
            out.push(bytes(&Record {
                header: up(EventKind::FirstByte, ts + 500),
                payload: FirstByte {
                    ttfb_ns: 400,
                    request_no: 1,
                    ..Default::default()
                },
            }));
            out.push(bytes(&Record {
                header: up(EventKind::Closed, ts + 600),
                payload: Closed::default(),
            }));
        }
        out.push(bytes(&Record {
            header: header(EventKind::Closed, ROLE_CLIENT, client, 0, ts + 700, 8000),
            payload: Closed::default(),
        }));
    }
    out
}

fn pipeline(c: &mut Criterion) {
    let events = stream(20_000);
    let mut g = c.benchmark_group("decode_correlate");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("busy_proxy_stream", |b| {
        b.iter_batched(
            Correlator::new,
            |mut corr| {
                let mut findings = 0usize;
                for e in &events {
                    let ev = decode(black_box(e)).expect("valid event");
                    findings += corr.on_event(&ev).len();
                }
                findings += corr.flush().len();
                black_box(findings)
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();

    // What each event costs on its way to the trace file: the record written straight as JSON
    // text (the daemon's path) against building a serde_json map first.
    let decoded: Vec<_> = events.iter().map(|e| decode(e).expect("valid")).collect();
    let ctx = RecordContext {
        clock: Clock::sample(),
        names: ReasonNames::new(&[], &[]),
    };
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(decoded.len() as u64));
    g.bench_function("write_event_record", |b| {
        let mut line = Vec::with_capacity(512);
        b.iter(|| {
            let mut n = 0;
            for ev in &decoded {
                line.clear();
                write_event_record(black_box(ev), &ctx, &mut line);
                n += line.len();
            }
            black_box(n)
        });
    });
    g.bench_function("event_record_map", |b| {
        let mut line = Vec::with_capacity(512);
        b.iter(|| {
            let mut n = 0;
            for ev in &decoded {
                line.clear();
                serde_json::to_writer(&mut line, &event_record(black_box(ev), &ctx)).unwrap();
                n += line.len();
            }
            black_box(n)
        });
    });
    g.bench_function("sink_with_fanout", |b| {
        let mut sink = JsonlSink::new(Box::new(std::io::sink()));
        sink.attach(Fanout::new());
        b.iter(|| {
            for ev in &decoded {
                sink.write_with(|line| write_event_record(black_box(ev), &ctx, line));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
