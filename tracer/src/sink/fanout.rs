//! One stream of serialised records for every live reader: control-socket clients and the
//! in-process view. A new reader first gets the most recent records, so that it can build the
//! current picture, then everything that follows. A reader that falls behind is told how many
//! records it missed instead of slowing the tracer down.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

/// Records replayed to a new reader.
const REPLAY: usize = 5_000;
/// Records buffered per reader before it is considered behind.
const PER_READER: usize = 16_384;

/// The shared stream.
#[derive(Clone)]
pub struct Fanout {
    tx: broadcast::Sender<Arc<str>>,
    recent: Arc<Mutex<VecDeque<Arc<str>>>>,
    /// The `start` record and the latest `stats` record: a reader needs them for the tracer's
    /// health however long ago they scrolled out of the recent records.
    pinned: Arc<Mutex<[Option<Arc<str>>; 2]>>,
}

/// Records every new reader gets first.
#[derive(Debug, Clone, Copy)]
pub enum Pinned {
    /// The `start` record: version, kernel, hooks.
    Start = 0,
    /// The latest `stats` record: counts, losses, uptime.
    Stats = 1,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}

impl Fanout {
    /// An empty stream.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(PER_READER);
        Self {
            tx,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(REPLAY))),
            pinned: Arc::default(),
        }
    }

    /// Publishes one serialised record (without its newline), which new readers get first
    /// until the next record of its kind.
    pub fn publish_pinned(&self, kind: Pinned, line: &str) {
        let line: Arc<str> = Arc::from(line);
        if let Ok(mut pinned) = self.pinned.lock() {
            pinned[kind as usize] = Some(line.clone());
        }
        self.publish_shared(line);
    }

    /// Publishes one serialised record (without its newline).
    pub fn publish(&self, line: &str) {
        self.publish_shared(Arc::from(line));
    }

    fn publish_shared(&self, line: Arc<str>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == REPLAY {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        // No reader is fine: nothing to deliver.
        let _ = self.tx.send(line);
    }

    /// The recent records and a receiver for what follows, taken together so that nothing
    /// falls between them.
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let mut first: Vec<Arc<str>> = self
            .pinned
            .lock()
            .map(|p| p.iter().flatten().cloned().collect())
            .unwrap_or_default();
        // Both locks are held while subscribing, so that no record falls in between.
        let recent = self.recent.lock();
        if let Ok(r) = &recent {
            first.extend(r.iter().cloned());
        }
        (first, self.tx.subscribe())
    }

    /// Writes the stream to `out` as JSON Lines until the stream ends or the writer fails.
    /// Lines are buffered and flushed whenever the reader has caught up, so that a busy stream
    /// costs a write per batch, not two per record, and a quiet one still arrives at once.
    pub async fn pump<W: tokio::io::AsyncWrite + Unpin>(&self, out: W) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, out);
        let (recent, mut rx) = self.subscribe();
        for line in recent {
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await?;
        }
        out.flush().await?;
        loop {
            match rx.recv().await {
                Ok(line) => {
                    out.write_all(line.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let note = format!("{{\"type\":\"lagged\",\"missed\":{missed}}}\n");
                    out.write_all(note.as_bytes()).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return out.flush().await,
            }
            if rx.is_empty() {
                out.flush().await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt as _;

    use super::*;

    #[tokio::test]
    async fn a_late_reader_gets_the_recent_records_then_the_rest() {
        let f = Fanout::new();
        f.publish("{\"n\":1}");
        f.publish("{\"n\":2}");
        let (a, b) = tokio::io::duplex(4096);
        let g = f.clone();
        let pump = tokio::spawn(async move { g.pump(a).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        f.publish("{\"n\":3}");
        let mut lines = tokio::io::BufReader::new(b).lines();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(lines.next_line().await.unwrap().unwrap());
        }
        assert_eq!(got, vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
        pump.abort();
    }

    #[test]
    fn the_replay_is_bounded() {
        let f = Fanout::new();
        for i in 0..(REPLAY + 10) {
            f.publish(&i.to_string());
        }
        let (recent, _) = f.subscribe();
        assert_eq!(recent.len(), REPLAY);
        assert_eq!(&*recent[0], "10");
    }

    #[test]
    fn start_and_latest_stats_outlive_the_replay() {
        let f = Fanout::new();
        f.publish_pinned(Pinned::Start, "start");
        f.publish_pinned(Pinned::Stats, "stats 1");
        f.publish_pinned(Pinned::Stats, "stats 2");
        for i in 0..REPLAY {
            f.publish(&i.to_string());
        }
        let (recent, _) = f.subscribe();
        assert_eq!(recent.len(), REPLAY + 2);
        assert_eq!((&*recent[0], &*recent[1]), ("start", "stats 2"));
        assert_eq!(&*recent[2], "0");
    }
}
