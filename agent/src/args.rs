//! The agent's own command line, honoured only outside PID 1 (as PID 1, argv holds whatever
//! the kernel passed on, which must not change behaviour):
//!
//! ```text
//! husk-agent --version             print the version
//! husk-agent --listen unix:/PATH   host-process mode: serve the protocol there (also vsock[:PORT])
//! HUSK_AGENT_SOCKET=/PATH husk-agent    the same as --listen unix:/PATH
//! husk-agent                       the PID 1 path (refuses unless PID 1)
//! ```

use std::ffi::OsString;

use crate::listen::ListenSpec;

/// Environment variable naming a unix socket to serve on (host-process mode).
pub const SOCKET_ENV: &str = "HUSK_AGENT_SOCKET";

/// Errors in the agent's arguments.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// An argument the agent does not know.
    #[error("unknown argument {0:?} (usage: husk-agent [--version | --listen unix:/PATH])")]
    Unknown(String),
    /// `--listen` without a value.
    #[error("--listen needs an address (unix:/PATH, vsock or vsock:PORT)")]
    MissingValue,
    /// The listen address is not valid.
    #[error("bad listen address")]
    Listen(#[from] crate::listen::ListenError),
    /// `HUSK_AGENT_SOCKET` is not an absolute path.
    #[error("{SOCKET_ENV}={0:?} must be an absolute path")]
    RelativeSocket(String),
}

/// What the arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Print the version and exit.
    Version,
    /// Host-process mode: serve the protocol here, touch nothing else.
    Serve(ListenSpec),
    /// The PID 1 boot sequence.
    Init,
}

/// Parses the arguments (without argv[0]) and the value of [`SOCKET_ENV`].
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    socket_env: Option<OsString>,
) -> Result<Mode, ArgsError> {
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    let mode = match args.next().as_deref() {
        None => return from_env(socket_env),
        Some("--version") => Mode::Version,
        Some("--listen") => Mode::Serve(ListenSpec::parse(
            &args.next().ok_or(ArgsError::MissingValue)?,
        )?),
        Some(arg) => match arg.strip_prefix("--listen=") {
            Some(spec) => Mode::Serve(ListenSpec::parse(spec)?),
            None => return Err(ArgsError::Unknown(arg.to_owned())),
        },
    };
    match args.next() {
        Some(extra) => Err(ArgsError::Unknown(extra)),
        None => Ok(mode),
    }
}

fn from_env(socket_env: Option<OsString>) -> Result<Mode, ArgsError> {
    let Some(path) = socket_env.filter(|p| !p.is_empty()) else {
        return Ok(Mode::Init);
    };
    let path = path.to_string_lossy().into_owned();
    if !path.starts_with('/') {
        return Err(ArgsError::RelativeSocket(path));
    }
    Ok(Mode::Serve(ListenSpec::Unix(path.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str], env: Option<&str>) -> Result<Mode, ArgsError> {
        parse(args.iter().map(OsString::from), env.map(OsString::from))
    }

    #[test]
    fn modes() {
        let unix = |p: &str| Mode::Serve(ListenSpec::Unix(p.into()));
        assert_eq!(parse_strs(&[], None).unwrap(), Mode::Init);
        assert_eq!(parse_strs(&[], Some("")).unwrap(), Mode::Init);
        assert_eq!(parse_strs(&["--version"], None).unwrap(), Mode::Version);
        assert_eq!(parse_strs(&[], Some("/s")).unwrap(), unix("/s"));
        assert_eq!(
            parse_strs(&["--listen", "unix:/a"], Some("/b")).unwrap(),
            unix("/a")
        );
        assert_eq!(parse_strs(&["--listen=unix:/a"], None).unwrap(), unix("/a"));
        assert_eq!(
            parse_strs(&["--listen", "vsock:9"], None).unwrap(),
            Mode::Serve(ListenSpec::Vsock(9))
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_strs(&["-x"], None),
            Err(ArgsError::Unknown(_))
        ));
        assert!(matches!(
            parse_strs(&["--listen"], None),
            Err(ArgsError::MissingValue)
        ));
        assert!(matches!(
            parse_strs(&["--listen", "unix:rel"], None),
            Err(ArgsError::Listen(_))
        ));
        assert!(matches!(
            parse_strs(&["--version", "x"], None),
            Err(ArgsError::Unknown(_))
        ));
        assert!(matches!(
            parse_strs(&[], Some("rel.sock")),
            Err(ArgsError::RelativeSocket(_))
        ));
    }
}
