//! Ports that sockets already listen on when the tracer starts, in every network namespace.
//! Accepted sockets are adopted at their first read or write, and one whose local port lies
//! in the ephemeral range would otherwise be taken for an upstream connection. Ports that
//! start listening later are learned in the kernel, from the CLOSE → LISTEN state change.

use std::collections::{BTreeSet, HashSet};

/// The local ports of listening TCP sockets, read from `/proc/PID/net/tcp` and `tcp6` of one
/// process per network namespace; at most about `limit` of them. Processes that exit or
/// cannot be read while this runs are skipped.
pub fn listening_ports(limit: usize) -> BTreeSet<u16> {
    let mut namespaces = HashSet::new();
    let mut ports = BTreeSet::new();
    for pid in super::running_pids() {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                ports.extend(listening(&text));
            }
        }
        if ports.len() >= limit {
            break;
        }
    }
    ports
}

/// The ports of the LISTEN sockets (state `0A`) in a `/proc/net/tcp` or `tcp6` table.
fn listening(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if state != "0A" {
            return None;
        }
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_give_their_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000000000000:A000 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1236 1 0000000000000000 100 0 0 10 0
   3: garbage
";
        assert_eq!(listening(table).collect::<Vec<_>>(), [8080, 40960]);
    }

    #[test]
    fn this_hosts_listeners_are_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports(usize::MAX).contains(&port));
    }
}
