//! `cargo xtask demo`: real nginx in network namespaces in front of upstreams that fail on
//! purpose, client traffic through it, and the tracer explaining every 502/503/504 as it
//! happens. Everything is removed at exit, also on Ctrl-C; the trace file stays.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Seek, SeekFrom},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    Lab, TracerRun,
    proxy::{Proxy, ProxyKind, Route},
    require_root,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What each route does, in the order the demo visits them.
const PLAN: &[(&str, &str)] = &[
    ("ok", "a healthy upstream"),
    ("refused", "nothing listens on the upstream port"),
    ("reset", "the upstream resets the connection"),
    ("fin", "the upstream closes without answering"),
    ("race", "the upstream closes reused keep-alive connections"),
    ("slow", "the upstream is slower than proxy_read_timeout"),
    ("relay", "the upstream answers 502 itself"),
];

fn main() -> anyhow::Result<()> {
    require_root();
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    let mut lab = Lab::new("demo")?;
    let refused = format!("{}:9", lab.up_addr);
    let ok = lab.upstream("ok", 8080, Some("512"))?;
    let reset = lab.upstream("rstnow", 8081, None)?;
    let fin = lab.upstream("fin", 8082, None)?;
    let race = lab.upstream("race", 8083, None)?;
    let slow = lab.upstream("slow", 8084, Some("5"))?;
    let relay = lab.upstream("status502", 8085, None)?;
    let routes = [
        Route::new("ok", &ok.addr),
        Route::new("refused", &refused),
        Route::new("reset", &reset.addr),
        Route::new("fin", &fin.addr),
        Route::new("race", &race.addr).keepalive(),
        Route::new("slow", &slow.addr),
        Route::new("relay", &relay.addr),
    ];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    println!(
        "lab: client {} → nginx {} → upstreams on {}",
        lab.cl_addr, proxy.listen, lab.up_addr
    );
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    println!(
        "tracer watching nginx[{}]; trace file {}\n",
        proxy.pid,
        tracer.output.display()
    );

    let mut file = std::fs::File::open(&tracer.output)?;
    file.seek(SeekFrom::End(0))?;
    let mut reader = BufReader::new(file);
    let mut causes: BTreeMap<String, u32> = BTreeMap::new();
    let mut print_new = |reader: &mut BufReader<std::fs::File>| {
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                match v["type"].as_str() {
                    Some("verdict") => {
                        *causes
                            .entry(v["cause"].as_str().unwrap_or("?").into())
                            .or_default() += 1;
                        println!(
                            "    verdict {:<17} {}",
                            v["cause"].as_str().unwrap_or("?"),
                            v["summary"].as_str().unwrap_or("")
                        );
                        if let Some(a) = v["advice"].as_str() {
                            println!("            advice: {a}");
                        }
                    }
                    Some("retried") => {
                        println!("    retried: {}", v["summary"].as_str().unwrap_or(""))
                    }
                    _ => {}
                }
            }
            line.clear();
        }
    };
    'outer: for round in 1..=rounds {
        for (route, what) in PLAN {
            if STOP.load(Ordering::SeqCst) {
                break 'outer;
            }
            let status = proxy.get(&lab, route)?;
            println!("round {round}: GET /{route:<8} → {status}   ({what})");
            let until = Instant::now() + Duration::from_millis(250);
            while Instant::now() < until {
                print_new(&mut reader);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let recs = tracer.stop()?;
    print_new(&mut reader);
    let trace = std::env::temp_dir().join("tracer-demo.jsonl");
    let text: String = recs.0.iter().map(|r| r.to_string() + "\n").collect();
    std::fs::write(&trace, text)?;
    println!("\nverdicts by cause: {causes:?}");
    println!(
        "trace kept in {} ({} records)",
        trace.display(),
        recs.0.len()
    );
    Ok(())
}
