//! The scoring output directory: `part-NNNNN.parquet` shards (each a fixed range of the
//! input's rows, written atomically), `progress.jsonl` while a run is under way (its plan, then
//! one record per finished shard), and `manifest.json` once every shard is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::model::OutputSpec;
use crate::cache::sha256_file;
use crate::error::{Error, IoContext, Result};
use crate::fsio::AtomicFile;

pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "progress.jsonl";
pub const FORMAT: &str = "kiln.score/1";
/// Field metadata key holding an output column's per-row shape (JSON list).
pub const SHAPE_KEY: &str = "kiln.shape";
/// Row-metadata columns copied from the input, in order.
pub const ROW_COLUMNS: [&str; 4] = ["row_id", "path", "label", "label_index"];

/// What decides whether an output directory holds "the same scoring".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    /// The input entry's key (content hash of its source, spec and options).
    pub input_key: String,
    pub input_rows: u64,
    /// The model file's SHA-256 and engine, or the endpoint, model name and version.
    pub model: serde_json::Value,
    pub input_name: String,
    pub rows_per_shard: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFailure {
    /// Position in the input's storage order.
    pub position: u64,
    pub row_id: u64,
    pub path: String,
    pub error: String,
}

/// A finished shard. `file` is `None` when none of its rows scored and the outputs' shapes
/// were still unknown (nothing to write; every row is in `failures`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub shard: u64,
    pub file: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub failures: Vec<RowFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputColumn {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreManifest {
    #[serde(flatten)]
    pub plan: Plan,
    pub created: String,
    pub input_entry: String,
    /// The model file or endpoint URL this run used.
    pub model_location: String,
    /// The version the server said it answered with, when it said.
    pub served_version: Option<String>,
    pub input_shape: Option<Vec<usize>>,
    pub outputs: Vec<OutputSpec>,
    /// Rows in the output shards (failed rows included, with null outputs).
    pub rows: u64,
    pub failed: u64,
    pub shards: Vec<ShardRecord>,
    /// Every row whose batch failed after the retries, with its error.
    pub failures: Vec<RowFailure>,
}

pub fn shard_name(shard: u64) -> String {
    format!("part-{shard:05}.parquet")
}

fn output_error(dir: &Path, problem: impl Into<String>) -> Error {
    Error::ScoreOutput {
        dir: dir.to_owned(),
        problem: problem.into(),
    }
}

/// The finished shards an earlier run left, after checking it scored the same way. An
/// earlier output keeps its shard size (`plan.rows_per_shard` is set to it), whatever the
/// batch size now.
pub fn load_progress(dir: &Path, plan: &mut Plan) -> Result<BTreeMap<u64, ShardRecord>> {
    let mut records = BTreeMap::new();
    let ours = |name: &str| {
        name == MANIFEST || name == JOURNAL || (name.starts_with("part-") && name.ends_with(".parquet"))
    };
    if !crate::journal::claim_output_dir(dir, ours, |problem| output_error(dir, problem))? {
        return Ok(records);
    }
    let manifest_path = dir.join(MANIFEST);
    let journal_path = dir.join(JOURNAL);
    let (earlier, found): (Plan, Vec<ShardRecord>) = if journal_path.exists() {
        crate::journal::read_journal(&journal_path)?
            .map_err(|problem| output_error(&journal_path, problem))?
    } else if manifest_path.exists() {
        let manifest = read_manifest(dir)?;
        (manifest.plan, manifest.shards)
    } else {
        return Ok(records);
    };
    if earlier.format != plan.format {
        return Err(output_error(
            dir,
            format!("was written as {}, not {}", earlier.format, plan.format),
        ));
    }
    if earlier.input_key != plan.input_key {
        return Err(output_error(
            dir,
            format!(
                "holds the scoring of another input (entry {}); choose another output directory",
                earlier.input_key
            ),
        ));
    }
    if earlier.model != plan.model || earlier.input_name != plan.input_name {
        return Err(output_error(
            dir,
            format!(
                "holds scoring by another model ({}); choose another output directory",
                earlier.model
            ),
        ));
    }
    if earlier.input_rows != plan.input_rows || earlier.rows_per_shard == 0 {
        return Err(output_error(dir, "its plan does not match its input"));
    }
    plan.rows_per_shard = earlier.rows_per_shard;
    for record in found {
        // A shard is kept only if it is exactly what was recorded; anything else is redone.
        let intact = match &record.file {
            None => true,
            Some(file) if file == &shard_name(record.shard) => {
                let path = dir.join(file);
                path.exists() && sha256_file(&path)? == record.sha256
            }
            Some(_) => false,
        };
        if intact {
            records.insert(record.shard, record);
        }
    }
    Ok(records)
}

pub fn read_manifest(dir: &Path) -> Result<ScoreManifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).at("reading", &path)?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path, source })
}

pub fn schema(input_schema: &Schema, outputs: &[OutputColumn]) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = ROW_COLUMNS
        .iter()
        .map(|name| {
            input_schema
                .field_with_name(name)
                .cloned()
                .map_err(|_| Error::invalid("input", format!("has no `{name}` column")))
        })
        .collect::<Result<_>>()?;
    for output in outputs {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let width = i32::try_from(output.shape.iter().product::<usize>())
            .map_err(|_| Error::invalid("model output", format!("{:?} is too large per row", output.name)))?;
        fields.push(
            Field::new(&output.name, DataType::FixedSizeList(item, width), true).with_metadata(
                std::collections::HashMap::from([(
                    SHAPE_KEY.to_owned(),
                    serde_json::to_string(&output.shape).expect("shapes serialise"),
                )]),
            ),
        );
    }
    fields.push(Field::new("error", DataType::Utf8, true));
    Ok(Arc::new(Schema::new(fields)))
}

/// One output column's rows: values (zeros under nulls) and which rows are valid.
#[derive(Debug, Default)]
pub struct ColumnValues {
    pub values: Vec<f32>,
    pub valid: Vec<bool>,
}

/// Assembles a shard's record batch from the input's row columns, every output's values and
/// each row's error.
pub fn shard_batch(
    schema: &SchemaRef,
    rows: &RecordBatch,
    outputs: Vec<ColumnValues>,
    errors: Vec<Option<String>>,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = ROW_COLUMNS
        .iter()
        .map(|name| {
            rows.column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::invalid("input", format!("has no `{name}` column")))
        })
        .collect::<Result<_>>()?;
    for (values, field) in outputs
        .into_iter()
        .zip(schema.fields().iter().skip(ROW_COLUMNS.len()))
    {
        let DataType::FixedSizeList(item, width) = field.data_type() else {
            unreachable!("output columns are fixed-size lists")
        };
        let nulls = NullBuffer::from(values.valid);
        let list = FixedSizeListArray::try_new(
            item.clone(),
            *width,
            Arc::new(Float32Array::from(values.values)),
            Some(nulls),
        )?;
        columns.push(Arc::new(list));
    }
    columns.push(Arc::new(StringArray::from(errors)));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Writes a shard atomically; returns its size and SHA-256.
pub fn write_shard(path: &Path, batch: &RecordBatch) -> Result<(u64, String)> {
    let mut file = AtomicFile::create(path)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let parquet_error = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(file.file(), batch.schema(), Some(properties)).map_err(parquet_error)?;
    writer.write(batch).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    file.commit()?;
    let bytes = fs::metadata(path).at("reading", path)?.len();
    Ok((bytes, sha256_file(path)?))
}

/// An earlier run's shard, read back to keep the rows that scored.
pub fn read_shard(path: &Path) -> Result<RecordBatch> {
    let parquet_error = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).at("opening", path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::shard(path, "holds no rows"))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Row `i`'s id and path from a batch with the input's row columns.
pub fn row_identity(rows: &RecordBatch, i: usize) -> (u64, String) {
    let id = rows
        .column_by_name("row_id")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map_or(0, |a| a.value(i));
    let path = rows
        .column_by_name("path")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .map_or_else(String::new, |a| a.value(i).to_owned());
    (id, path)
}

/// The values of row `i` of output column `name` in an earlier shard, if it scored.
pub fn earlier_output(batch: &RecordBatch, name: &str, i: usize) -> Option<Vec<f32>> {
    let list = batch
        .column_by_name(name)?
        .as_any()
        .downcast_ref::<FixedSizeListArray>()?;
    if list.is_null(i) {
        return None;
    }
    let values = list.value(i);
    Some(values.as_any().downcast_ref::<Float32Array>()?.values().to_vec())
}
