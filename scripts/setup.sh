#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install everything, build the guest kernel,
# the agent and husk, then boot the guest kernel in a husk microVM with the console on
# and print how far it got and how long it took.
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
exit "$status"
