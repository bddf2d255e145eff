//! Signals as docker users name them (`KILL`, `SIGKILL`, `kill`, `9`): `kill -s`,
//! `stop -s`, `--stop-signal` and an image's `StopSignal`.

/// A name or number that is no signal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid signal: {0}")]
pub struct SignalError(pub String);

/// A signal by name (`KILL`, `SIGKILL`, `kill`) or number.
pub fn parse(s: &str) -> Result<i32, SignalError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(SignalError(s.to_owned()));
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(SignalError(s.to_owned())),
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_and_number() {
        assert_eq!(parse("KILL"), Ok(9));
        assert_eq!(parse("sigterm"), Ok(15));
        assert_eq!(parse("SIGUSR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("2"), Ok(2));
        assert!(parse("0").is_err());
        assert!(parse("NOPE").is_err());
    }
}
