//! Conversion and streaming throughput, with Python doing the same work in the same run:
//! librosa + soundfile computing the same log-mel spec per file (files/s), and
//! `pyarrow.parquet` reading the same shards (rows/s).
//!
//!     cargo bench -p kiln --bench dataset
//!
//! Python comes from `KILN_BENCH_PYTHON` or `~/.cache/kiln-venv/bin/python`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln::cache::Materialize;
use kiln::convert::{convert, ConvertOptions, OnError};
use kiln::items::LabelRule;
use kiln::loader::Loader;
use kiln::transform::SpecFile;

const SPEC: &str = r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 400, "hop_length": 160},
    {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 80}, {"op": "power_to_db"}]}"#;
const FILES: usize = 400;

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KILN_BENCH_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln-venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn python_seconds(python: &Path, script: &str, arg: &Path) -> Option<f64> {
    let out = Command::new(python).args(["-c", script]).arg(arg).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn make_dataset(root: &Path) {
    for i in 0..FILES {
        let dir = root.join(format!("class{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(dir.join(format!("{i:04}.wav")), spec).unwrap();
        let f = 100.0 + 7.0 * i as f32;
        for n in 0..16_000 {
            w.write_sample(((f * n as f32 / 16_000.0 * std::f32::consts::TAU).sin() * 9000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
    }
}

fn options(
    source: &Path,
    cache: &Path,
    workers: usize,
    shard_bytes: u64,
    row_group_bytes: u64,
) -> ConvertOptions {
    ConvertOptions {
        source: source.to_string_lossy().into_owned(),
        table: None,
        include: vec!["*.wav".into()],
        spec: SpecFile::from_value(serde_json::from_str(SPEC).unwrap()).unwrap(),
        cache: cache.to_owned(),
        labels: LabelRule::ParentDir,
        materialize: Materialize::Tensor,
        shard_bytes,
        row_group_rows: None,
        row_group_bytes,
        zstd: true,
        on_error: OnError::Skip,
        backend: kiln::AnyBackend::Cpu(kiln_core::CpuBackend),
        workers,
        progress: false,
    }
}

fn stream_rows_per_s(entry: &Path) -> f64 {
    let start = Instant::now();
    let loader = Loader::builder(entry)
        .batch_size(64)
        .epochs(Some(1))
        .build()
        .unwrap();
    let rows: usize = loader.map(|b| b.unwrap().records.num_rows()).sum();
    rows as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let root = std::env::temp_dir().join(format!("kiln-bench-dataset-{}", std::process::id()));
    let data = root.join("data");
    make_dataset(&data);
    let python = python();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("kiln dataset benchmark: {FILES} one-second 16 kHz WAVs, 80-band log-mel, {cores} cores");

    for workers in [1, cores] {
        let cache = root.join(format!("cache-{workers}"));
        let report = convert(&options(&data, &cache, workers, 64 << 20, 8 << 20)).unwrap();
        println!(
            "kiln convert, {workers} worker(s): {:.0} files/s",
            FILES as f64 / report.seconds
        );
    }
    let librosa = r#"
import sys, glob, time, numpy as np, soundfile as sf, librosa
files = sorted(glob.glob(sys.argv[1] + "/*/*.wav"))
t = time.perf_counter()
for f in files:
    y, sr = sf.read(f, dtype="float32")
    np.asarray(librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)), dtype=np.float32)
print(time.perf_counter() - t)
"#;
    if let Some(py) = &python {
        if let Some(s) = python_seconds(py, librosa, &data) {
            println!("librosa + soundfile, 1 process: {:.0} files/s", FILES as f64 / s);
        }
    }

    // Row-group size: loader throughput for a few settings (shards fixed at 64 MiB).
    for rg in [1u64 << 20, 4 << 20, 16 << 20] {
        let cache = root.join(format!("rg-{rg}"));
        let report = convert(&options(&data, &cache, cores, 64 << 20, rg)).unwrap();
        let mut best = 0.0f64;
        for _ in 0..3 {
            best = best.max(stream_rows_per_s(&report.entry));
        }
        let pyarrow = r#"
import sys, glob, time, pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/*.parquet"))
best = 1e9
for _ in range(3):
    t = time.perf_counter()
    rows = 0
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(batch_size=64):
            rows += b.num_rows
    best = min(best, time.perf_counter() - t)
print(best)
"#;
        let py = python
            .as_ref()
            .and_then(|p| python_seconds(p, pyarrow, &report.entry));
        let ratio = py.map_or("-".into(), |s| format!("{:.2}x", best / (FILES as f64 / s)));
        println!(
            "row groups ~{} MiB: kiln stream {:.0} rows/s, pyarrow {} rows/s, kiln/pyarrow {ratio}",
            rg >> 20,
            best,
            py.map_or("-".into(), |s| format!("{:.0}", FILES as f64 / s))
        );
        // What shard verification costs: a loader hashes each shard once (SHA-256), the first
        // time it touches it; compare that with a whole epoch, verification included.
        let manifest = kiln::cache::read_manifest(&report.entry).unwrap();
        let start = Instant::now();
        for shard in &manifest.shards {
            kiln::cache::sha256_file(&report.entry.join(&shard.file)).unwrap();
        }
        let verify = start.elapsed().as_secs_f64();
        let epoch = FILES as f64 / best;
        println!(
            "  verifying {} shard(s), {:.1} MB: {:.1} ms, {:.0}% of an epoch ({:.0} MB/s)",
            manifest.shards.len(),
            manifest.shards.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e6,
            verify * 1e3,
            100.0 * verify / epoch,
            manifest.shards.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e6 / verify
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}
