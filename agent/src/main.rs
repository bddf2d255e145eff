//! husk-agent: PID 1 of every husk sandbox (a microVM, or fresh namespaces in process mode).
//! It mounts the early filesystems, sets the hostname, serves the host↔agent protocol
//! (agent-proto) on vsock or a unix socket, reaps children, and ends every path (success,
//! error, panic) by resetting the VM. Outside PID 1 it can run as a plain protocol server
//! (host-process mode, `--listen`). See docs/agent.md and docs/agent-protocol.md.

mod archive;
mod args;
mod caps;
mod cgroup;
mod cmdline;
mod console;
mod eventfd;
mod exec;
mod fpu;
mod fresh;
mod host;
mod hostname;
mod husk_init;
mod init;
mod launch;
mod listen;
mod loopback;
mod mounts;
mod network;
mod oom;
mod reaper;
mod reset;
mod rootfs;
mod self_exe;
mod server;
mod top;
mod transport;
mod user;
mod vsock;
mod workers;

use std::error::Error;

pub(crate) use agent_proto::error_chain as chain;
use args::Mode;
use console::say;
use reset::Reason;

fn main() {
    // The container's init (`--init`) is the agent binary under another name, and may well
    // be PID 1 (of the container's PID namespace): decided before anything PID-1-like.
    if husk_init::invoked() {
        std::process::exit(husk_init::main(std::env::args_os()));
    }
    if archive::invoked() {
        std::process::exit(archive::main(std::env::args_os()));
    }
    if top::invoked() {
        std::process::exit(top::main());
    }
    reset::install_panic_hook();
    // Arguments are honoured only outside PID 1: as init, argv holds whatever the kernel
    // passed on (unknown parameters without `=`), which must not change behaviour.
    let mode = match reset::is_pid1() {
        true => Ok(Mode::Init),
        false => args::parse(
            std::env::args_os().skip(1),
            std::env::var_os(args::SOCKET_ENV),
        ),
    };
    let result = match mode {
        Ok(Mode::Version) => {
            println!("husk-agent {}", init::VERSION);
            Ok(())
        }
        Ok(Mode::Serve(spec)) => host::serve(&spec).map_err(Box::<dyn Error>::from),
        Ok(Mode::Init) => init::run().map_err(Box::<dyn Error>::from),
        Err(e) => Err(e.into()),
    };
    let reason = match result {
        Ok(()) => Reason::Done,
        Err(err) => {
            say!("error: {}", chain(err.as_ref()));
            Reason::Error
        }
    };
    reset::reset_vm(reason)
}
