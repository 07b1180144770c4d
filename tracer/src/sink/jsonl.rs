//! JSON Lines output: one record per line, to a file (appended to, never truncated) or stdout.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde_json::Value;

/// Why the output could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open trace output {path}: {source} (check the directory exists and is writable)")]
pub struct OpenError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// A JSON Lines writer that keeps going after write errors and counts them.
pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
    /// Records that could not be written.
    pub write_errors: u64,
    /// Records written.
    pub written: u64,
}

impl JsonlSink {
    /// Opens `path` for appending, or stdout for `-`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            let f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| OpenError {
                    path: path.to_path_buf(),
                    source,
                })?;
            Box::new(f)
        };
        Ok(Self::new(out))
    }

    /// A sink over any writer.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            line: Vec::with_capacity(512),
            write_errors: 0,
            written: 0,
        }
    }

    /// Appends one record. The line is serialised whole first so that a failed serialisation
    /// never leaves half a line behind.
    pub fn write(&mut self, record: &Value) {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, record).is_err() {
            self.write_errors += 1;
            return;
        }
        self.line.push(b'\n');
        match self.out.write_all(&self.line) {
            Ok(()) => self.written += 1,
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

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.write_errors += 1;
            log::error!("flushing the trace failed: {e}");
        }
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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
        let mut s = JsonlSink {
            out: BufWriter::with_capacity(0, Box::new(Full)),
            line: Vec::new(),
            write_errors: 0,
            written: 0,
        };
        s.write(&json!({"type": "connect"}));
        s.write(&json!({"type": "connect"}));
        assert_eq!(s.write_errors, 2);
        assert_eq!(s.written, 0);
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
