//! Atomic writes: every file kiln produces is written to a unique temporary name beside its
//! destination, synced, then renamed, so readers see the old file or the whole new one, and
//! concurrent writers (two label saves, two converts) never share a temporary.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

/// Marks kiln's temporaries; `kiln convert` removes leftovers with it from an entry it resumes.
pub const TMP_MARK: &str = ".tmp.";

/// A temporary name beside `path`, unique across processes (pid) and threads (a counter).
pub fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut name = path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "file".into());
    name.push(format!(
        "{TMP_MARK}{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// A file being written under a temporary name; [`AtomicFile::commit`] syncs and renames it
/// into place, and dropping it uncommitted removes the temporary.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<fs::File>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile> {
        // `create_new`: a leftover of a crashed run with the same name is never written through.
        // Errors name the destination: the temporary is an implementation detail.
        let (tmp, file) = loop {
            let tmp = tmp_path(path);
            match fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => break (tmp, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(crate::Error::io("writing", path, e)),
            }
        };
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open temporary file, to write into.
    pub fn file(&mut self) -> &mut fs::File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Takes the file out (for writers that own it, like Parquet's); give it back to `commit_file`.
    pub fn take_file(&mut self) -> fs::File {
        self.file.take().expect("file taken once")
    }

    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is present until commit");
        self.commit_file(file)
    }

    /// Syncs `file` (the one [`AtomicFile::take_file`] gave out) and renames it into place.
    pub fn commit_file(mut self, file: fs::File) -> Result<()> {
        file.sync_all().at("writing", &self.path)?;
        drop(file);
        fs::rename(&self.tmp, &self.path).at("renaming into", &self.path)?;
        self.tmp = PathBuf::new();
        // The rename is durable once the directory is synced; failing that loses nothing that
        // is not already on disk, so it is not an error.
        if let Some(dir) = self.path.parent().and_then(|d| fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let path_for_errors = file.path.clone();
    file.file().write_all(bytes).at("writing", &path_for_errors)?;
    file.commit()
}
