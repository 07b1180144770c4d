//! Where records go. Sinks consume records and never reach back into the producers.

pub mod fanout;
pub mod jsonl;
pub mod socket;
