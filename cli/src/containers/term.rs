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
    /// `--detach-keys` is not docker's format.
    #[error(
        "invalid detach keys {0:?}: use a comma-separated list of ctrl-<letter> or single characters"
    )]
    DetachKeys(String),
}

/// docker's detach keys (`--detach-keys`, default `ctrl-p,ctrl-q`): a comma-separated list
/// of `ctrl-X` (X one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`) or single characters.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, TermError> {
    let bad = || TermError::DetachKeys(spec.to_owned());
    spec.split(',')
        .map(|key| match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let b = c.as_bytes()[0];
                match b {
                    b'a'..=b'z' => Ok(b - b'a' + 1),
                    b'@' => Ok(0),
                    b'[' => Ok(27),
                    b'\\' => Ok(28),
                    b']' => Ok(29),
                    b'^' => Ok(30),
                    b'_' => Ok(31),
                    _ => Err(bad()),
                }
            }
            Some(_) => Err(bad()),
            None if key.len() == 1 => Ok(key.as_bytes()[0]),
            None => Err(bad()),
        })
        .collect()
}

/// docker's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Finds `keys` in a stream of input: fed each chunk, it says how much of the chunk to
/// forward and whether the sequence is complete. A partial match held at a chunk's end is
/// forwarded later if the next bytes do not complete it, as docker does.
#[derive(Debug)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    /// Watches for `keys` (none: never detaches).
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// The bytes to forward for `chunk`, and whether to detach now.
    pub fn feed(&mut self, chunk: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(chunk.len());
        for &b in chunk {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Copies local stdin to `input` on a thread until end of input (or the workload stops
/// reading), then hands `input` to `done` (which sends end of file).
pub fn pump_stdin<W: io::Write + Send + 'static>(
    mut input: W,
    mut watch: DetachWatch,
    done: impl FnOnce(W, bool) + Send + 'static,
) -> Result<(), TermError> {
    std::thread::Builder::new()
        .name("husk-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            let mut local = io::stdin();
            let mut detached = false;
            while let Ok(n @ 1..) = io::Read::read(&mut local, &mut buf) {
                let (forward, detach) = watch.feed(&buf[..n]);
                if input
                    .write_all(&forward)
                    .and_then(|()| input.flush())
                    .is_err()
                {
                    break;
                }
                if detach {
                    detached = true;
                    break;
                }
            }
            done(input, detached);
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
    fn detach_keys_as_docker_writes_them() {
        assert_eq!(
            parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap(),
            vec![16, 17]
        );
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert!(parse_detach_keys("ctrl-ab").is_err());
        assert!(parse_detach_keys("meta-a").is_err());
    }

    #[test]
    fn the_watch_forwards_everything_but_the_sequence() {
        let mut w = DetachWatch::new(vec![16, 17]);
        assert_eq!(w.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(w.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(w.feed(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(w.feed(b"\x11rest"), (Vec::new(), true));
        let mut none = DetachWatch::new(Vec::new());
        assert_eq!(none.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }

    #[test]
    fn no_window_size_off_a_terminal() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(window_size(std::os::fd::AsRawFd::as_raw_fd(&f)), None);
    }
}
