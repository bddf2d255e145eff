//! `husk bench run`: containers end to end, husk against `crun` (Debian's OCI runtime, the
//! baseline only) side by side in the same run, alternating so that machine noise hits both:
//!
//! 1. `husk run --rm husk/busybox true` (process isolation) against `crun run` of the same
//!    image's root filesystem: wall time from spawn to exit, median and spread, plus husk's
//!    phase breakdown from the marks its processes leave (`crate::timing`);
//! 2. host memory per idle `sleep` container: PSS of every process of the container (husk:
//!    shim, agent, workload; crun: the workload, crun itself exits) and the drop in
//!    `MemAvailable` per container, which also counts kernel memory (mounts, loop devices,
//!    namespaces, page tables);
//! 3. how many idle containers this host holds before a start fails (up to a cap);
//! 4. the Engine API (`api.rs`): the same start through `husk daemon`, list and inspect
//!    latency with 100 containers, the daemon's memory;
//! 5. vm isolation (`vm.rs`): `husk run --rm --isolation vm husk/busybox true` cold
//!    (`--cold`) and warm (restored from the template) beside process runs, with the
//!    phases, and PSS per idle warm vm container.
//!
//! Everything lives in a private state directory under `work_dir`, removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, Stats, stats};
use crate::container::Store as Containers;
use crate::{procfs, timing};

mod api;
mod vm;

/// The image every measurement uses (imported from the default-images cache).
const IMAGE: &str = "husk/busybox";

/// What to measure.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `husk` binary to measure.
    pub husk: PathBuf,
    /// `crun`, the baseline (None: husk alone).
    pub crun: Option<PathBuf>,
    /// Measured runs of each side.
    pub runs: usize,
    /// Idle containers for the memory measurement (0 skips it).
    pub idle: usize,
    /// Cap of the density ramp (0 skips it).
    pub max_containers: usize,
    /// vm-isolation runs, each cold, warm and a process run beside (0 skips them).
    pub vm_runs: usize,
    /// Idle warm vm containers for the memory measurement (0 skips it).
    pub vm_idle: usize,
    /// Starts through the Engine API beside CLI and crun starts, then list/inspect
    /// latency with 100 containers (0 skips them).
    pub api_runs: usize,
    /// Scratch directory (a private husk root, the crun bundle); removed at the end.
    pub work_dir: PathBuf,
}

/// The phases of one `husk run`, in order: (name, start mark, end mark). `spawn` and
/// `exit` are the benchmark's own clock readings around the process.
const RUN_PHASES: &[(&str, &str, &str)] = &[
    ("cli (exec, parse, image lookup)", "spawn", "create.start"),
    (
        "image prep (layer disks, scratch)",
        "create.start",
        "create.done",
    ),
    ("shim start", "create.done", "shim.start"),
    (
        "sandbox setup (loops, cgroup, ns)",
        "shim.start",
        "sandbox.created",
    ),
    ("agent listening", "sandbox.created", "agent.connected"),
    ("rootfs assembled (Setup)", "agent.connected", "agent.ready"),
    (
        "workload exec (start to exit)",
        "agent.ready",
        "workload.exited",
    ),
    (
        "sandbox teardown (agent, mounts)",
        "workload.exited",
        "sandbox.down",
    ),
    ("removal (--rm) to husk's exit", "sandbox.down", "exit"),
];

/// One process's marks plus the benchmark's `spawn` and `exit`.
type Marks = Vec<(String, u64)>;

/// Runs the container benchmark; returns the report.
pub fn run(o: &RunOptions) -> Result<String, Error> {
    let bench = Bench::prepare(o)?;
    let result = bench.measure_all();
    bench.cleanup();
    result
}

struct Bench<'a> {
    o: &'a RunOptions,
    root: PathBuf,
    bundle: Option<PathBuf>,
    crun_state: PathBuf,
    /// This host mounts cgroup v1 and v2 side by side ("hybrid"), which crun refuses: the
    /// benchmark hid the v2 mount in a private mount namespace of its own.
    hid_unified: bool,
}

impl<'a> Bench<'a> {
    fn prepare(o: &'a RunOptions) -> Result<Self, Error> {
        let scratch = |e| Error::Scratch(o.work_dir.clone(), e);
        std::fs::create_dir_all(&o.work_dir).map_err(scratch)?;
        let root = o.work_dir.join("root");
        let store = rootfs::store::Store::open(&root)
            .map_err(|e| Error::Failed("the benchmark's image store".into(), e.to_string()))?;
        let image = rootfs::defaults::DefaultImage::Busybox
            .import(&store)
            .map_err(|e| Error::Failed(format!("importing {IMAGE}"), e.to_string()))?;
        let disks = rootfs::layer::ensure_layer_disks(&root, &store, &image)
            .map_err(|e| Error::Failed(format!("{IMAGE}'s layer disks"), e.to_string()))?;
        let mut bench = Self {
            o,
            root,
            bundle: None,
            crun_state: o.work_dir.join("crun-state"),
            hid_unified: o.crun.is_some() && hide_hybrid_unified()?,
        };
        if let Some(crun) = &o.crun {
            let paths: Vec<PathBuf> = disks.into_iter().map(|d| d.path).collect();
            bench.bundle = Some(make_bundle(crun, &o.work_dir, &paths)?);
        }
        Ok(bench)
    }

    fn measure_all(&self) -> Result<String, Error> {
        let mut out = Vec::new();
        out.push(format!(
            "husk bench run: {IMAGE}, {} runs each, alternating husk and crun",
            self.o.runs
        ));
        self.end_to_end(&mut out)?;
        if self.o.api_runs > 0 {
            self.api(&mut out)?;
        }
        if self.o.idle > 0 {
            self.idle_memory(&mut out)?;
        }
        if self.o.max_containers > 0 {
            self.density(&mut out)?;
        }
        if self.o.vm_runs > 0 {
            self.vm_phases(&mut out)?;
        }
        if self.o.vm_idle > 0 {
            self.vm_idle_memory(&mut out)?;
        }
        Ok(out.join("\n"))
    }

    fn husk(&self) -> Command {
        let mut c = Command::new(&self.o.husk);
        c.arg("--root").arg(&self.root);
        // Templates of its own: the first two vm runs make them, in the measured run.
        c.env(
            crate::sandbox::template::DIR_ENV,
            self.o.work_dir.join("templates"),
        );
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    fn crun(&self) -> Option<Command> {
        let mut c = Command::new(self.o.crun.as_ref()?);
        c.arg("--root").arg(&self.crun_state);

        c.stdin(Stdio::null()).stdout(Stdio::null());
        Some(c)
    }

    /// One `husk run --rm --network none --isolation ISO [EXTRA] ... true` with marks; its
    /// marks (with `spawn` and `exit`). No network: crun's containers have loopback only,
    /// and the benchmark must not make a bridge in the host's namespace.
    fn husk_once(&self, isolation: &str, extra: &[&str], n: usize) -> Result<Marks, Error> {
        let file = self.o.work_dir.join(format!("marks-{isolation}-{n}"));
        let _ = std::fs::remove_file(&file);
        let mut c = self.husk();
        c.env(timing::ENV, &file)
            .args(["run", "--rm", "--network", "none", "--isolation", isolation])
            .args(extra)
            .args([IMAGE, "true"]);
        let (spawn, exit) = timed("husk run", c)?;
        let mut marks = vec![("spawn".to_owned(), spawn)];
        marks.extend(timing::read(&file));
        marks.push(("exit".to_owned(), exit));
        Ok(marks)
    }

    fn crun_once(&self, n: usize) -> Result<Option<u64>, Error> {
        let (Some(mut c), Some(bundle)) = (self.crun(), &self.bundle) else {
            return Ok(None);
        };
        c.arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(format!("husk-bench-{n}"));
        let (spawn, exit) = timed("crun run", c)?;
        Ok(Some(exit - spawn))
    }

    fn end_to_end(&self, out: &mut Vec<String>) -> Result<(), Error> {
        set_bundle_args(self.bundle.as_deref(), &["true"])?;
        // One warm-up each (page cache, first cgroup creation), not counted.
        self.husk_once("process", &[], usize::MAX)?;
        self.crun_once(usize::MAX)?;
        let (mut husk, mut crun, mut all_marks) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..self.o.runs {
            log::info!("end to end: run {}/{}", n + 1, self.o.runs);
            let marks = self.husk_once("process", &[], n)?;
            husk.push(ms(span(&marks, "spawn", "exit").unwrap_or(0)));
            all_marks.push(marks);
            if let Some(ns) = self.crun_once(n)? {
                crun.push(ms(ns));
            }
        }
        out.push(String::new());
        out.push(row("husk run --rm (process) true", stats(&husk), "ms"));
        if !crun.is_empty() {
            out.push(row("crun run true (same rootfs)", stats(&crun), "ms"));
            if self.hid_unified {
                out.push(
                    "  (this host mounts cgroup v1 and v2 side by side, which crun refuses: the \
                     benchmark hid /sys/fs/cgroup/unified in its own mount namespace, so both \
                     husk and crun made cgroup v1 groups)"
                        .into(),
                );
            }
            if let (Some(h), Some(c)) = (stats(&husk), stats(&crun)) {
                out.push(format!(
                    "ratio husk/crun (medians): {:.2}x",
                    h.median / c.median
                ));
            }
        }
        out.push("husk phases (median [min-max]):".into());
        out.extend(phase_rows(&all_marks, RUN_PHASES));
        Ok(())
    }

    fn idle_memory(&self, out: &mut Vec<String>) -> Result<(), Error> {
        let n = self.o.idle;
        out.push(String::new());
        let ids = (0..n)
            .map(|i| self.husk_detached(&format!("idle-{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        settle();
        let pss: Vec<f64> = ids
            .iter()
            .map(|id| kib_to_mib(self.husk_container_pss(id)))
            .collect();
        out.push(row(
            &format!("husk idle container PSS (n={n})"),
            stats(&pss),
            "MiB",
        ));
        self.remove_all(&ids);
        if let Some(crun_pss) = self.crun_idle(n)? {
            out.push(row(
                &format!("crun idle container PSS (n={n})"),
                stats(&crun_pss),
                "MiB",
            ));
        }
        out.push(
            "  (PSS of the container's processes: husk's shim, agent and workload; crun's \
             workload alone, crun itself exits. Kernel memory (mounts, loop devices, page \
             tables) is in the density figure below.)"
                .into(),
        );
        Ok(())
    }

    fn crun_idle(&self, n: usize) -> Result<Option<Vec<f64>>, Error> {
        if self.o.crun.is_none() {
            return Ok(None);
        }
        set_bundle_args(self.bundle.as_deref(), &["sleep", "3600"])?;
        let mut names = Vec::new();
        let mut result = Ok(());
        for i in 0..n {
            let name = format!("husk-bench-idle-{i}");
            let Some(mut c) = self.crun() else { break };
            if let Some(b) = &self.bundle {
                c.arg("run").arg("-d").arg("--bundle").arg(b).arg(&name);
            }
            // The container inherits crun's stdio: nothing may be a pipe we wait on.
            c.stderr(Stdio::null());
            match c.status() {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    result = Err(Error::Failed("crun run -d".into(), s.to_string()));
                    break;
                }
                Err(e) => {
                    result = Err(Error::Spawn("crun run -d".into(), e));
                    break;
                }
            }
            names.push(name);
        }
        settle();
        let pss = names
            .iter()
            .filter_map(|name| self.crun_pid(name))
            .map(|pid| kib_to_mib(tree_pss_kib(pid)))
            .collect();
        for name in &names {
            if let Some(mut c) = self.crun() {
                c.args(["delete", "-f", name.as_str()])
                    .stderr(Stdio::null());
                let _ = c.status();
            }
        }
        result?;
        Ok(Some(pss))
    }

    fn crun_pid(&self, name: &str) -> Option<i32> {
        let mut c = self.crun()?;
        c.args(["state", name]).stdout(Stdio::piped());
        let o = c.output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        i32::try_from(v.get("pid")?.as_i64()?).ok()
    }

    /// `husk run -d --isolation process --name NAME husk/busybox sleep 3600`; its ID.
    fn husk_detached(&self, name: &str) -> Result<String, Error> {
        self.husk_detached_in("process", name)
    }

    /// `husk run -d --network none --isolation ISO --name NAME husk/busybox sleep 3600`;
    /// its ID.
    fn husk_detached_in(&self, isolation: &str, name: &str) -> Result<String, Error> {
        let mut c = self.husk();
        c.args(["run", "-d", "--network", "none", "--isolation", isolation])
            .args(["--name", name])
            .args([IMAGE, "sleep", "3600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let o = c
            .output()
            .map_err(|e| Error::Spawn("husk run -d".into(), e))?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            return Err(Error::Failed(
                "husk run -d".into(),
                err.lines().next().unwrap_or("").to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    fn husk_container_pss(&self, id: &str) -> u64 {
        Containers::open(&self.root)
            .and_then(|s| s.state(id))
            .map(|s| tree_pss_kib(s.shim_pid))
            .unwrap_or(0)
    }

    fn remove_all(&self, ids: &[String]) {
        for chunk in ids.chunks(50) {
            let mut c = self.husk();
            c.args(["rm", "-f"]).args(chunk).stderr(Stdio::null());
            let _ = c.status();
        }
    }

    fn density(&self, out: &mut Vec<String>) -> Result<(), Error> {
        let cap = self.o.max_containers;
        let before = mem_available_kib();
        let started = Instant::now();
        let mut ids = Vec::new();
        let mut failure = None;
        for i in 0..cap {
            if i % 50 == 0 {
                log::info!("density: {i} idle containers running");
            }
            match self.husk_detached(&format!("dense-{i}")) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let took = started.elapsed();
        let after = mem_available_kib();
        out.push(String::new());
        out.push(match &failure {
            Some(e) => format!(
                "density: {} idle husk containers ran; the next failed: {e}",
                ids.len()
            ),
            None => format!(
                "density: all {} idle husk containers ran (the cap; no failure), {:.1} s to start",
                ids.len(),
                took.as_secs_f64()
            ),
        });
        if !ids.is_empty() {
            // Signed: page cache coming and going makes small counts noisy.
            let dropped = kib_to_mib(before) - kib_to_mib(after);
            out.push(format!(
                "density: MemAvailable dropped {dropped:.0} MiB ({:.2} MiB per container, \
                 kernel memory included)",
                dropped / ids.len() as f64
            ));
        }
        self.remove_all(&ids);
        Ok(())
    }

    fn cleanup(&self) {
        if let Ok(ids) = Containers::open(&self.root).and_then(|s| s.ids()) {
            self.remove_all(&ids);
        }
        let _ = std::fs::remove_dir_all(&self.o.work_dir);
    }
}

/// On a hybrid cgroup host (v1 controllers plus a v2 mount at `/sys/fs/cgroup/unified`,
/// which crun refuses), moves this thread into a private mount namespace without that
/// mount, once, before anything is measured; the processes it starts (crun and husk alike)
/// inherit it. Returns whether it did.
pub(super) fn hide_hybrid_unified() -> Result<bool, Error> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let v1 =
        crate::sandbox::cgroup::detect().is_ok_and(|l| l == crate::sandbox::cgroup::Layout::V1);
    if !v1 || !unified.is_dir() {
        return Ok(false);
    }
    let fail = |what: &str| {
        Error::Failed(
            format!("hiding the hybrid cgroup v2 mount from crun ({what})"),
            std::io::Error::last_os_error().to_string(),
        )
    };
    // SAFETY: unshare takes only flags; only this thread's (and its future children's)
    // mount namespace changes.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(fail("unshare"));
    }
    if !crate::sandbox::process::make_mounts_private() {
        return Err(fail("make / private"));
    }
    // SAFETY: umount2 takes a static NUL-terminated path, in this thread's namespace.
    if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(fail("umount"));
    }
    Ok(true)
}

/// Runs `c` to its end; (spawn, exit) on the monotonic clock. A failure is an error.
fn timed(name: &str, mut c: Command) -> Result<(u64, u64), Error> {
    c.stderr(Stdio::piped());
    let spawn = timing::now_ns();
    let o = c.output().map_err(|e| Error::Spawn(name.into(), e))?;
    let exit = timing::now_ns();
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(Error::Failed(
            name.into(),
            format!("{}: {}", o.status, err.lines().next().unwrap_or("")),
        ));
    }
    Ok((spawn, exit))
}

fn span(marks: &[(String, u64)], from: &str, to: &str) -> Option<u64> {
    let (a, b) = (timing::first(marks, from)?, timing::first(marks, to)?);
    b.checked_sub(a)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn row(label: &str, s: Option<Stats>, unit: &str) -> String {
    match s {
        Some(s) => format!(
            "{label:<40} {:>9.2} {unit} [{:.2}-{:.2}]",
            s.median, s.min, s.max
        ),
        None => format!("{label:<40} -"),
    }
}

fn phase_rows(all: &[Marks], phases: &[(&str, &str, &str)]) -> Vec<String> {
    phases
        .iter()
        .map(|(name, from, to)| {
            let v: Vec<f64> = all
                .iter()
                .filter_map(|m| span(m, from, to))
                .map(ms)
                .collect();
            row(&format!("  {name}"), stats(&v), "ms")
        })
        .collect()
}

/// Lets page tables and lazily allocated memory of just-started processes settle.
fn settle() {
    std::thread::sleep(Duration::from_secs(1));
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// PSS (KiB) of `pid` and every process below it.
pub fn tree_pss_kib(pid: i32) -> u64 {
    if pid <= 0 {
        return 0;
    }
    procfs::tree(pid).into_iter().map(procfs::pss_kib).sum()
}

/// An OCI bundle for crun whose root filesystem is the image's: the layer disks mounted
/// read-only (overlayfs across them for several layers) and copied out once.
fn make_bundle(crun: &Path, work: &Path, disks: &[PathBuf]) -> Result<PathBuf, Error> {
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| Error::Scratch(rootfs.clone(), e))?;
    let mut lowers = Vec::new();
    let mut result = Ok(());
    for (i, disk) in disks.iter().enumerate() {
        let dir = work.join(format!("lower-{i}"));
        let _ = std::fs::create_dir_all(&dir);
        result = sh("mount", |c| {
            c.args(["-t", "erofs", "-o", "ro,loop"]).arg(disk).arg(&dir);
        });
        if result.is_err() {
            break;
        }
        lowers.push(dir);
    }
    let merged = work.join("merged");
    if result.is_ok() && lowers.len() > 1 {
        let _ = std::fs::create_dir_all(&merged);
        let lowerdir: Vec<String> = lowers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        result = sh("mount", |c| {
            c.args(["-t", "overlay", "overlay", "-o"])
                .arg(format!("ro,lowerdir={}", lowerdir.join(":")))
                .arg(&merged);
        });
    }
    if result.is_ok() {
        let src = if lowers.len() > 1 {
            &merged
        } else {
            &lowers[0]
        };
        result = sh("cp", |c| {
            c.arg("-a").arg(format!("{}/.", src.display())).arg(&rootfs);
        });
    }
    let _ = sh("umount", |c| {
        c.arg(&merged);
    });
    for l in &lowers {
        let _ = sh("umount", |c| {
            c.arg(l);
        });
    }
    result?;
    let spec = Command::new(crun)
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .map_err(|e| Error::Spawn("crun spec".into(), e))?;
    if !spec.success() {
        return Err(Error::Failed("crun spec".into(), spec.to_string()));
    }
    Ok(bundle)
}

/// Sets the bundle's process arguments (no terminal).
fn set_bundle_args(bundle: Option<&Path>, args: &[&str]) -> Result<(), Error> {
    let Some(bundle) = bundle else { return Ok(()) };
    let path = bundle.join("config.json");
    let bad = |e: String| Error::Failed("the crun bundle's config.json".into(), e);
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let mut v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    v["process"]["args"] = serde_json::json!(args);
    v["process"]["terminal"] = serde_json::json!(false);
    v["root"]["path"] = serde_json::json!("rootfs");
    v["root"]["readonly"] = serde_json::json!(false);
    let out = serde_json::to_vec_pretty(&v).map_err(|e| bad(e.to_string()))?;
    std::fs::write(&path, out).map_err(|e| bad(e.to_string()))
}

fn sh(program: &str, args: impl FnOnce(&mut Command)) -> Result<(), Error> {
    let mut c = Command::new(program);
    args(&mut c);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = c.status().map_err(|e| Error::Spawn(program.into(), e))?;
    match status.success() {
        true => Ok(()),
        false => Err(Error::Failed(program.into(), status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_phase_rows_come_from_marks() {
        let marks: Marks = vec![
            ("spawn".into(), 1_000_000),
            ("create.start".into(), 3_000_000),
            ("exit".into(), 10_000_000),
        ];
        assert_eq!(span(&marks, "spawn", "exit"), Some(9_000_000));
        assert_eq!(span(&marks, "exit", "spawn"), None);
        let rows = phase_rows(&[marks], RUN_PHASES);
        assert!(rows[0].contains("2.00 ms"), "{}", rows[0]);
        assert!(rows[1].ends_with('-'), "{}", rows[1]);
    }
}
