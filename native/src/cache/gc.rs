//! Listing and pruning the cache. Only directories marked as kiln entries are ever touched,
//! and never one that a converter or reader holds, or that was used within `keep_recent`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::lock::{try_lock_for_removal, MARKER, READERS};
use super::manifest::{read_manifest, MANIFEST};
use crate::error::{Error, IoContext, Result};

/// One line of `kiln cache ls`.
#[derive(Debug, Serialize)]
pub struct EntrySummary {
    pub key: String,
    pub path: String,
    pub complete: bool,
    pub rows: Option<u64>,
    pub bytes: u64,
    pub source: Option<String>,
    /// Seconds since the entry was last written or read.
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

/// Time since the entry was last written (manifest) or opened by a reader (`.readers`).
fn age(dir: &Path) -> Duration {
    [dir.join(MANIFEST), dir.join(READERS), dir.to_owned()]
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

/// Kiln's entries carry the marker; entries written before it existed are recognised by a
/// manifest naming the directory as its key, which no user's directory has by chance.
fn is_entry(dir: &Path) -> bool {
    if dir.join(MARKER).is_file() {
        return true;
    }
    let key = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    fs::read(dir.join(MANIFEST))
        .ok()
        .filter(|bytes| bytes.len() < 1 << 20)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|m| m["key"].as_str().is_some() && m["key"].as_str().map(str::to_owned) == key)
}

/// The kiln entries in `cache` (other directories are not listed).
pub fn list_entries(cache: &Path) -> Result<Vec<EntrySummary>> {
    if !cache.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(cache).at("reading cache", cache)? {
        let dir = entry.at("reading cache", cache)?.path();
        if !dir.is_dir() || !is_entry(&dir) {
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

fn entry_dir(cache: &Path, key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.starts_with('.') || key.contains(['/', '\\']) || key.contains("..") {
        return Err(Error::invalid("cache key", format!("{key:?} is not a key")));
    }
    let dir = cache.join(key);
    if !dir.is_dir() {
        return Err(Error::Cache {
            path: cache.to_owned(),
            problem: format!("no entry {key}"),
        });
    }
    if !is_entry(&dir) {
        return Err(Error::Cache {
            path: dir,
            problem: format!("not a kiln cache entry (no {MARKER}); refusing to delete it"),
        });
    }
    Ok(dir)
}

/// Removes one entry; refuses while a converter or reader holds it.
pub fn remove_entry(cache: &Path, key: &str) -> Result<PathBuf> {
    let dir = entry_dir(cache, key)?;
    let Some(_locks) = try_lock_for_removal(&dir)? else {
        return Err(Error::Cache {
            path: dir,
            problem: "in use by a running convert or reader; not removed".into(),
        });
    };
    remove_entry_dir(&dir)?;
    Ok(dir)
}

/// Deletes the marker last, so an interrupted removal leaves a directory gc still recognises.
fn remove_entry_dir(dir: &Path) -> Result<()> {
    for item in fs::read_dir(dir).at("reading", dir)? {
        let path = item.at("reading", dir)?.path();
        if path.file_name().is_some_and(|n| n != MARKER) {
            if path.is_dir() {
                fs::remove_dir_all(&path).at("removing", &path)?;
            } else {
                fs::remove_file(&path).at("removing", &path)?;
            }
        }
    }
    fs::remove_dir_all(dir).at("removing", dir)
}

/// What `gc` may remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Remove the least recently used entries until the cache is at most this many bytes.
    pub max_size: Option<u64>,
    /// Remove entries not used for longer than this.
    pub max_age: Option<Duration>,
    /// Never remove entries used within this long (one just reported by `convert`, say).
    pub keep_recent: Duration,
}

/// Removes entries older than `max_age`, then the least recently used until the cache fits
/// `max_size`; entries in use or used within `keep_recent` stay. Returns the removed keys.
pub fn gc(cache: &Path, options: GcOptions) -> Result<Vec<String>> {
    let mut entries = list_entries(cache)?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.age_s));
    let mut removed = Vec::new();
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    for e in &entries {
        let too_old = options.max_age.is_some_and(|a| e.age_s > a.as_secs());
        let too_big = options.max_size.is_some_and(|m| total > m);
        if !(too_old || too_big) || e.age_s < options.keep_recent.as_secs() {
            continue;
        }
        let dir = PathBuf::from(&e.path);
        let Some(_locks) = try_lock_for_removal(&dir)? else {
            continue;
        };
        remove_entry_dir(&dir)?;
        total -= e.bytes;
        removed.push(e.key.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_entries_or_manifests_naming_their_directory_are_entries() {
        let cache = std::env::temp_dir().join(format!("kiln-gc-entries-{}", std::process::id()));
        let _ = fs::remove_dir_all(&cache);
        for (name, manifest) in [
            ("0123abcd", Some(r#"{"key": "0123abcd"}"#)),
            ("photos", Some(r#"{"key": "0123abcd"}"#)),
            ("music", None),
        ] {
            fs::create_dir_all(cache.join(name)).unwrap();
            if let Some(text) = manifest {
                fs::write(cache.join(name).join(MANIFEST), text).unwrap();
            }
        }
        super::super::mark_entry(&cache.join("fresh")).unwrap();
        let keys: Vec<String> = list_entries(&cache).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["0123abcd", "fresh"]);
        let refused = remove_entry(&cache, "photos").unwrap_err();
        assert!(
            refused.to_string().contains("not a kiln cache entry"),
            "{refused}"
        );
        fs::remove_dir_all(&cache).unwrap();
    }
}
