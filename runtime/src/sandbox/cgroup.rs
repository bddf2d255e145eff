//! The container's cgroup in process isolation, on either layout: pure cgroup v2 (the
//! `memory`, `cpu` and `pids` controllers enabled on the unified hierarchy mounted at
//! `/sys/fs/cgroup`), or cgroup v1 with one hierarchy per controller
//! (`/sys/fs/cgroup/{memory,cpu,pids}`; a hybrid host's `unified` mount without those
//! controllers is not used for limits). The group is `husk/<id>` in each hierarchy. Owns
//! creating it with the limits, the descriptors a child uses to join it, freezing it
//! (`pause`: v2's `cgroup.freeze`, or v1's `freezer` hierarchy where the host has one), and
//! destroying it (thawing and killing whatever is left inside first).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period husk uses for `--cpus`.
const CPU_PERIOD_US: u64 = 100_000;
/// The `--pids-limit` group inside a container's group.
const WORKLOAD: &str = "workload";

/// Default process limit (docker has none; a fork bomb should not take the host down).
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// Errors from cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither layout has the needed controllers.
    #[error(
        "no usable cgroup hierarchy under {CGROUP_ROOT} (need cgroup v2 with memory, cpu and pids, or v1 memory, cpu and pids)"
    )]
    NoHierarchy,
    /// A cgroup file could not be written or a group made or removed.
    #[error("cgroup {0}")]
    Io(PathBuf, #[source] io::Error),
}

/// Limits to apply (0 = none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Memory in bytes.
    pub memory: u64,
    /// CPUs in 1e-9 units.
    pub nano_cpus: u64,
    /// Processes.
    pub pids: u64,
}

/// Which layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy at /sys/fs/cgroup.
    V2,
    /// A hierarchy per controller.
    V1,
}

/// Finds the layout this host supports.
pub fn detect() -> Result<Layout, CgroupError> {
    let root = Path::new(CGROUP_ROOT);
    if let Ok(c) = fs::read_to_string(root.join("cgroup.controllers")) {
        let has = |name| c.split_whitespace().any(|w| w == name);
        if has("memory") && has("cpu") && has("pids") {
            return Ok(Layout::V2);
        }
    }
    let v1 = ["memory", "cpu", "pids"]
        .iter()
        .all(|c| root.join(c).join("cgroup.procs").is_file());
    match v1 {
        true => Ok(Layout::V1),
        false => Err(CgroupError::NoHierarchy),
    }
}

/// A container's cgroup (in one or several hierarchies).
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| CgroupError::Io(path.to_owned(), e))
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(CgroupError::Io(path.to_owned(), e)),
    }
}

impl Cgroup {
    /// The group's directories for container `id` (whether or not they exist).
    pub fn paths(layout: Layout, id: &str) -> Vec<PathBuf> {
        let root = Path::new(CGROUP_ROOT);
        match layout {
            Layout::V2 => vec![root.join("husk").join(id)],
            Layout::V1 => {
                let mut v: Vec<PathBuf> = ["memory", "cpu", "pids"]
                    .iter()
                    .map(|c| root.join(c).join("husk").join(id))
                    .collect();
                // Optional: without it, `pause` is refused under process isolation.
                if root.join("freezer").join("cgroup.procs").is_file() {
                    v.push(root.join("freezer").join("husk").join(id));
                }
                v
            }
        }
    }

    /// The handle `pause`/`unpause` use.
    pub fn freezer(&self) -> Freezer {
        let dir = match self.layout {
            Layout::V2 => Some(self.dirs[0].clone()),
            Layout::V1 => self.dirs.get(3).cloned(),
        };
        Freezer {
            layout: self.layout,
            dir,
        }
    }

    /// Creates `husk/<id>` with `limits`.
    pub fn create(id: &str, limits: Limits) -> Result<Self, CgroupError> {
        let layout = detect()?;
        let cg = Self {
            layout,
            dirs: Self::paths(layout, id),
        };
        if let Err(e) = cg.setup(limits) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn setup(&self, limits: Limits) -> Result<(), CgroupError> {
        let pids = if limits.pids == 0 {
            DEFAULT_PIDS_MAX
        } else {
            limits.pids
        };
        let quota = limits.nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000;
        match self.layout {
            Layout::V2 => {
                let root = Path::new(CGROUP_ROOT);
                let husk = root.join("husk");
                mkdir(&husk)?;
                for dir in [root, husk.as_path()] {
                    write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
                }
                let dir = &self.dirs[0];
                mkdir(dir)?;
                if limits.memory > 0 {
                    write(&dir.join("memory.max"), &limits.memory.to_string())?;
                    write(&dir.join("memory.swap.max"), "0").ok();
                }
                if quota > 0 {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                write(&dir.join("pids.max"), &pids.to_string())
            }
            Layout::V1 => {
                for dir in &self.dirs {
                    mkdir(dir)?;
                }
                let [mem, cpu, pid] = [&self.dirs[0], &self.dirs[1], &self.dirs[2]];
                if limits.memory > 0 {
                    write(
                        &mem.join("memory.limit_in_bytes"),
                        &limits.memory.to_string(),
                    )?;
                }
                if quota > 0 {
                    write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &quota.max(1000).to_string())?;
                }
                write(&pid.join("pids.max"), &pids.to_string())
            }
        }
    }

    /// Open `cgroup.procs` files: a child writes `0` to each to join (async-signal-safe).
    pub fn procs_files(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| CgroupError::Io(p, e))
            })
            .collect()
    }

    /// `--pids-limit`: a `workload` group below the pids controller's group, holding at most
    /// `pids` tasks, that the agent's children join (so the agent's own threads never count
    /// against the container's limit). Returns its `cgroup.procs`, open for writing.
    pub fn workload_group(&self, pids: u64) -> Result<File, CgroupError> {
        let parent = match self.layout {
            Layout::V2 => {
                write(&self.dirs[0].join("cgroup.subtree_control"), "+pids")?;
                &self.dirs[0]
            }
            Layout::V1 => &self.dirs[2],
        };
        let dir = parent.join(WORKLOAD);
        mkdir(&dir)?;
        write(&dir.join("pids.max"), &pids.to_string())?;
        let procs = dir.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| CgroupError::Io(procs, e))
    }

    /// How many processes of the group the kernel's OOM killer has killed (`oom_kill` of
    /// `memory.events` on v2, of `memory.oom_control` on v1); 0 if unknown.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.layout {
            Layout::V2 => self.dirs[0].join("memory.events"),
            Layout::V1 => self.dirs[0].join("memory.oom_control"),
        };
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The group's directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Adds `pid` to the group.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        for f in self.procs_files()? {
            (&f).write_all(pid.to_string().as_bytes())
                .map_err(|e| CgroupError::Io(self.dirs[0].clone(), e))?;
        }
        Ok(())
    }

    /// Kills what is left inside and removes the group (bounded retries while processes
    /// die). Errors are logged: teardown goes on.
    pub fn destroy(&self) {
        for dir in &self.dirs {
            remove_group(dir);
        }
    }
}

/// Changes the limits of container `id`'s running group (docker's `update`): memory in
/// bytes and CPUs in 1e-9 units, each if given (0: no limit).
pub fn update(id: &str, memory: Option<u64>, nano_cpus: Option<u64>) -> Result<(), CgroupError> {
    let layout = detect()?;
    let dirs = Cgroup::paths(layout, id);
    let quota = nano_cpus.map(|n| match n {
        0 => None,
        n => Some((n.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000)),
    });
    let limit = |n: u64, none: &str| match n {
        0 => none.to_owned(),
        n => n.to_string(),
    };
    match layout {
        Layout::V2 => {
            if let Some(m) = memory {
                write(&dirs[0].join("memory.max"), &limit(m, "max"))?;
                write(&dirs[0].join("memory.swap.max"), "0").ok();
            }
            if let Some(q) = quota {
                let q = q.map_or_else(|| "max".to_owned(), |q| q.to_string());
                write(&dirs[0].join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
            }
        }
        Layout::V1 => {
            if let Some(m) = memory {
                write(&dirs[0].join("memory.limit_in_bytes"), &limit(m, "-1"))?;
            }
            if let Some(q) = quota {
                write(
                    &dirs[1].join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                )?;
                let q = q.map_or_else(|| "-1".to_owned(), |q| q.to_string());
                write(&dirs[1].join("cpu.cfs_quota_us"), &q)?;
            }
        }
    }
    Ok(())
}

/// Removes container `id`'s groups if a dead shim left them (killing what is inside):
/// `rm` calls this so that nothing outlives the container.
pub fn remove_leftovers(id: &str) {
    if let Ok(layout) = detect() {
        for dir in Cgroup::paths(layout, id) {
            remove_group(&dir);
        }
    }
}

/// The processes in group `dir` (none if it cannot be read).
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn remove_group(dir: &Path) {
    if !dir.exists() {
        return;
    }
    // A `--pids-limit` group inside goes first (a group with children cannot be removed).
    let workload = dir.join(WORKLOAD);
    if workload.is_dir() {
        remove_group(&workload);
    }
    // Frozen tasks do not die of SIGKILL until thawed.
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    for _ in 0..200 {
        for pid in procs(dir) {
            // SAFETY: kill takes no pointers; these pids are in the container's group.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    log::warn!("cannot remove cgroup {}", dir.display());
}

/// Freezes and thaws a container's group (docker's `pause`).
#[derive(Debug, Clone)]
pub struct Freezer {
    layout: Layout,
    /// The group with the freezer; `None` on a v1 host without the freezer hierarchy.
    dir: Option<PathBuf>,
}

impl Freezer {
    /// Freezes (`true`) or thaws every process of the group, returning once done.
    pub fn set(&self, frozen: bool) -> Result<(), CgroupError> {
        let Some(dir) = &self.dir else {
            let root = Path::new(CGROUP_ROOT).join("freezer");
            return Err(CgroupError::Io(
                root,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no freezer hierarchy on this host",
                ),
            ));
        };
        let (file, value, state, done) = match (self.layout, frozen) {
            (Layout::V2, true) => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
            (Layout::V2, false) => ("cgroup.freeze", "0", "cgroup.events", "frozen 0"),
            (Layout::V1, true) => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
            (Layout::V1, false) => ("freezer.state", "THAWED", "freezer.state", "THAWED"),
        };
        write(&dir.join(file), value)?;
        // Freezing is asynchronous: wait (bounded) until every task is.
        for _ in 0..500 {
            let now = fs::read_to_string(dir.join(state)).unwrap_or_default();
            if now.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(CgroupError::Io(
            dir.join(state),
            io::Error::new(io::ErrorKind::TimedOut, format!("never became {done:?}")),
        ))
    }
}
