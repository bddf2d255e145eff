//! `husk-shim --root R ID`: the per-container shim as its own small program (what the
//! runtime's tests start through `HUSK_SHIM`; `husk shim` is the same code).

fn main() {
    std::process::exit(runtime::shim::main(std::env::args_os().collect()));
}
