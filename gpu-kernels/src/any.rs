//! One backend handle for every consumer: [`AnyBackend`] runs plans on the CPU reference or the
//! GPU, and hands out the [`GpuBackend`] to callers that keep results on the device. A CLI flag
//! or the page's choice becomes a [`BackendChoice`], and [`AnyBackend::open`] (or
//! [`AnyBackend::open_async`] in the browser) opens it.

use std::str::FromStr;
use std::sync::Arc;

use kiln_core::{Backend, CpuBackend, Plan, Tensor};

use crate::{BackendError, GpuBackend, Result};

/// Which backend to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// `kiln_core`'s CPU kernels, the reference.
    Cpu,
    /// The WGSL kernels on the first adapter wgpu finds.
    Gpu,
}

impl BackendChoice {
    /// `"cpu"` or `"gpu"`, as [`FromStr`] accepts them.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Cpu => "cpu",
            BackendChoice::Gpu => "gpu",
        }
    }
}

impl FromStr for BackendChoice {
    type Err = BackendError;

    /// Accepts `"cpu"` and `"gpu"`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            other => Err(BackendError::UnknownBackend(other.to_owned())),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An open backend. Cloning is cheap (the GPU side is shared), so a loader's threads can each
/// hold one.
#[derive(Clone, Debug)]
pub enum AnyBackend {
    Cpu(CpuBackend),
    Gpu(Arc<GpuBackend>),
}

impl AnyBackend {
    /// Opens `choice`. `Gpu` without a usable adapter is an error, never a quiet fall back to
    /// the CPU: a caller that wants one tries `Cpu` itself.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(choice: BackendChoice) -> Result<AnyBackend> {
        pollster::block_on(Self::open_async(choice))
    }

    /// [`AnyBackend::open`] for async callers (the browser, where adapters open asynchronously).
    pub async fn open_async(choice: BackendChoice) -> Result<AnyBackend> {
        Ok(match choice {
            BackendChoice::Cpu => AnyBackend::Cpu(CpuBackend),
            BackendChoice::Gpu => AnyBackend::Gpu(Arc::new(GpuBackend::new_async().await?)),
        })
    }

    /// The GPU backend, for callers that keep results on the device
    /// ([`GpuBackend::execute_resident`], [`GpuBackend::stack`]); `None` on the CPU.
    pub fn gpu(&self) -> Option<&Arc<GpuBackend>> {
        match self {
            AnyBackend::Cpu(_) => None,
            AnyBackend::Gpu(gpu) => Some(gpu),
        }
    }

    /// Which backend this is.
    pub fn choice(&self) -> BackendChoice {
        match self {
            AnyBackend::Cpu(_) => BackendChoice::Cpu,
            AnyBackend::Gpu(_) => BackendChoice::Gpu,
        }
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(&self) -> &'static str {
        self.choice().name()
    }

    /// Runs a plan and returns the result on the host; the browser awaits this, native code
    /// can also use the blocking [`Backend::execute`].
    pub async fn execute_async(&self, plan: &Plan, input: Tensor) -> Result<Tensor> {
        match self {
            AnyBackend::Cpu(cpu) => cpu.execute(plan, input).map_err(BackendError::Kernel),
            AnyBackend::Gpu(gpu) => gpu.execute_async(plan, input).await,
        }
    }
}

impl From<CpuBackend> for AnyBackend {
    fn from(cpu: CpuBackend) -> Self {
        AnyBackend::Cpu(cpu)
    }
}

impl From<Arc<GpuBackend>> for AnyBackend {
    fn from(gpu: Arc<GpuBackend>) -> Self {
        AnyBackend::Gpu(gpu)
    }
}

/// Blocking use, natively.
#[cfg(not(target_arch = "wasm32"))]
impl Backend for AnyBackend {
    fn name(&self) -> &'static str {
        AnyBackend::name(self)
    }

    fn execute(&self, plan: &Plan, input: Tensor) -> kiln_core::Result<Tensor> {
        match self {
            AnyBackend::Cpu(cpu) => cpu.execute(plan, input),
            AnyBackend::Gpu(gpu) => gpu.execute(plan, input),
        }
    }
}
