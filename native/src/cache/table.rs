//! Table entries: Parquet files written by something other than kiln (Spark, for
//! `kiln.spark.make_spark_converter`) made into a cache entry, so kiln's loader (shards
//! verified by SHA-256, seeded shuffling, sharding, resumable state) reads them as it reads
//! its own. The files keep whatever columns they have.

use std::fs;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};

use super::manifest::{Manifest, Materialize, ShardInfo, FORMAT_VERSION, MANIFEST};
use super::sha256_file;
use crate::error::{Error, Result};
use crate::fsio::write_atomic;

/// Indexes the `.parquet` files directly in `dir` (in name order) and writes its manifest.
/// Other files (`_SUCCESS`, checksums) are left alone and never read.
pub fn index_table(dir: &Path, key: &str, source: &str) -> Result<Manifest> {
    // Marked as kiln's, so `kiln cache gc` and `rm` manage it like any entry.
    super::mark_entry(dir)?;
    let mut files: Vec<String> = fs::read_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_'))
        .collect();
    files.sort();
    let mut shards = Vec::new();
    let mut rows = 0u64;
    let mut columns = Vec::new();
    for file in files {
        let path = dir.join(&file);
        let reader =
            SerializedFileReader::new(fs::File::open(&path).map_err(|e| Error::io("opening", &path, e))?)
                .map_err(|e| Error::shard(&path, format!("not a readable Parquet file: {e}")))?;
        let metadata = reader.metadata();
        let row_groups: Vec<u64> = metadata
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let file_rows: u64 = row_groups.iter().sum();
        if file_rows == 0 {
            continue;
        }
        if columns.is_empty() {
            columns = metadata
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .map(|c| (c.path().string(), format!("{:?}", c.physical_type())))
                .collect();
        }
        shards.push(ShardInfo {
            file,
            rows: file_rows,
            bytes: fs::metadata(&path)
                .map_err(|e| Error::io("reading", &path, e))?
                .len(),
            sha256: sha256_file(&path)?,
            first_item: rows,
            end_item: rows + file_rows,
            row_groups,
        });
        rows += file_rows;
    }
    if rows == 0 {
        return Err(Error::entry(dir, "the table has no rows"));
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        key: key.to_owned(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        source: source.to_owned(),
        spec: serde_json::Value::Null,
        kernel_version: kiln_core::KERNEL_VERSION,
        materialize: Materialize::Table,
        label_rule: "table".into(),
        compression: "as written".into(),
        columns,
        tensor: None,
        rows,
        labels: Vec::new(),
        shards,
        failed: Vec::new(),
        listed: rows,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifests serialise");
    write_atomic(&dir.join(MANIFEST), text.as_bytes())?;
    Ok(manifest)
}
