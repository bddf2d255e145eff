//! The host↔agent protocol, the only crate shared by the host (`runtime`) and the guest
//! (`husk-agent`). Owns the wire format and nothing else: the [`PROTOCOL_VERSION`], the vsock
//! [`CONTROL_PORT`], the framing and its limits ([`frame`]), the control messages
//! ([`message`]) and the archive tool's operations ([`archive`]). It does no I/O of its own beyond `Read`/`Write`, so it works over a vsock,
//! a unix socket or an in-memory buffer alike. docs/agent-protocol.md describes the protocol.
//!
//! In short: every frame is `[u32 BE length][u8 kind][payload]`. Control frames carry one JSON
//! envelope `{"v": version, "id": request id, "body": message}`; data frames carry raw stdio
//! bytes for one stream of one process, never JSON-escaped.

pub mod archive;
pub mod frame;
pub mod message;

pub use frame::{Data, Frame, FrameError, FrameReader, FrameWriter, MAX_DATA, MAX_FRAME, StreamId};
pub use message::{
    DeviceMount, Envelope, ErrorKind, GuestIdentity, InterfaceSpec, MessageError, ProcessSpec,
    Reply, Request, Rlimit, SandboxSpec, TermSize, TmpfsMount, Tool, Top, User, VolumeMount,
    decode, encode,
};

/// `err: cause: cause...`: an error with its whole `source()` chain on one line, the form of
/// the `message` in error replies and of the errors either side prints about the other.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The protocol version both sides must speak. Bumped on any incompatible change to message
/// bodies; the envelope (`v`, `id`, `body`) and the frame header never change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The guest vsock port the agent listens on for the host's connections.
pub const CONTROL_PORT: u32 = 1024;

/// How many stdin bytes the host may send for one process before the agent grants more with
/// [`Reply::Credit`]. Bounds what the agent buffers for a process that does not read stdin,
/// so a stuck process never blocks the connection.
pub const STDIN_WINDOW: u32 = 1 << 20;
