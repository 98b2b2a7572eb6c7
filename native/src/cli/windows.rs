//! `kiln windows`: clap arguments onto [`kiln::windows`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln::windows::{windows, Events, OutputFormat, WindowSpec, WindowsOptions, DEFAULT_MEMORY};

use super::args::parse_size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Parquet,
    Tfrecord,
}

#[derive(clap::Args)]
pub struct WindowsArgs {
    /// Events: Parquet or CSV files (a directory, object-store URL or one local file).
    events: String,
    /// Column naming each event's entity (customer, device, account).
    #[arg(long)]
    entity: String,
    /// Column with each event's time (timestamp, date, epoch microseconds or RFC 3339).
    #[arg(long)]
    time: String,
    /// Windows spec (JSON: period, every, offset, closed, min_events, start, end, step,
    /// features, label).
    #[arg(long)]
    spec: PathBuf,
    /// Output directory: part-NNNNN shards and manifest.json.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Label events, when the label is not computed from EVENTS (same entity and time columns).
    #[arg(long)]
    labels: Option<String>,
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
    /// Threads reading files and windowing partitions (default: cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Memory the run may hold (e.g. 512MB); past it, partitions spill to OUT_DIR/_spill.
    #[arg(long)]
    memory: Option<String>,
    /// Print one JSON object (the report) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: WindowsArgs) -> Result<()> {
    let spec_json = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading spec {}", args.spec.display()))?;
    // Spec errors name the spec file; the run's own errors name theirs.
    WindowSpec::parse(&spec_json).with_context(|| format!("spec {}", args.spec.display()))?;
    let options = WindowsOptions {
        events: Events::Location(args.events.clone()),
        labels: args.labels.clone().map(Events::Location),
        entity: args.entity.clone(),
        time: args.time.clone(),
        spec_json,
        output: args.output.clone(),
        format: match args.format {
            FormatArg::Parquet => OutputFormat::Parquet,
            FormatArg::Tfrecord => OutputFormat::Tfrecord,
        },
        workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        memory: match &args.memory {
            Some(text) => parse_size("--memory", text)?,
            None => DEFAULT_MEMORY,
        },
        progress: !args.json,
    };
    let report = windows(&options)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else if report.already_complete {
        eprintln!(
            "{} already holds these windows ({} rows); nothing to do",
            report.output.display(),
            report.rows
        );
    } else {
        eprintln!(
            "{} windows of {} entities from {} events in {:.1} s ({:.0} events/s); {} shards in {}",
            report.rows,
            report.entities,
            report.events,
            report.seconds,
            report.events_per_s,
            report.shards,
            report.output.display()
        );
    }
    Ok(())
}
