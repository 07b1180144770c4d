//! JSON Lines output: one record per line, to a file (appended to, never truncated) or stdout,
//! with size-based rotation (optionally gzip-compressed) and reopening for logrotate.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::fanout::Pinned;

/// Why the output could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open trace output {path}: {source} (check the directory exists and is writable)")]
pub struct OpenError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// When and how the output file is rotated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file would grow past this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`PATH.1` … `PATH.N`); older ones are deleted.
    pub keep: usize,
    /// Compress rotated files to `PATH.N.gz`.
    pub gzip: bool,
}

/// A JSON Lines writer that keeps going after write errors and counts them.
pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
    /// The file written, `None` for stdout.
    path: Option<PathBuf>,
    rotation: Rotation,
    /// Bytes in the current file.
    size: u64,
    /// The compression of the last rotated file, still running.
    compressing: Option<std::thread::JoinHandle<()>>,
    /// Live readers (control socket, in-process view) get every line too.
    fanout: Option<super::fanout::Fanout>,
    /// Records that could not be written.
    pub write_errors: u64,
    /// Records written.
    pub written: u64,
}

fn open_append(path: &Path) -> Result<(File, u64), OpenError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_path_buf(),
            source,
        })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, size))
}

/// `PATH.n`, or `PATH.n.gz`.
fn rotated(path: &Path, n: usize, gz: bool) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}{}", if gz { ".gz" } else { "" }));
    PathBuf::from(name)
}

/// Compresses `from` into `to` through a temporary file, then removes `from`: a crash leaves
/// either the plain file or the whole compressed one, never half of it.
fn gzip_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut input = File::open(from)?;
        let output = File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(output, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
}

/// Parses a size like `100MiB`, `10MB`, `512k` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 100MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 4096 {
        return Err(format!(
            "`{s}` is too small to rotate at (at least 4096 bytes)"
        ));
    }
    Ok(bytes)
}

impl JsonlSink {
    /// Opens `path` for appending, or stdout for `-`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_rotating(path, Rotation::default())
    }

    /// Opens `path` for appending with rotation, or stdout for `-` (never rotated).
    pub fn open_rotating(path: &Path, rotation: Rotation) -> Result<Self, OpenError> {
        if path == Path::new("-") {
            return Ok(Self::new(Box::new(io::stdout())));
        }
        let (f, size) = open_append(path)?;
        let mut sink = Self::new(Box::new(f));
        sink.path = Some(path.to_path_buf());
        sink.rotation = rotation;
        sink.size = size;
        Ok(sink)
    }

    /// A sink over any writer.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            line: Vec::with_capacity(512),
            path: None,
            rotation: Rotation::default(),
            size: 0,
            compressing: None,
            fanout: None,
            write_errors: 0,
            written: 0,
        }
    }

    /// Appends one record. The line is serialised whole first so that a failed serialisation
    /// never leaves half a line behind.
    pub fn write(&mut self, record: &Value) {
        self.write_as(None, record);
    }

    /// Like [`JsonlSink::write`], for the records every new live reader gets first (the
    /// `start` record, the latest `stats` record).
    pub fn write_pinned(&mut self, kind: Pinned, record: &Value) {
        self.write_as(Some(kind), record);
    }

    fn write_as(&mut self, pinned: Option<Pinned>, record: &Value) {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, record).is_err() {
            self.write_errors += 1;
            return;
        }
        self.commit(pinned);
    }

    /// Appends one record that `fill` writes as JSON text (without its newline): the path of
    /// event records, which skips building a `Value`.
    pub fn write_with(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        self.line.clear();
        fill(&mut self.line);
        self.commit(None);
    }

    /// Publishes the serialised line in `self.line` and writes it to the file.
    fn commit(&mut self, pinned: Option<Pinned>) {
        if let Some(f) = &self.fanout
            && let Ok(text) = std::str::from_utf8(&self.line)
        {
            match pinned {
                Some(kind) => f.publish_pinned(kind, text),
                None => f.publish(text),
            }
        }
        self.line.push(b'\n');
        if let Some(max) = self.rotation.max_bytes
            && self.size > 0
            && self.size + self.line.len() as u64 > max
            && let Err(e) = self.rotate()
        {
            self.write_errors += 1;
            log::error!("rotating the trace failed: {e}");
        }
        match self.out.write_all(&self.line) {
            Ok(()) => {
                self.written += 1;
                self.size += self.line.len() as u64;
            }
            Err(e) => {
                self.write_errors += 1;
                if self.write_errors == 1 || self.write_errors.is_power_of_two() {
                    log::error!(
                        "writing the trace failed ({} so far): {e}",
                        self.write_errors
                    );
                }
            }
        }
    }

    /// Sends every line written from now on to live readers as well.
    pub fn attach(&mut self, fanout: super::fanout::Fanout) {
        self.fanout = Some(fanout);
    }

    /// Reopens the output file (after logrotate moved it away, on SIGHUP).
    pub fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.flush();
        let (f, size) = open_append(&path).map_err(|e| io::Error::other(e.to_string()))?;
        self.out = BufWriter::with_capacity(256 * 1024, Box::new(f));
        self.size = size;
        Ok(())
    }

    /// Moves `PATH` to `PATH.1` (shifting older files up and deleting the oldest), compresses
    /// it in the background if asked, and starts a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.out.flush()?;
        // One compression at a time: the shift below renames the file it would be reading.
        if let Some(h) = self.compressing.take() {
            let _ = h.join();
        }
        let keep = self.rotation.keep.max(1);
        let gz = self.rotation.gzip;
        for n in (1..=keep).rev() {
            for g in [false, true] {
                let from = rotated(&path, n, g);
                if !from.exists() {
                    continue;
                }
                if n == keep {
                    std::fs::remove_file(&from)?;
                } else {
                    std::fs::rename(&from, rotated(&path, n + 1, g))?;
                }
            }
        }
        let first = rotated(&path, 1, false);
        std::fs::rename(&path, &first)?;
        let (f, size) = open_append(&path).map_err(|e| io::Error::other(e.to_string()))?;
        self.out = BufWriter::with_capacity(256 * 1024, Box::new(f));
        self.size = size;
        if gz {
            let to = rotated(&path, 1, true);
            self.compressing = Some(std::thread::spawn(move || {
                if let Err(e) = gzip_file(&first, &to) {
                    log::error!("compressing {} failed: {e}", first.display());
                }
            }));
        }
        Ok(())
    }

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.write_errors += 1;
            // A full disk fails every flush: say so at the 1st, 2nd, 4th, … failure.
            if self.write_errors.is_power_of_two() {
                log::error!(
                    "flushing the trace failed ({} write errors so far): {e}",
                    self.write_errors
                );
            }
        }
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        if let Err(e) = self.out.flush() {
            // The disk is full or gone: what is still buffered is lost, and the file may end in
            // the middle of a line. Cut it back to its last whole line, so that a clean stop
            // never leaves half a record behind.
            let lost = self.out.buffer().iter().filter(|&&b| b == b'\n').count();
            self.write_errors += lost as u64;
            log::error!("{lost} records could not be written at exit: {e}");
            // Drop the buffer unwritten: BufWriter's own drop would try again, and once the
            // cut below frees space, append the rest of a line whose start was cut away.
            let out = std::mem::replace(
                &mut self.out,
                BufWriter::new(Box::new(io::sink()) as Box<dyn Write + Send>),
            );
            drop(out.into_parts());
            if let Some(path) = &self.path
                && let Err(e) = cut_to_last_line(path)
            {
                log::error!("{} may end with a partial line: {e}", path.display());
            }
        }
        if let Some(h) = self.compressing.take() {
            let _ = h.join();
        }
    }
}

/// Truncates `path` after its last newline. Only the file's tail is read.
fn cut_to_last_line(path: &Path) -> io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                f.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    // No newline at all: not one whole record.
    f.set_len(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_cut_line_is_removed() {
        let dir = std::env::temp_dir().join(format!("tracer-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        super::cut_to_last_line(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        super::cut_to_last_line(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        // A tail longer than one read chunk.
        let long = format!("{{\"a\":1}}\n{}", "x".repeat(200_000));
        std::fs::write(&p, long).unwrap();
        super::cut_to_last_line(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        std::fs::write(&p, "partial").unwrap();
        super::cut_to_last_line(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    use serde_json::json;

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    #[test]
    fn writes_one_object_per_line() {
        let buf = Shared::default();
        let mut s = JsonlSink::new(Box::new(buf.clone()));
        s.write(&json!({"type": "connect", "comm": "a\"b\nc"}));
        s.write(&json!({"type": "stats"}));
        s.flush();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["comm"], "a\"b\nc");
        assert_eq!(s.written, 2);
    }

    #[test]
    fn counts_write_errors_and_keeps_going() {
        let mut s = JsonlSink::new(Box::new(Full));
        s.out = BufWriter::with_capacity(0, Box::new(Full));
        s.write(&json!({"type": "connect"}));
        s.write(&json!({"type": "connect"}));
        assert_eq!(s.write_errors, 2);
        assert_eq!(s.written, 0);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-jsonl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines_of(path: &Path) -> Vec<String> {
        let bytes = std::fs::read(path).unwrap();
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
                .unwrap();
            s
        } else {
            String::from_utf8(bytes).unwrap()
        };
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            path.display()
        );
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn rotates_by_size_keeps_n_and_compresses() {
        let dir = temp_dir("rotate");
        let path = dir.join("t.jsonl");
        let rotation = Rotation {
            max_bytes: Some(4096),
            keep: 2,
            gzip: true,
        };
        {
            let mut s = JsonlSink::open_rotating(&path, rotation).unwrap();
            for i in 0..400 {
                s.write(&json!({"type": "connect", "n": i, "pad": "x".repeat(40)}));
            }
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["t.jsonl", "t.jsonl.1.gz", "t.jsonl.2.gz"]);
        // Every file holds whole lines, under the limit, and the newest lines are all there.
        let mut seen = Vec::new();
        for name in ["t.jsonl.2.gz", "t.jsonl.1.gz", "t.jsonl"] {
            let p = dir.join(name);
            let lines = lines_of(&p);
            let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
            assert!(bytes <= 4096, "{name} holds {bytes} bytes");
            for l in lines {
                let v: Value = serde_json::from_str(&l).unwrap();
                seen.push(v["n"].as_u64().unwrap());
            }
        }
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "lines out of order or missing"
        );
        assert_eq!(*seen.last().unwrap(), 399);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopen_follows_logrotate() {
        let dir = temp_dir("reopen");
        let path = dir.join("t.jsonl");
        let mut s = JsonlSink::open(&path).unwrap();
        s.write(&json!({"n": 1}));
        s.flush();
        std::fs::rename(&path, dir.join("t.jsonl.old")).unwrap();
        s.reopen().unwrap();
        s.write(&json!({"n": 2}));
        drop(s);
        assert_eq!(lines_of(&dir.join("t.jsonl.old")), vec!["{\"n\":1}"]);
        assert_eq!(lines_of(&path), vec!["{\"n\":2}"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("10").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn appends_to_existing_file() {
        let dir = std::env::temp_dir().join(format!("tracer-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        std::fs::write(&path, "{\"type\":\"old\"}\n").unwrap();
        {
            let mut s = JsonlSink::open(&path).unwrap();
            s.write(&json!({"type": "new"}));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"type\":\"old\"}\n{\"type\":\"new\"}\n");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = JsonlSink::open(Path::new("/nonexistent-dir/x.jsonl"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/x.jsonl"));
    }
}
