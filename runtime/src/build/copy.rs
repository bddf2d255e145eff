//! COPY and ADD: the sources (files of the context, or of an earlier stage's or another
//! image's filesystem with `--from`) become a tar that the step's sandbox extracts, so the
//! layer holds exactly what the copy changed, parent directories as the image has them.
//! Only on an image with no layer yet (`FROM scratch`) is the layer written on the host,
//! parents made as docker makes them. ADD also unpacks local tar archives (plain or gzip)
//! and refuses URLs: husk's builds have no internet.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parse_dockerfile::{Flag, Source, UnescapedString};
use rootfs::digest::Digest;
use rootfs::store::{ImageRecord, Store};
use sha2::{Digest as _, Sha256};

use super::stage::{Build, Stage, absolute, flag_value, key};
use super::step::StepBox;
use super::{BuildError, ContextError, words};

/// A COPY or ADD, its words expanded.
#[derive(Debug, Clone)]
pub(super) struct CopySpec {
    instruction: &'static str,
    sources: Vec<String>,
    /// Absolute; a trailing `/` kept (it says "a directory").
    dest: String,
    from: Option<String>,
    chown: Option<String>,
    chmod: Option<u32>,
}

impl CopySpec {
    pub fn new(
        instruction: &'static str,
        options: &[Flag<'_>],
        src: &[Source<'_>],
        dest: &UnescapedString<'_>,
        st: &Stage,
        escape: char,
    ) -> Result<Self, BuildError> {
        let vars = |n: &str| st.var(n);
        let mut spec = CopySpec {
            instruction,
            sources: Vec::new(),
            dest: String::new(),
            from: None,
            chown: None,
            chmod: None,
        };
        for f in options {
            let value = words::expand(&flag_value(f), escape, &vars)?;
            match (&*f.name.value, instruction) {
                ("from", "COPY") => spec.from = Some(value),
                ("chown", _) => spec.chown = Some(value),
                ("chmod", _) => {
                    spec.chmod = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                        BuildError::invalid(
                            instruction,
                            format!("invalid --chmod {value:?}: want octal"),
                        )
                    })?)
                }
                ("link", _) => {}
                (other, _) => {
                    return Err(BuildError::invalid(
                        instruction,
                        format!("unknown flag: --{other}"),
                    ));
                }
            }
        }
        for s in src {
            match s {
                Source::Path(p) => spec.sources.push(words::expand(&p.value, escape, &vars)?),
                _ => {
                    return Err(BuildError::Unsupported(format!(
                        "{instruction} with here-documents is not supported yet"
                    )));
                }
            }
        }
        let raw = words::expand(&dest.value, escape, &vars)?;
        let mut dest = absolute(&st.workdir(), &raw);
        if (raw.ends_with('/') || raw.ends_with("/.") || raw == ".") && dest != "/" {
            dest.push('/');
        }
        spec.dest = dest;
        if let Some(url) = spec.sources.iter().find(|s| is_url(s)) {
            return Err(BuildError::Unsupported(format!(
                "{instruction} from a URL is not supported: husk builds have no internet access ({url})"
            )));
        }
        Ok(spec)
    }

    fn dest_is_dir(&self) -> bool {
        self.dest.ends_with('/')
    }
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "git@", "git://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// What a copy reads, and the digest of it (the cache key's part).
#[derive(Debug)]
pub(super) struct Sources {
    kind: Kind,
    pub digest: String,
}

#[derive(Debug)]
enum Kind {
    /// Context paths (resolved on the host) with the names they were asked by.
    Context(Vec<(String, PathBuf)>),
    /// Paths in an image's filesystem (`--from`).
    Image(Box<ImageRecord>, Vec<String>),
}

impl Sources {
    pub fn gather(build: &Build<'_>, spec: &CopySpec) -> Result<Self, BuildError> {
        if let Some(from) = &spec.from {
            let image = match build.stage_image(from) {
                Some(Some(image)) => image,
                Some(None) => {
                    return Err(BuildError::invalid(
                        "COPY",
                        format!("stage {from} made no image to copy from"),
                    ));
                }
                None => build.image(from)?,
            };
            if spec.sources.iter().any(|s| super::context::is_pattern(s)) {
                return Err(BuildError::Unsupported(
                    "COPY --from with wildcards is not supported yet".into(),
                ));
            }
            let digest = key(&[&image.id.to_string(), &spec.sources.join("\0")]);
            return Ok(Self {
                kind: Kind::Image(Box::new(image), spec.sources.clone()),
                digest,
            });
        }
        let ctx = build.context;
        let mut found = Vec::new();
        for s in &spec.sources {
            let names = match super::context::is_pattern(s) {
                true => ctx.glob(s)?,
                false => vec![s.clone()],
            };
            if names.is_empty() {
                return Err(ContextError::NotFound(s.clone()).into());
            }
            for n in names {
                let path = ctx.resolve(&n)?;
                found.push((n, path));
            }
        }
        let mut h = Sha256::new();
        for (name, path) in &found {
            h.update(name.as_bytes());
            hash_tree(&mut h, path)?;
        }
        Ok(Self {
            kind: Kind::Context(found),
            digest: hex::encode(h.finalize()),
        })
    }
}

/// Feeds what a copy of `path` depends on (names, kinds, modes, link targets, contents; not
/// times) to `h`.
fn hash_tree(h: &mut Sha256, path: &Path) -> Result<(), BuildError> {
    let io = |e| BuildError::Context(ContextError::Io(format!("read {}", path.display()), e));
    let meta = fs::symlink_metadata(path).map_err(io)?;
    h.update(meta.mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(
            fs::read_link(path)
                .map_err(io)?
                .as_os_str()
                .as_encoded_bytes(),
        );
    } else if meta.is_file() {
        let mut f = fs::File::open(path).map_err(io)?;
        io::copy(&mut f, h).map_err(io)?;
    } else if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            h.update(b"/");
            h.update(n.as_encoded_bytes());
            hash_tree(h, &path.join(n))?;
        }
    }
    Ok(())
}

/// One entry of the tar a copy makes.
struct Item {
    /// Relative to `/`.
    path: String,
    body: Body,
    mode: u32,
    mtime: u64,
    owner: (u64, u64),
}

enum Body {
    File(PathBuf),
    Bytes(Vec<u8>),
    Dir,
    Symlink(PathBuf),
    HardLink(String),
}

/// Makes the copy's layer: in a sandbox of the step's image, or on the host for an image
/// with no layer yet.
pub(super) fn make_layer(
    build: &Build<'_>,
    st: &Stage,
    spec: &CopySpec,
    sources: &Sources,
) -> Result<(Digest, u64), BuildError> {
    let sandbox = match st.image.as_ref().filter(|i| !i.layers.is_empty()) {
        Some(image) => Some(StepBox::open(
            build.engine,
            image,
            build.isolation,
            Some("none"),
        )?),
        None => None,
    };
    let owner = owner(spec.chown.as_deref(), sandbox.as_ref())?;
    let mut items = items(build, spec, sources, sandbox.as_ref())?;
    let epoch = build.opts.source_date_epoch;
    for item in &mut items {
        if let Some(o) = owner {
            item.owner = o;
        }
        if let Some(m) = spec.chmod {
            item.mode = m;
        }
        if let Some(e) = epoch.and_then(|e| u64::try_from(e).ok()) {
            item.mtime = item.mtime.min(e);
        }
    }
    match sandbox {
        Some(sandbox) => {
            let (mut reader, writer) = io::pipe().map_err(local("make a pipe"))?;
            std::thread::scope(|s| {
                let writing = s.spawn(move || write_tar(writer, &items));
                let put = sandbox.put(&mut reader);
                drop(reader);
                let wrote = writing
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the tar writer panicked")));
                put?;
                wrote.map_err(local("write the copy's archive"))
            })?;
            clamped(&build.store, sandbox.layer()?, epoch)
        }
        None => {
            let now = epoch
                .and_then(|e| u64::try_from(e).ok())
                .unwrap_or_else(|| chrono::Utc::now().timestamp().max(0) as u64);
            let mut all = parents(&items, now);
            all.extend(items);
            let (reader, writer) = io::pipe().map_err(local("make a pipe"))?;
            std::thread::scope(|s| {
                let writing = s.spawn(move || write_tar(writer, &all));
                let stored = rootfs::archive::ingest_layer(&build.store, reader);
                let wrote = writing
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the tar writer panicked")));
                let stored = stored?;
                wrote.map_err(local("write the copy's layer"))?;
                Ok(stored)
            })
        }
    }
}

fn local(what: &'static str) -> impl Fn(io::Error) -> BuildError {
    move |e| BuildError::Files(crate::files::FilesError::Local(what.into(), e))
}

/// The entries of the copy, placed at their destinations.
fn items(
    build: &Build<'_>,
    spec: &CopySpec,
    sources: &Sources,
    sandbox: Option<&StepBox<'_>>,
) -> Result<Vec<Item>, BuildError> {
    let count = match &sources.kind {
        Kind::Context(found) => found.len(),
        Kind::Image(_, paths) => paths.len(),
    };
    if count > 1 && !spec.dest_is_dir() {
        return Err(BuildError::invalid(
            spec.instruction,
            "When using COPY with more than one source file, the destination must be a directory and end with a /",
        ));
    }
    let dest = spec.dest.trim_end_matches('/');
    // Where a single file goes: into a directory destination, else at the destination.
    let into_dir = |sandbox: Option<&StepBox<'_>>| -> Result<bool, BuildError> {
        Ok(spec.dest_is_dir()
            || count > 1
            || sandbox.map_or(Ok(false), |s| s.is_dir(&spec.dest))?)
    };
    let mut items = Vec::new();
    match &sources.kind {
        Kind::Context(found) => {
            for (name, path) in found {
                let meta =
                    fs::metadata(path).map_err(|e| ContextError::Io(format!("stat {name}"), e))?;
                if meta.is_dir() {
                    walk(path, dest, &mut items)?;
                } else if spec.instruction == "ADD" && is_archive(path)? {
                    unpack_archive(path, dest, &mut items)?;
                } else {
                    let base = Path::new(name)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| name.clone());
                    let target = match into_dir(sandbox)? {
                        true => format!("{dest}/{base}"),
                        false => dest.to_owned(),
                    };
                    items.push(file_item(&target, path, &meta));
                }
            }
        }
        Kind::Image(image, paths) => {
            let source = StepBox::open(build.engine, image, build.isolation, Some("none"))?;
            for p in paths {
                let mut tar = Vec::new();
                source.get(&absolute("/", p), &mut tar)?;
                from_image_tar(&tar, dest, into_dir(sandbox)?, &mut items)?;
            }
        }
    }
    Ok(items)
}

fn file_item(target: &str, path: &Path, meta: &fs::Metadata) -> Item {
    Item {
        path: rel(target),
        body: Body::File(path.to_owned()),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime().max(0) as u64,
        owner: (0, 0),
    }
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// A context directory's contents under `dest` (symlinks as links, not followed).
fn walk(dir: &Path, dest: &str, items: &mut Vec<Item>) -> Result<(), BuildError> {
    let io = |e| BuildError::Context(ContextError::Io(format!("read {}", dir.display()), e));
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let target = format!("{dest}/{name}");
        let path = e.path();
        let meta = fs::symlink_metadata(&path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        let mtime = meta.mtime().max(0) as u64;
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&path).map_err(io)?;
            items.push(Item {
                path: rel(&target),
                body: Body::Symlink(link),
                mode,
                mtime,
                owner: (0, 0),
            });
        } else if meta.is_dir() {
            items.push(Item {
                path: rel(&target),
                body: Body::Dir,
                mode,
                mtime,
                owner: (0, 0),
            });
            walk(&path, &target, items)?;
        } else if meta.is_file() {
            items.push(file_item(&target, &path, &meta));
        }
    }
    Ok(())
}

/// Whether ADD unpacks `path`: a gzip stream or a tar (`ustar` at 257).
fn is_archive(path: &Path) -> Result<bool, BuildError> {
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path)
        .map_err(|e| ContextError::Io(format!("read {}", path.display()), e))?;
    let n = read_full(&mut f, &mut head)
        .map_err(|e| ContextError::Io(format!("read {}", path.display()), e))?;
    let head = &head[..n];
    if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(BuildError::Unsupported(format!(
            "ADD {}: bzip2 and xz archives are not unpacked yet (use a plain or gzip tar)",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )));
    }
    Ok(head.starts_with(&[0x1f, 0x8b]) || head.get(257..262) == Some(b"ustar"))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// ADD's archive, unpacked under `dest`: entries with `..` or odd types are refused.
fn unpack_archive(path: &Path, dest: &str, items: &mut Vec<Item>) -> Result<(), BuildError> {
    let bad = |e: io::Error| ContextError::Io(format!("unpack {}", path.display()), e);
    let file = fs::File::open(path).map_err(bad)?;
    let reader = super::context::gunzipped(file).map_err(bad)?;
    read_tar(reader, dest, None, items).map_err(|e| BuildError::Context(bad(e)))
}

/// The entries of an image path's tar (rooted at its last component): a directory's
/// contents go into `dest`; a file goes into it when `into_dir`, else becomes `dest`.
fn from_image_tar(
    tar: &[u8],
    dest: &str,
    into_dir: bool,
    items: &mut Vec<Item>,
) -> Result<(), BuildError> {
    let bad = |e: io::Error| BuildError::Files(crate::files::FilesError::BadArchive(e.to_string()));
    let mut archive = tar::Archive::new(tar);
    let first = archive.entries().map_err(bad)?.next();
    let Some(first) = first else { return Ok(()) };
    let first = first.map_err(bad)?;
    let root = first
        .path()
        .map_err(bad)?
        .to_string_lossy()
        .trim_end_matches('/')
        .to_owned();
    let is_dir = first.header().entry_type().is_dir();
    drop(first);
    let single = match (is_dir, into_dir) {
        (true, _) => None,
        (false, true) => Some(format!("{dest}/{root}")),
        (false, false) => Some(dest.to_owned()),
    };
    read_tar(tar, dest, Some((&root, single.as_deref())), items).map_err(bad)
}

/// Reads tar entries into items under `dest`. With `root`, entry names start with that
/// root: the root itself is skipped (a directory) or placed at the given path (a file).
fn read_tar(
    input: impl Read,
    dest: &str,
    root: Option<(&str, Option<&str>)>,
    items: &mut Vec<Item>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let h = entry.header().clone();
        let kind = h.entry_type();
        let target = match root {
            Some((r, Some(single))) if name == r => single.to_owned(),
            Some((r, None)) if name == r => continue,
            Some((r, _)) => match name.strip_prefix(&format!("{r}/")) {
                Some(rest) => format!("{dest}/{}", clean_rel(rest)?),
                None => continue,
            },
            None => format!("{dest}/{}", clean_rel(&name)?),
        };
        let body = match () {
            _ if kind.is_dir() => Body::Dir,
            _ if kind.is_symlink() => Body::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            ),
            _ if kind.is_hard_link() => {
                let link = entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let link = match root {
                    Some((r, _)) => link
                        .strip_prefix(&format!("{r}/"))
                        .unwrap_or(&link)
                        .to_owned(),
                    None => link,
                };
                Body::HardLink(rel(&format!("{dest}/{}", clean_rel(&link)?)))
            }
            _ if kind.is_file() => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                Body::Bytes(data)
            }
            _ => continue,
        };
        items.push(Item {
            path: rel(&target),
            body,
            mode: h.mode()? & 0o7777,
            mtime: h.mtime()?,
            owner: (h.uid()?, h.gid()?),
        });
    }
    Ok(())
}

/// A relative archive name with `.` dropped; `..` and absolute names refused.
fn clean_rel(name: &str) -> io::Result<String> {
    let mut parts = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("archive entry {name:?} leaves its directory"),
                ));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The directories above every item, for a layer written on the host (docker makes
/// missing parents root's, 0755).
fn parents(items: &[Item], mtime: u64) -> Vec<Item> {
    let mut dirs = std::collections::BTreeSet::new();
    for item in items {
        let mut p = Path::new(&item.path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    let explicit: std::collections::HashSet<&str> = items
        .iter()
        .filter(|i| matches!(i.body, Body::Dir))
        .map(|i| i.path.as_str())
        .collect();
    dirs.into_iter()
        .filter(|d| !explicit.contains(d.as_str()))
        .map(|d| Item {
            path: d,
            body: Body::Dir,
            mode: 0o755,
            mtime,
            owner: (0, 0),
        })
        .collect()
}

fn write_tar(out: impl Write, items: &[Item]) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mode(item.mode);
        h.set_mtime(item.mtime);
        h.set_uid(item.owner.0);
        h.set_gid(item.owner.1);
        match &item.body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", item.path), io::empty())?;
            }
            Body::File(path) => {
                let f = fs::File::open(path)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(f.metadata()?.len());
                tar.append_data(&mut h, &item.path, f)?;
            }
            Body::Bytes(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, &item.path, data.as_slice())?;
            }
            Body::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &item.path, target)?;
            }
            Body::HardLink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, &item.path, target)?;
            }
        }
    }
    tar.into_inner()?.flush()
}

/// `--chown=USER[:GROUP]` as numbers: names looked up in the image's `/etc/passwd` and
/// `/etc/group` (a number alone is also the group, as docker does).
fn owner(
    chown: Option<&str>,
    sandbox: Option<&StepBox<'_>>,
) -> Result<Option<(u64, u64)>, BuildError> {
    let Some(spec) = chown else { return Ok(None) };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| -> Result<String, BuildError> {
        let sandbox = sandbox.ok_or_else(|| {
            BuildError::invalid(
                "COPY",
                format!("--chown={spec}: names need an image with {path}"),
            )
        })?;
        Ok(String::from_utf8_lossy(&sandbox.read_file(path)?.unwrap_or_default()).into_owned())
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => lookup(&read("/etc/passwd")?, user)
            .map(|f| (f.0, f.1))
            .ok_or_else(|| {
                BuildError::invalid(
                    "COPY",
                    format!("unable to find user {user}: no matching entries in passwd file"),
                )
            })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup(&read("/etc/group")?, g)
                .map(|f| f.0)
                .ok_or_else(|| {
                    BuildError::invalid(
                        "COPY",
                        format!("unable to find group {g}: no matching entries in group file"),
                    )
                })?,
        },
    };
    Ok(Some((uid, gid)))
}

/// In a passwd or group file: `name`'s third and fourth fields (ID, and the primary group
/// for passwd).
fn lookup(file: &str, name: &str) -> Option<(u64, u64)> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| {
            let id = f.get(2)?.parse().ok()?;
            Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id)))
        })?
    })
}

/// With `SOURCE_DATE_EPOCH`, the layer again with no time after it (a new blob; the old
/// one is dropped).
pub(super) fn clamped(
    store: &Store,
    layer: (Digest, u64),
    epoch: Option<i64>,
) -> Result<(Digest, u64), BuildError> {
    let Some(epoch) = epoch.and_then(|e| u64::try_from(e).ok()) else {
        return Ok(layer);
    };
    let blob = store.open_blob(&layer.0)?;
    let (reader, writer) = io::pipe().map_err(local("make a pipe"))?;
    let stored = std::thread::scope(|s| {
        let writing = s.spawn(move || rewrite(blob, writer, epoch));
        let stored = rootfs::archive::ingest_layer(store, reader);
        let wrote = writing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the layer rewriter panicked")));
        let stored = stored?;
        wrote.map_err(local("rewrite the layer's times"))?;
        Ok::<_, BuildError>(stored)
    })?;
    if stored.0 != layer.0 {
        store.remove_unreferenced(std::slice::from_ref(&layer.0))?;
    }
    Ok(stored)
}

fn rewrite(input: impl Read, out: impl Write, epoch: u64) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut tar = tar::Builder::new(out);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut h = entry.header().clone();
        h.set_mtime(h.mtime()?.min(epoch));
        let kind = h.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let link = entry
                .link_name()?
                .map(|l| l.into_owned())
                .unwrap_or_default();
            tar.append_link(&mut h, &path, link)?;
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            tar.append_data(&mut h, &path, data.as_slice())?;
        }
    }
    tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_by_number_and_name() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
        assert_eq!(lookup(passwd, "www"), Some((33, 34)));
        assert_eq!(lookup(passwd, "nobody"), None);
        assert_eq!(owner(Some("1000"), None).unwrap(), Some((1000, 1000)));
        assert_eq!(owner(Some("1:2"), None).unwrap(), Some((1, 2)));
        assert!(
            owner(Some("www"), None).is_err(),
            "names need the image's files"
        );
    }

    #[test]
    fn archive_names_stay_below_the_destination() {
        assert_eq!(clean_rel("./a/./b").unwrap(), "a/b");
        assert!(clean_rel("a/../../etc").is_err());
    }

    #[test]
    fn host_layers_get_their_parent_directories() {
        let items = vec![Item {
            path: "srv/www/index.html".into(),
            body: Body::Bytes(b"hi".to_vec()),
            mode: 0o644,
            mtime: 1,
            owner: (0, 0),
        }];
        let dirs: Vec<String> = parents(&items, 7).into_iter().map(|i| i.path).collect();
        assert_eq!(dirs, ["srv", "srv/www"]);
    }
}
