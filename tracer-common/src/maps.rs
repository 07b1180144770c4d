//! Names and default sizes of the maps the kernel programs share with user space.

/// Ring buffer carrying every event.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU counters (see [`Counter`]).
pub const COUNTERS: &str = "COUNTERS";
/// Watched sockets, keyed by `struct sock *`.
pub const SOCKS: &str = "SOCKS";
/// Watched sockets, keyed by [`crate::net::FlowKey`], for drops of packets that carry no socket.
pub const FLOWS: &str = "FLOWS";
/// Ports that sockets listen on, in any network namespace (at start-up or since).
pub const LISTEN_PORTS: &str = "LISTEN_PORTS";
/// The client connection each thread last read from, in a slot chosen by thread id.
pub const LAST_CLIENT: &str = "LAST_CLIENT";
/// Entries of `LAST_CLIENT` moved out of their slot by a thread sharing it, keyed by thread id.
pub const LAST_CLIENT_OVERFLOW: &str = "LAST_CLIENT_OVERFLOW";
/// Status lines passed to `SSL_write`, waiting for the thread's next write to a client socket.
pub const TLS_STATUS: &str = "TLS_STATUS";
/// Process ids chosen with `--pid`.
pub const PIDS: &str = "PIDS";
/// Whether a thread passed the process filter, keyed by thread, process and thread name.
pub const WATCHED: &str = "WATCHED";

/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;
/// Default number of sockets tracked at once; the map is an LRU, so the oldest entry goes first.
pub const SOCKS_ENTRIES: u32 = 65_536;
/// Threads tracked at once by the per-thread maps (`LAST_CLIENT_OVERFLOW`, `TLS_STATUS`).
pub const THREAD_ENTRIES: u32 = 8_192;
/// Listening ports remembered at once.
pub const LISTEN_ENTRIES: u32 = 4_096;
/// Most `--pid` values.
pub const PIDS_ENTRIES: u32 = 64;
/// Threads whose process-filter result is remembered at once (an LRU).
pub const WATCHED_ENTRIES: u32 = 16_384;

/// Indexes of the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events dropped because the ring buffer was full.
    Lost = 0,
    /// Events written to the ring buffer.
    Emitted = 1,
    /// Socket entries that could not be inserted (map full despite LRU, or other errors).
    MapFull = 2,
    /// Not a count for users: bytes of routine records this CPU wrote since it last woke the
    /// reader. Kept per CPU so that CPUs writing records do not share a cache line.
    UnwokenBytes = 3,
}

/// Number of counters in [`COUNTERS`].
pub const COUNTER_SLOTS: u32 = 4;
