//! The guest's hostname (UTS namespace), set once from `husk.hostname=`.

use std::io;

/// Errors from setting the hostname.
#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    /// sethostname(2) failed.
    #[error("cannot set hostname to {0:?}")]
    Set(String, #[source] io::Error),
}

/// Sets the hostname. `name` is validated by `cmdline`; the kernel checks the length again.
pub fn set(name: &str) -> Result<(), HostnameError> {
    // SAFETY: the pointer and length describe `name`'s bytes, which live across the call;
    // sethostname(2) copies them and needs no terminating NUL.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(HostnameError::Set(
            name.to_owned(),
            io::Error::last_os_error(),
        ))
    }
}
