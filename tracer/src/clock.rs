//! Converts kernel timestamps (`CLOCK_MONOTONIC`) to wall-clock time and RFC 3339 text.

/// Offset between the wall clock and the monotonic clock, sampled at a known moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, nanoseconds.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    /// Samples both clocks now. Re-sampled periodically so that a stepped wall clock is followed.
    pub fn sample() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock with a fixed offset, for tests.
    #[cfg(test)]
    pub fn fixed(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The current monotonic time, in the kernel's `bpf_ktime_get_ns` scale.
    pub fn monotonic_now() -> u64 {
        now_ns(libc::CLOCK_MONOTONIC) as u64
    }

    /// Wall-clock nanoseconds since the Unix epoch for a monotonic timestamp.
    pub fn wall_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset_ns
    }

    /// RFC 3339 UTC text with nanoseconds for a monotonic timestamp.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        rfc3339_from_unix_ns(self.wall_ns(mono_ns))
    }
}

/// Formats nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn rfc3339_from_unix_ns(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Appends `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for nanoseconds since the Unix epoch: the text of
/// [`rfc3339_from_unix_ns`] without the allocation and formatting machinery, for the record of
/// every event.
pub fn write_rfc3339(out: &mut Vec<u8>, ns: i128) {
    // Every event record carries a time: 64-bit arithmetic (good until 2262) instead of
    // 128-bit division, and the digits filled into a template.
    let Ok(ns) = i64::try_from(ns) else {
        out.extend_from_slice(rfc3339_from_unix_ns(ns).as_bytes());
        return;
    };
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(rfc3339_from_unix_ns(ns.into()).as_bytes());
        return;
    }
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    fill_digits(&mut text[0..4], y as u32);
    fill_digits(&mut text[5..7], m);
    fill_digits(&mut text[8..10], d);
    fill_digits(&mut text[11..13], sod / 3600);
    fill_digits(&mut text[14..16], sod % 3600 / 60);
    fill_digits(&mut text[17..19], sod % 60);
    fill_digits(&mut text[20..29], nanos);
    out.extend_from_slice(&text);
}

/// Writes `n` in decimal into `dst`, zero-padded to its width (higher digits are dropped).
fn fill_digits(dst: &mut [u8], mut n: u32) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_times_match_formatted_ones() {
        let mut ns: i128 = -86_400_000_000_123;
        for _ in 0..2000 {
            let mut out = Vec::new();
            write_rfc3339(&mut out, ns);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339_from_unix_ns(ns));
            ns = ns * 3 + 1_234_567_891_234;
            ns %= 300_000_000_000_000_000_000; // up to about the year 11,000
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_unix_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day) 12:34:56.000000789
        assert_eq!(
            rfc3339_from_unix_ns(951_827_696_000_000_789),
            "2000-02-29T12:34:56.000000789Z"
        );
        assert_eq!(
            rfc3339_from_unix_ns(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(rfc3339_from_unix_ns(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn offset_applies() {
        let c = Clock::fixed(1_000_000_000);
        assert_eq!(c.rfc3339(500), "1970-01-01T00:00:01.000000500Z");
    }

    #[test]
    fn sampled_clock_is_close_to_system_time() {
        let c = Clock::sample();
        let wall = c.wall_ns(Clock::monotonic_now());
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        assert!((wall - sys).abs() < 1_000_000_000, "{wall} vs {sys}");
    }
}
