//! Process filter handed to the kernel programs as a read-only global at load time.

/// Most `--comm` values.
pub const MAX_COMMS: usize = 8;
/// Length of a task's `comm`, NUL included.
pub const COMM_LEN: usize = 16;

/// Which processes are watched. Filtering happens in the kernel before any event is built.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Command names, NUL padded, compared as two `u64` words each.
    pub comms: [[u64; 2]; MAX_COMMS],
    /// How many of `comms` are in use.
    pub n_comms: u32,
    /// Non-zero when `PIDS` holds ids: a task matches if its tgid or its parent's tgid is there.
    pub n_pids: u32,
    /// Low and high end of `net.ipv4.ip_local_port_range`, to classify sockets the tracer did not
    /// see open (accepted, or older than the tracer): a local port in this range that is not a
    /// listening port means an active open.
    pub ephemeral_lo: u16,
    pub ephemeral_hi: u16,
    /// Bytes of routine records one CPU writes before it wakes the reader anyway: an eighth of
    /// the ring shared out among the CPUs.
    pub wake_bytes: u32,
    /// Bitmap of `enum skb_drop_reason` values that are not packet loss (queues purged when a
    /// socket closes). Values come from BTF because they differ between kernels.
    pub drop_ignore: [u64; 4],
    /// Bitmap of HTTP statuses (0..640) whose status lines are reported (`--status`).
    pub statuses: [u64; 10],
    /// One request in this many on an upstream connection gets its own `ttfb` record
    /// (`--ttfb-every`); the others are summed into the connection's `ttfb_summary`. 1 records
    /// every request; 0 is read as 1.
    pub ttfb_every: u32,
    /// Non-zero: the routine records of young upstream connections are held in the kernel
    /// and written with their `close` (`sock::Held`); 0 (`--no-hold`) writes them at once.
    pub hold: u32,
}

const _: () = assert!(core::mem::size_of::<Filter>() == 8 * 16 + 16 + 32 + 80 + 8);

impl Filter {
    /// Packs a command name the way the kernel stores it (truncated to 15 bytes, NUL padded).
    pub fn pack_comm(name: &[u8]) -> [u64; 2] {
        let mut bytes = [0u8; COMM_LEN];
        let n = name.len().min(COMM_LEN - 1);
        bytes[..n].copy_from_slice(&name[..n]);
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&bytes[..8]);
        hi.copy_from_slice(&bytes[8..]);
        [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
    }

    /// Marks a drop reason as ignored (values past the bitmap are never ignored).
    pub fn ignore_drop_reason(&mut self, reason: u32) {
        if let Some(w) = self.drop_ignore.get_mut((reason / 64) as usize) {
            *w |= 1 << (reason % 64);
        }
    }

    /// Marks an HTTP status as reported.
    pub fn report_status(&mut self, status: u16) {
        if let Some(w) = self.statuses.get_mut((status / 64) as usize) {
            *w |= 1 << (status % 64);
        }
    }

    /// Whether a drop reason is ignored.
    pub fn drop_ignored(&self, reason: u32) -> bool {
        self.drop_ignore
            .get((reason / 64) as usize)
            .is_some_and(|w| w & (1 << (reason % 64)) != 0)
    }
}

crate::impl_pod!(Filter);
