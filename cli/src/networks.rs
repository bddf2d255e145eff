//! `husk network ...`: create, ls, inspect, rm, prune, connect, disconnect.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use runtime::netverbs;
use runtime::network::{self, defs, view};

use crate::format::Format;
use crate::human;

/// `husk network ...`.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail.
    Inspect(InspectArgs),
    /// Remove networks no container runs on.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove every user network no container runs on.
    Prune(PruneArgs),
    /// Connect a container to a network (a running one at once).
    Connect(ConnectArgs),
    /// Disconnect a container from a network (a running one at once).
    Disconnect(DisconnectArgs),
}

/// `husk network create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Subnet in CIDR form [default: the first free /24 of 10.89.0.0/16].
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway (the bridge's own address) [default: the subnet's first address].
    #[arg(long)]
    gateway: Option<String>,
    /// No traffic in or out of the network but between its containers.
    #[arg(long)]
    internal: bool,
    /// The driver (only bridge).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Metadata (KEY=VALUE).
    #[arg(long)]
    label: Vec<String>,
    /// The network's name.
    name: String,
}

/// `husk network ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs.
    #[arg(long)]
    no_trunc: bool,
    /// A Go template per network, or `table TEMPLATE`.
    #[arg(long)]
    format: Option<String>,
}

/// `husk network inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A Go template over each network's JSON.
    #[arg(short, long)]
    format: Option<String>,
    /// Networks (names or IDs).
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `husk network rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Networks (names or IDs).
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `husk network prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// `husk network connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// A name the network resolves to the container.
    #[arg(long)]
    alias: Vec<String>,
    /// The container's IPv4 address on the network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// `husk network disconnect`.
#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Accepted for docker's sake (the container is always taken off the network).
    #[arg(short, long)]
    force: bool,
    /// The network.
    network: String,
    /// The container.
    container: String,
}

/// Runs a `network` verb.
pub fn run(cmd: NetworkCommand, root: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        NetworkCommand::Create(a) => create(a, root),
        NetworkCommand::Ls(a) => ls(a, root),
        NetworkCommand::Inspect(a) => inspect(a, root),
        NetworkCommand::Rm(a) => rm(a, root),
        NetworkCommand::Prune(a) => prune(a, root),
        NetworkCommand::Connect(a) => {
            let o = netverbs::ConnectOptions {
                aliases: a.alias,
                ip: a.ip,
            };
            netverbs::connect(root, &a.network, &a.container, &o)?;
            Ok(ExitCode::SUCCESS)
        }
        NetworkCommand::Disconnect(a) => {
            let _ = a.force;
            netverbs::disconnect(root, &a.network, &a.container)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(a: CreateArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if a.driver != "bridge" {
        anyhow::bail!(
            "plugin \"{}\" not found: husk has the bridge driver only",
            a.driver
        );
    }
    let labels = runtime::spec::labels(BTreeMap::new(), &a.label);
    let o = defs::CreateOptions {
        name: a.name,
        subnet: a.subnet,
        gateway: a.gateway,
        internal: a.internal,
        labels,
    };
    let net = defs::create(root, &o)?;
    println!("{}", net.id);
    Ok(ExitCode::SUCCESS)
}

fn ls(a: LsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let nets = defs::list(root)?;
    let id = |n: &defs::Net| match a.no_trunc {
        true => n.id.clone(),
        false => n.id[..12].to_string(),
    };
    if a.quiet {
        for n in &nets {
            println!("{}", id(n));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<serde_json::Value> = nets
        .iter()
        .map(|n| {
            let mut row = view::row(n);
            row["ID"] = id(n).into();
            row
        })
        .collect();
    let spec = a
        .format
        .unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into());
    let headers = [
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv4", "IPV4"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
    ];
    print!("{}", Format::parse(&spec)?.render_rows(&rows, &headers)?);
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: InspectArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for q in &a.networks {
        match defs::find(root, q) {
            Ok(net) => found.push(view::inspect(root, &net)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    crate::format::print_inspected(&found, &errors, a.format.as_deref())
}

fn rm(a: RmArgs, root: &Path) -> anyhow::Result<ExitCode> {
    Ok(human::remove_each(&a.networks, |q| {
        network::remove_network(root, q).map(drop)
    }))
}

fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let warning =
        "WARNING! This will remove all custom networks not used by at least one container.";
    if !a.force && !human::confirm(warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let removed = netverbs::prune(root)?;
    if !removed.is_empty() {
        println!("Deleted Networks:");
        for n in removed {
            println!("{n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
