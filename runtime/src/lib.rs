//! Container lifecycle: state, the per-container shim, networks, volumes. For now: where
//! husk keeps its files, what this host can do (`husk info`), booting a guest in a
//! microVM with boot milestones (`husk vm boot`), the VMM benchmark (`husk bench vmm`), and
//! the host side of the agent protocol (`agent_client`).

pub mod agent_client;
pub mod bench;
pub mod guest;
pub mod info;
pub mod paths;
pub mod units;
