//! A spec read once (its JSON kept for cache keys and manifests), and one file through it.

use std::fs;
use std::path::Path;

use kiln_core::{Backend, Pipeline, Spec, Tensor};

use crate::error::{Error, IoContext, Result};

/// Spec files larger than this are not specs.
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// A validated spec and the JSON it came from.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub json: serde_json::Value,
    pub spec: Spec,
}

impl SpecFile {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<SpecFile> {
        let size = fs::metadata(path).at("reading spec", path)?.len();
        if size > MAX_SPEC_BYTES {
            return Err(Error::Spec {
                path: Some(path.to_owned()),
                source: kiln_core::Error::Spec {
                    location: kiln_core::error::SpecLocation {
                        index: None,
                        op: None,
                        field: None,
                    },
                    message: format!("{size} bytes is too large for a spec"),
                },
            });
        }
        let text = fs::read_to_string(path).at("reading spec", path)?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_owned(),
            source: e,
        })?;
        Self::from_value(json).map_err(|e| match e {
            Error::Spec { source, .. } => Error::Spec {
                path: Some(path.to_owned()),
                source,
            },
            other => other,
        })
    }

    /// Validates spec JSON.
    pub fn from_value(json: serde_json::Value) -> Result<SpecFile> {
        let spec = Spec::from_value(&json).map_err(|source| Error::Spec { path: None, source })?;
        Ok(SpecFile { json, spec })
    }
}

/// Runs `pipeline` on the file at `input`; errors name the file. Returns the decoder's
/// warnings (Pillow's decompression-bomb warning) beside the tensor.
pub fn transform_file(
    pipeline: &Pipeline,
    backend: &dyn Backend,
    input: &Path,
) -> Result<(Tensor, Vec<kiln_core::Warning>)> {
    let size = fs::metadata(input).at("reading", input)?.len();
    if size > crate::items::source::MAX_ITEM_BYTES {
        return Err(Error::Fetch {
            path: input.display().to_string(),
            message: format!(
                "{size} bytes is over kiln's per-item limit of {} bytes",
                crate::items::source::MAX_ITEM_BYTES
            ),
        });
    }
    let bytes = fs::read(input).at("reading", input)?;
    pipeline
        .run_with_warnings(backend, &bytes)
        .map_err(|source| Error::Item {
            path: format!("{} ({} backend)", input.display(), backend.name()),
            source,
        })
}

/// Runs decoded inputs through `pipeline` on the GPU in batches: inputs of one kind and shape
/// (same plan) go as one batch, in one upload, submission and readback. The results come back
/// in input order. When a batch fails on the device, its items run alone, so the failure
/// stays with the item that caused it rather than spoiling its neighbours.
pub fn run_decoded_on_gpu(
    pipeline: &Pipeline,
    gpu: &kiln_gpu::GpuBackend,
    decoded: Vec<kiln_core::Decoded>,
) -> Vec<Result<Tensor, kiln_core::Error>> {
    let mut results: Vec<Option<Result<Tensor, kiln_core::Error>>> = Vec::new();
    results.resize_with(decoded.len(), || None);
    for ShapeGroup { key, members } in same_shape_groups(decoded) {
        let (positions, inputs): (Vec<usize>, Vec<Tensor>) = members.into_iter().unzip();
        let outputs: Vec<Result<Tensor, kiln_core::Error>> = match pipeline.plan(key) {
            Ok(plan) => match gpu.execute_batch(&plan, inputs.clone()) {
                Ok(outputs) => outputs.into_iter().map(Ok).collect(),
                Err(_) => inputs
                    .into_iter()
                    .map(|t| {
                        gpu.execute_batch(&plan, vec![t])
                            .map(|mut one| one.remove(0))
                            .map_err(Into::into)
                    })
                    .collect(),
            },
            // Plans are deterministic: every member gets the same error.
            Err(first) => std::iter::once(Err(first))
                .chain(positions[1..].iter().map(|_| {
                    Err(pipeline
                        .plan(key)
                        .err()
                        .unwrap_or_else(|| kiln_core::Error::Input {
                            op: "pipeline",
                            reason: "no plan for this input".into(),
                        }))
                }))
                .collect(),
        };
        for (position, output) in positions.into_iter().zip(outputs) {
            results[position] = Some(output);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every input is in one group"))
        .collect()
}

/// Inputs that run as one device batch: one plan, one shape, with their positions.
#[derive(Debug)]
pub struct ShapeGroup {
    pub key: kiln_core::PlanKey,
    pub members: Vec<(usize, Tensor)>,
}

/// Decoded inputs grouped by plan and shape (first appearance first), each with its position.
pub fn same_shape_groups(decoded: Vec<kiln_core::Decoded>) -> Vec<ShapeGroup> {
    let mut groups: Vec<ShapeGroup> = Vec::new();
    for (position, d) in decoded.into_iter().enumerate() {
        let group = groups
            .iter_mut()
            .find(|g| g.key == d.key && g.members[0].1.shape == d.tensor.shape);
        match group {
            Some(group) => group.members.push((position, d.tensor)),
            None => groups.push(ShapeGroup {
                key: d.key,
                members: vec![(position, d.tensor)],
            }),
        }
    }
    groups
}
