//! Device models and the buses the vCPUs dispatch port and MMIO accesses through.

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

pub use bus::{Bus, BusDevice};
