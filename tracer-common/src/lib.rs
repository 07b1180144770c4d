//! Types shared by the kernel programs and the user-space tracer.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of `bool` and of implicit padding, so that the
//! bytes the kernel writes into the ring buffer are exactly the bytes user space reads back.
#![no_std]

pub mod config;
pub mod event;
pub mod maps;
pub mod net;
pub mod offsets;
pub mod sock;

/// Implements `aya::Pod` for plain-old-data types when the `user` feature is on.
#[macro_export]
#[doc(hidden)]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, and has no padding or invalid bit patterns.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
