//! Labels from paths (parent directory, or a regex) or from a CSV/Parquet file joined by path,
//! and their stable integer indices.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use regex::Regex;

use crate::error::{Error, Result};

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
        Ok(LabelRule::Regex(Regex::new(pattern).map_err(|e| {
            Error::invalid("--label-regex", format!("{pattern:?}: {e}"))
        })?))
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
    let bad = |problem: String| Error::Labels {
        path: file.to_owned(),
        problem,
    };
    let mut reader = csv::Reader::from_path(file).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(p), Some(l)) = (column("path"), column("label")) else {
        return Err(bad(format!(
            "needs a header with `path` and `label` columns, got {headers:?}"
        )));
    };
    let mut map = HashMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("line {}: {e}", line + 2)))?;
        map.insert(record[p].to_owned(), record[l].to_owned());
    }
    Ok(map)
}

fn read_parquet_labels(file: &Path) -> Result<HashMap<String, String>> {
    use arrow::array::{Array, StringArray};
    let bad = |problem: String| Error::Labels {
        path: file.to_owned(),
        problem,
    };
    let opened = std::fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(opened)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let mut map = HashMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let column = |name: &str| -> Result<StringArray> {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("no `{name}` column")))?;
            let cast = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)
                .map_err(|e| bad(format!("column `{name}`: {e}")))?;
            cast.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| bad(format!("column `{name}` is not text")))
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
