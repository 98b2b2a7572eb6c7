//! Event files: Parquet and CSV under a directory or object-store URL (or one local file),
//! listed in path order (the "file order" of events at equal times) and read as raw Arrow
//! batches with only the columns the spec reads.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{Error, Result};
use crate::items::{Source, SourceItem};

/// Rows per raw batch: large enough to amortise per-batch work, small enough to bound memory.
pub const BATCH_ROWS: usize = 65_536;
/// CSV rows read to infer column types (as pandas and Polars sample).
const CSV_INFER_ROWS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
}

fn format_of(path: &str) -> Option<FileFormat> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        Some(FileFormat::Parquet)
    } else if lower.ends_with(".csv") {
        Some(FileFormat::Csv)
    } else {
        None
    }
}

pub fn events_error(file: &str, problem: impl Into<String>) -> Error {
    Error::Events {
        file: file.to_owned(),
        problem: problem.into(),
    }
}

/// A listed set of event files.
#[derive(Debug)]
pub struct EventFiles {
    pub location: String,
    source: Source,
    pub files: Vec<(SourceItem, FileFormat)>,
    /// Files that are neither Parquet nor CSV (left out, counted in the report).
    pub ignored: usize,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl EventFiles {
    /// Lists a directory, URL or single local file.
    pub fn list(location: &str, runtime: Arc<tokio::runtime::Runtime>) -> Result<EventFiles> {
        let local = Path::new(location);
        let (source, items) = if !location.contains("://") && local.is_file() {
            let parent = local
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let meta = std::fs::metadata(local).map_err(|e| events_error(location, e.to_string()))?;
            let item = SourceItem {
                path: local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: meta.len(),
                version: meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos().to_string())
                    .unwrap_or_default(),
                local: Some(local.to_owned()),
            };
            (Source::open(&parent.to_string_lossy())?, vec![item])
        } else {
            let source = Source::open(location)?;
            let listing = runtime.block_on(source.list(&[]))?;
            if let Some(failure) = listing.failures.first() {
                return Err(Error::Listing {
                    location: location.to_owned(),
                    message: format!("{}: {}", failure.path, failure.error),
                });
            }
            (source, listing.items)
        };
        let total = items.len();
        let files: Vec<_> = items
            .into_iter()
            .filter_map(|item| format_of(&item.path).map(|f| (item, f)))
            .collect();
        if files.is_empty() {
            return Err(Error::Source {
                location: location.to_owned(),
                message: format!("no .parquet or .csv files among its {total} files"),
            });
        }
        Ok(EventFiles {
            location: location.to_owned(),
            ignored: total - files.len(),
            source,
            files,
            runtime,
        })
    }

    /// A display name for file `index`.
    pub fn name(&self, index: usize) -> String {
        let item = &self.files[index].0;
        match &item.local {
            Some(path) => path.display().to_string(),
            None => format!("{}/{}", self.location.trim_end_matches('/'), item.path),
        }
    }

    fn open(&self, index: usize) -> Result<Opened> {
        let item = &self.files[index].0;
        if let Some(path) = &item.local {
            return File::open(path)
                .map(Opened::File)
                .map_err(|e| events_error(&self.name(index), e.to_string()));
        }
        // Object-store files are read whole: Parquet needs random access to its footer.
        self.runtime.block_on(self.source.fetch(item)).map(Opened::Bytes)
    }

    /// Reads file `index`, calling `each` with every raw batch (only `columns`).
    pub fn read(
        &self,
        index: usize,
        columns: &[String],
        number_columns: &[String],
        each: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let name = self.name(index);
        let fail = |e: String| events_error(&name, e);
        let opened = self.open(index)?;
        match self.files[index].1 {
            FileFormat::Parquet => match opened {
                Opened::File(file) => read_parquet(
                    ParquetRecordBatchReaderBuilder::try_new(file),
                    columns,
                    &fail,
                    each,
                ),
                Opened::Bytes(bytes) => read_parquet(
                    ParquetRecordBatchReaderBuilder::try_new(bytes),
                    columns,
                    &fail,
                    each,
                ),
            },
            FileFormat::Csv => match opened {
                Opened::File(file) => read_csv(file, columns, number_columns, &fail, each),
                Opened::Bytes(bytes) => {
                    read_csv(std::io::Cursor::new(bytes), columns, number_columns, &fail, each)
                }
            },
        }
    }

    /// Rows in file `index` when its format says (Parquet footers of local files), for sizing.
    pub fn rows_hint(&self, index: usize) -> Option<u64> {
        let (item, format) = &self.files[index];
        let path = item.local.as_ref()?;
        if *format != FileFormat::Parquet {
            return None;
        }
        let file = File::open(path).ok()?;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).ok()?;
        use parquet::file::reader::FileReader;
        Some(reader.metadata().file_metadata().num_rows().max(0) as u64)
    }
}

enum Opened {
    File(File),
    Bytes(Bytes),
}

fn missing(columns: &[String], schema: &Schema) -> Option<String> {
    columns
        .iter()
        .find(|c| schema.column_with_name(c).is_none())
        .map(|c| {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("has no column {c:?} (it has {})", have.join(", "))
        })
}

fn read_parquet<T: parquet::file::reader::ChunkReader + 'static>(
    builder: parquet::errors::Result<ParquetRecordBatchReaderBuilder<T>>,
    columns: &[String],
    fail: &dyn Fn(String) -> Error,
    each: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let builder = builder.map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
    if let Some(problem) = missing(columns, builder.schema()) {
        return Err(fail(problem));
    }
    let roots: Vec<usize> = columns
        .iter()
        .map(|c| builder.schema().index_of(c).expect("checked above"))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    for batch in reader {
        each(batch.map_err(|e| fail(e.to_string()))?)?;
    }
    Ok(())
}

fn read_csv<R: Read + Seek>(
    mut input: R,
    columns: &[String],
    number_columns: &[String],
    fail: &dyn Fn(String) -> Error,
    each: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    use arrow::csv::reader::Format;
    let format = Format::default().with_header(true);
    let (inferred, _) = format
        .infer_schema(&mut input, Some(CSV_INFER_ROWS))
        .map_err(|e| fail(format!("not a readable CSV file: {e}")))?;
    if let Some(problem) = missing(columns, &inferred) {
        return Err(fail(problem));
    }
    // Inference only saw the first rows: columns aggregated as numbers are read as float64
    // whatever those rows held, timestamps stay text for kiln's strict RFC 3339 parser, and
    // columns empty in all those rows are read as text (not as all-null); dates stay dates.
    let fields: Vec<arrow::datatypes::Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let data_type = if number_columns.contains(f.name()) {
                DataType::Float64
            } else if matches!(f.data_type(), DataType::Timestamp(_, _) | DataType::Null) {
                DataType::Utf8
            } else {
                f.data_type().clone()
            };
            arrow::datatypes::Field::new(f.name(), data_type, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let projection: Vec<usize> = columns
        .iter()
        .map(|c| schema.index_of(c).expect("checked above"))
        .collect();
    input.rewind().map_err(|e| fail(e.to_string()))?;
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_batch_size(BATCH_ROWS)
        .with_projection(projection)
        .with_null_regex(regex::Regex::new("^$").expect("a valid regex"))
        .build(input)
        .map_err(|e| fail(e.to_string()))?;
    for batch in reader {
        each(batch.map_err(|e| fail(e.to_string()))?)?;
    }
    Ok(())
}
