//! A run's journal, for outputs that resume after kill -9 (`kiln score`, `kiln windows`): a
//! JSON plan on the first line, then one JSON record per finished piece, each line synced
//! before the piece counts as done. Rewritten whole (atomically) when a run starts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::fsio::{write_atomic, TMP_MARK};

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: fs::File,
}

impl Journal {
    /// Starts `path` with `plan` and the records an earlier run finished and this one keeps.
    pub fn start<'a, P: Serialize, R: Serialize + 'a>(
        path: &Path,
        plan: &P,
        kept: impl IntoIterator<Item = &'a R>,
    ) -> Result<Journal> {
        let mut text = serde_json::to_string(plan).expect("plans serialise");
        text.push('\n');
        for record in kept {
            text.push_str(&serde_json::to_string(record).expect("records serialise"));
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(path)
            .at("opening", path)?;
        Ok(Journal {
            path: path.to_owned(),
            file,
        })
    }

    pub fn append<R: Serialize>(&mut self, record: &R) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("records serialise");
        line.push('\n');
        self.file.write_all(line.as_bytes()).at("writing", &self.path)?;
        self.file.sync_data().at("writing", &self.path)
    }

    /// Removes the journal once the run's manifest is written.
    pub fn finish(self) -> Result<()> {
        drop(self.file);
        fs::remove_file(&self.path).at("removing", &self.path)
    }
}

/// The plan and records of a journal. `Err` holds the problem (the first line is not a plan
/// of this kind) for the caller to name its output; records stop at the first line that does
/// not parse, which a killed run can leave cut short.
pub fn read_journal<P: DeserializeOwned, R: DeserializeOwned>(
    path: &Path,
) -> Result<std::result::Result<(P, Vec<R>), String>> {
    let text = fs::read_to_string(path).at("reading", path)?;
    let mut lines = text.lines();
    let plan = match serde_json::from_str(lines.next().unwrap_or_default()) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(format!("its first line is not a plan: {e}"))),
    };
    let records = lines.map_while(|line| serde_json::from_str(line).ok()).collect();
    Ok(Ok((plan, records)))
}

/// Checks that an output directory holds only what a resumable run writes (`ours` says which
/// names; kiln's temporaries always are) and removes the temporaries an interrupted run left:
/// they were never renamed, so never part of the output. `refuse` turns the problem into the
/// caller's error. `Ok(false)` when `dir` does not exist yet.
pub fn claim_output_dir(
    dir: &Path,
    ours: impl Fn(&str) -> bool,
    refuse: impl Fn(String) -> Error,
) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    for entry in entries {
        let name = entry.at("listing", dir)?.file_name();
        let name = name.to_string_lossy();
        if name.contains(TMP_MARK) {
            let _ = fs::remove_file(dir.join(&*name));
        } else if !ours(&name) {
            return Err(refuse(format!(
                "holds {name:?}, which kiln did not write; choose an empty or new directory"
            )));
        }
    }
    Ok(true)
}
