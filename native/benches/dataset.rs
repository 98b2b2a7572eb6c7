//! Conversion and streaming throughput, with Python doing the same work in the same run.
//!
//!     cargo bench -p kiln --bench dataset
//!
//! Convert: three datasets (400 one-second WAVs and 300 four-second WAVs to an 80-band log-mel,
//! 200 640x480 JPEGs through examples/imagenet.json), each at 1 worker and at every core, on
//! the GPU backend (a real GPU, or lavapipe), and as the Python pipeline in one process:
//! soundfile + librosa, or Pillow + numpy, written to Parquet (zstd) with pyarrow, so both
//! sides read, transform and write. Issue 8's targets for a 2-core machine: all workers >= 1.8x
//! one, and >= 5x Python.
//!
//! Stream: `Loader` rows/s against `pyarrow.parquet` reading the same shards, for a few
//! row-group sizes, and what shard verification costs.
//!
//! Python comes from `KILN_BENCH_PYTHON` or `~/.cache/kiln-venv/bin/python`; without it the
//! Python columns read "-".

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln::convert::{convert, ConvertOptions, OnError};
use kiln::loader::Loader;
use kiln::transform::SpecFile;
use kiln::{AnyBackend, BackendChoice};

const AUDIO_SPEC: &str = r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 400, "hop_length": 160},
    {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 80}, {"op": "power_to_db"}]}"#;
const IMAGE_SPEC: &str = include_str!("../../examples/imagenet.json");
const SHORT_WAVS: usize = 400;
const LONG_WAVS: usize = 300;
const JPEGS: usize = 200;
/// Best of this many kiln CPU conversions (each into a fresh cache); the GPU and Python run
/// fewer times, being slower.
const REPEATS: usize = 3;

/// The same work as AUDIO_SPEC / IMAGE_SPEC, one file at a time, rows written to one Parquet
/// file in row groups of about 1 MiB of tensor payload (kiln's default), tensor column without
/// dictionary encoding. Prints {"seconds": best of 2, "bytes": file size}.
const PYTHON_PIPELINE: &str = r#"
import sys, glob, json, os, time
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "audio":
    import soundfile as sf, librosa
    files = sorted(glob.glob(src + "/*/*.wav"))
    def transform(path):
        y, sr = sf.read(path, dtype="float32")
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)
        return np.asarray(librosa.power_to_db(mel), dtype=np.float32)
else:
    from PIL import Image
    files = sorted(glob.glob(src + "/*/*.jpg"))
    MEAN = np.array([0.485, 0.456, 0.406], np.float32)
    STD = np.array([0.229, 0.224, 0.225], np.float32)
    def transform(path):
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            size = (256, round(h * 256 / w)) if w <= h else (round(w * 256 / h), 256)
            im = im.resize(size, Image.BILINEAR)  # antialiased when shrinking, as kiln's resize
            left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
            im = im.crop((left, top, left + 224, top + 224))
        a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
        return np.ascontiguousarray(a.transpose(2, 0, 1))
SCHEMA = pa.schema([("path", pa.string()), ("label", pa.string()),
                    ("shape", pa.list_(pa.int32())), ("tensor", pa.list_(pa.float32()))])
def write(writer, rows):
    tensors = [t for _, t in rows]
    offsets = np.cumsum([0] + [t.size for t in tensors]).astype(np.int32)
    values = pa.array(np.concatenate([t.ravel() for t in tensors]))
    writer.write_table(pa.table({
        "path": [p for p, _ in rows],
        "label": [os.path.basename(os.path.dirname(p)) for p, _ in rows],
        "shape": [list(t.shape) for t in tensors],
        "tensor": pa.ListArray.from_arrays(pa.array(offsets), values),
    }, schema=SCHEMA))
def run():
    started = time.perf_counter()
    writer = pq.ParquetWriter(out, SCHEMA, compression="zstd", use_dictionary=["path", "label"])
    rows, payload = [], 0
    for path in files:
        t = transform(path)
        rows.append((path, t))
        payload += t.nbytes
        if payload >= 1 << 20:
            write(writer, rows)
            rows, payload = [], 0
    if rows:
        write(writer, rows)
    writer.close()
    return time.perf_counter() - started
transform(files[0])  # imports and first-call setup out of the timing
best = min(run() for _ in range(2))
print(json.dumps({"seconds": best, "bytes": os.path.getsize(out)}))
"#;

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KILN_BENCH_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln-venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn python_output(python: &Path, args: &[&std::ffi::OsStr]) -> Option<String> {
    let out = Command::new(python).args(args).output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("python failed: {}", err.lines().last().unwrap_or(""));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn python_seconds(python: &Path, script: &str, arg: &Path) -> Option<f64> {
    python_output(python, &["-c".as_ref(), script.as_ref(), arg.as_os_str()])?
        .parse()
        .ok()
}

/// Seconds and output bytes of the Python pipeline over `data` (`mode`: audio or image).
fn python_pipeline(python: &Path, mode: &str, data: &Path, out: &Path) -> Option<(f64, u64)> {
    let args = [
        "-c".as_ref(),
        PYTHON_PIPELINE.as_ref(),
        mode.as_ref(),
        data.as_os_str(),
        out.as_os_str(),
    ];
    let report: serde_json::Value = serde_json::from_str(&python_output(python, &args)?).ok()?;
    Some((report["seconds"].as_f64()?, report["bytes"].as_u64()?))
}

/// A small deterministic generator (xorshift), so the datasets are the same on every run
/// without a dependency.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn wav_writer(path: &Path) -> hound::WavWriter<BufWriter<std::fs::File>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::create(path, spec).unwrap()
}

/// `files` one-second tones in 4 class folders.
fn make_short_wavs(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("class{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = wav_writer(&dir.join(format!("{i:04}.wav")));
        let f = 100.0 + 7.0 * i as f32;
        for n in 0..16_000 {
            w.write_sample(((f * n as f32 / 16_000.0 * std::f32::consts::TAU).sin() * 9000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
    }
}

/// `files` four-second clips: a chord, a chirp and noise, in 4 class folders.
fn make_long_wavs(root: &Path, files: usize) {
    let tau = std::f32::consts::TAU;
    for i in 0..files {
        let dir = root.join(format!("class{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = wav_writer(&dir.join(format!("{i:04}.wav")));
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        let base = 110.0 * (1 + i % 4) as f32 + (i * 7 % 200) as f32;
        for n in 0..64_000 {
            let t = n as f32 / 16_000.0;
            let chord: f32 = [1.0f32, 2.0, 3.0]
                .iter()
                .map(|k| (tau * base * k * t).sin() / k)
                .sum();
            let chirp = (tau * (400.0 * t + 600.0 * t * t)).sin();
            let y = 0.4 * chord + 0.3 * chirp + 0.05 * noise.next();
            w.write_sample((y * 16_000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
}

/// `files` 640x480 JPEGs (quality 90) with gradients, plane waves and pixel noise, so decoding
/// costs what a photo does, in 4 class folders.
fn make_jpegs(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("class{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let mut noise = Noise(0x2545_F491_4F6C_DD1D ^ (i as u64 + 1));
        let (fx, fy) = (0.01 + 0.003 * (i % 11) as f32, 0.02 + 0.002 * (i % 7) as f32);
        let image = image::RgbImage::from_fn(640, 480, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let wave = 50.0 * (fx * xf + fy * yf).sin();
            let mut px = |c: f32| (c + wave + 12.0 * noise.next()).clamp(0.0, 255.0) as u8;
            image::Rgb([
                px(60.0 + 0.2 * xf),
                px(50.0 + 0.3 * yf),
                px(200.0 - 0.15 * (xf + yf)),
            ])
        });
        let file = std::fs::File::create(dir.join(format!("{i:04}.jpg"))).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(BufWriter::new(file), 90)
            .encode_image(&image)
            .unwrap();
    }
}

fn spec(json: &str) -> SpecFile {
    SpecFile::from_value(serde_json::from_str(json).unwrap()).unwrap()
}

fn options(
    source: &Path,
    include: &str,
    spec: &SpecFile,
    cache: &Path,
    workers: usize,
    backend: &AnyBackend,
) -> ConvertOptions {
    let mut options = ConvertOptions::new(source.to_string_lossy(), spec.clone(), cache);
    options.include = vec![include.into()];
    options.on_error = OnError::Fail;
    options.backend = backend.clone();
    options.workers = workers;
    options.progress = false;
    options
}

struct Dataset {
    label: String,
    dir: PathBuf,
    include: &'static str,
    spec: SpecFile,
    files: usize,
    /// PYTHON_PIPELINE's mode.
    python: &'static str,
}

/// Best files/s of `repeats` conversions, each into a fresh cache, and the entry's shard bytes.
fn kiln_rate(
    ds: &Dataset,
    scratch: &Path,
    workers: usize,
    backend: &AnyBackend,
    repeats: usize,
) -> (f64, u64) {
    let (mut best, mut bytes) = (0.0f64, 0);
    for _ in 0..repeats {
        let cache = scratch.join("cache");
        let report = convert(&options(&ds.dir, ds.include, &ds.spec, &cache, workers, backend)).unwrap();
        assert_eq!(report.rows as usize, ds.files, "{}: rows converted", ds.label);
        assert!(!report.cache_hit, "{}: a fresh cache cannot hit", ds.label);
        let manifest = kiln::cache::read_manifest(&report.entry).unwrap();
        bytes = manifest.shards.iter().map(|s| s.bytes).sum();
        best = best.max(ds.files as f64 / report.seconds);
        std::fs::remove_dir_all(&cache).unwrap();
    }
    (best, bytes)
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2}x", a / b))
}

fn convert_table(root: &Path, datasets: &[Dataset], cores: usize, python: Option<&Path>) {
    // Opened once: every GPU conversion shares the device, as the CLI's would.
    let gpu = AnyBackend::open(BackendChoice::Gpu);
    let adapter = match &gpu {
        Ok(backend) => backend.gpu().map_or("?".into(), |g| g.adapter_name().to_owned()),
        Err(e) => format!("unavailable: {e}"),
    };
    let cpu = AnyBackend::Cpu(kiln_core::CpuBackend);
    println!();
    println!(
        "convert (files/s, best of {REPEATS}; GPU and Python best of 2); GPU adapter: {adapter}, \
         device batches of {} items (--gpu-batch)",
        kiln::convert::DEFAULT_GPU_BATCH
    );
    println!(
        "{:<34} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "dataset",
        "kiln 1w",
        format!("kiln {cores}w"),
        format!("{cores}w/1w"),
        "kiln gpu",
        "Python",
        "1w/Py",
        format!("{cores}w/Py"),
        "MB kiln/Py"
    );
    for ds in datasets {
        let scratch = root.join("scratch");
        let (one, bytes) = kiln_rate(ds, &scratch, 1, &cpu, REPEATS);
        let (all, _) = kiln_rate(ds, &scratch, cores, &cpu, REPEATS);
        let gpu_rate = gpu
            .as_ref()
            .ok()
            .map(|g| format!("{:.0}", kiln_rate(ds, &scratch, cores, g, 2).0));
        let py = python.and_then(|py| {
            let out = root.join(format!("{}.parquet", ds.python));
            let result = python_pipeline(py, ds.python, &ds.dir, &out);
            let _ = std::fs::remove_file(out);
            result
        });
        let py_rate = py.map(|(s, _)| ds.files as f64 / s);
        println!(
            "{:<34} {:>9.0} {:>9.0} {:>7} {:>9} {:>9} {:>9} {:>9} {:>14}",
            ds.label,
            one,
            all,
            ratio(all, Some(one)),
            gpu_rate.unwrap_or_else(|| "-".into()),
            py_rate.map_or("-".into(), |r| format!("{r:.0}")),
            ratio(one, py_rate),
            ratio(all, py_rate),
            py.map_or(format!("{:.1}/-", bytes as f64 / 1e6), |(_, b)| format!(
                "{:.1}/{:.1}",
                bytes as f64 / 1e6,
                b as f64 / 1e6
            ))
        );
    }
    println!("(targets on 2 cores: {cores}w/1w >= 1.8x, {cores}w/Py >= 5x)");
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

fn stream_table(root: &Path, ds: &Dataset, cores: usize, python: Option<&Path>) {
    println!();
    println!("stream ({}, batch 64, best of 3)", ds.label);
    let cpu = AnyBackend::Cpu(kiln_core::CpuBackend);
    // Row-group size: loader throughput for a few settings (shards fixed at 64 MiB).
    for rg in [1u64 << 20, 4 << 20, 16 << 20] {
        let cache = root.join(format!("rg-{rg}"));
        let mut opts = options(&ds.dir, ds.include, &ds.spec, &cache, cores, &cpu);
        opts.shard_bytes = 64 << 20;
        opts.row_group_bytes = rg;
        let report = convert(&opts).unwrap();
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
        let py = python.and_then(|p| python_seconds(p, pyarrow, &report.entry));
        let py_rate = py.map(|s| ds.files as f64 / s);
        println!(
            "row groups ~{} MiB: kiln stream {:.0} rows/s, pyarrow {} rows/s, kiln/pyarrow {}",
            rg >> 20,
            best,
            py_rate.map_or("-".into(), |r| format!("{r:.0}")),
            ratio(best, py_rate)
        );
        // What shard verification costs: a loader hashes each shard once (SHA-256), the first
        // time it touches it; compare that with a whole epoch, verification included.
        let manifest = kiln::cache::read_manifest(&report.entry).unwrap();
        let start = Instant::now();
        for shard in &manifest.shards {
            kiln::cache::sha256_file(&report.entry.join(&shard.file)).unwrap();
        }
        let verify = start.elapsed().as_secs_f64();
        let epoch = ds.files as f64 / best;
        let mb = manifest.shards.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e6;
        println!(
            "  verifying {} shard(s), {mb:.1} MB: {:.1} ms, {:.0}% of an epoch ({:.0} MB/s)",
            manifest.shards.len(),
            verify * 1e3,
            100.0 * verify / epoch,
            mb / verify
        );
    }
}

fn main() {
    // Before any thread starts: keep Mesa's device-select layer quiet without a desktop session,
    // as the kiln binary does.
    if let Some((name, value)) = kiln_gpu::quiet_vulkan_env() {
        std::env::set_var(name, value);
    }
    let root = std::env::temp_dir().join(format!("kiln-bench-dataset-{}", std::process::id()));
    let python = python();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let datasets = [
        Dataset {
            label: format!("{SHORT_WAVS} x 1 s WAV -> log-mel 80"),
            dir: root.join("wav-1s"),
            include: "*.wav",
            spec: spec(AUDIO_SPEC),
            files: SHORT_WAVS,
            python: "audio",
        },
        Dataset {
            label: format!("{LONG_WAVS} x 4 s WAV -> log-mel 80"),
            dir: root.join("wav-4s"),
            include: "*.wav",
            spec: spec(AUDIO_SPEC),
            files: LONG_WAVS,
            python: "audio",
        },
        Dataset {
            label: format!("{JPEGS} x 640x480 JPEG -> imagenet"),
            dir: root.join("jpeg"),
            include: "*.jpg",
            spec: spec(IMAGE_SPEC),
            files: JPEGS,
            python: "image",
        },
    ];
    make_short_wavs(&datasets[0].dir, SHORT_WAVS);
    make_long_wavs(&datasets[1].dir, LONG_WAVS);
    make_jpegs(&datasets[2].dir, JPEGS);
    println!(
        "kiln dataset benchmark: {cores} cores; Python ({}): 1 process, soundfile + librosa or \
         Pillow + numpy, written with pyarrow",
        python
            .as_ref()
            .map_or("not found".into(), |p| p.display().to_string())
    );
    convert_table(&root, &datasets, cores, python.as_deref());
    stream_table(&root, &datasets[0], cores, python.as_deref());
    std::fs::remove_dir_all(root).unwrap();
}
