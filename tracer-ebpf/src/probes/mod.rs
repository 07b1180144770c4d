//! One module per kind of hook. Each program is a thin wrapper around a `try_*` function.

mod accept;
mod close;
mod connect;
mod drop;
mod io;
mod reset;
mod response;
mod retransmit;
mod sockopt;
mod state;
mod thread;
mod tls;
