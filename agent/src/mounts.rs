//! The early mounts PID 1 makes before anything else can work: proc, sysfs, devtmpfs, devpts,
//! /dev/shm, /run, /tmp and the cgroup2 hierarchy. Owns the table of what goes where, creating
//! the mount points, and what counts as success ("already mounted" does; a missing optional
//! filesystem is skipped). Before any mount, every mount of the namespace is made private, so
//! nothing the agent mounts propagates out of it (in process mode the namespace is a copy of
//! the host's), and an agent that finds itself in the host's mount namespace refuses.

use std::ffi::{CStr, OsStr};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, c_ulong};

/// Errors from the early mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// PID 1 of a new PID namespace that shares the host's mount namespace.
    #[error(
        "the agent shares the host's mount namespace; refusing to mount over the host \
         (start it with a new mount namespace)"
    )]
    HostNamespace,
    /// The namespace's mounts could not be made private.
    #[error("cannot make the mount namespace private")]
    Private(#[source] io::Error),
    /// The mount point could not be created.
    #[error("cannot create mount point {0}")]
    Mkdir(String, #[source] io::Error),
    /// mount(2) failed.
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        fstype: String,
        target: String,
        #[source]
        source: io::Error,
    },
}

/// One filesystem to mount.
#[derive(Debug)]
pub struct Spec {
    fstype: &'static CStr,
    target: &'static CStr,
    flags: c_ulong,
    data: &'static CStr,
    /// May be skipped if the kernel lacks the filesystem (a minimal guest kernel may have no
    /// cgroups or no devpts); required ones always fail loudly.
    optional: bool,
}

const SECURE: c_ulong = MS_NOSUID | MS_NODEV | MS_NOEXEC;

/// The early mounts, in order: proc first (the others need /proc/filesystems), devtmpfs before
/// what lives under /dev, sysfs before cgroup2.
pub const EARLY: &[Spec] = &[
    spec(c"proc", c"/proc", SECURE, c"", false),
    spec(c"sysfs", c"/sys", SECURE, c"", false),
    spec(c"devtmpfs", c"/dev", MS_NOSUID, c"mode=0755", false),
    spec(
        c"devpts",
        c"/dev/pts",
        MS_NOSUID | MS_NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
        true,
    ),
    spec(
        c"tmpfs",
        c"/dev/shm",
        MS_NOSUID | MS_NODEV,
        c"mode=1777",
        false,
    ),
    spec(c"tmpfs", c"/run", MS_NOSUID | MS_NODEV, c"mode=0755", false),
    spec(c"tmpfs", c"/tmp", MS_NOSUID | MS_NODEV, c"mode=1777", false),
    spec(c"cgroup2", c"/sys/fs/cgroup", SECURE, c"", true),
];

const fn spec(
    fstype: &'static CStr,
    target: &'static CStr,
    flags: c_ulong,
    data: &'static CStr,
    optional: bool,
) -> Spec {
    Spec {
        fstype,
        target,
        flags,
        data,
        optional,
    }
}

impl Spec {
    fn fstype(&self) -> String {
        self.fstype.to_string_lossy().into_owned()
    }

    fn target(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.target.to_bytes()))
    }
}

/// What happened to one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new mount was made.
    Mounted,
    /// The same filesystem was already there (mount(2) said EBUSY).
    AlreadyMounted,
    /// Optional, and the kernel does not support the filesystem type.
    Unsupported,
}

/// One line of the mount report.
#[derive(Debug)]
pub struct Report {
    spec: &'static Spec,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.outcome {
            Outcome::Mounted => "mounted",
            Outcome::AlreadyMounted => "already mounted",
            Outcome::Unsupported => "skipped: not supported by this kernel",
        };
        write!(
            f,
            "mount {} on {}: {what}",
            self.spec.fstype(),
            self.spec.target().display()
        )
    }
}

/// Makes the namespace private, then every mount in [`EARLY`], stopping at the first failure.
pub fn mount_early() -> Result<Vec<Report>, MountError> {
    make_private()?;
    let mut reports = Vec::with_capacity(EARLY.len());
    let mut supported: Option<String> = None;
    for spec in EARLY {
        if spec.optional && !is_supported(supported.as_deref(), spec) {
            reports.push(Report {
                spec,
                outcome: Outcome::Unsupported,
            });
            continue;
        }
        let outcome = mount_one(spec)?;
        if spec.fstype == c"proc" {
            supported = std::fs::read_to_string("/proc/filesystems").ok();
        }
        reports.push(Report { spec, outcome });
    }
    Ok(reports)
}

/// Refuses the host's mount namespace, then marks every mount private (recursively).
fn make_private() -> Result<(), MountError> {
    if in_host_mount_namespace() {
        return Err(MountError::HostNamespace);
    }
    // SAFETY: the target is a NUL-terminated static string; the other pointers are null,
    // which mount(2) accepts for a propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(MountError::Private(io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether this process is in the mount namespace of the host's init. Only decidable while
/// `/proc` is the host's (it shows this process under a pid other than 1); in a VM nothing is
/// mounted yet, and a namespace's own /proc shows no host init to compare with.
fn in_host_mount_namespace() -> bool {
    let proc_is_ours = std::fs::read_link("/proc/self").is_ok_and(|p| p == Path::new("1"));
    let me = std::fs::read_link("/proc/self/ns/mnt");
    let init = std::fs::read_link("/proc/1/ns/mnt");
    match (me, init) {
        (Ok(me), Ok(init)) => !proc_is_ours && me == init,
        _ => false,
    }
}

/// Whether `/proc/filesystems` lists the spec's type; unknown (unreadable) means "try it".
fn is_supported(filesystems: Option<&str>, spec: &Spec) -> bool {
    let Some(list) = filesystems else { return true };
    let wanted = spec.fstype.to_bytes();
    list.lines()
        .any(|line| line.split_whitespace().last().map(str::as_bytes) == Some(wanted))
}

fn mount_one(spec: &'static Spec) -> Result<Outcome, MountError> {
    let target = spec.target();
    std::fs::create_dir_all(target)
        .map_err(|e| MountError::Mkdir(target.display().to_string(), e))?;
    let data = if spec.data.is_empty() {
        std::ptr::null()
    } else {
        spec.data.as_ptr()
    };
    // SAFETY: every pointer comes from a NUL-terminated `&'static CStr` (or is null for no
    // data), all of which outlive the call; mount(2) only reads them.
    let rc = unsafe {
        libc::mount(
            spec.fstype.as_ptr(),
            spec.target.as_ptr(),
            spec.fstype.as_ptr(),
            spec.flags,
            data.cast(),
        )
    };
    if rc == 0 {
        return Ok(Outcome::Mounted);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EBUSY) => Ok(Outcome::AlreadyMounted),
        source => Err(MountError::Mount {
            fstype: spec.fstype(),
            target: target.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\tproc\nnodev\ttmpfs\n\text4\nnodev\tcgroup2\n";

    #[test]
    fn table_order_respects_dependencies() {
        let pos = |t: &CStr| EARLY.iter().position(|s| s.target == t).unwrap();
        assert_eq!(pos(c"/proc"), 0);
        assert!(pos(c"/dev") < pos(c"/dev/pts") && pos(c"/dev") < pos(c"/dev/shm"));
        assert!(pos(c"/sys") < pos(c"/sys/fs/cgroup"));
        for s in EARLY {
            assert!(s.target().is_absolute());
        }
    }

    #[test]
    fn supported_reads_proc_filesystems() {
        let devpts = EARLY.iter().find(|s| s.fstype == c"devpts").unwrap();
        let cgroup = EARLY.iter().find(|s| s.fstype == c"cgroup2").unwrap();
        assert!(!is_supported(Some(FILESYSTEMS), devpts));
        assert!(is_supported(Some(FILESYSTEMS), cgroup));
        assert!(is_supported(None, devpts), "unreadable list means try");
    }

    #[test]
    fn report_lines_name_type_target_and_outcome() {
        let r = Report {
            spec: &EARLY[0],
            outcome: Outcome::Mounted,
        };
        assert_eq!(r.to_string(), "mount proc on /proc: mounted");
        let r = Report {
            spec: &EARLY[1],
            outcome: Outcome::AlreadyMounted,
        };
        assert_eq!(r.to_string(), "mount sysfs on /sys: already mounted");
    }
}
