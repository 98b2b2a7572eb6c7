//! The producer thread: walks each epoch's order, gathers rows from (verified) row groups,
//! runs the spec on raw rows, and sends batches through the bounded prefetch channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{Array, BinaryArray, Int32Array, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use kiln_core::{Backend, Pipeline};
use kiln_gpu::{AnyBackend, GpuBackend, GpuTensor};

use super::order::epoch_order;
use super::{Batch, LoaderConfig, LoaderState};
use crate::error::{Error, Result};
use crate::shards::{to_batch, EntryReader, Layout, Payload, Row, TensorColumn};

pub(super) struct Producer {
    pub entry: EntryReader,
    pub config: LoaderConfig,
    /// For raw entries: the spec and the layout of its output.
    pub raw: Option<(Arc<Pipeline>, Layout)>,
    /// Recently read row groups; the shuffle buffer keeps reads within a few of them.
    pub cache: VecDeque<(usize, RecordBatch)>,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::invalid("batch", format!("no `{name}` column of the expected type")))
}

/// Runs `work` over `0..n` in up to `threads` scoped threads, keeping order; a panicking
/// thread is an error, not a crash. Threads claim one index at a time, so a slow item holds
/// up one thread rather than a fixed share of the batch.
fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let parts = std::thread::scope(|scope| {
        let (work, next) = (&work, &next);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(done);
                        }
                        match work(i) {
                            Ok(value) => done.push((i, value)),
                            Err(e) => {
                                // The others stop at their next claim.
                                next.store(n, Ordering::Relaxed);
                                return Err((i, Box::new(e)));
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|p| Error::panicked("a loader transform thread", p))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    // The earliest failing row is the one reported.
    let mut first_error: Option<(usize, Box<Error>)> = None;
    for part in parts {
        match part {
            Ok(done) => done.into_iter().for_each(|(i, v)| slots[i] = Some(v)),
            Err((i, e)) => {
                if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_error = Some((i, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(*e);
    }
    Ok(slots
        .into_iter()
        .map(|v| v.expect("every index claimed once"))
        .collect())
}

/// Everything that makes a batch after its rows are gathered: running a raw entry's spec,
/// uploading to the device, picking columns. Owned, so it runs on its own stage thread while
/// the producer reads and gathers the next batch.
struct Finisher {
    raw: Option<(Arc<Pipeline>, Layout)>,
    config: LoaderConfig,
    entry_dir: std::path::PathBuf,
    /// The entry's stored tensor shape (tensor entries), for device uploads.
    stored_shape: Option<Vec<usize>>,
}

impl Producer {
    fn cache_capacity(&self) -> usize {
        let smallest = self.entry.blocks.iter().map(|b| b.rows).min().unwrap_or(1).max(1) as usize;
        let window = if self.config.seed.is_some() {
            self.config.shuffle_buffer
        } else {
            self.config.batch_size
        };
        (window / smallest + 3)
            .min(self.entry.blocks.len().max(1))
            .min(256)
    }

    fn block(&mut self, index: usize) -> Result<RecordBatch> {
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == index) {
            let hit = self.cache.remove(pos).expect("position found");
            self.cache.push_front(hit.clone());
            return Ok(hit.1);
        }
        let batch = self.entry.read_block(&self.entry.blocks[index].clone())?;
        self.cache.push_front((index, batch.clone()));
        self.cache.truncate(self.cache_capacity());
        Ok(batch)
    }

    fn block_of(&self, row: u64) -> usize {
        self.entry
            .blocks
            .partition_point(|blk| blk.start + blk.rows <= row)
    }

    /// Makes sure the row groups of `rows` (and, room permitting, of `upcoming`, the next
    /// batch's rows) are cached, reading the missing ones several at once: decoding row groups
    /// is most of reading an entry, and one core would otherwise do all of it.
    fn prefetch(&mut self, rows: &[u64], upcoming: &[u64]) -> Result<()> {
        let capacity = self.cache_capacity();
        let mut needed: Vec<usize> = Vec::new();
        for &row in rows {
            let b = self.block_of(row);
            if !needed.contains(&b) {
                needed.push(b);
            }
        }
        for &row in upcoming {
            let b = self.block_of(row);
            if needed.len() >= capacity {
                break;
            }
            if !needed.contains(&b) {
                needed.push(b);
            }
        }
        let missing: Vec<usize> = needed
            .iter()
            .copied()
            .filter(|b| !self.cache.iter().any(|(i, _)| i == b))
            .collect();
        if missing.len() < 2 {
            return Ok(());
        }
        let entry = &self.entry;
        let read = parallel_map(missing.len(), self.config.threads, |i| {
            entry.read_block(&entry.blocks[missing[i]])
        })?;
        // Needed row groups first, then what was cached before, oldest dropped.
        let mut fresh: VecDeque<(usize, RecordBatch)> = missing.into_iter().zip(read).collect();
        let mut kept: VecDeque<(usize, RecordBatch)> = VecDeque::new();
        for (index, batch) in std::mem::take(&mut self.cache) {
            if needed.contains(&index) {
                fresh.push_back((index, batch));
            } else {
                kept.push_back((index, batch));
            }
        }
        fresh.extend(kept);
        fresh.truncate(capacity.max(needed.len()));
        self.cache = fresh;
        Ok(())
    }

    /// The rows of a batch as one record batch; the row groups of `upcoming` (the next
    /// batch's rows) are read at the same time.
    fn gather(&mut self, rows: &[u64], upcoming: &[u64]) -> Result<RecordBatch> {
        self.prefetch(rows, upcoming)?;
        // Storage-order reads (no shuffle) are runs of one row group: a zero-copy slice, unless
        // the consumer needs buffers of its own (the gather below copies).
        if let (false, Some(&first), Some(&last)) = (self.config.owned_batches, rows.first(), rows.last()) {
            let b = self.block_of(first);
            let block = &self.entry.blocks[b];
            let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
            if contiguous && last < block.start + block.rows {
                let start = (first - block.start) as usize;
                return Ok(self.block(b)?.slice(start, rows.len()));
            }
        }
        let mut sources: Vec<(usize, RecordBatch)> = Vec::new();
        let mut indices = Vec::with_capacity(rows.len());
        for &row in rows {
            let b = self.block_of(row);
            let slot = match sources.iter().position(|(i, _)| *i == b) {
                Some(slot) => slot,
                None => {
                    sources.push((b, self.block(b)?));
                    sources.len() - 1
                }
            };
            indices.push((slot, (row - self.entry.blocks[b].start) as usize));
        }
        let schema = sources[0].1.schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = sources.iter().map(|(_, b)| b.column(c).as_ref()).collect();
                arrow::compute::interleave(&arrays, &indices)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn finisher(&self) -> Finisher {
        Finisher {
            raw: self.raw.clone(),
            config: self.config.clone(),
            entry_dir: self.entry.dir.clone(),
            stored_shape: self.entry.tensor_info().and_then(|t| t.shape.clone()),
        }
    }

    /// Sends batches until the epochs are done (true), the consumer left, or an error was sent.
    ///
    /// Three stages, each on its own thread with one batch between them: this thread reads and
    /// gathers rows (Parquet decoding, shuffling); the next does the host's work on raw rows
    /// (the spec on the CPU, or decoding for the device); the last runs the device's work and
    /// sends the batch. So the host decodes batch n + 1 while the device runs batch n.
    pub fn run(&mut self, start: LoaderState, mut send: impl FnMut(Result<Batch>) -> bool + Send) -> bool {
        let finisher = self.finisher();
        let (to_prepare, preparing) =
            std::sync::mpsc::sync_channel::<(Result<RecordBatch>, u64, LoaderState)>(1);
        let (to_finish, finishing) = std::sync::mpsc::sync_channel::<(Result<Prepared>, u64, LoaderState)>(1);
        std::thread::scope(|scope| {
            let finisher = &finisher;
            // Host work (transforms, decoding) for one batch while the device runs the last.
            let prepare = scope.spawn(move || {
                for (gathered, epoch, state_after) in preparing {
                    let prepared = gathered.and_then(|rows| finisher.prepare(rows));
                    let failed = prepared.is_err();
                    if to_finish.send((prepared, epoch, state_after)).is_err() || failed {
                        return;
                    }
                }
            });
            let stage = scope.spawn(move || {
                for (prepared, epoch, state_after) in finishing {
                    let batch = prepared
                        .and_then(|p| finisher.complete(p))
                        .map(|(records, device)| Batch {
                            records,
                            device,
                            epoch,
                            state_after,
                        });
                    let failed = batch.is_err();
                    if !send(batch) || failed {
                        return false;
                    }
                }
                true
            });
            let gathered_all = self.gather_epochs(start, &to_prepare);
            drop(to_prepare);
            let delivered = stage
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            prepare
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            gathered_all && delivered
        })
    }

    /// Walks the epochs' orders, handing each batch's gathered rows to the finishing stage;
    /// false when that stage stopped or a read failed.
    fn gather_epochs(
        &mut self,
        start: LoaderState,
        to_finish: &std::sync::mpsc::SyncSender<(Result<RecordBatch>, u64, LoaderState)>,
    ) -> bool {
        let group_rows: Vec<u64> = self.entry.blocks.iter().map(|b| b.rows).collect();
        let c = &self.config;
        let (seed, batch_size, drop_last) = (start.seed, c.batch_size, c.drop_last);
        let (cur, count, buffer, epochs) = (c.cur_shard, c.shard_count, c.shuffle_buffer, c.epochs);
        let mut epoch = start.epoch;
        let mut position = start.position as usize;
        while epochs.is_none_or(|e| epoch < e) {
            let order = epoch_order(&group_rows, seed, epoch, cur, count, buffer);
            while position < order.len() {
                let end = (position + batch_size).min(order.len());
                if end - position < batch_size && drop_last {
                    break;
                }
                let epoch_done = end == order.len() || (drop_last && order.len() - end < batch_size);
                let state_after = if epoch_done {
                    LoaderState {
                        seed,
                        epoch: epoch + 1,
                        position: 0,
                    }
                } else {
                    LoaderState {
                        seed,
                        epoch,
                        position: end as u64,
                    }
                };
                let upcoming = &order[end..(end + batch_size).min(order.len())];
                let gathered = self.gather(&order[position..end], upcoming);
                let failed = gathered.is_err();
                if to_finish.send((gathered, epoch, state_after)).is_err() || failed {
                    return false;
                }
                position = end;
            }
            epoch += 1;
            position = 0;
        }
        true
    }
}

/// A gathered batch after the host's share of the work: raw rows transformed (CPU backend)
/// or decoded for the device (GPU backend).
struct Prepared {
    gathered: RecordBatch,
    host: Host,
}

enum Host {
    /// Tensor entries: nothing to do on the host.
    Stored,
    /// The spec ran on the CPU; the batch's columns.
    Transformed(RecordBatch),
    /// Decoded inputs, one per row, for the device.
    Decoded(Vec<kiln_core::Decoded>),
}

/// Errors of row `i` of a gathered batch name its path and row id.
fn row_error(batch: &RecordBatch, i: usize) -> impl Fn(kiln_core::Error) -> Error {
    let paths = column::<StringArray>(batch, "path").ok();
    let ids = column::<UInt64Array>(batch, "row_id").ok();
    let path = match (paths, ids) {
        (Some(p), Some(id)) => format!("{} (row {})", p.value(i), id.value(i)),
        _ => format!("row {i}"),
    };
    move |source| Error::Item {
        path: path.clone(),
        source,
    }
}

impl Finisher {
    /// The host's share: on the CPU backend, the spec on every raw row; on the GPU, decoding.
    /// Runs in parallel over the rows, on the stage before the device's.
    fn prepare(&self, gathered: RecordBatch) -> Result<Prepared> {
        let Some((pipeline, layout)) = &self.raw else {
            return Ok(Prepared {
                gathered,
                host: Host::Stored,
            });
        };
        let content = column::<BinaryArray>(&gathered, "content")?;
        let host = match &self.config.backend {
            AnyBackend::Gpu(_) => {
                Host::Decoded(parallel_map(gathered.num_rows(), self.config.threads, |i| {
                    pipeline
                        .decode_with_warnings(content.value(i))
                        .map_err(row_error(&gathered, i))
                })?)
            }
            backend => {
                let tensors = parallel_map(gathered.num_rows(), self.config.threads, |i| {
                    pipeline
                        .run(backend as &dyn Backend, content.value(i))
                        .map_err(row_error(&gathered, i))
                })?;
                Host::Transformed(rows_with_tensors(&gathered, layout, tensors)?)
            }
        };
        Ok(Prepared { gathered, host })
    }

    /// Tensors of a gathered tensor-entry batch, uploaded as one `(n, ...shape)` device tensor.
    fn upload_tensors(&self, gpu: &GpuBackend, batch: &RecordBatch) -> Result<GpuTensor> {
        let shape = self
            .stored_shape
            .clone()
            .ok_or_else(|| Error::entry(&self.entry_dir, "device batches need a fixed tensor shape"))?;
        let tensors = TensorColumn::from_batch(batch, Some(&shape))?;
        let shape: Vec<usize> = std::iter::once(batch.num_rows()).chain(shape).collect();
        Ok(gpu.upload_tensor(&tensors.all_values().to_tensor(shape))?)
    }

    /// Decoded raw rows run on the device as one batch per shape, the results left there in
    /// row order.
    fn device_transform(
        &self,
        gpu: &Arc<GpuBackend>,
        batch: &RecordBatch,
        decoded: Vec<kiln_core::Decoded>,
    ) -> Result<GpuTensor> {
        let (pipeline, _) = self.raw.as_ref().expect("raw entry");
        let mut parts = Vec::new();
        let mut order = vec![(0, 0); decoded.len()];
        for group in crate::transform::same_shape_groups(decoded) {
            let (positions, inputs): (Vec<usize>, Vec<kiln_core::Tensor>) = group.members.into_iter().unzip();
            let first = positions[0];
            let plan = pipeline.plan(group.key).map_err(row_error(batch, first))?;
            let part = gpu
                .execute_batch_resident(&plan, inputs)
                .map_err(|e| row_error(batch, first)(e.into()))?;
            for (row, position) in positions.into_iter().enumerate() {
                order[position] = (parts.len(), row);
            }
            parts.push(part);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        Ok(gpu.gather_rows(&parts, &order)?)
    }

    /// The device's share (the spec on decoded rows, uploads), then the columns asked for.
    fn complete(&self, prepared: Prepared) -> Result<(RecordBatch, Option<GpuTensor>)> {
        let Prepared { gathered, host } = prepared;
        let device_gpu = match (&self.config.backend, self.config.device_output) {
            (AnyBackend::Gpu(gpu), true) => Some(gpu.clone()),
            _ => None,
        };
        let (batch, device) = match (device_gpu, host) {
            (_, Host::Transformed(batch)) => (batch, None),
            (None, Host::Stored) => (gathered, None),
            (None, Host::Decoded(decoded)) => {
                let (pipeline, layout) = self.raw.as_ref().expect("decoded rows are raw");
                let AnyBackend::Gpu(gpu) = &self.config.backend else {
                    unreachable!("rows are decoded for the GPU only")
                };
                let tensors = crate::transform::run_decoded_on_gpu(pipeline, gpu, decoded)
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.map_err(row_error(&gathered, i)))
                    .collect::<Result<Vec<_>>>()?;
                (rows_with_tensors(&gathered, layout, tensors)?, None)
            }
            (Some(gpu), host) => {
                let device = match host {
                    Host::Decoded(decoded) => self.device_transform(&gpu, &gathered, decoded)?,
                    _ => self.upload_tensors(&gpu, &gathered)?,
                };
                // The tensors live on the device; the batch keeps the other columns.
                let schema = gathered.schema();
                let keep: Vec<usize> = ["row_id", "path", "label", "label_index"]
                    .iter()
                    .filter_map(|n| schema.index_of(n).ok())
                    .collect();
                (gathered.project(&keep)?, Some(device))
            }
        };
        let batch = match &self.config.columns {
            None => batch,
            Some(names) => {
                let schema = batch.schema();
                let picked = names
                    .iter()
                    .map(|n| {
                        schema.index_of(n).map_err(|_| {
                            Error::invalid(
                                "columns",
                                format!(
                                    "no column `{n}` (have {:?})",
                                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                batch.project(&picked)?
            }
        };
        Ok((batch, device))
    }
}

/// The gathered rows' columns with `tensors` (one per row) in place of `content`.
fn rows_with_tensors(
    gathered: &RecordBatch,
    layout: &Layout,
    tensors: Vec<kiln_core::Tensor>,
) -> Result<RecordBatch> {
    let ids = column::<UInt64Array>(gathered, "row_id")?;
    let paths = column::<StringArray>(gathered, "path")?;
    let labels = column::<StringArray>(gathered, "label")?;
    let indices = column::<Int32Array>(gathered, "label_index")?;
    let rows: Vec<Row> = tensors
        .into_iter()
        .enumerate()
        .map(|(i, tensor)| Row {
            row_id: ids.value(i),
            path: paths.value(i).to_owned(),
            label: labels.is_valid(i).then(|| labels.value(i).to_owned()),
            label_index: indices.is_valid(i).then(|| indices.value(i)),
            payload: Payload::Tensor(tensor),
        })
        .collect();
    to_batch(&crate::shards::schema(layout), layout, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order_and_reports_the_earliest_failure() {
        let squares = parallel_map(1000, 4, |i| Ok(i * i)).unwrap();
        assert_eq!(squares, (0..1000).map(|i| i * i).collect::<Vec<_>>());
        let err = parallel_map(100, 3, |i| {
            if i % 40 == 17 {
                Err(Error::invalid("row", format!("bad row {i}")))
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("bad row 17"), "{err}");
        let err = parallel_map(10, 2, |i| if i == 5 { panic!("boom at {i}") } else { Ok(i) }).unwrap_err();
        assert!(err.to_string().contains("boom at 5"), "{err}");
    }
}
