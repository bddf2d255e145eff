#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install everything, build the guest kernel,
# the agent and husk, then boot the guest kernel in a husk microVM with the console on
# and print how far it got and how long it took; finally run a container of the busybox
# default image in a microVM (`husk run --rm husk/busybox echo hello`, vm isolation, the
# default) and print the isolation it used, the kernel it ran on and how long it took.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PROFILE=release scripts/prepare.sh
husk=target/release/husk
echo
$husk info
echo
echo "== Booting the guest kernel in a husk microVM (console on) =="
if $husk info --format json | grep -q '"guests": "emulated"'; then
  echo "(this host's KVM emulates guest kernel code: expect seconds, not milliseconds, to"
  echo " 'Run /init' and the agent's ready line; the agent then resets the VM)"
fi
start=$(date +%s.%N)
status=0
$husk vm boot --console --memory 256m || status=$?
end=$(date +%s.%N)
echo
echo "husk vm boot exited with $status after $(echo "$end - $start" | bc) s"

echo
echo "== A container in a microVM: husk run --rm husk/busybox echo hello =="
# The default image, imported once into the default state directory.
if ! $husk image inspect husk/busybox:latest >/dev/null 2>&1; then
  cache="${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}"
  $husk import -c 'CMD ["sh"]' "$cache/images/busybox.tar" husk/busybox:latest >/dev/null
fi
start=$(date +%s.%N)
run_status=0
$husk run --rm --network none husk/busybox echo hello || run_status=$?
end=$(date +%s.%N)
echo "husk run (isolation vm, the default) exited with $run_status after $(echo "$end - $start" | bc) s"
echo "(the first vm run on a machine also makes the warm-start template: one kernel boot;"
echo " every later one restores it instead of booting, docs/warm-starts.md)"
if [ "$run_status" -eq 0 ]; then
  start=$(date +%s.%N)
  version=$($husk run --rm --network none husk/busybox cat /proc/version)
  end=$(date +%s.%N)
  echo "the container's kernel: $version"
  echo "the host's kernel:      $(cat /proc/version)"
  echo "that second run (a warm start) took $(echo "$end - $start" | bc) s"
fi
if [ "$run_status" -ne 0 ]; then
  exit "$run_status"
fi
exit "$status"
