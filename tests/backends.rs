//! The backends under test. The GPU backend must exist where the suite runs (lavapipe in CI):
//! a missing adapter fails the GPU tests instead of skipping them.

use std::sync::OnceLock;

use kiln_core::CpuBackend;
use kiln_gpu::GpuBackend;

pub fn cpu() -> &'static CpuBackend {
    static CPU: CpuBackend = CpuBackend;
    &CPU
}

pub fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = GpuBackend::new()
            .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter (in CI: Mesa lavapipe): {e}"));
        eprintln!("GPU backend: {}", gpu.adapter_name());
        // Set by bench/gpu/conformance on a GPU machine: a CPU adapter (lavapipe) standing in
        // for the GPU would make a pass there mean nothing.
        if std::env::var_os("KILN_TESTS_NO_CPU_ADAPTER").is_some_and(|v| v == "1") {
            assert!(
                !gpu.adapter_name().ends_with(", Cpu)"),
                "KILN_TESTS_NO_CPU_ADAPTER=1 but wgpu picked a CPU adapter: {}",
                gpu.adapter_name()
            );
        }
        gpu
    })
}

/// Stamps out one `#[test]` per backend for a generic check `fn(&dyn Backend)`.
#[macro_export]
macro_rules! for_each_backend {
    ($check:ident) => {
        mod $check {
            #[test]
            fn cpu() {
                super::$check($crate::backends::cpu());
            }
            #[test]
            fn gpu() {
                super::$check($crate::backends::gpu());
            }
        }
    };
}
