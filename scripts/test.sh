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
# cargo-nextest (on the project's machines) runs every test of every binary from one
# queue, so the slow vm halves (a microVM boots for seconds under an emulating KVM) overlap
# across test files instead of each binary waiting for its slowest test. Three at a time
# keeps this 2-core machine busy while one test waits on its guest.
if cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo nextest run" >&2
  cargo nextest run --workspace --no-fail-fast --test-threads "${HUSK_TEST_THREADS:-3}"
else
  echo "== cargo test (cargo-nextest not installed)" >&2
  cargo test --workspace -- --test-threads=2
fi
