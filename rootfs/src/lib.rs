//! OCI images and guest disks: content store, layer block images, the agent initramfs.
