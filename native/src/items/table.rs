//! An existing Parquet dataset (for example one written by Spark's `binaryFile` reader:
//! `path`, `modificationTime`, `length`, `content`) read as a source: one item per row.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, LargeBinaryArray, StringArray};
use arrow::datatypes::DataType;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::source::{Source, SourceItem};
use crate::error::{Error, Result};

/// A table file that cannot be read as one.
fn table_error(file: &str, message: impl Into<String>) -> Error {
    Error::Source {
        location: file.to_owned(),
        message: message.into(),
    }
}

/// Which columns hold what.
#[derive(Debug, Clone)]
pub struct TableColumns {
    /// Default: `path`.
    pub path: String,
    /// Default: `content`.
    pub content: String,
    /// A column of label names; without one, the label rule runs over `path`.
    pub label: Option<String>,
}

/// A row of the table: its path and, when the table has a label column, its label.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub path: String,
    pub label: Option<String>,
}

fn reader(
    bytes: Bytes,
    columns: &[&str],
    file: &str,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| table_error(file, format!("not a Parquet file: {e}")))?;
    let schema = builder.parquet_schema();
    let mut indices = Vec::new();
    for name in columns {
        let index = schema
            .columns()
            .iter()
            .position(|c| c.path().string() == *name)
            .ok_or_else(|| table_error(file, format!("no column `{name}`")))?;
        indices.push(index);
    }
    let mask = ProjectionMask::leaves(schema, indices);
    builder
        .with_projection(mask)
        .with_batch_size(256)
        .build()
        .map_err(|e| table_error(file, e.to_string()))
}

fn strings(array: &ArrayRef, file: &str, name: &str) -> Result<StringArray> {
    let cast = arrow::compute::cast(array, &DataType::Utf8)
        .map_err(|e| table_error(file, format!("column `{name}`: {e}")))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| table_error(file, format!("column `{name}` is not text")))
}

fn binary_at(array: &ArrayRef, i: usize, file: &str) -> Result<Bytes> {
    if let Some(b) = array.as_any().downcast_ref::<BinaryArray>() {
        return Ok(Bytes::copy_from_slice(b.value(i)));
    }
    if let Some(b) = array.as_any().downcast_ref::<LargeBinaryArray>() {
        return Ok(Bytes::copy_from_slice(b.value(i)));
    }
    Err(table_error(
        file,
        format!("content column is {}, not binary", array.data_type()),
    ))
}

/// Reads the path (and label) columns of every file, in file order.
pub async fn list_rows(
    source: &Source,
    files: &[SourceItem],
    columns: &TableColumns,
) -> Result<Vec<TableRow>> {
    let mut rows = Vec::new();
    for file in files {
        let bytes = source.fetch(file).await?;
        let mut wanted = vec![columns.path.as_str()];
        wanted.extend(columns.label.as_deref());
        for batch in reader(bytes, &wanted, &file.path)? {
            let batch = batch.map_err(|e| table_error(&file.path, e.to_string()))?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| table_error(&file.path, format!("no column `{name}`")))
                    .and_then(|c| strings(c, &file.path, name))
            };
            let paths = column(&columns.path)?;
            let labels = match &columns.label {
                Some(name) => Some(column(name)?),
                None => None,
            };
            for i in 0..batch.num_rows() {
                if paths.is_null(i) {
                    return Err(table_error(&file.path, format!("row {} has no path", rows.len())));
                }
                let label = labels
                    .as_ref()
                    .and_then(|l| l.is_valid(i).then(|| l.value(i).to_owned()));
                rows.push(TableRow {
                    path: paths.value(i).to_owned(),
                    label,
                });
            }
        }
    }
    Ok(rows)
}

/// The `content` of every row from `skip` on, in order, read one file at a time on a blocking
/// thread; the bounded channel keeps at most a few hundred rows in memory.
pub fn contents(
    source: Arc<Source>,
    files: Vec<SourceItem>,
    columns: TableColumns,
    skip: u64,
) -> impl Stream<Item = (u64, Result<Bytes>)> {
    let (mut sender, receiver) = mpsc::channel(64);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut index = 0u64;
        for file in &files {
            let result: Result<()> = (|| {
                let bytes = handle.block_on(source.fetch(file))?;
                for batch in reader(bytes, &[columns.content.as_str()], &file.path)? {
                    let batch = batch.map_err(|e| table_error(&file.path, e.to_string()))?;
                    let content = batch
                        .column_by_name(&columns.content)
                        .ok_or_else(|| table_error(&file.path, format!("no column `{}`", columns.content)))?
                        .clone();
                    for i in 0..batch.num_rows() {
                        if index >= skip {
                            let value = if content.is_null(i) {
                                Err(table_error(&file.path, format!("row {index} has no content")))
                            } else {
                                binary_at(&content, i, &file.path)
                            };
                            if handle.block_on(sender.send((index, value))).is_err() {
                                return Ok(());
                            }
                        }
                        index += 1;
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                // A whole file that cannot be read fails the job: its rows cannot be counted.
                let _ = handle.block_on(sender.send((index, Err(e))));
                return;
            }
        }
    });
    receiver
}
