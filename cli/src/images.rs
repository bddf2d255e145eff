//! Image verbs: `images`, `rmi`, `tag`, `load`, `save`, `import` and the `image` group
//! (`ls`, `rm`, `tag`, `inspect`, `prune`, `load`, `save`, `import`). As docker does for
//! these verbs, a failure prints `Error: ...` on one line and exits 1.

use std::collections::HashSet;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use rootfs::archive::{self, ImportOptions, SaveFormat};
use rootfs::reference::Reference;
use rootfs::store::{ImageRecord, RemoveEvent, Store};
use serde_json::json;

use crate::format::Format;
use crate::human;

/// `husk images` / `husk image ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show all images (by default a build's intermediate images are hidden).
    #[arg(short, long)]
    all: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: dangling=true|false, reference=PATTERN (`*` wildcards), label=KEY[=VALUE].
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go template (`{{.Repository}}:{{.Tag}}`, `{{json .}}`, `table ...`).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Only images of this repository (`name` or `name:tag`).
    reference: Option<String>,
}

/// docker's column titles of `images --format table` by field.
const IMAGE_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
];

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
    /// Root filesystem tarball (plain or gzip); `-` reads standard input.
    file: PathBuf,
    /// Name of the new image.
    reference: Option<String>,
}

/// `husk image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Go template applied to each image (`{{.Id}}`, `{{json .Config}}`).
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
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

/// `husk history` / `husk image history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Go template (`{{.CreatedBy}}`, `{{json .}}`, `table ...`).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Image (name[:tag], ID or ID prefix).
    image: String,
}

/// docker's column titles of `history --format table` by field.
const HISTORY_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// `husk history`: the image's build steps, newest first, as docker shows them (the top
/// step carries the image ID, the others `<missing>`; SIZE is the layer a step added).
pub fn history(a: HistoryArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let rec = store.resolve(&a.image)?;
    let now = chrono::Utc::now();
    let mut layers = rec.layers.iter();
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for h in &rec.config.history {
        let size = match h.empty_layer {
            true => 0,
            false => layers.next().map_or(0, |l| layer_size(root, l)),
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push(json!({
            "ID": "<missing>",
            "CreatedSince": human::ago(h.created.as_deref(), now),
            "CreatedAt": h.created.clone().unwrap_or_default(),
            "CreatedBy": by,
            "Size": human::size(size),
            "Comment": h.comment.clone().unwrap_or_default(),
        }));
    }
    rows.reverse();
    let id = match a.no_trunc {
        true => rec.id.to_string(),
        false => rec.id.short().to_owned(),
    };
    match rows.first_mut() {
        Some(top) => top["ID"] = json!(id),
        None => rows.push(json!({
            "ID": id, "CreatedSince": human::ago(rec.created.as_deref(), now),
            "CreatedAt": rec.created.clone().unwrap_or_default(), "CreatedBy": "",
            "Size": human::size(rec.size), "Comment": "",
        })),
    }
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    if a.quiet {
        for r in &rows {
            println!("{}", field(r, "ID"));
        }
    } else if let Some(f) = a.format.as_deref().map(Format::parse).transpose()? {
        print!("{}", f.render_rows(&rows, HISTORY_HEADERS)?);
    } else {
        let mut table = vec![
            ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
                .map(String::from)
                .to_vec(),
        ];
        for r in &rows {
            table.push(
                ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
                    .iter()
                    .map(|k| field(r, k))
                    .collect(),
            );
        }
        print!("{}", human::table(&table));
    }
    Ok(ExitCode::SUCCESS)
}

/// A layer's size: its disk's when built (the uncompressed content), else its blob's.
fn layer_size(root: &Path, layer: &rootfs::store::LayerRecord) -> u64 {
    std::fs::metadata(rootfs::layer::disk_path(root, &layer.diff_id))
        .map_or(layer.size, |m| m.len())
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
    /// Show an image's history.
    History(HistoryArgs),
    /// Pull an image from a registry.
    Pull(crate::registry::PullArgs),
    /// Push an image to a registry.
    Push(crate::registry::PushArgs),
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
        ImageCommand::History(a) => history(a, root),
        ImageCommand::Pull(a) => crate::registry::pull(a, root),
        ImageCommand::Push(a) => crate::registry::push(a, root),
    }
}

fn open(root: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(root)?)
}

/// `husk images`.
pub fn list(a: ListArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let filter = match &a.reference {
        Some(r) => Some(Reference::parse_name_parts(r)?),
        None => None,
    };
    let filters = ImageFilters::parse(&a.filter)?;
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    let now = chrono::Utc::now();
    let mut listed = Vec::new();
    let all = store.list()?;
    let hidden = match a.all {
        true => Default::default(),
        false => rootfs::store::intermediates(&all),
    };
    for rec in all {
        if !filters.matches(&rec) || hidden.contains(&rec.id) {
            continue;
        }
        let id = if a.no_trunc {
            rec.id.to_string()
        } else {
            rec.id.short().to_owned()
        };
        let mut names: Vec<(String, String)> = rec
            .tags()
            .iter()
            .filter(|t| filter.as_ref().is_none_or(|f| matches_filter(f, t)))
            .filter(|t| filters.matches_reference(t))
            .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
            .collect();
        if rec.references.is_empty() && filter.is_none() && !filters.has_reference() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            listed.push(json!({
                "Repository": repo,
                "Tag": tag,
                "ID": id,
                "Digest": rec.repo_digests.first().and_then(|d| d.split_once('@')).map_or("<none>", |(_, d)| d),
                "CreatedSince": human::ago(rec.created.as_deref(), now),
                "CreatedAt": rec.created.clone().unwrap_or_default(),
                "Size": human::size(image_size(root, &store, &rec)),
                "Containers": "N/A",
            }));
        }
    }
    let mut out = io::stdout().lock();
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    if a.quiet {
        let mut seen = HashSet::new();
        for id in listed
            .iter()
            .map(|v| field(v, "ID"))
            .filter(|id| seen.insert(id.clone()))
        {
            writeln!(out, "{id}")?;
        }
    } else if let Some(format) = format {
        write!(out, "{}", format.render_rows(&listed, IMAGE_HEADERS)?)?;
    } else {
        let mut rows = vec![
            ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
                .map(String::from)
                .to_vec(),
        ];
        for v in &listed {
            rows.push(
                ["Repository", "Tag", "ID", "CreatedSince", "Size"]
                    .iter()
                    .map(|k| field(v, k))
                    .collect(),
            );
        }
        write!(out, "{}", human::table(&rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `images --filter`: docker's `dangling`, `reference` and `label`.
#[derive(Debug, Default)]
struct ImageFilters {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<String>,
}

impl ImageFilters {
    fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut f = Self::default();
        for spec in specs {
            match spec.split_once('=') {
                Some(("dangling", v)) => {
                    f.dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter 'dangling={v}'"),
                    });
                }
                Some(("reference", v)) => f.references.push(v.to_owned()),
                Some(("label", v)) => f.labels.push(v.to_owned()),
                Some((k, _)) => bail!("invalid filter '{k}'"),
                None => bail!("bad format of filter (expected name=value)"),
            }
        }
        Ok(f)
    }

    fn has_reference(&self) -> bool {
        !self.references.is_empty()
    }

    fn matches(&self, rec: &ImageRecord) -> bool {
        let labels = rec
            .config
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let label_ok = self.labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(l),
        });
        let dangling_ok = self.dangling.is_none_or(|d| d == rec.references.is_empty());
        label_ok && dangling_ok
    }

    fn matches_reference(&self, t: &Reference) -> bool {
        let name = t.familiar_name();
        let full = format!("{name}:{}", t.tag().unwrap_or("latest"));
        self.references.is_empty()
            || self
                .references
                .iter()
                .any(|p| glob(p, &name) || glob(p, &full))
    }
}

/// `*` matches any run of characters but `/`, as docker's reference filter does.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(after) = text.strip_prefix(head) else {
                return false;
            };
            (0..=after.len())
                .take_while(|&i| !after[..i].contains('/'))
                .filter(|&i| after.is_char_boundary(i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

/// docker's SIZE: the uncompressed content, here the layer disks' bytes (the blob sizes
/// would differ between a pulled, compressed image and the same image loaded or imported).
pub(crate) fn image_size(root: &Path, store: &Store, rec: &ImageRecord) -> u64 {
    rootfs::layer::image_disk_size(root, store, rec).unwrap_or(rec.size)
}

fn matches_filter(f: &Reference, t: &Reference) -> bool {
    f.name() == t.name() && f.tag().is_none_or(|ft| Some(ft) == t.tag())
}

/// `husk rmi`: every image is tried; any failure makes the exit status 1.
pub fn rmi(a: RmiArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for img in &a.images {
        match runtime::engine::images::remove(root, img, a.force) {
            Ok(events) => print_events(&events, "Untagged", "Deleted"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

/// Records image event `action` (docker's `events`).
pub(crate) fn event(root: &Path, action: &str, id: &str, name: Option<&str>) {
    runtime::events::record(root, &runtime::events::Event::image(action, id, name));
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
    runtime::engine::images::tag(root, &a.source, &a.target)?;
    Ok(ExitCode::SUCCESS)
}

/// `husk image inspect`: a JSON array of what was found; unknown images are errors.
pub fn inspect(a: InspectArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for q in &a.images {
        match store.resolve(q) {
            Ok(rec) => {
                let size = image_size(root, &store, &rec);
                found.push(inspect_json(&rec, size));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    crate::format::print_inspected(&found, &errors, a.format.as_deref())
}

fn familiar(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| Reference::parse(n).map_or_else(|_| n.clone(), |r| r.familiar()))
        .collect()
}

fn inspect_json(rec: &ImageRecord, size: u64) -> serde_json::Value {
    let c = &rec.config;
    json!({
        "Id": rec.id.to_string(),
        "RepoTags": familiar(&rec.references),
        "RepoDigests": familiar(&rec.repo_digests),
        "Parent": rec.parent.as_ref().map(ToString::to_string).unwrap_or_default(),
        "Comment": c.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": c.created.clone().unwrap_or_default(),
        "Author": c.author.clone().unwrap_or_default(),
        "Config": c.config.clone().unwrap_or_default(),
        "Architecture": c.architecture,
        "Os": c.os,
        "Size": size,
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

/// Removes dangling images (every unused one with `all`) and unused layer disks: what was
/// untagged and deleted, and the bytes freed.
pub fn prune_images(root: &Path, all: bool) -> anyhow::Result<(Vec<RemoveEvent>, u64)> {
    Ok(runtime::engine::images::prune(root, all)?)
}

/// What an image prune removes, in docker's words.
pub(crate) fn prune_what(all: bool) -> &'static str {
    match all {
        true => "all images without at least one container associated to them",
        false => "all dangling images",
    }
}

/// docker's `Deleted Images:` section (nothing when none went).
pub(crate) fn print_deleted(events: &[RemoveEvent]) {
    if !events.is_empty() {
        println!("Deleted Images:");
        print_events(events, "untagged", "deleted");
        println!();
    }
}

/// `husk image prune`.
pub fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let warning = format!("WARNING! This will remove {}.", prune_what(a.all));
    if !a.force && !human::confirm(&warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let (events, freed) = prune_images(root, a.all)?;
    print_deleted(&events);
    println!("Total reclaimed space: {}", human::size(freed));
    Ok(ExitCode::SUCCESS)
}

/// `husk load`.
pub fn load(a: LoadArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let store = open(root)?;
    let images = match &a.input {
        Some(p) => archive::load(&store, p)?,
        None => from_stdin(root, "load", |path| archive::load(&store, path))?,
    };
    let _ = a.quiet;
    for rec in &images {
        build_disks(root, &store, rec)?;
    }
    for rec in &images {
        event(root, "load", &rec.id.to_string(), None);
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

/// Runs `f` on standard input, spooled first to a file in the state directory (archives
/// are read in more than one pass); an error names it "standard input", never the spool
/// file, and an empty (or terminal) stdin gets docker's message.
fn from_stdin<T, E>(
    root: &Path,
    verb: &str,
    f: impl FnOnce(&Path) -> Result<T, E>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let empty = || anyhow::anyhow!("requested {verb} from stdin, but stdin is empty");
    if io::stdin().is_terminal() {
        return Err(empty());
    }
    let dir = root.join("images");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut spool = tempfile::Builder::new()
        .prefix(".stdin-")
        .tempfile_in(&dir)
        .context("spooling standard input")?;
    let n = io::copy(&mut io::stdin().lock(), &mut spool)
        .context("reading the archive from standard input")?;
    if n == 0 {
        return Err(empty());
    }
    f(spool.path()).map_err(|e| {
        let shown = spool.path().display().to_string();
        anyhow::anyhow!(format!("{:#}", anyhow::Error::new(e)).replace(&shown, "standard input"))
    })
}

pub(crate) fn build_disks(root: &Path, store: &Store, rec: &ImageRecord) -> anyhow::Result<()> {
    Ok(runtime::engine::images::build_disks(root, store, rec)?)
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
    for img in &a.images {
        event(root, "save", img, None);
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
    let rec = match a.file.as_os_str() == "-" {
        true => from_stdin(root, "import", |path| {
            archive::import(&store, path, reference.as_ref(), &opts)
        })?,
        false => archive::import(&store, &a.file, reference.as_ref(), &opts)?,
    };
    build_disks(root, &store, &rec)?;
    event(root, "import", &rec.id.to_string(), None);
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_globs() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*:latest", "busybox:latest"));
        assert!(!glob("busy*", "library/busybox"));
        assert!(glob("husk/*", "husk/busybox"));
        assert!(!glob("husk/*", "husk/a/b"));
        assert!(glob("a", "a") && !glob("a", "ab"));
    }
}
