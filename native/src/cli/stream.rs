//! `kiln stream`: an entry through the loader, reporting throughput and a checksum of what was
//! delivered.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln::cache::hex;
use kiln::fsio::write_atomic;
use kiln::loader::{delivered_tensor, Loader, LoaderState};
use kiln::shards::{EntryReader, TensorColumn, TensorValues};
use sha2::{Digest, Sha256};

use super::args::{open_backend, parse_shard, BackendArg};

#[derive(clap::Args)]
pub struct StreamArgs {
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
    backend: BackendArg,
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

fn hash_values(hasher: &mut Sha256, values: TensorValues) -> u64 {
    match values {
        TensorValues::F32(v) => v.iter().for_each(|x| hasher.update(x.to_le_bytes())),
        TensorValues::U8(v) => hasher.update(v),
    }
    values.byte_len() as u64
}

pub fn run(args: StreamArgs) -> Result<()> {
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
    let backend = open_backend(args.backend)?;
    // Fixed shapes on the GPU: batches stay on the device. Varying shapes cannot be stacked
    // into one device tensor, so the spec still runs there but batches come back to the host.
    let fixed = delivered_tensor(&EntryReader::open(&args.entry)?)?.shape;
    let device_output = backend.gpu().is_some() && fixed.is_some();
    builder = builder.backend(backend.clone()).device_output(device_output);
    if let Some(path) = &args.resume {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading state {}", path.display()))?;
        let state: LoaderState =
            serde_json::from_str(&text).with_context(|| format!("invalid state {}", path.display()))?;
        builder = builder.resume(state);
    }
    let mut loader = builder.build()?;
    let gpu_before = backend.gpu().map(|g| g.stats());
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let (mut rows, mut batches, mut bytes) = (0u64, 0u64, 0u64);
    let mut ids = Vec::new();
    while args.max_batches.is_none_or(|m| batches < m) {
        let Some(batch) = loader.next() else { break };
        let batch = batch?;
        rows += batch.num_rows() as u64;
        batches += 1;
        let row_ids = batch.row_ids();
        row_ids.iter().for_each(|id| hasher.update(id.to_le_bytes()));
        if batch.records.column_by_name("tensor").is_some() {
            let tensors = TensorColumn::from_batch(&batch.records, fixed.as_deref())?;
            bytes += hash_values(&mut hasher, tensors.all_values());
        }
        if let (Some(gpu), Some(device)) = (backend.gpu(), &batch.device) {
            // Read back only to checksum what the device holds.
            let tensor = gpu.read(device)?;
            let values = match &tensor.data {
                kiln_core::TensorData::U8(v) => TensorValues::U8(v),
                kiln_core::TensorData::F32(v) | kiln_core::TensorData::C64(v) => TensorValues::F32(v),
            };
            bytes += hash_values(&mut hasher, values);
        }
        if args.ids {
            ids.extend(row_ids);
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let checksum = hex(&hasher.finalize())[..16].to_owned();
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
        if let (Some(gpu), Some(before)) = (backend.gpu(), gpu_before) {
            // Includes the readbacks this command makes to checksum device batches.
            report["gpu"] = serde_json::to_value(gpu.stats().since(before))?;
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
