//! Batched device execution: one plan over many same-shape inputs costs one upload, one
//! submission and one readback (none when the batch stays on the device), and every item
//! equals what the CPU reference (images) or a batch of one (audio) gives, bit for bit.

use kiln_core::image::ImageDims;
use kiln_core::spec::ImageMode;
use kiln_core::{Backend, CpuBackend, Pipeline, PlanKey, Spec, Tensor};
use kiln_gpu::{GpuBackend, GpuStats};

use crate::compare::{close_f32, f32s};
use crate::conformance::Rng;

fn gpu() -> GpuBackend {
    GpuBackend::new().expect("GPU tests need an adapter (lavapipe in CI)")
}

fn images(rng: &mut Rng, dims: ImageDims, count: usize) -> Vec<Tensor> {
    (0..count)
        .map(|_| {
            Tensor::u8(
                dims.shape(),
                (0..dims.len()).map(|_| rng.below(256) as u8).collect(),
            )
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    match &t.data {
        kiln_core::TensorData::U8(v) => v.iter().map(|&b| u32::from(b)).collect(),
        kiln_core::TensorData::F32(v) | kiln_core::TensorData::C64(v) => {
            v.iter().map(|f| f.to_bits()).collect()
        }
    }
}

#[test]
fn image_batches_equal_the_cpu_in_one_upload_submission_and_readback() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    // Convolution passes (with premultiplied alpha for RGBA), NEAREST, crop with padding,
    // ToTensor, Normalize and CHW: every image kernel indexing the batch.
    let cases = [
        (
            r#"[{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "shorter_side": 40, "filter": "bilinear"},
            {"op": "center_crop", "height": 32, "width": 32}, {"op": "to_float"},
            {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            {"op": "layout", "to": "chw"}]"#,
            ImageMode::Rgb,
        ),
        (
            r#"[{"op": "decode_image", "mode": "RGBA"}, {"op": "resize", "height": 17, "width": 29, "filter": "lanczos"}]"#,
            ImageMode::Rgba,
        ),
        (
            r#"[{"op": "decode_image", "mode": "L"}, {"op": "resize", "height": 20, "width": 11, "filter": "nearest"},
            {"op": "center_crop", "height": 24, "width": 8}, {"op": "layout", "to": "chw"}]"#,
            ImageMode::L,
        ),
    ];
    for (ops, mode) in cases {
        let spec = Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
        let dims = ImageDims::decoded(45, 61, mode);
        let plan = Pipeline::new(spec).plan(PlanKey::Image(dims)).unwrap();
        let inputs = images(&mut rng, dims, 5);
        let want: Vec<Tensor> = inputs
            .iter()
            .map(|t| CpuBackend.execute(&plan, t.clone()).unwrap())
            .collect();
        let before = gpu.stats();
        let got = gpu.execute_batch(&plan, inputs).unwrap();
        let cost = gpu.stats().since(before);
        assert_eq!(
            cost,
            GpuStats {
                batches: 1,
                items: 5,
                uploads: 1,
                submissions: 1,
                readbacks: 1
            },
            "{ops}"
        );
        assert_eq!(got.len(), 5);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape, w.shape, "{ops}: item {i}");
            assert_eq!(g.dtype(), w.dtype(), "{ops}: item {i}");
            assert!(
                bits(g) == bits(w),
                "{ops}: item {i} differs from the CPU reference"
            );
        }
    }
}

#[test]
fn audio_batches_equal_batches_of_one_and_stay_on_the_device_when_asked() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let spec = Spec::from_json(
        r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 256, "hop_length": 64},
            {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 20}, {"op": "power_to_db"}]}"#,
    )
    .unwrap();
    let pipeline = Pipeline::new(spec);
    for channels in [None, Some(2)] {
        let plan = pipeline
            .plan(PlanKey::Audio {
                channels,
                sample_rate: 16_000,
            })
            .unwrap();
        let shape: Vec<usize> = channels.into_iter().chain([3000]).collect();
        // Loudness 60 dB apart and a silent half: power_to_db's peak and top_db clip are per
        // item, so a batch must not share them.
        let clips: Vec<Tensor> = (0..4)
            .map(|i| {
                let n: usize = shape.iter().product();
                let gain = 10f32.powi(-3 * i);
                let values = (0..n)
                    .map(|j| {
                        if j % 3000 < 1500 {
                            (rng.unit() * 2.0 - 1.0) * gain
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Tensor::f32(shape.clone(), values)
            })
            .collect();
        let singles: Vec<Tensor> = clips
            .iter()
            .map(|c| gpu.execute_batch(&plan, vec![c.clone()]).unwrap().remove(0))
            .collect();
        let before = gpu.stats();
        let batched = gpu.execute_batch(&plan, clips.clone()).unwrap();
        let cost = gpu.stats().since(before);
        assert_eq!((cost.uploads, cost.submissions, cost.readbacks), (1, 1, 1));
        for (i, (b, s)) in batched.iter().zip(&singles).enumerate() {
            assert_eq!(b.shape, s.shape, "{channels:?} item {i}");
            assert!(
                bits(b) == bits(s),
                "{channels:?} item {i}: batched differs from alone"
            );
            let cpu = CpuBackend.execute(&plan, clips[i].clone()).unwrap();
            close_f32(f32s(b), f32s(&cpu), 2e-3, 0.0).unwrap();
        }

        let before = gpu.stats();
        let resident = gpu.execute_batch_resident(&plan, clips.clone()).unwrap();
        let cost = gpu.stats().since(before);
        assert_eq!((cost.uploads, cost.submissions, cost.readbacks), (1, 1, 0));
        let mut stacked_shape = vec![4];
        stacked_shape.extend(&batched[0].shape);
        assert_eq!(resident.shape, stacked_shape);
        let host = gpu.read(&resident).unwrap();
        let joined: Vec<u32> = batched.iter().flat_map(bits).collect();
        assert!(bits(&host) == joined, "{channels:?}: resident batch differs");
    }
}

#[test]
fn a_batch_of_mixed_shapes_or_no_inputs_is_an_error() {
    let gpu = gpu();
    let spec =
        Spec::from_json(r#"{"ops": [{"op": "decode_image", "mode": "L"}, {"op": "to_float"}]}"#).unwrap();
    let dims = ImageDims::decoded(4, 4, ImageMode::L);
    let plan = Pipeline::new(spec).plan(PlanKey::Image(dims)).unwrap();
    let err = gpu
        .execute_batch(
            &plan,
            vec![
                Tensor::u8(vec![4, 4], vec![0; 16]),
                Tensor::u8(vec![4, 5], vec![0; 20]),
            ],
        )
        .unwrap_err();
    assert!(err.to_string().contains("a batch holds one shape"), "{err}");
    let err = gpu.execute_batch(&plan, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("an empty batch"), "{err}");
}

/// ToTensor and the Normalize steps after it run as a per-channel lookup computed with the
/// CPU's arithmetic (exact on any device); layout changes and unpadded crops in between fold
/// in, a padded crop does not. Every order gives the CPU's bits.
#[test]
fn float_image_ops_equal_the_cpu_in_every_order() {
    let gpu = gpu();
    let mut rng = Rng::new(77);
    let norm = r#"{"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}"#;
    let norm2 = r#"{"op": "normalize", "mean": [0.1], "std": [0.3]}"#;
    let orders = [
        r#"[{"op": "to_float"}]"#.to_string(),
        format!(r#"[{{"op": "to_float"}}, {norm}]"#),
        format!(r#"[{{"op": "to_float"}}, {norm}, {{"op": "layout", "to": "chw"}}]"#),
        format!(r#"[{{"op": "to_float"}}, {{"op": "layout", "to": "chw"}}, {norm}]"#),
        format!(r#"[{{"op": "layout", "to": "chw"}}, {{"op": "to_float"}}, {norm}, {norm2}]"#),
        format!(r#"[{{"op": "to_float"}}, {{"op": "center_crop", "height": 20, "width": 30}}, {norm}]"#),
        format!(r#"[{{"op": "to_float"}}, {{"op": "center_crop", "height": 50, "width": 70}}, {norm}]"#),
    ];
    for ops in &orders {
        let spec = Spec::from_json(&format!(
            r#"{{"ops": [{{"op": "decode_image", "mode": "RGB"}}, {}]}}"#,
            &ops[1..ops.len() - 1]
        ))
        .unwrap();
        let dims = ImageDims::decoded(41, 63, ImageMode::Rgb);
        let plan = Pipeline::new(spec).plan(PlanKey::Image(dims)).unwrap();
        let inputs = images(&mut rng, dims, 3);
        let got = gpu.execute_batch(&plan, inputs.clone()).unwrap();
        for (g, input) in got.iter().zip(inputs) {
            let want = CpuBackend.execute(&plan, input).unwrap();
            assert_eq!(g.shape, want.shape, "{ops}");
            assert!(bits(g) == bits(&want), "{ops}: differs from the CPU");
        }
    }
}
