//! The kernel command line husk gives a guest: its own parameters first (reset through the
//! i8042, panic handling, lean sysfs, serial console or quiet), then any device
//! announcements, then the user's extra parameters, which win because the kernel keeps the
//! last value.

use super::arch::x86_64::layout::CMDLINE_MAX_SIZE;

/// Parameters every husk guest gets. Each is one the kernel knows: an unknown one would be
/// handed to init as an argument or environment variable.
///
/// - `reboot=k`: reboot through the i8042 keyboard controller (a port write, no driver),
///   which the VMM turns into a clean exit;
/// - `panic=-1`: reboot at once on a panic, so a dying guest ends its VM;
/// - `husk.lean_sysfs`: no /sys/kernel/slab and no /sys/module/<built-in> (guest kernel
///   patch 0004: seconds of boot under an emulating KVM, read by nobody);
/// - `tsc=reliable no_timer_check`: the TSC is KVM's; skip the clocksource watchdog and
///   the IO-APIC timer check, which only cost boot time in a VM.
pub const BASE: &str = "reboot=k panic=-1 husk.lean_sysfs tsc=reliable no_timer_check";

/// Parameters added on instruction-emulating KVM backends only (docs/guest-kernel.md).
/// Such backends may run guest `CPUID` natively (PVM does: the guest sees the host's
/// leaves whatever the VMM sets), so the kernel itself must be told to ignore the features
/// whose instructions the emulator rejects: XSAVE (`xrstor`), POPCNT, CMPXCHG16B, BMI1/2,
/// AVX/AVX2 and SMAP (`clac`/`stac`, which the kernel's entry code patches in). `erms,fsrm`,
/// `noreplace-smp` and `rodata=off` only save time: the emulator runs `rep movsb` one byte
/// per step, SMP alternatives patching decodes thousands of sites, and write-protecting
/// the kernel's read-only data walks its page tables (~1.5 s; W^X inside the guest kernel
/// is hardening against the guest's own user space, behind the VM boundary).
/// `cgroup_disable=memory` saves the memory cgroup's accounting of every page the guest
/// allocates and frees; no husk guest uses that controller.
pub const EMULATED: &str = "clearcpuid=xsave,smap,popcnt,cx16,bmi1,bmi2,avx,avx2,erms,fsrm noreplace-smp rodata=off cgroup_disable=memory";

/// Errors building the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The result exceeds the kernel's limit.
    #[error("the kernel command line is {0} bytes, more than the kernel's limit of {max}", max = CMDLINE_MAX_SIZE - 1)]
    TooLong(usize),
    /// A NUL or newline would cut or confuse it.
    #[error("the kernel command line may not contain NUL or newline characters")]
    BadCharacter,
}

/// Inputs to the command line.
#[derive(Debug, Clone, Default)]
pub struct CmdlineSpec<'a> {
    /// Serial console on (`console=ttyS0`) or off (`quiet`).
    pub console: bool,
    /// Add the `EMULATED` parameters.
    pub emulated_host: bool,
    /// Device announcements (`virtio_mmio.device=...`).
    pub devices: &'a [String],
    /// The user's extra parameters, appended last.
    pub extra: &'a str,
}

/// Builds the command line.
pub fn build(spec: &CmdlineSpec<'_>) -> Result<String, Error> {
    let mut parts: Vec<&str> = vec![BASE];
    parts.push(if spec.console {
        "console=ttyS0"
    } else {
        "quiet"
    });
    if spec.emulated_host {
        parts.push(EMULATED);
    }
    parts.extend(spec.devices.iter().map(String::as_str));
    let extra = spec.extra.trim();
    if !extra.is_empty() {
        parts.push(extra);
    }
    let line = parts.join(" ");
    if line.contains(['\0', '\n', '\r']) {
        return Err(Error::BadCharacter);
    }
    // The kernel needs room for the terminating NUL.
    if line.len() >= CMDLINE_MAX_SIZE {
        return Err(Error::TooLong(line.len()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_on_names_the_serial_port() {
        let line = build(&CmdlineSpec {
            console: true,
            ..Default::default()
        })
        .unwrap();
        assert!(line.starts_with("reboot=k panic=-1 "));
        assert!(line.ends_with(" console=ttyS0"));
        assert!(!line.contains("quiet"));
    }

    #[test]
    fn console_off_is_quiet() {
        let line = build(&CmdlineSpec::default()).unwrap();
        assert!(line.ends_with(" quiet"));
        assert!(!line.contains("console="));
    }

    #[test]
    fn order_is_base_emulation_devices_then_user() {
        let devices = vec!["virtio_mmio.device=4K@0xd0000000:5".to_string()];
        let line = build(&CmdlineSpec {
            console: true,
            emulated_host: true,
            devices: &devices,
            extra: "  root=/dev/vda ro ",
        })
        .unwrap();
        let want = format!(
            "{BASE} console=ttyS0 {EMULATED} {} root=/dev/vda ro",
            devices[0]
        );
        assert_eq!(line, want);
    }

    #[test]
    fn bad_input_is_refused() {
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        let spec = CmdlineSpec {
            extra: &long,
            ..Default::default()
        };
        assert!(matches!(build(&spec), Err(Error::TooLong(_))));
        let spec = CmdlineSpec {
            extra: "a\nb",
            ..Default::default()
        };
        assert_eq!(build(&spec), Err(Error::BadCharacter));
    }
}
