//! Image verbs: `images`, `rmi`, `tag`, `load`, `save`, `import` and the `image` group
//! (`ls`, `rm`, `tag`, `inspect`, `prune`, `load`, `save`, `import`). As docker does for
//! these verbs, a failure prints `Error: ...` on one line and exits 1.

use std::collections::HashSet;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use rootfs::archive::{self, ImportOptions, SaveFormat};
use rootfs::reference::Reference;
use rootfs::store::{ImageRecord, RemoveEvent, Store};
use runtime::lifecycle;
use serde_json::json;

use crate::human;

/// `husk images` / `husk image ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show all images (accepted for docker compatibility).
    #[arg(short, long)]
    all: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Only images of this repository (`name` or `name:tag`).
    reference: Option<String>,
}

/// `husk rmi` / `husk image rm`.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even if a container uses it or it has several tags.
    #[arg(short, long)]
    force: bool,
    /// Images (name[:tag], ID or ID prefix).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `husk tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    source: String,
    /// New name[:tag].
    target: String,
}

/// `husk load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// docker-save tar, OCI layout directory or tar (optionally gzip-compressed)
    /// [default: the tar on standard input, as `docker load` reads it].
    #[arg(short, long, value_name = "FILE|DIR")]
    input: Option<PathBuf>,
    /// Print less.
    #[arg(short, long)]
    quiet: bool,
}

/// `husk save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Output file (default: stdout, if it is not a terminal).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value = "docker")]
    format: ArchiveFormat,
    /// Images to save.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// Output formats of `save`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ArchiveFormat {
    /// docker-archive (what `docker save` writes).
    Docker,
    /// OCI image layout tar.
    Oci,
}

/// `husk import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Commit message recorded in the image history.
    #[arg(short, long)]
    message: Option<String>,
    /// Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, ...).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Root filesystem tarball (plain or gzip).
    file: PathBuf,
    /// Name of the new image.
    reference: Option<String>,
}

/// `husk image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images to inspect.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `husk image prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images no container uses, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// `husk image ...`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove images.
    #[command(alias = "remove", alias = "rmi")]
    Rm(RmiArgs),
    /// Add a name to an image.
    Tag(TagArgs),
    /// Show image details as JSON.
    Inspect(InspectArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Load images from an archive.
    Load(LoadArgs),
    /// Save images to an archive.
    Save(SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(ImportArgs),
}

/// Runs a verb and reports a failure the way docker does (`Error: ...`, exit 1).
pub fn report(res: anyhow::Result<ExitCode>) -> ExitCode {
    res.unwrap_or_else(|e| {
        eprintln!("Error: {e:#}");
        ExitCode::from(1)
    })
}

/// `husk image ...`.
pub fn run_image(cmd: ImageCommand, root: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Ls(a) => list(a, root),
        ImageCommand::Rm(a) => rmi(a, root),
        ImageCommand::Tag(a) => tag(a, root),
        ImageCommand::Inspect(a) => inspect(a, root),
        ImageCommand::Prune(a) => prune(a, root),
        ImageCommand::Load(a) => load(a, root),
        ImageCommand::Save(a) => save(a, root),
        ImageCommand::Import(a) => import(a, root),
    }
}

fn open(root: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(root)?)
}

/// `husk images`.
pub fn list(a: ListArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let _ = a.all;
    let store = open(root)?;
    let filter = match &a.reference {
        Some(r) => Some(Reference::parse_name_parts(r)?),
        None => None,
    };
    let now = chrono::Utc::now();
    let mut rows = vec![vec![
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for rec in store.list()? {
        let id = if a.no_trunc {
            rec.id.to_string()
        } else {
            rec.id.short().to_owned()
        };
        let mut names: Vec<(String, String)> = rec
            .tags()
            .iter()
            .filter(|t| filter.as_ref().is_none_or(|f| matches_filter(f, t)))
            .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
            .collect();
        if rec.references.is_empty() && filter.is_none() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            let created = human::ago(rec.created.as_deref(), now);
            rows.push(vec![repo, tag, id.clone(), created, human::size(rec.size)]);
        }
    }
    let mut out = io::stdout().lock();
    if a.quiet {
        let mut seen = HashSet::new();
        for r in rows.iter().skip(1).filter(|r| seen.insert(r[2].clone())) {
            writeln!(out, "{}", r[2])?;
        }
    } else {
        write!(out, "{}", human::table(&rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn matches_filter(f: &Reference, t: &Reference) -> bool {
    f.name() == t.name() && f.tag().is_none_or(|ft| Some(ft) == t.tag())
}

/// `husk rmi`: every image is tried; any failure makes the exit status 1.
pub fn rmi(a: RmiArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    // Held throughout: no container is created on an image while it is being removed.
    let (_lock, in_use) = lifecycle::images_in_use(root)?;
    let mut code = ExitCode::SUCCESS;
    for img in &a.images {
        let running = store
            .resolve(img)
            .is_ok_and(|rec| in_use.running.contains(&rec.id));
        if running && a.force {
            eprintln!(
                "Error: conflict: unable to remove image {img} (cannot be forced): a running container is using it"
            );
            code = ExitCode::from(1);
            continue;
        }
        match store.remove_image(img, a.force, &in_use.images) {
            Ok(events) => {
                print_events(&events, "Untagged", "Deleted");
                if events.iter().any(|e| matches!(e, RemoveEvent::Deleted(_))) {
                    prune_disks(root, &store, &in_use)?;
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

fn print_events(events: &[RemoveEvent], untagged: &str, deleted: &str) {
    for e in events {
        match e {
            RemoveEvent::Untagged(n) => println!("{untagged}: {n}"),
            RemoveEvent::Deleted(d) => println!("{deleted}: {d}"),
        }
    }
}

/// `husk tag`.
pub fn tag(a: TagArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let dst = Reference::parse(&a.target)?;
    if dst.digest().is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    store.tag(&a.source, &dst)?;
    Ok(ExitCode::SUCCESS)
}

/// `husk image inspect`: a JSON array of what was found; unknown images are errors.
pub fn inspect(a: InspectArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for q in &a.images {
        match store.resolve(q) {
            Ok(rec) => found.push(inspect_json(&rec)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    for e in &errors {
        eprintln!("Error: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn familiar(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| Reference::parse(n).map_or_else(|_| n.clone(), |r| r.familiar()))
        .collect()
}

fn inspect_json(rec: &ImageRecord) -> serde_json::Value {
    let c = &rec.config;
    json!({
        "Id": rec.id.to_string(),
        "RepoTags": familiar(&rec.references),
        "RepoDigests": familiar(&rec.repo_digests),
        "Parent": "",
        "Comment": c.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": c.created.clone().unwrap_or_default(),
        "Author": c.author.clone().unwrap_or_default(),
        "Config": c.config.clone().unwrap_or_default(),
        "Architecture": c.architecture,
        "Os": c.os,
        "Size": rec.size,
        "RootFS": {
            "Type": "layers",
            "Layers": c.rootfs.diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": rec.added },
        "Descriptor": {
            "mediaType": rec.manifest_media_type,
            "digest": rec.manifest_digest.to_string(),
        },
    })
}

/// `husk image prune`.
pub fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if !a.force {
        let what = if a.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let store = open(root)?;
    let (_lock, in_use) = lifecycle::images_in_use(root)?;
    let (events, freed) = store.prune(a.all, &in_use.images)?;
    let freed = freed + prune_disks(root, &store, &in_use)?;
    if !events.is_empty() {
        println!("Deleted Images:");
        print_events(&events, "untagged", "deleted");
        println!();
    }
    println!("Total reclaimed space: {}", human::size(freed));
    Ok(ExitCode::SUCCESS)
}

/// `husk load`.
pub fn load(a: LoadArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    // Standard input is spooled to a file in the state directory first: archives are
    // read in more than one pass.
    let spooled;
    let input = match &a.input {
        Some(p) => p.as_path(),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            let dir = root.join("images");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".load-stdin-")
                .tempfile_in(&dir)
                .context("spooling standard input")?;
            std::io::copy(&mut std::io::stdin().lock(), &mut tmp)
                .context("reading the archive from standard input")?;
            spooled = tmp;
            spooled.path()
        }
    };
    let images = archive::load(&store, input)?;
    let _ = a.quiet;
    for rec in &images {
        build_disks(root, &store, rec)?;
    }
    for rec in &images {
        let tags = familiar(&rec.references);
        if tags.is_empty() {
            println!("Loaded image ID: {}", rec.id);
        }
        for t in tags {
            println!("Loaded image: {t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the read-only disk of every layer of a newly added image. An image whose layers
/// cannot be converted (hostile or broken tars) is removed again, so the store only holds
/// usable images.
pub(crate) fn build_disks(root: &Path, store: &Store, rec: &ImageRecord) -> anyhow::Result<()> {
    if let Err(e) = rootfs::layer::ensure_layer_disks(root, store, rec) {
        if let Ok((_lock, in_use)) = lifecycle::images_in_use(root)
            && !in_use.images.contains(&rec.id)
        {
            let _ = store.remove_image(&rec.id.to_string(), true, &HashSet::new());
            let _ = prune_disks(root, store, &in_use);
        }
        return Err(e.into());
    }
    Ok(())
}

/// Removes the layer disks no image and no container uses any more; the bytes freed.
fn prune_disks(root: &Path, store: &Store, containers: &lifecycle::InUse) -> anyhow::Result<u64> {
    let in_use = store.diff_ids_in_use()?;
    rootfs::layer::prune_layer_disks(root, &in_use, &containers.disks)
        .context("removing unused layer disks")
}

/// `husk save`: written to a temporary file renamed into place, so a failure leaves no
/// partial archive.
pub fn save(a: SaveArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let format = match a.format {
        ArchiveFormat::Docker => SaveFormat::Docker,
        ArchiveFormat::Oci => SaveFormat::Oci,
    };
    match &a.output {
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = tempfile::Builder::new()
                .prefix(".husk-save-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            archive::save(&store, &a.images, format, io::BufWriter::new(tmp.as_file()))?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let out = io::stdout();
            if out.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            archive::save(&store, &a.images, format, out.lock())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk import`: prints the new image ID.
pub fn import(a: ImportArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let reference = a.reference.as_deref().map(Reference::parse).transpose()?;
    let store = open(root)?;
    let opts = ImportOptions {
        message: a.message,
        changes: a.changes,
    };
    let rec = archive::import(&store, &a.file, reference.as_ref(), &opts)?;
    build_disks(root, &store, &rec)?;
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}
