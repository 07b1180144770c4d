//! `tracer check`: can this host run the tracer, and which hooks attach.

use std::path::Path;

use crate::{
    cli::WatchArgs,
    probe::{LoadOptions, Probes},
    run::kernel_release,
};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether the capabilities allow loading tracing programs.
pub fn has_privileges(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN)
}

/// Prints the report; returns whether the tracer can run.
pub fn check(watch: &WatchArgs) -> Result<(), String> {
    println!("kernel: {}", kernel_release());
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    println!(
        "btf: {}",
        if btf {
            "/sys/kernel/btf/vmlinux"
        } else {
            "missing"
        }
    );
    let caps = effective_caps();
    let privileged = has_privileges(caps);
    println!("privileges: {}", if privileged { "ok" } else { "missing" });
    if !btf {
        return Err(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux): tracer needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y"
                .into(),
        );
    }
    if !privileged {
        return Err("not running as root: tracer needs CAP_BPF and CAP_PERFMON".into());
    }
    let opts = LoadOptions {
        comms: watch.effective_comms(),
        pids: watch.pids.clone(),
        ring_bytes: tracer_common::maps::EVENTS_BYTES,
        statuses: vec![502, 503, 504],
        ttfb_every: crate::cli::DEFAULT_TTFB_EVERY,
        hold: true,
        hooks_only: false,
    };
    let probes = Probes::load(&opts).map_err(|e| format!("the probes cannot load: {e}"))?;
    let mut ok = true;
    for h in &probes.hooks {
        match &h.error {
            None => println!("hook {}: attached", h.name),
            Some(e) => {
                ok &= !h.required;
                let first = e.lines().next().unwrap_or_default();
                println!("hook {}: FAILED ({}: {first})", h.name, h.feature);
            }
        }
    }
    for m in &probes.missing {
        println!("kernel field {}: missing ({})", m.field, m.error);
    }
    if ok {
        println!("ready: the tracer can run on this host");
        Ok(())
    } else {
        Err("a required hook cannot attach".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_bits() {
        assert!(!has_privileges(0));
        assert!(has_privileges(1 << CAP_SYS_ADMIN));
        assert!(has_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!has_privileges(1 << CAP_BPF));
    }
}
