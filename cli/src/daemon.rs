//! `husk daemon`: serves docker's Engine API (the `api` crate) over this state directory,
//! so that `DOCKER_HOST=unix:///run/husk.sock docker run ...` runs in a husk microVM.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

/// Where the daemon listens unless `-H` says otherwise (root-only, mode 0600).
pub const DEFAULT_SOCKET: &str = "unix:///run/husk.sock";

/// `husk daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Socket to serve on: unix:///path (TCP is refused: no TLS yet).
    #[arg(short = 'H', long = "host", default_value = DEFAULT_SOCKET, value_name = "SOCKET")]
    host: String,
}

/// Serves until SIGTERM or SIGINT.
pub fn daemon(a: DaemonArgs, root: &Path, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    let listen = api::Listen::parse(&a.host)?;
    let engine = runtime::engine::Engine::new(root.to_owned()).with_kvm_device(kvm_device);
    api::serve(engine, &listen)?;
    Ok(ExitCode::SUCCESS)
}
