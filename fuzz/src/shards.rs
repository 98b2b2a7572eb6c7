//! The `shard_read` target: arbitrary bytes as a shard of a cache entry.

use std::fs;

use arrow_schema::DataType;
use kiln::cache::{sha256_file, DType, ShardInfo, TensorInfo};
use kiln::shards::{Layout, ShardReader, TensorColumn};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

/// The file name `kiln convert` gives an entry's first shard.
const SHARD: &str = "part-00000.parquet";

/// Bytes as `part-00000.parquet` through `ShardReader::open`, `read_row_group` for every row
/// group and `TensorColumn::from_batch`, then every row's tensor.
///
/// The manifest record (`ShardInfo`) is made to match the input: its size and SHA-256 are the
/// input's, so the integrity check passes and what gets fuzzed is the Parquet and Arrow decoding
/// behind it, the part a bit flip undetected by the hash (or a shard written by a buggy or
/// hostile producer with a matching manifest) would reach. The layout and row groups are what
/// the file's own footer claims, when it has a readable one, so inputs get past the schema and
/// row-group checks too.
///
/// Returns how many rows decoded all the way (to tensors, or to a batch for raw shards), so the
/// replay test can check that a valid seed is read in full rather than refused early.
pub fn shard_read(bytes: &[u8]) -> u64 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(SHARD);
    fs::write(&path, bytes).expect("writing the shard");
    let sha256 = sha256_file(&path).expect("hashing the shard");
    let (layout, row_groups) = claimed_layout(&path).unwrap_or((Layout::Raw, Vec::new()));
    let rows = row_groups.iter().sum();
    let info = ShardInfo {
        file: SHARD.to_owned(),
        rows,
        bytes: bytes.len() as u64,
        sha256,
        first_item: 0,
        end_item: rows,
        row_groups,
    };
    let Ok(reader) = ShardReader::open(dir.path(), &info, &layout) else {
        return 0;
    };
    let fixed_shape = match &layout {
        Layout::Tensor(TensorInfo { shape, .. }) => shape.clone(),
        _ => None,
    };
    let mut decoded = 0;
    for (index, &rows) in reader.row_groups().iter().enumerate() {
        let Ok(batch) = reader.read_row_group(index) else {
            continue;
        };
        assert_eq!(batch.num_rows() as u64, rows, "row group {index} row count");
        if matches!(layout, Layout::Raw) {
            decoded += rows;
            continue;
        }
        let Ok(column) = TensorColumn::from_batch(&batch, fixed_shape.as_deref()) else {
            continue;
        };
        assert_eq!(column.len() as u64, rows, "tensor column of row group {index}");
        for row in 0..column.len() {
            // `Tensor::new` panics when the values don't match the shape: `from_batch` has to
            // have checked every row.
            let tensor = column.tensor(row);
            assert_eq!(tensor.shape, column.shape(row));
        }
        decoded += rows;
    }
    decoded
}

/// The layout and rows per row group the file's footer declares, as `kiln convert` would have
/// recorded them in the manifest; `None` when the footer does not parse.
fn claimed_layout(path: &std::path::Path) -> Option<(Layout, Vec<u64>)> {
    let file = fs::File::open(path).ok()?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).ok()?;
    let row_groups = metadata
        .metadata()
        .row_groups()
        .iter()
        .map(|group| u64::try_from(group.num_rows()).unwrap_or(0))
        .collect();
    let schema = metadata.schema();
    let layout = match schema.field_with_name("tensor").map(|f| f.data_type()) {
        Ok(DataType::FixedSizeList(item, width)) => Layout::Tensor(TensorInfo {
            dtype: dtype(item.data_type())?,
            shape: Some(vec![usize::try_from(*width).ok()?]),
        }),
        Ok(DataType::List(item)) => Layout::Tensor(TensorInfo {
            dtype: dtype(item.data_type())?,
            shape: None,
        }),
        _ => Layout::Raw,
    };
    Some((layout, row_groups))
}

fn dtype(element: &DataType) -> Option<DType> {
    match element {
        DataType::Float32 => Some(DType::Float32),
        DataType::UInt8 => Some(DType::Uint8),
        _ => None,
    }
}
