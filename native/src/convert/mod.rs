//! `kiln convert`: a source listed, transformed in parallel and written as cached Parquet
//! shards, resumable after an interruption.
//!
//! The stages: [`plan`] lists the source and works out each item's label and the entry's key;
//! [`write`] fetches and transforms items and writes shards; this module ties them to the cache
//! (hit, resume, retry of earlier failures) and writes the manifest.

mod journal;
mod plan;
mod reuse;
mod write;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::cache::{
    lock_entry, read_manifest, Failure, Manifest, Materialize, TensorInfo, FORMAT_VERSION, MANIFEST,
};
use crate::error::{Error, Result};
use crate::fsio::write_atomic;
use crate::items::{LabelRule, TableColumns};
use crate::shards::{Layout, TensorEncoding};
use crate::transform::SpecFile;

pub use plan::{DEFAULT_GPU_BATCH, MAX_GPU_BATCH, MAX_WORKERS};

/// What to do with an item that cannot be read or transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Skip the item and report it in the manifest (it is retried by the next run).
    Skip,
    /// Stop the job at the first bad item.
    Fail,
}

/// Everything `kiln convert` takes.
pub struct ConvertOptions {
    pub source: String,
    /// Read the source's `.parquet` files as a table with one item per row.
    pub table: Option<TableColumns>,
    pub include: Vec<String>,
    pub spec: SpecFile,
    pub cache: PathBuf,
    pub labels: LabelRule,
    pub materialize: Materialize,
    /// Target payload bytes per shard (before compression).
    pub shard_bytes: u64,
    /// Rows per Parquet row group; by default sized to about `row_group_bytes`.
    pub row_group_rows: Option<usize>,
    pub row_group_bytes: u64,
    pub zstd: bool,
    pub tensor_encoding: TensorEncoding,
    pub on_error: OnError,
    pub backend: kiln_gpu::AnyBackend,
    /// Parallel reads and transforms, 1..=[`MAX_WORKERS`].
    pub workers: usize,
    /// Items per device batch with the GPU backend, 1..=[`MAX_GPU_BATCH`].
    pub gpu_batch: usize,
    pub progress: bool,
    /// Earlier entries of the same spec whose rows of unchanged files are taken instead of
    /// transforming those files again (the first usable one).
    pub reuse: Vec<PathBuf>,
    /// Live counters and a cancel switch, for a caller watching from another thread (the
    /// daemon's jobs).
    pub monitor: Option<Arc<ConvertMonitor>>,
}

/// A conversion's progress as it runs, and the switch that stops it at a safe point.
#[derive(Debug, Default)]
pub struct ConvertMonitor {
    /// Items (files, or rows of a table source) listed.
    pub total: AtomicU64,
    /// Items done (converted or failed), including those an interrupted run finished.
    pub done: AtomicU64,
    /// Rows written by this run.
    pub rows: AtomicU64,
    /// Bytes of the items this run read (their listed sizes).
    pub bytes_read: AtomicU64,
    /// Items that failed in this run.
    pub failed: AtomicU64,
    /// Items an interrupted run had finished before this one started.
    pub resumed: AtomicU64,
    /// Rows taken from an earlier entry rather than transformed.
    pub reused: AtomicU64,
    cancel: AtomicBool,
}

impl ConvertMonitor {
    /// Asks the conversion to stop before its next item. Finished shards stay journaled and
    /// the shard being written is discarded, so a later run resumes with nothing half-written.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

impl ConvertOptions {
    /// Options as `kiln convert` defaults them: labels from parent directories, tensors,
    /// 64 MiB shards of 1 MiB row groups with zstd, skip bad items, CPU, one worker per core.
    pub fn new(source: impl Into<String>, spec: SpecFile, cache: impl Into<PathBuf>) -> Self {
        ConvertOptions {
            source: source.into(),
            table: None,
            include: Vec::new(),
            spec,
            cache: cache.into(),
            labels: LabelRule::ParentDir,
            materialize: Materialize::Tensor,
            shard_bytes: 64 << 20,
            row_group_rows: None,
            row_group_bytes: 1 << 20,
            zstd: true,
            tensor_encoding: TensorEncoding::Auto,
            on_error: OnError::Skip,
            backend: kiln_gpu::AnyBackend::Cpu(kiln_core::CpuBackend),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gpu_batch: DEFAULT_GPU_BATCH,
            progress: true,
            reuse: Vec::new(),
            monitor: None,
        }
    }

    /// [`TensorEncoding::Auto`] made concrete for this spec (see [`TensorEncoding`] for the
    /// measurements): audio features are continuous values; float images come from 8-bit
    /// pixels (`resize` only takes uint8), so they hold few distinct values.
    pub fn resolved_tensor_encoding(&self) -> TensorEncoding {
        use kiln_core::spec::Op;
        let ops = &self.spec.spec.ops;
        match self.tensor_encoding {
            TensorEncoding::Auto => match ops.first() {
                Some(Op::LoadAudio(_)) => TensorEncoding::ByteStreamSplit,
                _ if ops.iter().any(|op| matches!(op, Op::ToFloat)) => TensorEncoding::Dictionary,
                _ => TensorEncoding::Plain,
            },
            chosen => chosen,
        }
    }
}

impl std::fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("source", &self.source)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct ConvertReport {
    pub entry: PathBuf,
    pub key: String,
    pub rows: u64,
    /// How many files (or table rows) failed; `failures` lists them with their errors.
    pub failed: usize,
    pub failures: Vec<Failure>,
    pub cache_hit: bool,
    /// Items that failed in an earlier run and were tried again by this one.
    pub retried: usize,
    /// Listing position the run started from (non-zero when it resumed an interrupted run).
    pub resumed_from: u64,
    /// Rows taken from an earlier entry (`reuse`) rather than transformed by this run.
    pub reused: u64,
    pub seconds: f64,
    /// What this run sent to the GPU (absent on the CPU backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    /// A batch costs one upload, one submission and one readback.
    pub gpu: Option<kiln_gpu::GpuStats>,
}

/// Converts (or finds in the cache) the source described by `opts`.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport> {
    plan::check_options(opts)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting", "the I/O runtime", e))?;
    runtime.block_on(convert_async(opts))
}

async fn convert_async(opts: &ConvertOptions) -> Result<ConvertReport> {
    let started = Instant::now();
    let layout = match opts.materialize {
        Materialize::Raw => Layout::Raw,
        Materialize::Tensor => Layout::Tensor(TensorInfo::of_spec(&opts.spec.spec)?),
        Materialize::Table => Layout::Table,
    };
    let job = Arc::new(plan::plan(opts, layout).await?);
    let entry = opts.cache.join(&job.key);
    let gpu_before = opts.backend.gpu().map(|g| g.stats());
    let report = |manifest: &Manifest, hit: bool, retried: usize, resumed: u64, reused: u64| ConvertReport {
        entry: entry.clone(),
        key: job.key.clone(),
        rows: manifest.rows,
        failed: manifest.failed.len(),
        failures: manifest.failed.clone(),
        cache_hit: hit,
        retried,
        resumed_from: resumed,
        reused,
        seconds: started.elapsed().as_secs_f64(),
        gpu: opts
            .backend
            .gpu()
            .zip(gpu_before)
            .map(|(g, before)| g.stats().since(before)),
    };
    if let Ok(manifest) = read_manifest(&entry) {
        if job.retryable(&manifest).is_empty() {
            return Ok(report(&manifest, true, 0, 0, 0));
        }
    }
    let _lock = lock_entry(&entry)?;
    // Another process may have finished (or retried) the entry while we waited for the lock.
    if let Ok(mut manifest) = read_manifest(&entry) {
        let retry = job.retryable(&manifest);
        if retry.is_empty() {
            return Ok(report(&manifest, true, 0, 0, 0));
        }
        if let Some(monitor) = &opts.monitor {
            monitor.total.store(job.units.len() as u64, Ordering::Relaxed);
            let before = (job.units.len() - retry.len()) as u64;
            monitor.done.store(before, Ordering::Relaxed);
            monitor.resumed.store(before, Ordering::Relaxed);
        }
        let written =
            write::write_items(opts, &job, &entry, retry.clone(), manifest.shards.len(), false).await?;
        manifest.rows += written.rows;
        manifest.shards.extend(written.shards);
        manifest.failed = job
            .listing_failures
            .iter()
            .cloned()
            .chain(written.failed)
            .collect();
        write_manifest(&entry, &manifest)?;
        reuse::write_items(&entry, opts, &job)?;
        return Ok(report(&manifest, true, retry.len(), 0, written.reused));
    }
    journal::remove_temporaries(&entry)?;
    let resumed = journal::read(&entry);
    let resumed_from = resumed.next_item;
    if let Some(monitor) = &opts.monitor {
        monitor.total.store(job.units.len() as u64, Ordering::Relaxed);
        monitor.done.store(resumed_from, Ordering::Relaxed);
        monitor.resumed.store(resumed_from, Ordering::Relaxed);
    }
    let pending: Vec<u64> = (resumed_from..job.units.len() as u64).collect();
    let written = write::write_items(opts, &job, &entry, pending, resumed.shards.len(), true).await?;
    let rows = resumed.shards.iter().map(|s| s.rows).sum::<u64>() + written.rows;
    let written_reused = written.reused;
    let item_failures: Vec<Failure> = resumed.failed.into_iter().chain(written.failed).collect();
    let failed: Vec<Failure> = job
        .listing_failures
        .iter()
        .cloned()
        .chain(item_failures)
        .collect();
    if rows == 0 {
        // Nothing to cache: the next run starts over rather than finding a cached failure.
        journal::remove(&entry)?;
        return Err(match failed.first() {
            Some(first) => Error::AllFailed {
                source_location: opts.source.clone(),
                failed: failed.len(),
                first: format!("{}: {}", first.path, first.error),
            },
            None => Error::Source {
                location: opts.source.clone(),
                message: "has no items".into(),
            },
        });
    }
    let schema = crate::shards::schema(&job.layout);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        key: job.key.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        source: opts.source.clone(),
        spec: opts.spec.json.clone(),
        kernel_version: kiln_core::KERNEL_VERSION,
        materialize: opts.materialize,
        label_rule: job.label_rule.clone(),
        compression: if opts.zstd { "zstd".into() } else { "none".into() },
        columns: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect(),
        tensor: match &job.layout {
            Layout::Tensor(info) => Some(info.clone()),
            Layout::Raw | Layout::Table => None,
        },
        rows,
        labels: job.names.clone(),
        shards: resumed.shards.into_iter().chain(written.shards).collect(),
        failed,
        listed: job.units.len() as u64,
    };
    // The listing goes first: a complete manifest always has it beside.
    reuse::write_items(&entry, opts, &job)?;
    write_manifest(&entry, &manifest)?;
    Ok(report(&manifest, false, 0, resumed_from, written_reused))
}

fn write_manifest(entry: &std::path::Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).expect("manifests serialise");
    write_atomic(&entry.join(MANIFEST), text.as_bytes())
}

impl plan::Job {
    /// Listing positions of items an earlier run failed on, to try again.
    fn retryable(&self, manifest: &Manifest) -> Vec<u64> {
        let failed: HashSet<&str> = manifest.failed.iter().map(|f| f.path.as_str()).collect();
        (0..self.units.len() as u64)
            .filter(|&i| failed.contains(self.units[i as usize].as_str()))
            .collect()
    }
}
