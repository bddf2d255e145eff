//! husk-agent: PID 1 of every husk sandbox (a microVM, or fresh namespaces in process mode).
//! It mounts the early filesystems, sets the hostname, reports ready, optionally runs one
//! program, reaps children, and ends every path (success, error, panic) by resetting the VM.
//! See docs/agent.md.

mod cmdline;
mod console;
mod exec;
mod hostname;
mod init;
mod mounts;
mod reaper;
mod reset;
mod transport;

use std::error::Error;

use console::say;
use reset::Reason;

fn main() {
    reset::install_panic_hook();
    // `--version` is honoured only outside PID 1: as init, argv holds whatever the kernel
    // passed on (unknown parameters without `=`), which must not change behaviour.
    if !reset::is_pid1() && std::env::args().nth(1).as_deref() == Some("--version") {
        println!("husk-agent {}", init::VERSION);
        reset::reset_vm(Reason::Done);
    }
    let reason = match init::run() {
        Ok(()) => Reason::Done,
        Err(err) => {
            say!("error: {}", chain(&err));
            Reason::Error
        }
    };
    reset::reset_vm(reason)
}

/// `err: cause: cause...`, since nothing above the agent prints the sources for it.
fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
