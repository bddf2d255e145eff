//! Container lifecycle: state, the per-container shim, networks, volumes.
