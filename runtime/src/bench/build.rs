//! `husk bench build`: one Dockerfile (a COPY, a RUN, metadata) built by husk under process
//! and vm isolation and by buildah (Debian's package, the baseline), side by side in one
//! run: cold (`--no-cache`) and fully cached, alternating, medians. Every side builds with
//! `--network none`, so nothing touches the host's network.

use super::{Error, stats};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to run.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `husk` binary to measure.
    pub husk: PathBuf,
    /// buildah, if it is to be measured.
    pub buildah: Option<PathBuf>,
    /// Measured builds per side and mode.
    pub runs: usize,
    /// Measured vm builds per mode (0 skips vm).
    pub vm_runs: usize,
    /// Scratch directory (removed at the end).
    pub work_dir: PathBuf,
}

const DOCKERFILE: &str = "FROM docker.io/husk/busybox:latest\n\
    COPY index.html /srv/www/\n\
    RUN echo built >> /srv/www/index.html && mkdir -p /data && echo x > /data/x\n\
    ENV SITE=/srv/www\n\
    EXPOSE 8080\n\
    CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv/www\"]\n";

/// Runs the benchmark; returns the report.
pub fn run(o: &BuildOptions) -> Result<String, Error> {
    let result = prepare(o).and_then(|()| measure_all(o));
    let _ = std::fs::remove_dir_all(&o.work_dir);
    result
}

fn scratch(o: &BuildOptions) -> impl Fn(std::io::Error) -> Error + '_ {
    |e| Error::Scratch(o.work_dir.clone(), e)
}

fn prepare(o: &BuildOptions) -> Result<(), Error> {
    let ctx = o.work_dir.join("context");
    std::fs::create_dir_all(&ctx).map_err(scratch(o))?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).map_err(scratch(o))?;
    std::fs::write(ctx.join("index.html"), "<h1>bench</h1>\n").map_err(scratch(o))?;
    let root = o.work_dir.join("root");
    let store = rootfs::store::Store::open(&root)
        .map_err(|e| Error::Failed("the benchmark's image store".into(), e.to_string()))?;
    rootfs::defaults::DefaultImage::Busybox
        .import(&store)
        .map_err(|e| Error::Failed("importing husk/busybox".into(), e.to_string()))?;
    let Some(buildah) = &o.buildah else {
        return Ok(());
    };
    // buildah's runtime (crun) refuses a hybrid cgroup host, as in `bench run`; husk's
    // builds run in the same namespace, so both sides see the same host.
    super::containers::hide_hybrid_unified()?;
    // buildah gets the same image, through a docker-archive husk saves.
    let archive = o.work_dir.join("busybox.tar");
    let mut save = Command::new(&o.husk);
    save.env("HUSK_ROOT", &root)
        .args(["save", "-o"])
        .arg(&archive)
        .arg("husk/busybox");
    checked(save, "husk save")?;
    let mut pull = buildah_cmd(o, buildah);
    pull.arg("pull")
        .arg(format!("docker-archive:{}", archive.display()));
    checked(pull, "buildah pull")?;
    // buildah names an archive's image `localhost/...`; the Dockerfile says docker.io.
    let mut tag = buildah_cmd(o, buildah);
    tag.args([
        "tag",
        "localhost/husk/busybox:latest",
        "docker.io/husk/busybox:latest",
    ]);
    checked(tag, "buildah tag")
}

fn checked(mut c: Command, name: &str) -> Result<(), Error> {
    let out = c.output().map_err(|e| Error::Spawn(name.into(), e))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(Error::Failed(
            name.into(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
    }
}

fn buildah_cmd(o: &BuildOptions, buildah: &Path) -> Command {
    let mut c = Command::new(buildah);
    c.arg("--root")
        .arg(o.work_dir.join("buildah/root"))
        .arg("--runroot")
        .arg(o.work_dir.join("buildah/run"))
        .args(["--storage-driver", "overlay"]);
    c
}

/// One side's build command (`cold`: without the cache).
fn build_cmd(o: &BuildOptions, side: &str, cold: bool) -> Command {
    let ctx = o.work_dir.join("context");
    match (side, &o.buildah) {
        ("buildah", Some(b)) => {
            let mut c = buildah_cmd(o, b);
            c.args([
                "bud",
                "--layers",
                "--pull=never",
                "--network=none",
                "-q",
                "-t",
            ])
            .arg("bench:buildah");
            if cold {
                c.arg("--no-cache");
            }
            c.arg(ctx);
            c
        }
        (iso, _) => {
            let mut c = Command::new(&o.husk);
            c.env("HUSK_ROOT", o.work_dir.join("root"))
                .args(["build", "-q", "--network", "none", "--isolation", iso, "-t"])
                .arg(format!("bench:{iso}"));
            if cold {
                c.arg("--no-cache");
            }
            c.arg(ctx);
            c
        }
    }
}

fn measure_all(o: &BuildOptions) -> Result<String, Error> {
    let mut sides = vec![("process", o.runs)];
    if o.vm_runs > 0 {
        sides.push(("vm", o.vm_runs));
    }
    if o.buildah.is_some() {
        sides.push(("buildah", o.runs));
    }
    // One unmeasured build per side fills the caches for the cached builds.
    for (side, _) in &sides {
        build(o, side, true)?;
    }
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut cached: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let most = sides.iter().map(|s| s.1).max().unwrap_or(0);
    for round in 0..most {
        for (i, (side, runs)) in sides.iter().enumerate() {
            if round >= *runs {
                continue;
            }
            let c = build(o, side, true)?;
            cold[i].push(c);
            let w = build(o, side, false)?;
            cached[i].push(w);
        }
    }
    Ok(report(o, &sides, &cold, &cached))
}

/// One build's wall time in ms (a failed build fails the benchmark).
fn build(o: &BuildOptions, side: &str, cold: bool) -> Result<f64, Error> {
    let mut c = build_cmd(o, side, cold);
    let started = std::time::Instant::now();
    let out = c
        .output()
        .map_err(|e| Error::Spawn(format!("{side} build"), e))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        return Err(Error::Failed(
            format!("{side} build"),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(ms)
}

fn report(
    o: &BuildOptions,
    sides: &[(&str, usize)],
    cold: &[Vec<f64>],
    cached: &[Vec<f64>],
) -> String {
    let mut out = vec![format!(
        "husk bench build: a 6-instruction Dockerfile (COPY, RUN, metadata) on husk/busybox, \
         {} runs per side ({} under vm), cold (--no-cache) and fully cached, alternating",
        o.runs, o.vm_runs
    )];
    out.push(format!(
        "{:<18} {:>12} {:>12} {:>12} {:>14}",
        "side", "cold ms", "(min-max)", "cached ms", "cached/cold"
    ));
    let median = |v: &[f64]| stats(v).map_or(f64::NAN, |s| s.median);
    for (i, (side, _)) in sides.iter().enumerate() {
        let (c, w) = (stats(&cold[i]), stats(&cached[i]));
        let (Some(c), Some(w)) = (c, w) else { continue };
        let name = match *side {
            "buildah" => "buildah (baseline)".to_owned(),
            iso => format!("husk {iso}"),
        };
        out.push(format!(
            "{name:<18} {:>12.1} {:>12} {:>12.1} {:>14.3}",
            c.median,
            format!("{:.0}-{:.0}", c.min, c.max),
            w.median,
            w.median / c.median
        ));
    }
    let find = |name: &str| sides.iter().position(|s| s.0 == name);
    if let (Some(p), Some(b)) = (find("process"), find("buildah")) {
        out.push(format!(
            "husk process / buildah: cold {:.2}x (target <= 1.0), cached {:.2}x (target <= 1.0)",
            median(&cold[p]) / median(&cold[b]),
            median(&cached[p]) / median(&cached[b])
        ));
    }
    if let Some(p) = find("process") {
        out.push(format!(
            "husk process cached / cold: {:.3} (target <= 0.1)",
            median(&cached[p]) / median(&cold[p])
        ));
    }
    out.join("\n")
}
