//! Registry verbs: `husk pull`, `husk push`, `husk login` and `husk logout`. Output follows docker's; as docker does for
//! these verbs (and husk's other image verbs), a failure prints `Error: ...` and exits 1.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use rootfs::reference::Reference;
use rootfs::registry::{self, Credentials, PullOptions, progress};
use rootfs::store::Store;

/// `husk pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image to pull: `name[:tag]` or `name@sha256:...`.
    image: String,
    /// Print only the image name.
    #[arg(short, long)]
    quiet: bool,
    /// Allow plain HTTP to this registry (`host[:port]`; repeatable). Loopback registries
    /// are always allowed; `insecure-registries` in `<root>/daemon.json` also counts.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// Blobs downloaded at once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    max_concurrent_downloads: u16,
    /// Download only; do not build the layer disks (for benchmarks against `skopeo copy`).
    #[arg(long, hide = true)]
    no_layer_disks: bool,
}

/// `husk login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host (`host[:port]`); Docker Hub when omitted.
    server: Option<String>,
    /// User name (asked on a terminal when omitted).
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Allow plain HTTP to this registry (`host[:port]`; repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
}

/// `husk pull`.
pub fn pull(a: PullArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(&a.image)?;
    let untagged = Reference::parse_name_parts(&a.image)
        .is_ok_and(|r| r.tag().is_none() && r.digest().is_none());
    let progress: Box<dyn progress::Progress> = if a.quiet {
        Box::new(progress::Silent)
    } else {
        if untagged {
            println!("Using default tag: latest");
        }
        progress::for_stdout()
    };
    let opts = PullOptions {
        insecure_registries: a.insecure,
        parallel: usize::from(a.max_concurrent_downloads),
    };
    let report = registry::pull(root, &reference, &opts, progress.as_ref())?;
    if !a.no_layer_disks {
        // A layer that cannot become a disk (hostile or broken) takes the new image out
        // again, as `load` and `import` do: the store only holds usable images.
        let store = Store::open(root)?;
        crate::images::build_disks(root, &store, &report.image)?;
    }
    crate::images::event(
        root,
        "pull",
        &reference.to_string(),
        Some(&reference.to_string()),
    );
    drop(progress);
    if !a.quiet {
        println!("Digest: {}", report.digest);
        let status = if report.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        println!("Status: {status} {}", reference.familiar());
    }
    println!("{reference}");
    Ok(ExitCode::SUCCESS)
}

/// `run --pull`: when the image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when it is not in the store (docker's default).
    Missing,
    /// Every time.
    Always,
    /// Never: a missing image is an error.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "missing" => Ok(Self::Missing),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => bail!(
                "invalid pull option: '{s}': must be one of \"always\", \"missing\" or \"never\""
            ),
        }
    }
}

/// The implicit pull of `run`: as `husk pull`, with everything on stderr (stdout is the
/// workload's), and docker's lines around it.
pub fn pull_for_run(root: &Path, name: &str) -> anyhow::Result<()> {
    let reference = Reference::parse(name)?;
    let progress = progress::for_stderr();
    let report = runtime::engine::images::pull(root, &reference, Vec::new(), progress.as_ref())?;
    drop(progress);
    eprintln!("Digest: {}", report.digest);
    let status = match report.up_to_date {
        true => "Image is up to date for",
        false => "Downloaded newer image for",
    };
    eprintln!("Status: {status} {}", reference.familiar());
    Ok(())
}

/// `husk push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image to push: `registry/name[:tag]`.
    image: String,
    /// Print only the image name.
    #[arg(short, long)]
    quiet: bool,
    /// Allow plain HTTP to this registry (`host[:port]`; repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
}

/// `husk push`: docker's lines (the repository, each layer, the tag's digest and size).
pub fn push(a: PushArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(&a.image)?;
    let reference = match reference.tag().or(reference.digest().map(|_| "")) {
        Some(_) => reference,
        None => Reference::parse(&format!("{}:latest", a.image))?,
    };
    let opts = registry::PushOptions {
        insecure_registries: a.insecure,
    };
    if !a.quiet {
        println!(
            "The push refers to repository [{}/{}]",
            reference.registry(),
            reference.repository()
        );
    }
    let quiet = a.quiet;
    let report = registry::push(root, &reference, &opts, &mut |line| {
        if !quiet {
            println!("{line}");
        }
    })?;
    crate::images::event(
        root,
        "push",
        &reference.to_string(),
        Some(&reference.to_string()),
    );
    match quiet {
        true => println!("{reference}"),
        false => println!(
            "{}: digest: {} size: {}",
            report.tag, report.digest, report.size
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host (`host[:port]`); Docker Hub when omitted.
    server: Option<String>,
}

/// `husk logout`: forgets husk's saved credentials for a registry (docker's output).
pub fn logout(a: LogoutArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let server = registry::registry_host(a.server.as_deref())?;
    match registry::credentials::remove(root, &server)? {
        true => println!("Removing login credentials for {server}"),
        false => println!("Not logged in to {server}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk login`.
pub fn login(a: LoginArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let server = registry::registry_host(a.server.as_deref())?;
    let username = match a.username {
        Some(u) => u,
        None => prompt_username()?,
    };
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from stdin")?;
            s.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => bail!("no password given: use --password-stdin (or -p)"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let creds = Credentials { username, password };
    registry::login(root, &server, &creds, &a.insecure)?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

fn prompt_username() -> anyhow::Result<String> {
    if !io::stdin().is_terminal() {
        bail!("no user name given: use -u");
    }
    print!("Username: ");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}
