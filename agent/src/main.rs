//! husk-agent: PID 1 of every husk sandbox.
fn main() {}
