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
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Every shard is verified against the manifest's SHA-256 before its rows are used, and any
//! failure (a corrupt shard, a bad raw row, a panicking thread) ends the stream with that error.

mod batch;
pub mod order;
mod producer;
mod state;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use kiln_core::Pipeline;
use kiln_gpu::AnyBackend;

pub use batch::Batch;
pub use state::LoaderState;

use crate::cache::{Materialize, TensorInfo};
use crate::error::{Error, Result};
use crate::shards::{EntryReader, Layout};
use producer::Producer;

/// Limits on the loader's knobs: past these a value is a mistake, not a setting.
pub const MAX_BATCH_SIZE: usize = 1 << 24;
pub const MAX_PREFETCH: usize = 1024;
pub const MAX_SHUFFLE_BUFFER: usize = 1 << 26;
pub const MAX_THREADS: usize = 1024;

/// The loader's settings (what the builder collects).
#[derive(Clone, Debug)]
struct LoaderConfig {
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
    backend: AnyBackend,
    device_output: bool,
    owned_batches: bool,
}

#[derive(Clone, Debug)]
pub struct LoaderBuilder {
    entry: PathBuf,
    config: LoaderConfig,
    resume: Option<LoaderState>,
}

/// The stored tensor of an entry's rows as the loader delivers them: as stored (tensor
/// entries) or as the spec gives (raw entries).
pub fn delivered_tensor(entry: &EntryReader) -> Result<TensorInfo> {
    match (entry.manifest.materialize, entry.tensor_info()) {
        (Materialize::Tensor, Some(info)) => Ok(info.clone()),
        (Materialize::Table, _) => Err(Error::entry(
            &entry.dir,
            "is a table entry (a materialized DataFrame): it has no tensor column",
        )),
        _ => TensorInfo::of_spec(&raw_spec(entry)?),
    }
}

fn raw_spec(entry: &EntryReader) -> Result<kiln_core::Spec> {
    kiln_core::Spec::from_value(&entry.manifest.spec).map_err(|source| Error::Spec {
        path: Some(entry.dir.join(crate::cache::MANIFEST)),
        source,
    })
}

fn check_range(name: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::invalid(name, format!("{value} is not in {min}..={max}")));
    }
    Ok(())
}

impl LoaderBuilder {
    /// Default: 32.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }
    /// Output columns (default: all).
    pub fn columns(mut self, columns: Vec<String>) -> Self {
        self.config.columns = Some(columns);
        self
    }
    /// Shuffles row-group order and rows (through the shuffle buffer) with this seed. Default:
    /// no shuffling, storage order.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }
    /// Rows held by the shuffle buffer. Default: 4096.
    pub fn shuffle_buffer(mut self, rows: usize) -> Self {
        self.config.shuffle_buffer = rows;
        self
    }
    /// This worker is `cur_shard` of `shard_count` (default 0 of 1).
    pub fn shard(mut self, cur_shard: u64, shard_count: u64) -> Self {
        self.config.cur_shard = cur_shard;
        self.config.shard_count = shard_count;
        self
    }
    /// `None` (the default, as Petastorm) repeats forever; `Some(n)` stops after n epochs.
    pub fn epochs(mut self, epochs: Option<u64>) -> Self {
        self.config.epochs = epochs;
        self
    }
    /// Drop the last, smaller batch of each epoch. Default: false.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.config.drop_last = yes;
        self
    }
    /// Batches prepared ahead of the consumer (memory is bounded by this). Default: 4.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.config.prefetch = batches;
        self
    }
    /// Threads decoding and transforming raw rows. Default: all cores.
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n;
        self
    }
    /// The backend that runs the spec on raw entries (default: CPU).
    pub fn backend(mut self, backend: AnyBackend) -> Self {
        self.config.backend = backend;
        self
    }
    /// Deliver tensors as device-resident `(batch, ...shape)` tensors on the (GPU) backend:
    /// stored tensors are uploaded, raw rows run the spec there. Needs a fixed tensor shape.
    /// Every batch in buffers of its own, never a view of rows the loader keeps for later
    /// batches: for consumers that hand out writable (zero-copy) arrays, where writing into
    /// a shared buffer would change rows of later batches or epochs. Costs one copy of
    /// storage-order batches, on the loader's thread. Default: false.
    pub fn owned_batches(mut self, yes: bool) -> Self {
        self.config.owned_batches = yes;
        self
    }

    pub fn device_output(mut self, yes: bool) -> Self {
        self.config.device_output = yes;
        self
    }
    /// Continue from a saved state (its seed replaces `shuffle`'s).
    pub fn resume(mut self, state: LoaderState) -> Self {
        self.resume = Some(state);
        self
    }

    pub fn build(self) -> Result<Loader> {
        let c = &self.config;
        check_range("batch size", c.batch_size, 1, MAX_BATCH_SIZE)?;
        check_range("prefetch", c.prefetch, 1, MAX_PREFETCH)?;
        check_range("shuffle buffer", c.shuffle_buffer, 0, MAX_SHUFFLE_BUFFER)?;
        check_range("threads", c.threads, 1, MAX_THREADS)?;
        if c.shard_count == 0 || c.cur_shard >= c.shard_count {
            return Err(Error::invalid(
                "shard",
                format!(
                    "{}/{}: cur_shard must be below shard_count",
                    c.cur_shard, c.shard_count
                ),
            ));
        }
        let entry = EntryReader::open(&self.entry)?;
        let total = entry.rows();
        let per_worker = total / c.shard_count;
        if per_worker == 0 {
            return Err(Error::invalid(
                "shard",
                format!("{total} rows cannot feed {} shards", c.shard_count),
            ));
        }
        let state = self.resume.unwrap_or(LoaderState {
            seed: c.seed,
            epoch: 0,
            position: 0,
        });
        if state.position > per_worker {
            return Err(Error::invalid(
                "resume state",
                format!(
                    "position {} is past this worker's {per_worker} rows",
                    state.position
                ),
            ));
        }
        let raw = match entry.manifest.materialize {
            Materialize::Raw => {
                let spec = raw_spec(&entry)?;
                let layout = Layout::Tensor(TensorInfo::of_spec(&spec)?);
                Some((Arc::new(Pipeline::new(spec)), layout))
            }
            Materialize::Tensor | Materialize::Table => None,
        };
        if c.device_output {
            if c.backend.gpu().is_none() {
                return Err(Error::invalid("device output", "needs the GPU backend"));
            }
            if delivered_tensor(&entry)?.shape.is_none() {
                return Err(Error::invalid(
                    "device output",
                    "GPU batches need a fixed tensor shape; this entry's rows vary in shape",
                ));
            }
        }
        let (sender, receiver) = sync_channel(self.config.prefetch);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let config = self.config.clone();
        let producer = std::thread::Builder::new()
            .name("kiln-loader".into())
            .spawn(move || {
                let mut producer = Producer {
                    entry,
                    config,
                    raw,
                    cache: VecDeque::new(),
                };
                if producer.run(state, |batch| sender.send(batch).is_ok()) {
                    done.store(true, Ordering::SeqCst);
                }
            })
            .map_err(|e| Error::io("starting", "the loader thread", e))?;
        Ok(Loader {
            receiver: Some(receiver),
            state,
            per_worker,
            batch_size: self.config.batch_size,
            drop_last: self.config.drop_last,
            producer: Some(producer),
            finished,
            failed: false,
        })
    }
}

/// Streams batches; see the module docs.
pub struct Loader {
    /// `None` only while dropping.
    receiver: Option<Receiver<Result<Batch>>>,
    state: LoaderState,
    per_worker: u64,
    batch_size: usize,
    drop_last: bool,
    producer: Option<JoinHandle<()>>,
    /// Set by the producer when it delivered every epoch asked for.
    finished: Arc<AtomicBool>,
    /// An error was handed out (the producer stops after sending one).
    failed: bool,
}

impl Drop for Loader {
    /// Stops the producer and waits for it, so the entry (and its reader lock) is released
    /// when the loader is gone.
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
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
            config: LoaderConfig {
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
                backend: AnyBackend::Cpu(kiln_core::CpuBackend),
                device_output: false,
                owned_batches: false,
            },
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
        match self.receiver.as_ref()?.recv() {
            Ok(item) => {
                match &item {
                    Ok(batch) => self.state = batch.state_after,
                    Err(_) => self.failed = true,
                }
                Some(item)
            }
            // The producer is gone: it finished, sent its error already, or panicked.
            Err(_) => {
                let producer = self.producer.take()?;
                match producer.join() {
                    Err(panic) => Some(Err(Error::panicked("the loader thread", panic))),
                    // It finished its epochs, or it stopped after sending its error.
                    Ok(()) => {
                        debug_assert!(self.finished.load(Ordering::SeqCst) || self.failed);
                        None
                    }
                }
            }
        }
    }
}
