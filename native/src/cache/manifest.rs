//! `manifest.json`: everything a reader needs to know about a complete entry, checked when read
//! so that a hand-edited or hostile manifest is refused before any shard is touched.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "progress.jsonl";
/// Bumped when the shard layout or manifest format changes. 2: shards record their row groups.
pub const FORMAT_VERSION: u32 = 2;
/// Manifests larger than this are not kiln's (a million shards' worth).
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// What an entry stores per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialize {
    /// The transformed tensor.
    Tensor,
    /// The file's bytes; the spec runs when the data is read (Petastorm's advice).
    Raw,
    /// Any table's columns as written (a Spark DataFrame materialized by
    /// `kiln.spark.make_spark_converter`); no tensor layout is imposed.
    Table,
}

impl Materialize {
    pub fn name(self) -> &'static str {
        match self {
            Materialize::Tensor => "tensor",
            Materialize::Raw => "raw",
            Materialize::Table => "table",
        }
    }
}

/// Element type of a stored tensor column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Uint8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Uint8 => "uint8",
        }
    }

    /// The stored type of a spec's output; complex STFTs cannot be stored.
    pub fn from_core(dtype: kiln_core::DType) -> Option<DType> {
        match dtype {
            kiln_core::DType::F32 => Some(DType::Float32),
            kiln_core::DType::U8 => Some(DType::Uint8),
            kiln_core::DType::C64 => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            DType::Float32 => 4,
            DType::Uint8 => 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    /// File name inside the entry directory (never a path).
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Listing positions `[first_item, end_item)` this shard covers (failed items included).
    pub first_item: u64,
    pub end_item: u64,
    /// Rows per Parquet row group, in order: readers plan from these without parsing a shard
    /// they have not verified yet.
    pub row_groups: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorInfo {
    pub dtype: DType,
    /// The shape of every row when it is fixed (column `tensor` is a FixedSizeList); `None` when
    /// shapes vary (column `tensor` is a List and column `shape` holds each row's shape).
    pub shape: Option<Vec<usize>>,
}

impl TensorInfo {
    /// The stored tensor of a spec's output, or why it cannot be stored.
    pub fn of_spec(spec: &kiln_core::Spec) -> Result<TensorInfo> {
        let output = spec.output();
        let dtype = DType::from_core(output.dtype).ok_or_else(|| {
            Error::invalid("spec", "it ends with a complex STFT; add `magnitude` to store it")
        })?;
        Ok(TensorInfo {
            dtype,
            shape: output.shape,
        })
    }
}

/// Everything a reader needs to know about a complete entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub key: String,
    pub created: String,
    pub source: String,
    pub spec: serde_json::Value,
    pub kernel_version: u32,
    pub materialize: Materialize,
    pub label_rule: String,
    pub compression: String,
    pub columns: Vec<(String, String)>,
    pub tensor: Option<TensorInfo>,
    pub rows: u64,
    /// Label names; a label's index is its position.
    pub labels: Vec<String>,
    pub shards: Vec<ShardInfo>,
    pub failed: Vec<Failure>,
    pub listed: u64,
}

impl Manifest {
    /// Refuses manifests kiln did not write or cannot read: another format version, shard
    /// names that are paths or repeat, row counts that do not add up.
    fn check(&self, entry: &Path) -> Result<()> {
        let bad = |problem: String| Err(Error::entry(entry, problem));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not {FORMAT_VERSION}, the version this kiln reads (convert it again)",
                self.format_version
            ));
        }
        match (&self.materialize, &self.tensor) {
            (Materialize::Tensor, None) => return bad("a tensor entry without `tensor` info".into()),
            (Materialize::Raw, Some(_)) => return bad("a raw entry with `tensor` info".into()),
            (Materialize::Table, Some(_)) => return bad("a table entry with `tensor` info".into()),
            _ => {}
        }
        let mut names = HashSet::new();
        let mut rows = 0u64;
        for shard in &self.shards {
            let plain = !shard.file.is_empty()
                && !shard.file.starts_with('.')
                && !shard.file.contains(['/', '\\', '\0'])
                && Path::new(&shard.file).file_name() == Some(shard.file.as_ref());
            if !plain {
                return bad(format!(
                    "shard file {:?} is not a file name inside the entry",
                    shard.file
                ));
            }
            if !names.insert(shard.file.as_str()) {
                return bad(format!("shard {} is listed twice", shard.file));
            }
            if shard.row_groups.iter().try_fold(0u64, |a, &n| a.checked_add(n)) != Some(shard.rows) {
                return bad(format!(
                    "shard {}: its row groups {:?} do not add up to its {} rows",
                    shard.file, shard.row_groups, shard.rows
                ));
            }
            if shard.sha256.len() != 64 || !shard.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!(
                    "shard {}: sha256 {:?} is not a SHA-256",
                    shard.file, shard.sha256
                ));
            }
            rows = rows
                .checked_add(shard.rows)
                .ok_or_else(|| Error::entry(entry, "row counts overflow"))?;
        }
        if rows != self.rows {
            return bad(format!(
                "its shards hold {rows} rows, the manifest says {}",
                self.rows
            ));
        }
        Ok(())
    }
}

/// Reads and checks an entry's manifest.
pub fn read_manifest(entry: &Path) -> Result<Manifest> {
    let path = entry.join(MANIFEST);
    let text = match fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES => {
            return Err(Error::entry(
                entry,
                format!("{MANIFEST} is {} bytes, too large", meta.len()),
            ))
        }
        Ok(_) => fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::entry(
                entry,
                format!("not a complete cache entry (no {MANIFEST})"),
            ))
        }
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::entry(entry, format!("corrupt {MANIFEST}: {e}")))?;
    manifest.check(entry)?;
    Ok(manifest)
}
