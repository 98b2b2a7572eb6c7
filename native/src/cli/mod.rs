//! The command line: clap types and the mapping onto the library. `anyhow` lives only here.

mod args;
mod score;
mod stream;
mod windows;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use kiln::cache::{gc, list_entries, remove_entry, GcOptions};
use kiln::convert::{convert, ConvertOptions};
use kiln::fsio::write_atomic;
use kiln::items::{LabelRule, TableColumns};
use kiln::transform::{transform_file, SpecFile};
use kiln::AnyBackend;
use kiln_core::{npy, Pipeline};

use args::{default_cache, open_backend, parse_size, BackendArg, MaterializeArg, OnErrorArg};

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
        /// Input audio (WAV, FLAC, MP3, Ogg Vorbis) or image (PNG, JPEG, WebP) file.
        input: PathBuf,
        /// Output .npy path (written atomically).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendArg,
    },
    /// Materialize a dataset (directory or object-store URL) as cached Parquet shards. Prints
    /// the cache entry's directory as the last line of stdout.
    Convert(Box<ConvertArgs>),
    /// Inspect and prune the conversion cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Stream a cache entry as batches and report throughput and a checksum.
    Stream(stream::StreamArgs),
    /// Score a cache entry (or a source, converted first) with an ONNX model or an inference
    /// server; writes Parquet shards and a manifest to OUT_DIR, resumable and idempotent.
    Score(Box<score::ScoreArgs>),
    /// Sliding-window features and labels per entity over event histories (Parquet/CSV);
    /// writes Parquet or TFRecord shards and a manifest to OUT_DIR, resumable.
    Windows(Box<windows::WindowsArgs>),
    /// Serve the labeling page; with --dir, also a dataset's files and a labels endpoint.
    Serve {
        /// Dataset directory (WAV/FLAC/MP3/Ogg, PNG/JPEG/WebP); labels are saved to DIR/labels.csv.
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
    /// Run kiln as a service: jobs over HTTP (JSON under /v1, OpenAPI at /v1/openapi.json),
    /// Prometheus metrics at /metrics, the labeling page at /.
    Daemon {
        /// Directory for job records (one daemon per directory).
        #[arg(long)]
        state: PathBuf,
        /// Cache directory (default: $KILN_CACHE or ~/.cache/kiln/datasets).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// HOST:PORT; an address reachable from the network needs --token.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// HOST:PORT for Arrow Flight (gRPC) batches; `none` to serve none.
        #[arg(long, default_value = "127.0.0.1:7879")]
        flight_listen: String,
        /// Required on every request as `Authorization: Bearer` (default: $KILN_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Jobs running at once.
        #[arg(long, default_value_t = 2)]
        max_jobs: usize,
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
    materialize: MaterializeArg,
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
    /// Parquet encoding of tensor values: auto (byte-stream-split for audio, dictionary for
    /// float images, plain for uint8 images), plain, byte-stream-split or dictionary.
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "byte-stream-split", "dictionary"])]
    tensor_encoding: String,
    #[arg(long, value_enum, default_value = "skip")]
    on_error: OnErrorArg,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// Items per device batch with `--backend gpu` (same-shape items run as one batch).
    #[arg(long, default_value_t = kiln::convert::DEFAULT_GPU_BATCH)]
    gpu_batch: usize,
    /// Parallel file reads and transforms (default: cores).
    #[arg(long)]
    workers: Option<usize>,
    /// An earlier entry of the same spec: rows of files unchanged since (same path, size and
    /// version) are taken from it instead of being transformed again (repeatable).
    #[arg(long)]
    reuse: Vec<PathBuf>,
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
        /// Never remove entries written or read within this long (e.g. one `convert` just
        /// reported to a job that has not opened it yet).
        #[arg(long, default_value = "10m")]
        keep_recent: String,
    },
}

fn run_convert(args: ConvertArgs) -> Result<()> {
    let spec = SpecFile::load(&args.spec)?;
    let labels = match (&args.labels, &args.label_regex) {
        (Some(file), _) => LabelRule::from_file(file)?,
        (None, Some(re)) => LabelRule::from_regex(re)?,
        (None, None) => LabelRule::ParentDir,
    };
    let backend = open_backend(args.backend)?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let table = (args.source_format == "parquet").then(|| TableColumns {
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
        materialize: args.materialize.into(),
        shard_bytes: parse_size("--shard-size", &args.shard_size)?,
        row_group_rows: args.row_group_rows,
        row_group_bytes: parse_size("--row-group-size", &args.row_group_size)?,
        zstd: args.compression == "zstd",
        tensor_encoding: args.tensor_encoding.parse()?,
        on_error: args.on_error.into(),
        backend,
        workers,
        gpu_batch: args.gpu_batch,
        // Bars draw on stderr only when it is a terminal, so they never mix with --json output.
        progress: true,
        reuse: args.reuse,
        monitor: None,
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
        if report.retried > 0 {
            eprintln!("retried {} items that failed before", report.retried);
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
            keep_recent,
        } => {
            if max_size.is_none() && max_age.is_none() {
                bail!("cache gc needs --max-size and/or --max-age");
            }
            let options = GcOptions {
                max_size: max_size.map(|s| parse_size("--max-size", &s)).transpose()?,
                max_age: max_age
                    .map(|a| args::parse_duration("--max-age", &a))
                    .transpose()?,
                keep_recent: args::parse_duration("--keep-recent", &keep_recent)?,
            };
            for key in gc(&cache.unwrap_or_else(default_cache), options)? {
                writeln!(out, "removed {key}")?;
            }
        }
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
            let pipeline = Pipeline::new(SpecFile::load(&spec)?.spec);
            let backend: AnyBackend = open_backend(backend)?;
            let (tensor, warnings) = transform_file(&pipeline, &backend, &input)?;
            for warning in warnings {
                eprintln!("kiln: warning: {}: {warning}", input.display());
            }
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
        Command::Convert(args) => run_convert(*args),
        Command::Serve { dir, listen, token } => Ok(kiln::serve::serve(kiln::serve::ServeOptions {
            listen,
            dir,
            token: token.or_else(|| std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty())),
        })?),
        Command::Cache { command } => run_cache(command),
        Command::Daemon {
            state,
            cache,
            listen,
            flight_listen,
            token,
            max_jobs,
        } => Ok(kiln::daemon::run(kiln::daemon::DaemonOptions {
            state,
            cache: cache.unwrap_or_else(default_cache),
            listen,
            flight_listen: (flight_listen != "none").then_some(flight_listen),
            token: token.or_else(|| std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty())),
            max_jobs,
        })?),
        Command::Stream(args) => stream::run(args),
        Command::Score(args) => score::run(*args),
        Command::Windows(args) => windows::run(*args),
        Command::Export {
            entry,
            format,
            output,
        } => {
            if format != "tfrecord" {
                bail!("unsupported export format {format:?} (supported: tfrecord)");
            }
            let (files, rows) = kiln::export::export_tfrecord(&entry, &output)?;
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

/// The error and its causes, like anyhow's `{:#}`, leaving out a cause its parent's message
/// already quotes (library errors name their cause in their own message).
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

pub fn main() -> ExitCode {
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
            eprintln!("kiln: error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}
