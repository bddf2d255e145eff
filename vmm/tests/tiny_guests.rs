//! Tiny hand-written guests under the real /dev/kvm: a few bytes of x86 machine code,
//! wrapped in a minimal ELF and booted by the same path as a kernel. They prove the VMM's
//! long-mode boot state, serial output, the i8042 reset, unhandled port/MMIO accesses,
//! triple faults and vCPU shutdown with 1 and 2 vCPUs.
//!
//! With `HUSK_REQUIRE_KVM=1` (set by CI) a missing /dev/kvm fails these tests; without it
//! they are skipped with a loud message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/kvm.rs"]
mod kvm;

use std::path::PathBuf;

use kvm::kvm_available;
use vmm::{Console, VmConfig, VmExit, tiny_elf};

/// Machine-code fragments (identical in 32- and 64-bit mode unless noted).
mod asm {
    /// `mov dx, 0x3f8`
    pub const DX_COM1: &[u8] = &[0x66, 0xba, 0xf8, 0x03];
    /// `mov al, imm8`
    pub fn mov_al(b: u8) -> Vec<u8> {
        vec![0xb0, b]
    }
    /// `out dx, al`
    pub const OUT_DX_AL: &[u8] = &[0xee];
    /// `out imm8, al`
    pub fn out_al(port: u8) -> Vec<u8> {
        vec![0xe6, port]
    }
    /// `in al, imm8`
    pub fn in_al(port: u8) -> Vec<u8> {
        vec![0xe4, port]
    }
    /// `mov eax, [disp32]` (64-bit mode: absolute address through SIB).
    pub fn load_eax(addr: u32) -> Vec<u8> {
        let mut v = vec![0x8b, 0x04, 0x25];
        v.extend_from_slice(&addr.to_le_bytes());
        v
    }
    /// `mov [disp32], eax`
    pub fn store_eax(addr: u32) -> Vec<u8> {
        let mut v = vec![0x89, 0x04, 0x25];
        v.extend_from_slice(&addr.to_le_bytes());
        v
    }
    /// `mov al, 0xfe; out 0x64, al; hlt; jmp $-1`: reset through the i8042.
    pub const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
    /// `ud2`: with no IDT this escalates to a triple fault.
    pub const UD2: &[u8] = &[0x0f, 0x0b];
}

fn print(text: &[u8]) -> Vec<u8> {
    let mut code = asm::DX_COM1.to_vec();
    for b in text {
        code.extend(asm::mov_al(*b));
        code.extend_from_slice(asm::OUT_DX_AL);
    }
    code
}

struct Guest {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    console: PathBuf,
}

fn guest(code: &[u8]) -> Guest {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, tiny_elf::build(code)).unwrap();
    let console = dir.path().join("console.log");
    Guest {
        _dir: dir,
        kernel,
        console,
    }
}

fn config(g: &Guest, vcpus: u8) -> VmConfig {
    VmConfig {
        vcpus,
        mem_mib: 64,
        console: Console::File(g.console.clone()),
        ..VmConfig::new(&g.kernel)
    }
}

#[test]
fn serial_output_reaches_the_host_and_reset_ends_the_vm() {
    if !kvm_available("tiny-guest tests") {
        return;
    }
    for vcpus in [1, 2] {
        let mut code = print(b"hello from a tiny guest\n");
        code.extend_from_slice(asm::RESET);
        let g = guest(&code);
        let report = vmm::boot(&config(&g, vcpus)).unwrap();
        assert_eq!(report.exit, VmExit::Reset, "{vcpus} vCPUs");
        assert_eq!(
            std::fs::read(&g.console).unwrap(),
            b"hello from a tiny guest\n"
        );
        assert_eq!(report.console_tail, b"hello from a tiny guest\n");
        assert_eq!(report.unhandled_pio, 0);
    }
}

#[test]
fn unhandled_port_and_mmio_accesses_are_answered_not_fatal() {
    if !kvm_available("tiny-guest tests") {
        return;
    }
    for vcpus in [1, 2] {
        let mut code = Vec::new();
        // A port nobody decodes: the write is dropped, the read returns 0xff.
        code.extend(asm::out_al(0x99));
        code.extend(asm::in_al(0x99));
        code.extend_from_slice(asm::DX_COM1);
        code.extend_from_slice(asm::OUT_DX_AL);
        // Memory above the guest's 64 MiB of RAM (still identity mapped): MMIO exits.
        code.extend(asm::store_eax(0x0800_0000));
        code.extend(asm::load_eax(0x0800_0000));
        code.extend_from_slice(asm::OUT_DX_AL);
        code.extend(print(b"survived\n"));
        code.extend_from_slice(asm::RESET);
        let g = guest(&code);
        let report = vmm::boot(&config(&g, vcpus)).unwrap();
        assert_eq!(report.exit, VmExit::Reset);
        assert_eq!(std::fs::read(&g.console).unwrap(), b"\xff\xffsurvived\n");
        assert_eq!(report.unhandled_pio, 2, "one write, one read");
        assert_eq!(report.unhandled_mmio, 2, "one write, one read");
    }
}

#[test]
fn triple_fault_is_a_shutdown() {
    if !kvm_available("tiny-guest tests") {
        return;
    }
    let mut code = print(b"faulting\n");
    code.extend_from_slice(asm::UD2);
    let g = guest(&code);
    let report = vmm::boot(&config(&g, 1)).unwrap();
    assert_eq!(report.exit, VmExit::Shutdown { vcpu: 0 });
    assert_eq!(std::fs::read(&g.console).unwrap(), b"faulting\n");
}

#[test]
fn the_trivial_bench_guest_resets_with_console_off() {
    if !kvm_available("tiny-guest tests") {
        return;
    }
    let g = guest(tiny_elf::RESET_AT_ONCE);
    let cfg = VmConfig {
        console: Console::Off,
        ..config(&g, 1)
    };
    let report = vmm::boot(&cfg).unwrap();
    assert_eq!(report.exit, VmExit::Reset);
    // QEMU's isa-debug-exit port is not ours: answered and counted.
    assert_eq!(report.unhandled_pio, 1);
    assert!(report.cmdline.contains("quiet"));
}

#[test]
fn eight_vcpus_and_memory_above_the_mmio_hole() {
    if !kvm_available("tiny-guest tests") {
        return;
    }
    let mut code = print(b"big\n");
    code.extend_from_slice(asm::RESET);
    let g = guest(&code);
    // 5 GiB: RAM below 3 GiB and from 4 GiB up; mapped lazily, so this costs nothing.
    let cfg = VmConfig {
        mem_mib: 5 << 10,
        ..config(&g, 8)
    };
    let report = vmm::boot(&cfg).unwrap();
    assert_eq!(report.exit, VmExit::Reset);
    assert_eq!(std::fs::read(&g.console).unwrap(), b"big\n");
}
