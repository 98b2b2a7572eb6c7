//! kiln's cross-crate suite: every backend against the reference data and the CPU reference,
//! shader validation, and end-to-end runs of the `kiln` binary.

mod audio_formats;
mod backends;
mod compare;
mod conformance;
mod errors;
mod gpu_backend;
mod gpu_batch;
mod gpu_limits;
mod jpeg_damage;
mod refdata;
mod shaders;
mod wav_formats;
