//! What the tracer learns about an upstream's keep-alive behaviour: how long the proxy leaves
//! connections idle before reusing them, and after how much idleness the upstream closes them.

use std::collections::VecDeque;

/// Idle closes remembered per upstream.
const CLOSES: usize = 64;
/// Closes this close together come from one event on the upstream (a restart, a deploy).
const SAME_INSTANT_NS: u64 = 20_000_000;

/// One idle connection the upstream closed.
#[derive(Debug, Clone, Copy)]
struct IdleClose {
    idle_ns: u64,
    at_ns: u64,
}

/// Idle-time observations for one upstream address.
#[derive(Debug, Clone, Default)]
pub struct IdleStats {
    /// Longest idle time at which a reuse succeeded.
    pub max_reused_ns: u64,
    closes: VecDeque<IdleClose>,
    pub reuses: u64,
    pub idle_closes: u64,
}

/// Whether two idle times are the same timeout, give or take scheduling.
fn same_idle(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= a.max(b) / 10 + 5_000_000
}

impl IdleStats {
    /// `n` reuses of connections got a response, the longest after `max_idle_ns` idle.
    pub fn reused(&mut self, n: u64, max_idle_ns: u64) {
        self.reuses += n;
        self.max_reused_ns = self.max_reused_ns.max(max_idle_ns);
    }

    /// The upstream closed, at `at_ns`, a connection that had been idle for `idle_ns`.
    pub fn closed_idle(&mut self, idle_ns: u64, at_ns: u64) {
        self.idle_closes += 1;
        if self.closes.len() == CLOSES {
            self.closes.pop_front();
        }
        self.closes.push_back(IdleClose { idle_ns, at_ns });
    }

    /// The upstream's idle timeout as far as it can be told: the shortest idleness after which
    /// it closed a connection. Two kinds of close are not a timeout and are left out: one
    /// shorter than an idleness a reuse survived, and closes of connections idle for different
    /// times at the same instant, which is an upstream restarting, not timing out.
    pub fn upstream_timeout_ns(&self) -> Option<u64> {
        self.closes
            .iter()
            .filter(|c| c.idle_ns >= self.max_reused_ns)
            .filter(|c| {
                !self.closes.iter().any(|o| {
                    o.at_ns.abs_diff(c.at_ns) <= SAME_INSTANT_NS && !same_idle(o.idle_ns, c.idle_ns)
                })
            })
            .map(|c| c.idle_ns)
            .min()
    }
}

/// The setting to change so that the proxy stops reusing connections the upstream is closing.
pub fn advice(comm: &str, upstream_timeout_ns: Option<u64>) -> String {
    let limit = match upstream_timeout_ns {
        Some(ns) => format!(
            "below the upstream's idle timeout (it closed idle connections after {:.1} s)",
            ns as f64 / 1e9
        ),
        None => "below the upstream's own keep-alive idle timeout".to_string(),
    };
    match comm {
        "nginx" => format!("set `keepalive_timeout` in the nginx upstream block {limit}"),
        "haproxy" => {
            format!("set `timeout http-keep-alive` (and review `http-reuse`) in HAProxy {limit}")
        }
        "envoy" => format!(
            "set the cluster's `common_http_protocol_options.idle_timeout` in Envoy {limit}"
        ),
        _ => format!("make the proxy's upstream keep-alive idle timeout {limit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_shortest_idle_close() {
        let mut s = IdleStats::default();
        assert_eq!(s.upstream_timeout_ns(), None);
        s.closed_idle(5_000_000_000, 10_000_000_000);
        s.closed_idle(4_000_000_000, 20_000_000_000);
        s.reused(1, 3_000_000_000);
        assert_eq!(s.upstream_timeout_ns(), Some(4_000_000_000));
        assert_eq!(s.max_reused_ns, 3_000_000_000);
        assert!(advice("nginx", Some(4_000_000_000)).contains("keepalive_timeout"));
        assert!(advice("nginx", Some(4_000_000_000)).contains("4.0 s"));
        assert!(advice("haproxy", None).contains("http-keep-alive"));
    }

    #[test]
    fn a_restart_is_not_an_idle_timeout() {
        let mut s = IdleStats::default();
        // Connections pooled together time out together, at the same idleness: a timeout.
        s.closed_idle(1_001_000_000, 5_000_000_000);
        s.closed_idle(1_002_000_000, 5_001_000_000);
        assert_eq!(s.upstream_timeout_ns(), Some(1_001_000_000));
        // The upstream restarts: idle connections of all ages close at once.
        s.closed_idle(20_000_000, 9_000_000_000);
        s.closed_idle(350_000_000, 9_000_500_000);
        s.closed_idle(900_000_000, 9_001_000_000);
        assert_eq!(s.upstream_timeout_ns(), Some(1_001_000_000));
        // A close shorter than an idleness a reuse survived is not the timeout either.
        s.reused(1, 600_000_000);
        s.closed_idle(500_000_000, 20_000_000_000);
        assert_eq!(s.upstream_timeout_ns(), Some(1_001_000_000));
        let mut restart_only = IdleStats::default();
        restart_only.closed_idle(10_000_000, 1_000_000_000);
        restart_only.closed_idle(200_000_000, 1_000_100_000);
        assert_eq!(restart_only.upstream_timeout_ns(), None);
    }
}
