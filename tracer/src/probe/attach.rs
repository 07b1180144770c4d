//! The attach table: which program goes on which hook, and what is lost without it.
//!
//! Every hook is a BTF tracepoint so the tracer works where kprobes and fentry are unavailable
//! (kernels built without kprobes, lockdown). BTF tracepoints need 5.5+. None is a syscall
//! tracepoint: attaching any one of those sends every system call of every task on the host
//! through the kernel's slow tracing path (kernel-notes.md).

/// How a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `tp_btf/<name>`: raw tracepoint with typed arguments.
    BtfTracepoint(&'static str),
}

impl HookKind {
    /// As shown to users, e.g. `tp_btf/tcp_receive_reset`.
    pub fn display(&self) -> String {
        match self {
            HookKind::BtfTracepoint(n) => format!("tp_btf/{n}"),
        }
    }
}

/// One row of the attach table.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Program name in the eBPF object.
    pub program: &'static str,
    pub kind: HookKind,
    /// Without a required hook the tracer refuses to run.
    pub required: bool,
    /// What the capture loses when the hook is missing.
    pub feature: &'static str,
    /// Where the hook does not exist or its program does not load: another program and hook
    /// that do the same work, at a higher cost.
    pub fallback: Option<(&'static str, HookKind)>,
}

impl Hook {
    /// The hook's name as shown to users, e.g. `tp_btf/tcp_receive_reset`.
    pub fn display(&self) -> String {
        self.kind.display()
    }
}

/// All hooks, in attach order.
pub const HOOKS: &[Hook] = &[
    Hook {
        program: "inet_sock_set_state",
        kind: HookKind::BtfTracepoint("inet_sock_set_state"),
        required: true,
        feature: "connect lifecycle, peer close",
        fallback: None,
    },
    Hook {
        program: "tcp_destroy_sock",
        kind: HookKind::BtfTracepoint("tcp_destroy_sock"),
        required: true,
        feature: "socket end summary (and freeing in-kernel state)",
        fallback: None,
    },
    Hook {
        program: "tcp_receive_reset",
        kind: HookKind::BtfTracepoint("tcp_receive_reset"),
        required: false,
        feature: "resets received",
        fallback: None,
    },
    Hook {
        program: "tcp_send_reset",
        kind: HookKind::BtfTracepoint("tcp_send_reset"),
        required: false,
        feature: "resets sent",
        fallback: None,
    },
    Hook {
        program: "inet_sk_error_report",
        kind: HookKind::BtfTracepoint("inet_sk_error_report"),
        required: false,
        feature: "errno of ICMP-failed connects (soft errors the application clears with SO_ERROR)",
        fallback: None,
    },
    Hook {
        program: "tcp_retransmit_skb",
        kind: HookKind::BtfTracepoint("tcp_retransmit_skb"),
        required: false,
        feature: "retransmits",
        fallback: None,
    },
    Hook {
        program: "kfree_skb",
        kind: HookKind::BtfTracepoint("kfree_skb"),
        required: false,
        feature: "packet drops",
        fallback: None,
    },
    Hook {
        program: "sched_process_exec",
        kind: HookKind::BtfTracepoint("sched_process_exec"),
        required: true,
        feature: "the process filter's cached answers, asked again after exec()",
        fallback: None,
    },
    Hook {
        program: "task_rename",
        kind: HookKind::BtfTracepoint("task_rename"),
        required: true,
        feature: "the process filter's cached answers, asked again after a thread rename",
        fallback: None,
    },
    // 6.16+; sock_send_length (6.3+) finds the user buffer through the saved registers.
    Hook {
        program: "tcp_sendmsg_locked",
        kind: HookKind::BtfTracepoint("tcp_sendmsg_locked"),
        required: false,
        feature: "time to first byte (writes), response status lines",
        fallback: Some((
            "sock_send_length",
            HookKind::BtfTracepoint("sock_send_length"),
        )),
    },
    Hook {
        program: "sock_recv_length",
        kind: HookKind::BtfTracepoint("sock_recv_length"),
        required: false,
        feature: "time to first byte (reads), upstream status lines",
        fallback: None,
    },
];
