//! Exporting a cache entry in other formats (TFRecord).

pub mod tfrecord;

pub use tfrecord::{export as export_tfrecord, tfrecord_records};
