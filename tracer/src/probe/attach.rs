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
}

impl Hook {
    /// The hook's name as shown to users, e.g. `tp_btf/tcp_receive_reset`.
    pub fn display(&self) -> String {
        match self.kind {
            HookKind::BtfTracepoint(n) => format!("tp_btf/{n}"),
        }
    }
}

/// All hooks, in attach order.
pub const HOOKS: &[Hook] = &[
    Hook {
        program: "inet_sock_set_state",
        kind: HookKind::BtfTracepoint("inet_sock_set_state"),
        required: true,
        feature: "connect lifecycle, peer close",
    },
    Hook {
        program: "tcp_destroy_sock",
        kind: HookKind::BtfTracepoint("tcp_destroy_sock"),
        required: true,
        feature: "socket end summary (and freeing in-kernel state)",
    },
    Hook {
        program: "tcp_receive_reset",
        kind: HookKind::BtfTracepoint("tcp_receive_reset"),
        required: false,
        feature: "resets received",
    },
    Hook {
        program: "tcp_send_reset",
        kind: HookKind::BtfTracepoint("tcp_send_reset"),
        required: false,
        feature: "resets sent",
    },
    Hook {
        program: "inet_sk_error_report",
        kind: HookKind::BtfTracepoint("inet_sk_error_report"),
        required: false,
        feature: "errno of ICMP-failed connects (soft errors the application clears with SO_ERROR)",
    },
    Hook {
        program: "tcp_retransmit_skb",
        kind: HookKind::BtfTracepoint("tcp_retransmit_skb"),
        required: false,
        feature: "retransmits",
    },
    Hook {
        program: "kfree_skb",
        kind: HookKind::BtfTracepoint("kfree_skb"),
        required: false,
        feature: "packet drops",
    },
    Hook {
        program: "sched_process_exec",
        kind: HookKind::BtfTracepoint("sched_process_exec"),
        required: true,
        feature: "the process filter's cached answers, asked again after exec()",
    },
    Hook {
        program: "task_rename",
        kind: HookKind::BtfTracepoint("task_rename"),
        required: true,
        feature: "the process filter's cached answers, asked again after a thread rename",
    },
    Hook {
        program: "sock_send_length",
        kind: HookKind::BtfTracepoint("sock_send_length"),
        required: false,
        feature: "time to first byte (writes), response status lines",
    },
    Hook {
        program: "sock_recv_length",
        kind: HookKind::BtfTracepoint("sock_recv_length"),
        required: false,
        feature: "time to first byte (reads), upstream status lines",
    },
];
