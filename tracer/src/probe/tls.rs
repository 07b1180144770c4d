//! Where OpenSSL lives for the watched proxies, so that `SSL_write` can be probed.

use std::{collections::BTreeSet, path::PathBuf};

/// Distribution paths of OpenSSL 3's libssl, probed even when no watched process runs yet.
const DEFAULT_LIBSSL: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
];

/// The libssl files mapped by running processes with one of `comms` or one of `pids`, plus the
/// distribution defaults that exist.
pub fn libssl_paths(comms: &[String], pids: &[u32]) -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    for p in DEFAULT_LIBSSL {
        // /lib is often a link to /usr/lib: one file, one probe.
        if let Ok(path) = std::fs::canonicalize(p) {
            found.insert(path);
        }
    }
    for pid in super::running_pids() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comms.iter().any(|c| c == comm.trim()) && !pids.contains(&pid) {
            continue;
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        found.extend(
            libssl_in_maps(&maps)
                .into_iter()
                .filter_map(|p| std::fs::canonicalize(p).ok()),
        );
    }
    found.into_iter().collect()
}

/// The libssl paths in a `/proc/PID/maps` text.
fn libssl_in_maps(maps: &str) -> Vec<PathBuf> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("libssl.so"))
        })
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libssl_in_maps() {
        let maps = "7f1c0000-7f1c1000 r--p 00000000 fe:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                    7f1d0000-7f1d1000 r--p 00000000 fe:01 124 /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n\
                    7f1e0000-7f1e1000 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            libssl_in_maps(maps),
            vec![PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3")]
        );
    }
}
