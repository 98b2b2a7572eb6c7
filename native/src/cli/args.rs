//! Argument types and parsers shared by the commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln::cache::Materialize;
use kiln::convert::OnError;
use kiln::{AnyBackend, BackendChoice};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Cpu,
    Gpu,
}

/// Opens the chosen backend; the GPU one needs a `wgpu` adapter (a real GPU or Mesa's
/// lavapipe): without one this is an error, never a silent CPU fallback.
pub fn open_backend(choice: BackendArg) -> Result<AnyBackend> {
    let choice = match choice {
        BackendArg::Cpu => BackendChoice::Cpu,
        BackendArg::Gpu => BackendChoice::Gpu,
    };
    AnyBackend::open(choice).context("starting the GPU backend")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaterializeArg {
    /// Store the transformed tensor.
    Tensor,
    /// Store the file's bytes; the spec runs when the data is read (Petastorm's advice).
    Raw,
}

impl From<MaterializeArg> for Materialize {
    fn from(arg: MaterializeArg) -> Self {
        match arg {
            MaterializeArg::Tensor => Materialize::Tensor,
            MaterializeArg::Raw => Materialize::Raw,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnErrorArg {
    /// Skip the file and report it in the manifest; the next run tries it again.
    Skip,
    /// Stop the job at the first bad file.
    Fail,
}

impl From<OnErrorArg> for OnError {
    fn from(arg: OnErrorArg) -> Self {
        match arg {
            OnErrorArg::Skip => OnError::Skip,
            OnErrorArg::Fail => OnError::Fail,
        }
    }
}

pub fn default_cache() -> PathBuf {
    kiln::cache::default_dir()
}

pub fn parse_size(flag: &str, text: &str) -> Result<u64> {
    Ok(kiln::units::parse_size(flag, text)?)
}

pub fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    Ok(kiln::units::parse_duration(flag, text)?)
}

/// `i/n`: this worker's shard.
pub fn parse_shard(text: &str) -> Result<(u64, u64)> {
    let (i, n) = text
        .split_once('/')
        .with_context(|| format!("--shard {text:?}: expected i/n"))?;
    let (i, n): (u64, u64) = (
        i.trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: i is not a number"))?,
        n.trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: n is not a number"))?,
    );
    if n == 0 || i >= n {
        bail!("--shard {text:?}: need 0 <= i < n");
    }
    Ok((i, n))
}
