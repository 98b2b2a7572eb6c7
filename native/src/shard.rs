//! Parquet shards: the Arrow schema of a cache entry and a writer that produces one shard
//! through a temporary file and a rename.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, Int32Array, ListArray, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kiln_core::Tensor;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::cache::{sha256_file, tmp_path, ShardInfo, TensorInfo};

/// What a row carries besides its identity.
#[derive(Debug, Clone)]
pub enum Payload {
    Tensor(Tensor),
    Raw(Bytes),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub row_id: u64,
    pub path: String,
    pub label: Option<String>,
    pub label_index: Option<i32>,
    pub payload: Payload,
}

impl Row {
    pub fn payload_bytes(&self) -> usize {
        match &self.payload {
            Payload::Tensor(t) => t.element_count() * if t.dtype() == kiln_core::DType::U8 { 1 } else { 4 },
            Payload::Raw(b) => b.len(),
        }
    }
}

/// The layout of the payload column(s).
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// `content`: the file's bytes.
    Raw,
    /// `tensor` (+ `shape` when shapes vary).
    Tensor(TensorInfo),
}

fn element_type(info: &TensorInfo) -> DataType {
    if info.dtype == "uint8" {
        DataType::UInt8
    } else {
        DataType::Float32
    }
}

pub fn schema(layout: &Layout) -> SchemaRef {
    let mut fields = vec![
        Field::new("row_id", DataType::UInt64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("label_index", DataType::Int32, true),
    ];
    let mut metadata = std::collections::HashMap::new();
    match layout {
        Layout::Raw => fields.push(Field::new("content", DataType::Binary, false)),
        Layout::Tensor(info) => {
            let item = Arc::new(Field::new("item", element_type(info), false));
            match &info.shape {
                Some(shape) => {
                    let n = shape.iter().product::<usize>() as i32;
                    fields.push(Field::new("tensor", DataType::FixedSizeList(item, n), false));
                }
                None => {
                    fields.push(Field::new("tensor", DataType::List(item), false));
                    let dim = Arc::new(Field::new("item", DataType::UInt32, false));
                    fields.push(Field::new("shape", DataType::List(dim), false));
                }
            }
            metadata.insert("kiln.tensor_dtype".to_owned(), info.dtype.clone());
            metadata.insert(
                "kiln.tensor_shape".to_owned(),
                serde_json::to_string(&info.shape).expect("shape"),
            );
        }
    }
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Builds one record batch from rows (all matching `layout`).
pub fn to_batch(schema: &SchemaRef, layout: &Layout, rows: &[Row]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.row_id))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.path.as_str()),
        )),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.label.as_deref()))),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.label_index))),
    ];
    match layout {
        Layout::Raw => {
            let values = rows.iter().map(|r| match &r.payload {
                Payload::Raw(b) => Ok(b.as_ref()),
                Payload::Tensor(_) => anyhow::bail!("tensor row in a raw entry"),
            });
            columns.push(Arc::new(BinaryArray::from_iter_values(
                values.collect::<Result<Vec<_>>>()?,
            )));
        }
        Layout::Tensor(info) => {
            let tensors: Vec<&Tensor> = rows
                .iter()
                .map(|r| match &r.payload {
                    Payload::Tensor(t) => Ok(t),
                    Payload::Raw(_) => anyhow::bail!("raw row in a tensor entry"),
                })
                .collect::<Result<_>>()?;
            let item = Arc::new(Field::new("item", element_type(info), false));
            let values: ArrayRef = if info.dtype == "uint8" {
                let mut v = Vec::new();
                tensors
                    .iter()
                    .for_each(|t| v.extend_from_slice(t.as_u8().expect("uint8 tensor")));
                Arc::new(UInt8Array::from(v))
            } else {
                let mut v = Vec::new();
                tensors
                    .iter()
                    .for_each(|t| v.extend_from_slice(t.as_f32().expect("float32 tensor")));
                Arc::new(Float32Array::from(v))
            };
            match &info.shape {
                Some(shape) => {
                    let n = shape.iter().product::<usize>() as i32;
                    columns.push(Arc::new(FixedSizeListArray::try_new(item, n, values, None)?));
                }
                None => {
                    let offsets = OffsetBuffer::from_lengths(tensors.iter().map(|t| t.element_count()));
                    columns.push(Arc::new(ListArray::try_new(item, offsets, values, None)?));
                    let dims: Vec<u32> = tensors
                        .iter()
                        .flat_map(|t| t.shape.iter().map(|&d| d as u32))
                        .collect();
                    let dim_offsets = OffsetBuffer::from_lengths(tensors.iter().map(|t| t.shape.len()));
                    let dim = Arc::new(Field::new("item", DataType::UInt32, false));
                    columns.push(Arc::new(ListArray::try_new(
                        dim,
                        dim_offsets,
                        Arc::new(UInt32Array::from(dims)),
                        None,
                    )?));
                }
            }
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Flushes buffered rows into the Parquet writer every this many payload bytes.
const BATCH_BYTES: usize = 4 << 20;

/// Writes one shard to `<name>.tmp.<pid>`, renamed to `<name>` by [`ShardWriter::finish`].
pub struct ShardWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    schema: SchemaRef,
    layout: Layout,
    writer: ArrowWriter<fs::File>,
    pending: Vec<Row>,
    pending_bytes: usize,
    pub rows: u64,
    pub payload_bytes: u64,
    pub first_item: u64,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("path", &self.final_path)
            .field("rows", &self.rows)
            .finish()
    }
}

/// Parquet settings for shards.
#[derive(Debug, Clone, Copy)]
pub struct ShardOptions {
    pub row_group_rows: usize,
    pub zstd: bool,
}

impl ShardWriter {
    pub fn create(path: &Path, layout: &Layout, options: ShardOptions, first_item: u64) -> Result<Self> {
        let schema = schema(layout);
        let tmp = tmp_path(path);
        let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let compression = if options.zstd {
            Compression::ZSTD(ZstdLevel::try_new(1)?)
        } else {
            Compression::UNCOMPRESSED
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(ShardWriter {
            final_path: path.to_owned(),
            tmp_path: tmp,
            schema,
            layout: layout.clone(),
            writer,
            pending: Vec::new(),
            pending_bytes: 0,
            rows: 0,
            payload_bytes: 0,
            first_item,
        })
    }

    pub fn push(&mut self, row: Row) -> Result<()> {
        let size = row.payload_bytes();
        self.pending_bytes += size;
        self.payload_bytes += size as u64;
        self.rows += 1;
        self.pending.push(row);
        if self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let batch = to_batch(&self.schema, &self.layout, &self.pending)?;
            self.writer
                .write(&batch)
                .with_context(|| format!("writing {}", self.tmp_path.display()))?;
            self.pending.clear();
            self.pending_bytes = 0;
        }
        Ok(())
    }

    /// Closes, syncs and renames the shard into place.
    pub fn finish(mut self, end_item: u64) -> Result<ShardInfo> {
        self.flush()?;
        let file = self
            .writer
            .into_inner()
            .with_context(|| format!("finishing {}", self.tmp_path.display()))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp_path, &self.final_path)
            .with_context(|| format!("renaming into {}", self.final_path.display()))?;
        let bytes = fs::metadata(&self.final_path)?.len();
        Ok(ShardInfo {
            file: self
                .final_path
                .file_name()
                .expect("file")
                .to_string_lossy()
                .into_owned(),
            rows: self.rows,
            bytes,
            sha256: sha256_file(&self.final_path)?,
            first_item: self.first_item,
            end_item,
        })
    }
}
