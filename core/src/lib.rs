//! kiln-core: the transform spec, host tensors and the CPU reference kernels.
//!
//! No I/O, no GPU, no threads: this crate builds for `wasm32-unknown-unknown` and is the
//! reference every faster backend is tested against.
//!
//! Entry points: [`Spec::from_json`] validates a spec, [`Pipeline`] decodes inputs and caches a
//! [`Plan`] per input kind, and a [`Backend`] ([`CpuBackend`] here, the GPU one in `kiln-gpu`)
//! runs the plan.
//!
//! ```
//! use kiln_core::{CpuBackend, Pipeline, Spec};
//!
//! let spec = Spec::from_json(r#"{"ops": [{"op": "load_audio"},
//!     {"op": "stft", "n_fft": 8, "hop_length": 4}, {"op": "magnitude", "power": 2.0}]}"#)?;
//! // A 16-sample mono 16-bit WAV, silence.
//! let mut wav = Vec::new();
//! let header = [b"RIFF".as_slice(), &(36u32 + 32).to_le_bytes(), b"WAVEfmt ", &16u32.to_le_bytes(),
//!     &1u16.to_le_bytes(), &1u16.to_le_bytes(), &8000u32.to_le_bytes(), &16000u32.to_le_bytes(),
//!     &2u16.to_le_bytes(), &16u16.to_le_bytes(), b"data", &32u32.to_le_bytes()];
//! header.iter().for_each(|part| wav.extend_from_slice(part));
//! wav.extend_from_slice(&[0u8; 32]);
//! let power = Pipeline::new(spec).run(&CpuBackend, &wav)?;
//! assert_eq!(power.shape, vec![5, 5]);
//! # Ok::<(), kiln_core::Error>(())
//! ```

pub mod audio;
pub mod backend;
pub mod error;
pub mod image;
pub mod limits;
pub mod npy;
pub mod pipeline;
pub mod plan;
pub mod spec;
pub mod tensor;

pub use backend::{Backend, CpuBackend};
pub use error::{Error, Result, Warning};
pub use pipeline::{Decoded, Pipeline};
pub use plan::{Plan, PlanKey, Step};
pub use spec::{Spec, SpecOutput};
pub use tensor::{DType, Tensor, TensorData};

/// Bumped whenever a kernel's numbers change, so caches keyed on it are invalidated.
pub const KERNEL_VERSION: u32 = 1;
