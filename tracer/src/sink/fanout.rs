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

/// The most recent records as one run of text: publishing a record copies its bytes, with no
/// allocation of its own. Every record of a busy proxy passes here, read or not.
#[derive(Default)]
struct Replay {
    text: VecDeque<u8>,
    /// Length of each record in `text`, oldest first.
    lens: VecDeque<usize>,
}

impl Replay {
    fn push(&mut self, line: &str) {
        if self.lens.len() == REPLAY
            && let Some(n) = self.lens.pop_front()
        {
            self.text.drain(..n);
        }
        self.text.extend(line.as_bytes());
        self.lens.push_back(line.len());
    }

    fn records(&self) -> Vec<Arc<str>> {
        let mut out = Vec::with_capacity(self.lens.len());
        let mut bytes = self.text.iter().copied();
        for &n in &self.lens {
            let record: Vec<u8> = bytes.by_ref().take(n).collect();
            // Every record was pushed as a &str, and records are whole.
            out.push(Arc::from(String::from_utf8_lossy(&record)));
        }
        out
    }
}

/// The shared stream.
#[derive(Clone)]
pub struct Fanout {
    tx: broadcast::Sender<Arc<str>>,
    recent: Arc<Mutex<Replay>>,
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
            recent: Arc::default(),
            pinned: Arc::default(),
        }
    }

    /// Publishes one serialised record (without its newline), which new readers get first
    /// until the next record of its kind.
    pub fn publish_pinned(&self, kind: Pinned, line: &str) {
        // Under the replay's lock, like every publication (see `publish`); a pinned record is
        // replayed from `pinned`, not a second time among the recent ones.
        let Ok(_recent) = self.recent.lock() else {
            return;
        };
        if let Ok(mut pinned) = self.pinned.lock() {
            pinned[kind as usize] = Some(Arc::from(line));
        }
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::from(line));
        }
    }

    /// Publishes one serialised record (without its newline).
    pub fn publish(&self, line: &str) {
        // Readers subscribe under the same lock, so each gets every record exactly once:
        // in the replay or from the channel.
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        recent.push(line);
        if self.tx.receiver_count() > 0 {
            // A reader that went away is fine: nothing to deliver.
            let _ = self.tx.send(Arc::from(line));
        }
    }

    /// The recent records and a receiver for what follows, taken together so that nothing
    /// falls between them.
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        // Every publication holds the replay's lock: holding it while subscribing means no
        // record falls in between, or arrives twice.
        let recent = self.recent.lock();
        let mut first: Vec<Arc<str>> = self
            .pinned
            .lock()
            .map(|p| p.iter().flatten().cloned().collect())
            .unwrap_or_default();
        if let Ok(r) = &recent {
            first.extend(r.records());
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
        // Pinned records are not replayed twice.
        let f = Fanout::new();
        f.publish_pinned(Pinned::Start, "start");
        f.publish("a");
        let (recent, _) = f.subscribe();
        assert_eq!(
            recent.iter().map(|r| &**r).collect::<Vec<_>>(),
            ["start", "a"]
        );
    }
}
