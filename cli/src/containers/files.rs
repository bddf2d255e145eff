//! `husk cp`, `diff`, `export` and `commit`: a container's files (`runtime::files` does
//! the work, in the container, running or not).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use rootfs::reference::Reference;
use runtime::files::{self, CommitOptions, CopyOptions, CopySource, CopyTarget};

use crate::human;

/// `husk cp`.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Keep the source's owners (uid/gid); otherwise copies belong to the copier.
    #[arg(short, long)]
    archive: bool,
    /// Do not print the summary.
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or a local path (`-`: a tar on stdin).
    #[arg(value_name = "SRC")]
    src: String,
    /// CONTAINER:DEST_PATH or a local path (`-`: a tar on stdout).
    #[arg(value_name = "DEST")]
    dest: String,
}

/// One side of `cp`: docker's rule is that a path starting with `/` or `.` is local, and
/// otherwise `NAME:PATH` names a container.
fn split(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with('.') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.is_empty() => (Some(container), path),
        _ => (None, arg),
    }
}

/// `husk cp`.
pub fn cp(a: CpArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let opts = CopyOptions { archive: a.archive };
    let bytes = match (split(&a.src), split(&a.dest)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
        ((Some(container), src), (None, dest)) => {
            let (target, shown) = match dest {
                "-" => (None, None),
                _ => (Some(PathBuf::from(dest)), Some(dest.to_owned())),
            };
            let mut stdout = std::io::stdout().lock();
            let bytes = match &target {
                Some(path) => {
                    files::copy_from(root, container, src, CopyTarget::Local(path), opts)?
                }
                None => {
                    files::copy_from(root, container, src, CopyTarget::Stream(&mut stdout), opts)?
                }
            };
            stdout.flush()?;
            shown.map(|s| (bytes, s))
        }
        ((None, src), (Some(container), dest)) => {
            let bytes = match src {
                "-" => {
                    let mut stdin = std::io::stdin().lock();
                    files::copy_to(root, container, CopySource::Stream(&mut stdin), dest, opts)?
                }
                _ => files::copy_to(
                    root,
                    container,
                    CopySource::Local(Path::new(src)),
                    dest,
                    opts,
                )?,
            };
            Some((bytes, format!("{container}:{dest}")))
        }
    };
    if let (Some((bytes, to)), false) = (bytes, a.quiet) {
        eprintln!("Successfully copied {} to {to}", human::size(bytes));
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Container (name, ID or ID prefix).
    container: String,
}

/// `husk diff`: `A`, `C` or `D` and the path, one per line.
pub fn diff(a: DiffArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let changes = files::changes(root, &a.container)?;
    let mut out = std::io::stdout().lock();
    for (kind, path) in changes {
        writeln!(out, "{kind} {path}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Container (name, ID or ID prefix).
    container: String,
}

/// `husk export`: the container's filesystem as a tar; a file is written whole or not at all.
pub fn export(a: ExportArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let Some(output) = a.output else {
        if std::io::stdout().is_terminal() {
            bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        let mut stdout = std::io::stdout().lock();
        files::export(root, &a.container, &mut stdout)?;
        stdout.flush()?;
        return Ok(ExitCode::SUCCESS);
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    files::export(root, &a.container, tmp.as_file_mut())?;
    tmp.as_file_mut().sync_all()?;
    tmp.persist(&output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `husk commit`.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author of the image ("Name <email>").
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, ...).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Accepted for docker compatibility: husk reads a running container's changes from
    /// inside it, without pausing it.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pause: bool,
    /// Container (name, ID or ID prefix).
    container: String,
    /// The new image's name.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// `husk commit`: prints the new image's ID.
pub fn commit(a: CommitArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let _ = a.pause;
    let reference = a.reference.as_deref().map(Reference::parse).transpose()?;
    let opts = CommitOptions {
        reference,
        message: a.message,
        author: a.author,
        changes: a.changes,
    };
    let record = files::commit(root, &a.container, &opts)?;
    let store = rootfs::store::Store::open(root)?;
    crate::images::build_disks(root, &store, &record)?;
    println!("{}", record.id);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments_split_like_docker() {
        assert_eq!(split("c1:/etc"), (Some("c1"), "/etc"));
        assert_eq!(split("/tmp/a:b"), (None, "/tmp/a:b"));
        assert_eq!(split("./c1:x"), (None, "./c1:x"));
        assert_eq!(split("-"), (None, "-"));
        assert_eq!(split("file"), (None, "file"));
        assert_eq!(split(":x"), (None, ":x"));
    }
}
