//! One backend handle: `BackendChoice` parsed from a CLI or page value, `AnyBackend::open`
//! on either side, the GPU reached through it for device-resident batches, and no silent
//! fallback to the CPU when no adapter exists.

use kiln_core::image::ImageDims;
use kiln_core::{Backend, CpuBackend, Pipeline, PlanKey, Spec, Tensor};
use kiln_gpu::{AnyBackend, BackendChoice};

use crate::compare::u8s;
use crate::conformance::Rng;

#[test]
fn choices_parse_from_their_names() {
    for choice in [BackendChoice::Cpu, BackendChoice::Gpu] {
        assert_eq!(choice.name().parse::<BackendChoice>().unwrap(), choice);
        assert_eq!(choice.to_string(), choice.name());
    }
    assert_eq!("cpu".parse::<BackendChoice>().unwrap(), BackendChoice::Cpu);
    assert_eq!("gpu".parse::<BackendChoice>().unwrap(), BackendChoice::Gpu);
    let err = "tpu".parse::<BackendChoice>().unwrap_err();
    assert_eq!(err.to_string(), "unknown backend `tpu` (expected `cpu` or `gpu`)");
}

fn resize_plan(dims: ImageDims) -> std::sync::Arc<kiln_core::Plan> {
    let spec = r#"{"ops": [{"op": "decode_image"}, {"op": "resize", "height": 40, "width": 30, "filter": "bicubic"}]}"#;
    Pipeline::new(Spec::from_json(spec).unwrap())
        .plan(PlanKey::Image(dims))
        .unwrap()
}

#[test]
fn any_backend_runs_plans_on_either_side_and_exposes_the_device() {
    let dims = ImageDims {
        height: 63,
        width: 47,
        channels: 3,
        chw: false,
        channel_axis: true,
    };
    let plan = resize_plan(dims);
    let mut rng = Rng::new(9);
    let images: Vec<Tensor> = (0..3)
        .map(|_| {
            Tensor::u8(
                dims.shape(),
                (0..dims.len()).map(|_| rng.below(256) as u8).collect(),
            )
        })
        .collect();
    let want: Vec<Tensor> = images
        .iter()
        .map(|t| CpuBackend.execute(&plan, t.clone()).unwrap())
        .collect();

    let cpu = AnyBackend::open(BackendChoice::Cpu).unwrap();
    assert_eq!((cpu.name(), cpu.choice()), ("cpu", BackendChoice::Cpu));
    assert!(cpu.gpu().is_none(), "the CPU has no device side");

    let gpu = AnyBackend::open(BackendChoice::Gpu).expect("GPU tests need an adapter (lavapipe in CI)");
    assert_eq!((gpu.name(), gpu.choice()), ("gpu", BackendChoice::Gpu));
    let shared = gpu.clone();
    assert!(format!("{shared:?}").starts_with("Gpu(GpuBackend"), "{shared:?}");

    for backend in [&cpu, &gpu] {
        let as_trait: &dyn Backend = backend;
        assert_eq!(as_trait.name(), backend.name());
        for (image, want) in images.iter().zip(&want) {
            let got = as_trait.execute(&plan, image.clone()).unwrap();
            assert!(
                u8s(&got) == u8s(want),
                "{} differs from the CPU reference",
                backend.name()
            );
            let awaited = pollster::block_on(backend.execute_async(&plan, image.clone())).unwrap();
            assert_eq!(awaited, got);
        }
    }

    // Residency: the device batch of the same three images holds the same bytes.
    let device = shared.gpu().expect("a GPU backend has a device side");
    let parts = images
        .iter()
        .map(|t| device.execute_resident(&plan, t.clone()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let batch = device.read(&device.stack(&parts).unwrap()).unwrap();
    assert_eq!(batch.shape, vec![3, 40, 30, 3]);
    let expected: Vec<u8> = want.iter().flat_map(|t| u8s(t).iter().copied()).collect();
    assert!(u8s(&batch) == expected.as_slice(), "stacked batch differs");
}

/// Set in the child process of `opening_the_gpu_without_an_adapter_is_an_error`.
const CHILD: &str = "KILN_TEST_NO_ADAPTER_CHILD";

#[test]
fn opening_the_gpu_without_an_adapter_is_an_error() {
    // The adapter list is fixed per process by `WGPU_BACKEND`, which a test must not change
    // in its own (threaded) process: run the check in a child with only Metal enabled, which
    // no Linux or Windows build has.
    if !cfg!(any(target_os = "linux", target_os = "windows")) {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "gpu_backend::no_adapter_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("WGPU_BACKEND", "metal")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run by opening_the_gpu_without_an_adapter_is_an_error in a child process"]
fn no_adapter_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let err = AnyBackend::open(BackendChoice::Gpu).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no GPU adapter available (install a Vulkan driver such as Mesa's lavapipe)"),
        "{err}"
    );
    // The CPU still opens: falling back is the caller's decision, made explicitly.
    assert_eq!(AnyBackend::open(BackendChoice::Cpu).unwrap().name(), "cpu");
}
