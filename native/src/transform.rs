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
