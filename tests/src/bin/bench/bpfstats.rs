//! Kernel-side cost of the tracer: run count and run time of each of its BPF programs, as
//! `bpftool prog show` reports them while BPF run-time statistics are enabled.

use std::{collections::BTreeMap, os::fd::FromRawFd as _, os::fd::OwnedFd, process::Command};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::host;

/// `BPF_ENABLE_STATS` of `enum bpf_cmd`.
const BPF_ENABLE_STATS: libc::c_long = 32;
/// `BPF_STATS_RUN_TIME` of `enum bpf_stats_type`.
const BPF_STATS_RUN_TIME: u32 = 0;

/// Keeps BPF run-time statistics on (as `sysctl kernel.bpf_stats_enabled=1` does) while it
/// lives. Held as a file descriptor, so the kernel turns them off again even if the bench dies.
pub struct StatsOn(#[expect(dead_code, reason = "held for its Drop")] OwnedFd);

impl StatsOn {
    /// Turns the statistics on. They cost two clock reads per program run, which is why the
    /// comparison rounds run without them.
    pub fn enable() -> anyhow::Result<Self> {
        // union bpf_attr { struct { __u32 type; } enable_stats; }, padded.
        let mut attr = [0u8; 8];
        attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        // SAFETY: bpf(2) reads `attr.len()` bytes from a valid buffer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if fd < 0 {
            bail!(
                "enabling BPF run-time statistics failed: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
}

/// Run count and total run time of each program, by program id.
#[derive(Debug, Default)]
pub struct Snapshot(BTreeMap<u32, (String, u64, u64)>);

impl Snapshot {
    /// Reads `bpftool prog show --json` and keeps the programs `pid` holds.
    pub fn take(pid: u32) -> anyhow::Result<Self> {
        let ids = host::bpf_prog_ids(pid);
        let out = Command::new("bpftool")
            .args(["prog", "show", "--json"])
            .output()
            .context("running bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool prog show failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let progs: Vec<Value> =
            serde_json::from_slice(&out.stdout).context("reading bpftool's JSON")?;
        Ok(Self(
            progs
                .iter()
                .filter_map(|p| {
                    let id = p["id"].as_u64()? as u32;
                    ids.contains(&id).then(|| {
                        (
                            id,
                            (
                                p["name"].as_str().unwrap_or("?").to_string(),
                                p["run_cnt"].as_u64().unwrap_or(0),
                                p["run_time_ns"].as_u64().unwrap_or(0),
                            ),
                        )
                    })
                })
                .collect(),
        ))
    }

    /// Per-program runs and time between `self` and `later`, per request, busiest first.
    pub fn cost_until(&self, later: &Snapshot, requests: u64) -> Value {
        let per_req = |v: u64| v as f64 / requests.max(1) as f64;
        let mut rows: Vec<(String, u64, u64)> = later
            .0
            .iter()
            .map(|(id, (name, cnt, ns))| {
                let (c0, n0) = self.0.get(id).map_or((0, 0), |(_, c, n)| (*c, *n));
                (name.clone(), cnt.saturating_sub(c0), ns.saturating_sub(n0))
            })
            .filter(|(_, cnt, _)| *cnt > 0)
            .collect();
        rows.sort_by_key(|(_, _, ns)| std::cmp::Reverse(*ns));
        let total_ns: u64 = rows.iter().map(|(_, _, ns)| ns).sum();
        json!({
            "ns_per_request": per_req(total_ns),
            "programs": rows.iter().map(|(name, cnt, ns)| json!({
                "name": name,
                "runs": cnt,
                "runs_per_request": per_req(*cnt),
                "ns_per_run": *ns as f64 / *cnt as f64,
                "ns_per_request": per_req(*ns),
            })).collect::<Vec<_>>(),
        })
    }
}
