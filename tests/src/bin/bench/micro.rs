//! The criterion micro-benchmark of decode → correlate (`cargo bench -p tracer --bench
//! pipeline`), read from the files criterion leaves in its output directory.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

/// Events per second of the benchmark's last run: the events of one iteration (criterion's
/// `Elements` throughput) over the median time of an iteration.
pub fn read(dir: &Path) -> anyhow::Result<Value> {
    let read_json = |name: &str| -> anyhow::Result<Value> {
        let path = dir.join("new").join(name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: run `cargo bench -p tracer --bench pipeline`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let estimates = read_json("estimates.json")?;
    let benchmark = read_json("benchmark.json")?;
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median.point_estimate")?;
    let events = benchmark["throughput"]["Elements"]
        .as_u64()
        .context("benchmark.json has no Elements throughput")?;
    let per_s = |ns: Option<f64>| ns.map(|ns| events as f64 * 1e9 / ns);
    Ok(json!({
        "benchmark": benchmark["full_id"],
        "events_per_iteration": events,
        "median_ns_per_iteration": median_ns,
        "events_per_s": per_s(Some(median_ns)),
        // A slower iteration means fewer events per second: the bounds swap.
        "events_per_s_ci95": [
            per_s(estimates["median"]["confidence_interval"]["upper_bound"].as_f64()),
            per_s(estimates["median"]["confidence_interval"]["lower_bound"].as_f64()),
        ],
    }))
}
