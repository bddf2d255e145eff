//! Architecture-specific code. husk's microVMs are x86_64 only for now.

pub mod x86_64;
