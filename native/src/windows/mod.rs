//! `kiln windows`: event histories (calls, payments, clicks: one row per event) into training
//! examples, one per (entity, window end `t`), with features from the events in
//! `[t - period, t)` and a label from `[t, t + horizon)`, so no feature sees the label's time.
//!
//! The flow, one module per step:
//! - [`spec`]: `WINDOWS.json` checked; [`time`]: spans and instants.
//! - [`input`]: Parquet/CSV files listed and read; [`prepare`]: raw batches into canonical
//!   columns (entity, time, input order, one column per distinct aggregate input).
//! - [`partition`]: hash partitions by entity, spilled to disk past the memory budget.
//! - [`aggregate`]: per partition, sorted, every window slid with running aggregates
//!   ([`exact_sum`] keeps sums exact enough to slide).
//! - [`output`]: shards, journal and manifest (resumable after kill -9).

pub mod aggregate;
pub mod exact_sum;
pub mod input;
pub mod output;
pub mod partition;
pub mod prepare;
pub mod spec;
pub mod time;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::fsio::write_atomic;
use crate::journal::Journal;
use input::{events_error, EventFiles};
pub use output::OutputFormat;
use output::{Earlier, Plan, ShardRecord, ShardWriter, WindowsManifest};
use partition::{partition_count, split, Partitions};
use prepare::{prepare, InputKind, InputPlan, Inputs};
pub use spec::WindowSpec;

/// Events: files (a directory, object-store URL or one local file) or tables in memory.
#[derive(Debug)]
pub enum Events {
    Location(String),
    Batches(Vec<RecordBatch>),
}

impl Events {
    fn describe(&self) -> String {
        match self {
            Events::Location(location) => location.clone(),
            Events::Batches(_) => "<in-memory table>".into(),
        }
    }
}

#[derive(Debug)]
pub struct WindowsOptions {
    pub events: Events,
    /// Label events, when the label does not come from `events`.
    pub labels: Option<Events>,
    pub entity: String,
    pub time: String,
    pub spec_json: String,
    pub output: PathBuf,
    pub format: OutputFormat,
    pub workers: usize,
    /// Bytes the run may hold: half for buffered partitions, half for windowing them.
    pub memory: u64,
    pub progress: bool,
}

/// Default `--memory`.
pub const DEFAULT_MEMORY: u64 = 2 << 30;
/// Below this the per-partition working set alone would not fit.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Output rows per batch (one Parquet row group each), fewer when rows are wide (a long
/// sequence tensor), so a batch stays near 32 MiB.
fn chunk_rows(spec: &WindowSpec) -> usize {
    let values = spec.steps().unwrap_or(0) * spec.features.len() + spec.features.len() + 4;
    ((32 << 20) / (8 * values)).clamp(1, 65_536)
}

/// A labels table needs a label.
fn check_labels(spec: &WindowSpec, has_labels: bool) -> Result<()> {
    if has_labels && spec.label.is_none() {
        return Err(Error::invalid("--labels", "given, but the spec has no `label`"));
    }
    Ok(())
}

/// Label entities are compared with the events': their types must agree.
fn check_entity_types(events: Option<&DataType>, labels: Option<&DataType>) -> Result<()> {
    match (events, labels) {
        (Some(e), Some(l)) if e != l => Err(Error::invalid(
            "--labels",
            format!("its entity column is {l} but the events' is {e}"),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowsReport {
    pub output: PathBuf,
    /// Output rows (windows), all partitions.
    pub rows: u64,
    pub entities: u64,
    /// Events (and label events) read by this run.
    pub events: u64,
    pub label_events: u64,
    /// Rows without an entity or a time, left out.
    pub dropped_rows: u64,
    pub partitions: u64,
    pub shards: u64,
    /// Partitions an interrupted run had finished, kept.
    pub kept: u64,
    pub spilled_bytes: u64,
    /// Files beside the events that are neither Parquet nor CSV, not read.
    pub ignored_files: u64,
    /// The output was already complete: nothing was read or written.
    pub already_complete: bool,
    pub seconds: f64,
    pub events_per_s: f64,
}

/// One table of events being read: its files or batches, and how it is prepared.
struct Table {
    events: Events,
    files: Option<EventFiles>,
    inputs: Inputs,
    /// Columns read as float64 whatever a CSV's first rows suggest.
    number_columns: Vec<String>,
}

impl Table {
    fn open(events: Events, inputs: Inputs, runtime: &Arc<tokio::runtime::Runtime>) -> Result<Table> {
        let files = match &events {
            Events::Location(location) => Some(EventFiles::list(location, runtime.clone())?),
            Events::Batches(_) => None,
        };
        let number_columns = inputs
            .defs
            .iter()
            .filter(|d| d.kind == InputKind::Number)
            .filter_map(|d| d.column.clone())
            .collect();
        Ok(Table {
            events,
            files,
            inputs,
            number_columns,
        })
    }

    /// Canonical bytes per event, for sizing partitions.
    fn row_bytes(&self) -> u64 {
        24 + 8
            + self
                .inputs
                .defs
                .iter()
                .map(|d| if d.kind == InputKind::Presence { 1 } else { 9 })
                .sum::<u64>()
    }

    /// About how many canonical bytes the table prepares into.
    fn estimated_bytes(&self) -> u64 {
        let rows: u64 = match (&self.events, &self.files) {
            (Events::Batches(batches), _) => batches.iter().map(|b| b.num_rows() as u64).sum(),
            (_, Some(files)) => (0..files.files.len())
                .map(|i| {
                    files.rows_hint(i).unwrap_or_else(|| {
                        // Without a footer to ask: CSV lines and compressed Parquet rows run
                        // about this many bytes.
                        let per_row = if files.files[i].1 == input::FileFormat::Csv {
                            32
                        } else {
                            8
                        };
                        files.files[i].0.size / per_row
                    })
                })
                .sum(),
            _ => 0,
        };
        rows * self.row_bytes()
    }

    /// What identifies the input: the listing, or the tables' contents.
    fn identity(&self) -> Result<serde_json::Value> {
        Ok(match (&self.events, &self.files) {
            (_, Some(files)) => serde_json::json!({
                "location": files.location,
                "files": files.files.iter().map(|(item, _)| (&item.path, item.size, &item.version)).collect::<Vec<_>>(),
            }),
            (Events::Batches(batches), None) => {
                let mut hash = HashWriter(Sha256::new());
                if let Some(first) = batches.first() {
                    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut hash, &first.schema())?;
                    for batch in batches {
                        writer.write(batch)?;
                    }
                    writer.finish()?;
                }
                serde_json::json!({ "sha256": hex(&hash.0.finalize()) })
            }
            _ => unreachable!("a location has files"),
        })
    }

    fn count(&self) -> usize {
        match (&self.events, &self.files) {
            (_, Some(files)) => files.files.len(),
            (Events::Batches(_), None) => 1,
            _ => 0,
        }
    }

    fn name(&self, index: usize) -> String {
        match &self.files {
            Some(files) => files.name(index),
            None => self.events.describe(),
        }
    }

    fn size(&self, index: usize) -> u64 {
        match (&self.events, &self.files) {
            (_, Some(files)) => files.files[index].0.size,
            (Events::Batches(batches), None) => {
                batches.iter().map(|b| b.get_array_memory_size() as u64).sum()
            }
            _ => 0,
        }
    }

    /// Reads source `index` (a file, or all the in-memory batches), preparing each batch.
    fn read(
        &self,
        index: usize,
        entity: &str,
        time: &str,
        each: &mut dyn FnMut(prepare::Prepared) -> Result<()>,
    ) -> Result<()> {
        let name = self.name(index);
        // Events at equal times keep file order, then row order.
        let mut seq = (index as u64) << 40;
        let mut one = |raw: RecordBatch| -> Result<()> {
            let rows = raw.num_rows() as u64;
            let prepared =
                prepare(&raw, entity, time, &self.inputs, seq).map_err(|p| events_error(&name, p))?;
            seq += rows;
            each(prepared)
        };
        match (&self.events, &self.files) {
            (_, Some(files)) => {
                let mut columns = vec![entity.to_owned(), time.to_owned()];
                columns.extend(self.inputs.columns());
                columns.sort();
                columns.dedup();
                files.read(index, &columns, &self.number_columns, &mut one)
            }
            (Events::Batches(batches), None) => batches.iter().try_for_each(|b| one(b.clone())),
            _ => unreachable!("a location has files"),
        }
    }
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bar(visible: bool, total: u64, template: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

/// Counters the reading workers share.
#[derive(Default)]
struct ReadTotals {
    events: AtomicU64,
    dropped: AtomicU64,
}

/// Reads every source of `table` into `partitions` with `workers` threads; rows of partitions
/// in `skip` (finished by an earlier run) are dropped at once.
fn read_table(
    table: &Table,
    opts: &WindowsOptions,
    partitions: &Mutex<Partitions>,
    count: usize,
    skip: &[bool],
    totals: &ReadTotals,
    bar: &ProgressBar,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    // The lowest-numbered file that failed: files after it stop, files before it finish, so
    // the error reported is the first file's in path order, whatever the threads' timing.
    let first_failed = AtomicUsize::new(usize::MAX);
    let errors = Mutex::new(Vec::new());
    let workers = opts.workers.clamp(1, table.count().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= table.count() || index > first_failed.load(Ordering::SeqCst) {
                    break;
                }
                let name = table.name(index);
                let result = table.read(index, &opts.entity, &opts.time, &mut |prepared| {
                    if index > first_failed.load(Ordering::SeqCst) {
                        return Err(Error::Cancelled);
                    }
                    totals
                        .events
                        .fetch_add(prepared.batch.num_rows() as u64, Ordering::Relaxed);
                    totals.dropped.fetch_add(prepared.dropped, Ordering::Relaxed);
                    let bytes = prepared.batch.get_array_memory_size();
                    let pieces: Vec<_> = split(&prepared.batch, count)?
                        .into_iter()
                        .filter(|(p, _)| !skip[*p])
                        .collect();
                    let schema = prepared.batch.schema();
                    drop(prepared);
                    partitions
                        .lock()
                        .expect("partitions lock")
                        .push(&schema, pieces, bytes, &name)
                });
                bar.inc(table.size(index));
                if let Err(e) = result {
                    if !matches!(e, Error::Cancelled) {
                        first_failed.fetch_min(index, Ordering::SeqCst);
                        errors.lock().expect("errors lock").push((index, e));
                    }
                    break;
                }
            });
        }
    });
    match errors
        .into_inner()
        .expect("errors lock")
        .into_iter()
        .min_by_key(|(index, _)| *index)
    {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Runs `kiln windows` into `opts.output`.
pub fn windows(opts: &WindowsOptions) -> Result<WindowsReport> {
    let started = Instant::now();
    let spec = WindowSpec::parse(&opts.spec_json)?;
    if opts.memory < MIN_MEMORY {
        return Err(Error::invalid(
            "--memory",
            format!("{} bytes is below the {MIN_MEMORY} kiln needs", opts.memory),
        ));
    }
    if opts.entity == opts.time {
        return Err(Error::invalid("--time", "is the same column as --entity"));
    }
    if spec.features.iter().any(|f| f.name == opts.entity) {
        return Err(Error::invalid(
            "spec features",
            format!("a feature is named like the entity column {:?}", opts.entity),
        ));
    }
    let plan_inputs = InputPlan::new(&spec, opts.labels.is_some());
    check_labels(&spec, opts.labels.is_some())?;
    let runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting", "the I/O runtime", e))?,
    );
    let take = |events: &Events| match events {
        Events::Location(l) => Events::Location(l.clone()),
        Events::Batches(b) => Events::Batches(b.clone()),
    };
    let events = Table::open(take(&opts.events), plan_inputs.events.clone(), &runtime)?;
    let labels = opts
        .labels
        .as_ref()
        .map(|l| Table::open(take(l), plan_inputs.labels.clone(), &runtime))
        .transpose()?;
    let estimated = events.estimated_bytes() + labels.as_ref().map_or(0, |l| l.estimated_bytes());
    let count = partition_count(estimated);
    let key = {
        let identity = serde_json::json!({
            "events": events.identity()?,
            "labels": labels.as_ref().map(|l| l.identity()).transpose()?,
            "entity": opts.entity,
            "time": opts.time,
            "spec": serde_json::from_str::<serde_json::Value>(&opts.spec_json).map_err(|e| Error::invalid("spec", e.to_string()))?,
        });
        hex(&Sha256::digest(identity.to_string().as_bytes()))
    };
    let plan = Plan {
        format: output::FORMAT.into(),
        key,
        partitions: count as u64,
        output_format: opts.format,
    };
    let out = &opts.output;
    let ignored = events.files.as_ref().map_or(0, |f| f.ignored)
        + labels
            .as_ref()
            .and_then(|l| l.files.as_ref())
            .map_or(0, |f| f.ignored);
    let mut report = WindowsReport {
        output: out.clone(),
        rows: 0,
        entities: 0,
        events: 0,
        label_events: 0,
        dropped_rows: 0,
        partitions: count as u64,
        shards: 0,
        kept: 0,
        spilled_bytes: 0,
        ignored_files: ignored as u64,
        already_complete: false,
        seconds: 0.0,
        events_per_s: 0.0,
    };
    let kept = match output::check_dir(out, &plan)? {
        Earlier::Complete(manifest) => {
            report.rows = manifest.rows;
            report.entities = manifest.entities;
            report.shards = manifest.shards.iter().filter(|s| s.file.is_some()).count() as u64;
            report.already_complete = true;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        Earlier::Partial(kept) => kept,
        Earlier::Nothing => Vec::new(),
    };
    std::fs::create_dir_all(out).at("creating", out)?;
    let mut journal = Journal::start(&out.join(output::JOURNAL), &plan, &kept)?;
    let mut skip = vec![false; count];
    for record in &kept {
        if let Some(s) = skip.get_mut(record.partition as usize) {
            *s = true;
        }
    }
    report.kept = kept.len() as u64;

    // Read and partition.
    let spill_dir = out.join(output::SPILL_DIR);
    let buffer_budget = (opts.memory / 2 / if labels.is_some() { 2 } else { 1 }) as usize;
    let event_parts = Mutex::new(Partitions::new(&spill_dir, "events", count, buffer_budget));
    let label_parts = Mutex::new(Partitions::new(&spill_dir, "labels", count, buffer_budget));
    let total_bytes = (0..events.count()).map(|i| events.size(i)).sum::<u64>()
        + labels
            .as_ref()
            .map_or(0, |l| (0..l.count()).map(|i| l.size(i)).sum());
    let reading = bar(
        opts.progress,
        total_bytes,
        "reading events {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let event_totals = ReadTotals::default();
    read_table(&events, opts, &event_parts, count, &skip, &event_totals, &reading)?;
    let label_totals = ReadTotals::default();
    if let Some(labels) = &labels {
        read_table(labels, opts, &label_parts, count, &skip, &label_totals, &reading)?;
    }
    reading.finish_and_clear();
    report.events = event_totals.events.load(Ordering::Relaxed);
    report.label_events = label_totals.events.load(Ordering::Relaxed);
    report.dropped_rows =
        event_totals.dropped.load(Ordering::Relaxed) + label_totals.dropped.load(Ordering::Relaxed);

    let mut event_parts = event_parts.into_inner().expect("partitions lock");
    let mut label_parts = label_parts.into_inner().expect("partitions lock");
    let entity_type = event_parts
        .schema()
        .map(|s| s.field(prepare::ENTITY).data_type().clone())
        .unwrap_or(DataType::Int64);
    check_entity_types(
        event_parts.schema().map(|s| s.field(prepare::ENTITY).data_type()),
        label_parts.schema().map(|s| s.field(prepare::ENTITY).data_type()),
    )?;
    report.spilled_bytes = event_parts.spilled_bytes + label_parts.spilled_bytes;
    let schema = aggregate::output_schema(&spec, &opts.entity, &entity_type);

    // Window each partition.
    let todo: Vec<usize> = (0..count).filter(|&p| !skip[p]).collect();
    let windowing = bar(
        opts.progress,
        todo.len() as u64,
        "windowing {bar:40} {pos}/{len} partitions {msg} eta {eta}",
    );
    let parts = Mutex::new((&mut event_parts, &mut label_parts));
    let journal_lock = Mutex::new((&mut journal, Vec::<ShardRecord>::new()));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let errors = Mutex::new(Vec::new());
    let rows_done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..opts.workers.clamp(1, todo.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let part = todo[i];
                let result = (|| -> Result<ShardRecord> {
                    let (part_events, part_labels) = {
                        let mut guard = parts.lock().expect("partitions lock");
                        let (e, l) = &mut *guard;
                        (e.take(part)?, l.take(part)?)
                    };
                    let Some(part_events) = part_events else {
                        return Ok(ShardRecord {
                            partition: part as u64,
                            file: None,
                            rows: 0,
                            entities: 0,
                            bytes: 0,
                            sha256: None,
                        });
                    };
                    let name = output::shard_name(part as u64, opts.format);
                    let mut writer = ShardWriter::create(&out.join(&name), &schema, opts.format)?;
                    let (rows, entities) = aggregate::compute_bucket(
                        &spec,
                        &plan_inputs,
                        &schema,
                        &part_events,
                        part_labels.as_ref(),
                        chunk_rows(&spec),
                        &mut |batch| writer.write(&batch),
                    )?;
                    drop(part_events);
                    if rows == 0 {
                        return Ok(ShardRecord {
                            partition: part as u64,
                            file: None,
                            rows: 0,
                            entities,
                            bytes: 0,
                            sha256: None,
                        });
                    }
                    let (bytes, sha256) = writer.commit()?;
                    Ok(ShardRecord {
                        partition: part as u64,
                        file: Some(name),
                        rows,
                        entities,
                        bytes,
                        sha256: Some(sha256),
                    })
                })();
                match result.and_then(|record| {
                    let mut guard = journal_lock.lock().expect("journal lock");
                    guard.0.append(&record)?;
                    rows_done.fetch_add(record.rows, Ordering::Relaxed);
                    guard.1.push(record);
                    Ok(())
                }) {
                    Ok(()) => {
                        windowing.inc(1);
                        windowing.set_message(format!("{} windows", rows_done.load(Ordering::Relaxed)));
                    }
                    Err(e) => {
                        errors.lock().expect("errors lock").push(e);
                        failed.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
    });
    windowing.finish_and_clear();
    if let Some(e) = errors.into_inner().expect("errors lock").into_iter().next() {
        return Err(e);
    }
    let (_, done) = journal_lock.into_inner().expect("journal lock");
    let mut shards: Vec<ShardRecord> = kept.into_iter().chain(done).collect();
    shards.sort_by_key(|s| s.partition);
    report.rows = shards.iter().map(|s| s.rows).sum();
    report.entities = shards.iter().map(|s| s.entities).sum();
    report.shards = shards.iter().filter(|s| s.file.is_some()).count() as u64;
    let manifest = WindowsManifest {
        plan,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        events: opts.events.describe(),
        labels: opts.labels.as_ref().map(|l| l.describe()),
        entity: opts.entity.clone(),
        time: opts.time.clone(),
        spec: serde_json::from_str(&opts.spec_json).expect("parsed above"),
        columns: schema
            .fields()
            .iter()
            .map(|f| output::Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect(),
        rows: report.rows,
        entities: report.entities,
        shards,
    };
    let manifest_path = out.join(output::MANIFEST);
    write_atomic(
        &manifest_path,
        &serde_json::to_vec_pretty(&manifest).expect("manifests serialise"),
    )?;
    journal.finish()?;
    if spill_dir.exists() {
        std::fs::remove_dir_all(&spill_dir).at("removing", &spill_dir)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.events_per_s = (report.events + report.label_events) as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// Windows of in-memory events, returned as batches (Python's `output=None`, and Spark's
/// per-group call): the same computation, without files, partitions or a journal.
pub fn windows_table(
    events: &[RecordBatch],
    labels: Option<&[RecordBatch]>,
    entity: &str,
    time: &str,
    spec_json: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let spec = WindowSpec::parse(spec_json)?;
    check_labels(&spec, labels.is_some())?;
    let plan = InputPlan::new(&spec, labels.is_some());
    let canonical = |batches: &[RecordBatch], inputs: &Inputs| -> Result<Option<RecordBatch>> {
        let mut prepared = Vec::new();
        let mut seq = 0u64;
        for raw in batches {
            prepared.push(
                prepare(raw, entity, time, inputs, seq)
                    .map_err(|p| events_error("<in-memory table>", p))?
                    .batch,
            );
            seq += raw.num_rows() as u64;
        }
        match prepared.first() {
            None => Ok(None),
            Some(first) => Ok(Some(arrow::compute::concat_batches(&first.schema(), &prepared)?)),
        }
    };
    let events = canonical(events, &plan.events)?;
    let labels = labels.map(|l| canonical(l, &plan.labels)).transpose()?.flatten();
    check_entity_types(
        events.as_ref().map(|e| e.column(prepare::ENTITY).data_type()),
        labels.as_ref().map(|l| l.column(prepare::ENTITY).data_type()),
    )?;
    let entity_type = events
        .as_ref()
        .map(|e| e.column(prepare::ENTITY).data_type().clone())
        .unwrap_or(DataType::Int64);
    let schema = aggregate::output_schema(&spec, entity, &entity_type);
    let mut out = Vec::new();
    if let Some(events) = events {
        aggregate::compute_bucket(
            &spec,
            &plan,
            &schema,
            &events,
            labels.as_ref(),
            chunk_rows(&spec),
            &mut |b| {
                out.push(b);
                Ok(())
            },
        )?;
    }
    Ok((schema, out))
}
