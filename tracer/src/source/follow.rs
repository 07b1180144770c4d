//! Follows a growing log file like `tail -F`, across rename rotation, copytruncate and
//! delete-and-recreate, in bounded memory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A partial line longer than this is dropped: a log line this long is not one we can use,
/// and keeping it would let a writer that never writes a newline grow us without bound.
const MAX_LINE: usize = 64 * 1024;

/// Bytes read per `read_at` call.
const CHUNK: usize = 64 * 1024;

/// Bytes read per poll, so that a large backlog comes back in batches rather than as one
/// huge vector; the rest is read by the following polls. A full batch is a few thousand
/// lines, whose strings are the follower's largest use of memory.
const MAX_READ_PER_POLL: u64 = 512 * 1024;

/// Follows a growing file like `tail -F`.
pub struct Follower {
    path: PathBuf,
    /// The file being read; `None` while the path does not exist.
    current: Option<Current>,
    lines: LineBuffer,
    chunk: Vec<u8>,
    /// Whether the last poll read to the end of the file (not stopped by the per-poll limit).
    caught_up: bool,
}

/// An open file and how far it has been read.
struct Current {
    file: File,
    /// (device, inode): what the path named when it was opened. A path naming anything else
    /// means the file was rotated away or replaced.
    id: (u64, u64),
    offset: u64,
    /// The last bytes read, just before `offset`. A file truncated and written again past the
    /// old offset between two polls keeps growing, but not these bytes.
    seen: Vec<u8>,
    /// Modification time when the file was last read to its end at `offset`: appends always
    /// grow a file, so a changed time with the size still at `offset` means it was truncated
    /// and rewritten to the same length (log lines often end alike, so `seen` cannot tell).
    mtime_at_end: Option<(i64, i64)>,
}

/// How many bytes before the offset are kept to recognise a rewritten file.
const SEEN_BYTES: usize = 64;

impl Current {
    /// Keeps the last bytes read.
    fn remember(&mut self, bytes: &[u8]) {
        let keep = bytes.len().min(SEEN_BYTES);
        self.seen.extend_from_slice(&bytes[bytes.len() - keep..]);
        let excess = self.seen.len().saturating_sub(SEEN_BYTES);
        self.seen.drain(..excess);
    }

    /// Whether the bytes before the offset are still the ones read there.
    fn still_there(&self) -> io::Result<bool> {
        if self.seen.is_empty() {
            return Ok(true);
        }
        let mut now = vec![0u8; self.seen.len()];
        let at = self.offset - self.seen.len() as u64;
        match self.file.read_exact_at(&mut now, at) {
            Ok(()) => Ok(now == self.seen),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn open(path: &Path) -> io::Result<Option<Current>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // The identity of what was opened, not a separate stat of the path, which may
        // already name another file.
        let meta = file.metadata()?;
        Ok(Some(Current {
            file,
            id: (meta.dev(), meta.ino()),
            offset: 0,
            seen: Vec::new(),
            mtime_at_end: None,
        }))
    }
}

/// Splits bytes into lines, holding back an unterminated tail.
#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
    /// Inside a line that is being thrown away; bytes are skipped up to its newline.
    discarding: bool,
    dropped: u64,
}

impl LineBuffer {
    fn push(&mut self, mut data: &[u8], out: &mut Vec<String>) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let piece = &data[..newline.unwrap_or(data.len())];
            if !self.discarding {
                if self.partial.len() + piece.len() > MAX_LINE {
                    self.dropped += 1;
                    self.partial.clear();
                    self.discarding = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
            }
            let Some(newline) = newline else { break };
            if self.discarding {
                self.discarding = false;
            } else {
                out.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            }
            data = &data[newline + 1..];
        }
    }

    /// The file is finished (the writer moved on): its unterminated last line is all there
    /// will ever be of that line.
    fn finish(&mut self, out: &mut Vec<String>) {
        if !self.discarding && !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }
}

impl Follower {
    /// Opens `path`; with `from_end` start at its current end (a daemon does not replay old lines), else from the start. A missing file is not an error: it is waited for (poll returns nothing until it appears).
    pub fn open(path: &Path, from_end: bool) -> io::Result<Follower> {
        let mut lines = LineBuffer::default();
        let mut current = Current::open(path)?;
        if let Some(current) = current.as_mut().filter(|_| from_end) {
            let len = current.file.metadata()?.len();
            current.offset = len;
            // Starting in the middle of a line would return its tail as if it were a line.
            if len > 0 {
                let mut last = [0u8; 1];
                let n = current.file.read_at(&mut last, len - 1)?;
                lines.discarding = n == 1 && last[0] != b'\n';
            }
        }
        Ok(Follower {
            path: path.to_path_buf(),
            current,
            lines,
            chunk: vec![0; CHUNK],
            caught_up: true,
        })
    }

    /// Returns the complete new lines since the last call (without the newline; a trailing partial line is kept until its newline arrives; invalid UTF-8 is replaced lossily). Handles: rename rotation (the path now names a different inode: first read the rest of the old file, then switch to the new file from its start); copytruncate (the file got shorter than the read offset: start again from 0); the file deleted and recreated. Bounded memory: a partial line longer than 64 KiB is dropped and counted.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        if self.current.is_none() {
            // A file that appears is new: all of it is unread.
            self.current = Current::open(&self.path)?;
            self.caught_up = self.drain(&mut out)?;
            return Ok(out);
        }
        // Look at what the path names before draining: once the writer has put data in a new
        // file, it has stopped writing to the old one, so draining after this look gets all of
        // the old file. A replacement that is still empty is not switched to yet, because a
        // writer (nginx until it is signalled to reopen) may still be appending to the old
        // file, and those lines would be lost.
        let replaced = match fs::metadata(&self.path) {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                self.current.as_ref().is_some_and(|c| c.id != id) && meta.len() > 0
            }
            // Renamed or deleted, nothing new yet: keep reading the old file, which the
            // writer may still be appending to.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        let complete = self.drain(&mut out)?;
        self.caught_up = complete;
        if replaced && complete {
            self.lines.finish(&mut out);
            // If the path vanished again since the look above, this waits for it like a
            // missing file; the old file is finished either way.
            self.current = Current::open(&self.path)?;
            self.caught_up = self.drain(&mut out)?;
        }
        Ok(out)
    }

    /// Whether the last poll read everything there was: when not, the next poll has more
    /// at once.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Lines dropped for being too long.
    pub fn dropped(&self) -> u64 {
        self.lines.dropped
    }

    /// Reads the current file from the offset to its end or the per-poll limit. Returns
    /// whether the end was reached.
    fn drain(&mut self, out: &mut Vec<String>) -> io::Result<bool> {
        let Some(current) = self.current.as_mut() else {
            return Ok(true);
        };
        let meta = current.file.metadata()?;
        let len = meta.len();
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let rewritten = len == current.offset && current.mtime_at_end.is_some_and(|m| m != mtime);
        if len < current.offset || rewritten || !current.still_there()? {
            // Truncated in place (copytruncate): everything from 0 is new, and the partial
            // line held back can never be completed.
            current.offset = 0;
            current.seen.clear();
            current.mtime_at_end = None;
            self.lines.reset();
        }
        let mut read = 0u64;
        while read < MAX_READ_PER_POLL {
            let n = match current.file.read_at(&mut self.chunk, current.offset) {
                Ok(0) => {
                    // At the end: remember when the file last changed, if nothing was
                    // appended since this read.
                    let meta = current.file.metadata()?;
                    current.mtime_at_end =
                        (meta.len() == current.offset).then(|| (meta.mtime(), meta.mtime_nsec()));
                    return Ok(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            current.offset += n as u64;
            read += n as u64;
            current.remember(&self.chunk[..n]);
            self.lines.push(&self.chunk[..n], out);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tracer-follow-{}-{name}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn append_and_poll() {
        let dir = TempDir::new("append");
        let log = dir.path("access.log");
        append(&log, "one\ntwo\n");
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(f.poll().unwrap(), ["one", "two"]);
        assert!(f.poll().unwrap().is_empty());
        append(&log, "three\n\nfour\n");
        assert_eq!(f.poll().unwrap(), ["three", "", "four"]);
        assert!(f.poll().unwrap().is_empty());
    }

    #[test]
    fn partial_line_is_completed_later() {
        let dir = TempDir::new("partial");
        let log = dir.path("access.log");
        append(&log, "first\nsec");
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(f.poll().unwrap(), ["first"]);
        append(&log, "ond half");
        assert!(f.poll().unwrap().is_empty());
        append(&log, "\nthird\n");
        assert_eq!(f.poll().unwrap(), ["second half", "third"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let dir = TempDir::new("utf8");
        let log = dir.path("access.log");
        fs::write(&log, b"a\xffb\n").unwrap();
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(f.poll().unwrap(), ["a\u{fffd}b"]);
    }

    #[test]
    fn from_end_skips_existing_content() {
        let dir = TempDir::new("from-end");
        let log = dir.path("access.log");
        append(&log, "old 1\nold 2\n");
        let mut f = Follower::open(&log, true).unwrap();
        assert!(f.poll().unwrap().is_empty());
        append(&log, "new 1\n");
        assert_eq!(f.poll().unwrap(), ["new 1"]);
    }

    #[test]
    fn from_end_in_the_middle_of_a_line_skips_its_tail() {
        let dir = TempDir::new("from-end-mid");
        let log = dir.path("access.log");
        append(&log, "old 1\nold 2 first half");
        let mut f = Follower::open(&log, true).unwrap();
        append(&log, " second half\nnew 1\n");
        assert_eq!(f.poll().unwrap(), ["new 1"]);
        assert_eq!(f.dropped(), 0);
    }

    #[test]
    fn rename_rotation_loses_nothing() {
        let dir = TempDir::new("rename");
        let log = dir.path("access.log");
        let rotated = dir.path("access.log.1");
        append(&log, "a1\na2\n");
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(f.poll().unwrap(), ["a1", "a2"]);
        append(&log, "a3\n");
        fs::rename(&log, &rotated).unwrap();
        // The writer still has the old file open until it is told to reopen.
        append(&rotated, "a4\na5");
        // Renamed away, no new file yet: keep reading the old one.
        assert_eq!(f.poll().unwrap(), ["a3", "a4"]);
        append(&rotated, "\na6\n");
        // A new, still empty file is not switched to while the old may still grow.
        fs::write(&log, "").unwrap();
        assert_eq!(f.poll().unwrap(), ["a5", "a6"]);
        append(&rotated, "a7\n");
        append(&log, "b1\nb2\n");
        assert_eq!(f.poll().unwrap(), ["a7", "b1", "b2"]);
        append(&log, "b3\n");
        assert_eq!(f.poll().unwrap(), ["b3"]);
    }

    #[test]
    fn rename_rotation_before_any_poll() {
        let dir = TempDir::new("rename-once");
        let log = dir.path("access.log");
        append(&log, "a1\na2\n");
        let mut f = Follower::open(&log, false).unwrap();
        fs::rename(&log, dir.path("access.log.1")).unwrap();
        append(&dir.path("access.log.1"), "a3\nunterminated");
        append(&log, "b1\nb2\n");
        assert_eq!(
            f.poll().unwrap(),
            ["a1", "a2", "a3", "unterminated", "b1", "b2"]
        );
    }

    #[test]
    fn copytruncate_refilled_with_the_same_line_is_noticed() {
        let dir = TempDir::new("same");
        let path = dir.path("a.log");
        std::fs::write(&path, "same line\n").unwrap();
        let mut f = Follower::open(&path, false).unwrap();
        assert_eq!(f.poll().unwrap(), vec!["same line"]);
        // Let the clock move so that the rewrite gets another modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "same line\n").unwrap();
        assert_eq!(f.poll().unwrap(), vec!["same line"]);
        assert!(f.poll().unwrap().is_empty());
    }

    #[test]
    fn copytruncate_refilled_to_the_old_size_is_noticed() {
        let dir = TempDir::new("refill");
        let path = dir.path("a.log");
        std::fs::write(&path, "first line 0001\n").unwrap();
        let mut f = Follower::open(&path, false).unwrap();
        assert_eq!(f.poll().unwrap(), vec!["first line 0001"]);
        // Truncated, then a line of exactly the same length written before the next poll.
        std::fs::write(&path, "other line 0002\n").unwrap();
        assert_eq!(f.poll().unwrap(), vec!["other line 0002"]);
        assert!(f.poll().unwrap().is_empty());
    }

    #[test]
    fn copytruncate_starts_again() {
        let dir = TempDir::new("copytruncate");
        let log = dir.path("access.log");
        append(&log, "a1\na2\npart");
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(f.poll().unwrap(), ["a1", "a2"]);
        // logrotate copies the file, then truncates it in place; the writer (O_APPEND)
        // goes on at offset 0.
        fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "b1\n");
        assert_eq!(f.poll().unwrap(), ["b1"]);
        append(&log, "b2\n");
        assert_eq!(f.poll().unwrap(), ["b2"]);
    }

    #[test]
    fn deleted_and_recreated() {
        let dir = TempDir::new("recreate");
        let log = dir.path("access.log");
        append(&log, "a1\n");
        let mut f = Follower::open(&log, true).unwrap();
        append(&log, "a2\n");
        fs::remove_file(&log).unwrap();
        assert_eq!(f.poll().unwrap(), ["a2"]);
        assert!(f.poll().unwrap().is_empty());
        append(&log, "b1\n");
        assert_eq!(f.poll().unwrap(), ["b1"]);
    }

    #[test]
    fn missing_file_is_waited_for() {
        let dir = TempDir::new("missing");
        let log = dir.path("access.log");
        let mut f = Follower::open(&log, true).unwrap();
        assert!(f.poll().unwrap().is_empty());
        assert!(f.poll().unwrap().is_empty());
        // A file that appears later is read from its start, even with `from_end`.
        append(&log, "first\nsecond\n");
        assert_eq!(f.poll().unwrap(), ["first", "second"]);
        append(&log, "third\n");
        assert_eq!(f.poll().unwrap(), ["third"]);
    }

    #[test]
    fn overlong_line_is_dropped_and_counted() {
        let dir = TempDir::new("overlong");
        let log = dir.path("access.log");
        let long = "x".repeat(MAX_LINE + 1);
        let fits = "y".repeat(MAX_LINE);
        append(&log, &format!("before\n{long}\n{fits}\nafter\n"));
        let mut f = Follower::open(&log, false).unwrap();
        assert_eq!(
            f.poll().unwrap(),
            ["before".to_string(), fits, "after".into()]
        );
        assert_eq!(f.dropped(), 1);

        // One that grows across polls is dropped as soon as it is too long, not held.
        append(&log, &"z".repeat(MAX_LINE));
        assert!(f.poll().unwrap().is_empty());
        append(&log, "zz");
        assert!(f.poll().unwrap().is_empty());
        assert_eq!(f.dropped(), 2);
        assert!(f.lines.partial.is_empty());
        append(&log, &format!("{}\nnext\n", "z".repeat(3 * MAX_LINE)));
        assert_eq!(f.poll().unwrap(), ["next"]);
        assert_eq!(f.dropped(), 2);
    }

    #[test]
    fn large_backlog_comes_in_batches() {
        let dir = TempDir::new("backlog");
        let log = dir.path("access.log");
        let line = "l".repeat(1023);
        let count = 2 * MAX_READ_PER_POLL as usize / 1024 + 10;
        append(&log, &format!("{line}\n").repeat(count));
        let mut f = Follower::open(&log, false).unwrap();
        let first = f.poll().unwrap().len();
        assert!(first < count);
        assert!(!f.caught_up(), "a batch short of the end says so");
        let mut total = first;
        let mut polls = 1;
        while !f.caught_up() {
            total += f.poll().unwrap().len();
            polls += 1;
        }
        assert_eq!(total, count);
        assert_eq!(polls, 3, "two full batches, then the rest");
        assert!(f.poll().unwrap().is_empty() && f.caught_up());
    }
}
