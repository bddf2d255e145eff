//! Checks that a binary can run as the guest's `/init`: a little-endian x86-64 ELF executable
//! with no `PT_INTERP` (the initramfs has no dynamic loader, so a dynamically linked agent
//! would only fail after the guest kernel has booted, which under emulation takes minutes).

/// ELF header and program-header constants used here.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_INTERP: u32 = 3;
const EHDR_LEN: usize = 64;

/// Why a binary cannot be the guest's `/init`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("not an ELF file")]
    NotElf,
    /// ELF, but not 64-bit little-endian x86-64.
    #[error("not a 64-bit little-endian x86-64 ELF")]
    WrongArch,
    /// The program headers run past the end of the file.
    #[error("truncated ELF program headers")]
    Truncated,
    /// The binary asks for a dynamic loader.
    #[error(
        "dynamically linked (has PT_INTERP {0:?}); build it static with scripts/build-agent.sh"
    )]
    Dynamic(String),
}

/// Accepts `bytes` only if it is a statically linked x86-64 ELF.
pub fn check_static_x86_64(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.len() < EHDR_LEN || &bytes[..4] != ELF_MAGIC {
        return Err(ElfError::NotElf);
    }
    if bytes[4] != ELFCLASS64 || bytes[5] != ELFDATA2LSB || u16_at(bytes, 0x12) != EM_X86_64 {
        return Err(ElfError::WrongArch);
    }
    let phoff = usize::try_from(u64_at(bytes, 0x20)).map_err(|_| ElfError::Truncated)?;
    let phentsize = usize::from(u16_at(bytes, 0x36));
    let phnum = usize::from(u16_at(bytes, 0x38));
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .filter(|&at| {
                phentsize >= 0x28 && at.checked_add(phentsize).is_some_and(|e| e <= bytes.len())
            })
            .ok_or(ElfError::Truncated)?;
        if u32_at(bytes, at) == PT_INTERP {
            return Err(ElfError::Dynamic(interp(bytes, at)));
        }
    }
    Ok(())
}

/// The loader path a `PT_INTERP` header names, best effort (for the error message).
fn interp(bytes: &[u8], ph: usize) -> String {
    let range = usize::try_from(u64_at(bytes, ph + 8)).ok().and_then(|off| {
        let len = usize::try_from(u64_at(bytes, ph + 0x20)).ok()?;
        bytes.get(off..off.checked_add(len)?)
    });
    let raw = range.unwrap_or_default();
    String::from_utf8_lossy(raw)
        .trim_end_matches('\0')
        .to_owned()
}

// The readers below are only called with offsets already checked against `bytes.len()`.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Synthetic ELF images for tests.
#[cfg(test)]
pub(crate) mod fake {
    /// A minimal x86-64 ELF header with `interp` as its only program header (if any), then
    /// `payload`.
    pub fn elf(interp: Option<&str>, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(super::ELF_MAGIC);
        b[4] = super::ELFCLASS64;
        b[5] = super::ELFDATA2LSB;
        b[0x12..0x14].copy_from_slice(&super::EM_X86_64.to_le_bytes());
        if let Some(path) = interp {
            b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&super::PT_INTERP.to_le_bytes());
            ph[8..16].copy_from_slice(&120u64.to_le_bytes());
            ph[0x20..0x28].copy_from_slice(&(path.len() as u64 + 1).to_le_bytes());
            b.extend_from_slice(&ph);
            b.extend_from_slice(path.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(payload);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_static_rejects_dynamic() {
        assert_eq!(check_static_x86_64(&fake::elf(None, b"code")), Ok(()));
        let dynamic = fake::elf(Some("/lib64/ld-linux-x86-64.so.2"), b"");
        assert_eq!(
            check_static_x86_64(&dynamic),
            Err(ElfError::Dynamic("/lib64/ld-linux-x86-64.so.2".into()))
        );
    }

    #[test]
    fn rejects_non_elf_wrong_arch_and_truncation() {
        assert_eq!(check_static_x86_64(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        let mut arm = fake::elf(None, b"");
        arm[0x12] = 183; // EM_AARCH64
        assert_eq!(check_static_x86_64(&arm), Err(ElfError::WrongArch));
        let mut cut = fake::elf(Some("/ld.so"), b"");
        cut.truncate(100);
        assert_eq!(check_static_x86_64(&cut), Err(ElfError::Truncated));
        let mut huge = fake::elf(None, b"");
        huge[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        huge[0x38] = 1;
        assert_eq!(check_static_x86_64(&huge), Err(ElfError::Truncated));
    }

    #[test]
    fn real_host_binaries_classify() {
        // The test binary itself is dynamically linked on glibc hosts unless built static.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        match check_static_x86_64(&me) {
            Ok(()) | Err(ElfError::Dynamic(_)) => {}
            Err(e) => panic!("own test binary misparsed: {e}"),
        }
    }
}
