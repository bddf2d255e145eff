//! Pull progress: a bar per blob (indicatif) when the output is a terminal, docker-style
//! plain lines (`<id>: Pulling fs layer`, `<id>: Pull complete`) otherwise, or nothing. The
//! output is stdout for `pull`, stderr for the implicit pull of `run` (whose stdout is the
//! workload's).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives pull events; called from several download threads at once.
pub trait Progress: Send + Sync {
    /// A blob download of `total` bytes starts (`id` is the 12-digit short digest).
    fn start(&self, id: &str, total: u64);
    /// `bytes` more bytes of `id` arrived (resumed bytes are reported at once).
    fn advance(&self, id: &str, bytes: u64);
    /// `id` is finished, with docker's word for how (`Pull complete`, `Already exists`).
    fn finish(&self, id: &str, status: &str);
    /// A free-standing line (`Digest: ...`, `Status: ...`).
    fn message(&self, line: &str);
}

/// Bars on a terminal stdout, plain lines otherwise.
pub fn for_stdout() -> Box<dyn Progress> {
    if std::io::stdout().is_terminal() {
        Box::new(Bars::new(ProgressDrawTarget::stdout()))
    } else {
        Box::new(Lines { stderr: false })
    }
}

/// Bars on a terminal stderr, plain lines there otherwise.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::new(ProgressDrawTarget::stderr()))
    } else {
        Box::new(Lines { stderr: true })
    }
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: &str) {}
    fn message(&self, _: &str) {}
}

/// docker's non-terminal output: one line per event, no byte counts.
#[derive(Debug, Default)]
pub struct Lines {
    /// To stderr instead of stdout.
    pub stderr: bool,
}

impl Lines {
    fn line(&self, s: &str) {
        let _ = match self.stderr {
            true => writeln!(std::io::stderr().lock(), "{s}"),
            false => writeln!(std::io::stdout().lock(), "{s}"),
        };
    }
}

impl Progress for Lines {
    fn start(&self, id: &str, _: u64) {
        self.line(&format!("{id}: Pulling fs layer"));
    }
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, id: &str, status: &str) {
        self.line(&format!("{id}: {status}"));
    }
    fn message(&self, line: &str) {
        self.line(line);
    }
}

/// One indicatif bar per blob.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn with_bar(&self, id: &str, f: impl FnOnce(&ProgressBar)) {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = bars.get(id) {
            f(b);
        }
    }
}

impl Progress for Bars {
    fn start(&self, id: &str, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix}: {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(id.to_owned());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), bar);
    }
    fn advance(&self, id: &str, bytes: u64) {
        self.with_bar(id, |b| b.inc(bytes));
    }
    fn finish(&self, id: &str, status: &str) {
        let has = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id);
        if !has {
            let _ = self.multi.println(format!("{id}: {status}"));
            return;
        }
        self.with_bar(id, |b| b.finish_with_message(status.to_owned()));
    }
    fn message(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}
