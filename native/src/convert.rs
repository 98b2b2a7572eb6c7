//! `kiln convert`: a source listed, transformed in parallel and written as cached Parquet
//! shards, resumable after an interruption.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_core::spec::Op;
use kiln_core::{Backend, DType, Pipeline, Spec};
use serde::{Deserialize, Serialize};

use crate::cache::{
    cache_key, lock_entry, read_manifest, write_atomic, Failure, Manifest, ShardInfo, TensorInfo,
    FORMAT_VERSION, JOURNAL, MANIFEST,
};
use crate::labels::{label_names, LabelRule};
use crate::shard::{Layout, Payload, Row, ShardOptions, ShardWriter};
use crate::source::{Source, SourceItem};
use crate::table::TableColumns;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialize {
    /// Store the transformed tensor.
    Tensor,
    /// Store the file's bytes; the spec runs when the data is read (Petastorm's advice).
    Raw,
}

impl Materialize {
    pub fn name(self) -> &'static str {
        match self {
            Materialize::Tensor => "tensor",
            Materialize::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Skip the file and report it in the manifest.
    Skip,
    /// Stop the job at the first bad file.
    Fail,
}

pub struct ConvertOptions {
    pub source: String,
    /// Read the source's `.parquet` files as a table with one item per row.
    pub table: Option<TableColumns>,
    pub include: Vec<String>,
    pub spec: serde_json::Value,
    pub cache: PathBuf,
    pub labels: LabelRule,
    pub materialize: Materialize,
    /// Target payload bytes per shard (before compression).
    pub shard_bytes: u64,
    /// Rows per Parquet row group; by default sized to about `row_group_bytes`.
    pub row_group_rows: Option<usize>,
    pub row_group_bytes: u64,
    pub zstd: bool,
    pub on_error: OnError,
    pub backend: Arc<dyn Backend + Send + Sync>,
    pub workers: usize,
    pub progress: bool,
}

impl std::fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("source", &self.source)
            .field("cache", &self.cache)
            .finish()
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
    /// Listing position the run started from (non-zero when it resumed an interrupted run).
    pub resumed_from: u64,
    pub seconds: f64,
}

/// One line of `progress.jsonl`: a finished shard (if any) and the failures since the last one.
#[derive(Debug, Serialize, Deserialize)]
struct JournalRecord {
    shard: Option<ShardInfo>,
    failed: Vec<Failure>,
    end_item: u64,
}

/// The fixed output shape of an image spec, when every input gives the same one (a decode mode
/// and a fixed-size resize or crop); `None` for audio and for size-dependent image specs.
pub fn fixed_shape(spec: &Spec) -> Option<Vec<usize>> {
    let mut channels = None;
    let mut size = None;
    let mut chw = false;
    for op in &spec.ops {
        match op {
            Op::DecodeImage { mode } => {
                channels = mode.map(|m| (m.channels(), m == kiln_core::spec::ImageMode::L))
            }
            Op::Resize(p) => {
                size = match p.size {
                    kiln_core::spec::ResizeSize::Exact { height, width } => Some((height, width)),
                    kiln_core::spec::ResizeSize::ShorterSide(_) => None,
                }
            }
            Op::CenterCrop { height, width } => size = Some((*height, *width)),
            Op::Layout { to } => chw = *to == kiln_core::spec::Layout::Chw,
            Op::LoadAudio(_) => return None,
            _ => {}
        }
    }
    let ((c, gray), (h, w)) = (channels?, size?);
    Some(match (gray && !chw, chw) {
        (true, _) => vec![h, w],
        (false, true) => vec![c, h, w],
        (false, false) => vec![h, w, c],
    })
}

fn tensor_info(spec: &Spec) -> Result<TensorInfo> {
    Ok(TensorInfo {
        dtype: tensor_dtype(spec)?.to_owned(),
        shape: fixed_shape(spec),
    })
}

/// `uint8` or `float32`: the dtype of the spec's output.
pub fn tensor_dtype(spec: &Spec) -> Result<&'static str> {
    let mut dtype = DType::F32;
    for op in &spec.ops {
        dtype = match op {
            Op::DecodeImage { .. } => DType::U8,
            Op::ToFloat | Op::LoadAudio(_) | Op::Magnitude { .. } => DType::F32,
            Op::Stft(_) => DType::C64,
            _ => dtype,
        };
    }
    if dtype == DType::C64 {
        bail!("the spec ends with a complex STFT; add `magnitude` to store it");
    }
    Ok(dtype.name())
}

fn read_journal(entry: &Path) -> Result<(Vec<ShardInfo>, Vec<Failure>, u64)> {
    let path = entry.join(JOURNAL);
    let (mut shards, mut failed, mut next) = (Vec::new(), Vec::new(), 0);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok((shards, failed, next));
    };
    for line in text.lines() {
        // A line cut short by a crash is the only kind that fails to parse: ignore it and
        // everything after it, and redo that work.
        let Ok(record) = serde_json::from_str::<JournalRecord>(line) else {
            break;
        };
        if let Some(shard) = record.shard {
            if !entry.join(&shard.file).is_file() {
                break;
            }
            shards.push(shard);
        }
        failed.extend(record.failed);
        next = record.end_item;
    }
    Ok((shards, failed, next))
}

fn append_journal(entry: &Path, record: &JournalRecord) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(entry.join(JOURNAL))?;
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn remove_temporaries(entry: &Path) -> Result<()> {
    for e in fs::read_dir(entry)? {
        let path = e?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp."))
        {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn progress_bar(total: u64, done: u64, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} converting [{bar:30}] {pos}/{len} files {per_sec} eta {eta} {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_position(done);
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

/// Converts (or finds in the cache) the source described by `opts`.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(convert_async(opts))
}

async fn convert_async(opts: &ConvertOptions) -> Result<ConvertReport> {
    let started = Instant::now();
    let spec = Spec::from_value(&opts.spec).context("invalid spec")?;
    let layout = match opts.materialize {
        Materialize::Raw => Layout::Raw,
        Materialize::Tensor => Layout::Tensor(tensor_info(&spec)?),
    };
    let source = Source::open(&opts.source)?;
    let items = source.list(&opts.include).await?;
    if items.is_empty() {
        bail!(
            "source {} has no files{}",
            opts.source,
            if opts.include.is_empty() {
                String::new()
            } else {
                format!(" matching {:?}", opts.include)
            }
        );
    }
    // What gets converted: the listed files, or the rows of the listed Parquet files.
    let (units, labels): (Vec<String>, Vec<Option<String>>) = match &opts.table {
        None => {
            let labels = items.iter().map(|i| opts.labels.label(&i.path)).collect();
            (items.iter().map(|i| i.path.clone()).collect(), labels)
        }
        Some(columns) => {
            let rows = crate::table::list_rows(&source, &items, columns).await?;
            let labels = rows
                .iter()
                .map(|r| r.label.clone().or_else(|| opts.labels.label(&r.path)))
                .collect();
            (rows.into_iter().map(|r| r.path).collect(), labels)
        }
    };
    let names = label_names(labels.iter());
    let label_rule = match &opts.table {
        None => opts.labels.describe(),
        Some(c) => format!(
            "table path={} content={} label={:?} rule={}",
            c.path,
            c.content,
            c.label,
            opts.labels.describe()
        ),
    };
    let key = cache_key(&items, &opts.spec, &label_rule, opts.materialize.name());
    let entry = opts.cache.join(&key);
    let report = |manifest: &Manifest, hit: bool, resumed: u64| ConvertReport {
        entry: entry.clone(),
        key: key.clone(),
        rows: manifest.rows,
        failed: manifest.failed.len(),
        failures: manifest.failed.clone(),
        cache_hit: hit,
        resumed_from: resumed,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Ok(manifest) = read_manifest(&entry) {
        return Ok(report(&manifest, true, 0));
    }
    let _lock = lock_entry(&entry)?;
    // Another process may have finished the entry while we waited for the lock.
    if let Ok(manifest) = read_manifest(&entry) {
        return Ok(report(&manifest, true, 0));
    }
    remove_temporaries(&entry)?;
    let (mut shards, mut failed, resumed_from) = read_journal(&entry)?;
    let bar = progress_bar(items.len() as u64, resumed_from, opts.progress);
    if resumed_from > 0 {
        bar.println(format!(
            "resuming {} at file {resumed_from} of {}",
            entry.display(),
            items.len()
        ));
    }
    let pipeline = Arc::new(Pipeline::new(spec));
    let source = Arc::new(source);
    let names = Arc::new(names);
    let labels = Arc::new(labels);
    let units = Arc::new(units);
    let parallel = opts.workers.max(1) * 2;
    let contents: futures::stream::BoxStream<'static, (u64, Result<bytes::Bytes>)> = match &opts.table {
        None => {
            let pending: Vec<(u64, SourceItem)> = items
                .iter()
                .cloned()
                .enumerate()
                .skip(resumed_from as usize)
                .map(|(i, it)| (i as u64, it))
                .collect();
            let source = source.clone();
            futures::stream::iter(pending)
                .map(move |(index, item)| {
                    let source = source.clone();
                    async move { (index, source.fetch(&item).await) }
                })
                .buffered(parallel)
                .boxed()
        }
        Some(columns) => {
            crate::table::contents(source.clone(), items.clone(), columns.clone(), resumed_from).boxed()
        }
    };
    let results = contents
        .map(|(index, bytes)| {
            let (pipeline, backend) = (pipeline.clone(), opts.backend.clone());
            let (names, labels, units) = (names.clone(), labels.clone(), units.clone());
            let materialize = opts.materialize;
            async move {
                let path = units[index as usize].clone();
                let outcome: Result<Row> = async {
                    let bytes = bytes?;
                    let label = labels[index as usize].clone();
                    let label_index = label
                        .as_ref()
                        .and_then(|l| names.binary_search(l).ok())
                        .map(|i| i as i32);
                    let payload = tokio::task::spawn_blocking(move || -> Result<Payload> {
                        Ok(match materialize {
                            Materialize::Tensor => Payload::Tensor(pipeline.run(backend.as_ref(), &bytes)?),
                            // Raw rows are still decoded once, so corrupt files are caught now.
                            Materialize::Raw => {
                                pipeline.decode(&bytes)?;
                                Payload::Raw(bytes)
                            }
                        })
                    })
                    .await??;
                    Ok(Row {
                        row_id: index,
                        path: path.clone(),
                        label,
                        label_index,
                        payload,
                    })
                }
                .await;
                (index, path, outcome)
            }
        })
        .buffered(parallel);
    futures::pin_mut!(results);
    let mut writer: Option<ShardWriter> = None;
    let mut failed_since_shard: Vec<Failure> = Vec::new();
    let mut rows_total: u64 = shards.iter().map(|s| s.rows).sum();
    let mut last_item = resumed_from;
    let first_shard = shards.len();
    while let Some((index, path, outcome)) = results.next().await {
        last_item = index + 1;
        bar.inc(1);
        match outcome {
            Ok(row) => {
                if let Layout::Tensor(TensorInfo {
                    shape: Some(shape), ..
                }) = &layout
                {
                    if let Payload::Tensor(t) = &row.payload {
                        if &t.shape != shape {
                            bail!(
                                "{path}: output shape {:?} differs from the entry's {:?}",
                                t.shape,
                                shape
                            );
                        }
                    }
                }
                if writer.is_none() {
                    let rows_per_group = opts.row_group_rows.unwrap_or_else(|| {
                        (opts.row_group_bytes as usize / row.payload_bytes().max(1)).max(1)
                    });
                    let file = entry.join(format!("part-{:05}.parquet", shards.len()));
                    let options = ShardOptions {
                        row_group_rows: rows_per_group,
                        zstd: opts.zstd,
                    };
                    writer = Some(ShardWriter::create(&file, &layout, options, index)?);
                }
                let w = writer.as_mut().expect("writer created above");
                w.push(row)?;
                rows_total += 1;
                if w.payload_bytes >= opts.shard_bytes {
                    let shard = writer.take().expect("writer").finish(last_item)?;
                    append_journal(
                        &entry,
                        &JournalRecord {
                            shard: Some(shard.clone()),
                            failed: failed_since_shard.clone(),
                            end_item: last_item,
                        },
                    )?;
                    shards.push(shard);
                    failed.append(&mut failed_since_shard);
                    crash_for_tests(shards.len() - first_shard);
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                if opts.on_error == OnError::Fail {
                    bail!("{path}: {message} (--on-error fail)");
                }
                bar.println(format!("skipping {path}: {message}"));
                failed_since_shard.push(Failure { path, error: message });
            }
        }
    }
    let shard = match writer.take() {
        Some(w) => Some(w.finish(last_item)?),
        None => None,
    };
    if shard.is_some() || !failed_since_shard.is_empty() {
        append_journal(
            &entry,
            &JournalRecord {
                shard: shard.clone(),
                failed: failed_since_shard.clone(),
                end_item: last_item,
            },
        )?;
    }
    shards.extend(shard);
    failed.append(&mut failed_since_shard);
    bar.finish_and_clear();
    let schema = crate::shard::schema(&layout);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        key: key.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        source: opts.source.clone(),
        spec: opts.spec.clone(),
        kernel_version: kiln_core::KERNEL_VERSION,
        materialize: opts.materialize.name().to_owned(),
        label_rule,
        compression: if opts.zstd { "zstd".into() } else { "none".into() },
        columns: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect(),
        tensor: match &layout {
            Layout::Tensor(info) => Some(info.clone()),
            Layout::Raw => None,
        },
        rows: rows_total,
        labels: names.as_ref().clone(),
        shards,
        failed,
        listed: units.len() as u64,
    };
    write_atomic(
        &entry.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(report(&manifest, false, resumed_from))
}
