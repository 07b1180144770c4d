//! Diagnostics to stderr through `tracing`. Library code logs with the `log` macros (as aya and
//! aya-log do); a bridge sends those through the same subscriber.
//!
//! Under systemd (stderr connected to the journal, which sets `JOURNAL_STREAM`) each line starts
//! with a `<N>` syslog priority that journald turns into the entry's level, and carries no
//! timestamp, since the journal adds its own.

use std::{
    fmt,
    io::{self, Write as _},
    sync::Mutex,
};

use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<N>target: message`, one line per event.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate carry their real target in normalised metadata.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write!(writer, "<{}>{}: ", priority(meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Log output held back while the live view owns the terminal; `None` when lines go straight
/// to stderr.
static HELD: Mutex<Option<Held>> = Mutex::new(None);
/// Bytes of log output held at most; later lines are counted, not kept.
const HELD_MAX: usize = 1 << 20;

struct Held {
    text: Vec<u8>,
    dropped: u64,
}

/// Where log lines go: stderr, or the held buffer while the live view is up.
struct LogWriter;

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut held) = HELD.lock()
            && let Some(h) = held.as_mut()
        {
            if h.text.len() + buf.len() <= HELD_MAX {
                h.text.extend_from_slice(buf);
            } else {
                h.dropped += 1;
            }
            return Ok(buf.len());
        }
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Holds log lines back from stderr, where they would scribble over the live view.
pub fn hold() {
    if let Ok(mut held) = HELD.lock() {
        held.get_or_insert(Held {
            text: Vec::new(),
            dropped: 0,
        });
    }
}

/// Writes the held log lines to stderr and sends new ones there again.
pub fn release() {
    let held = HELD.lock().ok().and_then(|mut h| h.take());
    if let Some(h) = held {
        let mut err = io::stderr().lock();
        let _ = err.write_all(&h.text);
        if h.dropped > 0 {
            let _ = writeln!(err, "({} more log lines were dropped)", h.dropped);
        }
    }
}

/// Installs the subscriber; `RUST_LOG` overrides the default level (info).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if journal {
        builder.event_format(Journald).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
