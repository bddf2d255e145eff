//! Whether the kernel preserves every vector register its user space can use, and what
//! the agent does when it does not.
//!
//! On an emulating KVM (PVM on husk's development machines) guest user space runs
//! natively: its `CPUID` and `XGETBV` are the host's, so programs see AVX usable. The
//! guest kernel there cannot use XSAVE (the emulator rejects `XRSTOR`; it is booted with
//! `clearcpuid=xsave`) and switches tasks with FXSAVE, which covers the x87 and SSE
//! registers only: the upper halves of the YMM (and ZMM) registers leak from one task to
//! the next, silently corrupting any program that has AVX state live across a task
//! switch (measured: `sort --parallel=2` gave wrong output about one run in three). The
//! guest cannot hide AVX from its user space there (the VMM's CPUID and the guest's XCR0
//! do not reach natively executed instructions), so the agent tells glibc not to use it:
//! every process it starts in such a sandbox gets `glibc.cpu.hwcaps=-AVX,...` first in
//! `GLIBC_TUNABLES` (docs/guest-kernel.md). Programs that pick vector code without glibc
//! (Go, OpenSSL, statically built AVX code) are not covered. Where the kernel manages
//! XSAVE state itself (hardware virtualization, process isolation) nothing changes.

use std::sync::OnceLock;

/// glibc's tunable that turns off every feature using registers beyond x87 and SSE.
pub const TUNABLE: &str = "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-F16C,-AVX512F,\
-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF";
/// The environment variable glibc reads its tunables from.
pub const ENV: &str = "GLIBC_TUNABLES";

const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
const CPUID1_ECX_AVX: u32 = 1 << 28;
const XCR0_SSE_YMM: u64 = 0b110;

/// Whether user space can use AVX (CPUID says so and XCR0 enables the YMM state).
fn user_space_has_avx() -> bool {
    let ecx = std::arch::x86_64::__cpuid(1).ecx;
    if ecx & CPUID1_ECX_OSXSAVE == 0 || ecx & CPUID1_ECX_AVX == 0 {
        return false;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; CPUID.1:ECX.OSXSAVE (checked above) says
    // the instruction is enabled, so it cannot fault. It touches no memory.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    let xcr0 = (u64::from(hi) << 32) | u64::from(lo);
    xcr0 & XCR0_SSE_YMM == XCR0_SSE_YMM
}

/// Whether the kernel saves extended (XSAVE) state on task switches: its `xsave` flag.
fn kernel_saves_xstate(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "xsave"))
}

/// Whether processes here must be kept off AVX (computed once).
pub fn avx_unpreserved() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // Without /proc/cpuinfo nothing is known: leave programs as they are.
        !cpuinfo.is_empty() && user_space_has_avx() && !kernel_saves_xstate(&cpuinfo)
    })
}

/// The `GLIBC_TUNABLES` value a process gets here, given the one it asked for: `None`
/// when nothing needs to change. husk's tunable goes first, so a process's own
/// settings follow it.
pub fn glibc_tunables(asked: Option<&str>) -> Option<String> {
    if !avx_unpreserved() {
        return None;
    }
    Some(merge(asked))
}

fn merge(asked: Option<&str>) -> String {
    match asked {
        Some(a) if !a.is_empty() => format!("{TUNABLE}:{a}"),
        _ => TUNABLE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_flag_is_matched_as_a_word() {
        assert!(kernel_saves_xstate(
            "processor : 0\nflags\t\t: fpu sse xsave avx\n"
        ));
        assert!(!kernel_saves_xstate(
            "flags\t\t: fpu sse xsaveopt xsaves avx\n"
        ));
        assert!(!kernel_saves_xstate("flags\t\t: fpu sse\n"));
    }

    #[test]
    fn husk_tunable_goes_first() {
        assert_eq!(merge(None), TUNABLE);
        assert_eq!(merge(Some("")), TUNABLE);
        assert_eq!(
            merge(Some("glibc.malloc.check=3")),
            format!("{TUNABLE}:glibc.malloc.check=3")
        );
    }

    #[test]
    fn this_host_kernel_preserves_what_its_user_space_uses() {
        // Tests run on the host kernel, which manages XSAVE state whenever it enables AVX.
        assert!(!avx_unpreserved());
    }
}
