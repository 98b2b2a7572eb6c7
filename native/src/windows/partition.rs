//! Hash partitions of canonical events by entity, so each partition holds whole entity
//! histories and can be windowed alone. Partitions live in memory until the buffered bytes
//! pass the budget; then every partition is appended to its spill file (one Arrow IPC stream
//! per spill) and memory starts over. The count of partitions depends on the input's size
//! only, never on the memory budget, so the output is the same whatever the budget.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::prepare::{entity_hashes, ENTITY};
use crate::error::{Error, IoContext, Result};

/// Canonical bytes a partition is sized for; windowing one takes a few times this.
pub const PARTITION_TARGET_BYTES: u64 = 16 << 20;
const MAX_PARTITIONS: u64 = 1 << 16;

/// Partitions for an input of about `estimated_bytes` canonical bytes.
pub fn partition_count(estimated_bytes: u64) -> usize {
    estimated_bytes
        .div_ceil(PARTITION_TARGET_BYTES)
        .clamp(1, MAX_PARTITIONS) as usize
}

/// `batch`'s rows grouped by partition: `(partition, rows)` for each non-empty one.
pub fn split(batch: &RecordBatch, partitions: usize) -> Result<Vec<(usize, RecordBatch)>> {
    if partitions == 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let hashes = entity_hashes(batch.column(ENTITY));
    let parts: Vec<usize> = hashes.iter().map(|h| (h % partitions as u64) as usize).collect();
    let mut counts = vec![0usize; partitions + 1];
    for &p in &parts {
        counts[p + 1] += 1;
    }
    for p in 0..partitions {
        counts[p + 1] += counts[p];
    }
    let starts = counts.clone();
    let mut order = vec![0u32; parts.len()];
    for (row, &p) in parts.iter().enumerate() {
        order[counts[p]] = row as u32;
        counts[p] += 1;
    }
    let grouped = arrow::compute::take_record_batch(batch, &UInt32Array::from(order))?;
    Ok((0..partitions)
        .filter(|&p| starts[p + 1] > starts[p])
        .map(|p| (p, grouped.slice(starts[p], starts[p + 1] - starts[p])))
        .collect())
}

#[derive(Debug, Default)]
struct Partition {
    batches: Vec<RecordBatch>,
    /// This partition's share of the buffered bytes.
    bytes: usize,
    spilled: bool,
}

/// One table's partitions (the events, or the label events).
#[derive(Debug)]
pub struct Partitions {
    dir: PathBuf,
    name: &'static str,
    parts: Vec<Partition>,
    schema: Option<SchemaRef>,
    /// The file the schema was first seen in, for a mismatch (files are read in parallel, so
    /// the error names both).
    schema_origin: String,
    buffered: usize,
    budget: usize,
    pub spilled_bytes: u64,
    pub spills: u64,
}

impl Partitions {
    pub fn new(dir: &Path, name: &'static str, count: usize, budget: usize) -> Partitions {
        Partitions {
            dir: dir.to_owned(),
            name,
            parts: (0..count).map(|_| Partition::default()).collect(),
            schema: None,
            schema_origin: String::new(),
            buffered: 0,
            budget,
            spilled_bytes: 0,
            spills: 0,
        }
    }

    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    fn spill_path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{}-{part:05}.arrow", self.name))
    }

    /// Adds one split batch (from [`split`]); spills everything once past the budget.
    /// `origin` names the file, for a schema mismatch.
    /// The schema is checked even when every piece was dropped (partitions finished earlier).
    pub fn push(
        &mut self,
        schema: &SchemaRef,
        pieces: Vec<(usize, RecordBatch)>,
        total_bytes: usize,
        origin: &str,
    ) -> Result<()> {
        match &self.schema {
            None => {
                self.schema = Some(schema.clone());
                self.schema_origin = origin.to_owned();
            }
            Some(earlier) if earlier != schema => {
                return Err(Error::Events {
                    file: origin.to_owned(),
                    problem: format!(
                        "its columns read as {} but those of {} as {} (entity and value types must agree across files)",
                        describe(schema),
                        self.schema_origin,
                        describe(earlier)
                    ),
                })
            }
            Some(_) => {}
        }
        let rows: usize = pieces.iter().map(|(_, b)| b.num_rows()).sum();
        for (part, batch) in pieces {
            let share = total_bytes * batch.num_rows() / rows.max(1);
            self.parts[part].bytes += share;
            self.buffered += share;
            self.parts[part].batches.push(batch);
        }
        if self.buffered > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Appends every partition's buffered rows to its spill file, as one IPC stream each.
    pub fn spill(&mut self) -> Result<()> {
        let Some(schema) = self.schema.clone() else {
            return Ok(());
        };
        fs::create_dir_all(&self.dir).at("creating", &self.dir)?;
        for part in 0..self.parts.len() {
            let batches = std::mem::take(&mut self.parts[part].batches);
            self.parts[part].bytes = 0;
            if batches.is_empty() {
                continue;
            }
            let path = self.spill_path(part);
            let merged = arrow::compute::concat_batches(&schema, &batches)?;
            drop(batches);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .at("creating", &path)?;
            let mut writer = StreamWriter::try_new(BufWriter::new(file), &schema)?;
            writer.write(&merged)?;
            writer.finish()?;
            writer
                .into_inner()?
                .into_inner()
                .map_err(|e| Error::io("writing", &path, e.into_error()))?;
            self.spilled_bytes += merged.get_array_memory_size() as u64;
            self.parts[part].spilled = true;
        }
        self.buffered = 0;
        self.spills += 1;
        Ok(())
    }

    /// Every row of `part` (spilled and buffered), as one batch; `None` when it has none.
    /// The partition's memory and spill file are released.
    pub fn take(&mut self, part: usize) -> Result<Option<RecordBatch>> {
        let Some(schema) = self.schema.clone() else {
            return Ok(None);
        };
        let mut batches = Vec::new();
        if self.parts[part].spilled {
            let path = self.spill_path(part);
            let file = File::open(&path).at("opening", &path)?;
            let mut reader = BufReader::new(file);
            // One stream per spill, back to back.
            while !reader.fill_buf().at("reading", &path)?.is_empty() {
                let stream = StreamReader::try_new(&mut reader, None)?;
                for batch in stream {
                    batches.push(batch?);
                }
            }
            fs::remove_file(&path).at("removing", &path)?;
        }
        let partition = std::mem::take(&mut self.parts[part]);
        self.buffered -= partition.bytes.min(self.buffered);
        batches.extend(partition.batches);
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(arrow::compute::concat_batches(&schema, &batches)?))
    }
}

fn describe(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, UInt64Array};
    use arrow::datatypes::{Int64Type, UInt64Type};
    use std::sync::Arc;

    fn batch(entities: Vec<i64>) -> RecordBatch {
        let n = entities.len();
        let schema = crate::windows::prepare::canonical_schema(&arrow::datatypes::DataType::Int64, &[]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(entities)),
                Arc::new(Int64Array::from(vec![0; n])),
                Arc::new(UInt64Array::from_iter_values(0..n as u64)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn spilled_and_buffered_rows_come_back_together() {
        let dir = std::env::temp_dir().join(format!("kiln-partition-{}", std::process::id()));
        let mut parts = Partitions::new(&dir, "events", 4, 1);
        let mut seen = 0;
        for round in 0..3 {
            let b = batch((0..100).map(|i| i * 7 + round).collect());
            let pieces = split(&b, 4).unwrap();
            if round == 2 {
                parts.budget = usize::MAX; // the last round stays in memory
            }
            parts.push(&b.schema(), pieces, 1000, "f").unwrap();
        }
        assert_eq!(parts.spills, 2);
        for p in 0..4 {
            let Some(rows) = parts.take(p).unwrap() else {
                continue;
            };
            seen += rows.num_rows();
            // Every entity lands in the partition its hash names.
            let hashes = entity_hashes(rows.column(ENTITY));
            assert!(hashes.iter().all(|h| (h % 4) as usize == p));
            let seqs = rows.column(2).as_primitive::<UInt64Type>();
            assert_eq!(seqs.len(), rows.column(ENTITY).as_primitive::<Int64Type>().len());
        }
        assert_eq!(seen, 300);
        assert!(!dir.join("events-00000.arrow").exists());
        fs::remove_dir_all(&dir).ok();
    }
}
