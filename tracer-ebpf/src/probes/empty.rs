//! Programs that return at once, one for each hook of the attach table: `tracer run
//! --hooks-only` attaches these instead of the real ones, so that a benchmark can measure what
//! merely having the hooks costs the host (the tracepoint dispatch, the program call), which
//! any tracer on the same hooks pays before doing any work. Never attached otherwise.

use aya_ebpf::{
    macros::{btf_tracepoint, uprobe},
    programs::{BtfTracePointContext, ProbeContext},
};

/// One empty BTF tracepoint program per hook, named `empty_<the real program>`.
macro_rules! empty_btf_tracepoints {
    ($($name:ident => $hook:tt),* $(,)?) => {
        $(
            /// Hook: the BTF tracepoint of the same name, doing nothing.
            #[btf_tracepoint(function = $hook)]
            pub fn $name(_ctx: BtfTracePointContext) -> u32 {
                0
            }
        )*
    };
}

empty_btf_tracepoints! {
    empty_inet_sock_set_state => "inet_sock_set_state",
    empty_tcp_destroy_sock => "tcp_destroy_sock",
    empty_tcp_receive_reset => "tcp_receive_reset",
    empty_tcp_send_reset => "tcp_send_reset",
    empty_inet_sk_error_report => "inet_sk_error_report",
    empty_tcp_retransmit_skb => "tcp_retransmit_skb",
    empty_kfree_skb => "kfree_skb",
    empty_sched_process_exec => "sched_process_exec",
    empty_task_rename => "task_rename",
    empty_tcp_sendmsg_locked => "tcp_sendmsg_locked",
    empty_sock_send_length => "sock_send_length",
    empty_sock_recv_length => "sock_recv_length",
}

/// Hook: uprobe on OpenSSL's `SSL_write`/`SSL_write_ex`, doing nothing.
#[uprobe]
pub fn empty_ssl_write(_ctx: ProbeContext) -> u32 {
    0
}
