#!/usr/bin/env bash
# Boot husk's guest kernel in QEMU's microvm machine and time it: every console line is
# printed with the seconds since QEMU started, then a summary. A reference point for husk's
# own VMM, and how the timings in docs/guest-kernel.md were taken.
#
#   guest-kernel/qemu-boot.sh INITRAMFS [EXTRA KERNEL PARAMETERS...]
#
# Environment:
#   HUSK_KERNEL     kernel to boot (default: $CACHE/kernel/vmlinux from build.sh)
#   HUSK_EMULATED   1: add cmdline-emulated; 0: do not; auto (default): add it when the CPU
#                   has no vmx/svm flag, i.e. /dev/kvm is a software backend such as PVM
#   QEMU_MEM        guest memory (default 256M); QEMU_SMP vCPUs (default 1)
#   QEMU_CPU        CPU model (default host,-arch-capabilities)
#   QEMU_TIMEOUT    seconds before giving up (default 300)
#
# QEMU's microvm has no i8042, so after the guest's `reboot=k` the kernel first polls the
# missing controller (~20 s under emulation) before another reset method ends QEMU.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HUSK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}
KERNEL=${HUSK_KERNEL:-$CACHE/kernel/vmlinux}
die() { printf 'qemu-boot: error: %s\n' "$*" >&2; exit 1; }

(($# >= 1)) || die "usage: $0 INITRAMFS [EXTRA KERNEL PARAMETERS...]"
INITRD=$1
shift
[[ -r $INITRD ]] || die "initramfs $INITRD not readable"
[[ -r $KERNEL ]] || die "kernel $KERNEL not found (run guest-kernel/build.sh)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
[[ -w /dev/kvm ]] || die "/dev/kvm is missing or not writable"

cmdline=$(cat "$HERE/cmdline-base")
case ${HUSK_EMULATED:-auto} in
    1) emulated=1 ;;
    0) emulated=0 ;;
    auto) if grep -qwE 'vmx|svm' /proc/cpuinfo; then emulated=0; else emulated=1; fi ;;
    *) die "HUSK_EMULATED must be 0, 1 or auto" ;;
esac
((emulated)) && cmdline+=" $(cat "$HERE/cmdline-emulated")"
(($#)) && cmdline+=" $*"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Without -arch-capabilities QEMU aborts on PVM ("failed to set MSR 0x10a").
cpu=${QEMU_CPU:-host,-arch-capabilities}

# Exit status: 0 if the guest reached `Run /init` without an emulation failure.
set +o pipefail
start=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) - $start" | bc; }
timeout "${QEMU_TIMEOUT:-300}" qemu-system-x86_64 \
    -M microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off \
    -accel kvm -cpu "$cpu" -m "${QEMU_MEM:-256M}" -smp "${QEMU_SMP:-1}" \
    -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
    -pidfile "$tmp/pid" -kernel "$KERNEL" -initrd "$INITRD" -append "$cmdline" \
    </dev/null 2>&1 | {
    run_init=""
    failure=""
    while IFS= read -r line; do
        t=$(elapsed)
        printf '%7.2f %s\n' "$t" "$line"
        case $line in
            *"Run /init as init process"*) run_init=$(printf %.2f "$t") ;;
            # QEMU pauses the VM after an emulation failure: stop it once the dump is out.
            *"KVM internal error"*) failure=$(printf %.2f "$t") ;;
            Code=*) [[ -n $failure && -f $tmp/pid ]] && kill "$(cat "$tmp/pid")" 2>/dev/null || true ;;
        esac
    done
    outcome="no emulation failure"
    [[ -z $failure ]] || outcome="KVM emulation failure after $failure s"
    printf -- '--- qemu-boot: Run /init after %s s; %s; QEMU gone after %.1f s\n' \
        "${run_init:-(never)}" "$outcome" "$(elapsed)"
    [[ -n $run_init && -z $failure ]]
}
