//! The input side: the entry's rows read in storage order by the loader (which verifies
//! shards and runs a raw entry's spec), cut into batches that never cross an output shard,
//! and turned into the model's input tensor on a thread of their own, so reading overlaps
//! scoring.

use std::ops::Range;
use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::model::{InputBatch, InputType, InputValues, ModelInfo};
use super::output::ROW_COLUMNS;
use crate::cache::DType;
use crate::error::{Error, Result};
use crate::loader::{Loader, LoaderState};
use crate::shards::{TensorColumn, TensorValues};

/// Rows of one output shard that this run scores: all of them, or an earlier run's failures.
#[derive(Debug, Clone)]
pub struct ShardWork {
    pub shard: u64,
    /// The shard's rows (positions in storage order).
    pub rows: Range<u64>,
    /// The positions to score, sorted; `None` for every row.
    pub only: Option<Vec<u64>>,
}

impl ShardWork {
    pub fn rows_to_score(&self) -> u64 {
        self.only
            .as_ref()
            .map_or(self.rows.end - self.rows.start, |o| o.len() as u64)
    }
}

/// A batch on its way to the model.
#[derive(Debug)]
pub struct WorkItem {
    pub shard: u64,
    /// Position of the first row.
    pub start: u64,
    /// The input's row columns (`row_id`, `path`, `label`, `label_index`).
    pub rows: RecordBatch,
    /// The model's input, or why these rows cannot be one.
    pub input: std::result::Result<InputBatch, String>,
}

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub entry: PathBuf,
    pub stored: DType,
    /// The entry's row shape when every row has it.
    pub fixed_shape: Option<Vec<usize>>,
    pub batch_size: usize,
    pub info: ModelInfo,
    /// Threads running a raw entry's spec.
    pub threads: usize,
}

/// Reads `work` in order and sends its batches; stops early when the receiver is gone.
/// An error reading the input ends the run (it is the input's problem, not one batch's).
pub fn read(config: ReaderConfig, work: Vec<ShardWork>, send: mpsc::Sender<Result<WorkItem>>) {
    let mut batch_id = 0u64;
    let mut i = 0;
    while i < work.len() {
        // One loader per run of consecutive shards.
        let mut j = i + 1;
        while j < work.len() && work[j].rows.start == work[j - 1].rows.end {
            j += 1;
        }
        let result = read_run(&config, &work[i..j], &mut batch_id, &send);
        match result {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let _ = send.blocking_send(Err(e));
                return;
            }
        }
        i = j;
    }
}

fn read_run(
    config: &ReaderConfig,
    run: &[ShardWork],
    batch_id: &mut u64,
    send: &mpsc::Sender<Result<WorkItem>>,
) -> Result<bool> {
    let start = run[0].rows.start;
    let end = run[run.len() - 1].rows.end;
    let mut loader = Loader::builder(&config.entry)
        .batch_size(config.batch_size)
        .epochs(Some(1))
        .threads(config.threads)
        .resume(LoaderState {
            seed: None,
            epoch: 0,
            position: start,
        })
        .build()?;
    let mut position = start;
    let mut shard = 0;
    while position < end {
        let Some(batch) = loader.next() else {
            return Err(Error::entry(
                &config.entry,
                format!("ended at row {position}, before row {end}"),
            ));
        };
        let records = batch?.records;
        let mut offset = 0;
        while offset < records.num_rows() && position < end {
            while run[shard].rows.end <= position {
                shard += 1;
            }
            let work = &run[shard];
            let take = (records.num_rows() - offset).min((work.rows.end - position) as usize);
            for (from, len) in pieces(work, position, take) {
                let rows = records.slice(offset + (from - position) as usize, len);
                let item = WorkItem {
                    shard: work.shard,
                    start: from,
                    input: input_batch(config, &rows, *batch_id),
                    rows: rows.project_by_names(&ROW_COLUMNS)?,
                };
                *batch_id += 1;
                if send.blocking_send(Ok(item)).is_err() {
                    return Ok(false);
                }
            }
            offset += take;
            position += take as u64;
        }
    }
    Ok(true)
}

/// The runs of rows to score among `len` rows from `position`: all of them, or the
/// consecutive runs of the positions listed in `only`.
fn pieces(work: &ShardWork, position: u64, len: usize) -> Vec<(u64, usize)> {
    let end = position + len as u64;
    let Some(only) = &work.only else {
        return vec![(position, len)];
    };
    let mut out: Vec<(u64, usize)> = Vec::new();
    for &p in only.iter().filter(|&&p| p >= position && p < end) {
        match out.last_mut() {
            Some((from, n)) if *from + *n as u64 == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

trait ProjectByNames {
    fn project_by_names(&self, names: &[&str]) -> Result<RecordBatch>;
}

impl ProjectByNames for RecordBatch {
    fn project_by_names(&self, names: &[&str]) -> Result<RecordBatch> {
        let schema = self.schema();
        let indices = names
            .iter()
            .map(|n| {
                schema
                    .index_of(n)
                    .map_err(|_| Error::invalid("input", format!("has no `{n}` column")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.project(&indices)?)
    }
}

/// The rows' tensors as one `(rows, *row_shape)` input of the model's type, padded with
/// zero rows to a fixed batch size when the model has one.
pub fn input_batch(
    config: &ReaderConfig,
    rows: &RecordBatch,
    id: u64,
) -> std::result::Result<InputBatch, String> {
    let column = TensorColumn::from_batch(rows, config.fixed_shape.as_deref());
    let column = column.map_err(|e| e.to_string())?;
    let n = column.len();
    let entry_row = column.shape(0).to_vec();
    if let Some(i) = (1..n).find(|&i| column.shape(i) != entry_row.as_slice()) {
        return Err(format!(
            "rows of shapes {entry_row:?} and {:?} in one batch: a model takes one shape per batch \
             (give the spec a fixed size, e.g. fix_length or resize)",
            column.shape(i)
        ));
    }
    let row_shape = config.info.row_shape_for(&entry_row).map_err(|e| e.to_string())?;
    let padded = config.info.fixed_batch().unwrap_or(n).max(n);
    let per_row: usize = entry_row.iter().product();
    let values = match (column.all_values(), config.info.input.input_type) {
        (TensorValues::F32(v), InputType::Float32) => {
            let mut out = Vec::with_capacity(padded * per_row);
            out.extend_from_slice(v);
            out.resize(padded * per_row, 0.0);
            InputValues::F32(out)
        }
        (TensorValues::U8(v), InputType::Uint8) => {
            let mut out = Vec::with_capacity(padded * per_row);
            out.extend_from_slice(v);
            out.resize(padded * per_row, 0);
            InputValues::U8(out)
        }
        // Pixel values as floats, unscaled: the model's own graph does any normalizing.
        (TensorValues::U8(v), InputType::Float32) => {
            let mut out: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            out.resize(padded * per_row, 0.0);
            InputValues::F32(out)
        }
        (TensorValues::F32(_), InputType::Uint8) => {
            return Err(format!(
                "model input {:?} is uint8 but the input's tensors are {}",
                config.info.input.name,
                config.stored.name()
            ))
        }
    };
    Ok(InputBatch {
        id,
        rows: padded,
        row_shape,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_positions_are_scored_in_consecutive_runs() {
        let all = ShardWork {
            shard: 0,
            rows: 0..10,
            only: None,
        };
        assert_eq!(pieces(&all, 4, 3), vec![(4, 3)]);
        let some = ShardWork {
            shard: 0,
            rows: 0..10,
            only: Some(vec![1, 2, 3, 6, 8, 9]),
        };
        assert_eq!(pieces(&some, 0, 10), vec![(1, 3), (6, 1), (8, 2)]);
        assert_eq!(pieces(&some, 2, 5), vec![(2, 2), (6, 1)]);
        assert_eq!(pieces(&some, 4, 2), vec![]);
        assert_eq!(some.rows_to_score(), 6);
    }
}
