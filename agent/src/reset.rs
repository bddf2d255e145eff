//! Every way out of the agent. As PID 1 the agent never exits: it syncs and resets the VM
//! (`reboot(LINUX_REBOOT_CMD_RESTART)`; with `reboot=k` on the kernel command line the reset
//! reaches the VMM's i8042). This holds on success, on error and on panic (the panic hook
//! resets by itself, since release builds abort right after it).
//!
//! Only PID 1 may reboot. In the initial PID namespace that is the real guest init; in a
//! child PID namespace (process mode, tests) reboot(2) only ends that namespace, whose parent
//! then sees init killed by SIGHUP. Anywhere else (an ordinary host process) the agent just
//! exits: it must never reboot a host.

use std::io::{self, Write};

use crate::console::say;

/// Why the agent is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Everything ran as asked.
    Done,
    /// The agent hit an error.
    Error,
    /// The agent panicked.
    Panic,
}

impl Reason {
    /// Exit code when not PID 1 (and, as PID 1, if reboot(2) itself fails).
    fn exit_code(self) -> i32 {
        match self {
            Reason::Done => 0,
            Reason::Error => 1,
            Reason::Panic => 101,
        }
    }
}

/// Whether this process is PID 1 of its PID namespace.
pub fn is_pid1() -> bool {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() == 1 }
}

/// Makes every panic end in [`reset_vm`]. Install before anything else.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        say!("panic: {info}");
        reset_vm(Reason::Panic)
    }));
}

/// Syncs and resets the VM if PID 1, else exits with the reason's code. Never returns.
pub fn reset_vm(reason: Reason) -> ! {
    let _ = io::stdout().flush();
    if is_pid1() {
        say!("resetting ({reason:?})");
        // SAFETY: sync and reboot take no pointers. We are PID 1 (checked above), so this
        // resets our own VM or ends our own PID namespace, never a host.
        let err = unsafe {
            libc::sync();
            libc::reboot(libc::LINUX_REBOOT_CMD_RESTART);
            io::Error::last_os_error()
        };
        // Only reached if reboot(2) failed (e.g. no CAP_SYS_BOOT). Exiting PID 1 panics the
        // guest kernel, which `panic=-1` on the command line turns into a reset too.
        say!("reboot failed: {err}");
    }
    std::process::exit(reason.exit_code())
}
