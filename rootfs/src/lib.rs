//! OCI images and guest disks: content store, layer block images, the agent initramfs.

pub mod archive;
mod cache;
pub mod cpio;
pub mod defaults;
pub mod digest;
pub mod duration;
mod elf;
pub mod initramfs;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod store;

pub use cache::{CacheError, cache_dir};
pub use elf::ElfError;
