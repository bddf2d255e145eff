#!/usr/bin/env bash
# Builds husk-agent as a fully static x86-64 binary (the guest initramfs has no dynamic
# loader), copies it to <workspace>/target/husk-agent, and prints that path as the last line
# of stdout. Everything else goes to stderr.
#
# Prefers x86_64-unknown-linux-musl (adding the rustup target if missing); falls back to a
# static glibc build (-C target-feature=+crt-static) when musl is unavailable.
# HUSK_AGENT_LIBC=musl|gnu forces one of them (default: auto). Symbols are stripped: the
# binary is copied into every guest's initramfs, and release builds abort on panic anyway.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${target_dir:-$root/target}"
out="$root/target/husk-agent"
musl=x86_64-unknown-linux-musl
gnu=x86_64-unknown-linux-gnu

log() { echo "build-agent: $*" >&2; }

have_musl() {
  command -v rustup >/dev/null 2>&1 || return 1
  if ! rustup target list --installed | grep -qx "$musl"; then
    log "rust target $musl missing, running: rustup target add $musl"
    rustup target add "$musl" >&2 || return 1
  fi
}

libc="${HUSK_AGENT_LIBC:-auto}"
case "$libc" in
  auto | musl | gnu) ;;
  *) log "error: HUSK_AGENT_LIBC must be auto, musl or gnu, not '$libc'"; exit 2 ;;
esac
# The workspace's release profile keeps symbols; strip the agent only (a package override,
# since the manifest's package override would win over a profile-wide one).
strip_cfg='profile.release.package.agent.strip="symbols"'
# Every crate the agent links optimised for size, as the agent itself is (Cargo.toml): the
# guest kernel copies the initramfs byte by byte at boot, ~1 M emulated instructions per
# MB on PVM hosts (docs/guest-kernel.md). Only this build sees it: the agent's target
# directory holds nothing the host binaries use.
size_cfg='profile.release.package."*".opt-level="z"'

built=""
if [ "$libc" != gnu ] && have_musl; then
  # The musl target is there: a failed build is a bug in the agent for musl, not a reason
  # to ship a different libc silently (that once hid a musl-only compile error).
  if ! cargo build --release -p agent --target "$musl" --config "$strip_cfg" --config "$size_cfg" >&2; then
    log "error: the agent does not build for $musl"
    exit 1
  fi
  built="$target_dir/$musl/release/husk-agent"
elif [ "$libc" = musl ]; then
  log "error: no $musl target and HUSK_AGENT_LIBC=musl forbids the glibc fallback"
  exit 1
else
  log "building static glibc ($gnu, +crt-static) instead of musl"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p agent --target "$gnu" --config "$strip_cfg" --config "$size_cfg" >&2
  built="$target_dir/$gnu/release/husk-agent"
fi

# Really static: no program interpreter, no dynamic libraries.
if readelf -lW "$built" | grep -q 'INTERP'; then
  log "error: $built has a PT_INTERP (dynamically linked); refusing it"
  exit 1
fi
if readelf -dW "$built" 2>/dev/null | grep -q '(NEEDED)'; then
  log "error: $built needs shared libraries; refusing it"
  exit 1
fi
if command -v file >/dev/null 2>&1; then
  log "$(file -b "$built")"
fi

mkdir -p "$(dirname "$out")"
install -m 0755 "$built" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
log "static agent: $(stat -c %s "$out") bytes"
echo "$out"
