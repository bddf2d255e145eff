//! Container lifecycle: state, the per-container shim, networks, volumes. For now: where
//! husk keeps its files, what this host can do (`husk info`), booting a guest in a
//! microVM with boot milestones (`husk vm boot`), the VMM benchmark (`husk bench vmm`), and
//! the host side of the agent protocol (`agent_client`), and containers: their state
//! (`container`, `logs`), the verbs (`lifecycle`), the per-container `shim` and the two
//! isolation backends (`sandbox`); the engine every front end drives (`engine`) and image
//! builds from Dockerfiles (`build`).

pub mod agent_client;
pub mod bench;
pub mod build;
pub mod caps;
pub mod container;
pub mod device;
pub mod engine;
pub mod events;
pub mod files;
pub mod guest;
pub mod health;
pub mod info;
pub mod lifecycle;
pub mod logs;
pub mod netverbs;
pub mod network;
pub mod paths;
pub mod procfs;
pub mod sandbox;
pub mod settings;
pub mod shim;
pub mod signal;
pub mod sockpath;
pub mod spec;
pub mod stats;
pub mod timing;
pub mod tools;
pub mod ulimit;
pub mod units;
pub mod update;
pub mod volumes;
pub mod volverbs;
