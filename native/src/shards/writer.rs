//! The shard writer: rows buffered into Arrow batches and written as one Parquet file under a
//! temporary name, renamed into place when finished.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, Int32Array, ListArray, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use kiln_core::Tensor;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{element_type, schema, Layout, Payload, Row};
use crate::cache::{sha256_file, DType, ShardInfo};
use crate::error::{Error, IoContext, Result};
use crate::fsio::AtomicFile;

/// Builds one record batch from rows (all matching `layout`).
pub fn to_batch(schema: &SchemaRef, layout: &Layout, rows: &[Row]) -> Result<RecordBatch> {
    let mismatch = |what: &str| Error::invalid("rows", format!("{what} in a {layout:?} shard"));
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
            let values = rows
                .iter()
                .map(|r| match &r.payload {
                    Payload::Raw(b) => Ok(b.as_ref()),
                    Payload::Tensor(_) => Err(mismatch("a tensor row")),
                })
                .collect::<Result<Vec<_>>>()?;
            columns.push(Arc::new(BinaryArray::from_iter_values(values)));
        }
        Layout::Tensor(info) => {
            let tensors: Vec<&Tensor> = rows
                .iter()
                .map(|r| match &r.payload {
                    Payload::Tensor(t) => Ok(t),
                    Payload::Raw(_) => Err(mismatch("a raw row")),
                })
                .collect::<Result<_>>()?;
            let item = Arc::new(Field::new("item", element_type(info.dtype), false));
            let values: ArrayRef = match info.dtype {
                DType::Uint8 => {
                    let mut v = Vec::new();
                    for t in &tensors {
                        v.extend_from_slice(t.as_u8().ok_or_else(|| mismatch("a non-uint8 tensor"))?);
                    }
                    Arc::new(UInt8Array::from(v))
                }
                DType::Float32 => {
                    let mut v = Vec::new();
                    for t in &tensors {
                        v.extend_from_slice(t.as_f32().ok_or_else(|| mismatch("a non-float32 tensor"))?);
                    }
                    Arc::new(Float32Array::from(v))
                }
            };
            match &info.shape {
                Some(shape) => {
                    let n = i32::try_from(shape.iter().product::<usize>()).map_err(|_| {
                        Error::invalid("tensor shape", format!("{shape:?} is too large for a row"))
                    })?;
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

/// Parquet settings for shards.
#[derive(Debug, Clone, Copy)]
pub struct ShardOptions {
    pub row_group_rows: usize,
    pub zstd: bool,
}

/// Writes one shard under a temporary name, renamed into place by [`ShardWriter::finish`].
pub struct ShardWriter {
    file: AtomicFile,
    schema: SchemaRef,
    layout: Layout,
    writer: ArrowWriter<std::fs::File>,
    pending: Vec<Row>,
    pending_bytes: usize,
    pub rows: u64,
    pub payload_bytes: u64,
    pub first_item: u64,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("path", &self.file.path())
            .field("rows", &self.rows)
            .finish()
    }
}

impl ShardWriter {
    pub fn create(path: &Path, layout: &Layout, options: ShardOptions, first_item: u64) -> Result<Self> {
        let schema = schema(layout);
        let mut file = AtomicFile::create(path)?;
        let compression = if options.zstd {
            Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid"))
        } else {
            Compression::UNCOMPRESSED
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            .build();
        let writer = ArrowWriter::try_new(file.take_file(), schema.clone(), Some(props)).map_err(|e| {
            Error::Parquet {
                path: path.to_owned(),
                source: e,
            }
        })?;
        Ok(ShardWriter {
            file,
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

    fn parquet_error(&self, e: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            path: self.file.path().to_owned(),
            source: e,
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let batch = to_batch(&self.schema, &self.layout, &self.pending)?;
            self.writer.write(&batch).map_err(|e| self.parquet_error(e))?;
            self.pending.clear();
            self.pending_bytes = 0;
        }
        Ok(())
    }

    /// Closes, syncs and renames the shard into place.
    pub fn finish(mut self, end_item: u64) -> Result<ShardInfo> {
        self.flush()?;
        self.writer.flush().map_err(|e| self.parquet_error(e))?;
        let row_groups: Vec<u64> = self
            .writer
            .flushed_row_groups()
            .iter()
            .map(|rg| rg.num_rows() as u64)
            .collect();
        let path = self.file.path().to_owned();
        let file = self.writer.into_inner().map_err(|e| Error::Parquet {
            path: path.clone(),
            source: e,
        })?;
        self.file.commit_file(file)?;
        let bytes = std::fs::metadata(&path).at("reading", &path)?.len();
        Ok(ShardInfo {
            file: path
                .file_name()
                .expect("shards are files")
                .to_string_lossy()
                .into_owned(),
            rows: self.rows,
            bytes,
            sha256: sha256_file(&path)?,
            first_item: self.first_item,
            end_item,
            row_groups,
        })
    }
}
