//! The producer thread: walks each epoch's order, gathers rows from (verified) row groups,
//! runs the spec on raw rows, and sends batches through the bounded prefetch channel.

use std::collections::VecDeque;
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
/// thread is an error, not a crash.
fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let chunk = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|from| {
                scope.spawn(move || {
                    (from..(from + chunk).min(n))
                        .map(work)
                        .collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for handle in handles {
            out.extend(
                handle
                    .join()
                    .map_err(|p| Error::panicked("a loader transform thread", p))??,
            );
        }
        Ok(out)
    })
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

    fn gather(&mut self, rows: &[u64]) -> Result<RecordBatch> {
        // Storage-order reads (no shuffle) are runs of one row group: a zero-copy slice.
        if let (Some(&first), Some(&last)) = (rows.first(), rows.last()) {
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

    /// Runs the entry's spec on raw rows, keeping row order: on the CPU in parallel; on the GPU
    /// decoded in parallel, then run as one device batch per shape.
    fn transform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some((pipeline, layout)) = &self.raw else {
            return Ok(batch);
        };
        let ids = column::<UInt64Array>(&batch, "row_id")?;
        let paths = column::<StringArray>(&batch, "path")?;
        let labels = column::<StringArray>(&batch, "label")?;
        let indices = column::<Int32Array>(&batch, "label_index")?;
        let content = column::<BinaryArray>(&batch, "content")?;
        let item = |i: usize| {
            let path = format!("{} (row {})", paths.value(i), ids.value(i));
            move |source| Error::Item { path, source }
        };
        let tensors: Vec<kiln_core::Tensor> = match &self.config.backend {
            AnyBackend::Gpu(gpu) => {
                let decoded = parallel_map(batch.num_rows(), self.config.threads, |i| {
                    pipeline.decode_with_warnings(content.value(i)).map_err(item(i))
                })?;
                crate::transform::run_decoded_on_gpu(pipeline, gpu, decoded)
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.map_err(item(i)))
                    .collect::<Result<_>>()?
            }
            backend => parallel_map(batch.num_rows(), self.config.threads, |i| {
                pipeline.run(backend as &dyn Backend, content.value(i)).map_err(item(i))
            })?,
        };
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
        let schema = crate::shards::schema(layout);
        to_batch(&schema, layout, &rows)
    }

    /// Tensors of a gathered tensor-entry batch, uploaded as one `(n, ...shape)` device tensor.
    fn upload_tensors(&self, gpu: &GpuBackend, batch: &RecordBatch) -> Result<GpuTensor> {
        let shape = self
            .entry
            .tensor_info()
            .and_then(|t| t.shape.clone())
            .ok_or_else(|| Error::entry(&self.entry.dir, "device batches need a fixed tensor shape"))?;
        let tensors = TensorColumn::from_batch(batch, Some(&shape))?;
        let shape: Vec<usize> = std::iter::once(batch.num_rows()).chain(shape).collect();
        Ok(gpu.upload_tensor(&tensors.all_values().to_tensor(shape))?)
    }

    /// Raw rows decoded on the host (in parallel), their spec run on the device as one batch
    /// per shape, the results left there in row order.
    fn device_transform(&self, gpu: &Arc<GpuBackend>, batch: &RecordBatch) -> Result<GpuTensor> {
        let (pipeline, _) = self.raw.as_ref().expect("raw entry");
        let content = column::<BinaryArray>(batch, "content")?;
        let paths = column::<StringArray>(batch, "path")?;
        let item = |i: usize| {
            let path = paths.value(i).to_owned();
            move |source| Error::Item { path, source }
        };
        let decoded = parallel_map(batch.num_rows(), self.config.threads, |i| {
            pipeline.decode_with_warnings(content.value(i)).map_err(item(i))
        })?;
        let mut parts = Vec::new();
        let mut order = vec![(0, 0); batch.num_rows()];
        for group in crate::transform::same_shape_groups(decoded) {
            let (positions, inputs): (Vec<usize>, Vec<kiln_core::Tensor>) = group.members.into_iter().unzip();
            let first = positions[0];
            let plan = pipeline.plan(group.key).map_err(item(first))?;
            let part = gpu
                .execute_batch_resident(&plan, inputs)
                .map_err(|e| item(first)(e.into()))?;
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

    fn make_batch(&mut self, rows: &[u64]) -> Result<(RecordBatch, Option<GpuTensor>)> {
        let gathered = self.gather(rows)?;
        let device_gpu = match (&self.config.backend, self.config.device_output) {
            (AnyBackend::Gpu(gpu), true) => Some(gpu.clone()),
            _ => None,
        };
        let (batch, device) = match device_gpu {
            None => (self.transform(gathered)?, None),
            Some(gpu) => {
                let device = if self.raw.is_some() {
                    self.device_transform(&gpu, &gathered)?
                } else {
                    self.upload_tensors(&gpu, &gathered)?
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

    /// Sends batches until the epochs are done (true), the consumer left, or an error was sent.
    pub fn run(&mut self, start: LoaderState, mut send: impl FnMut(Result<Batch>) -> bool) -> bool {
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
                let batch = self
                    .make_batch(&order[position..end])
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
                position = end;
            }
            epoch += 1;
            position = 0;
        }
        true
    }
}
