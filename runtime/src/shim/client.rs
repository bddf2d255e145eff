//! The CLI's side of `shim.sock` (see `server` for the protocol): one connection per
//! request; `attach` keeps its connection and turns into a frame stream.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ShimError;
use super::server::{Answer, ERROR, EXIT, Request, STDERR, STDIN, STDOUT, read_frame, write_frame};

/// A running container's shim.
#[derive(Debug)]
pub struct ShimClient {
    dir: PathBuf,
}

impl ShimClient {
    /// Checks that the shim of the container in `dir` answers.
    pub fn connect(dir: &Path) -> Result<Self, ShimError> {
        let client = Self {
            dir: dir.to_owned(),
        };
        client.open()?;
        Ok(client)
    }

    fn open(&self) -> Result<UnixStream, ShimError> {
        let sock = crate::sockpath::short(&self.dir, crate::container::files::SHIM_SOCKET)
            .map_err(ShimError::Io)?;
        UnixStream::connect(sock.path()).map_err(ShimError::Io)
    }

    fn call(&self, req: &Request) -> Result<(UnixStream, Answer), ShimError> {
        let mut conn = self.open()?;
        let mut json = serde_json::to_vec(req).map_err(|e| ShimError::Protocol(e.to_string()))?;
        json.push(b'\n');
        conn.write_all(&json).map_err(ShimError::Io)?;
        let mut reader = BufReader::new(conn.try_clone().map_err(ShimError::Io)?);
        let mut line = String::new();
        // One byte at a time is not needed: the shim sends nothing before the answer line,
        // and for attach the frames are read through the same buffered reader.
        if reader.read_line(&mut line).map_err(ShimError::Io)? == 0 {
            return Err(ShimError::Protocol("connection closed".into()));
        }
        let answer: Answer =
            serde_json::from_str(&line).map_err(|e| ShimError::Protocol(e.to_string()))?;
        if let Some(e) = answer.error {
            return Err(ShimError::Failed(e));
        }
        // Frames may already sit in the buffer: hand back a stream that starts after them.
        if !reader.buffer().is_empty() {
            return Err(ShimError::Protocol("data before the attach answer".into()));
        }
        Ok((conn, answer))
    }

    /// Sends `signal` to the workload.
    pub fn kill(&self, signal: i32) -> Result<(), ShimError> {
        self.call(&Request::Kill { signal }).map(|_| ())
    }

    /// `signal`, SIGKILL after `timeout`; returns when the workload has ended.
    pub fn stop(&self, timeout: Duration, signal: i32) -> Result<(), ShimError> {
        self.call(&Request::Stop {
            timeout: timeout.as_secs(),
            signal: Some(signal),
        })
        .map(|_| ())
    }

    /// Kills the workload at once (for `rm -f`).
    pub fn remove(&self) -> Result<(), ShimError> {
        self.stop(Duration::ZERO, libc::SIGKILL)
    }

    /// Sets the tty size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ShimError> {
        self.call(&Request::Resize { rows, cols }).map(|_| ())
    }

    /// Blocks until the container will not run again; its exit code.
    pub fn wait(&self) -> Result<i32, ShimError> {
        self.wait_within(None)?
            .ok_or_else(|| ShimError::Protocol("no exit code".into()))
    }

    /// [`ShimClient::wait`], giving up after `limit` (`Ok(None)`: still running), so that a
    /// waiter can look whether anyone still wants the answer.
    pub fn wait_within(&self, limit: Option<Duration>) -> Result<Option<i32>, ShimError> {
        let mut conn = self.open()?;
        conn.set_read_timeout(limit).map_err(ShimError::Io)?;
        let mut json =
            serde_json::to_vec(&Request::Wait).map_err(|e| ShimError::Protocol(e.to_string()))?;
        json.push(b'\n');
        conn.write_all(&json).map_err(ShimError::Io)?;
        let mut line = String::new();
        match BufReader::new(conn).read_line(&mut line) {
            Ok(0) => return Err(ShimError::Protocol("connection closed".into())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(ShimError::Io(e)),
        }
        let answer: Answer =
            serde_json::from_str(&line).map_err(|e| ShimError::Protocol(e.to_string()))?;
        if let Some(e) = answer.error {
            return Err(ShimError::Failed(e));
        }
        answer
            .exit_code
            .map(Some)
            .ok_or_else(|| ShimError::Protocol("no exit code".into()))
    }

    /// Pauses (`true`) or resumes the running sandbox.
    pub fn pause(&self, paused: bool) -> Result<(), ShimError> {
        self.call(&Request::Pause { paused }).map(|_| ())
    }

    /// Joins the running sandbox to a network.
    pub fn connect_network(
        &self,
        attachment: &crate::network::Attachment,
    ) -> Result<(), ShimError> {
        let attachment = attachment.clone();
        self.call(&Request::Connect { attachment }).map(|_| ())
    }

    /// Takes the running sandbox off a network.
    pub fn disconnect_network(&self, network: &str) -> Result<(), ShimError> {
        let network = network.to_string();
        self.call(&Request::Disconnect { network }).map(|_| ())
    }

    /// Attaches to the workload's output (and stdin).
    pub fn attach(&self, stdin: bool) -> Result<Attached, ShimError> {
        let (conn, _) = self.call(&Request::Attach { stdin })?;
        Ok(Attached { conn })
    }
}

/// An attach connection.
#[derive(Debug)]
pub struct Attached {
    conn: UnixStream,
}

impl Attached {
    /// A writer for the workload's stdin.
    pub fn stdin(&self) -> io::Result<AttachStdin> {
        Ok(AttachStdin {
            conn: Some(self.conn.try_clone()?),
        })
    }

    /// Copies output to `out`/`err` until the workload exits: `Some(code)`, or `None` if the
    /// shim went away first. Why husk could not run the workload, if so, goes to `husk_err`
    /// as one `husk: ...` line (`err` may be a sink where the workload's stderr is not
    /// wanted: `run -a`).
    pub fn pump(
        self,
        out: &mut dyn Write,
        err: &mut dyn Write,
        husk_err: &mut dyn Write,
    ) -> io::Result<Option<i32>> {
        let mut reader = BufReader::new(self.conn);
        while let Some((stream, bytes)) = read_frame(&mut reader)? {
            match stream {
                STDOUT => {
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
                STDERR => {
                    err.write_all(&bytes)?;
                    err.flush()?;
                }
                // husk could not run the workload: one line, as the CLI reports failures.
                ERROR => {
                    writeln!(
                        husk_err,
                        "husk: {}",
                        String::from_utf8_lossy(&bytes).trim_end()
                    )?;
                    husk_err.flush()?;
                }
                EXIT => {
                    let code = <[u8; 4]>::try_from(bytes.as_slice())
                        .map(i32::from_be_bytes)
                        .map_err(|_| io::Error::other("bad exit frame"))?;
                    return Ok(Some(code));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// The workload's stdin through an attach connection; dropping it sends end of input.
#[derive(Debug)]
pub struct AttachStdin {
    conn: Option<UnixStream>,
}

impl AttachStdin {
    /// Ends stdin.
    pub fn close(mut self) -> io::Result<()> {
        self.end()
    }

    /// Detaches (docker's Ctrl-P Ctrl-Q): the connection goes without ending the workload's
    /// input, which stays open for the next attach; the output side sees its end.
    pub fn detach(mut self) -> io::Result<()> {
        match self.conn.take() {
            Some(c) => c.shutdown(std::net::Shutdown::Both),
            None => Ok(()),
        }
    }

    fn end(&mut self) -> io::Result<()> {
        match self.conn.take() {
            Some(c) => write_frame(&c, STDIN, &[]),
            None => Ok(()),
        }
    }
}

impl Write for AttachStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        let n = buf.len().min(64 * 1024);
        write_frame(conn, STDIN, &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for AttachStdin {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
