#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs and builds what it needs
# (scripts/prepare.sh; cached, so reruns are cheap), then formatting, clippy, and every
# test (unit, tiny guests under /dev/kvm, the real kernel booted to `Run /init`, agent
# in namespaces, end-to-end CLI). HUSK_REQUIRE_KVM=1 (CI) turns a missing /dev/kvm into
# a failure instead of a loudly skipped test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PROFILE=debug scripts/prepare.sh
echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --workspace -- --test-threads=2
