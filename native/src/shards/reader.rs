//! The shard reader: a shard is checked against its manifest record (size and SHA-256, then
//! its schema and row groups) before any of its rows are handed out, so a flipped byte, a
//! swapped or truncated file is an error naming the shard, never silently wrong data.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::{ChunkReader, Length};

use super::{schema, Layout};
use crate::cache::{hex, ShardInfo};
use crate::error::{Error, Result};

/// The verified shard file, read at explicit offsets: threads reading different row groups at
/// once never share a file position (cloned handles share one, and reads interleave).
#[derive(Debug, Clone)]
struct PositionalFile {
    file: Arc<fs::File>,
    len: u64,
}

/// A reader over [`PositionalFile`] from `pos` on.
struct PositionalRead {
    file: Arc<fs::File>,
    pos: u64,
}

#[cfg(unix)]
fn read_at(file: &fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

impl std::io::Read for PositionalRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Length for PositionalFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for PositionalFile {
    type T = PositionalRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PositionalRead> {
        Ok(PositionalRead {
            file: self.file.clone(),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        // Ranges come from footer metadata checked against the file's size when it was opened.
        let mut buf = vec![0u8; length];
        let mut read = PositionalRead {
            file: self.file.clone(),
            pos: start,
        };
        std::io::Read::read_exact(&mut read, &mut buf)?;
        Ok(buf.into())
    }
}

/// A verified shard, open for reading row groups (from any number of threads at once).
#[derive(Debug)]
pub struct ShardReader {
    path: PathBuf,
    file: PositionalFile,
    metadata: ArrowReaderMetadata,
    schema: SchemaRef,
    row_groups: Vec<u64>,
}

fn hash_open_file(file: &mut fs::File, path: &Path) -> Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut chunk)
            .map_err(|e| Error::shard(path, format!("unreadable: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&chunk[..n]);
    }
    Ok((total, hex(&h.finalize())))
}

/// Every column chunk must lie inside the file: parquet-rs panics on negative ranges.
fn check_column_ranges(metadata: &ArrowReaderMetadata, size: u64) -> Result<(), String> {
    for (r, row_group) in metadata.metadata().row_groups().iter().enumerate() {
        for (c, column) in row_group.columns().iter().enumerate() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let length = column.compressed_size();
            let end = start.checked_add(length);
            if start < 0 || length < 0 || end.is_none_or(|end| end as u64 > size) {
                return Err(format!(
                    "row group {r} column {c}: byte range {start}+{length} is outside the file's {size} bytes"
                ));
            }
        }
    }
    Ok(())
}

impl ShardReader {
    /// Opens `info.file` in `entry` and verifies it against `info`; `layout` is the entry's.
    pub fn open(entry: &Path, info: &ShardInfo, layout: &Layout) -> Result<ShardReader> {
        let path = entry.join(&info.file);
        let mut file = fs::File::open(&path).map_err(|e| Error::shard(&path, format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| Error::shard(&path, format!("cannot stat: {e}")))?
            .len();
        if size != info.bytes {
            return Err(Error::shard(
                &path,
                format!(
                    "is {size} bytes, the manifest says {} (truncated or replaced)",
                    info.bytes
                ),
            ));
        }
        let (read, sha256) = hash_open_file(&mut file, &path)?;
        if read != info.bytes || sha256 != info.sha256 {
            return Err(Error::shard(
                &path,
                format!(
                    "SHA-256 {sha256} does not match the manifest's {} (corrupted, swapped or modified)",
                    info.sha256
                ),
            ));
        }
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| Error::shard(&path, format!("not a readable Parquet file: {e}")))?;
        // A table entry's columns are whatever was written (the SHA-256 above already ties
        // the file to the manifest); kiln's own layouts are checked column by column.
        let expected = match layout {
            Layout::Table => metadata.schema().clone(),
            _ => schema(layout),
        };
        let fields = |s: &SchemaRef| -> Vec<(String, String)> {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect()
        };
        let schema = metadata.schema().clone();
        if fields(&schema) != fields(&expected) {
            return Err(Error::shard(
                &path,
                format!(
                    "columns {:?} are not the entry's {:?}",
                    fields(&schema),
                    fields(&expected)
                ),
            ));
        }
        check_column_ranges(&metadata, size).map_err(|problem| Error::shard(&path, problem))?;
        let row_groups: Vec<u64> = metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows().max(0) as u64)
            .collect();
        if row_groups != info.row_groups {
            return Err(Error::shard(
                &path,
                format!(
                    "row groups {row_groups:?} differ from the manifest's {:?}",
                    info.row_groups
                ),
            ));
        }
        Ok(ShardReader {
            path,
            file: PositionalFile {
                file: Arc::new(file),
                len: size,
            },
            metadata,
            schema: expected,
            row_groups,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn row_groups(&self) -> &[u64] {
        &self.row_groups
    }

    /// One row group as one record batch, with the entry's schema (and its metadata).
    pub fn read_row_group(&self, index: usize) -> Result<RecordBatch> {
        let rows = *self
            .row_groups
            .get(index)
            .ok_or_else(|| Error::shard(&self.path, format!("has no row group {index}")))?;
        let bad = |e: &dyn std::fmt::Display| Error::shard(&self.path, format!("row group {index}: {e}"));
        let file = self.file.clone();
        // parquet-rs still panics on some malformed pages (the fuzzer found "Decoder for dict
        // should have been set"); a shard is only decoded after its SHA-256 matched, so this
        // takes a manifest forged to match, but even then it is an error, not a crash.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_groups(vec![index])
                .with_batch_size(rows.max(1) as usize)
                .build()
                .and_then(|reader| {
                    reader
                        .collect::<Result<Vec<RecordBatch>, _>>()
                        .map_err(Into::into)
                })
        }))
        .map_err(|panic| bad(&Error::panicked("the Parquet decoder", panic)))?;
        let batches: Vec<RecordBatch> = decoded.map_err(|e| bad(&e))?;
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.schema, &batches).map_err(|e| bad(&e))?,
        };
        if batch.num_rows() as u64 != rows {
            return Err(bad(&format!("holds {} rows, expected {rows}", batch.num_rows())));
        }
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| bad(&e))
    }

    /// Every row group in order.
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        (0..self.row_groups.len()).map(|i| self.read_row_group(i))
    }
}
