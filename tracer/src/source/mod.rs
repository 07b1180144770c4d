//! Proxy access logs: the third source of responses, besides the kernel's plaintext capture and
//! the TLS uprobe. A proxy's log says what it answered and, for its own errors, why (upstream
//! tried, timers, termination state), even when the traffic is encrypted in ways neither of the
//! other sources can see. `accesslog` parses lines; `follow` tails the files across rotation.

pub mod accesslog;
pub mod follow;
