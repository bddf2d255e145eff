//! Request bodies kept in a file of the state directory while a verb reads them (`load`'s
//! archive, `build`'s context): removed when dropped, so a client that goes away
//! mid-upload, or a verb that fails, leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;

use crate::error::ApiError;

/// A spooled body.
#[derive(Debug)]
pub struct Spool(pub PathBuf, pub std::fs::File);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Receives the body of `req` into a new spool file in `dir`.
pub async fn receive(
    req: hyper::Request<hyper::body::Incoming>,
    dir: &Path,
    what: &str,
) -> Result<Spool, ApiError> {
    std::fs::create_dir_all(dir).map_err(|_| ApiError::Body)?;
    let mut spool = create(dir, what)?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::Body)?;
        if let Some(data) = frame.data_ref() {
            spool.1.write_all(data).map_err(|_| ApiError::Body)?;
        }
    }
    spool.1.flush().map_err(|_| ApiError::Body)?;
    Ok(spool)
}

/// A new spool file in `dir`.
fn create(dir: &Path, what: &str) -> Result<Spool, ApiError> {
    for n in 0..1000u32 {
        let path = dir.join(format!(".api-{what}-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok(Spool(path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => return Err(ApiError::Body),
        }
    }
    Err(ApiError::Body)
}
