//! The agent's console reports: fixed lines on the console (`husk-agent: ready VERSION`,
//! `husk-agent: exit code=N (...)`), which the VMM's boot milestones, the `husk.exec=` path and
//! the PID 1 tests read. Requests from the host go through the protocol server (`server`)
//! instead; the [`Report`] trait keeps the console reporting swappable.

use std::io::{self, Write};

/// Errors from reporting on the console.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The report could not be written.
    #[error("cannot write to the host")]
    Write(#[source] io::Error),
}

/// The agent is up: mounts made, hostname set, ready for work.
#[derive(Debug)]
pub struct Ready<'a> {
    /// The agent's version (the crate version).
    pub version: &'a str,
}

/// The workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, docker-style: the status, 128 + signal, 126 not executable, 127 not found.
    pub code: i32,
    /// A human-readable account of what happened.
    pub detail: String,
}

/// A channel on which the agent reports its milestones.
pub trait Report {
    /// Says the agent is ready.
    fn ready(&mut self, ready: &Ready<'_>) -> Result<(), TransportError>;
    /// Says the workload exited.
    fn exited(&mut self, exit: &Exit) -> Result<(), TransportError>;
}

/// Reports as text lines on a writer (stdout, i.e. the console).
#[derive(Debug)]
pub struct ConsoleTransport<W: Write> {
    out: W,
}

impl ConsoleTransport<io::Stdout> {
    /// Reports on the agent's stdout.
    pub fn stdout() -> Self {
        Self { out: io::stdout() }
    }
}

impl<W: Write> ConsoleTransport<W> {
    fn line(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), TransportError> {
        writeln!(self.out, "husk-agent: {args}")
            .and_then(|()| self.out.flush())
            .map_err(TransportError::Write)
    }
}

impl<W: Write> Report for ConsoleTransport<W> {
    fn ready(&mut self, ready: &Ready<'_>) -> Result<(), TransportError> {
        self.line(format_args!("ready {}", ready.version))
    }

    fn exited(&mut self, exit: &Exit) -> Result<(), TransportError> {
        self.line(format_args!("exit code={} ({})", exit.code, exit.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_stable() {
        let mut t = ConsoleTransport { out: Vec::new() };
        t.ready(&Ready { version: "0.1.0" }).unwrap();
        t.exited(&Exit {
            code: 127,
            detail: "/x: not found".into(),
        })
        .unwrap();
        let text = String::from_utf8(t.out).unwrap();
        assert_eq!(
            text,
            "husk-agent: ready 0.1.0\nhusk-agent: exit code=127 (/x: not found)\n"
        );
    }
}
