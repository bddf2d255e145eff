//! The two ways the host reaches an agent, both ending in a plain `UnixStream`: a unix socket
//! the agent listens on itself (process isolation, host-process mode), or a VMM's vsock
//! socket, where the guest port is chosen with the Firecracker convention: connect, write
//! `CONNECT <port>\n`, read `OK <host port>\n`, then the stream is the guest connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest `OK <port>\n` line accepted from the VMM.
const MAX_REPLY_LINE: usize = 32;

/// Errors from connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// connect(2) on the unix socket failed.
    #[error("cannot connect to {0}")]
    Connect(PathBuf, #[source] io::Error),
    /// Setting the socket's timeout failed.
    #[error("cannot set a timeout on {0}")]
    Timeout(PathBuf, #[source] io::Error),
    /// Writing `CONNECT` or reading the answer failed.
    #[error("vsock CONNECT {port} through {path} failed")]
    Handshake {
        /// The VMM's vsock socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The VMM closed the connection instead of answering (nothing listens on the port).
    #[error("the VMM refused vsock port {port} through {path} (is the agent listening?)")]
    Refused {
        /// The VMM's vsock socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
    },
    /// The VMM answered something other than `OK <port>`.
    #[error("unexpected answer {answer:?} to CONNECT {port} through {path}")]
    BadAnswer {
        /// The VMM's vsock socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
        /// What it said.
        answer: String,
    },
}

/// Where an agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket the agent listens on.
    Unix(PathBuf),
    /// A guest vsock port behind a VMM's unix socket (Firecracker's CONNECT convention).
    Vsock {
        /// The VMM's vsock unix socket.
        uds: PathBuf,
        /// The guest port (normally `agent_proto::CONTROL_PORT`).
        port: u32,
    },
}

impl Endpoint {
    /// Connects, answering the VMM's handshake within `timeout` for vsock.
    pub fn connect(&self, timeout: Duration) -> Result<UnixStream, ConnectError> {
        match self {
            Endpoint::Unix(path) => connect_unix(path),
            Endpoint::Vsock { uds, port } => connect_vsock(uds, *port, timeout),
        }
    }
}

/// Connects to a unix socket the agent listens on (through a short path if it is long:
/// state directories can be deep, `sun_path` is not).
pub fn connect_unix(path: &Path) -> Result<UnixStream, ConnectError> {
    let failed = |e| ConnectError::Connect(path.to_owned(), e);
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy()),
        _ => return UnixStream::connect(path).map_err(failed),
    };
    let short = crate::sockpath::short(dir, &name).map_err(failed)?;
    UnixStream::connect(short.path()).map_err(failed)
}

/// Connects to guest vsock `port` through the VMM's unix socket `uds`.
pub fn connect_vsock(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ConnectError> {
    let mut stream = connect_unix(uds)?;
    let handshake = |source| ConnectError::Handshake {
        path: uds.to_owned(),
        port,
        source,
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| ConnectError::Timeout(uds.to_owned(), e))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(handshake)?;
    let line = read_line(&mut stream).map_err(handshake)?;
    stream
        .set_read_timeout(None)
        .map_err(|e| ConnectError::Timeout(uds.to_owned(), e))?;
    if line.is_empty() {
        return Err(ConnectError::Refused {
            path: uds.to_owned(),
            port,
        });
    }
    let host_port = line
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse::<u32>().ok());
    match host_port {
        Some(_) => Ok(stream),
        None => Err(ConnectError::BadAnswer {
            path: uds.to_owned(),
            port,
            answer: line,
        }),
    }
}

/// Reads one `\n`-terminated line a byte at a time (what follows belongs to the agent);
/// empty if the peer closed first.
fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REPLY_LINE {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => {
                line.push(b'\n');
                break;
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-connection stand-in for the VMM's vsock socket that answers with `answer`.
    fn vmm(answer: &'static [u8]) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let got = read_line(&mut s).unwrap();
            s.write_all(answer).unwrap();
            got
        });
        (dir, path, server)
    }

    #[test]
    fn connect_line_and_ok_answer() {
        let (_dir, path, server) = vmm(b"OK 1073741824\nagent bytes");
        let mut s = connect_vsock(&path, 1024, Duration::from_secs(5)).unwrap();
        assert_eq!(server.join().unwrap(), "CONNECT 1024\n");
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest, "agent bytes",
            "the handshake must not eat the agent's bytes"
        );
    }

    #[test]
    fn refusal_and_bad_answers() {
        let (_dir, path, _server) = vmm(b"");
        let err = connect_vsock(&path, 5, Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(err, ConnectError::Refused { port: 5, .. }),
            "{err}"
        );
        let (_dir, path, _server) = vmm(b"NO\n");
        let err = connect_vsock(&path, 5, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ConnectError::BadAnswer { .. }), "{err}");
        let err = connect_unix(Path::new("/nonexistent/husk.sock")).unwrap_err();
        assert!(matches!(err, ConnectError::Connect(..)), "{err}");
    }
}
