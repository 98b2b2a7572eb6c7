//! Kernel timings on both backends, with librosa/Pillow timed on the same inputs in the same
//! run for ratios (when a Python with librosa and Pillow is found: `KILN_BENCH_PYTHON`, or
//! `~/.cache/kiln-venv/bin/python`).
//!
//!     cargo bench -p kiln --bench kernels
//!
//! Times are medians over repeated runs of the hot path only: decoding happens once, plans are
//! built before timing (as a loader reuses them), and GPU times include upload and readback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_core::{Backend, CpuBackend, Pipeline, Spec, Tensor};
use kiln_gpu::GpuBackend;

fn median_time(mut run: impl FnMut(), min_total: Duration) -> Duration {
    run();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < min_total && samples.len() < 200) {
        let t = Instant::now();
        run();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

struct Case {
    name: &'static str,
    spec: &'static str,
    input: PathBuf,
    python: &'static str,
}

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KILN_BENCH_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln-venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import librosa, PIL"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Median seconds of `statement` after `setup`, timed by Python itself.
fn python_time(python: &Path, setup: &str, statement: &str) -> Option<f64> {
    let script = format!(
        "import timeit, statistics\n{setup}\nstmt = lambda: {statement}\nstmt()\n\
         n = max(1, int(0.2 / max(1e-6, timeit.timeit(stmt, number=1))))\n\
         print(statistics.median(timeit.repeat(stmt, number=n, repeat=7)) / n)"
    );
    let out = Command::new(python).args(["-c", &script]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let refdata = root.join("../shared/refdata/public/inputs");
    let jpeg = refdata.join("img_jpeg_rgb_640x480_q90.jpg");
    let audio = root.join("examples/tones_16k.wav");
    // 10 s of audio: the 1 s example repeated, so per-call overhead does not dominate.
    let long_audio = std::env::temp_dir().join("kiln-bench-10s.wav");
    {
        let mut reader = hound::WavReader::open(&audio).expect("example wav");
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let mut writer = hound::WavWriter::create(&long_audio, spec).unwrap();
        for _ in 0..10 {
            samples.iter().for_each(|&s| writer.write_sample(s).unwrap());
        }
        writer.finalize().unwrap();
    }
    let cases = [
        Case {
            name: "stft |X|^2 n_fft=2048 hop=512, 10 s @16k",
            spec: r#"{"ops":[{"op":"load_audio"},{"op":"stft","n_fft":2048,"hop_length":512},{"op":"magnitude","power":2.0}]}"#,
            input: long_audio.clone(),
            python: "np.abs(librosa.stft(y, n_fft=2048, hop_length=512))**2",
        },
        Case {
            name: "stft |X| n_fft=400 hop=160, 10 s @16k",
            spec: r#"{"ops":[{"op":"load_audio"},{"op":"stft","n_fft":400,"hop_length":160},{"op":"magnitude"}]}"#,
            input: long_audio.clone(),
            python: "np.abs(librosa.stft(y, n_fft=400, hop_length=160))",
        },
        Case {
            name: "log-mel 80 n_fft=400 hop=160, 10 s @16k",
            spec: r#"{"ops":[{"op":"load_audio"},{"op":"stft","n_fft":400,"hop_length":160},{"op":"magnitude","power":2.0},{"op":"mel","n_mels":80},{"op":"power_to_db"}]}"#,
            input: long_audio.clone(),
            python: "librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=80))",
        },
        Case {
            name: "resize 640x480 -> 224x224 bilinear (RGB)",
            spec: r#"{"ops":[{"op":"decode_image","mode":"RGB"},{"op":"resize","height":224,"width":224,"filter":"bilinear"}]}"#,
            input: jpeg.clone(),
            python: "img.resize((224, 224), Image.Resampling.BILINEAR)",
        },
        Case {
            name: "resize 640x480 -> 224x224 lanczos (RGB)",
            spec: r#"{"ops":[{"op":"decode_image","mode":"RGB"},{"op":"resize","height":224,"width":224,"filter":"lanczos"}]}"#,
            input: jpeg.clone(),
            python: "img.resize((224, 224), Image.Resampling.LANCZOS)",
        },
        Case {
            name: "Resize(256)+CenterCrop(224)+Normalize+CHW",
            spec: r#"{"ops":[{"op":"decode_image","mode":"RGB"},{"op":"resize","shorter_side":256,"filter":"bilinear"},{"op":"center_crop","height":224,"width":224},{"op":"to_float"},{"op":"normalize","mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]},{"op":"layout","to":"chw"}]}"#,
            input: jpeg.clone(),
            python: "((np.asarray(img.resize((341, 256), Image.Resampling.BILINEAR))[16:240, 58:282].astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)",
        },
    ];
    let gpu = GpuBackend::new().ok();
    let python = python();
    println!("kiln kernel benchmark (median per call; ratios > 1 mean kiln is faster)");
    println!(
        "GPU: {}",
        gpu.as_ref()
            .map_or("none found".into(), |g| g.adapter_name().to_string())
    );
    println!(
        "reference: {}",
        python.as_ref().map_or(
            "no Python with librosa + Pillow found: ratios skipped".into(),
            |p| p.display().to_string()
        )
    );
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "case", "kiln cpu", "kiln gpu", "python", "cpu/py", "gpu/py"
    );
    for case in &cases {
        let pipeline = Pipeline::new(Spec::from_json(case.spec).unwrap());
        let bytes = std::fs::read(&case.input).unwrap();
        let (decoded, key) = pipeline.decode(&bytes).unwrap();
        let plan = pipeline.plan(key).unwrap();
        let time_on = |backend: &dyn Backend| {
            median_time(
                || {
                    let out: Tensor = backend.execute(&plan, decoded.clone()).unwrap();
                    std::hint::black_box(out);
                },
                Duration::from_secs(2),
            )
        };
        let cpu = time_on(&CpuBackend);
        let gpu_time = gpu.as_ref().map(|g| time_on(g));
        let input = case.input.display().to_string();
        let load = if case.input.extension().is_some_and(|e| e == "jpg") {
            format!("img = Image.open({input:?}).convert('RGB'); img.load()")
        } else {
            format!("y = sf.read({input:?}, dtype='float32')[0]")
        };
        let setup = format!(
            "import numpy as np, librosa, soundfile as sf\nfrom PIL import Image\n{load}\n\
             mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)"
        );
        let py = python.as_ref().and_then(|p| python_time(p, &setup, case.python));
        let ms = |d: f64| format!("{:.3} ms", d * 1e3);
        let ratio = |ours: Option<Duration>| match (ours, py) {
            (Some(o), Some(p)) => format!("{:.2}x", p / o.as_secs_f64()),
            _ => "-".into(),
        };
        println!(
            "{:<46} {:>10} {:>10} {:>10} {:>9} {:>9}",
            case.name,
            ms(cpu.as_secs_f64()),
            gpu_time.map_or("-".into(), |g| ms(g.as_secs_f64())),
            py.map_or("-".into(), ms),
            ratio(Some(cpu)),
            ratio(gpu_time),
        );
    }
    jpeg_decode_comparison(&jpeg, python.as_deref());
    bare_fft_comparison(&long_audio);
    if let Some(gpu) = &gpu {
        batched_log_mel(gpu);
    }
}

/// JPEG decoding, kiln's exact decoder against Pillow's libjpeg-turbo (SIMD) on the same
/// files: the reference JPEG (baseline 4:2:0) and, written by Pillow in this run, the same
/// pixels as progressive 4:2:0 and baseline 4:4:4.
fn jpeg_decode_comparison(jpeg: &Path, python: Option<&Path>) {
    use kiln_core::image::decode::decode_image;
    use kiln_core::spec::ImageMode;
    println!("JPEG decode to RGB, 640x480 (median per call): kiln vs Pillow {{open + convert('RGB')}}");
    let mut files = vec![("baseline 4:2:0 q90", jpeg.to_path_buf())];
    if let Some(python) = python {
        for (label, name, options) in [
            (
                "progressive 4:2:0 q90",
                "kiln-bench-progressive.jpg",
                "quality=90, progressive=True",
            ),
            (
                "baseline 4:4:4 q90",
                "kiln-bench-444.jpg",
                "quality=90, subsampling='4:4:4'",
            ),
        ] {
            let out = std::env::temp_dir().join(name);
            let script = format!(
                "from PIL import Image; Image.open({:?}).convert('RGB').save({:?}, 'JPEG', {options})",
                jpeg.display().to_string(),
                out.display().to_string()
            );
            if Command::new(python)
                .args(["-c", &script])
                .status()
                .is_ok_and(|s| s.success())
            {
                files.push((label, out));
            }
        }
    }
    for (label, path) in files {
        let bytes = std::fs::read(&path).unwrap();
        let kiln = median_time(
            || {
                std::hint::black_box(decode_image(&bytes, Some(ImageMode::Rgb)).unwrap());
            },
            Duration::from_secs(2),
        );
        let py = python.and_then(|p| {
            python_time(
                p,
                &format!(
                    "from PIL import Image\nimport io\ndata = open({:?}, 'rb').read()",
                    path.display().to_string()
                ),
                "Image.open(io.BytesIO(data)).convert('RGB').load()",
            )
        });
        println!(
            "  {:<24} kiln {:>9.3} ms   Pillow {:>9}   ratio {}",
            label,
            kiln.as_secs_f64() * 1e3,
            py.map_or("-".into(), |p| format!("{:.3} ms", p * 1e3)),
            py.map_or("-".into(), |p| format!("{:.2}x", p / kiln.as_secs_f64()))
        );
    }
}

/// The issue's per-core bar: kiln's STFT and log-mel against the bare cost of the same frames
/// through realfft (window multiply + forward real FFT, nothing else), in one run.
fn bare_fft_comparison(audio: &Path) {
    use realfft::RealFftPlanner;
    let bytes = std::fs::read(audio).unwrap();
    println!(
        "per core: kiln against bare realfft on the same frames (10 s @16k, one thread; \
         kiln's time without the copy of its input that each timed call makes)"
    );
    for (n_fft, hop, log_mel) in [(400usize, 160usize, false), (400, 160, true), (2048, 512, false)] {
        let ops = if log_mel {
            format!(
                r#"{{"ops":[{{"op":"load_audio"}},{{"op":"stft","n_fft":{n_fft},"hop_length":{hop}}},{{"op":"magnitude","power":2.0}},{{"op":"mel","n_mels":80}},{{"op":"power_to_db"}}]}}"#
            )
        } else {
            format!(
                r#"{{"ops":[{{"op":"load_audio"}},{{"op":"stft","n_fft":{n_fft},"hop_length":{hop}}},{{"op":"magnitude","power":2.0}}]}}"#
            )
        };
        let pipeline = Pipeline::new(Spec::from_json(&ops).unwrap());
        let (decoded, key) = pipeline.decode(&bytes).unwrap();
        let plan = pipeline.plan(key).unwrap();
        let with_copy = median_time(
            || {
                std::hint::black_box(CpuBackend.execute(&plan, decoded.clone()).unwrap());
            },
            Duration::from_secs(1),
        );
        // `execute` consumes its input, so each call above copies the clip first; a loader
        // moves the decoded clip in instead. That copy is not kiln's work: take it out.
        let copy = median_time(
            || {
                std::hint::black_box(decoded.clone());
            },
            Duration::from_secs(1),
        );
        let kiln = with_copy.saturating_sub(copy);
        let signal = decoded.as_f32().unwrap().to_vec();
        let frames = 1 + signal.len() / hop;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        let window: Vec<f32> = (0..n_fft)
            .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / n_fft as f32).cos())
            .collect();
        let mut input = fft.make_input_vec();
        let mut output = fft.make_output_vec();
        let mut scratch = fft.make_scratch_vec();
        let bare = median_time(
            || {
                for f in 0..frames {
                    let start = (f * hop).min(signal.len().saturating_sub(n_fft));
                    for (i, x) in input.iter_mut().enumerate() {
                        *x = signal.get(start + i).copied().unwrap_or(0.0) * window[i];
                    }
                    fft.process_with_scratch(&mut input, &mut output, &mut scratch)
                        .unwrap();
                    std::hint::black_box(&output);
                }
            },
            Duration::from_secs(1),
        );
        println!(
            "  {:<34} kiln {:>9.3} ms  bare realfft {:>9.3} ms  kiln/bare {:.2}x",
            if log_mel {
                format!("log-mel 80, n_fft={n_fft}")
            } else {
                format!("stft |X|^2, n_fft={n_fft}")
            },
            kiln.as_secs_f64() * 1e3,
            bare.as_secs_f64() * 1e3,
            kiln.as_secs_f64() / bare.as_secs_f64()
        );
    }
}

/// GPU-resident batched log-mel: 1,024 one-second clips as one batch, left on the device
/// (the form a training step consumes), timed to completion on the device.
fn batched_log_mel(gpu: &GpuBackend) {
    let spec = r#"{"ops":[{"op":"load_audio"},{"op":"stft","n_fft":400,"hop_length":160},{"op":"magnitude","power":2.0},{"op":"mel","n_mels":80},{"op":"power_to_db"}]}"#;
    let pipeline = Pipeline::new(Spec::from_json(spec).unwrap());
    let plan = pipeline
        .plan(kiln_core::PlanKey::Audio {
            channels: None,
            sample_rate: 16_000,
        })
        .unwrap();
    for clips in [64usize, 1024] {
        let inputs: Vec<Tensor> = (0..clips)
            .map(|c| {
                Tensor::f32(
                    vec![16_000],
                    (0..16_000)
                        .map(|i| ((i * (c + 1)) as f32 * 0.001).sin())
                        .collect(),
                )
            })
            .collect();
        // The host copy of the inputs is made outside the timed part.
        let run = |batch: Vec<Tensor>| {
            let started = Instant::now();
            let out = gpu.execute_batch_resident(&plan, batch).unwrap();
            gpu.device().poll(wgpu::PollType::wait_indefinitely()).unwrap();
            std::hint::black_box(out);
            started.elapsed()
        };
        run(inputs.clone());
        let mut samples: Vec<Duration> = (0..7).map(|_| run(inputs.clone())).collect();
        samples.sort();
        let with_upload = samples[samples.len() / 2];
        let before = gpu.stats();
        run(inputs.clone());
        let cost = gpu.stats();
        println!(
            "GPU batched log-mel, {clips} clips of 1 s, resident: {:.2} ms with upload ({:.0} clips/s); \
             {} upload, {} submission, {} readback per batch",
            with_upload.as_secs_f64() * 1e3,
            clips as f64 / with_upload.as_secs_f64(),
            cost.uploads - before.uploads,
            cost.submissions - before.submissions,
            cost.readbacks - before.readbacks,
        );
    }
}
