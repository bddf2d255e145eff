//! `husk`: argument parsing and printing only; every verb calls the `runtime` crate.
//! Errors print as one line on stderr and exit with docker's code 125.

mod logger;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Work with bare microVMs.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Benchmarks, each against a baseline in the same run.
    #[command(subcommand)]
    Bench(vm::BenchCommand),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("unknown log level {s:?}: use error, warn, info, debug or trace"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info { format } => {
            let root = runtime::paths::state_dir(cli.root.as_deref());
            let info = runtime::info::gather(&root, &cli.kvm_device);
            match format {
                Format::Text => print!("{}", runtime::info::render(&info)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&info)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm(cmd) => vm::run_vm(cmd, &cli.kvm_device),
        Command::Bench(cmd) => vm::run_bench(cmd, &cli.kvm_device),
    }
}

fn main() -> ExitCode {
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
