#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install everything, build the guest kernel,
# the agent and husk, then boot the guest kernel in a husk microVM with the console on
# and print how far it got and how long it took; finally run a container of the embedded
# busybox image (`--isolation auto`: a microVM where this host can run guests, else
# namespaces) and print which isolation it used and how long it took.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PROFILE=release scripts/prepare.sh
husk=target/release/husk
echo
$husk info
echo
echo "== Booting the guest kernel in a husk microVM (console on) =="
if ! $husk info --format json | grep -q '"can_run_linux_guests": true'; then
  echo "(this host's KVM emulates guest kernel code: expect about 80 s to 'Run /init', after"
  echo " which the guest's user space cannot run here, the kernel panics and resets the VM)"
fi
start=$(date +%s.%N)
status=0
$husk vm boot --console --memory 256m || status=$?
end=$(date +%s.%N)
echo
echo "husk vm boot exited with $status after $(echo "$end - $start" | bc) s"

echo
echo "== A container: husk run --rm --isolation auto husk/busybox echo hello =="
# The embedded default image, imported once into the default state directory.
if ! $husk image inspect husk/busybox:latest >/dev/null 2>&1; then
  cache="${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}"
  $husk import -c 'CMD ["sh"]' "$cache/images/busybox.tar" husk/busybox:latest >/dev/null
fi
start=$(date +%s.%N)
run_status=0
# husk itself says on stderr which isolation `auto` picked and why.
$husk run --rm --isolation auto husk/busybox echo hello || run_status=$?
end=$(date +%s.%N)
echo "husk run exited with $run_status after $(echo "$end - $start" | bc) s"
if [ "$run_status" -ne 0 ]; then
  exit "$run_status"
fi
exit "$status"
