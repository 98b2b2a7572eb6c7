//! The library's one error type. Variants carry structured fields (path, shard, entry, op) so a
//! trainer calling [`crate::loader::Loader`] can match on what went wrong; `Display` gives the
//! message a user sees, naming the file and the problem.

use std::path::{Path, PathBuf};

/// Errors from kiln's native layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation on `path` failed (`action` says which: "reading", "creating", ...).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A spec (from `path` when it came from a file) is invalid.
    #[error("invalid spec{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Spec {
        path: Option<PathBuf>,
        #[source]
        source: kiln_core::Error,
    },
    /// One item (a listed file or a table row) could not be decoded or transformed.
    #[error("{path}: {source}")]
    Item {
        path: String,
        #[source]
        source: kiln_core::Error,
    },
    /// An item could not be read from its source.
    #[error("reading {path}: {message}")]
    Fetch { path: String, message: String },
    /// A source (directory, object store, table) could not be opened or listed.
    #[error("source {location}: {message}")]
    Source { location: String, message: String },
    /// A source could not be listed (unreachable store, denied credentials, ...).
    #[error("listing source {location}: {message}")]
    Listing { location: String, message: String },
    /// The GPU backend failed (no adapter, device error, out of memory).
    #[error(transparent)]
    Gpu(#[from] kiln_gpu::BackendError),
    /// A cache entry is missing, incomplete, from another format version or inconsistent.
    #[error("cache entry {}: {problem}", entry.display())]
    Entry { entry: PathBuf, problem: String },
    /// A shard is missing, altered, truncated or does not match its manifest.
    #[error("shard {}: {problem}", shard.display())]
    Shard { shard: PathBuf, problem: String },
    /// A labels file is unreadable or malformed.
    #[error("labels {}: {problem}", path.display())]
    Labels { path: PathBuf, problem: String },
    /// The cache directory holds something kiln refuses to touch, or is unusable.
    #[error("cache {}: {problem}", path.display())]
    Cache { path: PathBuf, problem: String },
    /// An option has a value kiln cannot use (`name` as the user wrote it, e.g. `--workers`).
    #[error("invalid {name}: {problem}")]
    Invalid { name: String, problem: String },
    /// `--on-error fail`: the first item that failed ends the job.
    #[error("{path}: {message} (--on-error fail)")]
    ItemFailed { path: String, message: String },
    /// Every listed item failed: nothing was converted.
    #[error("all {failed} items of {source_location} failed; first: {first}")]
    AllFailed {
        source_location: String,
        failed: usize,
        first: String,
    },
    /// A worker thread of the loader or converter panicked (a bug; the stream ends with it).
    #[error("{what} panicked: {message}")]
    Panicked { what: &'static str, message: String },
    /// Parquet encoding/decoding failed outside any one shard (shard problems are [`Error::Shard`]).
    #[error("{}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow array construction failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// JSON (manifest, journal, state) could not be read or written.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The job was cancelled (resumable: nothing half-written was kept).
    #[error("cancelled")]
    Cancelled,
    /// A model endpoint could not be used (unreachable, not ready, unexpected answers).
    #[error("endpoint {url}: {problem}")]
    Endpoint { url: String, problem: String },
    /// A scoring output directory holds something kiln will not overwrite or cannot read.
    #[error("scoring output {}: {problem}", dir.display())]
    ScoreOutput { dir: PathBuf, problem: String },
    /// An event file (`kiln windows`) is unreadable, lacks a column or holds bad values.
    #[error("events {file}: {problem}")]
    Events { file: String, problem: String },
    /// A windows output directory holds something kiln will not overwrite or cannot read.
    #[error("windows output {}: {problem}", dir.display())]
    WindowsOutput { dir: PathBuf, problem: String },
    /// `kiln serve` or the daemon's server failed.
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_owned(),
            source,
        }
    }

    pub(crate) fn shard(shard: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Shard {
            shard: shard.as_ref().to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn entry(entry: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Entry {
            entry: entry.as_ref().to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn invalid(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Invalid {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn panicked(what: &'static str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::Panicked { what, message }
    }
}

/// `.at("reading", path)` on `io::Result`s: the error names the file.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
