//! `cargo xtask demo`: real nginx in network namespaces in front of an upstream that takes
//! turns at being healthy, refusing, resetting, timing out and racing on keep-alive, with
//! client traffic flowing through it and the tracer's live view on it. A trace file is left
//! behind, with the command that summarises it. Everything else is removed at exit, also on
//! Ctrl-C.
//!
//! Options: `--no-live` prints the verdicts instead of the live view (the default when stdout
//! is not a terminal); `--phase-seconds S` (default 8) is how long each behaviour lasts;
//! `--cycles N` how many times the behaviours come round (default: until q in the live view,
//! 1 without it).

use std::{
    io::{BufRead, BufReader, IsTerminal as _, Seek, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tracer_tests::{
    Lab, TracerRun,
    proxy::{Proxy, ProxyKind, Route},
    require_root,
    tracer::tracer_bin,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The behaviours the rotating upstream takes turns at: upstream.py mode (none: nothing
/// listens), its argument, and what a person should expect.
const PHASES: &[(Option<&str>, Option<&str>, &str)] = &[
    (Some("ok"), Some("512"), "healthy"),
    (None, None, "refusing connections (nothing listens)"),
    (Some("ok"), Some("512"), "healthy again"),
    (Some("rstnow"), None, "resetting every connection"),
    (
        Some("slow"),
        Some("5"),
        "too slow: longer than proxy_read_timeout",
    ),
    (
        Some("race"),
        None,
        "closing reused keep-alive connections (keep-alive race)",
    ),
];

/// The rotating upstream's port on the upstream host.
const APP_PORT: u16 = 8080;

struct Options {
    live: bool,
    phase: Duration,
    cycles: Option<u32>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        live: std::io::stdout().is_terminal(),
        phase: Duration::from_secs(8),
        cycles: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--no-live" => o.live = false,
            "--phase-seconds" => {
                let s: f64 = value("--phase-seconds")?
                    .parse()
                    .context("--phase-seconds")?;
                anyhow::ensure!((0.5..=600.0).contains(&s), "--phase-seconds: 0.5 to 600");
                o.phase = Duration::from_secs_f64(s);
            }
            "--cycles" => {
                let n: u32 = value("--cycles")?.parse().context("--cycles")?;
                anyhow::ensure!(n >= 1, "--cycles: at least 1");
                o.cycles = Some(n);
            }
            "-h" | "--help" => {
                println!(
                    "cargo xtask demo [--no-live] [--phase-seconds S] [--cycles N]\n\n\
                     nginx in front of an upstream that takes turns at failing, and the tracer \
                     explaining every 502/504.\n  --no-live         print verdicts instead of \
                     the live view\n  --phase-seconds S how long each behaviour lasts (8)\n  \
                     --cycles N        rounds of behaviours (live: until q; else 1)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?} (try --help)"),
        }
    }
    if !o.live && o.cycles.is_none() {
        o.cycles = Some(1);
    }
    Ok(o)
}

/// Sends a phase line where a person sees it: stdout without the live view, a log file with it
/// (stdout belongs to the view then).
struct Narrator {
    live: bool,
    log: Option<std::fs::File>,
}

impl Narrator {
    fn say(&mut self, text: &str) {
        if self.live {
            if let Some(f) = &mut self.log {
                let _ = writeln!(f, "{text}");
            }
        } else {
            println!("{text}");
        }
    }
}

/// Turns the upstream at `APP_PORT` through [`PHASES`] until `stop`, or for `cycles` rounds.
fn rotate(
    lab: &mut Lab,
    opts: &Options,
    narrator: &mut Narrator,
    stop: &AtomicBool,
    mut between: impl FnMut(),
) -> anyhow::Result<()> {
    let mut current: Option<u32> = None;
    let mut cycle = 0;
    'outer: loop {
        cycle += 1;
        if opts.cycles.is_some_and(|n| cycle > n) {
            break;
        }
        for (mode, arg, what) in PHASES {
            if let Some(pid) = current.take() {
                // SAFETY: kill(2) on a child this process started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(mode) = mode {
                current = Some(lab.upstream(mode, APP_PORT, *arg)?.pid);
            }
            narrator.say(&format!(
                "cycle {cycle}: upstream {}:{APP_PORT} is {what}",
                lab.up_addr
            ));
            let until = Instant::now() + opts.phase;
            while Instant::now() < until {
                if stop.load(Ordering::SeqCst) || STOP.load(Ordering::SeqCst) {
                    break 'outer;
                }
                between();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Prints the verdicts appended to the trace since the last call.
fn print_verdicts(reader: &mut BufReader<std::fs::File>) {
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        // A line still being written is read again whole next time.
        if !line.ends_with('\n') {
            let back = -(line.len() as i64);
            let _ = reader.seek_relative(back);
            return;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            match v["type"].as_str() {
                Some("verdict") => {
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
}

fn main() -> anyhow::Result<()> {
    require_root();
    let opts = options()?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut lab = Lab::new("demo")?;
    let steady = lab.upstream("ok", 8090, Some("256"))?;
    let app = format!("{}:{APP_PORT}", lab.up_addr);
    let routes = [
        Route::new("app", &app).keepalive(),
        Route::new("static", &steady.addr),
    ];
    let proxy = Proxy::start(&mut lab, ProxyKind::Nginx, 8000, &routes)?;
    let trace = std::env::temp_dir().join("tracer-demo.jsonl");
    let _ = std::fs::remove_file(&trace);
    for f in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        if f.file_name()
            .to_string_lossy()
            .starts_with("tracer-demo.jsonl.")
        {
            let _ = std::fs::remove_file(f.path());
        }
    }
    println!(
        "lab: client {} → nginx {} → upstreams {app} (takes turns at failing) and {} (healthy)",
        lab.cl_addr, proxy.listen, steady.addr
    );

    // Client traffic: /app and /static, a new client connection per request.
    let load = lab.dir.join("load.py");
    let load = load.to_str().unwrap_or_default().to_string();
    for (route, threads, rate) in [("app", "2", "5"), ("static", "1", "4")] {
        let url = format!("http://{}/{route}", proxy.listen);
        let cl = lab.cl.clone();
        lab.spawn(&cl, &["python3", &load, &url, threads, rate, "86400"])?;
    }

    let result = if opts.live {
        live(&mut lab, &opts, &proxy, &trace)
    } else {
        printed(&mut lab, &opts, &proxy, &trace)
    };
    drop(lab);
    result?;
    let bin = tracer_bin();
    let bin = bin.canonicalize().unwrap_or(bin);
    println!(
        "\nthe trace is kept in {}; summarise it with:",
        trace.display()
    );
    println!("  {} report {}", bin.display(), trace.display());
    Ok(())
}

/// The live view in the foreground, fed by `tracer run --live`; the upstream rotates on a
/// thread until the view quits.
fn live(lab: &mut Lab, opts: &Options, proxy: &Proxy, trace: &Path) -> anyhow::Result<()> {
    let phases_log = lab.dir.join("phases.log");
    println!(
        "starting the live view: q quits, Enter opens a verdict, / filters, p pauses, s sorts"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let mut tracer = Command::new(tracer_bin())
        .args([
            "run",
            "--live",
            "--pid",
            &proxy.pid.to_string(),
            "--no-socket",
        ])
        .arg("--output")
        .arg(trace)
        .spawn()
        .context("starting the tracer")?;
    let view_done = Arc::new(AtomicBool::new(false));
    let mut narrator = Narrator {
        live: true,
        log: std::fs::File::create(&phases_log).ok(),
    };
    let tracer_pid = tracer.id();
    let done = view_done.clone();
    let waiter = std::thread::spawn(move || {
        let status = tracer.wait();
        done.store(true, Ordering::SeqCst);
        status
    });
    let rotated = rotate(lab, opts, &mut narrator, &view_done, || {});
    // Cycles over or Ctrl-C: stop the tracer, which gives the terminal back.
    if !view_done.load(Ordering::SeqCst) {
        // SAFETY: kill(2) on the tracer child, which has not been reaped yet (the waiter
        // thread sets view_done after reaping it).
        unsafe { libc::kill(tracer_pid as i32, libc::SIGTERM) };
    }
    let status = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("waiting for the tracer"))??;
    rotated?;
    anyhow::ensure!(status.success(), "the tracer failed: {status}");
    print_file(&phases_log);
    Ok(())
}

fn print_file(path: &PathBuf) {
    if let Ok(text) = std::fs::read_to_string(path) {
        print!("{text}");
    }
}

/// Without the live view: phases and verdicts printed as they happen.
fn printed(lab: &mut Lab, opts: &Options, proxy: &Proxy, trace: &Path) -> anyhow::Result<()> {
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    println!("tracer watching nginx[{}]\n", proxy.pid);
    let mut file = std::fs::File::open(&tracer.output)?;
    file.seek(SeekFrom::End(0))?;
    let mut reader = BufReader::new(file);
    let mut narrator = Narrator {
        live: false,
        log: None,
    };
    let never = AtomicBool::new(false);
    let rotated = rotate(lab, opts, &mut narrator, &never, || {
        print_verdicts(&mut reader)
    });
    let output = tracer.output.clone();
    let recs = tracer.stop()?;
    print_verdicts(&mut reader);
    rotated?;
    std::fs::copy(&output, trace).context("keeping the trace")?;
    println!("\n{} records", recs.0.len());
    Ok(())
}
