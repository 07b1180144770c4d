#![no_std]
// This file exists so that `tracer` can name this crate as a build dependency; the programs are
// in the `tracer` binary target (src/main.rs), which tracer/build.rs compiles for the BPF target.
