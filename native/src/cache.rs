//! The conversion cache: one directory per entry, named by a content hash of what produced it.
//!
//! ```text
//! CACHE/<key>/manifest.json     written last, atomically: an entry is complete iff it exists
//! CACHE/<key>/part-00000.parquet
//! CACHE/<key>/progress.jsonl    finished shards and failures, for resuming an interrupted run
//! CACHE/<key>/.lock             held while a process converts into the entry
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::SourceItem;

pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "progress.jsonl";
const LOCK: &str = ".lock";
/// Bumped when the shard layout or manifest format changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Listing positions `[first_item, end_item)` this shard covers (failed items included).
    pub first_item: u64,
    pub end_item: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorInfo {
    /// `float32` or `uint8`.
    pub dtype: String,
    /// The shape of every row when it is fixed (column `tensor` is a FixedSizeList); `None` when
    /// shapes vary (column `tensor` is a List and column `shape` holds each row's shape).
    pub shape: Option<Vec<usize>>,
}

/// Everything a reader needs to know about a complete entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub key: String,
    pub created: String,
    pub source: String,
    pub spec: serde_json::Value,
    pub kernel_version: u32,
    /// `tensor` (transformed at conversion) or `raw` (file bytes; spec applied when read).
    pub materialize: String,
    pub label_rule: String,
    pub compression: String,
    pub columns: Vec<(String, String)>,
    pub tensor: Option<TensorInfo>,
    pub rows: u64,
    /// Label names; a label's index is its position.
    pub labels: Vec<String>,
    pub shards: Vec<ShardInfo>,
    pub failed: Vec<Failure>,
    pub listed: u64,
}

/// The content hash naming an entry: the source listing (path, size, version), the spec, the
/// label rule, the materialisation mode and the kernel and format versions.
pub fn cache_key(
    items: &[SourceItem],
    spec: &serde_json::Value,
    label_rule: &str,
    materialize: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "kiln-cache v{FORMAT_VERSION} kernels v{}\n",
        kiln_core::KERNEL_VERSION
    ));
    h.update(serde_json::to_vec(spec).expect("spec serialises"));
    h.update(format!("\nlabels {label_rule}\nmaterialize {materialize}\n"));
    for item in items {
        h.update(format!("{}\0{}\0{}\n", item.path, item.size, item.version));
    }
    hex(&h.finalize())[..24].to_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        h.update(&chunk[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Writes through a temporary file and a rename, so readers never see a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("file path").to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

pub fn read_manifest(entry: &Path) -> Result<Manifest> {
    let path = entry.join(MANIFEST);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a complete cache entry (no {MANIFEST})",
            entry.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("corrupt manifest {}", path.display()))
}

/// An exclusive lock on an entry, held while converting into it; another process asking for
/// the same entry waits, then finds it complete.
#[derive(Debug)]
pub struct EntryLock {
    _file: fs::File,
}

pub fn lock_entry(entry: &Path) -> Result<EntryLock> {
    fs::create_dir_all(entry).with_context(|| format!("creating cache entry {}", entry.display()))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.join(LOCK))?;
    file.lock()
        .with_context(|| format!("locking {}", entry.display()))?;
    Ok(EntryLock { _file: file })
}

/// One line of `kiln cache ls`.
#[derive(Debug, Serialize)]
pub struct EntrySummary {
    pub key: String,
    pub path: String,
    pub complete: bool,
    pub rows: Option<u64>,
    pub bytes: u64,
    pub source: Option<String>,
    pub age_s: u64,
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn age(dir: &Path) -> Duration {
    let modified = fs::metadata(dir.join(MANIFEST))
        .or_else(|_| fs::metadata(dir))
        .and_then(|m| m.modified());
    modified
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

pub fn list_entries(cache: &Path) -> Result<Vec<EntrySummary>> {
    if !cache.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(cache).with_context(|| format!("reading cache {}", cache.display()))? {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        let manifest = read_manifest(&dir).ok();
        out.push(EntrySummary {
            key: dir.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            path: dir.display().to_string(),
            complete: manifest.is_some(),
            rows: manifest.as_ref().map(|m| m.rows),
            bytes: dir_size(&dir),
            source: manifest.map(|m| m.source),
            age_s: age(&dir).as_secs(),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

pub fn remove_entry(cache: &Path, key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.contains('/') || key.contains("..") {
        bail!("invalid cache key {key:?}");
    }
    let dir = cache.join(key);
    if !dir.is_dir() {
        bail!("no cache entry {key} in {}", cache.display());
    }
    let _lock = lock_entry(&dir)?;
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(dir)
}

/// Removes entries older than `max_age`, then the oldest until the cache fits `max_size`.
pub fn gc(cache: &Path, max_size: Option<u64>, max_age: Option<Duration>) -> Result<Vec<String>> {
    let mut entries = list_entries(cache)?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.age_s));
    let mut removed = Vec::new();
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    for e in &entries {
        let too_old = max_age.is_some_and(|a| e.age_s > a.as_secs());
        let too_big = max_size.is_some_and(|m| total > m);
        if too_old || too_big {
            remove_entry(cache, &e.key)?;
            total -= e.bytes;
            removed.push(e.key.clone());
        }
    }
    Ok(removed)
}

/// Parses sizes like `512MiB`, `2GB`, `1000`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("invalid size {text:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => bail!("invalid size unit {other:?} in {text:?}"),
    };
    Ok((value * scale as f64) as u64)
}
