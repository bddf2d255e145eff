//! Starting a program from the agent the way `posix_spawn` does: `clone(CLONE_VM |
//! CLONE_VFORK)` onto a stack of its own, so the child borrows the agent's memory until it
//! execs instead of getting a copy of it. A `fork` copies the page tables of every private
//! mapping and write-protects the agent's own pages, which then take a copy-on-write fault
//! at their next write; under an emulating KVM every one of those page-table writes is
//! emulated guest kernel work (a fork of the agent measured ~0.9 s there, one page fault
//! ~2 ms). The child does the caller's preparation ([`Command::spawn`]'s `before_exec`),
//! then execs; the calling thread sleeps until then.
//!
//! What the child may do is what a `vfork` child may: system calls on data prepared before
//! the clone, no allocation, no locks, nothing that touches the agent's other threads (libc's
//! `setuid` family signals every thread of the process; the child must use the raw system
//! calls). Every signal is blocked around the clone, so no handler of the agent's runs on the
//! child before `before_exec` has reset the dispositions.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::pid_t;

/// The child's stack: `before_exec` and the exec loop need little.
const STACK_SIZE: usize = 128 << 10;

/// PATH when the environment has none (musl's `execvp` default).
const FALLBACK_PATH: &str = "/usr/local/bin:/bin:/usr/bin";

/// A program to start: path, argv, environment and working directory, like
/// `std::process::Command` with a cleared environment.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    argv: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: OsString,
}

impl Command {
    /// `program` (searched in the environment's PATH if it has no `/`), argv[0] = `program`,
    /// no environment, working directory `/`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref().to_owned();
        Self {
            argv: vec![program.clone()],
            program,
            env: BTreeMap::new(),
            cwd: "/".into(),
        }
    }

    /// Replaces argv[0].
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.argv[0] = arg0.as_ref().to_owned();
        self
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.argv.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets one environment variable (a later value for the same key wins). The child's
    /// environment is sorted by key, as `std::process::Command` passes it.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    /// Whether the environment has `key`.
    pub fn has_env(&self, key: &str) -> bool {
        self.env.contains_key(OsStr::new(key))
    }

    /// The working directory the child changes to before `before_exec`.
    pub fn current_dir(&mut self, cwd: impl AsRef<OsStr>) -> &mut Self {
        self.cwd = cwd.as_ref().to_owned();
        self
    }

    /// Starts the program with `stdio` as its descriptors 0, 1 and 2, after `before_exec`
    /// has run in the child; returns its pid once it has exec'd. If the child's preparation
    /// or the exec fails, the child is reaped here and its error returned (a caller that
    /// reaps every child elsewhere must hold off that reaper while this runs).
    ///
    /// # Safety
    /// `before_exec` runs in a child sharing this process's memory: it must only make
    /// async-signal-safe system calls on data prepared beforehand (no allocation, no locks,
    /// no libc call that involves other threads), and must reset the signal dispositions
    /// before it unblocks any signal.
    pub unsafe fn spawn(
        &self,
        stdio: [RawFd; 3],
        before_exec: &dyn Fn() -> io::Result<()>,
    ) -> io::Result<pid_t> {
        let prepared = Prepared::new(self, stdio, before_exec)?;
        let mut stack = vec![0u8; STACK_SIZE];
        // The stack grows down from its end, which x86-64 wants 16-byte aligned.
        let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset and pthread_sigmask write to the local sets. clone runs `child`
        // on `stack` (alive until clone returns: CLONE_VFORK suspends this thread until the
        // child has exec'd or exited) with a pointer to `prepared`, which outlives it too.
        let pid = unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
            let pid = libc::clone(
                child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&prepared).cast_mut().cast(),
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        };
        drop(stack);
        match prepared.errno.load(Ordering::SeqCst) {
            0 => Ok(pid),
            errno => {
                // SAFETY: waitpid on our own child, which has exited; the status is not needed.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// Everything the child reads, as C data made before the clone.
struct Prepared<'a> {
    /// Paths to try in order (PATH search done as musl's `execvp` does).
    candidates: Vec<CString>,
    /// Owns what `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns what `env_ptrs` points to.
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    stdio: [RawFd; 3],
    before_exec: &'a dyn Fn() -> io::Result<()>,
    /// Set by the child when it gives up: the errno of the step that failed.
    errno: AtomicI32,
}

impl<'a> Prepared<'a> {
    fn new(
        cmd: &Command,
        stdio: [RawFd; 3],
        before_exec: &'a dyn Fn() -> io::Result<()>,
    ) -> io::Result<Self> {
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let argv = cmd
            .argv
            .iter()
            .map(|a| c(a))
            .collect::<io::Result<Vec<_>>>()?;
        let env = cmd
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                c(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let path = cmd.env.get(OsStr::new("PATH")).map(OsString::as_os_str);
        let candidates = candidates(&cmd.program, path)
            .iter()
            .map(|p| c(p))
            .collect::<io::Result<Vec<_>>>()?;
        let with_null = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Self {
            argv_ptrs: with_null(&argv),
            env_ptrs: with_null(&env),
            candidates,
            _argv: argv,
            _env: env,
            cwd: c(&cmd.cwd)?,
            stdio,
            before_exec,
            errno: AtomicI32::new(0),
        })
    }
}

/// The paths `execvp` would try for `program`: itself if it has a `/`, else each PATH entry
/// (an empty entry is the working directory) joined with it. An empty name has none.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<OsString> {
    let name = program.as_bytes();
    if name.is_empty() {
        return Vec::new();
    }
    if name.contains(&b'/') {
        return vec![program.to_owned()];
    }
    let path = path.map_or(FALLBACK_PATH.as_bytes(), OsStr::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut full = dir.to_vec();
            if !full.is_empty() && !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(name);
            OsStr::from_bytes(&full).to_owned()
        })
        .collect()
}

/// The child: stdio, working directory, the caller's preparation, exec. Never returns.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive and unchanged while this child runs.
    let p = unsafe { &*arg.cast::<Prepared<'_>>() };
    let errno = child_steps(p);
    p.errno.store(errno, Ordering::SeqCst);
    // SAFETY: exit_group ends only this child (it shares memory, not a thread group).
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    127
}

/// Returns the errno that ended the attempt (only returns on failure).
fn child_steps(p: &Prepared<'_>) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: dup2, chdir and execve take descriptors and pointers to the prepared C data.
    unsafe {
        for (target, &fd) in p.stdio.iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                // Inherited as it is; only close-on-exec must go.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return errno();
                }
            } else if libc::dup2(fd, target) < 0 {
                return errno();
            }
        }
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            return errno();
        }
        if let Err(e) = (p.before_exec)() {
            return e.raw_os_error().unwrap_or(libc::EIO);
        }
        // execvp's rules: EACCES is remembered and the search goes on; ENOENT and ENOTDIR
        // go on; anything else ends it.
        let mut result = libc::ENOENT;
        let mut denied = false;
        for path in &p.candidates {
            libc::execve(path.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
            result = errno();
            match result {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR => {}
                _ => return result,
            }
        }
        if denied { libc::EACCES } else { result }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_candidates() {
        let c = |p: &str, path: Option<&str>| -> Vec<String> {
            candidates(OsStr::new(p), path.map(OsStr::new))
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(c("/bin/sh", Some("/x")), ["/bin/sh"]);
        assert_eq!(c("./run", None), ["./run"]);
        assert_eq!(c("sh", Some("/a:/b/::c")), ["/a/sh", "/b/sh", "sh", "c/sh"]);
        assert_eq!(
            c("sh", None),
            ["/usr/local/bin/sh", "/bin/sh", "/usr/bin/sh"]
        );
        assert!(c("", Some("/a")).is_empty());
    }

    fn pipe() -> [RawFd; 2] {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        fds
    }

    fn read_all(fd: RawFd) -> String {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        // SAFETY: the test owns `fd` and hands it to the File.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    fn status(pid: pid_t) -> i32 {
        let mut st = 0;
        // SAFETY: waitpid on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        st
    }

    #[test]
    fn runs_with_the_given_argv_env_cwd_and_stdio() {
        let [r, w] = pipe();
        let mut cmd = Command::new("sh");
        cmd.arg0("not-sh")
            .args(["-c", "echo \"$0 $B $A $(pwd)\"; env | sort | tr '\\n' ' '"])
            .env("PATH", "/usr/bin:/bin")
            .env("B", "2")
            .env("A", "1")
            .current_dir("/tmp");
        // SAFETY: the preparation does nothing.
        let pid = unsafe { cmd.spawn([w, w, w], &|| Ok(())) }.unwrap();
        // SAFETY: closing the parent's copy of the write end.
        unsafe { libc::close(w) };
        let out = read_all(r);
        assert_eq!(status(pid), 0);
        assert!(out.starts_with("not-sh 2 1 /tmp\n"), "{out}");
        assert!(out.contains("A=1 B=2 PATH=/usr/bin:/bin "), "{out}");
    }

    #[test]
    fn failures_come_back_as_errors() {
        let [_r, w] = pipe();
        let cmd = Command::new("husk-no-such-program");
        // SAFETY: as above.
        let err = unsafe { cmd.spawn([w, w, w], &|| Ok(())) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let mut cmd = Command::new("/bin/true");
        cmd.current_dir("/husk/no/such/dir");
        // SAFETY: as above.
        let err = unsafe { cmd.spawn([w, w, w], &|| Ok(())) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let cmd = Command::new("/bin/true");
        let refuse = || Err(io::Error::from_raw_os_error(libc::EPERM));
        // SAFETY: as above.
        let err = unsafe { cmd.spawn([w, w, w], &refuse) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let cmd = Command::new("/dev/null");
        // SAFETY: as above.
        let err = unsafe { cmd.spawn([w, w, w], &|| Ok(())) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    }
}
