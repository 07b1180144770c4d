//! Kernel programs of the tracer. Every hook is a tracepoint or a BTF tracepoint, so that the
//! whole capture works on kernels without kprobes or fentry.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_read_kernel and the ring buffer helpers require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
