//! Reading the programs a container is likely to start first (and each one's ELF
//! interpreter) into the page cache while an image template is made (`prepare_image`):
//! the template's clones then find their pages cached, shared copy-on-write with the
//! template, and start them without block requests. On an emulating KVM the first exec
//! of busybox took 1.3 s through a cold page cache and 0.4 s through a warm one. Best
//! effort: what cannot be found or read is skipped.

use std::fs::File;
use std::io::Read;
use std::os::fd::BorrowedFd;

use super::sys;

/// At most this many programs, each read up to [`MAX_BYTES`].
const MAX_PROGRAMS: usize = 4;
const MAX_BYTES: u64 = 64 << 20;
/// The PATH searched when the container's has none (docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads each of `programs` (a path, or a name searched in `path`) found under `root`, and
/// its interpreter; returns how many files were read.
pub fn programs(root: BorrowedFd<'_>, programs: &[String], path: &str) -> usize {
    let path = if path.is_empty() { DEFAULT_PATH } else { path };
    let mut read = 0;
    for program in programs.iter().take(MAX_PROGRAMS) {
        let Some(file) = find(root, program, path) else {
            continue;
        };
        read += 1;
        let Some(interpreter) = read_through(file) else {
            continue;
        };
        if let Some(file) = open(root, &interpreter) {
            read_through(file);
            read += 1;
        }
    }
    read
}

/// `program` as execvp finds it under `root`.
fn find(root: BorrowedFd<'_>, program: &str, path: &str) -> Option<File> {
    if program.contains('/') {
        return program.starts_with('/').then(|| open(root, program))?;
    }
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .find_map(|dir| open(root, &format!("{}/{program}", dir.trim_end_matches('/'))))
}

/// A regular file at the absolute `path` resolved inside `root`.
fn open(root: BorrowedFd<'_>, path: &str) -> Option<File> {
    let fd = sys::open_in_root(root, path.trim_start_matches('/'), libc::O_RDONLY, 0).ok()?;
    let file = File::from(fd);
    file.metadata().ok()?.is_file().then_some(file)
}

/// Reads `file` to its end (or [`MAX_BYTES`]); its ELF interpreter, if it has one.
fn read_through(file: File) -> Option<String> {
    let mut file = file.take(MAX_BYTES);
    let mut head = vec![0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head.truncate(got);
    let _ = std::io::copy(&mut file, &mut std::io::sink());
    interpreter(&head)
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file whose first bytes are `head`.
fn interpreter(head: &[u8]) -> Option<String> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let v = u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let (phoff, size, count) = (u64_at(0x20)?, usize::from(u16_at(0x36)?), u16_at(0x38)?);
    for n in 0..usize::from(count) {
        let at = phoff.checked_add(n.checked_mul(size)?)?;
        if u32_at(at)? == PT_INTERP {
            let (offset, len) = (u64_at(at + 8)?, u64_at(at + 32)?);
            let bytes = head.get(offset..offset.checked_add(len)?)?;
            let path = std::str::from_utf8(bytes).ok()?.trim_end_matches('\0');
            return path.starts_with('/').then(|| path.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_interpreter_of_a_dynamic_elf_and_none_elsewhere() {
        // The agent's own test binary is a dynamic x86_64 ELF (std's tests link libc).
        let mut me = Vec::new();
        File::open("/proc/self/exe")
            .unwrap()
            .take(4096)
            .read_to_end(&mut me)
            .unwrap();
        let interp = interpreter(&me).expect("an interpreter");
        assert!(interp.starts_with('/') && interp.contains("ld"), "{interp}");
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);
        let mut broken = me.clone();
        broken.truncate(70);
        assert_eq!(interpreter(&broken), None);
    }

    #[test]
    fn finds_programs_as_execvp_does_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::fs::write(t.path().join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(t.path().join("bin/dir")).unwrap();
        let root = sys::open_dir(t.path()).unwrap();
        let root = std::os::fd::AsFd::as_fd(&root);
        assert!(find(root, "tool", "/bin:/usr/bin").is_some());
        assert!(find(root, "/usr/bin/tool", "").is_some());
        assert!(find(root, "dir", "/bin").is_none(), "a directory");
        assert!(find(root, "usr/bin/tool", "/").is_none(), "relative paths");
        assert!(find(root, "missing", "/bin").is_none());
        let names = ["tool".to_owned(), "missing".to_owned()];
        assert_eq!(programs(root, &names, "/usr/bin"), 1);
    }
}
