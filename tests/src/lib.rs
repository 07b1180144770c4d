//! The lab shared by the privileged tests and the demo: hosts in network namespaces joined by
//! veth pairs, upstreams that fail on purpose, nftables faults, and the tracer as a child process.
//!
//! Traffic stays inside the namespaces this process creates; every namespace, process and
//! temporary file is removed when its guard drops.

pub mod lab;
pub mod proxy;
pub mod tracer;

pub use lab::{Lab, Upstream};
pub use tracer::{Records, TracerRun};

/// A watched process that answers over four connections to itself, each with another write
/// and read call (`status_calls.py`, which says what it prints).
pub const STATUS_CALLS_PY: &str = include_str!("status_calls.py");

/// Fails early with a clear message when not root: the lab needs CAP_NET_ADMIN and the tracer
/// CAP_BPF and CAP_PERFMON.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged test: run as root (cargo xtask test does), it needs CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON"
    );
}
