//! Container lifecycle: state, the per-container shim, networks, volumes. For now: where
//! husk keeps its files, what this host can do (`husk info`), booting a guest in a
//! microVM with boot milestones (`husk vm boot`), and the VMM benchmark (`husk bench vmm`).

pub mod bench;
pub mod guest;
pub mod info;
pub mod paths;
pub mod units;
