//! `husk build`: reads the Dockerfile, packs the context directory (what `.dockerignore`
//! excludes is never read) and streams it to the runtime's builder, as the docker CLI sends
//! it to a daemon; prints docker's plain progress, or only the image ID with `-q`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use runtime::build::{BuildOptions, DockerfileSource, Ignore, Output};
use runtime::engine::Engine;

/// `husk build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name the image (name[:tag]); may be given several times.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A build argument: NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// Build up to this stage (its name in `FROM ... AS name`).
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Run every step again instead of using the cache.
    #[arg(long)]
    no_cache: bool,
    /// Pull every FROM image, even one that is here.
    #[arg(long)]
    pull: bool,
    /// Sandbox of the steps: vm, process or auto [default: as `run`].
    #[arg(long, value_name = "vm|process|auto")]
    isolation: Option<String>,
    /// Network of RUN steps [default: bridge].
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// A label on the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// The build context: a directory.
    context: PathBuf,
}

/// `husk build`.
pub fn build(a: BuildArgs, root: &Path, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    let meta = std::fs::metadata(&a.context).ok().filter(|m| m.is_dir());
    if meta.is_none() {
        bail!(
            "unable to prepare context: path {:?} not found",
            a.context.display().to_string()
        );
    }
    let file = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&file).map_err(|_| {
        anyhow::anyhow!(
            "Cannot locate specified Dockerfile: {}",
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    })?;
    let opts = options(&a)?;
    let ignore = Ignore::read(&a.context)?;
    let engine = Engine::new(root.to_path_buf()).with_kvm_device(kvm_device);
    let out = Output::new(match a.quiet {
        true => Box::new(std::io::sink()),
        false => Box::new(std::io::stdout()),
    });
    let (reader, writer) = std::io::pipe().context("cannot make a pipe")?;
    let context = a.context.clone();
    let packing =
        std::thread::spawn(move || runtime::build::context::pack(&context, &ignore, writer));
    let built =
        runtime::build::build_tar(&engine, reader, &DockerfileSource::Text(text), &opts, &out);
    let packed = packing
        .join()
        .map_err(|_| anyhow::anyhow!("packing the build context panicked"))?;
    let built = built?;
    packed?;
    if a.quiet {
        println!("{}", built.image.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn options(a: &BuildArgs) -> anyhow::Result<BuildOptions> {
    let mut build_args = BTreeMap::new();
    for arg in &a.build_args {
        match arg.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_owned(), v.to_owned()),
            // As docker: a name alone takes the client's value, or is left out.
            None => match std::env::var(arg) {
                Ok(v) => build_args.insert(arg.clone(), v),
                Err(_) => None,
            },
        };
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    let tags = a
        .tags
        .iter()
        .map(|t| {
            rootfs::reference::Reference::parse(t)
                .with_context(|| format!("invalid argument {t:?} for \"-t, --tag\" flag"))
        })
        .collect::<anyhow::Result<_>>()?;
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .map(|s| {
            s.parse::<i64>()
                .with_context(|| format!("invalid SOURCE_DATE_EPOCH {s:?}: want seconds"))
        })
        .transpose()?;
    Ok(BuildOptions {
        tags,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull: a.pull,
        isolation: a.isolation.clone(),
        network: a.network.clone(),
        labels,
        source_date_epoch: epoch,
    })
}
