//! A complete cache entry opened for reading: its checked manifest, its row groups as blocks
//! (planned from the manifest, so no unverified shard is parsed), and shard readers verified
//! the first time each shard is touched. The loader, export and `stream` all read through it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

use super::{Layout, ShardReader};
use crate::cache::{read_manifest, Manifest, Materialize, ReaderLock, TensorInfo};
use crate::error::{Error, Result};

/// A row group of a shard: the unit the loader reads and shuffles.
#[derive(Debug, Clone)]
pub struct Block {
    pub shard: usize,
    pub row_group: usize,
    /// Position of its first row in the entry's storage order.
    pub start: u64,
    pub rows: u64,
}

#[derive(Debug)]
pub struct EntryReader {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub layout: Layout,
    pub blocks: Vec<Block>,
    readers: Mutex<Vec<Option<Arc<ShardReader>>>>,
    /// None on a read-only cache, where no gc can delete the entry under us either.
    _lock: Option<ReaderLock>,
}

impl EntryReader {
    pub fn open(dir: impl AsRef<Path>) -> Result<EntryReader> {
        let dir = dir.as_ref().to_owned();
        let manifest = read_manifest(&dir)?;
        let lock = ReaderLock::acquire(&dir).ok();
        let layout = match (&manifest.materialize, &manifest.tensor) {
            (Materialize::Raw, _) => Layout::Raw,
            (Materialize::Table, _) => Layout::Table,
            (Materialize::Tensor, Some(info)) => Layout::Tensor(info.clone()),
            (Materialize::Tensor, None) => {
                return Err(Error::entry(&dir, "tensor entry without tensor info"))
            }
        };
        let mut blocks = Vec::new();
        let mut start = 0;
        for (shard, info) in manifest.shards.iter().enumerate() {
            for (row_group, &rows) in info.row_groups.iter().enumerate() {
                blocks.push(Block {
                    shard,
                    row_group,
                    start,
                    rows,
                });
                start += rows;
            }
        }
        let readers = Mutex::new(vec![None; manifest.shards.len()]);
        Ok(EntryReader {
            dir,
            manifest,
            layout,
            blocks,
            readers,
            _lock: lock,
        })
    }

    pub fn rows(&self) -> u64 {
        self.manifest.rows
    }

    /// The stored tensor's dtype and shape (tensor entries).
    pub fn tensor_info(&self) -> Option<&TensorInfo> {
        self.manifest.tensor.as_ref()
    }

    /// Shard `index`, verified against the manifest on first use.
    pub fn shard(&self, index: usize) -> Result<Arc<ShardReader>> {
        if let Some(Some(reader)) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).get(index) {
            return Ok(reader.clone());
        }
        let info = self
            .manifest
            .shards
            .get(index)
            .ok_or_else(|| Error::entry(&self.dir, format!("has no shard {index}")))?;
        let reader = Arc::new(ShardReader::open(&self.dir, info, &self.layout)?);
        self.readers.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(reader.clone());
        Ok(reader)
    }

    pub fn read_block(&self, block: &Block) -> Result<RecordBatch> {
        self.shard(block.shard)?.read_row_group(block.row_group)
    }
}
