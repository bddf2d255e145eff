//! Running the agent binary as one of its own tools (`husk-init`, `husk-archive`): the
//! program is the agent's own executable, opened once through `/proc/self/exe` (which
//! resolves even from inside the container's root, and even when the file itself is gone,
//! as the VM's initramfs is after the switch into the rootfs) and exec'd as
//! `/proc/self/fd/N`; the tool is chosen by `argv[0]`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::launch::Command;
use std::sync::OnceLock;

/// The agent's own executable; `None` if it could not be opened.
static SELF_EXE: OnceLock<Option<File>> = OnceLock::new();

/// Whether this process was started under the name `argv0`.
pub fn invoked_as(argv0: &str) -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|a| a.to_string_lossy().rsplit('/').next() == Some(argv0))
}

/// A command running the agent's own executable with `argv[0]` = `argv0`.
pub fn command(argv0: &str) -> io::Result<Command> {
    let exe = SELF_EXE
        .get_or_init(|| File::open("/proc/self/exe").ok())
        .as_ref()
        .ok_or_else(|| io::Error::other("cannot open the agent's own executable"))?;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0(argv0);
    Ok(cmd)
}
