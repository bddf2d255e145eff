//! The local terminal and signals for attached verbs: raw mode (restored on drop), the
//! window size, a thread that receives the signals a foreground `husk run` relays, and a
//! thread that copies local stdin to the workload.

use std::io;
use std::os::fd::RawFd;

/// Errors from the terminal.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    /// tcgetattr/tcsetattr failed.
    #[error("cannot put the terminal in raw mode")]
    Raw(#[source] io::Error),
    /// The signal thread could not be started.
    #[error("cannot start the signal thread")]
    Thread(#[source] io::Error),
    /// The stdin thread could not be started.
    #[error("cannot start the stdin thread")]
    StdinThread(#[source] io::Error),
}

/// Copies local stdin to `input` on a thread until end of input (or the workload stops
/// reading), then hands `input` to `done` (which sends end of file).
pub fn pump_stdin<W: io::Write + Send + 'static>(
    mut input: W,
    done: impl FnOnce(W) + Send + 'static,
) -> Result<(), TermError> {
    std::thread::Builder::new()
        .name("husk-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            let mut local = io::stdin();
            while let Ok(n @ 1..) = io::Read::read(&mut local, &mut buf) {
                if input
                    .write_all(&buf[..n])
                    .and_then(|()| input.flush())
                    .is_err()
                {
                    break;
                }
            }
            done(input);
        })
        .map(drop)
        .map_err(TermError::StdinThread)
}

/// The terminal in raw mode until dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts `fd` (a terminal) in raw mode.
    pub fn enter(fd: RawFd) -> Result<Self, TermError> {
        // SAFETY: termios is plain old data; all-zero is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios for tcgetattr to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(TermError::Raw(io::Error::last_os_error()));
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios that cfmakeraw modifies in place.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the terminal's own settings.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(TermError::Raw(io::Error::last_os_error()));
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from this same terminal in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The window size of the terminal on `fd` as (rows, cols), if it is one.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid pointer given.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Signals a foreground `husk run` passes on to the workload (docker's sig-proxy set, less
/// the ones that make no sense to forward).
pub const RELAYED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset right away.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is a valid sigset_t and `s` a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks `signals` in the calling thread (and every thread it starts later), then starts a
/// thread that receives them with `sigwait` and hands each to `handler`. Call it before any
/// other thread is started so that none of them gets the signals instead.
pub fn relay_signals(
    signals: &[i32],
    mut handler: impl FnMut(i32) + Send + 'static,
) -> Result<(), TermError> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    std::thread::Builder::new()
        .name("husk-signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid sigset_t and `sig` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    handler(sig);
                }
            }
        })
        .map(drop)
        .map_err(TermError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_size_off_a_terminal() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(window_size(std::os::fd::AsRawFd::as_raw_fd(&f)), None);
    }
}
