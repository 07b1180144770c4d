//! `tracer check`: can this host run the tracer, and which hooks attach.

use std::path::Path;

use crate::{
    cli::WatchArgs,
    probe::{LoadOptions, Probes, ProgramSet},
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
        fallback_hooks: false,
        programs: ProgramSet::Full,
    };
    let probes = Probes::load(&opts).map_err(|e| format!("the probes cannot load: {e}"))?;
    let mut ok = true;
    let mut lost = Vec::new();
    for h in &probes.hooks {
        match &h.error {
            None => println!("hook {}: attached", h.name),
            Some(e) => {
                ok &= !h.required;
                lost.push(h.feature);
                println!(
                    "hook {}: FAILED ({}: {})",
                    h.name,
                    h.feature,
                    error_summary(e)
                );
            }
        }
    }
    for m in &probes.missing {
        println!("kernel field {}: missing ({})", m.field, m.error);
    }
    if !ok {
        return Err("a required hook cannot attach".into());
    }
    if lost.is_empty() {
        println!("ready: the tracer can run on this host");
    } else {
        lost.dedup();
        println!(
            "ready, degraded: the tracer can run on this host without {}",
            lost.join("; ")
        );
    }
    Ok(())
}

/// The first line of a hook's error, and when the verifier refused the program, the line of
/// its log that says why: the last one before its statistics.
fn error_summary(e: &str) -> String {
    let mut lines = e.lines();
    let first = lines.next().unwrap_or_default().trim();
    if !first.ends_with("verifier said:") {
        return first.to_string();
    }
    let why = lines
        .map(str::trim)
        .take_while(|l| !l.starts_with("verification time"))
        .filter(|l| !l.is_empty())
        .last()
        .unwrap_or("no reason in its log");
    format!("{first} {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_refusals_are_summarised_by_their_reason() {
        let e = "Permission denied (os error 13): verifier said:\n0: (79) r6 = *(u64 *)(r1 +8)\n\
                 combined stack size of 2 calls is 576. Too large\nverification time 666753 usec\n\
                 stack depth 104+0+104+464\n";
        assert_eq!(
            error_summary(e),
            "Permission denied (os error 13): verifier said: combined stack size of 2 calls is 576. Too large"
        );
        assert_eq!(
            error_summary("No such file or directory\nmore"),
            "No such file or directory"
        );
        assert_eq!(
            error_summary("Permission denied (os error 13): verifier said:\n"),
            "Permission denied (os error 13): verifier said: no reason in its log"
        );
    }

    #[test]
    fn privilege_bits() {
        assert!(!has_privileges(0));
        assert!(has_privileges(1 << CAP_SYS_ADMIN));
        assert!(has_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!has_privileges(1 << CAP_BPF));
    }
}
