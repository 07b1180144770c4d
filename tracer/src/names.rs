//! Names for the numbers the kernel reports: errno values, TCP states, and the reset and drop
//! reason enums (whose values change between kernels, so they come from BTF at run time).

use std::collections::HashMap;

/// Symbolic name of an errno value, for the values a TCP connection can meet.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        0 => "OK",
        1 => "EPERM",
        4 => "EINTR",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        24 => "EMFILE",
        32 => "EPIPE",
        64 => "ENONET",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => "UNKNOWN",
    }
}

/// Name of a TCP state (include/net/tcp_states.h, stable across kernels).
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Names of kernel enum values, read from BTF at start.
#[derive(Debug, Default, Clone)]
pub struct ReasonNames {
    reset: HashMap<u32, String>,
    drop: HashMap<u32, String>,
}

impl ReasonNames {
    /// Builds the tables from `(name, value)` pairs of `enum sk_rst_reason` and
    /// `enum skb_drop_reason`, stripping the common prefixes.
    pub fn new(reset: &[(String, i64)], drop: &[(String, i64)]) -> Self {
        let table = |pairs: &[(String, i64)], prefix: &str| {
            pairs
                .iter()
                .map(|(n, v)| (*v as u32, n.strip_prefix(prefix).unwrap_or(n).to_string()))
                .collect()
        };
        Self {
            reset: table(reset, "SK_RST_REASON_"),
            drop: table(drop, "SKB_DROP_REASON_"),
        }
    }

    /// Name of a reset reason, or its number when unknown.
    pub fn reset(&self, v: u32) -> String {
        self.reset.get(&v).cloned().unwrap_or_else(|| v.to_string())
    }

    /// Name of a drop reason, or its number when unknown.
    pub fn drop(&self, v: u32) -> String {
        self.drop.get(&v).cloned().unwrap_or_else(|| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(99), "EADDRNOTAVAIL");
        assert_eq!(tcp_state_name(8), "CLOSE_WAIT");
        let r = ReasonNames::new(
            &[("SK_RST_REASON_NO_SOCKET".into(), 1)],
            &[("SKB_DROP_REASON_NETFILTER_DROP".into(), 12)],
        );
        assert_eq!(r.reset(1), "NO_SOCKET");
        assert_eq!(r.drop(12), "NETFILTER_DROP");
        assert_eq!(r.drop(999), "999");
    }
}
