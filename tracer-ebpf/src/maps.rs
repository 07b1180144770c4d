//! Maps shared with user space (names in `tracer_common::maps`) and the per-socket state the
//! programs keep between events.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    event::{EventKind, Exchange, ROLE_UPSTREAM, Record},
    maps::{
        COUNTER_SLOTS, Counter, EVENTS_BYTES, LISTEN_ENTRIES, PIDS_ENTRIES, SOCKS_ENTRIES,
        THREAD_ENTRIES, WATCHED_ENTRIES,
    },
    net::{FlowKey, SockTuple},
};

pub use tracer_common::sock::SockInfo;

use crate::kernel::wake_bytes;

/// Socket flags kept in [`SockInfo::flags`].
pub const F_RST_RX: u8 = 1;
/// `connect_start` is still to be written: the source port is chosen after SYN_SENT, so the
/// record waits for the handshake's outcome or first retransmit.
pub const F_START_PENDING: u8 = 2;
/// The handshake completed.
pub const F_ESTABLISHED: u8 = 4;
/// On a client socket: an upstream connection serving it has failed since its last upstream
/// request started. Its next one may be the proxy's retry, whose first byte is recorded.
pub const F_UPSTREAM_FAILED: u8 = 8;
/// On an upstream socket: the client of the request now outstanding had an upstream fail
/// (see [`F_UPSTREAM_FAILED`]), so this request's first byte is recorded.
pub const F_AFTER_FAILURE: u8 = 16;
/// On a client socket: `seq_mark` holds where the last reported status line was queued.
pub const F_STATUS_MARK: u8 = 32;

/// The client connection a thread last read from, in its slot of [`LAST_CLIENT`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ClientRef {
    /// The thread. Written last and read first and last, and 0 while the slot is written, so
    /// that a reader never takes one thread's id with another's client.
    pub tid: u32,
    pub _pad: u32,
    pub sk: u64,
    pub cookie: u64,
}

/// Slots of [`LAST_CLIENT`].
pub const LAST_CLIENT_SLOTS: u32 = 16_384;

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "SOCKS")]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(SOCKS_ENTRIES, 0);

#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(SOCKS_ENTRIES, 0);

/// The client connection each watched thread last read from, in slot `tid %
/// LAST_CLIENT_SLOTS`. It is written at every client read and read at every upstream request,
/// so it is an array, whose lookups the verifier inlines: a hash lookup, as before, cost about
/// 100 ns of the proxy's time twice per request. Two threads whose ids share a slot take
/// turns: the one that takes the slot moves the other's entry to [`LAST_CLIENT_OVERFLOW`],
/// where the other looks when the slot is not its own.
#[map(name = "LAST_CLIENT")]
pub static LAST_CLIENT: Array<ClientRef> = Array::with_max_entries(LAST_CLIENT_SLOTS, 0);

/// Entries of [`LAST_CLIENT`] moved out of their slot by a thread that shares it.
#[map(name = "LAST_CLIENT_OVERFLOW")]
pub static LAST_CLIENT_OVERFLOW: LruHashMap<u32, ClientRef> =
    LruHashMap::with_max_entries(THREAD_ENTRIES, 0);

#[map(name = "TLS_STATUS")]
pub static TLS_STATUS: LruHashMap<u32, u16> = LruHashMap::with_max_entries(THREAD_ENTRIES, 0);

/// Local ports that sockets listen on: filled by user space at start-up and by the CLOSE →
/// LISTEN state change after, so that a socket adopted at its first read or write is known to
/// be accepted even when its port lies in the ephemeral range. Never cleared: a port stays a
/// listening port.
#[map(name = "LISTEN_PORTS")]
pub static LISTEN_PORTS: LruHashMap<u16, u8> = LruHashMap::with_max_entries(LISTEN_ENTRIES, 0);

#[map(name = "PIDS")]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(PIDS_ENTRIES, 0);

/// A thread as the process filter sees it. The name is part of the key because exec() renames
/// a thread without changing its id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadKey {
    pub pid_tgid: u64,
    pub comm: [u8; 16],
}

/// The process filter's result per thread: 1 watched, 0 not. Every socket write and read of a
/// process that owns no watched socket asks (see `adopt`), as does every connect() on the host
/// (at SYN_SENT), and the full filter costs several map lookups and kernel reads.
#[map(name = "WATCHED")]
pub static WATCHED: LruHashMap<ThreadKey, u8> = LruHashMap::with_max_entries(WATCHED_ENTRIES, 0);

/// Slots per CPU of [`THREAD_CACHE`].
pub const THREAD_SLOTS: u32 = 16;

/// The process filter's answers cached per CPU, direct-mapped by thread id: each slot is one
/// word, `tid << 32 | generation << 1 | watched`, written and read whole, so that a program
/// preempted mid-update cannot leave half of one thread's answer with another thread's id.
/// Every socket read and write on the host asks it first: an array slot on this CPU (a lookup
/// the verifier inlines) instead of the hash lookups of `WATCHED`.
#[map(name = "THREAD_CACHE")]
pub static THREAD_CACHE: PerCpuArray<u64> = PerCpuArray::with_max_entries(THREAD_SLOTS, 0);

/// Room on this CPU to build a new socket's entry before it enters `SOCKS`, one slot per
/// program that builds them (`NEW_SOCK_*`). The 264-byte entry on the stack, next to the call
/// chain of the process filter, passed the verifier's 512-byte limit on the frames of a call
/// chain (576 bytes with the nightly of 2026-05-19). A slot per program, because a program
/// run may be preempted by another task's run of another program on the same CPU; the kernel
/// never runs one program twice at once on a CPU.
#[map(name = "NEW_SOCK")]
pub static NEW_SOCK: PerCpuArray<SockInfo> = PerCpuArray::with_max_entries(3, 0);
/// [`NEW_SOCK`]'s slot for `inet_sock_set_state`.
pub const NEW_SOCK_STATE: u32 = 0;
/// [`NEW_SOCK`]'s slot for `sock_send_length`.
pub const NEW_SOCK_SEND: u32 = 1;
/// [`NEW_SOCK`]'s slot for `sock_recv_length`.
pub const NEW_SOCK_RECV: u32 = 2;

/// A new socket's entry, built in this CPU's `slot` of [`NEW_SOCK`] rather than on the stack,
/// for [`track`].
#[inline(always)]
pub fn new_entry(
    slot: u32,
    pid_tgid: u64,
    comm: [u8; 16],
    ts: u64,
    role: u8,
    flags: u8,
) -> Option<&'static mut SockInfo> {
    let p = NEW_SOCK.get_ptr_mut(slot)?;
    // SAFETY: this CPU's slot of one program, which no other run uses while this one runs.
    let info = unsafe { &mut *p };
    *info = SockInfo::new(pid_tgid, comm, ts, role, flags);
    Some(info)
}

/// What the programs do with a socket's entry beyond its fields.
pub trait SockEntry {
    /// A fresh entry for a socket first seen now in the running task.
    fn new(pid_tgid: u64, comm: [u8; 16], ts: u64, role: u8, flags: u8) -> Self;
    /// Both ends of socket `sk`: the copy kept since the handshake, or read now.
    fn tuple_of(&self, sk: u64) -> SockTuple;
}

impl SockEntry for SockInfo {
    #[inline(always)]
    fn new(pid_tgid: u64, comm: [u8; 16], ts: u64, role: u8, flags: u8) -> Self {
        Self {
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            comm,
            start_ns: ts,
            last_rx_ns: ts,
            role,
            flags,
            ..Self::default()
        }
    }

    #[inline(always)]
    fn tuple_of(&self, sk: u64) -> SockTuple {
        if self.tuple.lport != 0 {
            self.tuple
        } else {
            crate::kernel::sk_tuple(sk)
        }
    }
}

/// Inserts a newly seen socket.
#[inline(always)]
pub fn track(sk: u64, info: &SockInfo) -> bool {
    if SOCKS.insert(&sk, info, 0).is_err() {
        count(Counter::MapFull);
        return false;
    }
    true
}

/// Links upstream socket `sk` to the client connection the current thread last read from: a
/// proxy worker reads a request, then connects or writes upstream for it. A client that saw
/// an upstream fail passes that on: this request may be the retry.
#[inline(always)]
pub fn link_to_client(sk: u64, info: &mut SockInfo) {
    let Some((client_sk, client_cookie)) = last_client(info.tid) else {
        return;
    };
    info.peer = client_cookie;
    info.peer_sk = client_sk;
    if let Some(c) = SOCKS.get_ptr_mut(&client_sk) {
        // SAFETY: a valid map value pointer, used within this program run.
        unsafe {
            (*c).peer = info.cookie;
            (*c).peer_sk = sk;
            if (*c).flags & F_UPSTREAM_FAILED != 0 {
                (*c).flags &= !F_UPSTREAM_FAILED;
                info.flags |= F_AFTER_FAILURE;
            }
        }
    }
}

/// Records that thread `tid` reads a request from client socket `sk` now.
#[inline(always)]
pub fn set_last_client(tid: u32, sk: u64, cookie: u64) {
    let Some(p) = LAST_CLIENT.get_ptr_mut(tid % LAST_CLIENT_SLOTS) else {
        return;
    };
    // SAFETY: a valid slot of an array map. Only threads sharing the slot write it; the tid
    // written last (and cleared first) lets a reader tell a whole entry from a torn one.
    unsafe {
        let owner = read_volatile(&raw const (*p).tid);
        if owner != tid && owner != 0 {
            // Another thread's entry: moved where that thread will look for it.
            let moved = ClientRef {
                tid: owner,
                _pad: 0,
                sk: read_volatile(&raw const (*p).sk),
                cookie: read_volatile(&raw const (*p).cookie),
            };
            let _ = LAST_CLIENT_OVERFLOW.insert(&owner, &moved, 0);
        }
        write_volatile(&raw mut (*p).tid, 0);
        write_volatile(&raw mut (*p).sk, sk);
        write_volatile(&raw mut (*p).cookie, cookie);
        write_volatile(&raw mut (*p).tid, tid);
    }
}

/// The client socket and cookie that thread `tid` last read a request from: its slot of
/// [`LAST_CLIENT`], or when another thread holds the slot, [`LAST_CLIENT_OVERFLOW`].
#[inline(always)]
fn last_client(tid: u32) -> Option<(u64, u64)> {
    if let Some(p) = LAST_CLIENT.get_ptr(tid % LAST_CLIENT_SLOTS) {
        // SAFETY: as in `set_last_client`; the entry counts only if its tid is this thread's
        // before and after the other fields are read.
        unsafe {
            let before = read_volatile(&raw const (*p).tid);
            let sk = read_volatile(&raw const (*p).sk);
            let cookie = read_volatile(&raw const (*p).cookie);
            if before == tid && read_volatile(&raw const (*p).tid) == tid {
                return Some((sk, cookie));
            }
        }
    }
    // SAFETY: copied out at once.
    let c = (unsafe { LAST_CLIENT_OVERFLOW.get(&tid) }).copied()?;
    Some((c.sk, c.cookie))
}

/// Marks the client linked to upstream socket `info` as having seen an upstream fail (see
/// [`F_UPSTREAM_FAILED`]). The cookie check keeps a socket address reused by a new client
/// from being marked.
#[inline(always)]
fn mark_client(info: &SockInfo) {
    if info.role != ROLE_UPSTREAM || info.peer_sk == 0 {
        return;
    }
    if let Some(c) = SOCKS.get_ptr_mut(&info.peer_sk) {
        // SAFETY: a valid map value pointer, used within this program run; a flag lost to a
        // concurrent update only leaves one retry's first byte unrecorded.
        unsafe {
            if (*c).cookie == info.peer {
                (*c).flags |= F_UPSTREAM_FAILED;
            }
        }
    }
}

/// Where a connection stands in its request/response cycle now.
#[inline(always)]
pub fn exchange(info: &SockInfo, bytes_received: u64, ts: u64) -> Exchange {
    exchange_as(info, info.req_start_ns != 0, bytes_received, ts)
}

/// [`exchange`] with `awaiting` decided by the caller.
#[inline(always)]
pub fn exchange_as(info: &SockInfo, awaiting: bool, bytes_received: u64, ts: u64) -> Exchange {
    Exchange {
        requests: info.requests,
        awaiting_response: awaiting as u8,
        _pad: [0; 3],
        idle_ns: if awaiting {
            info.req_idle_ns
        } else {
            ts.saturating_sub(info.last_rx_ns)
        },
        request_age_ns: if awaiting {
            ts.saturating_sub(info.req_start_ns)
        } else {
            0
        },
        bytes_received,
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, so no other CPU writes it; programs do not nest on one CPU here.
        unsafe { *p += 1 };
    }
}

/// Current `CLOCK_MONOTONIC` time.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Writes one event for a watched socket, counting it as lost when the ring buffer is full.
/// Whether it wakes the reader at once follows from its kind (see [`wake_flags`]).
#[inline(always)]
pub fn emit<P: Copy + 'static>(
    kind: EventKind,
    sk: u64,
    info: &SockInfo,
    tuple: &SockTuple,
    ts_ns: u64,
    payload: P,
) {
    emit_as(kind, routine_kind(kind), sk, info, tuple, ts_ns, payload);
}

/// Whether records of this kind are routine: they explain no failure by themselves.
#[inline(always)]
fn routine_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::ConnectStart
            | EventKind::Connected
            | EventKind::FirstByte
            | EventKind::FirstByteSummary
            | EventKind::Accepted
            | EventKind::Closed
    )
}

/// [`emit`], with the caller deciding whether the record is routine.
#[inline(always)]
pub fn emit_as<P: Copy + 'static>(
    kind: EventKind,
    routine: bool,
    sk: u64,
    info: &SockInfo,
    tuple: &SockTuple,
    ts_ns: u64,
    payload: P,
) {
    if !routine {
        // Every record that may explain a failure of an upstream passes here.
        mark_client(info);
    }
    let Some(mut entry) = EVENTS.reserve::<Record<P>>(0) else {
        count(Counter::Lost);
        return;
    };
    // Fields are written in place: building the record on the stack first would not fit the
    // 512-byte BPF stack in the larger programs.
    let r = entry.as_mut_ptr();
    // SAFETY: `r` points to reserved ring buffer memory sized for `Record<P>`; every field is
    // written before submit.
    unsafe {
        let h = &raw mut (*r).header;
        (*h).kind = kind as u16;
        (*h).role = info.role;
        (*h)._pad = [0; 5];
        (*h).ts_ns = ts_ns;
        (*h).tgid = info.tgid;
        (*h).tid = info.tid;
        (*h).cookie = info.cookie;
        (*h).sock = sk;
        (*h).peer = info.peer;
        (*h).comm = info.comm;
        (*h).tuple = *tuple;
        (&raw mut (*r).payload).write(payload);
    }
    entry.submit(wake_flags(
        routine,
        core::mem::size_of::<Record<P>>() as u64,
    ));
    count(Counter::Emitted);
}

/// How to submit a record: wake the reader now, or leave it for the reader's next drain.
///
/// A wake-up is an IPI and a context switch; at one per record, on a proxy making 40,000
/// requests/s, they cost the proxy more than the probes themselves. Records that explain a
/// failure (resets, refused and failed connects, responses, drops, retransmits, a close
/// while a request was outstanding) wake the reader at once, so verdicts are not delayed;
/// the reader then drains everything in the ring, routine records included. Routine records
/// (connects, first bytes and their summaries, accepts, closes, an answered peer close, a
/// reset sent with no request outstanding) wake
/// it only when this CPU has written its share of an eighth of the ring since its own last
/// wake-up, so that the ring cannot fill between drains; otherwise they wait for the reader,
/// which also drains the ring on a timer (`tracer/src/run.rs`, `DRAIN_EVERY`).
#[inline(always)]
fn wake_flags(routine: bool, size: u64) -> u64 {
    // Counted per CPU rather than asked of the ring (bpf_ringbuf_query): two helper calls per
    // record were a tenth of the cost of a request's programs. The per-CPU slot is an array
    // lookup the verifier inlines; a global count would bounce its cache line between CPUs.
    let Some(unwoken) = COUNTERS.get_ptr_mut(Counter::UnwokenBytes as u32) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: `unwoken` is this CPU's slot, and programs do not nest on one CPU here.
    unsafe {
        let pending = *unwoken + size;
        if routine && pending < wake_bytes() {
            *unwoken = pending;
            return BPF_RB_NO_WAKEUP as u64;
        }
        *unwoken = 0;
    }
    BPF_RB_FORCE_WAKEUP as u64
}

/// The key under which a socket's packets are found in [`FLOWS`].
#[inline(always)]
pub fn flow_key(t: &SockTuple) -> FlowKey {
    FlowKey {
        laddr: t.laddr,
        raddr: t.raddr,
        lport: t.lport,
        rport: t.rport,
        _pad: 0,
    }
}
