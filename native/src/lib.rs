//! kiln's native layer: file and object-store I/O around the kernels, the conversion cache,
//! the loader, and the `kiln` CLI's commands.
//!
//! - [`transform::transform_file`]: one file through a spec to a tensor.
//! - [`convert::convert`]: a dataset to cached Parquet shards.
//! - [`loader::Loader`]: shards back as shuffled, sharded, resumable batches.

pub mod cache;
pub mod convert;
pub mod labels;
pub mod loader;
pub mod order;
pub mod serve;
pub mod shard;
pub mod source;
pub mod table;
pub mod tfrecord;
pub mod transform;
