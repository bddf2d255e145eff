//! docker's exec endpoints: `POST /containers/{id}/exec` records what to run (in memory:
//! exec instances do not outlive the daemon, as with docker), `POST /exec/{id}/start` runs
//! it in the container through its agent (hijacking the connection to relay the output
//! and stdin, or detached), `GET /exec/{id}/json` reports it (clients read the exit code
//! there), `POST /exec/{id}/resize` sizes its terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use runtime::engine::Exec;
use runtime::spec::ExecFlags;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::body::{self, Resp};
use crate::containers::json_body;
use crate::error::ApiError;
use crate::hijack;
use crate::route::Query;
use crate::server::{Daemon, blocking};
use crate::stream::{Framer, Stream};

/// The exec create body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    privileged: bool,
}

/// The exec start body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
}

/// One exec instance.
#[derive(Debug)]
struct Record {
    container: String,
    body: CreateBody,
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
    process: Option<Arc<Exec>>,
}

/// The daemon's exec instances, by ID.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, Record>>);

impl Execs {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Record) -> T) -> Result<T, ApiError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get_mut(id)
            .map(f)
            .ok_or_else(|| ApiError::NoSuchExec(id.to_owned()))
    }
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    d: &Arc<Daemon>,
    query: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: CreateBody = json_body(req).await?;
    if body.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::BadParam {
            name: "Cmd",
            value: String::new(),
        });
    }
    let (engine, query) = (d.engine.clone(), query.to_owned());
    let container = blocking(move || {
        let id = engine.config(&query)?.id;
        match engine.running(&id)? {
            true => Ok(id),
            false => Err(ApiError::NotRunning(query)),
        }
    })
    .await?;
    let id = runtime::container::random_id().map_err(runtime::engine::EngineError::from)?;
    let record = Record {
        container,
        body,
        started: false,
        running: false,
        exit_code: None,
        pid: 0,
        process: None,
    };
    let mut m = d.execs.0.lock().unwrap_or_else(|p| p.into_inner());
    m.insert(id.clone(), record);
    Ok(body::json(StatusCode::CREATED, &json!({ "Id": id })))
}

/// `POST /exec/{id}/start`.
pub async fn start(
    d: &Arc<Daemon>,
    id: &str,
    mut req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let upgrade = hyper::upgrade::on(&mut req);
    let start: StartBody = json_body(req).await.unwrap_or_default();
    let (container, body) = d
        .execs
        .with(id, |r| {
            let was = r.started;
            r.started = true;
            (was, r.container.clone(), r.body.clone())
        })
        .and_then(|(was, c, b)| match was {
            true => Err(ApiError::ExecStarted(id.to_owned())),
            false => Ok((c, b)),
        })?;
    let flags = ExecFlags {
        env: body.env.clone().unwrap_or_default(),
        workdir: body.working_dir.clone().filter(|w| !w.is_empty()),
        user: body.user.clone().filter(|u| !u.is_empty()),
        tty: body.tty,
        interactive: body.attach_stdin,
        size: None,
        cmd: body.cmd.clone().unwrap_or_default(),
    };
    let (daemon, id) = (Arc::clone(d), id.to_owned());
    if start.detach {
        let (tx, _) = mpsc::channel(1);
        tokio::task::spawn_blocking(move || run(&daemon, &id, &container, &flags, tx, None));
        return Ok(body::empty(StatusCode::OK));
    }
    tokio::spawn(async move {
        let Ok(conn) = upgrade.await else {
            let _ = daemon.execs.with(&id, |r| r.started = false);
            return;
        };
        let stdin = flags.interactive;
        hijack::serve(conn, stdin, move |tx, input| {
            run(&daemon, &id, &container, &flags, tx, input);
        })
        .await;
    });
    Ok(hijack::upgraded())
}

/// Runs exec `id` to its end (blocking), relaying to `tx` and from `input`.
fn run(
    d: &Daemon,
    id: &str,
    container: &str,
    flags: &ExecFlags,
    tx: mpsc::Sender<Bytes>,
    input: Option<hijack::Input>,
) {
    let (out_stream, err_stream) = Stream::pair(flags.tty);
    let out = Box::new(Framer::new(tx.clone(), out_stream));
    let err = Box::new(Framer::new(tx.clone(), err_stream));
    let exec = match d.engine.exec(container, flags, &|_| None, out, err) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            hijack::say(&tx, err_stream, &agent_proto::error_chain(&e));
            let _ = d.execs.with(id, |r| r.exit_code = Some(126));
            return;
        }
    };
    let pid = exec.process.pid();
    let _ = d.execs.with(id, |r| {
        r.running = pid.is_some();
        r.pid = pid.unwrap_or(0);
        r.process = Some(Arc::clone(&exec));
    });
    if let (Some(input), Ok(w)) = (input, exec.process.stdin()) {
        hijack::feed_stdin(input, w);
    }
    let code = match exec.process.wait() {
        Ok(exit) => {
            if pid.is_none() {
                hijack::say(&tx, err_stream, &exit.detail);
            }
            exit.code
        }
        Err(e) => {
            hijack::say(&tx, err_stream, &agent_proto::error_chain(&e));
            126
        }
    };
    let _ = d.execs.with(id, |r| {
        r.running = false;
        r.exit_code = Some(code);
        r.process = None;
    });
}

/// `GET /exec/{id}/json`.
pub fn inspect(d: &Daemon, id: &str) -> Result<Resp, ApiError> {
    let doc = d.execs.with(id, |r| {
        let cmd = r.body.cmd.clone().unwrap_or_default();
        json!({
            "ID": id,
            "Running": r.running,
            "ExitCode": r.exit_code,
            "ProcessConfig": {
                "tty": r.body.tty,
                "entrypoint": cmd.first(),
                "arguments": cmd.get(1..).unwrap_or_default(),
                "privileged": r.body.privileged,
                "user": r.body.user.clone().unwrap_or_default(),
            },
            "OpenStdin": r.body.attach_stdin,
            "OpenStdout": r.body.attach_stdout,
            "OpenStderr": r.body.attach_stderr,
            "CanRemove": false,
            "ContainerID": r.container,
            "DetachKeys": "",
            "Pid": r.pid,
        })
    })?;
    Ok(body::json(StatusCode::OK, &doc))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub fn resize(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let size = |n| {
        q.int(n)
            .map(|v| v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0))
    };
    let (rows, cols) = (size("h")?, size("w")?);
    if let Some(exec) = d.execs.with(id, |r| r.process.clone())? {
        let _ = exec.process.resize(rows, cols);
    }
    Ok(body::empty(StatusCode::CREATED))
}
