//! `husk`: argument parsing and printing only; every verb calls the `runtime` crate.
//! Errors print as one line on stderr and exit with docker's code 125.

mod build;
mod containers;
mod daemon;
mod events;
mod format;
mod human;
mod images;
mod logger;
mod networks;
mod registry;
mod system;
mod vm;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a failure of husk itself, as docker uses.
const EXIT_HUSK_FAILED: u8 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "husk",
    version,
    about = "Containers, each in its own KVM microVM"
)]
struct Cli {
    /// State directory (like docker's --data-root).
    #[arg(long, global = true, env = "HUSK_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// The KVM device.
    #[arg(
        long,
        global = true,
        env = "HUSK_KVM_DEVICE",
        default_value = "/dev/kvm",
        hide = true
    )]
    kvm_device: PathBuf,
    /// Log level on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "HUSK_LOG", default_value = "error", value_parser = parse_level)]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what this host is and what husk can do on it.
    Info {
        /// Output: text, json, or a Go template over the JSON (`{{.kvm.guests}}`).
        #[arg(short, long, default_value = "text", value_name = "FORMAT")]
        format: String,
    },
    /// Work with bare microVMs.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Benchmarks, each against a baseline in the same run.
    #[command(subcommand)]
    Bench(vm::BenchCommand),
    /// List images.
    Images(images::ListArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Add a name to an image.
    Tag(images::TagArgs),
    /// Load images from a docker-save tar or an OCI image layout.
    Load(images::LoadArgs),
    /// Save images to a docker-archive or OCI layout tar.
    Save(images::SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(images::ImportArgs),
    /// Build an image from a Dockerfile (every RUN in a sandbox, a microVM by default).
    Build(build::BuildArgs),
    /// Show an image's history.
    History(images::HistoryArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Pull an image from a registry.
    Pull(registry::PullArgs),
    /// Push an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry (credentials go to <root>/auth.json).
    Login(registry::LoginArgs),
    /// Log out from a registry (forget husk's saved credentials for it).
    Logout(registry::LogoutArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// Show husk's version.
    Version,
    /// Show what happens to containers and images, as it happens.
    Events(events::EventsArgs),
    /// Serve docker's Engine API on a unix socket (for the docker CLI, compose, SDKs).
    Daemon(daemon::DaemonArgs),
    /// Manage husk: disk usage, pruning.
    #[command(subcommand)]
    System(system::SystemCommand),
    #[command(flatten)]
    Containers(containers::ContainerCommand),
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level {s:?}: use error, warn, info, debug or trace"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = runtime::paths::state_dir(cli.root.as_deref());
    match cli.command {
        Command::Info { format } => {
            let info = runtime::info::gather(&root, &cli.kvm_device);
            match format.as_str() {
                "text" => print!("{}", runtime::info::render(&info)),
                "json" => println!("{}", serde_json::to_string_pretty(&info)?),
                template => {
                    let rendered = format::Format::parse(template)
                        .and_then(|f| f.render(&serde_json::to_value(&info)?));
                    match rendered {
                        Ok(text) => println!("{text}"),
                        Err(e) => return Ok(images::report(Err(e))),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm(cmd) => vm::run_vm(cmd, &cli.kvm_device),
        Command::Bench(cmd) => vm::run_bench(cmd, &cli.kvm_device),
        Command::Images(a) => Ok(images::report(images::list(a, &root))),
        Command::Rmi(a) => Ok(images::report(images::rmi(a, &root))),
        Command::Tag(a) => Ok(images::report(images::tag(a, &root))),
        Command::Load(a) => Ok(images::report(images::load(a, &root))),
        Command::Save(a) => Ok(images::report(images::save(a, &root))),
        Command::Import(a) => Ok(images::report(images::import(a, &root))),
        Command::Build(a) => Ok(images::report(build::build(a, &root, &cli.kvm_device))),
        Command::Image(c) => Ok(images::report(images::run_image(c, &root))),
        Command::History(a) => Ok(images::report(images::history(a, &root))),
        Command::Pull(a) => Ok(images::report(registry::pull(a, &root))),
        Command::Push(a) => Ok(images::report(registry::push(a, &root))),
        Command::Login(a) => Ok(images::report(registry::login(a, &root))),
        Command::Logout(a) => Ok(images::report(registry::logout(a, &root))),
        Command::Container(c) | Command::Containers(c) => {
            containers::dispatch(c, &root, &cli.kvm_device)
        }
        Command::Network(c) => Ok(images::report(networks::run(c, &root))),
        Command::Volume(c) => Ok(images::report(volumes::run(c, &root))),
        Command::System(c) => Ok(images::report(system::run(c, &root))),
        Command::Events(a) => Ok(images::report(events::events(a, &root))),
        Command::Daemon(a) => daemon::daemon(a, &root, &cli.kvm_device),
        Command::Version => {
            print!("{}", runtime::info::version(&root, &cli.kvm_device));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    // Hidden: `husk shim --root R ID` / `husk shim --vmm SPEC`, the per-container shim
    // (runtime::shim), dispatched before clap so its `--root` is not the global option.
    if std::env::args_os().nth(1).is_some_and(|a| a == "shim") {
        let code = runtime::shim::main(std::env::args_os().collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    runtime::timing::mark("cli.start");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_HUSK_FAILED } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    logger::init(cli.log_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("husk: {e:#}");
            ExitCode::from(EXIT_HUSK_FAILED)
        }
    }
}
