//! The guest profiler under the real /dev/kvm: a tiny guest prints a milestone line, spins
//! in a TSC-timed loop at a known address for a few hundred milliseconds, and resets. With a
//! hand-written System.map naming that loop, the profile must put the samples of the
//! phase after the milestone on the loop's symbol, at addresses inside it.
//!
//! With `HUSK_REQUIRE_KVM=1` (set by CI) a missing /dev/kvm fails this test; without it it
//! is skipped with a loud message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/kvm.rs"]
mod kvm;

use std::time::Duration;

use kvm::kvm_available;
use vmm::profile::report::{NOT_STARTED, USER};
use vmm::{Console, ProfileConfig, VmConfig, VmExit, tiny_elf};

/// `rdtsc; shl rdx, 32; or rax, rdx`: the 64-bit TSC in rax.
const RDTSC64: &[u8] = &[0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0];
/// `mov rsi, rax`
const MOV_RSI_RAX: &[u8] = &[0x48, 0x89, 0xc6];
/// `sub rax, rsi`
const SUB_RAX_RSI: &[u8] = &[0x48, 0x29, 0xf0];
/// `mov al, 0xfe; out 0x64, al; hlt; jmp $-1`: reset through the i8042.
const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
/// TSC ticks to spin: about 0.3-0.5 s at the usual 2-3.5 GHz.
const SPIN_TICKS: u32 = 0x4000_0000;

/// The guest's code and the offsets of its `spin` loop and `reset` tail.
struct Code {
    bytes: Vec<u8>,
    spin: usize,
    reset: usize,
}

fn code() -> Code {
    // mov dx, 0x3f8; then `go\n`, one `mov al, c; out dx, al` per byte.
    let mut bytes = vec![0x66, 0xba, 0xf8, 0x03];
    for b in b"go\n" {
        bytes.extend_from_slice(&[0xb0, *b, 0xee]);
    }
    bytes.extend_from_slice(RDTSC64);
    bytes.extend_from_slice(MOV_RSI_RAX);
    let spin = bytes.len();
    bytes.extend_from_slice(RDTSC64);
    bytes.extend_from_slice(SUB_RAX_RSI);
    // cmp rax, SPIN_TICKS; jb spin
    bytes.extend_from_slice(&[0x48, 0x3d]);
    bytes.extend_from_slice(&SPIN_TICKS.to_le_bytes());
    let back = bytes.len() + 2 - spin;
    bytes.extend_from_slice(&[0x72, (-(back as i8)) as u8]);
    let reset = bytes.len();
    bytes.extend_from_slice(RESET);
    Code { bytes, spin, reset }
}

fn system_map(c: &Code) -> String {
    let at = |off: usize| tiny_elf::LOAD_ADDR + off as u64;
    format!(
        "{:016x} T _start\n{:016x} t spin\n{:016x} T reset\n{:016x} D _sdata\n",
        at(0),
        at(c.spin),
        at(c.reset),
        at(c.bytes.len()),
    )
}

#[test]
fn samples_of_a_spinning_guest_land_on_its_loop() {
    if !kvm_available("the profiler test") {
        return;
    }
    let c = code();
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, tiny_elf::build(&c.bytes)).unwrap();
    let map = dir.path().join("tiny.map");
    std::fs::write(&map, system_map(&c)).unwrap();
    let cfg = VmConfig {
        vcpus: 2,
        mem_mib: 64,
        console: Console::File(dir.path().join("console.log")),
        milestones: vec!["go".into()],
        profile: Some(ProfileConfig {
            interval: Duration::from_micros(500),
            system_map: Some(map),
        }),
        ..VmConfig::new(&kernel)
    };
    let report = vmm::boot(&cfg).unwrap();
    assert_eq!(report.exit, VmExit::Reset);
    let profile = report.profile.expect("a profiled run reports a profile");
    let text = profile.render(10);
    eprintln!("{text}");

    let phases = profile.phases();
    assert_eq!(phases.len(), 2, "{text}");
    assert_eq!(phases[1].name, "go -> end");
    let spinning = &phases[1].tally;
    // vCPU 1 is never started (no INIT/SIPI): its samples are all `[not started]`.
    let boot_cpu = spinning.total() - spinning.count(NOT_STARTED);
    assert!(spinning.count("spin") >= 20, "too few samples: {text}");
    assert!(
        spinning.count("spin") * 10 >= boot_cpu * 9,
        "under 90% of the boot vCPU's samples on the loop: {text}"
    );
    assert_eq!(spinning.count(USER), 0, "{text}");
    let busiest = profile
        .overall()
        .counts()
        .iter()
        .find(|(l, _)| l != NOT_STARTED);
    assert_eq!(busiest.map(|(l, _)| l.as_str()), Some("spin"), "{text}");

    let (lo, hi) = (
        tiny_elf::LOAD_ADDR + c.spin as u64,
        tiny_elf::LOAD_ADDR + c.reset as u64,
    );
    let on_boot_cpu: Vec<_> = profile.samples().iter().filter(|s| s.vcpu == 0).collect();
    let in_loop = on_boot_cpu
        .iter()
        .filter(|s| (lo..hi).contains(&s.rip))
        .count();
    assert!(
        in_loop * 10 >= on_boot_cpu.len() * 9,
        "{in_loop} of {} boot-vCPU samples in {lo:#x}..{hi:#x}",
        on_boot_cpu.len()
    );
    let ap = profile.vcpus()[1];
    assert!(ap.samples > 0 && ap.not_started == ap.samples, "{ap:?}");
}
