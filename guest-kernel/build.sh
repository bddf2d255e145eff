#!/usr/bin/env bash
# Build husk's guest kernel (an uncompressed ELF vmlinux with a PVH entry point)
# from Debian's kernel source package, and cache it by content hash.
#
#   guest-kernel/build.sh              build if needed; last stdout line = vmlinux path
#   guest-kernel/build.sh --print-key  print the cache key only
#
# Inputs (all of them, and only them, make up the cache key):
#   VERSION     "<debian package>=<debian version>", e.g. linux-source-6.12=6.12.117-1~deb12u1
#   config      Kconfig fragment merged onto `make tinyconfig`
#   patches/    *.patch, applied in name order with `patch -p1`
#   build.sh    this script
# key = first 16 hex chars of sha256 over those (see cache_key below).
#
# Output: $CACHE/kernel/<key>/{vmlinux,config,System.map,build-info}
#         $CACHE/kernel/vmlinux -> <key>/vmlinux   (the most recent build)
# with CACHE=${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}.
#
# Environment: HUSK_KERNEL_JOBS (default: nproc), HUSK_KERNEL_KEEP_WORKDIR=1 keeps
# the unpacked, built source tree (about 2 GiB) instead of deleting it.
#
# This script installs nothing. Debian/Ubuntu prerequisites:
#   apt-get install linux-source-6.12 build-essential bc flex bison libelf-dev libssl-dev
# See docs/guest-kernel.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$(realpath -m -- "${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}")
KDIR=$CACHE/kernel

log() { printf 'guest-kernel: %s\n' "$*" >&2; }
die() { printf 'guest-kernel: error: %s\n' "$*" >&2; exit 1; }

# --- Inputs and cache key -----------------------------------------------------
[[ -f $HERE/VERSION ]] || die "missing $HERE/VERSION"
[[ -f $HERE/config ]] || die "missing $HERE/config"
PIN=$(grep -v '^[[:space:]]*#' "$HERE/VERSION" | grep -m1 '=' | tr -d '[:space:]') ||
    die "$HERE/VERSION must contain a line <package>=<version>"
PKG=${PIN%%=*}
PKG_VERSION=${PIN#*=}
[[ -n $PKG && -n $PKG_VERSION && $PKG != "$PIN" ]] ||
    die "bad pin '$PIN' in $HERE/VERSION (want <package>=<version>)"

shopt -s nullglob
PATCHES=("$HERE"/patches/*.patch)
shopt -u nullglob

cache_key() {
    {
        printf 'version %s\n' "$PIN"
        printf 'config %s\n' "$(sha256sum <"$HERE/config" | cut -d' ' -f1)"
        local p
        for p in "${PATCHES[@]}"; do
            printf 'patch %s %s\n' "$(basename "$p")" "$(sha256sum <"$p" | cut -d' ' -f1)"
        done
        printf 'build.sh %s\n' "$(sha256sum <"$HERE/build.sh" | cut -d' ' -f1)"
    } | sha256sum | cut -c1-16
}
KEY=$(cache_key)

case ${1:-} in
    --print-key) echo "$KEY"; exit 0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

OUT=$KDIR/$KEY
VMLINUX=$OUT/vmlinux

# Point $KDIR/vmlinux at the current build atomically (rename over the old link).
point_symlink() {
    local tmp=$KDIR/.vmlinux.link.$$
    ln -sfn "$KEY/vmlinux" "$tmp"
    mv -T "$tmp" "$KDIR/vmlinux"
}

finish() {
    point_symlink
    echo "$VMLINUX"
    exit 0
}

# Fast path: nothing to do.
[[ -f $VMLINUX ]] && finish

mkdir -p "$KDIR"
# One build at a time per cache; whoever waited re-checks the cache.
exec 9>"$KDIR/.lock"
if ! flock -n 9; then
    log "another build holds $KDIR/.lock; waiting"
    flock 9
fi
[[ -f $VMLINUX ]] && finish

# --- Prerequisites ------------------------------------------------------------
APT_HINT="apt-get install $PKG build-essential bc flex bison libelf-dev libssl-dev"
missing=()
for tool in tar xz make gcc ld bc flex bison patch perl sha256sum readelf flock dpkg-query; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (Debian: $APT_HINT)"
echo '#include <gelf.h>' | gcc -E -x c - >/dev/null 2>&1 ||
    die "libelf headers not found (needed by objtool); Debian: apt-get install libelf-dev"

installed=$(dpkg-query -W -f='${Status} ${Version}' "$PKG" 2>/dev/null || true)
case $installed in
    "install ok installed $PKG_VERSION") ;;
    "install ok installed "*)
        die "$PKG ${installed##* } is installed but $HERE/VERSION pins $PKG_VERSION;" \
            "install the pinned version (apt-get install $PKG=$PKG_VERSION) or update the pin" ;;
    *) die "package $PKG is not installed (Debian: apt-get install $PKG=$PKG_VERSION)" ;;
esac
TARBALL=/usr/src/$PKG.tar.xz
[[ -r $TARBALL ]] || die "$TARBALL not found although $PKG is installed"

# --- Work directory -----------------------------------------------------------
# Leftovers of interrupted builds (we hold the lock, so nobody is using them).
rm -rf "$KDIR"/work-* "$KDIR"/.new-*
WORK=$KDIR/work-$KEY
LOGDIR=$KDIR/logs
BUILD_LOG=$LOGDIR/$KEY.log
mkdir -p "$WORK" "$LOGDIR"
cleanup() {
    local rc=$?
    if [[ ${HUSK_KERNEL_KEEP_WORKDIR:-0} == 1 ]]; then
        log "kept work tree $WORK"
    else
        rm -rf "$WORK"
    fi
    rm -rf "$KDIR/.new-$KEY"
    ((rc == 0)) || log "build failed; full log: $BUILD_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
: >"$BUILD_LOG"

# Run a build step with its output in the log; on failure show the end of it.
step() {
    local what=$1
    shift
    log "$what"
    if ! "$@" >>"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "$what failed"
    fi
}

start=$(date +%s)
log "building kernel $KEY from $PKG $PKG_VERSION (log: $BUILD_LOG)"
step "unpacking $TARBALL" tar -C "$WORK" -xf "$TARBALL"
SRC=$WORK/$PKG
[[ -f $SRC/Makefile ]] || die "$TARBALL did not unpack to $PKG/"

for p in "${PATCHES[@]}"; do
    step "applying $(basename "$p")" patch -d "$SRC" -p1 --forward --batch -i "$p"
done

MAKE=(make -C "$SRC" ARCH=x86_64 LOCALVERSION=
      KBUILD_BUILD_USER=husk KBUILD_BUILD_HOST=husk KBUILD_BUILD_VERSION=1)
step "configuring (tinyconfig + $HERE/config)" "${MAKE[@]}" tinyconfig
step "merging config fragment" \
    env -C "$SRC" ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$HERE/config"
step "resolving dependencies (olddefconfig)" "${MAKE[@]}" olddefconfig

# Every option the fragment sets must have survived Kconfig's dependency
# resolution exactly; a silently dropped option is a kernel that lacks it.
bad=()
while IFS= read -r line; do
    case $line in
        CONFIG_*=*)
            grep -qxF -- "$line" "$SRC/.config" ||
                bad+=("want '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$SRC/.config" || echo "(absent)")'") ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }
            opt=${opt%% *}
            ! grep -qE "^$opt=" "$SRC/.config" ||
                bad+=("want '$opt' off, got '$(grep -E "^$opt=" "$SRC/.config")'") ;;
    esac
done <"$HERE/config"
if ((${#bad[@]})); then
    printf 'guest-kernel: config check: %s\n' "${bad[@]}" >&2
    cp "$SRC/.config" "$LOGDIR/$KEY.config"
    die "${#bad[@]} option(s) of $HERE/config did not end up as requested (a dependency is" \
        "probably missing from the fragment; the resulting config: $LOGDIR/$KEY.config)"
fi
log "config check: all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "$HERE/config") options of the fragment as requested"

JOBS=${HUSK_KERNEL_JOBS:-$(nproc)}
step "compiling vmlinux (make -j$JOBS, takes minutes)" nice -n 10 "${MAKE[@]}" -j"$JOBS" vmlinux

# Sanity: a 64-bit ELF with the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 0x12).
elf_header=$(readelf -h "$SRC/vmlinux" 2>&1) || die "readelf cannot read vmlinux: $elf_header"
grep -q 'Class:.*ELF64' <<<"$elf_header" || die "vmlinux is not an ELF64 file"
elf_notes=$(readelf -n "$SRC/vmlinux" 2>&1) || die "readelf cannot read vmlinux notes: $elf_notes"
grep -qiE 'Xen.*(0x00000012|PHYS32_ENTRY)' <<<"$elf_notes" ||
    die "vmlinux has no PVH entry note (is CONFIG_PVH set?)"

# Publish atomically: fill a temp dir, then rename it to the key.
NEW=$KDIR/.new-$KEY
rm -rf "$NEW"
mkdir -p "$NEW"
cp "$SRC/vmlinux" "$NEW/vmlinux.tmp" && mv "$NEW/vmlinux.tmp" "$NEW/vmlinux"
cp "$SRC/.config" "$NEW/config"
cp "$SRC/System.map" "$NEW/System.map"
end=$(date +%s)
{
    echo "key=$KEY"
    echo "package=$PIN"
    echo "release=$(cat "$SRC/include/config/kernel.release")"
    echo "patches=$(for p in "${PATCHES[@]}"; do basename "$p"; done | paste -sd' ')"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$((end - start))"
    echo "jobs=$JOBS"
    echo "compiler=$(gcc --version | sed -n 1p)"
} >"$NEW/build-info"
rm -rf "$OUT"
mv -T "$NEW" "$OUT"
log "built $VMLINUX in $((end - start)) s"
finish
