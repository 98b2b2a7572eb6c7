//! The GPU backend against the CPU reference on inputs and parameters beyond the reference
//! sets: integer image outputs must be identical, float outputs within stated tolerances.

use kiln_core::image::ImageDims;
use kiln_core::{Backend, Pipeline, PlanKey, Spec, Tensor};
use serde_json::{json, Value};

use crate::backends::{cpu, gpu};
use crate::compare::{close_f32, f32s, u8s};
use crate::wav_formats::wav_bytes;

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Sines plus noise, `channels x samples`, scaled like real audio.
pub fn test_signal(rng: &mut Rng, channels: usize, samples: usize, rate: f32) -> Vec<f32> {
    (0..channels)
        .flat_map(|c| {
            let f = 220.0 * (c + 1) as f32;
            (0..samples)
                .map(|i| {
                    let t = i as f32 / rate;
                    0.4 * (std::f32::consts::TAU * f * t).sin()
                        + 0.2 * (std::f32::consts::TAU * 3100.0 * t).sin()
                })
                .collect::<Vec<_>>()
        })
        .map(|x| x + 0.05 * rng.unit())
        .collect()
}

fn run_audio(
    backend: &dyn Backend,
    spec: &Value,
    signal: &[f32],
    channels: usize,
    rate: u32,
) -> kiln_core::Result<Tensor> {
    let pipeline = Pipeline::new(Spec::from_value(spec).expect("spec"));
    let samples = signal.len() / channels;
    let (shape, layout) = if channels == 1 {
        (vec![samples], None)
    } else {
        (vec![channels, samples], Some(channels))
    };
    let plan = pipeline.plan(PlanKey::Audio {
        channels: layout,
        sample_rate: rate,
    })?;
    backend.execute(&plan, Tensor::f32(shape, signal.to_vec()))
}

#[test]
fn gpu_audio_matches_cpu_across_parameters() {
    let load = json!({"op": "load_audio", "mono": false});
    let cases: Vec<(Value, usize, usize)> = vec![
        (
            json!([{"op": "stft", "n_fft": 400, "hop_length": 160}, {"op": "magnitude"}]),
            1,
            16_000,
        ),
        (
            json!([{"op": "stft", "n_fft": 999, "hop_length": 100, "win_length": 700, "window": "hamming"}, {"op": "magnitude", "power": 2.0}]),
            2,
            9_000,
        ),
        (
            json!([{"op": "stft", "n_fft": 512, "hop_length": 128, "center": false, "window": "ones"}, {"op": "magnitude", "power": 1.5}]),
            1,
            5_000,
        ),
        (
            json!([{"op": "stft", "n_fft": 1024, "pad_mode": "reflect"}, {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 64, "fmin": 50.0, "fmax": 7000.0, "htk": true, "norm": null}]),
            3,
            12_345,
        ),
        (
            json!([{"op": "stft", "n_fft": 2048, "hop_length": 512}, {"op": "magnitude", "power": 2.0}, {"op": "mel"}, {"op": "power_to_db", "ref": "max", "top_db": null}]),
            1,
            300,
        ),
        (
            json!([{"op": "stft", "n_fft": 400, "hop_length": 160}, {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 40}, {"op": "power_to_db"}, {"op": "mfcc", "n_mfcc": 13}]),
            2,
            16_000,
        ),
        (json!([{"op": "stft", "n_fft": 256, "hop_length": 64}]), 1, 2_000),
    ];
    let mut rng = Rng::new(7);
    for (ops, channels, samples) in cases {
        let mut all = vec![load.clone()];
        all.extend(ops.as_array().unwrap().iter().cloned());
        let spec = json!({"ops": all});
        let signal = test_signal(&mut rng, channels, samples, 16_000.0);
        let want = run_audio(cpu(), &spec, &signal, channels, 16_000).expect("cpu");
        let got = run_audio(gpu(), &spec, &signal, channels, 16_000).expect("gpu");
        assert_eq!(got.shape, want.shape, "{spec}");
        let (got_v, want_v) = match (got.as_c64(), want.as_c64()) {
            (Some(g), Some(w)) => (g.to_vec(), w.to_vec()),
            _ => (f32s(&got).to_vec(), f32s(&want).to_vec()),
        };
        let is_db = spec.to_string().contains("power_to_db");
        let peak = want_v.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
        // f32 DFT on the device vs f32 FFT on the host: both ~1e-7 relative to the peak; dB
        // values are compared in dB, where low-energy bins amplify that relative error.
        let (atol, rtol) = if is_db { (0.05, 0.0) } else { (2e-5 * peak, 1e-4) };
        let worst = close_f32(&got_v, &want_v, atol, rtol).unwrap_or_else(|e| panic!("{spec}: {e}"));
        eprintln!("gpu vs cpu {:?}: max |diff| {worst:e} (peak {peak:e})", got.shape);
    }
}

#[test]
fn fix_length_gives_both_backends_the_shape_the_spec_promises() {
    let spec = json!({"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": 16_000},
        {"op": "stft", "n_fft": 400, "hop_length": 160}, {"op": "magnitude", "power": 2.0},
        {"op": "mel", "n_mels": 80}, {"op": "power_to_db"}]});
    let spec = Spec::from_value(&spec).expect("spec");
    let shape = spec.output().shape.expect("fix_length fixes the shape");
    assert_eq!(shape, vec![80, 101]);
    let pipeline = Pipeline::new(spec);
    let mut rng = Rng::new(13);
    // Shorter (padded), exact, longer (trimmed), and stereo (mixed to mono first).
    for (channels, frames) in [(1, 3_000), (1, 16_000), (1, 40_000), (2, 20_000)] {
        let planar = test_signal(&mut rng, channels, frames, 16_000.0);
        let interleaved: Vec<f32> = (0..frames)
            .flat_map(|i| (0..channels).map(move |c| (c, i)))
            .map(|(c, i)| planar[c * frames + i])
            .collect();
        let wav = wav_bytes(0, channels as u16, 16_000, &interleaved);
        let want = pipeline.run(cpu(), &wav).expect("cpu");
        let got = pipeline.run(gpu(), &wav).expect("gpu");
        assert_eq!(want.shape, shape, "cpu, {channels} x {frames}");
        assert_eq!(got.shape, shape, "gpu, {channels} x {frames}");
        let worst = close_f32(f32s(&got), f32s(&want), 0.05, 0.0)
            .unwrap_or_else(|e| panic!("{channels} x {frames}: {e}"));
        eprintln!("fix_length log-mel, {channels} x {frames}: gpu vs cpu max |diff| {worst:e} dB");
    }
}

fn image_dims(h: usize, w: usize, c: usize) -> ImageDims {
    ImageDims {
        height: h,
        width: w,
        channels: c,
        chw: false,
        channel_axis: c > 1,
    }
}

fn run_image(backend: &dyn Backend, ops: &Value, pixels: &[u8], dims: ImageDims) -> Tensor {
    let mut all = vec![json!({"op": "decode_image"})];
    all.extend(ops.as_array().unwrap().iter().cloned());
    let pipeline = Pipeline::new(Spec::from_value(&json!({"ops": all})).expect("spec"));
    let plan = pipeline.plan(PlanKey::Image(dims)).expect("plan");
    backend
        .execute(&plan, Tensor::u8(dims.shape(), pixels.to_vec()))
        .expect("execute")
}

#[test]
fn gpu_resize_is_bit_identical_to_cpu_on_random_images() {
    let mut rng = Rng::new(11);
    let filters = ["nearest", "bilinear", "bicubic", "lanczos"];
    let mut shapes_checked = 0;
    for trial in 0..24 {
        let c = [1, 3, 4][trial % 3];
        let (h, w) = (1 + rng.below(120) as usize, 1 + rng.below(120) as usize);
        // Include the shrink-mostly-vertically case Pillow 13 runs vertical pass first.
        let (oh, ow) = if trial % 6 == 5 {
            (1 + h / 5, w)
        } else {
            (1 + rng.below(150) as usize, 1 + rng.below(150) as usize)
        };
        let pixels: Vec<u8> = (0..h * w * c).map(|_| rng.below(256) as u8).collect();
        let dims = image_dims(h, w, c);
        for filter in filters {
            for antialias in [true, false] {
                let ops = json!([{"op": "resize", "height": oh, "width": ow, "filter": filter, "antialias": antialias}]);
                let want = run_image(cpu(), &ops, &pixels, dims);
                let got = run_image(gpu(), &ops, &pixels, dims);
                assert_eq!(got.shape, want.shape);
                assert!(
                    u8s(&got) == u8s(&want),
                    "{filter} antialias={antialias} {h}x{w}x{c} -> {oh}x{ow}: GPU differs from CPU"
                );
                shapes_checked += 1;
            }
        }
    }
    eprintln!("{shapes_checked} random resizes bit-identical on GPU and CPU");
}

#[test]
fn gpu_image_pipeline_matches_cpu() {
    let mut rng = Rng::new(5);
    for (h, w, c, crop) in [
        (300, 200, 3, 224),
        (50, 80, 4, 64),
        (97, 131, 1, 100),
        (256, 256, 3, 300),
    ] {
        let pixels: Vec<u8> = (0..h * w * c).map(|_| rng.below(256) as u8).collect();
        let mean: Vec<f32> = (0..c).map(|i| 0.4 + 0.05 * i as f32).collect();
        let std: Vec<f32> = (0..c).map(|i| 0.2 + 0.01 * i as f32).collect();
        let uint8_ops = json!([{"op": "resize", "shorter_side": 256, "filter": "bilinear"}, {"op": "center_crop", "height": crop, "width": crop}]);
        let want = run_image(cpu(), &uint8_ops, &pixels, image_dims(h, w, c));
        let got = run_image(gpu(), &uint8_ops, &pixels, image_dims(h, w, c));
        assert_eq!(got.shape, want.shape);
        assert!(u8s(&got) == u8s(&want), "uint8 pipeline differs for {h}x{w}x{c}");
        let float_ops = json!([
            {"op": "resize", "shorter_side": 256, "filter": "bicubic"},
            {"op": "to_float"},
            {"op": "layout", "to": "chw"},
            {"op": "center_crop", "height": crop, "width": crop},
            {"op": "normalize", "mean": mean, "std": std},
        ]);
        let want = run_image(cpu(), &float_ops, &pixels, image_dims(h, w, c));
        let got = run_image(gpu(), &float_ops, &pixels, image_dims(h, w, c));
        assert_eq!(got.shape, want.shape);
        assert_eq!(got.shape[0], c, "channels first after layout");
        close_f32(f32s(&got), f32s(&want), 1e-6, 0.0).unwrap_or_else(|e| panic!("{h}x{w}x{c}: {e}"));
    }
}

#[test]
fn gpu_reuses_plan_tables_across_calls() {
    // A backend of its own: the shared one's cache also serves tests running in parallel.
    let gpu = &kiln_gpu::GpuBackend::new().expect("GPU backend");
    let spec = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 384, "hop_length": 96}, {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 31}]});
    let pipeline = Pipeline::new(Spec::from_value(&spec).unwrap());
    let plan = pipeline
        .plan(PlanKey::Audio {
            channels: None,
            sample_rate: 8000,
        })
        .unwrap();
    let mut rng = Rng::new(3);
    let first = gpu
        .execute(
            &plan,
            Tensor::f32(vec![4000], test_signal(&mut rng, 1, 4000, 8000.0)),
        )
        .unwrap();
    let tables = gpu.cached_tables();
    for n in [4000, 6000, 1000] {
        let out = gpu
            .execute(&plan, Tensor::f32(vec![n], test_signal(&mut rng, 1, n, 8000.0)))
            .unwrap();
        assert_eq!(out.shape[0], 31);
    }
    assert_eq!(first.shape, vec![31, 1 + 4000 / 96]);
    assert_eq!(
        gpu.cached_tables(),
        tables,
        "a plan's device tables were rebuilt for a new clip length"
    );
}
