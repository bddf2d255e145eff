//! The vm-isolation part of `husk bench run`: `husk run --rm --isolation vm husk/busybox
//! true` cold (`--cold`: the guest kernel boots) and warm (the VM restored from the
//! benchmark's own image template, made by its first two vm runs, reported apart), each
//! beside a process run on the same machine moment, with the phases of both; and PSS per
//! idle warm vm container against its guest RAM.

use std::path::Path;

use super::{
    Bench, Error, Marks, kib_to_mib, mem_available_kib, ms, phase_rows, row, settle, span,
};
use crate::bench::stats;

/// The phases of one vm-isolation `husk run`, in order.
const VM_PHASES: &[(&str, &str, &str)] = &[
    ("cli (exec, parse, image lookup)", "spawn", "create.start"),
    (
        "image prep (layer disks, scratch)",
        "create.start",
        "create.done",
    ),
    ("shim start", "create.done", "shim.start"),
    ("VMM child start (disks, spec)", "shim.start", "vmm.start"),
    ("VMM setup to first guest insn", "vmm.start", "vmm.built"),
    ("  of which restore (warm only)", "vmm.restore", "vmm.built"),
    (
        "guest to agent connected (boot/wake)",
        "vmm.built",
        "agent.connected",
    ),
    ("rootfs assembled (Setup)", "agent.connected", "agent.ready"),
    (
        "workload exec (start to exit)",
        "agent.ready",
        "workload.exited",
    ),
    (
        "sandbox teardown (agent, VM reset)",
        "workload.exited",
        "sandbox.down",
    ),
    ("removal (--rm) to husk's exit", "sandbox.down", "exit"),
];

/// Guest RAM of a vm container without `--memory`.
const GUEST_MIB: f64 = crate::sandbox::vm::DEFAULT_MEM_MIB as f64;

impl Bench<'_> {
    pub(super) fn vm_phases(&self, out: &mut Vec<String>) -> Result<(), Error> {
        log::info!("vm isolation: the first warm runs make the templates");
        let first = self.husk_once("vm", &[], usize::MAX - 2)?;
        let second = self.husk_once("vm", &[], usize::MAX - 1)?;
        let (mut cold, mut warm, mut process) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..self.o.vm_runs {
            log::info!("vm isolation end to end: run {}/{}", n + 1, self.o.vm_runs);
            // Cold, warm and process in turn, so that all three see the same machine.
            cold.push(self.husk_once("vm", &["--cold"], 3 * n)?);
            warm.push(self.husk_once("vm", &[], 3 * n + 1)?);
            process.push(self.husk_once("process", &[], 3 * n + 2)?);
        }
        let total = |all: &[Marks]| -> Vec<f64> {
            all.iter()
                .map(|m| ms(span(m, "spawn", "exit").unwrap_or(0)))
                .collect()
        };
        let (c, w, p) = (
            stats(&total(&cold)),
            stats(&total(&warm)),
            stats(&total(&process)),
        );
        out.push(String::new());
        out.push(row(
            "first vm run (makes the template)",
            stats(&total(std::slice::from_ref(&first))),
            "ms",
        ));
        out.push(row(
            "second vm run (makes the image's)",
            stats(&total(std::slice::from_ref(&second))),
            "ms",
        ));
        out.push(row("husk run --rm (vm, cold) true", c, "ms"));
        out.push(row("husk run --rm (vm, warm) true", w, "ms"));
        out.push(row("husk run --rm (process) true, same runs", p, "ms"));
        if let (Some(c), Some(w), Some(p)) = (c, w, p) {
            out.push(format!(
                "ratios (medians): cold/warm {:.1}x, warm/process {:.1}x",
                c.median / w.median,
                w.median / p.median
            ));
        }
        if vmm::host::probe(Path::new("/dev/kvm")).is_ok_and(|h| h.guests_emulated()) {
            out.push(
                "  (this host's KVM emulates guest kernel code: the kernel boot and every \
                 guest system call cost emulation; on hardware KVM the same boot takes \
                 milliseconds)"
                    .into(),
            );
        }
        out.push("vm phases, cold (median [min-max]):".into());
        out.extend(phase_rows(&cold, VM_PHASES));
        out.push("vm phases, warm (median [min-max]):".into());
        out.extend(phase_rows(&warm, VM_PHASES));
        Ok(())
    }

    pub(super) fn vm_idle_memory(&self, out: &mut Vec<String>) -> Result<(), Error> {
        let n = self.o.vm_idle;
        let before = mem_available_kib();
        let ids = (0..n)
            .map(|i| self.husk_detached_in("vm", &format!("vm-idle-{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        settle();
        let after = mem_available_kib();
        let pss: Vec<f64> = ids
            .iter()
            .map(|id| kib_to_mib(self.husk_container_pss(id)))
            .collect();
        out.push(String::new());
        let s = stats(&pss);
        out.push(row(
            &format!("idle warm vm container PSS (n={n})"),
            s,
            "MiB",
        ));
        if let Some(s) = s {
            out.push(format!(
                "  {:.0}% of its {GUEST_MIB:.0} MiB of guest RAM (shim + VMM, guest memory \
                 shared copy-on-write with the template); MemAvailable dropped {:.0} MiB in \
                 all; at this PSS the {:.0} MiB available now hold about {:.0} more",
                100.0 * s.median / GUEST_MIB,
                kib_to_mib(before) - kib_to_mib(after),
                kib_to_mib(after),
                kib_to_mib(after) / s.median.max(0.1)
            ));
        }
        self.remove_all(&ids);
        Ok(())
    }
}
