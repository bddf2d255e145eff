//! The VMM child's control socket `vmm.sock` (in the container directory): the shim plugs
//! a TAP into one of the VM's NICs, or pulls it out, while the guest runs (`network
//! connect`/`disconnect` of a running vm container). One request per connection: a JSON
//! line `{"nic":N,"tap":"NAME"|null,"mac":[6 bytes]}`, answered `{"ok":true}` or
//! `{"error":"..."}`. Only the shim (root, owner of the 0700 container directory) can
//! reach it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The socket's name in the container directory.
use crate::container::files::VMM_SOCKET as SOCKET;
/// How long the shim waits for the VMM's answer (longer than the NIC waits for the event
/// loop).
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Longest request line taken.
const MAX_LINE: u64 = 4096;

/// Errors asking the VMM.
#[derive(Debug, thiserror::Error)]
pub enum VmctlError {
    /// The socket could not be reached or the exchange failed.
    #[error("cannot reach the VMM's control socket")]
    Io(#[source] std::io::Error),
    /// The VMM refused.
    #[error("the VMM could not change NIC {0}: {1}")]
    Refused(usize, String),
}

/// A request: NIC `nic` gets TAP `tap` (none: unplugged) with guest MAC `mac`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NicRequest {
    /// The NIC's index (eth0 is 0).
    pub nic: usize,
    /// The TAP, or none to unplug.
    pub tap: Option<String>,
    /// The guest's MAC.
    pub mac: [u8; 6],
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Asks the VMM of the container in `dir` to change a NIC.
pub fn request(dir: &Path, req: &NicRequest) -> Result<(), VmctlError> {
    let sock = crate::sockpath::short(dir, SOCKET).map_err(VmctlError::Io)?;
    let mut conn = UnixStream::connect(sock.path()).map_err(VmctlError::Io)?;
    conn.set_read_timeout(Some(ANSWER_WAIT))
        .map_err(VmctlError::Io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| VmctlError::Io(e.into()))?;
    line.push(b'\n');
    conn.write_all(&line).map_err(VmctlError::Io)?;
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .map_err(VmctlError::Io)?;
    let answer: Answer = serde_json::from_str(&answer).map_err(|e| VmctlError::Io(e.into()))?;
    match (answer.ok, answer.error) {
        (true, _) => Ok(()),
        (false, e) => Err(VmctlError::Refused(
            req.nic,
            e.unwrap_or_else(|| "no answer".into()),
        )),
    }
}

/// Serves the socket (in the VMM child's working directory) for the VM's NICs, on a
/// thread of its own, for as long as the process lives.
pub fn serve(nics: Vec<Arc<vmm::devices::virtio::net::Plug>>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET)?;
    std::thread::Builder::new()
        .name("vmm-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let answer = match read_request(&conn) {
                    Ok(req) => apply(&nics, &req),
                    Err(e) => Err(format!("bad request: {e}")),
                };
                let answer = match answer {
                    Ok(()) => Answer {
                        ok: true,
                        error: None,
                    },
                    Err(e) => Answer {
                        ok: false,
                        error: Some(e),
                    },
                };
                if let Ok(mut line) = serde_json::to_vec(&answer) {
                    line.push(b'\n');
                    let _ = (&conn).write_all(&line);
                }
            }
        })?;
    Ok(())
}

fn read_request(conn: &UnixStream) -> Result<NicRequest, String> {
    use std::io::Read;
    conn.set_read_timeout(Some(ANSWER_WAIT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(conn.take(MAX_LINE))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| e.to_string())
}

fn apply(nics: &[Arc<vmm::devices::virtio::net::Plug>], req: &NicRequest) -> Result<(), String> {
    let plug = nics
        .get(req.nic)
        .ok_or_else(|| format!("the VM has {} NICs", nics.len()))?;
    let done = match &req.tap {
        Some(tap) => plug.plug(tap, req.mac),
        None => plug.unplug(req.mac),
    };
    done.map_err(|e| agent_proto::error_chain(&e))
}
