//! `cargo xtask demo`: a self-contained lab in network namespaces where upstream connections
//! succeed, get refused, get reset and get closed early, with the tracer watching and its
//! records printed as they arrive. Everything is removed at exit, also on Ctrl-C.

use std::{
    io::{BufRead, BufReader, Seek, SeekFrom},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{Lab, TracerRun, require_root};

fn line_for(r: &Value) -> Option<String> {
    let t = r["type"].as_str()?;
    let who = format!("{}[{}]", r["comm"].as_str().unwrap_or("?"), r["pid"]);
    let to = r["raddr"].as_str().unwrap_or("?");
    Some(match t {
        "connect" => format!("{who} connected to {to} in {} µs", r["latency_us"]),
        "connect_error" => format!(
            "{who} could not connect to {to}: {} ({}, {} µs)",
            r["error"].as_str().unwrap_or("?"),
            r["cause"].as_str().unwrap_or("?"),
            r["duration_us"]
        ),
        "reset_received" => format!(
            "{who} got a reset from {to} in {}",
            r["state"].as_str().unwrap_or("?")
        ),
        "reset_sent" => format!("{who} reset {to} ({})", r["reason"].as_str().unwrap_or("?")),
        "peer_close" => format!(
            "{who}: {to} closed the connection{}",
            if r["awaiting_response"] == true {
                " before answering"
            } else {
                ""
            }
        ),
        "ttfb" => format!(
            "{who}: first response byte from {to} after {} µs",
            r["ttfb_us"]
        ),
        "retransmit" => format!(
            "{who} retransmitted to {to} ({})",
            r["state"].as_str().unwrap_or("?")
        ),
        "drop" => format!(
            "kernel dropped a packet of {who} ↔ {to}: {}",
            r["reason"].as_str().unwrap_or("?")
        ),
        "stats" => format!("stats: {} events, {} lost", r["events"], r["lost"]),
        _ => return None,
    })
}

fn main() -> anyhow::Result<()> {
    require_root();
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
        STOP.store(Arc::into_raw(stop) as usize, Ordering::SeqCst);
    }
    let mut lab = Lab::new("demo")?;
    let ok = lab.upstream("ok", 8080, Some("512"))?;
    let reset = lab.upstream("reset", 8082, None)?;
    let fin = lab.upstream("fin", 8083, None)?;
    let refused = format!("{}:9", lab.up_addr);
    println!(
        "lab: client host {} → upstream host {}",
        lab.px_addr, lab.up_addr
    );
    println!(
        "     {} healthy, {} resets, {} closes early, {refused} refuses",
        ok.addr, reset.addr, fin.addr
    );
    let tracer = TracerRun::start(&lab.dir, &["--comm", "curl", "--stats-interval", "5"])?;
    println!(
        "tracer running (pid {}), trace file {}\n",
        tracer.pid(),
        tracer.output.display()
    );

    let mut file = std::fs::File::open(&tracer.output)?;
    file.seek(SeekFrom::End(0))?;
    let mut reader = BufReader::new(file);
    let print_new = |reader: &mut BufReader<std::fs::File>| {
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(text) = line_for(&v)
            {
                println!("  {text}");
            }
            line.clear();
        }
    };
    let targets = [
        ("healthy", ok.addr.clone()),
        ("refused", refused.clone()),
        ("reset", reset.addr.clone()),
        ("closed early", fin.addr.clone()),
    ];
    'outer: for round in 1..=rounds {
        for (what, addr) in &targets {
            if stop.load(Ordering::SeqCst) {
                break 'outer;
            }
            println!("round {round}: curl http://{addr}/ ({what})");
            lab.curl(&["--max-time", "3", &format!("http://{addr}/")])?;
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                print_new(&mut reader);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let recs = tracer.stop()?;
    print_new(&mut reader);
    let trace = std::env::temp_dir().join("tracer-demo.jsonl");
    std::fs::write(
        &trace,
        recs.0
            .iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )?;
    println!(
        "\ntrace kept in {} ({} records)",
        trace.display(),
        recs.0.len()
    );
    Ok(())
}

static STOP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_sigint(_: libc::c_int) {
    let p = STOP.load(Ordering::SeqCst) as *const AtomicBool;
    if !p.is_null() {
        // SAFETY: the pointer came from Arc::into_raw and is never freed.
        unsafe { (*p).store(true, Ordering::SeqCst) };
    }
}
