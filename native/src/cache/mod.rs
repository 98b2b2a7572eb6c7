//! The conversion cache: one directory per entry, named by a content hash of what produced it.
//!
//! ```text
//! CACHE/<key>/.kiln-entry       written first: marks the directory as kiln's (gc touches no other)
//! CACHE/<key>/manifest.json     written last, atomically: an entry is complete iff it exists
//! CACHE/<key>/part-00000.parquet
//! CACHE/<key>/progress.jsonl    finished shards and failures, for resuming an interrupted run
//! CACHE/<key>/.lock             held (exclusively) while a process converts into the entry
//! CACHE/<key>/.readers          held (shared) by readers; gc and rm skip entries in use
//! ```

mod gc;
mod key;
mod lock;
mod manifest;
mod table;

pub use gc::{gc, list_entries, remove_entry, EntrySummary, GcOptions};
pub use key::{cache_key, hex, sha256_file};
pub use lock::{lock_entry, mark_entry, EntryLock, ReaderLock};
pub use manifest::{
    read_manifest, DType, Failure, Manifest, Materialize, ShardInfo, TensorInfo, FORMAT_VERSION, JOURNAL,
    MANIFEST,
};
pub use table::index_table;

/// The cache directory when none is given: `$KILN_CACHE`, else `~/.cache/kiln/datasets`. The
/// CLI and the Python package share it, so each finds the other's entries.
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(".cache/kiln/datasets")
        })
}
