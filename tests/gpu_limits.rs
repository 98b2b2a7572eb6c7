//! The GPU backend on a device with small limits: input beyond a buffer or dispatch limit is an
//! error naming the limit (never a panic or a wgpu abort), work is split to fit the dispatch
//! limit without changing the numbers, and device errors come back as errors.

use kiln_core::image::ImageDims;
use kiln_core::{Backend, DType, Pipeline, PlanKey, Spec, Tensor};
use kiln_gpu::{BackendError, GpuBackend, GpuTensor};
use serde_json::json;

use crate::backends::cpu;
use crate::compare::{close_f32, f32s};
use crate::conformance::{test_signal, Rng};

const BINDING: u64 = 1 << 20;
const BUFFER: u64 = 4 << 20;
/// A dispatch limit small enough that a short clip exceeds it.
const FEW_GROUPS: u32 = 16;

/// A backend on a device whose limits are far below lavapipe's, so tests reach them cheaply:
/// 1 MiB bindings, 4 MiB buffers and `groups` workgroups per dimension.
fn small_gpu(groups: u32) -> GpuBackend {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let instance = wgpu::Instance::new(descriptor);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("GPU tests need a wgpu adapter (in CI: Mesa lavapipe)");
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: BINDING,
        max_buffer_size: BUFFER,
        max_compute_workgroups_per_dimension: groups,
        ..wgpu::Limits::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("kiln test: small limits"),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device with lower limits");
    let gpu = GpuBackend::from_device(device, queue, "small limits".into());
    assert_eq!(gpu.limits().max_storage_buffer_binding_size, BINDING);
    assert_eq!(gpu.limits().max_compute_workgroups_per_dimension, groups);
    gpu
}

fn audio_plan(ops: serde_json::Value) -> std::sync::Arc<kiln_core::Plan> {
    let mut all = vec![json!({"op": "load_audio"})];
    all.extend(ops.as_array().unwrap().iter().cloned());
    Pipeline::new(Spec::from_value(&json!({ "ops": all })).unwrap())
        .plan(PlanKey::Audio {
            channels: None,
            sample_rate: 16_000,
        })
        .unwrap()
}

#[test]
fn tensor_beyond_the_binding_limit_is_an_error_naming_it() {
    let gpu = small_gpu(65_535);
    // 300,000 float32 values: 1.2 MB, over the 1 MiB binding limit.
    let err = gpu
        .upload_tensor(&Tensor::f32(vec![300, 1000], vec![0.5; 300_000]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input tensor needs a 1200000-byte GPU buffer, over this device's \
         max_storage_buffer_binding_size (1048576 bytes)"
    );
    // uint8 images take one 32-bit word per value on the device, so 300,000 bytes do not fit
    // either; the error comes before the widened copy is made.
    let err = gpu
        .upload_tensor(&Tensor::u8(vec![100, 1000, 3], vec![7; 300_000]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::BufferTooLarge {
                bytes: 1_200_000,
                limit: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{err}"
    );
    // The same image through a plan, and an output beyond the limit, through the `Backend`
    // trait as the CLI sees it.
    let dims = ImageDims {
        height: 100,
        width: 1000,
        channels: 3,
        chw: false,
        channel_axis: true,
    };
    let pipeline = Pipeline::new(Spec::from_json(r#"{"ops": [{"op": "decode_image"}]}"#).unwrap());
    let plan = pipeline.plan(PlanKey::Image(dims)).unwrap();
    let err = gpu
        .execute(&plan, Tensor::u8(dims.shape(), vec![7; 300_000]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gpu backend: input tensor needs a 1200000-byte GPU buffer, over this device's \
         max_storage_buffer_binding_size (1048576 bytes)"
    );
    let small = ImageDims {
        height: 100,
        width: 100,
        ..dims
    };
    let spec = r#"{"ops": [{"op": "decode_image"}, {"op": "resize", "height": 600, "width": 600}]}"#;
    let plan = Pipeline::new(Spec::from_json(spec).unwrap())
        .plan(PlanKey::Image(small))
        .unwrap();
    let err = gpu
        .execute(&plan, Tensor::u8(small.shape(), vec![7; 30_000]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("gpu backend: resize output needs a ")
            && err.ends_with(
                "-byte GPU buffer, over this device's max_storage_buffer_binding_size (1048576 bytes)"
            ),
        "{err}"
    );
    // Nothing was left half-done: a plan that fits still runs on the same backend.
    let ok = Pipeline::new(
        Spec::from_json(r#"{"ops": [{"op": "decode_image"}, {"op": "resize", "height": 50, "width": 50}]}"#)
            .unwrap(),
    )
    .plan(PlanKey::Image(small))
    .unwrap();
    let out = gpu
        .execute(&ok, Tensor::u8(small.shape(), vec![7; 30_000]))
        .unwrap();
    assert_eq!(out.shape, vec![50, 50, 3]);
}

#[test]
fn batch_beyond_the_buffer_limit_is_an_error_naming_it() {
    let gpu = small_gpu(65_535);
    // Five parts of 1,000,000 bytes each fit one by one, not as one 5 MB batch.
    let parts: Vec<GpuTensor> = (0..5)
        .map(|_| gpu.upload_tensor(&Tensor::f32(vec![250_000], vec![1.0; 250_000])))
        .collect::<Result<_, _>>()
        .unwrap();
    let err = gpu.stack(&parts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stacked batch needs a 5000000-byte GPU buffer, over this device's max_buffer_size \
         (4194304 bytes)"
    );
    let batch = gpu.stack(&parts[..4]).unwrap();
    assert_eq!(batch.shape, vec![4, 250_000]);
}

#[test]
fn dispatch_beyond_the_workgroup_limit_is_an_error_naming_it() {
    let gpu = small_gpu(FEW_GROUPS);
    // 1,041 frames need 17 workgroups of 64 frames in the mel kernel; the limit is 16.
    let plan = audio_plan(json!([
        {"op": "stft", "n_fft": 64, "hop_length": 16},
        {"op": "magnitude", "power": 2.0},
        {"op": "mel", "n_mels": 8},
    ]));
    let samples = 1040 * 16;
    let signal = test_signal(&mut Rng::new(1), 1, samples, 16_000.0);
    let err = gpu
        .execute(&plan, Tensor::f32(vec![samples], signal))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gpu backend: mel needs 17 workgroups along x, over this device's \
         max_compute_workgroups_per_dimension (16)"
    );
}

#[test]
fn stft_split_to_fit_the_workgroup_limit_matches_cpu() {
    let gpu = small_gpu(FEW_GROUPS);
    // About 1,040 frames, 16 per dispatch: 65 dispatches, each offset into the same output. 64
    // takes the FFT kernel, 63 the direct DFT.
    let samples = 1040 * 16;
    let signal = test_signal(&mut Rng::new(2), 1, samples, 16_000.0);
    for n_fft in [64, 63] {
        let plan = audio_plan(json!([
            {"op": "stft", "n_fft": n_fft, "hop_length": 16},
            {"op": "magnitude", "power": 2.0},
        ]));
        let input = Tensor::f32(vec![samples], signal.clone());
        let want = cpu().execute(&plan, input.clone()).unwrap();
        let got = gpu.execute(&plan, input).unwrap();
        assert_eq!(got.shape, want.shape);
        assert!(got.shape[1] >= 1040, "{:?}", got.shape);
        let peak = f32s(&want).iter().fold(0.0f64, |m, &v| m.max(f64::from(v)));
        close_f32(f32s(&got), f32s(&want), 2e-5 * peak, 1e-4)
            .unwrap_or_else(|e| panic!("n_fft {n_fft}: {e}"));
    }
}

/// A tensor whose buffer the caller made without `COPY_SRC`, so copying it out is invalid.
fn uncopyable(gpu: &GpuBackend) -> GpuTensor {
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("no COPY_SRC"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    GpuTensor {
        buffer,
        shape: vec![16],
        dtype: DType::F32,
    }
}

#[test]
fn device_errors_are_errors_and_the_backend_keeps_working() {
    let gpu = small_gpu(FEW_GROUPS);
    let bad = uncopyable(&gpu);
    let err = gpu.read(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Submission {
                operation: "read",
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("GPU read failed: ") && message.contains("COPY_SRC"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    eprintln!("{message}");
    let err = gpu.stack(&[bad.clone(), bad]).unwrap_err().to_string();
    assert!(
        err.starts_with("GPU stack failed: ") && err.contains("COPY_SRC"),
        "{err}"
    );
    // A tensor whose shape claims more than its buffer holds.
    let short = GpuTensor {
        shape: vec![32],
        ..uncopyable(&gpu)
    };
    assert_eq!(
        gpu.read(&short).unwrap_err().to_string(),
        "GPU execution failed: read: a [32] float32 tensor needs 128 bytes, its buffer holds 64"
    );
    // The same backend still runs plans and round-trips tensors.
    let plan = audio_plan(json!([{"op": "stft", "n_fft": 64, "hop_length": 16}, {"op": "magnitude"}]));
    let signal = test_signal(&mut Rng::new(3), 1, 4000, 16_000.0);
    let out = gpu.execute(&plan, Tensor::f32(vec![4000], signal)).unwrap();
    assert_eq!(out.shape, vec![33, 251]);
    let host = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let round = gpu.read(&gpu.upload_tensor(&host).unwrap()).unwrap();
    assert_eq!(round, host);
}

#[test]
fn a_batch_beyond_the_limits_runs_as_smaller_batches() {
    let gpu = small_gpu(65_535);
    let plan = audio_plan(
        json!([{"op": "stft", "n_fft": 256, "hop_length": 64}, {"op": "magnitude", "power": 2.0}]),
    );
    // 24 clips of 8,000 samples: 768 KB in, 1.6 MB of STFT output, over the 1 MiB binding.
    let clips: Vec<Tensor> = (0..24)
        .map(|c| {
            Tensor::f32(
                vec![8000],
                (0..8000).map(|i| ((i * (c + 3)) as f32 * 0.01).sin()).collect(),
            )
        })
        .collect();
    let alone: Vec<Tensor> = clips
        .iter()
        .map(|c| gpu.execute_batch(&plan, vec![c.clone()]).unwrap().remove(0))
        .collect();
    let before = gpu.stats();
    let batched = gpu.execute_batch(&plan, clips.clone()).unwrap();
    let parts = gpu.stats().batches - before.batches;
    assert!(parts > 1 && parts < 24, "split into {parts} batches");
    assert_eq!(batched.len(), 24);
    for (b, a) in batched.iter().zip(&alone) {
        assert_eq!(b.shape, a.shape);
        assert_eq!(b.as_f32().unwrap(), a.as_f32().unwrap());
    }
    let resident = gpu.execute_batch_resident(&plan, clips).unwrap();
    assert_eq!(resident.shape[0], 24);
    let back = gpu.read(&resident).unwrap();
    let joined: Vec<f32> = batched
        .iter()
        .flat_map(|t| t.as_f32().unwrap().to_vec())
        .collect();
    assert_eq!(back.as_f32().unwrap(), &joined[..]);
}
