//! Where records go. Sinks consume records and never reach back into the producers.

pub mod jsonl;
