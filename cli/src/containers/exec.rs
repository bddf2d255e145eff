//! `husk exec`: a new process in a running container (its rootfs, environment, working
//! directory and user unless the flags say otherwise), reached through the container's agent.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::bail;
use clap::Args;
use runtime::agent_client::{TermSize, sink_fn};
use runtime::engine::Exec;
use runtime::spec::ExecFlags;

use super::term;

/// `husk exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and pass it to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: name or UID, optionally with :group or :GID.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Container (name, ID or ID prefix).
    container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `husk exec`: exits with the process's code.
pub fn exec(a: ExecArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if a.interactive && a.tty && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let target: Arc<OnceLock<Arc<Exec>>> = Arc::default();
    relay_signals(&target, a.tty)?;
    let size = window_size().map(|(rows, cols)| TermSize { rows, cols });
    let flags = ExecFlags {
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        tty: a.tty,
        interactive: a.interactive,
        size,
        cmd: a.cmd,
    };
    let engine = runtime::engine::Engine::new(root.to_owned());
    let lookup = |k: &str| std::env::var(k).ok();
    let exec = Arc::new(engine.exec(&a.container, &flags, &lookup, sink(false), sink(true))?);
    let process = &exec.process;
    let raw = match a.tty && std::io::stdin().is_terminal() && process.pid().is_some() {
        true => Some(term::RawMode::enter(std::io::stdin().as_raw_fd())?),
        false => None,
    };
    let _ = target.set(Arc::clone(&exec));
    if a.interactive && process.pid().is_some() {
        // exec has no detach: its process lives on this connection.
        term::pump_stdin(
            process.stdin()?,
            term::DetachWatch::new(Vec::new()),
            |input, _| {
                let _ = input.close();
            },
        )?;
    }
    let exit = process.wait()?;
    drop(raw);
    if process.pid().is_none() {
        eprintln!("husk: {}", exit.detail);
    }
    Ok(ExitCode::from(
        u8::try_from(exit.code.clamp(0, 255)).unwrap_or(125),
    ))
}

fn window_size() -> Option<(u16, u16)> {
    term::window_size(std::io::stdout().as_raw_fd())
        .or_else(|| term::window_size(std::io::stdin().as_raw_fd()))
}

/// Output straight to our stdout/stderr, flushed per chunk (prompts have no newline).
fn sink(stderr: bool) -> runtime::agent_client::Sink {
    sink_fn(move |bytes| {
        let _ = match stderr {
            true => std::io::stderr().lock().write_all(bytes),
            false => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
        };
    })
}

fn relay_signals(target: &Arc<OnceLock<Arc<Exec>>>, tty: bool) -> anyhow::Result<()> {
    let mut signals = term::RELAYED.to_vec();
    if tty {
        signals.push(libc::SIGWINCH);
    }
    let target = Arc::clone(target);
    term::relay_signals(&signals, move |sig| {
        let Some(p) = target.get().map(|e| &e.process) else {
            if sig != libc::SIGWINCH {
                std::process::exit(128 + sig);
            }
            return;
        };
        let res = match (sig, window_size()) {
            (libc::SIGWINCH, Some((rows, cols))) => p.resize(rows, cols),
            (libc::SIGWINCH, None) => Ok(()),
            _ => p.signal(sig),
        };
        if let Err(e) = res {
            log::debug!("relaying signal {sig}: {e}");
        }
    })?;
    Ok(())
}
