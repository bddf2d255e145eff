//! OCI images and guest disks: content store, layer block images, the agent initramfs.

mod cache;
pub mod cpio;
mod elf;
pub mod initramfs;

pub use cache::{CacheError, cache_dir};
pub use elf::ElfError;
