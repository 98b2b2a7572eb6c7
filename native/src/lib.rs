//! kiln's native layer: file and object-store I/O around the kernels, the conversion cache,
//! the loader, export and the labeling server. The `kiln` binary's `cli/` is a thin layer of
//! clap types over it.
//!
//! The data flow, one folder per stage:
//! - [`items`]: sources listed and read (directories, object stores, Parquet tables), labels.
//! - [`convert`]: items transformed into a cache entry ([`convert::convert`]).
//! - [`cache`]: entries (key, manifest, locks, gc); [`shards`]: their Parquet files, writer
//!   beside the verifying reader.
//! - [`loader`]: an entry back as shuffled, sharded, resumable batches ([`loader::Loader`]).
//! - [`score`]: a model (in-process ONNX or an inference server) over an entry's rows.
//! - [`windows`]: event histories into sliding-window features and labels per entity.
//! - [`export`] (TFRecord) and [`serve`] (the labeling page).
//!
//! Errors are one typed [`Error`].

pub mod cache;
pub mod convert;
pub mod daemon;
mod error;
pub mod export;
pub mod fsio;
pub mod items;
pub mod journal;
pub mod loader;
pub mod score;
pub mod serve;
pub mod shards;
pub mod transform;
pub mod units;
pub mod windows;

pub use error::{Error, Result};
pub use kiln_gpu::{AnyBackend, BackendChoice};
