//! An existing Parquet dataset (for example one written by Spark's `binaryFile` reader:
//! `path`, `modificationTime`, `length`, `content`) read as a source: one item per row.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, BinaryArray, LargeBinaryArray, StringArray};
use arrow::datatypes::DataType;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::source::{Source, SourceItem};

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
        .with_context(|| format!("{file}: not a Parquet file"))?;
    let schema = builder.parquet_schema();
    let mut indices = Vec::new();
    for name in columns {
        let index = schema
            .columns()
            .iter()
            .position(|c| c.path().string() == *name)
            .with_context(|| format!("{file}: no column `{name}`"))?;
        indices.push(index);
    }
    let mask = ProjectionMask::leaves(schema, indices);
    Ok(builder.with_projection(mask).with_batch_size(256).build()?)
}

fn strings(array: &ArrayRef) -> Result<StringArray> {
    let cast = arrow::compute::cast(array, &DataType::Utf8)?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .context("string column")?
        .clone())
}

fn binary_at(array: &ArrayRef, i: usize) -> Result<Bytes> {
    if let Some(b) = array.as_any().downcast_ref::<BinaryArray>() {
        return Ok(Bytes::copy_from_slice(b.value(i)));
    }
    if let Some(b) = array.as_any().downcast_ref::<LargeBinaryArray>() {
        return Ok(Bytes::copy_from_slice(b.value(i)));
    }
    bail!("content column is {}, not binary", array.data_type())
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
            let batch = batch.with_context(|| format!("reading {}", file.path))?;
            let paths = strings(batch.column_by_name(&columns.path).context("path column")?)?;
            let labels = match &columns.label {
                Some(name) => Some(strings(batch.column_by_name(name).context("label column")?)?),
                None => None,
            };
            for i in 0..batch.num_rows() {
                if paths.is_null(i) {
                    bail!("{}: row {} has no path", file.path, rows.len());
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
                    let batch = batch.with_context(|| format!("reading {}", file.path))?;
                    let content = batch
                        .column_by_name(&columns.content)
                        .context("content column")?
                        .clone();
                    for i in 0..batch.num_rows() {
                        if index >= skip {
                            let value = if content.is_null(i) {
                                Err(anyhow::anyhow!("row {index} has no content"))
                            } else {
                                binary_at(&content, i)
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
                let _ = handle.block_on(sender.send((index, Err(e.context("table source unreadable")))));
                return;
            }
        }
    });
    receiver
}
