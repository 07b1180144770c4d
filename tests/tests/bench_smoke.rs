//! The benchmark of `cargo xtask bench`, run in its seconds-long `--quick` form so that it
//! cannot rot. Nothing is asserted about speed: only that the run completes and writes a
//! well-formed result with every configuration of both modes.

use std::process::Command;

use serde_json::Value;
use tracer_tests::{require_root, tracer::tracer_bin};

#[test]
fn quick_bench_writes_every_configuration() -> anyhow::Result<()> {
    require_root();
    let out = std::env::temp_dir().join(format!("tracer-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .env("TRACER_BIN", tracer_bin())
        .status()?;
    assert!(status.success(), "bench --quick failed: {status}");

    let files: Vec<_> = std::fs::read_dir(&out)?.collect::<Result<_, _>>()?;
    assert_eq!(
        files.len(),
        1,
        "expected one result file in {}",
        out.display()
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(files[0].path())?)?;
    std::fs::remove_dir_all(&out)?;

    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    for mode in ["keepalive", "no_keepalive"] {
        for config in ["A", "B", "C", "D", "E", "F", "G"] {
            let s = &doc["summary"][mode][config];
            assert!(
                s["rps_median"].as_f64().is_some_and(|r| r > 0.0),
                "{mode} {config}: no requests/s in {s}"
            );
            let run = doc["runs"]
                .as_array()
                .and_then(|runs| {
                    runs.iter()
                        .find(|r| r["mode"] == mode && r["config"] == config)
                })
                .unwrap_or_else(|| panic!("no run of {mode} {config}"));
            assert!(
                run["wrk"]["requests"].as_u64().is_some_and(|n| n > 0),
                "{mode} {config}: no requests in {run}"
            );
            // B traces every request; E has the same hooks with programs that do nothing.
            let emitted = &run["observer"]["stats"]["kernel_emitted"];
            match config {
                "B" | "G" => assert!(
                    emitted.as_u64().is_some_and(|n| n > 0),
                    "{mode} {config}: {run}"
                ),
                "E" => assert_eq!(emitted.as_u64(), Some(0), "{mode} E: {run}"),
                _ => {}
            }
        }
    }
    let fault = &doc["fault"];
    assert!(
        fault["run"]["wrk"]["requests"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "the fault run made no requests: {fault}"
    );
    for reader in ["trace_file", "control_socket"] {
        assert!(
            fault["verdicts"][reader]["delay_ms"].is_object(),
            "{reader}: {fault}"
        );
    }
    let budgets = doc["budgets"].as_array().map_or(0, Vec::len);
    assert_eq!(budgets, 9, "every budget is listed, measured or not");
    Ok(())
}
