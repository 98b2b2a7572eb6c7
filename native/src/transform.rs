//! `kiln transform`: one file through a spec to a `.npy`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use kiln_core::{Backend, CpuBackend, Pipeline, Spec, Tensor};
use kiln_gpu::GpuBackend;

/// Which backend runs the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Cpu,
    Gpu,
}

/// Builds the chosen backend. The GPU one needs a `wgpu` adapter (a real GPU or Mesa's
/// lavapipe); without one this is an error, never a silent CPU fallback.
pub fn make_backend(choice: BackendChoice) -> Result<Box<dyn Backend>> {
    Ok(match choice {
        BackendChoice::Cpu => Box::new(CpuBackend),
        BackendChoice::Gpu => Box::new(GpuBackend::new().context("starting the GPU backend")?),
    })
}

pub fn load_spec(path: &Path) -> Result<Spec> {
    let text = fs::read_to_string(path).with_context(|| format!("reading spec {}", path.display()))?;
    Spec::from_json(&text).with_context(|| format!("invalid spec {}", path.display()))
}

/// Runs `pipeline` on the file at `input`; errors name the file.
pub fn transform_file(pipeline: &Pipeline, backend: &dyn Backend, input: &Path) -> Result<Tensor> {
    let bytes = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    pipeline
        .run(backend, &bytes)
        .with_context(|| format!("{} ({} backend)", input.display(), backend.name()))
}

pub use crate::cache::write_atomic;
