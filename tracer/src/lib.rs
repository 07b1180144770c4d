//! The tracer's library: probe loading, event decoding, records and sinks. The `tracer` binary
//! (main.rs) is a thin command-line layer over it.

pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod live;
pub mod logging;
pub mod names;
pub mod probe;
pub mod record;
pub mod report;
pub mod run;
pub mod sink;
pub mod source;
pub mod verdict;
