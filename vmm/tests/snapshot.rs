//! VM snapshots under the real /dev/kvm with tiny hand-written guests: a guest stopped
//! mid-loop by a snapshot resumes in a new VM exactly where it was (its loop counter, a
//! register, carries over: the port writes of both halves add up to the loop's count),
//! on 1 and 2 vCPUs (the second waiting for its SIPI); restored VMs write to their own
//! copy of memory, never to the snapshot; damaged, truncated or mismatched snapshots are
//! refused before any VM exists.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/kvm.rs"]
mod kvm;

use std::path::{Path, PathBuf};

use kvm::kvm_available;
use vmm::config::{AfterSnapshot, SnapshotPlan};
use vmm::{Console, MicroVm, VmConfig, VmExit, tiny_elf};

/// Port writes the guest's loop makes: enough that the snapshot, asked for at the first
/// console line, stops it long before the end.
const LOOPS: u32 = 300_000;
/// Where the guest writes a marker after its loop.
const MARKER_ADDR: u32 = 0x20_0000;
const LABEL: &str = "tiny guest";

fn print(text: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text {
        code.extend([0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    code
}

/// Prints "A", writes an unclaimed port LOOPS times (the counter in ecx), stores a
/// marker in memory, prints "B" and resets.
fn looping_guest() -> Vec<u8> {
    let mut code = print(b"A\n");
    code.push(0xb9); // mov ecx, LOOPS
    code.extend(LOOPS.to_le_bytes());
    code.extend([0xe6, 0x99, 0xff, 0xc9, 0x75, 0xfa]); // l: out 0x99, al; dec ecx; jnz l
    code.push(0xb8); // mov eax, 0x4b52414d ("MARK")
    code.extend(0x4b52_414du32.to_le_bytes());
    code.extend([0x89, 0x04, 0x25]); // mov [MARKER_ADDR], eax
    code.extend(MARKER_ADDR.to_le_bytes());
    code.extend(print(b"B\n"));
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]); // reset through the i8042
    code
}

struct Guest {
    dir: tempfile::TempDir,
    kernel: PathBuf,
}

impl Guest {
    fn new() -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("tiny.elf");
        std::fs::write(&kernel, tiny_elf::build(&looping_guest())).unwrap();
        Guest { dir, kernel }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, vcpus: u8, console: &str) -> VmConfig {
        VmConfig {
            vcpus,
            mem_mib: 64,
            console: Console::File(self.path(console)),
            ..VmConfig::new(&self.kernel)
        }
    }

    fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// Boots, snapshots at the "A" line and stops; returns the port writes made.
    fn snapshot(&self, vcpus: u8, dir: &Path) -> u64 {
        let plan = SnapshotPlan {
            dir: dir.to_path_buf(),
            label: LABEL.into(),
            then: AfterSnapshot::Stop,
        };
        let config = VmConfig {
            snapshot_on_console: Some(("A".into(), plan)),
            ..self.config(vcpus, "boot.log")
        };
        let report = vmm::boot(&config).unwrap();
        assert_eq!(report.exit, VmExit::Snapshotted, "{vcpus} vCPUs");
        assert_eq!(self.console("boot.log"), "A\n");
        assert!(dir.join("state").is_file() && dir.join("memory").is_file());
        report.unhandled_pio
    }
}

fn memory_word(snapshot: &Path, addr: u32) -> [u8; 4] {
    let memory = std::fs::read(snapshot.join("memory")).unwrap();
    memory[addr as usize..addr as usize + 4].try_into().unwrap()
}

#[test]
fn a_restored_guest_resumes_where_its_snapshot_stopped_it() {
    if !kvm_available("snapshot tests") {
        return;
    }
    for vcpus in [1, 2] {
        let g = Guest::new();
        let snap = g.path("snap");
        let before = g.snapshot(vcpus, &snap);
        assert!(
            before < u64::from(LOOPS),
            "the loop finished before the snapshot"
        );
        // Twice from the same snapshot: each VM has its own copy-on-write memory.
        for run in 0..2 {
            let log = format!("restored-{run}.log");
            let vm = MicroVm::restore(&g.config(vcpus, &log), &snap, LABEL).unwrap();
            let report = vm.run().unwrap();
            assert_eq!(report.exit, VmExit::Reset, "{vcpus} vCPUs, run {run}");
            assert_eq!(g.console(&log), "B\n");
            assert_eq!(
                before + report.unhandled_pio,
                u64::from(LOOPS),
                "the loop counter did not carry over"
            );
            assert_eq!(memory_word(&snap, MARKER_ADDR), [0; 4]);
        }
    }
}

#[test]
fn damaged_or_mismatched_snapshots_are_refused_whole() {
    if !kvm_available("snapshot tests") {
        return;
    }
    let g = Guest::new();
    let snap = g.path("snap");
    g.snapshot(1, &snap);
    let restore = |config: &VmConfig, label: &str| {
        MicroVm::restore(config, &snap, label)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = restore(&g.config(2, "x.log"), LABEL);
    assert!(e.contains("1 vCPUs, this VM has 2"), "{e}");
    let e = restore(
        &VmConfig {
            mem_mib: 128,
            ..g.config(1, "x.log")
        },
        LABEL,
    );
    assert!(e.contains("64 MiB of memory, this VM has 128"), "{e}");
    let e = restore(&g.config(1, "x.log"), "another kernel");
    assert!(e.contains("it was made for \"tiny guest\""), "{e}");

    // One flipped byte in the state.
    let state = snap.join("state");
    let good = std::fs::read(&state).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 2;
    bad[last] ^= 1;
    std::fs::write(&state, &bad).unwrap();
    let e = restore(&g.config(1, "x.log"), LABEL);
    assert!(e.contains("checksum mismatch"), "{e}");
    std::fs::write(&state, &good[..good.len() / 2]).unwrap();
    let e = restore(&g.config(1, "x.log"), LABEL);
    assert!(e.contains("not a valid husk VM snapshot"), "{e}");
    std::fs::write(&state, &good).unwrap();

    // A memory file of the wrong length.
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(snap.join("memory"))
        .unwrap();
    memory.set_len(4096).unwrap();
    let e = restore(&g.config(1, "x.log"), LABEL);
    assert!(e.contains("truncated or replaced"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}
