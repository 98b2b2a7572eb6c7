//! `kiln score`: clap arguments onto [`kiln::score`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use kiln::score::{score, Backoff, EndpointOptions, Engine, ModelSource, ScoreOptions};
use kiln::transform::SpecFile;

use super::args::{default_cache, parse_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// tract: pure Rust, in every build.
    Tract,
    /// ONNX Runtime loaded from --ort-lib (builds with the `onnxruntime` feature).
    Onnxruntime,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("model_source").required(true).args(["model", "endpoint"])))]
pub struct ScoreArgs {
    /// A cache entry directory, or any source `kiln convert` accepts (then give --spec).
    input: String,
    /// ONNX model run in this process, loaded once per run and shared by the workers.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Model server speaking the Open Inference Protocol v2 REST API (Triton, KServe,
    /// MLServer), e.g. http://127.0.0.1:8000.
    #[arg(long, requires = "model_name")]
    endpoint: Option<String>,
    /// The model's name on the endpoint.
    #[arg(long)]
    model_name: Option<String>,
    /// A model version on the endpoint (default: the server's choice).
    #[arg(long, requires = "endpoint")]
    model_version: Option<String>,
    /// Output directory: part-NNNNN.parquet shards and manifest.json.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Transform spec, to convert INPUT first (cached as `kiln convert` does).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Cache directory for that conversion (default: $KILN_CACHE or ~/.cache/kiln/datasets).
    #[arg(long)]
    cache: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// In-process model workers, each single-threaded (default: cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Endpoint requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Retries after the first attempt, on connection errors, timeouts, 429 and 5xx.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Per request: connecting, sending and reading the answer.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// At most this many requests per second (retries included).
    #[arg(long)]
    max_rps: Option<f64>,
    /// The model input to feed, for models or endpoints with several.
    #[arg(long)]
    input_name: Option<String>,
    /// In-process engine.
    #[arg(long, value_enum, default_value = "tract", requires = "model")]
    engine: EngineArg,
    /// libonnxruntime.so for --engine onnxruntime (default: $ORT_DYLIB_PATH), e.g. the
    /// onnxruntime wheel's onnxruntime/capi/libonnxruntime.so.1.*.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Rows per output shard for a new output (rounded up to whole batches); the unit a
    /// killed run redoes.
    #[arg(long, default_value_t = kiln::score::DEFAULT_SHARD_ROWS)]
    shard_rows: usize,
    /// Print one JSON object (output, rows, scored, failed, seconds, rows_per_s) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let model = match (&args.model, &args.endpoint) {
        (Some(path), None) => ModelSource::Onnx {
            path: path.clone(),
            engine: match args.engine {
                EngineArg::Tract => Engine::Tract,
                EngineArg::Onnxruntime => Engine::OnnxRuntime {
                    library: args.ort_lib.clone(),
                },
            },
        },
        (None, Some(url)) => ModelSource::Endpoint(EndpointOptions {
            url: url.clone(),
            model_name: args.model_name.clone().unwrap_or_default(),
            model_version: args.model_version.clone(),
            input_name: args.input_name.clone(),
            concurrency: args.concurrency,
            retries: args.retries,
            timeout: parse_duration("--timeout", &args.timeout)?,
            max_rps: args.max_rps,
            backoff: Backoff::default(),
        }),
        _ => bail!("give either --model or --endpoint"),
    };
    let mut options = ScoreOptions::new(args.input.clone(), model, args.output.clone());
    options.spec = args.spec.as_deref().map(SpecFile::load).transpose()?;
    options.cache = args.cache.clone().unwrap_or_else(default_cache);
    options.input_name = args.input_name.clone();
    options.batch_size = args.batch_size;
    if let Some(workers) = args.workers {
        options.workers = workers;
    }
    options.shard_rows = args.shard_rows;
    let report = score(&options)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        // The row list is in the manifest; one line of stdout stays one small object.
        if let Some(object) = json.as_object_mut() {
            object.remove("failures");
        }
        writeln!(out, "{json}")?;
    } else {
        eprintln!(
            "scored {} rows in {:.1} s ({:.0} rows/s); {} rows in {}",
            report.scored,
            report.seconds,
            report.rows_per_s,
            report.rows,
            report.output.display()
        );
        for failure in report.failures.iter().take(20) {
            eprintln!("failed: {}: {}", failure.path, failure.error);
        }
    }
    if report.failed > 0 {
        bail!(
            "{} rows failed to score (listed in {}); run the same command again to retry them",
            report.failed,
            report.output.join("manifest.json").display()
        );
    }
    Ok(())
}
