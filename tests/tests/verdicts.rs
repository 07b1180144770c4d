//! Every gateway-error cause, produced on purpose behind real nginx and real HAProxy, with and
//! without healthy background load; each 5xx must get a verdict with the expected cause.

use serde_json::Value;
use tracer_tests::{
    Lab, TracerRun,
    proxy::{Proxy, ProxyKind, Route, installed},
    require_root,
};

/// A fault, the route that meets it, and what the tracer must conclude.
struct Scenario {
    name: &'static str,
    cause: &'static str,
    /// Requests sent.
    requests: usize,
    /// Whether every request must fail; otherwise at least one must (a keep-alive race only
    /// hits requests that land on a worker holding a pooled connection).
    all_fail: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "refused",
        cause: "connect_refused",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "syn_dropped",
        cause: "connect_timeout",
        requests: 1,
        all_fail: true,
    },
    Scenario {
        name: "unreachable",
        cause: "host_unreachable",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "no_ports",
        cause: "port_exhaustion",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "reset",
        cause: "upstream_reset",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "fin",
        cause: "upstream_closed",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "race",
        cause: "keepalive_race",
        requests: 4,
        all_fail: false,
    },
    Scenario {
        name: "slow",
        cause: "upstream_timeout",
        requests: 1,
        all_fail: true,
    },
    Scenario {
        name: "lossy",
        cause: "packet_loss",
        requests: 1,
        all_fail: true,
    },
    Scenario {
        name: "relay",
        cause: "upstream_status",
        requests: 2,
        all_fail: true,
    },
    Scenario {
        name: "badheader",
        cause: "no_network_cause",
        requests: 2,
        all_fail: true,
    },
];

const PORT: u16 = 8090;

/// Builds the upstream side of a scenario and returns its route.
fn prepare(lab: &mut Lab, s: &Scenario) -> anyhow::Result<Route> {
    let up = lab.up_addr.clone();
    let at = |port: u16| format!("{up}:{port}");
    Ok(match s.name {
        "refused" => Route::new(s.name, &at(9)),
        "syn_dropped" => {
            lab.nft(&lab.up, &format!("table inet f {{\n chain i {{\n  type filter hook input priority 0;\n  tcp dport {PORT} drop\n }}\n}}\n"))?;
            Route::new(s.name, &at(PORT))
        }
        "unreachable" => {
            lab.nft(&lab.up, &format!("table inet f {{\n chain i {{\n  type filter hook input priority 0;\n  tcp dport {PORT} reject with icmp type host-unreachable\n }}\n}}\n"))?;
            Route::new(s.name, &at(PORT))
        }
        "no_ports" => {
            lab.upstream("slow", PORT, Some("60"))?;
            lab.exhaust_ports(&at(PORT))?;
            Route::new(s.name, &at(PORT))
        }
        "reset" => {
            lab.upstream("rstnow", PORT, None)?;
            Route::new(s.name, &at(PORT))
        }
        "fin" => {
            lab.upstream("fin", PORT, None)?;
            Route::new(s.name, &at(PORT))
        }
        "race" => {
            lab.upstream("race", PORT, None)?;
            Route::new(s.name, &at(PORT)).keepalive()
        }
        "slow" => {
            lab.upstream("slow", PORT, Some("6"))?;
            Route::new(s.name, &at(PORT))
        }
        "lossy" => {
            lab.upstream("drain", PORT, None)?;
            // Requests (data segments) towards the upstream are lost; handshakes pass.
            lab.nft(&lab.up, &format!("table netdev loss {{\n chain in {{\n  type filter hook ingress device \"vup\" priority 0;\n  tcp dport {PORT} ip length > 100 drop\n }}\n}}\n"))?;
            Route::new(s.name, &at(PORT))
        }
        "relay" => {
            lab.upstream("status502", PORT, None)?;
            Route::new(s.name, &at(PORT))
        }
        "badheader" => {
            lab.upstream("badheader", PORT, None)?;
            Route::new(s.name, &at(PORT))
        }
        other => anyhow::bail!("unknown scenario {other}"),
    })
}

/// What one run of a scenario showed.
struct Outcome {
    statuses: Vec<u16>,
    verdicts: Vec<Value>,
    /// Gateway errors the background load received.
    load_errors: usize,
    load_requests: usize,
    /// Where the trace was kept, when the scenario failed.
    trace: std::path::PathBuf,
}

/// Seconds the background load runs; the fault requests are sent meanwhile.
const LOAD_SECONDS: u32 = 5;

fn run(kind: ProxyKind, s: &Scenario, loaded: bool) -> anyhow::Result<Outcome> {
    let mut lab = Lab::new(&format!("{}{}", &kind.comm()[..2], &s.name[..3]))?;
    let route = prepare(&mut lab, s)?;
    let ok = lab.upstream("ok", PORT + 1, Some("64"))?;
    let routes = [route, Route::new("ok", &ok.addr)];
    let proxy = Proxy::start(&mut lab, kind, 8000, &routes)?;
    // Watch this lab's proxy only (its workers are its children), not every proxy on the host.
    let tracer = TracerRun::start(&lab.dir, &["--pid", &proxy.pid.to_string()])?;
    let mut load = if loaded {
        Some(lab.load(&format!("http://{}/ok", proxy.listen), 4, 20, LOAD_SECONDS)?)
    } else {
        None
    };
    if loaded {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let mut statuses = Vec::new();
    for _ in 0..s.requests {
        statuses.push(proxy.get(&lab, s.name)?);
    }
    // The load runs out by itself; its counts tell which of the verdicts are its own.
    let (mut load_errors, mut load_requests) = (0, 0);
    if let Some(load) = load.take() {
        for (status, n) in load.finish()? {
            let n = n as usize;
            load_requests += n;
            if matches!(status.as_str(), "502" | "503" | "504") {
                load_errors += n;
            }
        }
    } else {
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let output = tracer.output.clone();
    let recs = tracer.stop()?;
    let verdicts = recs.of_type("verdict").cloned().collect();
    let trace = std::env::temp_dir().join(format!(
        "verdicts-{}-{}{}.jsonl",
        kind.comm(),
        s.name,
        if loaded { "-load" } else { "" }
    ));
    std::fs::copy(&output, &trace)?;
    Ok(Outcome {
        statuses,
        verdicts,
        load_errors,
        load_requests,
        trace,
    })
}

fn check_proxy(kind: ProxyKind) {
    require_root();
    assert!(
        installed(kind),
        "{} is not installed: run `cargo xtask setup`",
        kind.comm()
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for s in SCENARIOS {
        for loaded in [false, true] {
            let label = format!("{}{}", s.name, if loaded { "+load" } else { "" });
            let outcome = match run(kind, s, loaded) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{label}: {e:#}"));
                    rows.push(format!("{label:<18} {:<18} error", s.cause));
                    continue;
                }
            };
            let before = failures.len();
            let errors: Vec<u16> = outcome
                .statuses
                .iter()
                .copied()
                .filter(|c| (502..=504).contains(c))
                .collect();
            let causes: Vec<&str> = outcome
                .verdicts
                .iter()
                .map(|v| v["cause"].as_str().unwrap_or("?"))
                .collect();
            let mut seen: Vec<&str> = causes.clone();
            seen.dedup();
            rows.push(format!(
                "{label:<18} {:<18} {:<18} {:>2} verdicts  statuses {:?}  load 5xx {}/{}",
                s.cause,
                seen.join(","),
                causes.len(),
                outcome.statuses,
                outcome.load_errors,
                outcome.load_requests
            ));
            let expected = if s.all_fail {
                errors.len() == s.requests
            } else {
                !errors.is_empty()
            };
            if !expected {
                failures.push(format!(
                    "{label}: the proxy answered {:?}",
                    outcome.statuses
                ));
            }
            if loaded && outcome.load_requests < 50 {
                failures.push(format!(
                    "{label}: the background load sent only {} requests",
                    outcome.load_requests
                ));
            }
            if outcome.verdicts.len() != errors.len() + outcome.load_errors {
                failures.push(format!(
                    "{label}: {} gateway errors (+{} to the load) but {} verdicts: {:#?}",
                    errors.len(),
                    outcome.load_errors,
                    outcome.verdicts.len(),
                    outcome
                        .verdicts
                        .iter()
                        .map(|v| v["summary"].clone())
                        .collect::<Vec<_>>()
                ));
            }
            for v in &outcome.verdicts {
                let directive = match kind {
                    ProxyKind::Nginx => "keepalive_timeout",
                    ProxyKind::Haproxy => "http-keep-alive",
                };
                if v["cause"] == "keepalive_race"
                    && !v["advice"].as_str().unwrap_or_default().contains(directive)
                {
                    failures.push(format!(
                        "{label}: keep-alive advice does not name {directive}: {}",
                        v["advice"]
                    ));
                }
                if v["cause"] == s.cause && v["matched_by"] != "link" && v["upstream"].is_null() {
                    failures.push(format!(
                        "{label}: verdict names no upstream: {}",
                        v["summary"]
                    ));
                }
                // With two local ports, the background load's requests to the healthy upstream
                // fail too. Most get port_exhaustion; one whose connect did get a port can
                // reuse a 4-tuple the proxy just reset, and its SYN then goes unanswered until
                // the proxy's connect timeout: connect_timeout is what happened to it.
                let collateral = s.name == "no_ports"
                    && loaded
                    && v["cause"] == "connect_timeout"
                    && v["upstream"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&format!(":{}", PORT + 1)));
                if v["cause"] != s.cause && !collateral {
                    failures.push(format!(
                        "{label}: verdict {} (expected {}): {}",
                        v["cause"], s.cause, v["summary"]
                    ));
                }
            }
            if failures.len() > before {
                println!("{label}: trace kept in {}", outcome.trace.display());
            } else {
                let _ = std::fs::remove_file(&outcome.trace);
            }
        }
    }
    println!("\n{} — scenario × expected → observed", kind.comm());
    println!("{:<18} {:<18} {:<40}", "scenario", "expected", "observed");
    for r in &rows {
        println!("{r}");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nginx_gateway_errors_get_the_right_cause() {
    check_proxy(ProxyKind::Nginx);
}

#[test]
fn haproxy_gateway_errors_get_the_right_cause() {
    check_proxy(ProxyKind::Haproxy);
}
