//! `kiln score`: a model over every row of a cache entry, in-process (ONNX, loaded once and
//! run by a pool of workers) or through a model server (Open Inference Protocol v2), written
//! as Parquet shards beside the row's identity, resumable and idempotent.
//!
//! The flow: [`input`] reads the entry in storage order on its own thread and cuts batches;
//! an [`engine::Scorer`] scores them with bounded parallelism, results in input order;
//! [`output`] assembles each output shard (a fixed range of rows) once all its batches are
//! back, writes it atomically and journals it, then writes the manifest at the end.

pub mod endpoint;
pub mod engine;
pub mod input;
pub mod model;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod output;
pub mod retry;
pub mod tract;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cache::{read_manifest, sha256_file, MANIFEST as ENTRY_MANIFEST};
use crate::convert::{convert, ConvertOptions};
use crate::error::{Error, Result};
use crate::fsio::write_atomic;
use crate::journal::Journal;
use crate::shards::{EntryReader, Layout};
use crate::transform::SpecFile;
use engine::{BatchResult, LocalScorer, Scorer};
use input::{ReaderConfig, ShardWork, WorkItem};
use model::{InputType, OutputSpec};
use output::{ColumnValues, Plan, RowFailure, ScoreManifest, ShardRecord};

pub use endpoint::EndpointOptions;
pub use retry::Backoff;

/// Limits past which a value is a mistake.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
pub const MAX_WORKERS: usize = 1024;
pub const MAX_CONCURRENCY: usize = 1024;
/// Rows per output shard, rounded up to a whole number of batches: small enough that a
/// killed run loses little work, large enough that millions of rows are not millions of files.
pub const DEFAULT_SHARD_ROWS: usize = 8192;

/// The in-process engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// tract, pure Rust (the default).
    Tract,
    /// ONNX Runtime from this `libonnxruntime.so` (default `$ORT_DYLIB_PATH`); needs kiln built
    /// with the `onnxruntime` feature.
    OnnxRuntime { library: Option<PathBuf> },
}

#[derive(Debug, Clone)]
pub enum ModelSource {
    Onnx { path: PathBuf, engine: Engine },
    Endpoint(EndpointOptions),
}

#[derive(Debug)]
pub struct ScoreOptions {
    /// A cache entry directory, or a source for `kiln convert` (then `spec` is needed).
    pub input: String,
    pub spec: Option<SpecFile>,
    /// The cache a source is converted into.
    pub cache: PathBuf,
    pub model: ModelSource,
    /// The model input to feed (models and endpoints with several).
    pub input_name: Option<String>,
    pub output: PathBuf,
    pub batch_size: usize,
    /// In-process engines: model workers (each single-threaded).
    pub workers: usize,
    /// Rows per output shard (rounded up to whole batches) for a new output.
    pub shard_rows: usize,
    pub progress: bool,
    /// Live counters (`done`/`total` in rows) and the cancel switch, for the daemon.
    pub monitor: Option<Arc<crate::convert::ConvertMonitor>>,
}

impl ScoreOptions {
    /// `kiln score`'s defaults: batches of 64, one worker per core, 8 requests in flight,
    /// 5 retries, 30 s per request.
    pub fn new(input: impl Into<String>, model: ModelSource, output: impl Into<PathBuf>) -> Self {
        ScoreOptions {
            input: input.into(),
            spec: None,
            cache: crate::cache::default_dir(),
            model,
            input_name: None,
            output: output.into(),
            batch_size: 64,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard_rows: DEFAULT_SHARD_ROWS,
            progress: true,
            monitor: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub output: PathBuf,
    /// Rows in the output (all the input's rows once every shard is written).
    pub rows: u64,
    /// Rows scored by this run.
    pub scored: u64,
    /// Rows whose batch failed (after the retries), over the whole output.
    pub failed: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    /// The cache entry that was scored.
    pub input_entry: PathBuf,
    /// Every failed row with its error (also in the manifest).
    pub failures: Vec<RowFailure>,
}

fn check_range(name: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::invalid(name, format!("{value} is not in 1..={max}")));
    }
    Ok(())
}

/// The cache entry to score: INPUT itself, or INPUT converted with the spec (cached as usual).
fn resolve_input(opts: &ScoreOptions) -> Result<PathBuf> {
    let as_dir = Path::new(&opts.input);
    if as_dir.join(ENTRY_MANIFEST).is_file() {
        if opts.spec.is_some() {
            return Err(Error::invalid(
                "--spec",
                format!("{} is already a cache entry; it needs no spec", as_dir.display()),
            ));
        }
        return Ok(as_dir.to_owned());
    }
    let Some(spec) = &opts.spec else {
        return Err(Error::invalid(
            "input",
            format!(
                "{} is not a cache entry (no {ENTRY_MANIFEST}); give --spec to convert it first",
                opts.input
            ),
        ));
    };
    let mut convert_options = ConvertOptions::new(opts.input.clone(), spec.clone(), opts.cache.clone());
    convert_options.progress = opts.progress;
    let report = convert(&convert_options)?;
    Ok(report.entry)
}

fn open_scorer(opts: &ScoreOptions, runtime: &tokio::runtime::Runtime) -> Result<Arc<dyn Scorer>> {
    open_model(&opts.model, opts.input_name.as_deref(), opts.workers, runtime)
}

/// Loads a model (or connects to an endpoint, waiting for it to be ready) once, for scoring
/// batches with [`Scorer::score`] on `runtime`.
pub fn open_model(
    model: &ModelSource,
    input_name: Option<&str>,
    workers: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<dyn Scorer>> {
    check_range("--workers", workers, MAX_WORKERS)?;
    match model {
        ModelSource::Onnx { path, engine } => {
            if !path.is_file() {
                return Err(Error::invalid(
                    "--model",
                    format!("{} is not a file", path.display()),
                ));
            }
            // The model's bytes, not its name: a renamed file is the same model.
            let identity = serde_json::json!({ "sha256": sha256_file(path)? });
            match engine {
                Engine::Tract => {
                    let model = tract::TractModel::load(path, input_name)?;
                    Ok(Arc::new(LocalScorer::new(model, identity, workers)?))
                }
                #[cfg(feature = "onnxruntime")]
                Engine::OnnxRuntime { library } => {
                    let model = onnxruntime::OrtModel::load(path, library.as_deref(), input_name)?;
                    Ok(Arc::new(LocalScorer::new(model, identity, workers)?))
                }
                #[cfg(not(feature = "onnxruntime"))]
                Engine::OnnxRuntime { .. } => Err(Error::invalid(
                    "--engine",
                    "onnxruntime: this kiln was built without the `onnxruntime` feature \
                     (cargo build --features onnxruntime); the default engine is tract",
                )),
            }
        }
        ModelSource::Endpoint(endpoint) => {
            check_range("--concurrency", endpoint.concurrency, MAX_CONCURRENCY)?;
            let mut endpoint = endpoint.clone();
            if endpoint.input_name.is_none() {
                endpoint.input_name = input_name.map(str::to_owned);
            }
            if let Some(rps) = endpoint.max_rps {
                if !(rps.is_finite() && rps > 0.0) {
                    return Err(Error::invalid(
                        "--max-rps",
                        format!("{rps} is not a positive rate"),
                    ));
                }
            }
            Ok(Arc::new(runtime.block_on(endpoint::Endpoint::connect(endpoint))?))
        }
    }
}

/// Scores the input; see the module docs. Rows whose batch failed are in the report (and the
/// manifest) with their errors: the caller decides what a failure means (the CLI exits 1).
pub fn score(opts: &ScoreOptions) -> Result<ScoreReport> {
    check_range("--batch-size", opts.batch_size, MAX_BATCH_SIZE)?;
    check_range("--workers", opts.workers, MAX_WORKERS)?;
    check_range("--shard-rows", opts.shard_rows, usize::MAX)?;
    let started = Instant::now();
    let entry_dir = resolve_input(opts)?;
    let entry = EntryReader::open(&entry_dir)?;
    let delivered = crate::loader::delivered_tensor(&entry)?;
    let input_rows = entry.rows();
    let input_key = read_manifest(&entry_dir)?.key;
    // The input's row columns, as every batch carries them.
    let row_schema = Arc::new(crate::shards::schema(&Layout::Raw).project(&[0, 1, 2, 3])?);
    drop(entry);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting", "the scoring runtime", e))?;
    let scorer = open_scorer(opts, &runtime)?;
    let info = scorer.info().clone();
    if delivered.dtype == crate::cache::DType::Float32 && info.input.input_type == InputType::Uint8 {
        return Err(Error::invalid(
            "model input",
            format!(
                "{:?} is uint8 but the input's tensors are float32",
                info.input.name
            ),
        ));
    }
    let input_shape = match &delivered.shape {
        Some(shape) => Some(info.row_shape_for(shape)?),
        None => None,
    };
    let batch_size = match info.fixed_batch() {
        Some(fixed) if fixed != opts.batch_size => {
            return Err(Error::invalid(
                "--batch-size",
                format!(
                    "{}: model input {:?} has a fixed batch of {fixed}; use --batch-size {fixed}",
                    opts.batch_size, info.input.name
                ),
            ))
        }
        _ => opts.batch_size,
    };

    let out = &opts.output;
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let rows_per_shard = opts.shard_rows.div_ceil(batch_size).saturating_mul(batch_size) as u64;
    let mut plan = Plan {
        format: output::FORMAT.to_owned(),
        input_key,
        input_rows,
        model: scorer.identity(),
        input_name: info.input.name.clone(),
        rows_per_shard,
    };
    let mut records = output::load_progress(out, &mut plan)?;
    let rows_per_shard = plan.rows_per_shard;
    let shard_count = input_rows.div_ceil(rows_per_shard);
    let work: Vec<ShardWork> = (0..shard_count)
        .filter_map(|shard| {
            let rows = shard * rows_per_shard..((shard + 1) * rows_per_shard).min(input_rows);
            match records.get(&shard) {
                Some(r) if r.failures.is_empty() => None,
                Some(r) if r.file.is_some() => Some(ShardWork {
                    shard,
                    rows,
                    only: Some(r.failures.iter().map(|f| f.position).collect()),
                }),
                _ => Some(ShardWork {
                    shard,
                    rows,
                    only: None,
                }),
            }
        })
        .collect();
    let manifest_path = out.join(output::MANIFEST);
    if work.is_empty() && manifest_path.is_file() {
        // The same scoring, already complete: nothing is rewritten.
        let manifest = output::read_manifest(out)?;
        return Ok(report(out, &entry_dir, &manifest, 0, started));
    }

    let mut journal = Journal::start(&out.join(output::JOURNAL), &plan, records.values())?;
    if manifest_path.exists() {
        // Rows are about to change: until the new manifest, the journal describes the output.
        std::fs::remove_file(&manifest_path).map_err(|e| Error::io("removing", &manifest_path, e))?;
    }
    let to_score: u64 = work.iter().map(ShardWork::rows_to_score).sum();
    let bar = progress_bar(to_score, opts.progress);
    let monitor = opts.monitor.clone();
    if let Some(m) = &monitor {
        use std::sync::atomic::Ordering::Relaxed;
        m.total.store(input_rows, Relaxed);
        m.done.store(input_rows - to_score, Relaxed);
        m.resumed.store(input_rows - to_score, Relaxed);
    }
    let mut assembly = Assembly {
        dir: out.clone(),
        schema_rows: row_schema,
        outputs: info.outputs.clone(),
        pending: BTreeMap::new(),
        work: work.iter().map(|w| (w.shard, w.clone())).collect(),
    };
    let reader = ReaderConfig {
        entry: entry_dir.clone(),
        stored: delivered.dtype,
        fixed_shape: delivered.shape.clone(),
        batch_size,
        info: info.clone(),
        threads: opts.workers,
    };
    let parallelism = scorer.parallelism();
    let scored = runtime.block_on(async {
        let (send, receive) = tokio::sync::mpsc::channel::<Result<WorkItem>>(parallelism + 2);
        let work_for_reader = work.clone();
        let reader_thread = std::thread::Builder::new()
            .name("kiln-score-reader".into())
            .spawn(move || input::read(reader, work_for_reader, send))
            .map_err(|e| Error::io("starting", "the scoring reader", e))?;
        let items = futures::stream::unfold(receive, |mut r| async { r.recv().await.map(|i| (i, r)) });
        let results = items
            .map(|item| {
                let scorer = scorer.clone();
                async move {
                    let mut item = item?;
                    // The tensor moves to the engine (no copy); the item keeps the row columns.
                    let input = std::mem::replace(&mut item.input, Err(String::new()));
                    let result: BatchResult = match input {
                        Ok(batch) => tokio::spawn(scorer.score(batch))
                            .await
                            .unwrap_or_else(|e| Err(format!("scoring task failed: {e}"))),
                        Err(e) => Err(e),
                    };
                    Ok::<_, Error>((item, result))
                }
            })
            .buffered(parallelism);
        // Boxed, not pinned on the stack, so it can be dropped before the reader is joined:
        // dropping it drops the receiver, which unblocks a reader waiting to send.
        let mut results = Box::pin(results);
        let mut scored = 0u64;
        let mut outcome = Ok(());
        while let Some(next) = results.next().await {
            let (item, result) = match next {
                Ok(pair) => pair,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            let rows = item.rows.num_rows() as u64;
            if result.is_ok() {
                scored += rows;
            }
            bar.inc(rows);
            if let Some(m) = &monitor {
                use std::sync::atomic::Ordering::Relaxed;
                m.done.fetch_add(rows, Relaxed);
                if result.is_ok() {
                    m.rows.fetch_add(rows, Relaxed);
                } else {
                    m.failed.fetch_add(rows, Relaxed);
                }
                if m.cancelled() {
                    // Between batches: finished shards are journaled, this one is not written.
                    outcome = Err(Error::Cancelled);
                    break;
                }
            }
            if let Err(e) = assembly.add(item, result, &mut records, &mut journal) {
                outcome = Err(e);
                break;
            }
        }
        drop(results);
        let _ = reader_thread.join();
        outcome.map(|()| scored)
    })?;
    bar.finish_and_clear();

    let shards: Vec<ShardRecord> = records.into_values().collect();
    let failures: Vec<RowFailure> = shards.iter().flat_map(|s| s.failures.clone()).collect();
    let manifest = ScoreManifest {
        plan,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        input_entry: entry_dir.display().to_string(),
        model_location: match &opts.model {
            ModelSource::Onnx { path, .. } => path.display().to_string(),
            ModelSource::Endpoint(e) => e.url.clone(),
        },
        served_version: scorer.served_version(),
        input_shape,
        outputs: assembly.outputs.clone(),
        rows: shards.iter().filter(|s| s.file.is_some()).map(|s| s.rows).sum(),
        failed: failures.len() as u64,
        shards,
        failures,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
    write_atomic(&manifest_path, &text)?;
    journal.finish()?;
    Ok(report(out, &entry_dir, &manifest, scored, started))
}

fn report(out: &Path, entry: &Path, manifest: &ScoreManifest, scored: u64, started: Instant) -> ScoreReport {
    let seconds = started.elapsed().as_secs_f64();
    ScoreReport {
        output: out.to_owned(),
        rows: manifest.rows,
        scored,
        failed: manifest.failed,
        seconds,
        rows_per_s: if seconds > 0.0 {
            scored as f64 / seconds
        } else {
            0.0
        },
        input_entry: entry.to_owned(),
        failures: manifest.failures.clone(),
    }
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("scoring {bar:40} {pos}/{len} rows {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    bar
}

/// Shards being assembled from their scored batches.
struct Assembly {
    dir: PathBuf,
    schema_rows: arrow::datatypes::SchemaRef,
    /// The outputs, their row shapes learned from the first answer when the model leaves them open.
    outputs: Vec<OutputSpec>,
    pending: BTreeMap<u64, Vec<(WorkItem, BatchResult)>>,
    work: BTreeMap<u64, ShardWork>,
}

impl Assembly {
    fn add(
        &mut self,
        item: WorkItem,
        mut result: BatchResult,
        records: &mut BTreeMap<u64, ShardRecord>,
        journal: &mut Journal,
    ) -> Result<()> {
        if let Ok(outputs) = &mut result {
            let rows = item.rows.num_rows();
            for output in outputs.iter_mut() {
                output.truncate_rows(rows);
            }
            if let Err(e) = self.learn_shapes(outputs) {
                result = Err(e);
            }
        }
        let shard = item.shard;
        let pieces = self.pending.entry(shard).or_default();
        pieces.push((item, result));
        let work = &self.work[&shard];
        let done: u64 = pieces.iter().map(|(i, _)| i.rows.num_rows() as u64).sum();
        if done < work.rows_to_score() {
            return Ok(());
        }
        let pieces = self.pending.remove(&shard).unwrap_or_default();
        let earlier = records.get(&shard).cloned();
        let record = self.finish_shard(work.clone(), pieces, earlier)?;
        journal.append(&record)?;
        records.insert(shard, record);
        Ok(())
    }

    /// Output shapes must agree with the model's (or the first answer's); a batch whose do
    /// not is a failed batch.
    fn learn_shapes(&mut self, outputs: &[model::OutputTensor]) -> std::result::Result<(), String> {
        for (spec, output) in self.outputs.iter_mut().zip(outputs) {
            match &spec.row_shape {
                Some(shape) if shape != &output.row_shape => {
                    return Err(format!(
                        "output {:?} has rows of shape {:?}, not {shape:?}",
                        spec.name, output.row_shape
                    ))
                }
                Some(_) => {}
                None => spec.row_shape = Some(output.row_shape.clone()),
            }
        }
        Ok(())
    }

    fn finish_shard(
        &self,
        work: ShardWork,
        pieces: Vec<(WorkItem, BatchResult)>,
        earlier: Option<ShardRecord>,
    ) -> Result<ShardRecord> {
        let name = output::shard_name(work.shard);
        let path = self.dir.join(&name);
        let base: Option<RecordBatch> = match (&work.only, &earlier) {
            (Some(_), Some(ShardRecord { file: Some(_), .. })) => Some(output::read_shard(&path)?),
            _ => None,
        };
        let shard_rows = (work.rows.end - work.rows.start) as usize;
        // Each row's source: a piece of this run (index, row within it) or the earlier shard.
        let mut from_piece: Vec<Option<(usize, usize)>> = vec![None; shard_rows];
        for (index, (item, _)) in pieces.iter().enumerate() {
            let first = (item.start - work.rows.start) as usize;
            for r in 0..item.rows.num_rows() {
                from_piece[first + r] = Some((index, r));
            }
        }
        let row_columns = match &base {
            Some(base) => base.project(&(0..output::ROW_COLUMNS.len()).collect::<Vec<_>>())?,
            None => {
                let batches: Vec<RecordBatch> = pieces.iter().map(|(i, _)| i.rows.clone()).collect();
                arrow::compute::concat_batches(&self.schema_rows, &batches)?
            }
        };
        let mut errors: Vec<Option<String>> = vec![None; shard_rows];
        let mut failures = Vec::new();
        for (i, source) in from_piece.iter().enumerate() {
            let error = match source {
                Some((p, _)) => pieces[*p].1.as_ref().err().cloned(),
                None => base.as_ref().and_then(|b| earlier_error(b, i)),
            };
            if let Some(error) = error {
                let (row_id, path) = output::row_identity(&row_columns, i);
                failures.push(RowFailure {
                    position: work.rows.start + i as u64,
                    row_id,
                    path,
                    error: error.clone(),
                });
                errors[i] = Some(error);
            }
        }
        let shapes: Option<Vec<Vec<usize>>> = self.outputs.iter().map(|o| o.row_shape.clone()).collect();
        let Some(shapes) = shapes else {
            // Nothing has scored yet, so the columns' widths are unknown: no file, every row
            // recorded as failed, and the next run scores the shard again.
            return Ok(ShardRecord {
                shard: work.shard,
                file: None,
                rows: shard_rows as u64,
                bytes: 0,
                sha256: String::new(),
                failures,
            });
        };
        let columns: Vec<output::OutputColumn> = self
            .outputs
            .iter()
            .zip(&shapes)
            .map(|(o, shape)| output::OutputColumn {
                name: o.name.clone(),
                shape: shape.clone(),
            })
            .collect();
        let schema = output::schema(&self.schema_rows, &columns)?;
        let mut values: Vec<ColumnValues> = columns.iter().map(|_| ColumnValues::default()).collect();
        for (i, source) in from_piece.iter().enumerate() {
            for (c, column) in columns.iter().enumerate() {
                let width: usize = column.shape.iter().product();
                let row: Option<Vec<f32>> = match source {
                    Some((p, r)) => pieces[*p]
                        .1
                        .as_ref()
                        .ok()
                        .map(|outs| outs[c].values[r * width..(r + 1) * width].to_vec()),
                    None => base
                        .as_ref()
                        .and_then(|b| output::earlier_output(b, &column.name, i)),
                };
                let target = &mut values[c];
                match row {
                    Some(row) if row.len() == width => {
                        target.values.extend_from_slice(&row);
                        target.valid.push(true);
                    }
                    _ => {
                        target.values.resize(target.values.len() + width, 0.0);
                        target.valid.push(false);
                    }
                }
            }
        }
        let batch = output::shard_batch(&schema, &row_columns, values, errors)?;
        let (bytes, sha256) = output::write_shard(&path, &batch)?;
        Ok(ShardRecord {
            shard: work.shard,
            file: Some(name),
            rows: shard_rows as u64,
            bytes,
            sha256,
            failures,
        })
    }
}

fn earlier_error(batch: &RecordBatch, i: usize) -> Option<String> {
    use arrow::array::{Array, StringArray};
    let errors = batch
        .column_by_name("error")?
        .as_any()
        .downcast_ref::<StringArray>()?;
    (!errors.is_null(i)).then(|| errors.value(i).to_owned())
}
