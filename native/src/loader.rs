//! The loader: a cache entry streamed back as batches, shuffled, sharded across workers,
//! for a set or infinite number of epochs, with prefetch and a resumable state.
//!
//! ```no_run
//! use kiln::loader::Loader;
//!
//! let mut loader = Loader::builder("cache/0123abcd")
//!     .batch_size(64)
//!     .shuffle(42)
//!     .shard(0, 4)          // this worker of four
//!     .epochs(Some(10))     // None: forever, as Petastorm
//!     .build()?;
//! for batch in loader.by_ref().take(100) {
//!     let batch = batch?;   // batch.records: an Arrow RecordBatch
//! }
//! let state = loader.state(); // save it; `.resume(state)` continues with the unseen rows
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, BinaryArray, Int32Array, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use kiln_core::{Backend, CpuBackend, Pipeline, Spec, Tensor, TensorData};
use kiln_gpu::{GpuBackend, GpuTensor};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::cache::{read_manifest, Manifest};
use crate::convert::fixed_shape;
use crate::order::epoch_order;
use crate::shard::{Layout, Payload, Row};

/// The shape every row's tensor has in this entry, if it is fixed (tensor entries: as stored;
/// raw entries: as the spec gives).
pub fn fixed_tensor_shape(entry: &Path) -> Result<Option<Vec<usize>>> {
    let manifest = read_manifest(entry)?;
    Ok(match manifest.materialize.as_str() {
        "raw" => fixed_shape(&Spec::from_value(&manifest.spec).context("the entry's spec")?),
        _ => manifest.tensor.and_then(|t| t.shape),
    })
}

/// Where a loader is in its stream: enough to continue with exactly the rows not yet seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: Option<u64>,
    pub epoch: u64,
    /// Rows of this worker's epoch already delivered.
    pub position: u64,
}

/// A row group of a shard: the unit the loader reads and shuffles.
#[derive(Debug, Clone)]
struct Block {
    shard: usize,
    row_group: usize,
    start: u64,
    rows: u64,
}

/// A complete cache entry opened for reading.
#[derive(Debug)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: Manifest,
    blocks: Vec<Block>,
}

impl Entry {
    pub fn open(dir: impl AsRef<Path>) -> Result<Entry> {
        let dir = dir.as_ref().to_owned();
        let manifest = read_manifest(&dir)?;
        let mut blocks = Vec::new();
        let mut start = 0;
        for (shard, info) in manifest.shards.iter().enumerate() {
            let path = dir.join(&info.file);
            let file = fs::File::open(&path).with_context(|| format!("opening shard {}", path.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("reading shard {}", path.display()))?;
            let mut shard_rows = 0;
            for (row_group, rg) in reader.metadata().row_groups().iter().enumerate() {
                let rows = rg.num_rows() as u64;
                blocks.push(Block {
                    shard,
                    row_group,
                    start,
                    rows,
                });
                start += rows;
                shard_rows += rows;
            }
            if shard_rows != info.rows {
                bail!(
                    "shard {} has {shard_rows} rows, its manifest says {}",
                    path.display(),
                    info.rows
                );
            }
        }
        Ok(Entry {
            dir,
            manifest,
            blocks,
        })
    }

    pub fn rows(&self) -> u64 {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    fn read_block(&self, block: &Block) -> Result<RecordBatch> {
        let path = self.dir.join(&self.manifest.shards[block.shard].file);
        let file = fs::File::open(&path).with_context(|| format!("opening shard {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        // The builder's schema carries the shard's metadata (tensor shape and dtype).
        let schema = builder.schema().clone();
        let reader = builder
            .with_row_groups(vec![block.row_group])
            .with_batch_size(block.rows.max(1) as usize)
            .build()?;
        let mut batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
        if batches.len() == 1 {
            let batch = batches.pop().expect("one batch");
            return Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?);
        }
        Ok(arrow::compute::concat_batches(&schema, &batches)?)
    }
}

/// One batch: Arrow columns `row_id`, `path`, `label`, `label_index`, `tensor` (+ `shape`).
/// With GPU output the tensors are in `device` as one `(batch, ...shape)` tensor instead, and
/// `records` holds the other columns.
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: RecordBatch,
    pub device: Option<GpuTensor>,
    pub epoch: u64,
    /// The loader's state once this batch has been consumed.
    pub state_after: LoaderState,
}

impl Batch {
    pub fn row_ids(&self) -> Vec<u64> {
        self.records
            .column_by_name("row_id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .map(|a| a.values().to_vec())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct LoaderBuilder {
    entry: PathBuf,
    batch_size: usize,
    columns: Option<Vec<String>>,
    seed: Option<u64>,
    shuffle_buffer: usize,
    cur_shard: u64,
    shard_count: u64,
    epochs: Option<u64>,
    drop_last: bool,
    prefetch: usize,
    threads: usize,
    backend: Arc<dyn Backend + Send + Sync>,
    gpu: Option<Arc<GpuBackend>>,
    resume: Option<LoaderState>,
}

impl std::fmt::Debug for LoaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderBuilder")
            .field("entry", &self.entry)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl LoaderBuilder {
    /// Default: 32.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Output columns (default: all).
    pub fn columns(mut self, columns: Vec<String>) -> Self {
        self.columns = Some(columns);
        self
    }
    /// Shuffles row-group order and rows (through the shuffle buffer) with this seed. Default:
    /// no shuffling, storage order.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Rows held by the shuffle buffer. Default: 4096.
    pub fn shuffle_buffer(mut self, rows: usize) -> Self {
        self.shuffle_buffer = rows;
        self
    }
    /// This worker is `cur_shard` of `shard_count` (default 0 of 1).
    pub fn shard(mut self, cur_shard: u64, shard_count: u64) -> Self {
        self.cur_shard = cur_shard;
        self.shard_count = shard_count;
        self
    }
    /// `None` (the default, as Petastorm) repeats forever; `Some(n)` stops after n epochs.
    pub fn epochs(mut self, epochs: Option<u64>) -> Self {
        self.epochs = epochs;
        self
    }
    /// Drop the last, smaller batch of each epoch. Default: false.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.drop_last = yes;
        self
    }
    /// Batches prepared ahead of the consumer (memory is bounded by this). Default: 4.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }
    /// Threads decoding and transforming raw rows. Default: all cores.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    /// Backend that runs the spec on raw entries (default: CPU).
    pub fn backend(mut self, backend: Arc<dyn Backend + Send + Sync>) -> Self {
        self.backend = backend;
        self
    }
    /// Deliver tensors as GPU-resident batches on this device; for raw entries the spec runs
    /// there after upload. Needs a fixed tensor shape.
    pub fn gpu(mut self, gpu: Arc<GpuBackend>) -> Self {
        self.gpu = Some(gpu);
        self
    }
    /// Continue from a saved state (its seed replaces `shuffle`'s).
    pub fn resume(mut self, state: LoaderState) -> Self {
        self.resume = Some(state);
        self
    }

    pub fn build(self) -> Result<Loader> {
        let entry = Entry::open(&self.entry)?;
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.shard_count == 0 || self.cur_shard >= self.shard_count {
            bail!(
                "shard {}/{} is invalid: cur_shard must be below shard_count",
                self.cur_shard,
                self.shard_count
            );
        }
        let total = entry.rows();
        let per_worker = total / self.shard_count;
        if per_worker == 0 {
            bail!("{} rows cannot feed {} shards", total, self.shard_count);
        }
        let state = self.resume.unwrap_or(LoaderState {
            seed: self.seed,
            epoch: 0,
            position: 0,
        });
        let raw = match entry.manifest.materialize.as_str() {
            "raw" => {
                let spec = Spec::from_value(&entry.manifest.spec).context("the entry's spec")?;
                let layout = Layout::Tensor(crate::cache::TensorInfo {
                    dtype: crate::convert::tensor_dtype(&spec)?.to_owned(),
                    shape: fixed_shape(&spec),
                });
                Some((Arc::new(Pipeline::new(spec)), layout))
            }
            _ => None,
        };
        if self.gpu.is_some() {
            let fixed = match &raw {
                Some((_, Layout::Tensor(t))) => t.shape.is_some(),
                Some((_, Layout::Raw)) => false,
                None => entry.manifest.tensor.as_ref().is_some_and(|t| t.shape.is_some()),
            };
            if !fixed {
                bail!("GPU batches need a fixed tensor shape; this entry's rows vary in shape");
            }
        }
        let (sender, receiver) = sync_channel(self.prefetch.max(1));
        let config = self.clone();
        let producer = std::thread::Builder::new()
            .name("kiln-loader".into())
            .spawn(move || {
                let mut producer = Producer {
                    entry,
                    config,
                    raw,
                    cache: VecDeque::new(),
                };
                producer.run(state, |batch| sender.send(batch).is_ok());
            })?;
        Ok(Loader {
            receiver,
            state,
            per_worker,
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            _producer: producer,
        })
    }
}

/// Streams batches; see the module docs.
pub struct Loader {
    receiver: Receiver<Result<Batch>>,
    state: LoaderState,
    per_worker: u64,
    batch_size: usize,
    drop_last: bool,
    _producer: JoinHandle<()>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Loader {
    pub fn builder(entry: impl AsRef<Path>) -> LoaderBuilder {
        LoaderBuilder {
            entry: entry.as_ref().to_owned(),
            batch_size: 32,
            columns: None,
            seed: None,
            shuffle_buffer: 4096,
            cur_shard: 0,
            shard_count: 1,
            epochs: None,
            drop_last: false,
            prefetch: 4,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: Arc::new(CpuBackend),
            gpu: None,
            resume: None,
        }
    }

    /// The state after the last batch handed out.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Rows this worker gets per epoch (the same for every worker).
    pub fn rows_per_epoch(&self) -> u64 {
        self.per_worker
    }

    pub fn batches_per_epoch(&self) -> u64 {
        let b = self.batch_size as u64;
        if self.drop_last {
            self.per_worker / b
        } else {
            self.per_worker.div_ceil(b)
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.receiver.recv().ok()?;
        if let Ok(batch) = &item {
            self.state = batch.state_after;
        }
        Some(item)
    }
}

struct Producer {
    entry: Entry,
    config: LoaderBuilder,
    raw: Option<(Arc<Pipeline>, Layout)>,
    /// Recently read row groups; the shuffle buffer keeps reads within a few of them.
    cache: VecDeque<(usize, RecordBatch)>,
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

    fn gather(&mut self, rows: &[u64]) -> Result<RecordBatch> {
        // Storage-order reads (no shuffle) are runs of one row group: a zero-copy slice.
        if let (Some(&first), Some(&last)) = (rows.first(), rows.last()) {
            let b = self
                .entry
                .blocks
                .partition_point(|blk| blk.start + blk.rows <= first);
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
            let b = self
                .entry
                .blocks
                .partition_point(|blk| blk.start + blk.rows <= row);
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

    /// Runs the entry's spec on raw rows, in parallel, keeping row order.
    fn transform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some((pipeline, layout)) = &self.raw else {
            return Ok(batch);
        };
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("raw shard without `{name}`"))
        };
        let ids = col("row_id")?
            .as_any()
            .downcast_ref::<UInt64Array>()
            .context("row_id")?
            .clone();
        let paths = col("path")?
            .as_any()
            .downcast_ref::<StringArray>()
            .context("path")?
            .clone();
        let labels = col("label")?
            .as_any()
            .downcast_ref::<StringArray>()
            .context("label")?
            .clone();
        let indices = col("label_index")?
            .as_any()
            .downcast_ref::<Int32Array>()
            .context("label_index")?
            .clone();
        let content = col("content")?
            .as_any()
            .downcast_ref::<BinaryArray>()
            .context("content")?
            .clone();
        let n = batch.num_rows();
        let threads = self.config.threads.clamp(1, n.max(1));
        let chunk = n.div_ceil(threads);
        let backend = self.config.backend.as_ref();
        let rows: Vec<Row> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk.max(1))
                .map(|from| {
                    let (ids, paths, labels, indices, content) = (&ids, &paths, &labels, &indices, &content);
                    scope.spawn(move || -> Result<Vec<Row>> {
                        (from..(from + chunk).min(n))
                            .map(|i| {
                                let tensor = pipeline
                                    .run(backend, content.value(i))
                                    .with_context(|| format!("{} (row {})", paths.value(i), ids.value(i)))?;
                                Ok(Row {
                                    row_id: ids.value(i),
                                    path: paths.value(i).to_owned(),
                                    label: labels.is_valid(i).then(|| labels.value(i).to_owned()),
                                    label_index: indices.is_valid(i).then(|| indices.value(i)),
                                    payload: Payload::Tensor(tensor),
                                })
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("transform thread panicked"))
                .collect::<Result<Vec<Vec<Row>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let schema = crate::shard::schema(layout);
        crate::shard::to_batch(&schema, layout, &rows)
    }

    /// Tensors of a gathered tensor-entry batch, uploaded as one `(n, ...shape)` device tensor.
    fn upload_tensors(&self, gpu: &GpuBackend, batch: &RecordBatch) -> Result<GpuTensor> {
        let info = self
            .entry
            .manifest
            .tensor
            .as_ref()
            .context("tensor entry without tensor info")?;
        let shape: Vec<usize> = std::iter::once(batch.num_rows())
            .chain(info.shape.clone().unwrap_or_default())
            .collect();
        let column = batch.column_by_name("tensor").context("no tensor column")?;
        let list = column
            .as_any()
            .downcast_ref::<arrow::array::FixedSizeListArray>()
            .context("fixed-shape tensor column")?;
        let values = list.values();
        let tensor = if let Some(f) = values.as_any().downcast_ref::<arrow::array::Float32Array>() {
            Tensor::new(shape, TensorData::F32(f.values().to_vec()))
        } else if let Some(u) = values.as_any().downcast_ref::<arrow::array::UInt8Array>() {
            Tensor::new(shape, TensorData::U8(u.values().to_vec()))
        } else {
            bail!("unsupported tensor element type {}", values.data_type());
        };
        Ok(gpu.upload_tensor(&tensor)?)
    }

    /// Raw rows decoded on the host, their spec run on the device, stacked there.
    fn device_transform(&self, gpu: &Arc<GpuBackend>, batch: &RecordBatch) -> Result<GpuTensor> {
        let (pipeline, _) = self.raw.as_ref().expect("raw entry");
        let content = batch
            .column_by_name("content")
            .context("raw shard without `content`")?;
        let content = content
            .as_any()
            .downcast_ref::<BinaryArray>()
            .context("content")?;
        let paths = batch
            .column_by_name("path")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
            .context("path")?;
        let n = batch.num_rows();
        let chunk = n.div_ceil(self.config.threads.clamp(1, n.max(1))).max(1);
        let parts: Vec<GpuTensor> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|from| {
                    let (content, paths) = (content, &paths);
                    scope.spawn(move || -> Result<Vec<GpuTensor>> {
                        (from..(from + chunk).min(n))
                            .map(|i| {
                                let (tensor, key) = pipeline
                                    .decode(content.value(i))
                                    .with_context(|| paths.value(i).to_owned())?;
                                let plan = pipeline.plan(key)?;
                                gpu.execute_resident(&plan, tensor)
                                    .with_context(|| paths.value(i).to_owned())
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("device transform thread panicked"))
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        Ok(gpu.stack(&parts)?)
    }

    fn make_batch(&mut self, rows: &[u64]) -> Result<(RecordBatch, Option<GpuTensor>)> {
        let gathered = self.gather(rows)?;
        let (batch, device) = match self.config.gpu.clone() {
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
                        schema.index_of(n).with_context(|| {
                            format!(
                                "no column `{n}` (have {:?})",
                                schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                batch.project(&picked)?
            }
        };
        Ok((batch, device))
    }

    fn run(&mut self, start: LoaderState, mut send: impl FnMut(Result<Batch>) -> bool) {
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
                    return;
                }
                position = end;
            }
            epoch += 1;
            position = 0;
        }
    }
}
