//! husk's Docker Engine API front end: `husk daemon` serves docker's HTTP API on a unix
//! socket so that the docker CLI, docker-compose and the SDKs drive husk. Every request
//! becomes a call on `runtime::engine::Engine`; this crate only speaks HTTP: routing
//! (`route`), bodies and docker's stream framing (`body`, `stream`), error statuses
//! (`error`), and the endpoint groups (`system`, `containers`, `attach`, `images`,
//! `build`).
//!
//! The runtime's verbs block (they wait on shims and guests), so every handler runs them on
//! tokio's blocking pool; the HTTP side is one small current-thread runtime.

#![recursion_limit = "256"]

mod archive;
mod attach;
mod body;
mod build;
mod containers;
mod error;
mod events;
mod exec;
mod hijack;
mod images;
mod objects;
mod route;
mod server;
mod spool;
mod stats;
mod stream;
mod system;

pub use server::{Listen, ServeError, serve};

/// The newest API version husk speaks (what Debian's docker 20.10 client uses).
pub const API_VERSION: &str = "1.41";

/// The oldest API version husk accepts.
pub const MIN_API_VERSION: &str = "1.24";
