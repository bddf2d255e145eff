//! A container's log, `log.jsonl`, in docker's json-file format: one
//! `{"log":"...","stream":"stdout|stderr","time":"RFC3339Nano"}` line per output line (a
//! partial line is written when its stream ends). Owns the writer the shim feeds and the
//! reader behind `husk logs` (`--tail`, `--timestamps`, `--follow`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often `--follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The bytes of the line, newline included (lossy UTF-8).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// Options of `husk logs`.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep reading while the container runs.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Only lines written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only lines written before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogOptions {
    /// Whether a line written at `time` (RFC 3339) is within `since`/`until`.
    fn in_window(&self, time: &str) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) else {
            return false;
        };
        let t = t.with_timezone(&chrono::Utc);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// Appends output to a log file, a line at a time per stream.
#[derive(Debug)]
pub struct LogWriter {
    file: Mutex<File>,
    partial: Mutex<[Vec<u8>; 2]>,
}

impl LogWriter {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            partial: Mutex::new([Vec::new(), Vec::new()]),
        })
    }

    /// Adds output of stream `stderr` (false = stdout); empty `bytes` ends the stream's line.
    pub fn write(&self, stderr: bool, bytes: &[u8]) -> io::Result<()> {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        let buf = &mut partial[usize::from(stderr)];
        if bytes.is_empty() {
            let rest = std::mem::take(buf);
            return match rest.is_empty() {
                true => Ok(()),
                false => self.line(stderr, &rest),
            };
        }
        buf.extend_from_slice(bytes);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            self.line(stderr, &line)?;
        }
        Ok(())
    }

    /// Writes every unfinished line.
    pub fn flush_partial(&self) -> io::Result<()> {
        self.write(false, &[])?;
        self.write(true, &[])
    }

    fn line(&self, stderr: bool, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: if stderr { "stderr" } else { "stdout" }.to_owned(),
            time: crate::container::now(),
        };
        let mut json = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        json.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&json)
    }
}

/// Copies the log at `path` to `out`/`err`; with `follow`, keeps going while `running()`.
pub fn read(
    path: &Path,
    opts: &LogOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    running: &dyn Fn() -> bool,
) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !opts.follow => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if !line.ends_with('\n') {
            break; // Being written: the follow loop picks it up.
        }
        lines.push(std::mem::take(&mut line));
    }
    let consumed: usize = lines.iter().map(String::len).sum();
    let shown: Vec<&String> = lines
        .iter()
        .filter(|l| serde_json::from_str::<Entry>(l).is_ok_and(|e| opts.in_window(&e.time)))
        .collect();
    let skip = opts.tail.map_or(0, |n| shown.len().saturating_sub(n));
    for l in &shown[skip..] {
        emit(l, opts, out, err)?;
    }
    if !opts.follow {
        return Ok(());
    }
    let mut pos = consumed as u64;
    loop {
        let alive = running();
        let file = reader.get_mut();
        file.seek(SeekFrom::Start(pos))?;
        let mut r = BufReader::new(&*file);
        let mut line = String::new();
        while r.read_line(&mut line)? > 0 && line.ends_with('\n') {
            pos += line.len() as u64;
            emit(&line, opts, out, err)?;
            line.clear();
        }
        out.flush()?;
        err.flush()?;
        if !alive {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn emit(line: &str, opts: &LogOptions, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    let Ok(entry) = serde_json::from_str::<Entry>(line) else {
        return Ok(()); // Not ours: skipped, as docker skips undecodable lines.
    };
    if !opts.in_window(&entry.time) {
        return Ok(());
    }
    let sink: &mut dyn Write = if entry.stream == "stderr" { err } else { out };
    if opts.timestamps {
        write!(sink, "{} ", entry.time)?;
    }
    sink.write_all(entry.log.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_tail_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::container::files::LOG);
        let w = LogWriter::open(&path).unwrap();
        w.write(false, b"one\ntw").unwrap();
        w.write(true, b"err\n").unwrap();
        w.write(false, b"o\nthree").unwrap();
        w.flush_partial().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        read(&path, &LogOptions::default(), &mut out, &mut err, &|| false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree");
        assert_eq!(String::from_utf8(err).unwrap(), "err\n");
        let opts = LogOptions {
            tail: Some(1),
            timestamps: true,
            ..LogOptions::default()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        read(&path, &opts, &mut out, &mut err, &|| false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.ends_with("Z three"), "{out}");
        assert!(err.is_empty());
    }
}
