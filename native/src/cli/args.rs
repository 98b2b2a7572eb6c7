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

/// Parses sizes like `512MiB`, `2GB`, `1000` (whole bytes, at most 2^63).
pub fn parse_size(flag: &str, text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid {flag} {text:?}: expected a size such as 64MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => bail!("invalid {flag} {text:?}: unknown unit {other:?}"),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes > (1u64 << 63) as f64 {
        bail!("invalid {flag} {text:?}: too large");
    }
    Ok(bytes as u64)
}

pub fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("invalid {flag} {text:?}: expected e.g. 7d, 12h, 30s"))
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
