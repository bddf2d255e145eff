#!/usr/bin/env bash
# Builds husk's default images as root filesystem tarballs, cached by content hash under
# <cache>/images/<key>/ (<cache> = $HUSK_CACHE_DIR, else $XDG_CACHE_HOME/husk, else
# ~/.cache/husk, as rootfs::cache_dir finds it):
#   busybox.tar          Debian's busybox-static: /bin/busybox + applet symlinks, passwd, group, tmp
#   debian-bookworm.tar  Debian bookworm minbase made with debootstrap (minutes; needs root and
#                        the Debian mirror; HUSK_SKIP_DEBIAN=1 skips it)
# <cache>/images/busybox.tar and debian-bookworm.tar are symlinks to the current builds;
# rootfs::defaults imports them as husk/busybox:latest and husk/debian:bookworm.
# Reruns with unchanged inputs do nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "images: $*" >&2; }

if [ -n "${HUSK_CACHE_DIR:-}" ]; then
  cache="$HUSK_CACHE_DIR"
elif [[ "${XDG_CACHE_HOME:-}" == /* ]]; then
  cache="$XDG_CACHE_HOME/husk"
else
  cache="$HOME/.cache/husk"
fi
images="$cache/images"
mkdir -p "$images"

# key NAME INPUTS...: content hash of this script plus the inputs.
key() {
  { cat "$here/images.sh"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

# publish NAME KEY: point the stable symlink at the cached build, atomically.
publish() {
  ln -sfn "$2/$1" "$images/.$1.link"
  mv -T "$images/.$1.link" "$images/$1"
}

# pack DIR OUT: a reproducible tar of DIR (sorted, numeric root ownership kept as is).
pack() {
  tar --sort=name --numeric-owner --xattrs --xattrs-include='*' -C "$1" -cf "$2" .
}

build_busybox() {
  local bb=/bin/busybox version k dir tmp
  [ -x "$bb" ] || { log "error: $bb missing: install busybox-static"; exit 1; }
  version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || sha256sum "$bb")
  k=$(key busybox "$version" "$(sha256sum "$bb")")
  dir="$images/$k"
  if [ ! -f "$dir/busybox.tar" ]; then
    log "building busybox image ($version)"
    tmp=$(mktemp -d "$images/.build.XXXXXX")
    trap 'rm -rf "$tmp"' RETURN
    local r="$tmp/rootfs"
    mkdir -p "$r"/{bin,etc,root,tmp,proc,sys,dev,home,var/tmp}
    chmod 1777 "$r/tmp" "$r/var/tmp"
    chmod 700 "$r/root"
    cp "$bb" "$r/bin/busybox"
    for applet in $("$bb" --list); do
      [ "$applet" = busybox ] || ln -s busybox "$r/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
    find "$r" -exec touch -h -d @0 {} +
    mkdir -p "$tmp/out"
    (umask 022; pack "$r" "$tmp/out/busybox.tar")
    rm -rf "$dir" && mv "$tmp/out" "$dir"
  fi
  publish busybox.tar "$k"
  log "busybox: $images/busybox.tar"
}

build_debian() {
  local suite=bookworm mirror k dir tmp
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  k=$(key debian "$suite" "$mirror" "$(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || true)")
  dir="$images/$k"
  if [ ! -f "$dir/debian-$suite.tar" ]; then
    command -v debootstrap >/dev/null || { log "error: debootstrap missing (scripts/prepare.sh installs it)"; exit 1; }
    [ "$(id -u)" -eq 0 ] || { log "error: debootstrap needs root (or set HUSK_SKIP_DEBIAN=1)"; exit 1; }
    log "building debian $suite minbase with debootstrap from $mirror (takes minutes, cached)"
    tmp=$(mktemp -d "$images/.build.XXXXXX")
    trap 'rm -rf "$tmp"' RETURN
    debootstrap --variant=minbase "$suite" "$tmp/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
      tail -20 "$tmp/debootstrap.log" >&2; log "error: debootstrap failed"; exit 1; }
    rm -rf "$tmp/rootfs"/var/cache/apt/archives/*.deb "$tmp/rootfs"/var/lib/apt/lists/* "$tmp/rootfs"/var/log/*
    mkdir -p "$tmp/out"
    pack "$tmp/rootfs" "$tmp/out/debian-$suite.tar"
    rm -rf "$dir" && mv "$tmp/out" "$dir"
  fi
  publish "debian-$suite.tar" "$k"
  log "debian: $images/debian-$suite.tar"
}

build_busybox
if [ "${HUSK_SKIP_DEBIAN:-0}" = 1 ]; then
  log "HUSK_SKIP_DEBIAN=1: not building the debian image"
else
  build_debian
fi
