//! HTTPS front ends: the plaintext a watched proxy hands to OpenSSL.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext};

use super::response::TLS_SEEN;
use crate::{
    kernel::{user_status, watched_thread},
    maps::TLS_STATUS,
};

/// Hook: uprobe on `SSL_write(SSL *ssl, const void *buf, int num)` and
/// `SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)` in the libssl the
/// proxy has mapped (OpenSSL 3 on Debian). The status is kept per thread and reported with the
/// client socket of the thread's next write, which carries the encrypted record: SSL_write
/// itself does not say which socket it writes to. Checked on 6.18 with OpenSSL 3.0.
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    let _ = try_ssl_write(&ctx);
    0
}

fn try_ssl_write(ctx: &ProbeContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched_thread(pid_tgid) {
        return Ok(());
    }
    let buf: u64 = ctx.arg(1).ok_or(0)?;
    if let Some(status) = user_status(buf) {
        TLS_STATUS
            .insert(&(pid_tgid as u32), &status, 0)
            .map_err(|e| e as i32)?;
        // SAFETY: a plain global, only ever set to 1.
        unsafe { core::ptr::write_volatile(&raw mut TLS_SEEN, 1) };
    }
    Ok(())
}
