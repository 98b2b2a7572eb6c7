//! Labels from paths (parent directory, or a regex) or from a CSV/Parquet file joined by path,
//! and their stable integer indices.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use regex::Regex;

/// Where labels come from.
#[derive(Debug, Clone)]
pub enum LabelRule {
    /// The parent directory's name (`cats/001.png` -> `cats`); files at the root get none.
    ParentDir,
    /// The first capture group (or the whole match) of a regex over the relative path.
    Regex(Regex),
    /// A `path,label` table (CSV with a header, or Parquet with `path` and `label` columns).
    File(HashMap<String, String>),
}

impl LabelRule {
    /// The rule's identity, for cache keys.
    pub fn describe(&self) -> String {
        match self {
            LabelRule::ParentDir => "parent_dir".into(),
            LabelRule::Regex(re) => format!("regex:{}", re.as_str()),
            LabelRule::File(map) => {
                let mut pairs: Vec<_> = map.iter().collect();
                pairs.sort();
                format!("file:{pairs:?}")
            }
        }
    }

    pub fn label(&self, path: &str) -> Option<String> {
        match self {
            LabelRule::ParentDir => {
                let mut parts: Vec<&str> = path.split('/').collect();
                parts.pop();
                parts.pop().map(str::to_owned)
            }
            LabelRule::Regex(re) => {
                let caps = re.captures(path)?;
                caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str().to_owned())
            }
            LabelRule::File(map) => map.get(path).cloned(),
        }
    }

    pub fn from_regex(pattern: &str) -> Result<Self> {
        Ok(LabelRule::Regex(
            Regex::new(pattern).with_context(|| format!("invalid --label-regex {pattern:?}"))?,
        ))
    }

    /// Reads a labels file: CSV with a `path,label` header (the format the labeling tool
    /// exports), or Parquet with `path` and `label` string columns.
    pub fn from_file(file: &Path) -> Result<Self> {
        let is_parquet = file.extension().is_some_and(|e| e == "parquet");
        let map = if is_parquet {
            read_parquet_labels(file)?
        } else {
            read_csv_labels(file)?
        };
        Ok(LabelRule::File(map))
    }
}

fn read_csv_labels(file: &Path) -> Result<HashMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("reading labels {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(p), Some(l)) = (column("path"), column("label")) else {
        bail!(
            "labels {}: needs a header with `path` and `label` columns, got {:?}",
            file.display(),
            headers
        );
    };
    let mut map = HashMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("labels {} line {}", file.display(), line + 2))?;
        map.insert(record[p].to_owned(), record[l].to_owned());
    }
    Ok(map)
}

fn read_parquet_labels(file: &Path) -> Result<HashMap<String, String>> {
    use arrow::array::{Array, StringArray};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(file).with_context(|| format!("reading labels {}", file.display()))?,
    )?
    .build()?;
    let mut map = HashMap::new();
    for batch in reader {
        let batch = batch?;
        let column = |name: &str| -> Result<StringArray> {
            let col = batch
                .column_by_name(name)
                .with_context(|| format!("labels {}: no `{name}` column", file.display()))?;
            let cast = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
            Ok(cast
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8")
                .clone())
        };
        let (paths, labels) = (column("path")?, column("label")?);
        for i in 0..batch.num_rows() {
            if paths.is_valid(i) && labels.is_valid(i) {
                map.insert(paths.value(i).to_owned(), labels.value(i).to_owned());
            }
        }
    }
    Ok(map)
}

/// Label names in sorted order; a label's index is its position.
pub fn label_names<'a>(labels: impl Iterator<Item = &'a Option<String>>) -> Vec<String> {
    labels
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
