//! A build step's sandbox: a container of the step's image in the build's isolation, held
//! open by `husk-init --hold` (`agent_proto::Tool::Hold`) so that one sandbox (one VM in
//! vm isolation) serves the whole step: RUN's command runs in it as an exec, COPY's files
//! go in through the archive tool, and its changes come out as the step's layer while it
//! still runs. Dropping it removes the container.

use std::io::Read;

use rootfs::digest::Digest;
use rootfs::store::ImageRecord;

use super::{BuildError, Output};
use crate::container::Isolation;
use crate::engine::Engine;
use crate::spec::{ExecFlags, RunFlags};

/// A held step container.
#[derive(Debug)]
pub struct StepBox<'e> {
    engine: &'e Engine,
    id: String,
}

impl<'e> StepBox<'e> {
    /// Creates and starts a held container of `image`.
    pub fn open(
        engine: &'e Engine,
        image: &ImageRecord,
        isolation: Isolation,
        network: Option<&str>,
    ) -> Result<Self, BuildError> {
        let flags = RunFlags {
            hold: true,
            isolation,
            network: network.map(str::to_owned),
            ..RunFlags::default()
        };
        let config = engine
            .create_from_flags(image, &image.id.to_string(), &flags, &|_| None)
            .map_err(BuildError::engine)?;
        let step = Self {
            engine,
            id: config.id,
        };
        engine.start(&step.id, false).map_err(BuildError::engine)?;
        Ok(step)
    }

    /// The container's short ID (as docker's "Running in").
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Runs `argv` with `env` added to the image's, output to `out`; its exit code.
    pub fn run(&self, argv: &[String], env: &[String], out: &Output) -> Result<i32, BuildError> {
        let flags = ExecFlags {
            env: env.to_vec(),
            cmd: argv.to_vec(),
            ..ExecFlags::default()
        };
        let exec = self
            .engine
            .exec(&self.id, &flags, &|_| None, out.sink(), out.sink())
            .map_err(BuildError::engine)?;
        let exit = exec
            .process
            .wait()
            .map_err(|e| BuildError::engine(crate::engine::EngineError::Agent(e)))?;
        Ok(exit.code)
    }

    /// Whether `path` is a directory in the container.
    pub fn is_dir(&self, path: &str) -> Result<bool, BuildError> {
        let stat = crate::files::stat(self.engine.root(), &self.id, path)?;
        Ok(stat.is_some_and(|s| s.is_dir()))
    }

    /// A small file of the container (`None`: missing or not a file).
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, BuildError> {
        Ok(crate::files::read_file(
            self.engine.root(),
            &self.id,
            path,
            1 << 20,
        )?)
    }

    /// Extracts `tar` (paths relative to `/`) into the container with its owners.
    pub fn put(&self, tar: &mut dyn Read) -> Result<(), BuildError> {
        crate::files::copy_to(
            self.engine.root(),
            &self.id,
            crate::files::CopySource::Stream(tar),
            "/",
            crate::files::CopyOptions { archive: true },
        )?;
        Ok(())
    }

    /// A tar of `path` in the container (entries under its last component's name).
    pub fn get(&self, path: &str, out: &mut dyn std::io::Write) -> Result<(), BuildError> {
        crate::files::copy_from(
            self.engine.root(),
            &self.id,
            path,
            crate::files::CopyTarget::Stream(out),
            crate::files::CopyOptions { archive: true },
        )?;
        Ok(())
    }

    /// The container's changes, stored as a layer.
    pub fn layer(&self) -> Result<(Digest, u64), BuildError> {
        Ok(crate::files::layer(self.engine.root(), &self.id)?)
    }
}

impl Drop for StepBox<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.engine.remove(&self.id, true, true) {
            log::warn!("removing build container {}: {e}", self.short_id());
        }
    }
}
