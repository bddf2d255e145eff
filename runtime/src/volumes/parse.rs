//! docker's mount flags as text: `-v [SOURCE:]TARGET[:MODES]`, `--mount
//! type=volume|bind|tmpfs,...` and `--volumes-from CONTAINER[:ro|rw]`, parsed into
//! requests that `resolve` turns into mounts when the container is created.

use super::resolve::{MountRequest, Source};
use super::store::valid_name;

/// Errors in mount flags, in docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// `-v` or `--mount` is malformed.
    #[error("invalid volume specification: '{0}'")]
    Spec(String),
    /// A container path is not absolute.
    #[error(
        "invalid mount config for type \"{0}\": invalid mount path: '{1}' mount path must be absolute"
    )]
    Relative(&'static str, String),
    /// An unknown `-v` mode.
    #[error("invalid mode: {0}")]
    Mode(String),
    /// An unknown or malformed `--mount` field.
    #[error("invalid field {0:?} in --mount: {1}")]
    Field(String, &'static str),
    /// A volume name that is not one (a relative path, say).
    #[error(
        "create {0}: {0:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )]
    Name(String),
}

/// What one `--mount` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFlag {
    /// A volume or bind mount.
    Mount(MountRequest),
    /// A tmpfs: its target and `--tmpfs`-style options.
    Tmpfs(String, String),
}

/// `-v` modes docker accepts that change nothing here (SELinux labels, propagation,
/// macOS consistency).
const INERT_MODES: &[&str] = &[
    "z",
    "Z",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "delegated",
    "cached",
    "consistent",
];

/// One `-v`.
pub fn parse_volume(spec: &str) -> Result<MountRequest, ParseError> {
    let bad = || ParseError::Spec(spec.to_owned());
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, modes) = match parts[..] {
        [target] => (None, target, None),
        [target, modes] if modes_valid(modes) && target.starts_with('/') => {
            (None, target, Some(modes))
        }
        [source, target] => (Some(source), target, None),
        [source, target, modes] => (Some(source), target, Some(modes)),
        _ => return Err(bad()),
    };
    let source = match source {
        None => Source::Anonymous,
        Some("") => return Err(bad()),
        Some(s) if s.starts_with('/') => Source::Bind(s.to_owned()),
        Some(s) if valid_name(s) => Source::Named(s.to_owned()),
        Some(s) => return Err(ParseError::Name(s.to_owned())),
    };
    let kind = match source {
        Source::Bind(_) => "bind",
        _ => "volume",
    };
    let mut request = MountRequest {
        target: clean_target(kind, target)?,
        source,
        read_only: false,
        no_copy: false,
    };
    if let Some(modes) = modes {
        apply_modes(&mut request, modes)?;
    }
    Ok(request)
}

fn modes_valid(modes: &str) -> bool {
    modes
        .split(',')
        .all(|m| matches!(m, "ro" | "rw" | "nocopy") || INERT_MODES.contains(&m))
}

fn apply_modes(request: &mut MountRequest, modes: &str) -> Result<(), ParseError> {
    let (mut ro, mut rw) = (false, false);
    for m in modes.split(',') {
        match m {
            "ro" => ro = true,
            "rw" => rw = true,
            "nocopy" if !matches!(request.source, Source::Bind(_)) => request.no_copy = true,
            m if INERT_MODES.contains(&m) => {}
            _ => return Err(ParseError::Mode(modes.to_owned())),
        }
    }
    if ro && rw {
        return Err(ParseError::Mode(modes.to_owned()));
    }
    request.read_only = ro;
    Ok(())
}

/// A container path made clean (`//`, `.` and trailing `/` removed, `..` resolved
/// lexically); it must be absolute and not `/`.
fn clean_target(kind: &'static str, target: &str) -> Result<String, ParseError> {
    if !target.starts_with('/') {
        return Err(ParseError::Relative(kind, target.to_owned()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c if c.contains('\0') => return Err(ParseError::Spec(target.to_owned())),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(ParseError::Spec(format!(
            "{target}: destination can't be '/'"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// One `--mount`.
pub fn parse_mount(spec: &str) -> Result<MountFlag, ParseError> {
    let (mut kind, mut source, mut target) = ("volume", None, None);
    let (mut read_only, mut no_copy) = (false, false);
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let boolean = || match value {
            None | Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(_) => Err(ParseError::Field(
                field.to_owned(),
                "expected true or false",
            )),
        };
        let text = || value.ok_or(ParseError::Field(field.to_owned(), "expected key=value"));
        match key {
            "type" => {
                kind = match text()? {
                    "volume" => "volume",
                    "bind" => "bind",
                    "tmpfs" => "tmpfs",
                    _ => {
                        return Err(ParseError::Field(
                            field.to_owned(),
                            "type must be volume, bind or tmpfs",
                        ));
                    }
                }
            }
            "source" | "src" => source = Some(text()?),
            "target" | "destination" | "dst" => target = Some(text()?),
            "readonly" | "ro" => read_only = boolean()?,
            "volume-nocopy" => no_copy = boolean()?,
            "tmpfs-size" => size = Some(text()?),
            "tmpfs-mode" => mode = Some(text()?),
            "volume-driver" if text()? == "local" => {}
            "bind-propagation" | "consistency" | "bind-nonrecursive" => {}
            _ => return Err(ParseError::Field(field.to_owned(), "unexpected key")),
        }
    }
    let target = target.ok_or(ParseError::Field(spec.to_owned(), "target is required"))?;
    let target = clean_target(if kind == "bind" { "bind" } else { "volume" }, target)?;
    let source = match (kind, source) {
        ("tmpfs", Some(_)) => {
            return Err(ParseError::Field(spec.to_owned(), "a tmpfs has no source"));
        }
        ("tmpfs", None) => {
            let options: Vec<String> = [
                size.map(|s| format!("size={s}")),
                mode.map(|m| format!("mode={m}")),
            ]
            .into_iter()
            .flatten()
            .chain(read_only.then(|| "ro".to_owned()))
            .collect();
            return Ok(MountFlag::Tmpfs(target, options.join(",")));
        }
        ("bind", None) => {
            return Err(ParseError::Field(
                spec.to_owned(),
                "a bind mount needs a source",
            ));
        }
        ("bind", Some(s)) if s.starts_with('/') => Source::Bind(s.to_owned()),
        ("bind", Some(s)) => return Err(ParseError::Relative("bind", s.to_owned())),
        (_, None) => Source::Anonymous,
        (_, Some(s)) if valid_name(s) => Source::Named(s.to_owned()),
        (_, Some(s)) => return Err(ParseError::Name(s.to_owned())),
    };
    if size.is_some() || mode.is_some() {
        return Err(ParseError::Field(
            spec.to_owned(),
            "tmpfs options need type=tmpfs",
        ));
    }
    Ok(MountFlag::Mount(MountRequest {
        source,
        target,
        read_only,
        no_copy,
    }))
}

/// One `--volumes-from CONTAINER[:ro|rw]`: the container and the forced mode.
pub fn parse_volumes_from(spec: &str) -> Result<(String, Option<bool>), ParseError> {
    match spec.split_once(':') {
        None if !spec.is_empty() => Ok((spec.to_owned(), None)),
        Some((c, "ro")) if !c.is_empty() => Ok((c.to_owned(), Some(true))),
        Some((c, "rw")) if !c.is_empty() => Ok((c.to_owned(), Some(false))),
        Some((_, mode)) => Err(ParseError::Mode(mode.to_owned())),
        None => Err(ParseError::Spec(spec.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(spec: &str) -> MountRequest {
        parse_volume(spec).unwrap()
    }

    #[test]
    fn volume_flags_follow_docker() {
        assert_eq!(v("/data").source, Source::Anonymous);
        assert_eq!(v("/data:ro").source, Source::Anonymous);
        assert!(v("/data:ro").read_only);
        assert_eq!(v("db:/data").source, Source::Named("db".into()));
        let b = v("/srv/x:/data/:ro,z");
        assert_eq!(b.source, Source::Bind("/srv/x".into()));
        assert_eq!(b.target, "/data");
        assert!(b.read_only);
        assert!(v("db:/d:nocopy").no_copy);
        assert_eq!(v("db:/a/./b//c/../d").target, "/a/b/d");
    }

    #[test]
    fn bad_volume_flags_say_why() {
        let err = |s: &str| parse_volume(s).unwrap_err().to_string();
        assert!(
            err("rel/path:/d").contains("invalid characters"),
            "{}",
            err("rel/path:/d")
        );
        assert!(err("db:data").contains("must be absolute"));
        assert!(err("db:/d:bogus").contains("invalid mode: bogus"));
        assert!(err("db:/d:ro,rw").contains("invalid mode"));
        assert!(err("a:/b:ro:x").contains("invalid volume specification"));
        assert!(err(":/d").contains("invalid volume specification"));
        assert!(err("db:/").contains("destination can't be '/'"));
    }

    #[test]
    fn mount_flags_follow_docker() {
        let MountFlag::Mount(m) = parse_mount("type=bind,src=/srv,dst=/d,readonly").unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.source, m.target.as_str(), m.read_only),
            (Source::Bind("/srv".into()), "/d", true)
        );
        let MountFlag::Mount(m) = parse_mount("target=/d,volume-nocopy").unwrap() else {
            panic!()
        };
        assert!(m.no_copy && m.source == Source::Anonymous);
        assert_eq!(
            parse_mount("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap(),
            MountFlag::Tmpfs("/t".into(), "size=64m,mode=1770".into())
        );
        for bad in [
            "type=nfs,dst=/d",
            "dst=/d,colour=blue",
            "type=bind,dst=/d",
            "src=x",
            "type=tmpfs,src=a,dst=/t",
            "type=bind,src=rel,dst=/d",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_from_modes() {
        assert_eq!(parse_volumes_from("c").unwrap(), ("c".into(), None));
        assert_eq!(
            parse_volumes_from("c:ro").unwrap(),
            ("c".into(), Some(true))
        );
        assert!(parse_volumes_from("c:xx").is_err());
    }
}
