//! Running the agent's own tools in a container (`agent_proto::Tool`): `husk-archive` for
//! a container's files (`files`) and `husk-top` for its processes ([`top`]). A tool is a
//! process of the container: its stdout is its answer, its last line on stderr its error,
//! its exit code its verdict, and all three come from a container, so they are data to
//! check, never trusted.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_proto::{ProcessSpec, Tool, Top};

use crate::agent_client::{AgentClient, ClientError, Sink, sink_fn};
use crate::lifecycle::LifecycleError;

/// Longest error text kept from a tool's stderr.
const MAX_TOOL_ERROR: usize = 4096;
/// Longest `top` answer accepted.
const MAX_TOP: usize = 4 << 20;

/// How a tool ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolExit {
    /// Its exit code (126/127: it could not be started).
    pub code: i32,
    /// Its last non-empty line on stderr, else the agent's account of its end.
    pub said: String,
}

/// Runs `tool` through `client`, feeding it `stdin` and sending its stdout to `stdout`.
pub fn run(
    client: &AgentClient,
    tool: Tool,
    stdin: Option<&mut dyn Read>,
    stdout: Sink,
) -> Result<ToolExit, ClientError> {
    let spec = ProcessSpec {
        argv: vec!["husk-tool".into()],
        tool: Some(tool),
        ..ProcessSpec::default()
    };
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&errors);
    let stderr = sink_fn(move |b| {
        let mut e = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = MAX_TOOL_ERROR.saturating_sub(e.len());
        e.extend_from_slice(&b[..b.len().min(room)]);
    });
    let exit = client.run(&spec, stdin, stdout, stderr)?;
    let said = errors.lock().map(|e| e.clone()).unwrap_or_default();
    let said = String::from_utf8_lossy(&said);
    let line = said.lines().rev().find(|l| !l.trim().is_empty());
    Ok(ToolExit {
        code: exit.code,
        said: printable(&line.map_or_else(|| exit.detail.clone(), |l| l.trim().to_owned())),
    })
}

/// `text` with control characters (a container's words may hold terminal escapes) shown
/// as `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Errors from `top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The container is unknown or not running.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The agent could not be reached.
    #[error("cannot reach the container's agent")]
    Agent(#[from] ClientError),
    /// The tool failed.
    #[error("cannot list the container's processes: {0}")]
    Failed(String),
}

/// docker's `top`: the processes of running container `query`, as `ps -ef` shows them
/// (PIDs as the container sees them, under both isolations).
pub fn top(root: &Path, query: &str) -> Result<Top, TopError> {
    // A paused container's agent cannot answer (refused here, as `exec` is).
    let client = crate::lifecycle::agent_client(root, query)?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let stdout = sink_fn(move |b| {
        let mut o = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if o.len() + b.len() <= MAX_TOP {
            o.extend_from_slice(b);
        }
    });
    let exit = run(&client, Tool::Top, None, stdout)?;
    if exit.code != 0 {
        return Err(TopError::Failed(exit.said));
    }
    let json = out.lock().map(|o| o.clone()).unwrap_or_default();
    let mut top = Top::from_json(&json).map_err(|e| TopError::Failed(e.to_string()))?;
    if top.processes.iter().any(|p| p.len() != top.titles.len()) {
        return Err(TopError::Failed("rows do not match the titles".into()));
    }
    for cell in top
        .titles
        .iter_mut()
        .chain(top.processes.iter_mut().flatten())
    {
        *cell = printable(cell);
    }
    Ok(top)
}
