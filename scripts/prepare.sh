#!/usr/bin/env bash
# Installs and builds everything husk needs on a fresh Debian machine, idempotently and
# cheaply on reruns: Debian packages (apt-get update first, only when something is
# missing), the guest kernel (cached by content hash under ~/.cache/husk), virtiofsd
# (from crates.io, cached by version), the static agent, and husk itself
# (PROFILE=release|debug, default debug).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "prepare: $*" >&2; }

kernel_pin=$(grep -v '^[[:space:]]*#' guest-kernel/VERSION | grep -m1 '=' | tr -d '[:space:]')
packages=(
  # guest kernel build
  build-essential bc flex bison libelf-dev libssl-dev cpio patch "$kernel_pin"
  # benchmark baselines and tools (husk never hands its job to these)
  qemu-system-x86 hyperfine crun iperf3 buildah
  # test images, disks and terminals
  busybox-static e2fsprogs erofs-utils tmux
  # systemd-socket-activate: the daemon taking its socket from systemd, tested
  systemd
  # default images (scripts/images.sh)
  debootstrap
  # loopback registry for pull tests and the pull benchmark (pushed to with skopeo)
  docker-registry skopeo apache2-utils
  # binary checks, namespaces (nsenter), network namespaces in networking tests
  binutils file util-linux iproute2
  # published ports and masquerading: husk's own nftables table
  nftables
  # token-auth registry tests sign JWTs
  openssl
  # virtiofsd (vm volumes), built from crates.io: its C libraries
  libseccomp-dev libcap-ng-dev pkg-config
  # a real Engine API client for the daemon's tests (docker-compose 1.29; the docker CLI
  # itself is unpacked from docker.io below, without dockerd)
  docker-compose
)

missing=()
for p in "${packages[@]}"; do
  name=${p%%=*}
  want=${p#*=}
  status=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  case "$status" in
    "install ok installed "*)
      [[ "$p" == *=* && "${status##* }" != "$want" ]] && missing+=("$p") ;;
    *) missing+=("$p") ;;
  esac
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing ${missing[*]}"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

command -v cargo >/dev/null || { log "error: cargo not found: install Rust (rustup) first"; exit 1; }

log "guest kernel (cached by content hash)"
guest-kernel/build.sh >&2

log "default images: busybox, debian bookworm (cached by content hash; HUSK_SKIP_DEBIAN=1 skips debian)"
scripts/images.sh >&2

log "virtiofsd for vm volumes (crates.io, cached by version)"
virtiofsd_version=1.14.0
tools="${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}/tools"
if [ ! -x "$tools/virtiofsd-$virtiofsd_version/bin/virtiofsd" ]; then
  rm -rf "$tools/virtiofsd-$virtiofsd_version.partial"
  cargo install --locked --quiet --version "$virtiofsd_version" \
    --root "$tools/virtiofsd-$virtiofsd_version.partial" virtiofsd >&2
  mv -T "$tools/virtiofsd-$virtiofsd_version.partial" "$tools/virtiofsd-$virtiofsd_version"
fi
ln -sfn "virtiofsd-$virtiofsd_version/bin/virtiofsd" "$tools/virtiofsd"

log "docker client from Debian's docker.io (only the client: dockerd is never installed)"
docker_version=$(apt-cache policy docker.io 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$docker_version" ] || [ "$docker_version" = "(none)" ]; then
  apt-get update -q >&2
  docker_version=$(apt-cache policy docker.io | awk '/Candidate:/ {print $2}')
fi
docker_dir="$tools/docker-${docker_version//[^A-Za-z0-9.+-]/_}"
if [ ! -x "$docker_dir/docker" ]; then
  work=$(mktemp -d)
  (cd "$work" && apt-get download -q "docker.io=$docker_version" >&2 && dpkg-deb -x docker.io_*.deb x)
  mkdir -p "$docker_dir.partial"
  cp "$work/x/usr/bin/docker" "$docker_dir.partial/docker"
  rm -rf "$work" "$docker_dir"
  mv -T "$docker_dir.partial" "$docker_dir"
fi
ln -sfn "$(basename "$docker_dir")/docker" "$tools/docker"

log "docker's Python SDK from PyPI (a real API client for the daemon's tests)"
docker_py="$tools/docker-py-7.1.0"
if [ ! -f "$docker_py/docker/__init__.py" ]; then
  rm -rf "$docker_py.partial"
  python3 -m pip install -q --disable-pip-version-check --target "$docker_py.partial" docker==7.1.0 >&2
  rm -rf "$docker_py"
  mv -T "$docker_py.partial" "$docker_py"
fi
ln -sfn "$(basename "$docker_py")" "$tools/docker-py"

log "static agent"
scripts/build-agent.sh >&2

case "${PROFILE:-debug}" in
  release) cargo build --release --workspace >&2 ;;
  debug) cargo build --workspace --all-targets >&2 ;;
  *) log "error: PROFILE must be release or debug"; exit 2 ;;
esac
