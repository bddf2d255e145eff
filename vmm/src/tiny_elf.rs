//! Tiny hand-written guests: a few bytes of machine code wrapped in a minimal ELF64 image
//! that husk's loader (and QEMU's PVH loader, through the Xen PVH note) boots like a
//! kernel. Used by the VMM's tests and by `husk bench vmm` as the "trivial guest".

/// Where tiny guests are loaded and entered (1 MiB).
pub const LOAD_ADDR: u64 = 0x10_0000;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Code that resets the VM at once: `mov al, 0xfe; out 0xf4, al; out 0x64, al; hlt`.
/// The same bytes mean the same in 16-, 32- and 64-bit mode. Port 0x64 is the i8042
/// reset husk handles; port 0xf4 is QEMU's `isa-debug-exit`, so the same guest ends a
/// QEMU VM too (husk logs it as an unhandled port write and goes on).
pub const RESET_AT_ONCE: &[u8] = &[0xb0, 0xfe, 0xe6, 0xf4, 0xe6, 0x64, 0xf4];

fn push_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn push_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn push_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn phdr(v: &mut Vec<u8>, kind: u32, offset: u64, addr: u64, size: u64) {
    push_u32(v, kind);
    push_u32(v, 0x7); // RWX
    push_u64(v, offset);
    push_u64(v, addr); // vaddr
    push_u64(v, addr); // paddr
    push_u64(v, size); // filesz
    push_u64(v, size); // memsz
    push_u64(v, if kind == PT_LOAD { 0x1000 } else { 4 });
}

/// The Xen PVH entry note: name "Xen", type 18, a 32-bit entry address.
fn pvh_note(entry: u32) -> Vec<u8> {
    let mut n = Vec::new();
    push_u32(&mut n, 4); // namesz ("Xen\0")
    push_u32(&mut n, 4); // descsz
    push_u32(&mut n, XEN_ELFNOTE_PHYS32_ENTRY);
    n.extend_from_slice(b"Xen\0");
    push_u32(&mut n, entry);
    n
}

/// An x86_64 ELF executable that loads `code` at `LOAD_ADDR` and enters it there.
pub fn build(code: &[u8]) -> Vec<u8> {
    let note = pvh_note(LOAD_ADDR as u32);
    let headers = EHDR_SIZE + 2 * PHDR_SIZE;
    let note_off = headers;
    let code_off = (note_off + note.len()).next_multiple_of(16);

    let mut v = Vec::with_capacity(code_off + code.len());
    v.extend_from_slice(b"\x7fELF");
    v.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    v.extend_from_slice(&[0; 8]);
    push_u16(&mut v, 2); // ET_EXEC
    push_u16(&mut v, 62); // EM_X86_64
    push_u32(&mut v, 1);
    push_u64(&mut v, LOAD_ADDR); // e_entry
    push_u64(&mut v, EHDR_SIZE as u64); // e_phoff
    push_u64(&mut v, 0); // e_shoff
    push_u32(&mut v, 0); // e_flags
    push_u16(&mut v, EHDR_SIZE as u16);
    push_u16(&mut v, PHDR_SIZE as u16);
    push_u16(&mut v, 2); // e_phnum
    push_u16(&mut v, 64); // e_shentsize
    push_u16(&mut v, 0); // e_shnum
    push_u16(&mut v, 0); // e_shstrndx
    phdr(
        &mut v,
        PT_LOAD,
        code_off as u64,
        LOAD_ADDR,
        code.len() as u64,
    );
    phdr(&mut v, PT_NOTE, note_off as u64, 0, note.len() as u64);
    v.extend_from_slice(&note);
    v.resize(code_off, 0);
    v.extend_from_slice(code);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_loader::loader::KernelLoader;
    use linux_loader::loader::elf::{Elf, PvhBootCapability};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn linux_loader_loads_it_with_a_pvh_entry() {
        let image = build(RESET_AT_ONCE);
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mut file = std::io::Cursor::new(image);
        let r = Elf::load(&mem, None, &mut file, Some(GuestAddress(LOAD_ADDR))).unwrap();
        assert_eq!(r.kernel_load, GuestAddress(LOAD_ADDR));
        assert_eq!(r.kernel_end, LOAD_ADDR + RESET_AT_ONCE.len() as u64);
        assert_eq!(
            r.pvh_boot_cap,
            PvhBootCapability::PvhEntryPresent(GuestAddress(LOAD_ADDR))
        );
        let mut code = vec![0u8; RESET_AT_ONCE.len()];
        mem.read_slice(&mut code, GuestAddress(LOAD_ADDR)).unwrap();
        assert_eq!(code, RESET_AT_ONCE);
    }
}
