//! The first stage: list the source, work out every item's label and the entry's key.

use crate::cache::{cache_key, Failure};
use crate::error::{Error, Result};
use crate::items::{label_names, Source, SourceItem};
use crate::shards::Layout;

use super::ConvertOptions;

/// More parallel transforms than this only costs memory.
pub const MAX_WORKERS: usize = 1024;
/// Items per GPU batch by default: enough to fill a device's queue with small items while a
/// batch of ImageNet-sized images stays within a few hundred MB of device memory.
pub const DEFAULT_GPU_BATCH: usize = 64;
pub const MAX_GPU_BATCH: usize = 4096;

/// What one conversion works on.
#[derive(Debug)]
pub(super) struct Job {
    pub source: std::sync::Arc<Source>,
    pub items: Vec<SourceItem>,
    /// What becomes a row: the listed files, or the rows of the listed Parquet files.
    pub units: Vec<String>,
    pub labels: Vec<Option<String>>,
    /// Sorted label names; a label's index is its position.
    pub names: Vec<String>,
    pub label_rule: String,
    pub key: String,
    pub layout: Layout,
    pub listing_failures: Vec<Failure>,
}

pub(super) fn check_options(opts: &ConvertOptions) -> Result<()> {
    if opts.workers == 0 || opts.workers > MAX_WORKERS {
        return Err(Error::invalid(
            "--workers",
            format!("{} is not in 1..={MAX_WORKERS}", opts.workers),
        ));
    }
    if opts.gpu_batch == 0 || opts.gpu_batch > MAX_GPU_BATCH {
        return Err(Error::invalid(
            "--gpu-batch",
            format!("{} is not in 1..={MAX_GPU_BATCH}", opts.gpu_batch),
        ));
    }
    if opts.materialize == crate::cache::Materialize::Table {
        return Err(Error::invalid(
            "--materialize",
            "table entries hold a materialized DataFrame (kiln.spark.make_spark_converter); \
             convert writes tensor or raw entries",
        ));
    }
    if opts.shard_bytes == 0 {
        return Err(Error::invalid("--shard-size", "must be at least 1 byte"));
    }
    if opts.row_group_rows == Some(0) || opts.row_group_bytes == 0 {
        return Err(Error::invalid("--row-group-size", "must be at least 1"));
    }
    Ok(())
}

pub(super) async fn plan(opts: &ConvertOptions, layout: Layout) -> Result<Job> {
    let source = Source::open(&opts.source)?;
    let listing = source.list(&opts.include).await?;
    if listing.items.is_empty() && listing.failures.is_empty() {
        return Err(Error::Source {
            location: opts.source.clone(),
            message: if opts.include.is_empty() {
                "has no files".into()
            } else {
                format!("has no files matching {:?}", opts.include)
            },
        });
    }
    let (units, labels): (Vec<String>, Vec<Option<String>>) = match &opts.table {
        None => {
            let labels = listing.items.iter().map(|i| opts.labels.label(&i.path)).collect();
            (listing.items.iter().map(|i| i.path.clone()).collect(), labels)
        }
        Some(columns) => {
            let rows = crate::items::table::list_rows(&source, &listing.items, columns).await?;
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
    let key = cache_key(
        &listing.items,
        &opts.spec.json,
        &label_rule,
        opts.materialize.name(),
    );
    Ok(Job {
        source: std::sync::Arc::new(source),
        items: listing.items,
        units,
        labels,
        names,
        label_rule,
        key,
        layout,
        listing_failures: listing.failures,
    })
}
