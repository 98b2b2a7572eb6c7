//! kiln's native layer: file I/O around the kernels, and the `kiln` CLI's commands.
//!
//! [`transform::transform_file`] reads an input, runs a spec on the CPU or GPU backend and writes
//! a `.npy` atomically.

pub mod transform;
