//! The second stage: fetch and transform items in parallel (in listing order) and write them
//! as shards. One bad item is a failure of that item alone, whatever it does (a decode error,
//! a panic in a kernel); the job ends early only with `--on-error fail`.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_core::{Backend, Pipeline};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::journal::{self, JournalRecord};
use super::plan::Job;
use super::{ConvertOptions, OnError};
use crate::cache::{Failure, Materialize, ShardInfo};
use crate::error::{Error, Result};
use crate::shards::{EncodedRowGroup, Layout, Payload, Row, ShardOptions, ShardWriter};

/// What one pass wrote.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub shards: Vec<ShardInfo>,
    pub failed: Vec<Failure>,
    pub rows: u64,
    /// Rows taken from an earlier entry.
    pub reused: u64,
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} converting [{bar:30}] {pos}/{len} items {per_sec} eta {eta} {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar
}

/// Fault injection for the resume tests: `KILN_CRASH_AFTER_SHARDS=N` aborts the process (no
/// cleanup, like `kill -9`) right after the Nth shard of a run is committed.
fn crash_for_tests(shards_this_run: usize) {
    let limit = std::env::var("KILN_CRASH_AFTER_SHARDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if limit.is_some_and(|n| shards_this_run >= n) {
        eprintln!("KILN_CRASH_AFTER_SHARDS: aborting");
        std::process::abort();
    }
}

/// Fetched bytes of the items in `indices` (ascending listing positions), in that order.
fn contents(
    opts: &ConvertOptions,
    job: &Arc<Job>,
    indices: Vec<u64>,
) -> futures::stream::BoxStream<'static, (u64, Result<Bytes>)> {
    let parallel = opts.workers * 2;
    match &opts.table {
        None => {
            let job = job.clone();
            futures::stream::iter(indices)
                .map(move |index| {
                    let job = job.clone();
                    async move { (index, job.source.fetch(&job.items[index as usize]).await) }
                })
                .buffered(parallel)
                .boxed()
        }
        Some(columns) => {
            let first = indices.first().copied().unwrap_or(0);
            let wanted: HashSet<u64> = indices.into_iter().collect();
            // The table's rows come in order from `first`; keep the wanted ones.
            crate::items::table::contents(job.source.clone(), job.items.clone(), columns.clone(), first)
                .filter(move |(i, _)| futures::future::ready(wanted.contains(i)))
                .boxed()
        }
    }
}

/// A transformed item and what the decoder warned about (Pillow's decompression-bomb warning).
type Transformed = (Payload, Vec<kiln_core::Warning>);

/// Limits CPU work (transforms and row-group encoding) to `workers` threads at a time, so
/// `--workers` is the number of cores a conversion uses, whatever stage is busy.
type CpuSlots = Arc<Semaphore>;

/// Runs `work` on a blocking thread once a CPU slot is free.
async fn on_cpu<T: Send + 'static>(
    slots: &CpuSlots,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, tokio::task::JoinError> {
    let _slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    tokio::task::spawn_blocking(work).await
}

/// Items handed to a CPU slot at once: amortizes the thread hand-offs, which cost as much as
/// transforming a short clip (measured: 1 s log-mel clips scaled 1.25x from 1 to 2 workers one
/// item per task).
const ITEMS_PER_TASK: usize = 4;

/// Transforms one item's bytes (on the calling thread); a panic is that item's failure.
fn transform_item(
    pipeline: &Pipeline,
    backend: &kiln_gpu::AnyBackend,
    materialize: Materialize,
    bytes: Bytes,
) -> Result<Transformed, String> {
    let run = || -> Result<Transformed, kiln_core::Error> {
        Ok(match materialize {
            Materialize::Tensor => {
                let (tensor, warnings) = pipeline.run_with_warnings(backend as &dyn Backend, &bytes)?;
                (Payload::Tensor(tensor), warnings)
            }
            // Raw rows are still decoded once, so corrupt files are caught now. (Table entries
            // are never converted: check_options refuses them.)
            Materialize::Raw | Materialize::Table => {
                let warnings = pipeline.decode_with_warnings(&bytes)?.warnings;
                (Payload::Raw(bytes.clone()), warnings)
            }
        })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(payload) => Err(Error::panicked("the transform", payload).to_string()),
    }
}

/// A shard being written: rows gather into row groups, each encoded on a CPU slot while the
/// next fills, and appended to the file in order.
struct OpenShard {
    writer: ShardWriter,
    row_group_rows: usize,
    group: Vec<Row>,
    encoding: VecDeque<JoinHandle<Result<EncodedRowGroup>>>,
    /// Payload bytes of every row pushed, encoded or not.
    payload_bytes: u64,
}

impl OpenShard {
    /// Adds a row; a full row group goes to be encoded. At most `depth` row groups are
    /// encoding at once (memory stays bounded by that many row groups).
    async fn push(&mut self, row: Row, slots: &CpuSlots, depth: usize) -> Result<()> {
        self.payload_bytes += row.payload_bytes() as u64;
        self.group.push(row);
        if self.group.len() >= self.row_group_rows {
            self.encode_group(slots);
            self.append_encoded(depth).await?;
        }
        Ok(())
    }

    fn encode_group(&mut self, slots: &CpuSlots) {
        if self.group.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.group);
        let encoder = self.writer.encoder();
        let slots = slots.clone();
        self.encoding.push_back(tokio::spawn(async move {
            on_cpu(&slots, move || encoder.encode(&rows))
                .await
                .unwrap_or_else(|e| Err(join_error("encoding a row group", e)))
        }));
    }

    /// Appends encoded row groups, oldest first, until at most `depth` are still encoding.
    async fn append_encoded(&mut self, depth: usize) -> Result<()> {
        while self.encoding.len() > depth {
            let next = self.encoding.pop_front().expect("non-empty");
            let encoded = next
                .await
                .unwrap_or_else(|e| Err(join_error("encoding a row group", e)))?;
            self.writer.append(encoded)?;
        }
        Ok(())
    }

    async fn finish(mut self, slots: &CpuSlots, end_item: u64) -> Result<ShardInfo> {
        self.encode_group(slots);
        self.append_encoded(0).await?;
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.finish(end_item))
            .await
            .unwrap_or_else(|e| Err(join_error("finishing a shard", e)))
    }
}

fn join_error(what: &'static str, e: tokio::task::JoinError) -> Error {
    match e.try_into_panic() {
        Ok(payload) => Error::panicked(what, payload),
        Err(e) => Error::Panicked {
            what,
            message: format!("cancelled: {e}"),
        },
    }
}

/// Reads (when local) and decodes one item on a CPU slot (the host half of a GPU conversion).
async fn decode(
    slots: CpuSlots,
    pipeline: Arc<Pipeline>,
    job: Arc<Job>,
    index: u64,
    input: Input,
) -> Result<kiln_core::Decoded, String> {
    let work = move || {
        let bytes = input.read(&job, index).map_err(read_error)?;
        pipeline.decode_with_warnings(&bytes).map_err(|e| e.to_string())
    };
    match on_cpu(&slots, work).await {
        Ok(decoded) => decoded,
        Err(join) => Err(join_error("the decoder", join).to_string()),
    }
}

/// An item's bytes: fetched already (object stores, tables), or a local file that the worker
/// transforming it reads (saving a thread hand-off per file).
enum Input {
    Fetched(Result<Bytes>),
    Local,
}

impl Input {
    fn read(self, job: &Job, index: u64) -> Result<Bytes> {
        match self {
            Input::Fetched(bytes) => bytes,
            Input::Local => job
                .source
                .read_local(&job.items[index as usize])
                .expect("local inputs come from a local source"),
        }
    }
}

/// Every item's input, in listing order.
fn inputs(
    opts: &ConvertOptions,
    job: &Arc<Job>,
    indices: Vec<u64>,
) -> futures::stream::BoxStream<'static, (u64, Input)> {
    if opts.table.is_none() && job.source.is_local() {
        return futures::stream::iter(indices.into_iter().map(|i| (i, Input::Local))).boxed();
    }
    contents(opts, job, indices)
        .map(|(i, bytes)| (i, Input::Fetched(bytes)))
        .boxed()
}

fn read_error(e: Error) -> String {
    match e {
        Error::Fetch { message, .. } => format!("reading: {message}"),
        other => other.to_string(),
    }
}

/// Runs one chunk of decoded items on the GPU, batched by shape (blocking).
fn run_chunk_on_gpu(
    pipeline: &Pipeline,
    gpu: &kiln_gpu::GpuBackend,
    chunk: Vec<(u64, Result<kiln_core::Decoded, String>)>,
) -> Vec<(u64, Result<Transformed, String>)> {
    let mut out: Vec<(u64, Result<Transformed, String>)> = Vec::with_capacity(chunk.len());
    let mut decoded = Vec::new();
    let mut slots = Vec::new();
    for (index, item) in chunk {
        match item {
            Ok(d) => {
                slots.push((out.len(), d.warnings.clone()));
                decoded.push(d);
                out.push((index, Err(String::new())));
            }
            Err(message) => out.push((index, Err(message))),
        }
    }
    let tensors = crate::transform::run_decoded_on_gpu(pipeline, gpu, decoded);
    for ((position, warnings), tensor) in slots.into_iter().zip(tensors) {
        out[position].1 = tensor
            .map(|t| (Payload::Tensor(t), warnings))
            .map_err(|e| e.to_string());
    }
    out
}

/// Items transformed in listing order: on the CPU one by one on CPU slots; on the GPU decoded
/// on CPU slots and run in batches of `gpu_batch`, two batches in flight so the host decodes
/// and stages the next while the device runs this one.
fn transformed<'a>(
    opts: &'a ConvertOptions,
    job: &Arc<Job>,
    indices: Vec<u64>,
    pipeline: Arc<Pipeline>,
    slots: CpuSlots,
) -> futures::stream::BoxStream<'a, (u64, Result<Transformed, String>)> {
    let gpu = match (&opts.backend, opts.materialize) {
        (kiln_gpu::AnyBackend::Gpu(gpu), Materialize::Tensor) => Some(gpu.clone()),
        _ => None,
    };
    let Some(gpu) = gpu else {
        let job = job.clone();
        return inputs(opts, &job, indices)
            .chunks(ITEMS_PER_TASK)
            .map(move |chunk| {
                let (pipeline, backend, materialize) =
                    (pipeline.clone(), opts.backend.clone(), opts.materialize);
                let (slots, job) = (slots.clone(), job.clone());
                let indices: Vec<u64> = chunk.iter().map(|(i, _)| *i).collect();
                let work = move || -> Vec<(u64, Result<Transformed, String>)> {
                    chunk
                        .into_iter()
                        .map(|(index, input)| {
                            let result = input
                                .read(&job, index)
                                .map_err(read_error)
                                .and_then(|b| transform_item(&pipeline, &backend, materialize, b));
                            (index, result)
                        })
                        .collect()
                };
                // Spawned, so transforms go on while the caller waits on the writer.
                let task = tokio::spawn(async move { on_cpu(&slots, work).await });
                async move {
                    match task.await {
                        Ok(Ok(done)) => done,
                        Ok(Err(e)) | Err(e) => {
                            let message = format!("cancelled: {e}");
                            indices.into_iter().map(|i| (i, Err(message.clone()))).collect()
                        }
                    }
                }
            })
            .buffered(opts.workers + 1)
            .flat_map(futures::stream::iter)
            .boxed();
    };
    let decode_pipeline = pipeline.clone();
    let decode_job = job.clone();
    inputs(opts, job, indices)
        .map(move |(index, input)| {
            let (pipeline, slots, job) = (decode_pipeline.clone(), slots.clone(), decode_job.clone());
            let task = tokio::spawn(async move { decode(slots, pipeline, job, index, input).await });
            async move {
                (
                    index,
                    task.await.unwrap_or_else(|e| Err(format!("cancelled: {e}"))),
                )
            }
        })
        .buffered(opts.workers * 2)
        .chunks(opts.gpu_batch.max(1))
        .map(move |chunk| {
            let indices: Vec<u64> = chunk.iter().map(|(i, _)| *i).collect();
            let (pipeline, gpu) = (pipeline.clone(), gpu.clone());
            let task = tokio::task::spawn_blocking(move || run_chunk_on_gpu(&pipeline, &gpu, chunk));
            async move {
                task.await.unwrap_or_else(|e| {
                    let message = join_error("the GPU batch", e).to_string();
                    indices.into_iter().map(|i| (i, Err(message.clone()))).collect()
                })
            }
        })
        .buffered(2)
        .flat_map(futures::stream::iter)
        .boxed()
}

/// Converts the items at `indices` into shards numbered from `first_shard`; with `journal`,
/// each finished shard is recorded for resuming.
pub(super) async fn write_items(
    opts: &ConvertOptions,
    job: &Arc<Job>,
    entry: &Path,
    indices: Vec<u64>,
    first_shard: usize,
    journal: bool,
) -> Result<Written> {
    let bar = progress_bar(indices.len() as u64, opts.progress);
    let pipeline = Arc::new(Pipeline::new(opts.spec.spec.clone()));
    let fixed_shape = match &job.layout {
        Layout::Tensor(info) => info.shape.clone(),
        Layout::Raw | Layout::Table => None,
    };
    let slots: CpuSlots = Arc::new(Semaphore::new(opts.workers));
    // Rows of unchanged files from an earlier entry; the rest are read and transformed.
    let mut reuse = None;
    for earlier in &opts.reuse {
        if let Some(found) = super::reuse::Reuse::open(earlier, opts, job)? {
            reuse = Some(found);
            break;
        }
    }
    let (reused, work): (Vec<u64>, Vec<u64>) = indices
        .iter()
        .partition(|&&i| reuse.as_ref().is_some_and(|r| r.has(i)));
    // Ascending, like the transformed stream (listing order): the two are merged by index.
    let mut reused: VecDeque<u64> = reused.into_iter().collect();
    let results = transformed(opts, job, work, pipeline, slots.clone());
    futures::pin_mut!(results);
    let shard_options = ShardOptions {
        row_group_rows: 0,
        zstd: opts.zstd,
        tensor_encoding: opts.resolved_tensor_encoding(),
    };
    let mut written = Written::default();
    let mut shard: Option<OpenShard> = None;
    let mut failed_since_shard: Vec<Failure> = Vec::new();
    let mut last_item = 0;
    let monitor = opts.monitor.as_deref();
    let mut next_work = results.next().await;
    loop {
        let take_reused = match (reused.front(), &next_work) {
            (Some(r), Some((w, _))) => r < w,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let (index, payload) = if take_reused {
            let next = reused.pop_front().expect("checked above");
            let reuse = reuse.as_mut().expect("reused rows come from an earlier entry");
            let payload = reuse.payload(next)?;
            written.reused += 1;
            if let Some(m) = monitor {
                m.reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (next, Ok((payload, Vec::new())))
        } else {
            match next_work.take() {
                Some(item) => {
                    next_work = results.next().await;
                    item
                }
                None => break,
            }
        };
        if monitor.is_some_and(|m| m.cancelled()) {
            // The open shard is dropped uncommitted (its temporary removed); the journal
            // holds every finished one, so the next run resumes from there.
            return Err(Error::Cancelled);
        }
        last_item = index + 1;
        bar.inc(1);
        if let Some(m) = monitor {
            m.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Files have a listed size; a table row's bytes are part of its table file's.
            if let Some(item) = job.items.get(index as usize).filter(|_| opts.table.is_none()) {
                m.bytes_read
                    .fetch_add(item.size, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let path = job.units[index as usize].clone();
        let payload = payload.map(|(payload, warnings)| {
            for warning in warnings {
                bar.println(format!("warning: {path}: {warning}"));
            }
            payload
        });
        let payload = payload.and_then(|p| match (&p, &fixed_shape) {
            (Payload::Tensor(t), Some(shape)) if &t.shape != shape => Err(format!(
                "output shape {:?} differs from the entry's {shape:?}",
                t.shape
            )),
            _ => Ok(p),
        });
        let payload = match payload {
            Ok(payload) => payload,
            Err(message) => {
                if opts.on_error == OnError::Fail {
                    return Err(Error::ItemFailed { path, message });
                }
                bar.println(format!("skipping {path}: {message}"));
                if let Some(m) = monitor {
                    m.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                failed_since_shard.push(Failure { path, error: message });
                continue;
            }
        };
        let label = job.labels[index as usize].clone();
        let label_index = label
            .as_ref()
            .and_then(|l| job.names.binary_search(l).ok())
            .map(|i| i as i32);
        let row = Row {
            row_id: index,
            path,
            label,
            label_index,
            payload,
        };
        if shard.is_none() {
            let row_group_rows = opts
                .row_group_rows
                .unwrap_or_else(|| (opts.row_group_bytes as usize / row.payload_bytes().max(1)).max(1));
            let number = first_shard + written.shards.len();
            let file = entry.join(format!("part-{number:05}.parquet"));
            let options = ShardOptions {
                row_group_rows,
                ..shard_options
            };
            shard = Some(OpenShard {
                writer: ShardWriter::create(&file, &job.layout, options, index)?,
                row_group_rows,
                group: Vec::new(),
                encoding: VecDeque::new(),
                payload_bytes: 0,
            });
        }
        let open = shard.as_mut().expect("shard opened above");
        open.push(row, &slots, opts.workers).await?;
        written.rows += 1;
        if let Some(m) = monitor {
            m.rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if open.payload_bytes >= opts.shard_bytes {
            let info = shard.take().expect("shard").finish(&slots, last_item).await?;
            if journal {
                journal::append(
                    entry,
                    &JournalRecord {
                        shard: Some(info.clone()),
                        failed: failed_since_shard.clone(),
                        end_item: last_item,
                    },
                )?;
            }
            written.shards.push(info);
            written.failed.append(&mut failed_since_shard);
            if journal {
                crash_for_tests(written.shards.len());
            }
        }
    }
    let shard = match shard.take() {
        Some(open) => Some(open.finish(&slots, last_item).await?),
        None => None,
    };
    if journal && (shard.is_some() || !failed_since_shard.is_empty()) {
        journal::append(
            entry,
            &JournalRecord {
                shard: shard.clone(),
                failed: failed_since_shard.clone(),
                end_item: last_item,
            },
        )?;
    }
    written.shards.extend(shard);
    written.failed.append(&mut failed_since_shard);
    bar.finish_and_clear();
    Ok(written)
}
