//! The windows output directory: one `part-NNNNN.parquet` (or `.tfrecord`) per partition,
//! each written atomically, `progress.jsonl` while a run is under way and `manifest.json`
//! when it is done. A rerun of the same plan resumes (finished partitions are kept when
//! their SHA-256 still matches) or, when complete, does nothing.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::cache::sha256_file;
use crate::error::{Error, IoContext, Result};
use crate::export::tfrecord_records;
use crate::fsio::AtomicFile;

pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "progress.jsonl";
/// Spill files of a run under way (hidden from Spark-style listings by the underscore).
pub const SPILL_DIR: &str = "_spill";
pub const FORMAT: &str = "kiln.windows/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Parquet,
    Tfrecord,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Tfrecord => "tfrecord",
        }
    }
}

/// What decides whether an output directory holds "the same windows".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    /// SHA-256 over the event listings (or in-memory tables), columns, spec and options.
    pub key: String,
    pub partitions: u64,
    pub output_format: OutputFormat,
}

/// A finished partition; `file` is `None` when it had no windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub partition: u64,
    pub file: Option<String>,
    pub rows: u64,
    pub entities: u64,
    pub bytes: u64,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowsManifest {
    #[serde(flatten)]
    pub plan: Plan,
    pub created: String,
    pub events: String,
    pub labels: Option<String>,
    pub entity: String,
    pub time: String,
    pub spec: serde_json::Value,
    pub columns: Vec<Column>,
    pub rows: u64,
    pub entities: u64,
    pub shards: Vec<ShardRecord>,
}

pub fn shard_name(partition: u64, format: OutputFormat) -> String {
    format!("part-{partition:05}.{}", format.extension())
}

fn output_error(dir: &Path, problem: impl Into<String>) -> Error {
    Error::WindowsOutput {
        dir: dir.to_owned(),
        problem: problem.into(),
    }
}

pub fn read_manifest(dir: &Path) -> Result<WindowsManifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).at("reading", &path)?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path, source })
}

/// What an output directory already holds for `plan`.
#[derive(Debug)]
pub enum Earlier {
    /// Nothing (a new or empty directory).
    Nothing,
    /// A finished run of the same plan.
    Complete(Box<WindowsManifest>),
    /// An interrupted run of the same plan: its finished partitions, checked.
    Partial(Vec<ShardRecord>),
}

/// Checks `dir` against `plan`: refuses another run's output or files kiln did not write,
/// clears an interrupted run's temporaries and spill files.
pub fn check_dir(dir: &Path, plan: &Plan) -> Result<Earlier> {
    let ours = |name: &str| {
        name == MANIFEST
            || name == JOURNAL
            || name == SPILL_DIR
            || (name.starts_with("part-") && (name.ends_with(".parquet") || name.ends_with(".tfrecord")))
    };
    if !crate::journal::claim_output_dir(dir, ours, |problem| output_error(dir, problem))? {
        return Ok(Earlier::Nothing);
    }
    let spill = dir.join(SPILL_DIR);
    if spill.exists() {
        fs::remove_dir_all(&spill).at("removing", &spill)?;
    }
    let other_run = || {
        output_error(
            dir,
            "holds the output of another run (other events, columns, spec or format); choose an empty or new directory",
        )
    };
    let journal_path = dir.join(JOURNAL);
    if journal_path.exists() {
        let (earlier, records): (Plan, Vec<ShardRecord>) = crate::journal::read_journal(&journal_path)?
            .map_err(|problem| output_error(&journal_path, problem))?;
        if &earlier != plan {
            return Err(other_run());
        }
        let mut kept = Vec::new();
        for record in records {
            let intact = match (&record.file, &record.sha256) {
                (Some(file), Some(sha)) => {
                    let path = dir.join(file);
                    path.exists() && &sha256_file(&path)? == sha
                }
                _ => true,
            };
            if intact && !kept.iter().any(|r: &ShardRecord| r.partition == record.partition) {
                kept.push(record);
            }
        }
        return Ok(Earlier::Partial(kept));
    }
    if dir.join(MANIFEST).exists() {
        let manifest = read_manifest(dir)?;
        if &manifest.plan != plan {
            return Err(other_run());
        }
        return Ok(Earlier::Complete(Box::new(manifest)));
    }
    Ok(Earlier::Nothing)
}

/// A partition's output file, written as batches arrive and renamed into place at the end.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    file: AtomicFile,
    parquet: Option<ArrowWriter<fs::File>>,
}

impl ShardWriter {
    pub fn create(path: &Path, schema: &SchemaRef, format: OutputFormat) -> Result<ShardWriter> {
        let mut file = AtomicFile::create(path)?;
        let parquet = match format {
            OutputFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let handle = file.take_file();
                Some(
                    ArrowWriter::try_new(handle, schema.clone(), Some(properties)).map_err(|source| {
                        Error::Parquet {
                            path: path.to_owned(),
                            source,
                        }
                    })?,
                )
            }
            OutputFormat::Tfrecord => None,
        };
        Ok(ShardWriter {
            path: path.to_owned(),
            file,
            parquet,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.parquet {
            Some(writer) => {
                // One row group per batch keeps the writer's memory to one batch.
                writer.write(batch).map_err(|source| Error::Parquet {
                    path: self.path.clone(),
                    source,
                })?;
                writer.flush().map_err(|source| Error::Parquet {
                    path: self.path.clone(),
                    source,
                })
            }
            None => {
                use std::io::Write;
                let records = tfrecord_records(batch)?;
                self.file.file().write_all(&records).at("writing", &self.path)
            }
        }
    }

    /// Renames the file into place; returns its size and SHA-256.
    pub fn commit(self) -> Result<(u64, String)> {
        match self.parquet {
            Some(writer) => {
                let parquet_error = |source| Error::Parquet {
                    path: self.path.clone(),
                    source,
                };
                // Writes the footer and hands the file back, to be synced and renamed.
                let file = writer.into_inner().map_err(parquet_error)?;
                self.file.commit_file(file)?;
            }
            None => self.file.commit()?,
        }
        let bytes = fs::metadata(&self.path).at("reading", &self.path)?.len();
        Ok((bytes, sha256_file(&self.path)?))
    }
}
