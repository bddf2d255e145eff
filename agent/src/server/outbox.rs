//! The sending half of one host connection, shared by everything that talks to the host on it
//! (the request loop, output pumps, stdin feeders, the reaper): whole frames only, one at a
//! time, behind a mutex.

use std::fmt::Display;
use std::sync::Mutex;

use agent_proto::{ErrorKind, FrameError, FrameWriter, MessageError, Reply, StreamId};

use crate::listen::Conn;
use crate::server::lock;

/// Errors from sending to the host; all mean the connection is gone or unusable.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The message could not be encoded.
    #[error("cannot encode a reply")]
    Encode(#[from] MessageError),
    /// The frame could not be written.
    #[error("cannot send to the host")]
    Send(#[from] FrameError),
}

/// Frames to the host over one connection.
#[derive(Debug)]
pub struct Outbox {
    writer: Mutex<FrameWriter<Conn>>,
}

impl Outbox {
    /// Sends on `conn`.
    pub fn new(conn: Conn) -> Self {
        Self {
            writer: Mutex::new(FrameWriter::new(conn)),
        }
    }

    /// Sends a reply (with the request's id) or an event (without).
    pub fn send(&self, id: Option<u64>, reply: &Reply) -> Result<(), OutboxError> {
        let json = agent_proto::encode(id, reply)?;
        lock(&self.writer).write_control(&json)?;
        Ok(())
    }

    /// Sends an error reply.
    pub fn error(
        &self,
        id: Option<u64>,
        kind: ErrorKind,
        message: impl Display,
    ) -> Result<(), OutboxError> {
        let message = message.to_string();
        self.send(id, &Reply::Error { kind, message })
    }

    /// Sends output bytes (at most `agent_proto::MAX_DATA`); empty ends the stream.
    pub fn data(&self, process: u32, stream: StreamId, bytes: &[u8]) -> Result<(), OutboxError> {
        lock(&self.writer).write_data(process, stream, bytes)?;
        Ok(())
    }
}
