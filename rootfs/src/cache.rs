//! husk's on-disk cache: where it lives (`cache_dir`) and how entries are published into it
//! (`write_atomic`: a temporary file in the same directory, renamed into place only once it is
//! complete, so a reader never sees a half-written entry).

use std::ffi::OsString;
use std::fs::{self, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Errors from locating the cache or writing an entry into it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// None of `HUSK_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME` is usable.
    #[error("no cache directory: set HUSK_CACHE_DIR (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,
    /// Creating the directory that holds the entry failed.
    #[error("cannot create cache directory {0}")]
    CreateDir(PathBuf, #[source] io::Error),
    /// Creating, writing or syncing the temporary file failed.
    #[error("cannot write cache entry {0}")]
    Write(PathBuf, #[source] io::Error),
    /// Renaming the finished temporary file into place failed.
    #[error("cannot publish cache entry {0}")]
    Publish(PathBuf, #[source] io::Error),
}

/// The root of husk's cache: `$HUSK_CACHE_DIR`, else `$XDG_CACHE_HOME/husk`, else
/// `$HOME/.cache/husk`. Empty variables count as unset, and a relative `XDG_CACHE_HOME` is
/// ignored as the XDG base-directory spec requires. The directory is not created here.
pub fn cache_dir() -> Result<PathBuf, CacheError> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`cache_dir`] over an arbitrary environment, for tests.
fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, CacheError> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HUSK_CACHE_DIR") {
        return Ok(dir);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("husk"));
    }
    var("HOME")
        .map(|home| home.join(".cache").join("husk"))
        .ok_or(CacheError::NoCacheDir)
}

/// Creates `path` atomically: `fill` writes the contents into a temporary file next to it,
/// which is synced, made world-readable (0644) and renamed over `path`. If `fill` or any step
/// fails, the temporary file is removed and `path` is untouched. `fill`'s errors are reported
/// as [`CacheError::Write`].
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&fs::File>) -> io::Result<()>,
) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| CacheError::CreateDir(dir.to_owned(), e))?;
    let write_err = |e| CacheError::Write(path.to_owned(), e);
    // Dropping `tmp` on any early return deletes the temporary file.
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    {
        let mut out = BufWriter::new(tmp.as_file());
        fill(&mut out).map_err(write_err)?;
        out.flush().map_err(write_err)?;
    }
    let file = tmp.as_file();
    file.set_permissions(Permissions::from_mode(0o644))
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    tmp.persist(path)
        .map_err(|e| CacheError::Publish(path.to_owned(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dir_for(vars: &[(&str, &str)]) -> Result<PathBuf, CacheError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        cache_dir_from(|name| map.get(name).cloned())
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [
            ("HUSK_CACHE_DIR", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(dir_for(&all).unwrap(), Path::new("/h"));
        assert_eq!(dir_for(&all[1..]).unwrap(), Path::new("/x/husk"));
        assert_eq!(
            dir_for(&all[2..]).unwrap(),
            Path::new("/home/u/.cache/husk")
        );
        assert!(matches!(dir_for(&[]), Err(CacheError::NoCacheDir)));
    }

    #[test]
    fn cache_dir_ignores_empty_and_relative_xdg() {
        let vars = [
            ("HUSK_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "rel"),
            ("HOME", "/r"),
        ];
        assert_eq!(dir_for(&vars).unwrap(), Path::new("/r/.cache/husk"));
    }

    #[test]
    fn write_atomic_publishes_complete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/entry");
        write_atomic(&path, |w| w.write_all(b"hello")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn failed_fill_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        let err = write_atomic(&path, |w| {
            w.write_all(&[0xaa; 100_000])?;
            Err(io::Error::other("injected failure"))
        })
        .unwrap_err();
        assert!(matches!(err, CacheError::Write(..)));
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file removed"
        );
    }

    #[test]
    fn failed_fill_keeps_previous_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        fs::write(&path, b"old").unwrap();
        let res = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("injected failure"))
        });
        assert!(res.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
