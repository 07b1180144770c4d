//! Loading the kernel programs: BTF offsets and the process filter go in as globals, then each
//! program of the attach table is attached and its outcome recorded.

pub mod attach;
pub mod btf;
pub mod listen;
pub mod offsets;
pub mod tls;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, UProbe, uprobe::UProbeScope},
};
use tracer_common::{
    config::{Filter, MAX_COMMS},
    event::{Accepted, EventHeader, Exchange, PeerClose},
    maps::{self as names, Counter},
    sock::{HELD_ACCEPT, HELD_CONNECT, HELD_PEER_CLOSE, HELD_TTFB, SockInfo},
};

use self::{
    attach::{HOOKS, HookKind},
    btf::{Btf, BtfError},
    offsets::{MissingField, OffsetError},
};
use crate::{
    decode::{Event, Payload},
    names::ReasonNames,
};

/// The compiled kernel programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Why the kernel side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error(
        "loading the eBPF object failed: {0} (is the tracer running as root on a kernel with BTF?)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {0}: the tracer binary was built from mismatched sources")]
    Missing(&'static str),
    #[error("required hook {hook} could not attach: {error}")]
    Required { hook: String, error: String },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("at most {MAX_COMMS} --comm values can be watched, {0} were given")]
    TooManyComms(usize),
    #[error("at most {max} --pid values can be watched, {given} were given")]
    TooManyPids { given: usize, max: u32 },
    #[error("--ring-size {0} is not a power of two of at least 4096 bytes")]
    RingSize(u32),
}

/// Drop reasons that free packets a closing socket never read: bookkeeping, not loss.
const NOT_LOSS: &[&str] = &["QUEUE_PURGE", "SOCKET_CLOSE"];

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Command names to watch (at most [`MAX_COMMS`]).
    pub comms: Vec<String>,
    /// Process ids to watch, with their children.
    pub pids: Vec<u32>,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// HTTP statuses whose status lines are reported.
    pub statuses: Vec<u16>,
    /// One upstream request in this many gets its own `ttfb` record.
    pub ttfb_every: u32,
    /// Hold the routine records of young upstream connections in the kernel
    /// (`tracer_common::sock::Held`).
    pub hold: bool,
    /// Attach each hook's fallback where the table has one, instead of the preferred hook.
    pub fallback_hooks: bool,
    /// Which programs go on the hooks: the tracer's, or a benchmark's floor.
    pub programs: ProgramSet,
}

/// The programs attached to the hooks of the attach table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgramSet {
    /// The tracer's programs.
    #[default]
    Full,
    /// Every hook gets an empty twin that returns at once (`--hooks-only`).
    Empty,
    /// Empty twins, but for writes to clients, whose program reads status lines and nothing
    /// more (`--status-only`).
    StatusOnly,
}

impl ProgramSet {
    /// The set chosen by `tracer run`'s benchmark flags (which clap keeps exclusive).
    pub fn from_flags(hooks_only: bool, status_only: bool) -> Self {
        match (hooks_only, status_only) {
            (true, _) => Self::Empty,
            (false, true) => Self::StatusOnly,
            (false, false) => Self::Full,
        }
    }

    /// What a benchmark's set leaves untraced, for the log; `None` for the tracer's programs.
    pub fn benchmark_note(self) -> Option<&'static str> {
        match self {
            Self::Full => None,
            Self::Empty => Some(
                "--hooks-only: every hook is attached, but its program returns at once; nothing is traced",
            ),
            Self::StatusOnly => Some(
                "--status-only: only the status lines of responses are read; nothing else is traced",
            ),
        }
    }
}

/// The outcome of attaching one hook.
#[derive(Debug, Clone)]
pub struct HookStatus {
    /// The hook as shown to users, e.g. `tp_btf/tcp_receive_reset`.
    pub name: String,
    /// What the capture loses without it.
    pub feature: &'static str,
    pub required: bool,
    /// `None` when attached.
    pub error: Option<String>,
}

/// Counters kept by the kernel programs, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub emitted: u64,
    pub lost: u64,
    pub map_full: u64,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    pub names: ReasonNames,
    pub missing: Vec<MissingField>,
    counters: PerCpuArray<MapData, u64>,
}

fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => (32768, 60999),
    }
}

/// The ids of the processes running now, from `/proc` (none if it cannot be read).
fn running_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

/// Gives the heap freed after loading (the parsed BTF) back to the system, so that the resident
/// size of a daemon running for weeks is what it uses, not what loading needed.
fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe { libc::malloc_trim(0) };
}

impl Probes {
    /// Loads the programs with this kernel's offsets and the filter, then attaches every hook.
    /// A required hook that fails is an error; an optional one is reported in `hooks`.
    pub fn load(opts: &LoadOptions) -> Result<Self, ProbeError> {
        if opts.comms.len() > MAX_COMMS {
            return Err(ProbeError::TooManyComms(opts.comms.len()));
        }
        if opts.pids.len() > names::PIDS_ENTRIES as usize {
            return Err(ProbeError::TooManyPids {
                given: opts.pids.len(),
                max: names::PIDS_ENTRIES,
            });
        }
        if opts.ring_bytes < 4096 || !opts.ring_bytes.is_power_of_two() {
            return Err(ProbeError::RingSize(opts.ring_bytes));
        }
        raise_memlock_limit();
        let btf = Btf::from_sys_fs()?;
        let resolved = offsets::resolve(&btf)?;
        let names = ReasonNames::new(
            &btf.enum_values("sk_rst_reason").unwrap_or_default(),
            &btf.enum_values("skb_drop_reason").unwrap_or_default(),
        );
        let mut filter = Filter::default();
        for (i, c) in opts.comms.iter().enumerate() {
            filter.comms[i] = Filter::pack_comm(c.as_bytes());
        }
        filter.n_comms = opts.comms.len() as u32;
        filter.n_pids = opts.pids.len() as u32;
        (filter.ephemeral_lo, filter.ephemeral_hi) = ephemeral_range();
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32;
        filter.wake_bytes = (opts.ring_bytes / 8 / cpus).max(256);
        for status in &opts.statuses {
            filter.report_status(*status);
        }
        filter.ttfb_every = opts.ttfb_every.max(1);
        filter.hold = u32::from(opts.hold);
        let drop_reasons = btf.enum_values("skb_drop_reason").unwrap_or_default();
        for (name, value) in &drop_reasons {
            if NOT_LOSS
                .iter()
                .any(|n| name.strip_prefix("SKB_DROP_REASON_") == Some(n))
            {
                filter.ignore_drop_reason(*value as u32);
            }
        }
        // The kernel's BTF is parsed twice, by our reader and by aya's, each several MiB:
        // one at a time keeps the peak memory down.
        drop(btf);

        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Load(e.into()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("OFFSETS", &resolved.offsets, true)
            .override_global("FILTER", &filter, true)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;

        mark_all(&mut ebpf, names::PIDS, opts.pids.iter().copied())?;

        let mut hooks = Vec::with_capacity(HOOKS.len());
        for hook in HOOKS {
            let mut name = hook.display();
            let mut error = match hook.fallback {
                Some(_) if opts.fallback_hooks => Some("not tried (--fallback-hooks)".to_string()),
                _ => attach_one(&mut ebpf, hook.program, hook.kind, opts.programs, &aya_btf).err(),
            };
            if let (Some(first), Some((program, kind))) = (&error, hook.fallback) {
                log::debug!("{name} did not attach ({first}); trying {}", kind.display());
                error = attach_one(&mut ebpf, program, kind, opts.programs, &aya_btf)
                    .map_err(|e| format!("{e}; and {name}: {first}"))
                    .err();
                name = format!("{} (instead of {name})", kind.display());
            }
            if hook.required
                && let Some(error) = &error
            {
                return Err(ProbeError::Required {
                    hook: name,
                    error: error.clone(),
                });
            }
            hooks.push(HookStatus {
                name,
                feature: hook.feature,
                required: hook.required,
                error,
            });
        }
        hooks.extend(attach_tls(&mut ebpf, opts));
        // After the LISTEN state change is hooked, so that no listener falls in between.
        let ports = listen::listening_ports(names::LISTEN_ENTRIES as usize);
        mark_all(&mut ebpf, names::LISTEN_PORTS, ports)?;
        drop(aya_btf);
        release_free_memory();
        let counters = ebpf
            .take_map(names::COUNTERS)
            .ok_or(ProbeError::Missing("COUNTERS map"))?;
        let counters = PerCpuArray::try_from(counters).map_err(|source| ProbeError::Map {
            map: names::COUNTERS,
            source,
        })?;
        Ok(Self {
            ebpf,
            hooks,
            names,
            missing: resolved.missing,
            counters,
        })
    }

    /// Takes the event ring buffer; call once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(ProbeError::Missing("EVENTS ring buffer"))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            map: names::EVENTS,
            source,
        })
    }

    /// Takes the aya-log ring buffer reader, when the programs log at all.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }

    /// Reads the kernel counters.
    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let sum = |c: Counter| -> Result<u64, ProbeError> {
            let v = self
                .counters
                .get(&(c as u32), 0)
                .map_err(|source| ProbeError::Map {
                    map: names::COUNTERS,
                    source,
                })?;
            Ok(v.iter().sum())
        };
        Ok(KernelCounters {
            emitted: sum(Counter::Emitted)?,
            lost: sum(Counter::Lost)?,
            map_full: sum(Counter::MapFull)?,
        })
    }

    /// The `ttfb` tallies of upstream sockets still open, as `ttfb_summary` events dated
    /// `now_ns`: requests that no summary has counted yet, which the kernel would write only
    /// at the next request after its period or at the socket's close. Read at exit, after the
    /// ring's last drain, so that a run's trace counts every answered request it saw.
    pub fn unwritten_tallies(&self, now_ns: u64) -> Result<Vec<Event>, ProbeError> {
        let map_error = |source| ProbeError::Map {
            map: names::SOCKS,
            source,
        };
        let map = self
            .ebpf
            .map(names::SOCKS)
            .ok_or(ProbeError::Missing(names::SOCKS))?;
        let socks: BpfHashMap<_, u64, SockInfo> = BpfHashMap::try_from(map).map_err(map_error)?;
        let mut out = Vec::new();
        // An entry deleted while the map is walked ends the walk early; what was read stands.
        for (sk, info) in socks.iter().map_while(Result::ok) {
            unwritten(sk, &info, now_ns, &mut out);
        }
        Ok(out)
    }
}

/// What the kernel holds for open connection `sk` and has not written: its held records
/// (`tracer_common::sock::Held`), with their own times, and its `ttfb` tally, dated `now_ns`.
fn unwritten(sk: u64, info: &SockInfo, now_ns: u64, out: &mut Vec<Event>) {
    let mut push = |ts_ns: u64, payload: Payload| {
        let header = EventHeader {
            kind: payload.kind() as u16,
            role: info.role,
            _pad: [0; 5],
            ts_ns,
            tgid: info.tgid,
            tid: info.tid,
            cookie: info.cookie,
            sock: sk,
            peer: info.peer,
            comm: info.comm,
            tuple: info.tuple,
        };
        out.push(Event { header, payload });
    };
    let h = &info.held_records;
    if info.held & HELD_ACCEPT != 0 {
        push(info.start_ns, Payload::Accepted(Accepted::default()));
    }
    if info.held & HELD_CONNECT != 0 {
        push(h.connect_ns, Payload::ConnectStart(info.held_start()));
        push(h.connect_ns, Payload::Connected(info.held_connected()));
    }
    if info.held & HELD_TTFB != 0 {
        push(h.first_byte_ns, Payload::FirstByte(info.held_first_byte()));
    }
    if info.held & HELD_PEER_CLOSE != 0 {
        let exchange = Exchange {
            requests: info.requests,
            idle_ns: h.peer_idle_ns,
            bytes_received: h.peer_bytes,
            ..Exchange::default()
        };
        push(h.peer_close_ns, Payload::PeerClose(PeerClose { exchange }));
    }
    if info.tally.requests != 0 {
        push(now_ns, Payload::FirstByteSummary(info.tally));
    }
}

/// Attaches the `SSL_write` probe to every libssl the watched proxies use.
fn attach_tls(ebpf: &mut Ebpf, opts: &LoadOptions) -> Vec<HookStatus> {
    const FEATURE: &str = "response status lines of HTTPS front ends (OpenSSL SSL_write)";
    let paths = tls::libssl_paths(&opts.comms, &opts.pids);
    let status = |name: String, error: Option<String>| HookStatus {
        name,
        feature: FEATURE,
        required: false,
        error,
    };
    let name = program_name("ssl_write", opts.programs);
    let prog: Result<&mut UProbe, String> = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))
        .and_then(|p| p.try_into().map_err(|e| format!("{e}")));
    let prog = match prog.and_then(|p| p.load().map(|()| p).map_err(|e| verifier_error(&e))) {
        Ok(p) => p,
        Err(e) => return vec![status("uprobe/libssl:SSL_write".into(), Some(e))],
    };
    if paths.is_empty() {
        return vec![status(
            "uprobe/libssl:SSL_write".into(),
            Some("no libssl found in the watched processes or the usual places".into()),
        )];
    }
    let mut out = Vec::new();
    for path in &paths {
        for symbol in ["SSL_write", "SSL_write_ex"] {
            let error = prog
                .attach(symbol, path, UProbeScope::AllProcesses)
                .map(|_| ())
                .map_err(|e| format!("{e}"))
                .err();
            out.push(status(format!("uprobe/{}:{symbol}", path.display()), error));
        }
    }
    out
}

/// Inserts each key with the value 1 into the hash map `name`, a set to the programs.
fn mark_all<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: impl IntoIterator<Item = K>,
) -> Result<(), ProbeError> {
    let map_error = |source| ProbeError::Map { map: name, source };
    let map = ebpf.map_mut(name).ok_or(ProbeError::Missing(name))?;
    let mut set: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(map_error)?;
    for key in keys {
        set.insert(key, 1, 0).map_err(map_error)?;
    }
    Ok(())
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &str,
    kind: HookKind,
    programs: ProgramSet,
    btf: &aya::Btf,
) -> Result<(), String> {
    let name = program_name(program, programs);
    let prog = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
    match kind {
        HookKind::BtfTracepoint(name) => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load(name, btf).map_err(|e| verifier_error(&e))?;
            p.attach().map_err(|e| format!("{e}"))?;
        }
    }
    Ok(())
}

/// The programs on socket sends, which read status lines: the table's choice and its fallback.
const SEND_PROGRAMS: [&str; 2] = ["tcp_sendmsg_locked", "sock_send_length"];

/// The program to attach for `program` of the attach table: itself, or in a benchmark's set
/// its empty twin (`tracer-ebpf/src/probes/empty.rs`) or its status-only twin (`probes/io.rs`).
fn program_name(program: &str, programs: ProgramSet) -> String {
    match programs {
        ProgramSet::Full => program.to_string(),
        ProgramSet::StatusOnly if SEND_PROGRAMS.contains(&program) => format!("status_{program}"),
        ProgramSet::Empty | ProgramSet::StatusOnly => format!("empty_{program}"),
    }
}

/// The error with the verifier's log, which says which instruction it rejected.
fn verifier_error(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("{io_error}: verifier said:\n{verifier_log}")
        }
        other => format!("{other}"),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raising it is harmless elsewhere.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer; failure only means the old limit stays.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program any set attaches is in the eBPF object the tracer carries: a twin
    /// missing from `probes/empty.rs` or `probes/io.rs` would otherwise only show as an
    /// optional hook that failed to attach in a benchmark.
    #[test]
    fn every_set_attaches_programs_the_object_has() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded eBPF object");
        let programs = HOOKS
            .iter()
            .flat_map(|h| std::iter::once(h.program).chain(h.fallback.map(|(p, _)| p)))
            .chain(["ssl_write"]);
        for p in programs {
            for set in [ProgramSet::Full, ProgramSet::Empty, ProgramSet::StatusOnly] {
                let name = program_name(p, set);
                assert!(
                    object.programs.contains_key(&name),
                    "{set:?}: no program {name}"
                );
            }
            assert_eq!(program_name(p, ProgramSet::Full), p);
            assert_eq!(program_name(p, ProgramSet::Empty), format!("empty_{p}"));
            let status = program_name(p, ProgramSet::StatusOnly);
            if SEND_PROGRAMS.contains(&p) {
                assert_eq!(status, format!("status_{p}"));
            } else {
                assert_eq!(status, format!("empty_{p}"));
            }
        }
    }

    #[test]
    fn the_benchmark_flags_choose_one_set_and_say_so() {
        assert_eq!(ProgramSet::from_flags(false, false), ProgramSet::Full);
        assert_eq!(ProgramSet::from_flags(true, false), ProgramSet::Empty);
        assert_eq!(ProgramSet::from_flags(false, true), ProgramSet::StatusOnly);
        assert_eq!(ProgramSet::Full.benchmark_note(), None);
        assert!(ProgramSet::Empty.benchmark_note().is_some());
        assert!(ProgramSet::StatusOnly.benchmark_note().is_some());
    }
}
