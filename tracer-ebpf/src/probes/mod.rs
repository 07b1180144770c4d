//! One module per kind of hook. Each program is a thin wrapper around a `try_*` function.

mod close;
mod drop;
mod empty;
mod error;
mod hold;
mod io;
mod reset;
mod response;
mod retransmit;
mod state;
mod thread;
mod tls;
mod ttfb;
