//! `progress.jsonl`: one line per finished shard (and the failures since the previous one),
//! appended and synced, so a killed run resumes after the last shard it committed.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::{Failure, ShardInfo, JOURNAL};
use crate::error::{IoContext, Result};
use crate::fsio::TMP_MARK;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct JournalRecord {
    pub shard: Option<ShardInfo>,
    pub failed: Vec<Failure>,
    pub end_item: u64,
}

/// What a previous, interrupted run committed.
#[derive(Debug, Default)]
pub(super) struct Resumed {
    pub shards: Vec<ShardInfo>,
    pub failed: Vec<Failure>,
    pub next_item: u64,
}

pub(super) fn read(entry: &Path) -> Resumed {
    let mut resumed = Resumed::default();
    let Ok(text) = fs::read_to_string(entry.join(JOURNAL)) else {
        return resumed;
    };
    for line in text.lines() {
        // A line cut short by a crash is the only kind that fails to parse: ignore it and
        // everything after it, and redo that work.
        let Ok(record) = serde_json::from_str::<JournalRecord>(line) else {
            break;
        };
        if let Some(shard) = record.shard {
            let intact = fs::metadata(entry.join(&shard.file)).is_ok_and(|m| m.len() == shard.bytes);
            if !intact || shard.file.contains(['/', '\\']) {
                break;
            }
            resumed.shards.push(shard);
        }
        resumed.failed.extend(record.failed);
        resumed.next_item = record.end_item;
    }
    resumed
}

pub(super) fn append(entry: &Path, record: &JournalRecord) -> Result<()> {
    let path = entry.join(JOURNAL);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .at("opening", &path)?;
    let mut line = serde_json::to_string(record).expect("journal records serialise");
    line.push('\n');
    file.write_all(line.as_bytes()).at("writing", &path)?;
    file.sync_all().at("syncing", &path)
}

pub(super) fn remove(entry: &Path) -> Result<()> {
    let path = entry.join(JOURNAL);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::error::Error::io("removing", &path, e))
        }
        _ => Ok(()),
    }
}

/// Removes temporaries a killed run left behind.
pub(super) fn remove_temporaries(entry: &Path) -> Result<()> {
    for e in fs::read_dir(entry).at("reading", entry)? {
        let path = e.at("reading", entry)?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(TMP_MARK))
        {
            fs::remove_file(&path).at("removing", &path)?;
        }
    }
    Ok(())
}
