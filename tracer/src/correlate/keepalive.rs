//! What the tracer learns about an upstream's keep-alive behaviour: how long the proxy leaves
//! connections idle before reusing them, and after how much idleness the upstream closes them.

/// Idle-time observations for one upstream address.
#[derive(Debug, Clone, Default)]
pub struct IdleStats {
    /// Longest idle time at which a reuse succeeded.
    pub max_reused_ns: u64,
    /// Shortest idle time after which the upstream closed an idle connection.
    pub min_closed_ns: Option<u64>,
    pub reuses: u64,
    pub idle_closes: u64,
}

impl IdleStats {
    /// A connection was reused after `idle_ns` and got a response.
    pub fn reused(&mut self, idle_ns: u64) {
        self.reuses += 1;
        self.max_reused_ns = self.max_reused_ns.max(idle_ns);
    }

    /// The upstream closed a connection that had been idle for `idle_ns`.
    pub fn closed_idle(&mut self, idle_ns: u64) {
        self.idle_closes += 1;
        self.min_closed_ns = Some(self.min_closed_ns.map_or(idle_ns, |m| m.min(idle_ns)));
    }

    /// The upstream's idle timeout as far as it can be told: it closed connections idle this
    /// long, and kept ones idle for less.
    pub fn upstream_timeout_ns(&self) -> Option<u64> {
        self.min_closed_ns
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
        s.closed_idle(5_000_000_000);
        s.closed_idle(4_000_000_000);
        s.reused(3_000_000_000);
        assert_eq!(s.upstream_timeout_ns(), Some(4_000_000_000));
        assert_eq!(s.max_reused_ns, 3_000_000_000);
        assert!(advice("nginx", Some(4_000_000_000)).contains("keepalive_timeout"));
        assert!(advice("nginx", Some(4_000_000_000)).contains("4.0 s"));
        assert!(advice("haproxy", None).contains("http-keep-alive"));
    }
}
