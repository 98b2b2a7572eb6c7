//! The daemon's state on disk: one JSON file per record (a job, a dataset) in a directory of
//! `STATE`, each written atomically, read back when the daemon starts.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsio::write_atomic;

/// Creates `state/name` if needed and reads every record in it. Anything that is not a
/// `.json` file is a temporary of a write the daemon did not finish, and is removed.
pub fn load<T: DeserializeOwned>(state: &Path, name: &str) -> Result<(PathBuf, Vec<T>)> {
    let dir = state.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    let mut records = Vec::new();
    for file in std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
        let path = file.map_err(|e| Error::io("listing", &dir, e))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        records.push(serde_json::from_slice(&text).map_err(|source| Error::Json { path, source })?);
    }
    Ok((dir, records))
}

/// Writes `dir/id.json` atomically.
pub fn save(dir: &Path, id: &str, record: &impl Serialize) -> Result<()> {
    let text = serde_json::to_vec_pretty(record).expect("records serialise");
    write_atomic(&dir.join(format!("{id}.json")), &text)
}
