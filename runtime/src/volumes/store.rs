//! The volume store: `<root>/volumes/<name>/_data` holds a volume's content and
//! `<root>/volumes/<name>/volume.json` its record (written atomically after the data
//! directory exists, so a half-made volume has no record and is not listed; `volumes/`
//! is root's alone). One lock,
//! `<root>/volumes/.lock`, orders creation and removal against containers taking volumes
//! (callers hold it while they check who uses a volume). Removal renames the directory
//! away first, so a volume is either whole or gone.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::VolumeError;

const RECORD: &str = "volume.json";
const DATA: &str = "_data";
const LOCK: &str = ".lock";

/// docker's label on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// A volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name (a random 64-hex-digit one for anonymous volumes).
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// `--label`s.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, image `VOLUME`).
    #[serde(default)]
    pub anonymous: bool,
}

/// The volumes of one state directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

/// An exclusive flock on the store, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let what = what.into();
    move |e| VolumeError::Io(what, e)
}

/// Whether `name` is a volume name (docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() >= 2
        && name.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl VolumeStore {
    /// The store under `root`, as it is (for reading paths).
    pub fn at(root: &Path) -> VolumeStore {
        VolumeStore {
            dir: root.join("volumes"),
        }
    }

    /// The store under `root` (its directory made if missing).
    pub fn open(root: &Path) -> Result<VolumeStore, VolumeError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join("volumes");
        // Root's alone (docker's 0700 too): what containers put in volumes (set-id
        // programs, say) is not for the host's other users.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(VolumeStore { dir })
    }

    /// Takes the store's lock.
    pub fn lock(&self) -> Result<StoreLock, VolumeError> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(StoreLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(VolumeError::Io(
                    format!("cannot lock {}", path.display()),
                    e,
                ));
            }
        }
    }

    /// Where volume `name`'s content lives.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DATA)
    }

    /// The volume named `name`, made if missing (`None`: a new anonymous volume); says
    /// whether it was made now. Call with the lock held.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Volume, bool), VolumeError> {
        let (name, anonymous) = match name {
            Some(n) if !valid_name(n) => return Err(super::ParseError::Name(n.to_owned()).into()),
            Some(n) => (n.to_owned(), false),
            None => (random_name()?, true),
        };
        match self.get(&name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = self.dir.join(&name);
        let data = dir.join(DATA);
        // A directory without a record is a creation that died half-way: its data, if
        // any, is kept and the record written now.
        fs::create_dir_all(&data).map_err(io_err(format!("cannot create {}", data.display())))?;
        let volume = Volume {
            name,
            created: crate::container::now(),
            labels,
            anonymous,
        };
        let json = serde_json::to_vec_pretty(&volume)
            .map_err(|e| VolumeError::Corrupt(dir.join(RECORD), e))?;
        write_atomic(&dir.join(RECORD), &json)?;
        Ok((volume, true))
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let path = self.dir.join(name).join(RECORD);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_owned()));
            }
            Err(e) => {
                return Err(VolumeError::Io(
                    format!("cannot read {}", path.display()),
                    e,
                ));
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| VolumeError::Corrupt(path, e))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(io_err(format!("cannot read {}", self.dir.display())))?;
        let mut all: Vec<Volume> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| valid_name(n))
            .filter_map(|n| self.get(&n).ok())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Removes volume `name` and its content. Call with the lock held, after checking
    /// that no container uses it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.dir.join(name);
        let trash = self
            .dir
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(&dir, &trash).map_err(io_err(format!("cannot remove {}", dir.display())))?;
        fs::remove_dir_all(&trash).map_err(io_err(format!("cannot remove {}", trash.display())))
    }

    /// Bytes the volume's files take on disk.
    pub fn size(&self, name: &str) -> u64 {
        tree_size(&self.data_dir(name))
    }

    /// docker's `volume inspect` object.
    pub fn inspect(&self, v: &Volume) -> serde_json::Value {
        let mut labels = v.labels.clone();
        if v.anonymous {
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
        }
        serde_json::json!({
            "CreatedAt": v.created,
            "Driver": "local",
            "Labels": labels,
            "Mountpoint": self.data_dir(&v.name).display().to_string(),
            "Name": v.name,
            "Options": null,
            "Scope": "local",
        })
    }
}

/// Allocated bytes of the files under `dir` (symlinks not followed); unreadable parts
/// count as 0.
fn tree_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.blocks() * 512),
        })
        .sum()
}

fn random_name() -> Result<String, VolumeError> {
    let mut buf = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("cannot read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VolumeError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let what = format!("cannot write {}", path.display());
    let mut f = File::create(&tmp).map_err(io_err(&what))?;
    f.write_all(bytes).map_err(io_err(&what))?;
    f.sync_data().map_err(io_err(&what))?;
    fs::rename(&tmp, path).map_err(io_err(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker() {
        for ok in ["db", "my-vol_1.x", "A0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-x", ".x", "a/b", "../x", "a b", "x:y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_get_list_remove() {
        let root = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(root.path()).unwrap();
        let (v, made) = s.create(Some("data"), BTreeMap::new()).unwrap();
        assert!(made && !v.anonymous);
        let (again, made) = s.create(Some("data"), BTreeMap::new()).unwrap();
        assert!(!made);
        assert_eq!(again, v);
        let (anon, _) = s.create(None, BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        assert!(s.data_dir("data").is_dir());
        let names: Vec<_> = s.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));
        s.remove("data").unwrap();
        assert!(matches!(s.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(s.remove("data"), Err(VolumeError::NotFound(_))));
        let e = s.create(Some("a/b"), BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("invalid characters"), "{e}");
    }
}
