//! Putting the guest's software into its memory: the kernel (an ELF `vmlinux` or a
//! bzImage), the initramfs at the top of low memory, and the command line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, KernelLoader, bzimage::BzImage, elf::Elf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::arch::x86_64::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, INITRD_ADDR_MAX, MMIO_HOLE_START,
};

const PAGE_SIZE: u64 = 4096;
const EM_X86_64: u16 = 62;
/// bzImage: the 64-bit entry point is 0x200 bytes into the protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Errors loading the guest's software.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel file does not exist.
    #[error("kernel {0} does not exist")]
    KernelMissing(PathBuf),
    /// The kernel file cannot be read.
    #[error("cannot read kernel {0}")]
    KernelRead(PathBuf, #[source] io::Error),
    /// Neither an x86_64 ELF nor a bzImage.
    #[error("{0} is not a kernel: expected an x86_64 ELF vmlinux or a bzImage ({1})")]
    NotAKernel(PathBuf, String),
    /// The kernel's segments do not fit the guest's memory.
    #[error("kernel {0} does not fit in guest memory ({1})")]
    KernelDoesNotFit(PathBuf, String),
    /// The initramfs file does not exist.
    #[error("initramfs {0} does not exist")]
    InitrdMissing(PathBuf),
    /// The initramfs file cannot be read.
    #[error("cannot read initramfs {0}")]
    InitrdRead(PathBuf, #[source] io::Error),
    /// The initramfs does not fit between the kernel and the top of low memory.
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The command line cannot be written.
    #[error("cannot write the kernel command line to guest memory")]
    Cmdline(#[source] vm_memory::GuestMemoryError),
}

/// A loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where the boot vCPU starts (64-bit entry).
    pub entry: u64,
    /// First byte after the kernel's image in memory.
    pub end: u64,
    /// The bzImage's setup header; `None` for an ELF.
    pub header: Option<setup_header>,
}

fn open(path: &Path, missing: fn(PathBuf) -> Error) -> Result<File, Error> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(path.to_path_buf()),
        _ => Error::KernelRead(path.to_path_buf(), e),
    })
}

/// Reads the ELF identification and machine, if the file is an ELF.
fn elf_machine(file: &mut File) -> io::Result<Option<u16>> {
    let mut ident = [0u8; 20];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut ident)?;
    if n < ident.len() || &ident[..4] != b"\x7fELF" {
        return Ok(None);
    }
    Ok(Some(u16::from_le_bytes([ident[18], ident[19]])))
}

/// Loads the kernel at `path`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, Error> {
    let mut file = open(path, Error::KernelMissing)?;
    let not_a_kernel = |why: String| Error::NotAKernel(path.to_path_buf(), why);
    let fits = |e: loader::Error| match e {
        loader::Error::Elf(linux_loader::loader::elf::Error::ReadKernelImage)
        | loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::ReadBzImageCompressedKernel,
        ) => Error::KernelDoesNotFit(path.to_path_buf(), e.to_string()),
        other => not_a_kernel(other.to_string()),
    };
    let machine = elf_machine(&mut file).map_err(|e| Error::KernelRead(path.to_path_buf(), e))?;
    match machine {
        Some(EM_X86_64) => {
            let r =
                Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(fits)?;
            if r.kernel_end == 0 {
                return Err(not_a_kernel("the ELF has no loadable segments".into()));
            }
            Ok(LoadedKernel {
                entry: r.kernel_load.0,
                end: r.kernel_end,
                header: None,
            })
        }
        Some(other) => Err(not_a_kernel(format!("ELF for machine {other}, not x86_64"))),
        None => {
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(
                |e| match e {
                    loader::Error::Bzimage(
                        linux_loader::loader::bzimage::Error::InvalidBzImage
                        | linux_loader::loader::bzimage::Error::ReadBzImageHeader
                        | linux_loader::loader::bzimage::Error::SeekBzImageHeader,
                    ) => not_a_kernel("no ELF or bzImage header".into()),
                    other => fits(other),
                },
            )?;
            Ok(LoadedKernel {
                entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                end: r.kernel_end,
                header: r.setup_header,
            })
        }
    }
}

/// Where an initramfs of `size` bytes goes: page-aligned at the top of low memory (below
/// the MMIO hole and the kernel's 2 GiB initrd limit), above the kernel.
pub fn initrd_address(mem_size: u64, kernel_end: u64, size: u64) -> Option<u64> {
    let top = mem_size.min(MMIO_HOLE_START).min(INITRD_ADDR_MAX + 1);
    let addr = top.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end).then_some(addr)
}

/// Loads the initramfs at `path`; returns its guest address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<(u64, u32), Error> {
    let read_err = |e| Error::InitrdRead(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::InitrdMissing(path.to_path_buf()),
        _ => Error::InitrdRead(path.to_path_buf(), e),
    })?;
    let size = file.metadata().map_err(read_err)?.len();
    let too_large = || Error::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
    };
    let size32 = u32::try_from(size).map_err(|_| too_large())?;
    let addr = initrd_address(mem_size, kernel_end, size).ok_or_else(too_large)?;
    read_into(mem, addr, &mut file, size as usize).map_err(read_err)?;
    Ok((addr, size32))
}

fn read_into<F: ReadVolatile>(
    mem: &GuestMemoryMmap,
    addr: u64,
    src: &mut F,
    len: usize,
) -> io::Result<()> {
    mem.read_exact_volatile_from(GuestAddress(addr), src, len)
        .map_err(io::Error::other)
}

/// Writes the NUL-terminated command line; returns its address and size with the NUL.
pub fn load_cmdline(mem: &GuestMemoryMmap, line: &str) -> Result<(u64, u32), Error> {
    debug_assert!(line.len() < CMDLINE_MAX_SIZE);
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(Error::Cmdline)?;
    Ok((CMDLINE_START, bytes.len() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let m = 128u64 << 20;
        assert_eq!(
            initrd_address(m, 0x200_0000, 4097),
            Some((m - 4097) & !0xfff)
        );
        assert_eq!(initrd_address(m, 0x200_0000, m), None);
        // Large guests keep it below the 2 GiB initrd limit.
        assert_eq!(
            initrd_address(8 << 30, 0, 4096),
            Some(INITRD_ADDR_MAX + 1 - 4096)
        );
    }

    #[test]
    fn non_kernels_are_refused_clearly() {
        let m = mem(64 << 20);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"#!/bin/sh\necho not a kernel\n").unwrap();
        let e = load_kernel(&m, f.path()).unwrap_err();
        assert!(matches!(e, Error::NotAKernel(..)), "{e}");
        assert!(e.to_string().contains("is not a kernel"));

        let e = load_kernel(&m, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(e, Error::KernelMissing(_)));
    }

    #[test]
    fn foreign_elf_is_refused() {
        let m = mem(64 << 20);
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[18] = 183; // aarch64
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&header).unwrap();
        let e = load_kernel(&m, f.path()).unwrap_err().to_string();
        assert!(e.contains("machine 183"), "{e}");
    }

    #[test]
    fn cmdline_is_nul_terminated() {
        let m = mem(1 << 20);
        let (addr, size) = load_cmdline(&m, "console=ttyS0").unwrap();
        assert_eq!((addr, size), (CMDLINE_START, 14));
        let mut buf = [0u8; 14];
        m.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
    }
}
