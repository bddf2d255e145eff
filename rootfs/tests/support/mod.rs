//! Shared helpers of the rootfs integration tests.
#![allow(dead_code)]

pub mod http;
pub mod oci;
pub mod registry;
pub mod token;
