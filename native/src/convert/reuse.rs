//! Incremental conversion: rows of unchanged files taken from an earlier entry instead of being
//! read and transformed again (a dataset kept current as files arrive converts only the new
//! and changed ones).
//!
//! An entry records what it listed in `items.json` (path, size and version — ETag or
//! modification time — of every file). An earlier entry's row is reused for a file whose path,
//! size and version are unchanged, when the earlier entry ran the same spec, kernels and
//! materialization. Its rows are read through the verifying reader, so a damaged earlier entry
//! is an error, never silently copied.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, BinaryArray, StringArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::plan::Job;
use super::ConvertOptions;
use crate::cache::{read_manifest, Materialize};
use crate::error::{Error, Result};
use crate::fsio::write_atomic;
use crate::shards::{EntryReader, Layout, Payload, TensorColumn};

pub const ITEMS: &str = "items.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ListedItem {
    path: String,
    size: u64,
    version: String,
}

/// Records the listed files of a file source beside the manifest (table sources' rows have
/// no per-row version, so they are never reused).
pub(super) fn write_items(entry: &Path, opts: &ConvertOptions, job: &Job) -> Result<()> {
    if opts.table.is_some() {
        return Ok(());
    }
    let items: Vec<ListedItem> = job
        .items
        .iter()
        .map(|i| ListedItem {
            path: i.path.clone(),
            size: i.size,
            version: i.version.clone(),
        })
        .collect();
    write_atomic(
        &entry.join(ITEMS),
        &serde_json::to_vec(&items).expect("items serialise"),
    )
}

/// Rows an earlier entry can give this conversion.
pub(super) struct Reuse {
    reader: EntryReader,
    /// Listing index in this job -> storage position in the earlier entry.
    positions: HashMap<u64, u64>,
    /// The last block read (rows are taken in storage order, so mostly from it).
    block: Option<(usize, RecordBatch)>,
}

impl std::fmt::Debug for Reuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reuse")
            .field("entry", &self.reader.dir)
            .field("rows", &self.positions.len())
            .finish_non_exhaustive()
    }
}

impl Reuse {
    /// What `earlier` can give `job`; `None` when it ran another spec (or has no listing).
    pub(super) fn open(earlier: &Path, opts: &ConvertOptions, job: &Job) -> Result<Option<Reuse>> {
        if opts.table.is_some() {
            return Ok(None);
        }
        let manifest = read_manifest(earlier)?;
        let same_kind = manifest.spec == opts.spec.json
            && manifest.kernel_version == kiln_core::KERNEL_VERSION
            && manifest.materialize == opts.materialize;
        let listed_path = earlier.join(ITEMS);
        if !same_kind || !listed_path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read(&listed_path).map_err(|e| Error::io("reading", &listed_path, e))?;
        let listed: Vec<ListedItem> = serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: listed_path,
            source,
        })?;
        let unchanged: HashMap<&str, u64> = {
            let before: HashMap<&str, &ListedItem> = listed.iter().map(|i| (i.path.as_str(), i)).collect();
            job.items
                .iter()
                .enumerate()
                .filter(|(_, item)| {
                    before
                        .get(item.path.as_str())
                        .is_some_and(|b| b.size == item.size && b.version == item.version)
                })
                .map(|(index, item)| (item.path.as_str(), index as u64))
                .collect()
        };
        let reader = EntryReader::open(earlier)?;
        if reader.layout != expected_layout(opts)? {
            return Ok(None);
        }
        // Where each unchanged file's row is stored (files that failed before have none).
        let mut positions = HashMap::new();
        for block in &reader.blocks {
            let batch = reader.read_block(block)?;
            let paths = batch
                .column_by_name("path")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::entry(earlier, "has no path column"))?;
            for i in 0..paths.len() {
                if let Some(&index) = unchanged.get(paths.value(i)) {
                    positions.insert(index, block.start + i as u64);
                }
            }
        }
        Ok(Some(Reuse {
            reader,
            positions,
            block: None,
        }))
    }

    pub(super) fn has(&self, index: u64) -> bool {
        self.positions.contains_key(&index)
    }

    /// The earlier row of listing index `index` (one [`Self::has`] said yes to).
    pub(super) fn payload(&mut self, index: u64) -> Result<Payload> {
        let position = self.positions[&index];
        let b = self
            .reader
            .blocks
            .iter()
            .position(|b| position >= b.start && position < b.start + b.rows)
            .ok_or_else(|| Error::entry(&self.reader.dir, format!("has no row {position}")))?;
        if self.block.as_ref().is_none_or(|(cached, _)| *cached != b) {
            let batch = self.reader.read_block(&self.reader.blocks[b])?;
            self.block = Some((b, batch));
        }
        let (_, batch) = self.block.as_ref().expect("read above");
        let row = (position - self.reader.blocks[b].start) as usize;
        match &self.reader.layout {
            Layout::Raw => {
                let content = batch
                    .column_by_name("content")
                    .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                    .ok_or_else(|| Error::entry(&self.reader.dir, "has no content column"))?;
                Ok(Payload::Raw(bytes::Bytes::copy_from_slice(content.value(row))))
            }
            Layout::Tensor(info) => {
                let tensors = TensorColumn::from_batch(batch, info.shape.as_deref())?;
                Ok(Payload::Tensor(tensors.tensor(row)))
            }
            Layout::Table => Err(Error::entry(
                &self.reader.dir,
                "is a table entry: nothing to reuse",
            )),
        }
    }
}

fn expected_layout(opts: &ConvertOptions) -> Result<Layout> {
    Ok(match opts.materialize {
        Materialize::Raw => Layout::Raw,
        Materialize::Tensor => Layout::Tensor(crate::cache::TensorInfo::of_spec(&opts.spec.spec)?),
        Materialize::Table => Layout::Table,
    })
}
