use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, FixedSizeListArray, Float32Array, ListArray, UInt64Array, UInt8Array};
use clap::{Parser, Subcommand};
use kiln::cache::{gc, list_entries, parse_size, remove_entry};
use kiln::convert::{convert, ConvertOptions, Materialize, OnError};
use kiln::labels::LabelRule;
use kiln::loader::{Loader, LoaderState};
use kiln::transform::{load_spec, make_backend, transform_file, write_atomic, BackendChoice};
use kiln_core::{npy, Pipeline};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Turn raw audio and images into training-ready tensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a transform spec on one file and write the result as a NumPy .npy file.
    Transform {
        /// Transform spec (JSON: {"ops": [...]}).
        #[arg(long)]
        spec: PathBuf,
        /// Input WAV, PNG or JPEG file.
        input: PathBuf,
        /// Output .npy path (written atomically).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendChoice,
    },
    /// Materialize a dataset (directory or object-store URL) as cached Parquet shards. Prints
    /// the cache entry's directory as the last line of stdout.
    Convert(ConvertArgs),
    /// Inspect and prune the conversion cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Stream a cache entry as batches and report throughput and a checksum.
    Stream(StreamArgs),
    /// Serve the labeling page; with --dir, also a dataset's files and a labels endpoint.
    Serve {
        /// Dataset directory (WAV/PNG/JPEG); labels are saved to DIR/labels.csv.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HOST:PORT; an address reachable from the network needs --token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Required on every request (default: $KILN_TOKEN); prefer the variable, as arguments
        /// show in `ps`.
        #[arg(long)]
        token: Option<String>,
    },
    /// Export a cache entry in another format.
    Export {
        /// Cache entry directory.
        entry: PathBuf,
        /// Output format (only `tfrecord`).
        #[arg(long, default_value = "tfrecord")]
        format: String,
        /// Output directory.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

fn default_cache() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache/kiln/datasets")
        })
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Directory, file:// s3:// gs:// az:// or http(s):// (WebDAV) URL.
    source: String,
    #[arg(long)]
    spec: PathBuf,
    /// Cache directory (default: $KILN_CACHE or ~/.cache/kiln/datasets).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Only files matching this glob (repeatable), e.g. '*.wav'.
    #[arg(long)]
    include: Vec<String>,
    /// Labels file (CSV with a path,label header, or Parquet); default: parent directory name.
    #[arg(long, conflicts_with = "label_regex")]
    labels: Option<PathBuf>,
    /// Label = first capture group of this regex over the relative path.
    #[arg(long)]
    label_regex: Option<String>,
    #[arg(long, value_enum, default_value = "tensor")]
    materialize: Materialize,
    /// `files` (each file is an item) or `parquet` (each row of the source's .parquet files is
    /// an item, e.g. a Spark binaryFile table).
    #[arg(long, default_value = "files", value_parser = ["files", "parquet"])]
    source_format: String,
    /// Parquet source: column with each row's path.
    #[arg(long, default_value = "path")]
    path_column: String,
    /// Parquet source: binary column with each row's file bytes.
    #[arg(long, default_value = "content")]
    content_column: String,
    /// Parquet source: column with each row's label (default: the label rule over the path).
    #[arg(long)]
    label_column: Option<String>,
    /// Target payload size per shard, before compression.
    #[arg(long, default_value = "64MiB")]
    shard_size: String,
    /// Rows per Parquet row group (default: about --row-group-size of payload).
    #[arg(long)]
    row_group_rows: Option<usize>,
    #[arg(long, default_value = "1MiB")]
    row_group_size: String,
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "none"])]
    compression: String,
    #[arg(long, value_enum, default_value = "skip")]
    on_error: OnError,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Parallel file reads and transforms (default: cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Print one JSON object (entry, rows, failed, cache_hit, ...) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List entries.
    Ls {
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remove one entry.
    Rm {
        key: String,
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Remove entries older than --max-age, then the oldest until the cache fits --max-size.
    Gc {
        #[arg(long)]
        cache: Option<PathBuf>,
        /// e.g. 10GiB
        #[arg(long)]
        max_size: Option<String>,
        /// e.g. 7d, 12h
        #[arg(long)]
        max_age: Option<String>,
    },
}

#[derive(clap::Args)]
struct StreamArgs {
    /// Cache entry directory (the last line `kiln convert` prints).
    entry: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// This worker's shard as i/n (e.g. 0/4).
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Shuffle with this seed (default: storage order).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 4096)]
    shuffle_buffer: usize,
    /// Epochs to stream; 0 means forever. The library default is forever; the CLI's is 1.
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    #[arg(long)]
    drop_last: bool,
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// Decode/transform threads for raw entries (default: cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Stop after this many batches (with --state-out, to resume later).
    #[arg(long)]
    max_batches: Option<u64>,
    /// Write the loader state (JSON) here when stopping.
    #[arg(long)]
    state_out: Option<PathBuf>,
    /// Continue from a state written by --state-out.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Include the delivered row ids (in order) in the JSON output.
    #[arg(long)]
    ids: bool,
}

fn parse_shard(text: &str) -> Result<(u64, u64)> {
    let (i, n) = text
        .split_once('/')
        .with_context(|| format!("--shard {text:?}: expected i/n"))?;
    let (i, n): (u64, u64) = (i.trim().parse()?, n.trim().parse()?);
    if n == 0 || i >= n {
        bail!("--shard {text:?}: need 0 <= i < n");
    }
    Ok((i, n))
}

fn run_convert(args: ConvertArgs) -> Result<()> {
    let spec_text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading spec {}", args.spec.display()))?;
    let spec: serde_json::Value =
        serde_json::from_str(&spec_text).with_context(|| format!("invalid spec {}", args.spec.display()))?;
    kiln_core::Spec::from_value(&spec).with_context(|| format!("invalid spec {}", args.spec.display()))?;
    let labels = match (&args.labels, &args.label_regex) {
        (Some(file), _) => LabelRule::from_file(file)?,
        (None, Some(re)) => LabelRule::from_regex(re)?,
        (None, None) => LabelRule::ParentDir,
    };
    let backend: Arc<dyn kiln_core::Backend + Send + Sync> = match args.backend {
        BackendChoice::Cpu => Arc::new(kiln_core::CpuBackend),
        BackendChoice::Gpu => Arc::new(kiln_gpu::GpuBackend::new().context("starting the GPU backend")?),
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let table = (args.source_format == "parquet").then(|| kiln::table::TableColumns {
        path: args.path_column.clone(),
        content: args.content_column.clone(),
        label: args.label_column.clone(),
    });
    let include = if table.is_some() && args.include.is_empty() {
        vec!["*.parquet".to_owned()]
    } else {
        args.include
    };
    let options = ConvertOptions {
        source: args.source.clone(),
        table,
        include,
        spec,
        cache: args.cache.unwrap_or_else(default_cache),
        labels,
        materialize: args.materialize,
        shard_bytes: parse_size(&args.shard_size)?,
        row_group_rows: args.row_group_rows,
        row_group_bytes: parse_size(&args.row_group_size)?,
        zstd: args.compression == "zstd",
        on_error: args.on_error,
        backend,
        workers,
        progress: !args.json,
    };
    let report = convert(&options)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        if report.cache_hit {
            eprintln!("cache hit: {} rows already converted", report.rows);
        } else {
            eprintln!("converted {} rows in {:.1} s", report.rows, report.seconds);
        }
        for f in &report.failures {
            eprintln!("failed: {}: {}", f.path, f.error);
        }
        writeln!(out, "{}", report.entry.display())?;
    }
    Ok(())
}

fn run_cache(command: CacheCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CacheCommand::Ls { cache, json } => {
            let entries = list_entries(&cache.unwrap_or_else(default_cache))?;
            if json {
                writeln!(out, "{}", serde_json::json!({ "entries": entries }))?;
            } else {
                for e in entries {
                    let state = if e.complete { "complete" } else { "partial" };
                    let rows = e.rows.map_or("-".into(), |r| r.to_string());
                    writeln!(
                        out,
                        "{}\t{state}\t{rows} rows\t{} bytes\t{}",
                        e.key,
                        e.bytes,
                        e.source.unwrap_or_default()
                    )?;
                }
            }
        }
        CacheCommand::Rm { key, cache } => {
            let removed = remove_entry(&cache.unwrap_or_else(default_cache), &key)?;
            writeln!(out, "removed {}", removed.display())?;
        }
        CacheCommand::Gc {
            cache,
            max_size,
            max_age,
        } => {
            if max_size.is_none() && max_age.is_none() {
                bail!("cache gc needs --max-size and/or --max-age");
            }
            let max_size = max_size.map(|s| parse_size(&s)).transpose()?;
            let max_age = max_age
                .map(|a| humantime::parse_duration(&a).with_context(|| format!("invalid --max-age {a:?}")))
                .transpose()?;
            for key in gc(&cache.unwrap_or_else(default_cache), max_size, max_age)? {
                writeln!(out, "removed {key}")?;
            }
        }
    }
    Ok(())
}

/// Feeds what a batch delivered (row ids and tensor values) into the checksum.
fn hash_batch(hasher: &mut Sha256, batch: &arrow::record_batch::RecordBatch) -> u64 {
    let mut bytes = 0;
    if let Some(ids) = batch
        .column_by_name("row_id")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
    {
        ids.values().iter().for_each(|id| hasher.update(id.to_le_bytes()));
    }
    let values = batch.column_by_name("tensor").map(|c| {
        if let Some(l) = c.as_any().downcast_ref::<FixedSizeListArray>() {
            l.values().slice(
                l.offset() * l.value_length() as usize,
                l.len() * l.value_length() as usize,
            )
        } else if let Some(l) = c.as_any().downcast_ref::<ListArray>() {
            let offsets = l.value_offsets();
            l.values()
                .slice(offsets[0] as usize, (offsets[l.len()] - offsets[0]) as usize)
        } else {
            c.clone()
        }
    });
    if let Some(values) = values {
        if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
            f.values().iter().for_each(|v| hasher.update(v.to_le_bytes()));
            bytes += f.len() as u64 * 4;
        } else if let Some(u) = values.as_any().downcast_ref::<UInt8Array>() {
            hasher.update(u.values());
            bytes += u.len() as u64;
        }
    }
    bytes
}

fn hash_tensor(hasher: &mut Sha256, tensor: &kiln_core::Tensor) -> u64 {
    match &tensor.data {
        kiln_core::TensorData::U8(v) => {
            hasher.update(v);
            v.len() as u64
        }
        kiln_core::TensorData::F32(v) | kiln_core::TensorData::C64(v) => {
            v.iter().for_each(|x| hasher.update(x.to_le_bytes()));
            v.len() as u64 * 4
        }
    }
}

fn run_stream(args: StreamArgs) -> Result<()> {
    let (cur, count) = parse_shard(&args.shard)?;
    let mut builder = Loader::builder(&args.entry)
        .batch_size(args.batch_size)
        .shard(cur, count)
        .epochs((args.epochs > 0).then_some(args.epochs))
        .drop_last(args.drop_last)
        .prefetch(args.prefetch)
        .shuffle_buffer(args.shuffle_buffer);
    if let Some(seed) = args.seed {
        builder = builder.shuffle(seed);
    }
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    let gpu = match args.backend {
        BackendChoice::Gpu => Some(Arc::new(
            kiln_gpu::GpuBackend::new().context("starting the GPU backend")?,
        )),
        BackendChoice::Cpu => None,
    };
    if let Some(gpu) = &gpu {
        // Fixed shapes: batches stay on the device. Varying shapes cannot be stacked into one
        // device tensor, so the spec still runs on the GPU but batches come back to the host.
        builder = if kiln::loader::fixed_tensor_shape(&args.entry)?.is_some() {
            builder.gpu(gpu.clone())
        } else {
            builder.backend(gpu.clone())
        };
    }
    if let Some(path) = &args.resume {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading state {}", path.display()))?;
        let state: LoaderState =
            serde_json::from_str(&text).with_context(|| format!("invalid state {}", path.display()))?;
        builder = builder.resume(state);
    }
    let mut loader = builder.build()?;
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let (mut rows, mut batches, mut bytes) = (0u64, 0u64, 0u64);
    let mut ids = Vec::new();
    while args.max_batches.is_none_or(|m| batches < m) {
        let Some(batch) = loader.next() else { break };
        let batch = batch?;
        rows += batch.records.num_rows() as u64;
        batches += 1;
        bytes += hash_batch(&mut hasher, &batch.records);
        if let (Some(gpu), Some(device)) = (&gpu, &batch.device) {
            // Read back only to checksum what the device holds.
            bytes += hash_tensor(&mut hasher, &gpu.read(device)?);
        }
        if args.ids {
            ids.extend(batch.row_ids());
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let checksum = kiln::cache::hex(&hasher.finalize())[..16].to_owned();
    if let Some(path) = &args.state_out {
        write_atomic(path, serde_json::to_string(&loader.state())?.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut report = serde_json::json!({
            "rows": rows, "batches": batches, "rows_per_s": rows as f64 / seconds,
            "mb_per_s": bytes as f64 / seconds / 1e6, "checksum": checksum, "state": loader.state(),
        });
        if args.ids {
            report["ids"] = serde_json::json!(ids);
        }
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "{rows} rows in {batches} batches, {:.0} rows/s, {:.1} MB/s, checksum {checksum}",
            rows as f64 / seconds,
            bytes as f64 / seconds / 1e6
        )?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Transform {
            spec,
            input,
            output,
            backend,
        } => {
            let pipeline = Pipeline::new(load_spec(&spec)?);
            let backend = make_backend(backend)?;
            let tensor = transform_file(&pipeline, backend.as_ref(), &input)?;
            write_atomic(&output, &npy::encode(&tensor))?;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "{} -> {} {:?} {}",
                input.display(),
                output.display(),
                tensor.shape,
                tensor.dtype().name()
            );
            Ok(())
        }
        Command::Convert(args) => run_convert(args),
        Command::Serve { dir, listen, token } => Ok(kiln::serve::serve(kiln::serve::ServeOptions {
            listen,
            dir,
            token: token.or_else(|| std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty())),
        })?),
        Command::Cache { command } => run_cache(command),
        Command::Stream(args) => run_stream(args),
        Command::Export {
            entry,
            format,
            output,
        } => {
            if format != "tfrecord" {
                bail!("unsupported export format {format:?} (supported: tfrecord)");
            }
            let (files, rows) = kiln::tfrecord::export(&entry, &output)?;
            writeln!(
                std::io::stdout().lock(),
                "wrote {rows} examples to {} files in {}",
                files.len(),
                output.display()
            )?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`kiln stream ... | head`) is not an error worth reporting.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("kiln: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
