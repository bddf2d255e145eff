//! A tiny hand-written guest under the real /dev/kvm walks the virtio-mmio register
//! protocol of two attached disks through husk's MMIO bus: it maps the MMIO hole, reads
//! magic, version, device ID, vendor and features, negotiates features through the status
//! handshake, reads the capacity from the config space, resets the device, and prints
//! every value it read on the serial port for the host to check.
//!
//! With `HUSK_REQUIRE_KVM=1` (set by CI) a missing /dev/kvm fails this test; without it
//! it is skipped with a loud message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/kvm.rs"]
mod kvm;

use kvm::kvm_available;
use vmm::devices::virtio::block::features;
use vmm::devices::virtio::manager::{FIRST_IRQ, SLOT_BASE, SLOT_SIZE};
use vmm::devices::virtio::mmio::{MAGIC_VALUE, VENDOR_ID, reg, status};
use vmm::devices::virtio::{VIRTIO_F_VERSION_1, device_id};
use vmm::{Console, DiskConfig, VmConfig, VmExit, tiny_elf};

/// 64-bit machine code, assembled by hand.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    /// `mov rax, imm64`
    fn mov_rax(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&[0x48, 0xb8]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// `mov [abs32], rax`
    fn store_rax(&mut self, addr: u32) -> &mut Self {
        self.0.extend_from_slice(&[0x48, 0x89, 0x04, 0x25]);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self
    }
    /// `mov rax, cr3; mov cr3, rax`: flush the TLB.
    fn reload_cr3(&mut self) -> &mut Self {
        self.0
            .extend_from_slice(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]);
        self
    }
    /// `mov rbx, imm64`
    fn mov_rbx(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&[0x48, 0xbb]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// `mov dx, 0x3f8`
    fn dx_com1(&mut self) -> &mut Self {
        self.0.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]);
        self
    }
    /// `mov eax, [rbx + off]`, then its four bytes out of COM1, low byte first.
    fn report(&mut self, off: u64) -> &mut Self {
        self.0.extend_from_slice(&[0x8b, 0x83]);
        self.0.extend_from_slice(&(off as u32).to_le_bytes());
        for i in 0..4 {
            self.0.push(0xee); // out dx, al
            if i < 3 {
                self.0.extend_from_slice(&[0xc1, 0xe8, 0x08]); // shr eax, 8
            }
        }
        self
    }
    /// `mov dword [rbx + off], imm32`
    fn poke(&mut self, off: u64, v: u32) -> &mut Self {
        self.0.extend_from_slice(&[0xc7, 0x83]);
        self.0.extend_from_slice(&(off as u32).to_le_bytes());
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Reset through the i8042.
    fn reset(&mut self) -> &mut Self {
        self.0
            .extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]);
        self
    }
}

/// Free low-memory page for the page directory covering 3..4 GiB.
const NEW_PD: u32 = 0xc000;
/// Entry 3 of the boot PDPT (vmm::arch::x86_64::layout::PDPTE_START = 0xa000).
const PDPTE_3GIB: u32 = 0xa000 + 3 * 8;

fn guest_code() -> Vec<u8> {
    let second = SLOT_SIZE; // the second device's window, relative to the first
    let mut a = Asm::default();
    // Map [3 GiB, 3 GiB + 2 MiB) 1:1 with one 2 MiB page (present, writable, PS).
    a.mov_rax(SLOT_BASE | 0x83)
        .store_rax(NEW_PD)
        .mov_rax(u64::from(NEW_PD) | 0x3)
        .store_rax(PDPTE_3GIB)
        .reload_cr3()
        .mov_rbx(SLOT_BASE)
        .dx_com1();
    a.report(reg::MAGIC)
        .report(reg::VERSION)
        .report(reg::DEVICE_ID)
        .report(reg::VENDOR_ID)
        .poke(reg::DEVICE_FEATURES_SEL, 1)
        .report(reg::DEVICE_FEATURES)
        .poke(reg::DEVICE_FEATURES_SEL, 0)
        .report(reg::DEVICE_FEATURES);
    a.poke(reg::STATUS, status::ACKNOWLEDGE)
        .poke(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER)
        .poke(reg::DRIVER_FEATURES_SEL, 1)
        .poke(reg::DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32))
        .poke(reg::DRIVER_FEATURES_SEL, 0)
        .poke(reg::DRIVER_FEATURES, 1 << features::FLUSH)
        .poke(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        )
        .report(reg::STATUS)
        .report(reg::CONFIG)
        .poke(reg::STATUS, 0)
        .report(reg::STATUS);
    a.report(second + reg::MAGIC)
        .report(second + reg::DEVICE_FEATURES)
        .report(second + reg::CONFIG)
        .reset();
    a.0
}

#[test]
fn a_tiny_guest_walks_the_virtio_mmio_registers_of_two_disks() {
    if !kvm_available("the virtio-mmio guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, tiny_elf::build(&guest_code())).unwrap();
    let vda = dir.path().join("vda.img");
    let vdb = dir.path().join("vdb.img");
    std::fs::write(&vda, vec![0u8; 40 * 512]).unwrap();
    std::fs::write(&vdb, vec![0u8; 8 * 512]).unwrap();
    let console = dir.path().join("console.log");
    let cfg = VmConfig {
        mem_mib: 64,
        console: Console::File(console.clone()),
        disks: vec![
            DiskConfig {
                path: vda.clone(),
                read_only: false,
            },
            DiskConfig {
                path: vdb,
                read_only: true,
            },
        ],
        ..VmConfig::new(&kernel)
    };
    let report = vmm::boot(&cfg).unwrap();
    assert_eq!(report.exit, VmExit::Reset, "{report:?}");
    for (i, irq) in [FIRST_IRQ, FIRST_IRQ + 1].into_iter().enumerate() {
        let entry = format!(
            "virtio_mmio.device=4K@{:#x}:{irq}",
            SLOT_BASE + i as u64 * SLOT_SIZE
        );
        assert!(report.cmdline.contains(&entry), "{}", report.cmdline);
    }
    assert_eq!(report.unhandled_mmio, 0);

    let out = std::fs::read(&console).unwrap();
    let words: Vec<u32> = out
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let base_features = (1u32 << features::FLUSH) | (1 << features::SEG_MAX);
    let want = vec![
        MAGIC_VALUE,
        2,
        device_id::BLOCK,
        VENDOR_ID,
        1 << (VIRTIO_F_VERSION_1 - 32),
        base_features,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        40,
        0,
        MAGIC_VALUE,
        base_features | (1 << features::RO),
        8,
    ];
    assert_eq!(words, want, "raw console: {out:x?}");
    // The guest never touched the disks' data.
    assert_eq!(std::fs::read(&vda).unwrap(), vec![0u8; 40 * 512]);
}
