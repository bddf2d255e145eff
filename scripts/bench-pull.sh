#!/usr/bin/env bash
# Pull benchmark: a ~200 MiB image (5 layers of incompressible data) served by Debian's
# docker-registry on loopback, pulled by `husk pull` into a fresh root and by
# `skopeo copy docker://... oci:DIR`, side by side under hyperfine. Prints MiB/s of
# compressed blob bytes for each. `husk pull --no-layer-disks` is the download alone (what
# skopeo does); plain `husk pull` also converts every layer into its block image.
#
# Usage: scripts/bench-pull.sh [LAYER_MIB (default 40)] [RUNS (default 5)]
# Needs docker-registry, skopeo, hyperfine (scripts/prepare.sh) and a built husk
# (target/release/husk if present, else target/debug/husk; HUSK_BIN overrides).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
layer_mib=${1:-40}
runs=${2:-5}
husk=${HUSK_BIN:-}
if [ -z "$husk" ]; then
  husk="$root/target/release/husk"
  [ -x "$husk" ] || husk="$root/target/debug/husk"
fi
[ -x "$husk" ] || { echo "bench-pull: build husk first" >&2; exit 1; }
for t in docker-registry skopeo hyperfine sha256sum; do
  command -v "$t" >/dev/null || { echo "bench-pull: $t missing (scripts/prepare.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/husk-bench-pull.XXXXXX)
reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: the first one nothing answers on.
port=$((20000 + RANDOM % 20000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
cat >"$work/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# The image: an OCI layout with 5 uncompressed layers, pushed gzip-compressed.
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
blob() { # file -> prints "sha256:<hex> <size>", copies it into the layout
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  cp "$1" "$layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
layers=() diff_ids=()
for i in 1 2 3 4 5; do
  mkdir -p "$work/src$i/data"
  head -c "$((layer_mib << 20))" /dev/urandom >"$work/src$i/data/layer$i.bin"
  tar -C "$work/src$i" -cf "$work/layer$i.tar" .
  read -r d s < <(blob "$work/layer$i.tar")
  layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$d\",\"size\":$s}")
  diff_ids+=("\"$d\"")
  rm -rf "$work/src$i" "$work/layer$i.tar"
done
join() { local IFS=,; echo "$*"; }
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$(join "${diff_ids[@]}")" >"$work/config.json"
read -r cd cs < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
  "$cd" "$cs" "$(join "${layers[@]}")" >"$work/manifest.json"
read -r md ms < <(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
  "$md" "$ms" >"$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
image="127.0.0.1:$port/bench/pull:latest"
HOME="$work" skopeo copy --quiet --dest-tls-verify=false --dest-compress --dest-compress-format gzip \
  "oci:$layout:bench" "docker://$image" >&2
rm -rf "$layout"
bytes=$(du -sb "$work/registry/docker/registry/v2/blobs" | cut -f1)
echo "bench-pull: image $image, $((bytes >> 20)) MiB of blobs in the registry" >&2

hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  -n "husk pull (download only)" \
  --prepare "rm -rf $work/h" "$husk --root $work/h pull -q --no-layer-disks $image" \
  -n "skopeo copy docker:// oci:" \
  --prepare "rm -rf $work/s" "HOME=$work skopeo copy --quiet --src-tls-verify=false docker://$image oci:$work/s:bench" \
  -n "husk pull (with layer disks)" \
  --prepare "rm -rf $work/d" "$husk --root $work/d pull -q $image" >&2

python3 - "$work/result.json" "$bytes" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
mib = int(sys.argv[2]) / 2**20
print(f"pull of {mib:.0f} MiB (5 layers) from a loopback registry:")
for r in res:
    print(f"  {r['command']:<30} {r['mean']:7.3f} s ± {r['stddev']:.3f}  {mib / r['mean']:8.1f} MiB/s")
EOF
