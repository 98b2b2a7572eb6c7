//! Entry locks and the marker that says a directory is a kiln entry.
//!
//! Converters hold `.lock` exclusively while they write; readers hold `.readers` shared while
//! they stream. `gc` and `rm` take both without waiting and skip an entry they cannot get, so
//! nothing in use is ever deleted.

use std::fs;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

pub(super) const LOCK: &str = ".lock";
pub(super) const READERS: &str = ".readers";
/// Written into every entry kiln creates; `gc` and `rm` refuse directories without it.
pub(super) const MARKER: &str = ".kiln-entry";

fn open_lock_file(entry: &Path, name: &str) -> Result<fs::File> {
    let path = entry.join(name);
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at("opening lock", &path)
}

/// Creates the entry directory with its marker (idempotent).
pub fn mark_entry(entry: &Path) -> Result<()> {
    fs::create_dir_all(entry).at("creating cache entry", entry)?;
    let marker = entry.join(MARKER);
    if !marker.exists() {
        fs::write(&marker, b"kiln cache entry\n").at("writing", &marker)?;
    }
    Ok(())
}

/// An exclusive lock on an entry, held while converting into it; another process asking for
/// the same entry waits, then finds it complete.
#[derive(Debug)]
pub struct EntryLock {
    _file: fs::File,
}

pub fn lock_entry(entry: &Path) -> Result<EntryLock> {
    mark_entry(entry)?;
    let file = open_lock_file(entry, LOCK)?;
    file.lock().at("locking", entry.join(LOCK))?;
    Ok(EntryLock { _file: file })
}

/// A shared lock held by a reader of a complete entry.
#[derive(Debug)]
pub struct ReaderLock {
    _file: fs::File,
}

impl ReaderLock {
    pub fn acquire(entry: &Path) -> Result<ReaderLock> {
        let file = open_lock_file(entry, READERS)?;
        file.lock_shared().at("locking", entry.join(READERS))?;
        // Its modification time is the entry's last use, which gc's `keep_recent` honours.
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(ReaderLock { _file: file })
    }
}

/// Both locks, taken without waiting, for deleting an entry; `None` when someone holds either.
pub(super) fn try_lock_for_removal(entry: &Path) -> Result<Option<(fs::File, fs::File)>> {
    let writer = open_lock_file(entry, LOCK)?;
    let readers = open_lock_file(entry, READERS)?;
    let free = |file: &fs::File, name: &str| match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("locking", entry.join(name), e)),
    };
    if free(&writer, LOCK)? && free(&readers, READERS)? {
        Ok(Some((writer, readers)))
    } else {
        Ok(None)
    }
}
