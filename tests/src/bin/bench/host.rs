//! What the bench reads about the host and its processes from `/proc`: CPU time, peak memory,
//! how busy each CPU was, and how many other BPF programs are loaded.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// User plus system CPU seconds of a process, all its threads included.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks_per_s())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib(&status, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Per-CPU busy and total jiffies from `/proc/stat`.
#[derive(Debug, Clone)]
pub struct CpuTimes(Vec<(u64, u64)>);

impl CpuTimes {
    /// Reads the per-CPU lines of `/proc/stat`.
    pub fn sample() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self(parse_cpu_lines(&text))
    }

    /// How busy each CPU was between `self` and `later`, in percent.
    pub fn busy_pct_until(&self, later: &Self) -> Vec<f64> {
        self.0
            .iter()
            .zip(&later.0)
            .map(|(&(b0, t0), &(b1, t1))| {
                let total = t1.saturating_sub(t0);
                if total == 0 {
                    0.0
                } else {
                    100.0 * b1.saturating_sub(b0) as f64 / total as f64
                }
            })
            .collect()
    }
}

/// `(busy, total)` jiffies of each `cpuN` line; idle and iowait count as not busy.
fn parse_cpu_lines(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest time is already in user).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// The whole host's busy percentage over `window`, averaged over its CPUs.
pub fn host_busy_pct(window: Duration) -> f64 {
    let before = CpuTimes::sample();
    std::thread::sleep(window);
    let busy = before.busy_pct_until(&CpuTimes::sample());
    busy.iter().sum::<f64>() / busy.len().max(1) as f64
}

/// Waits, at most `limit`, until the host is nearly idle, and returns how busy it was in the
/// last half second: work left by other users of the machine skews every measurement.
pub fn settle(limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let busy = host_busy_pct(Duration::from_millis(500));
        if busy < 5.0 || start.elapsed() >= limit {
            return busy;
        }
    }
}

/// BPF program ids held open by process `pid` (from the `prog_id:` lines of its fdinfo).
pub fn bpf_prog_ids(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Number of BPF programs loaded on the host (`/proc/*/fdinfo` of every process). Programs of
/// another tracer slow every syscall of the host and so skew all configurations alike.
pub fn loaded_bpf_programs() -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(bpf_prog_ids)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// A short description of the machine for the report.
pub fn describe() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "kernel": kernel.trim(),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": model,
        "mem_mib": parse_kib(&meminfo, "MemTotal:").map(|k| k / 1024),
    })
}

/// Whether `program` can be run (found on PATH).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "812 (tracer (x) y) S 1 812 812 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn vm_hwm_in_kib() {
        let status = "Name:\ttracer\nVmPeak:\t  90000 kB\nVmHWM:\t   58576 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(58576));
    }

    #[test]
    fn per_cpu_busy() {
        let a =
            parse_cpu_lines("cpu  9 9 9 9\ncpu0 10 0 10 80 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\n");
        let b = parse_cpu_lines("cpu0 60 0 20 120 0 0 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\n");
        let busy = CpuTimes(a).busy_pct_until(&CpuTimes(b));
        assert_eq!(busy, vec![60.0, 0.0]);
    }
}
