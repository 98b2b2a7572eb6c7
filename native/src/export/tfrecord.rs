//! `kiln export --format tfrecord`: a cache entry as TFRecord files of `tf.train.Example`,
//! framed as TensorFlow writes them (length, masked CRC32C of the length, data, masked CRC32C
//! of the data).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, BinaryArray, Int32Array, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, IoContext, Result};
use crate::fsio::AtomicFile;
use crate::shards::{EntryReader, TensorColumn, TensorValues};

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One `tf.train.Feature` value.
enum Feature<'a> {
    Bytes(Vec<&'a [u8]>),
    OwnedBytes(Vec<Vec<u8>>),
    Floats(&'a [f32]),
    OwnedFloats(Vec<f32>),
    Ints(Vec<i64>),
}

fn encode_feature(feature: &Feature) -> Vec<u8> {
    let mut list = Vec::new();
    let field = match feature {
        Feature::Bytes(values) => {
            values.iter().for_each(|v| length_delimited(&mut list, 1, v));
            1
        }
        Feature::OwnedBytes(values) => {
            values.iter().for_each(|v| length_delimited(&mut list, 1, v));
            1
        }
        Feature::Floats(values) => {
            let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            length_delimited(&mut list, 1, &packed);
            2
        }
        Feature::OwnedFloats(values) => {
            let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            length_delimited(&mut list, 1, &packed);
            2
        }
        Feature::Ints(values) => {
            let mut packed = Vec::new();
            values.iter().for_each(|&v| varint(&mut packed, v as u64));
            length_delimited(&mut list, 1, &packed);
            3
        }
    };
    let mut out = Vec::new();
    length_delimited(&mut out, field, &list);
    out
}

/// `tf.train.Example { features { feature: map<string, Feature> } }`.
fn encode_example(features: &[(&str, Feature)]) -> Vec<u8> {
    let mut map = Vec::new();
    for (name, feature) in features {
        let mut entry = Vec::new();
        length_delimited(&mut entry, 1, name.as_bytes());
        length_delimited(&mut entry, 2, &encode_feature(feature));
        length_delimited(&mut map, 1, &entry);
    }
    let mut example = Vec::new();
    length_delimited(&mut example, 1, &map);
    example
}

fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc(data).to_le_bytes())
}

/// One row's value of `column` as a feature (`None` for a null: the feature is left out).
fn any_feature(column: &dyn Array, row: usize) -> Result<Option<Feature<'_>>> {
    use arrow::array::{AsArray, BooleanArray, LargeBinaryArray, LargeStringArray};
    use arrow::datatypes::*;
    if column.is_null(row) {
        return Ok(None);
    }
    let ints = |values: Vec<i64>| Ok(Some(Feature::Ints(values)));
    Ok(match column.data_type() {
        DataType::Binary => Some(Feature::Bytes(vec![column.as_binary::<i32>().value(row)])),
        DataType::LargeBinary => Some(Feature::Bytes(vec![column
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .expect("large binary")
            .value(row)])),
        DataType::Utf8 => Some(Feature::Bytes(vec![column.as_string::<i32>().value(row).as_bytes()])),
        DataType::LargeUtf8 => Some(Feature::Bytes(vec![column
            .as_any()
            .downcast_ref::<LargeStringArray>()
            .expect("large string")
            .value(row)
            .as_bytes()])),
        DataType::Boolean => {
            let b = column.as_any().downcast_ref::<BooleanArray>().expect("boolean").value(row);
            return ints(vec![i64::from(b)]);
        }
        DataType::Int8 => return ints(vec![column.as_primitive::<Int8Type>().value(row).into()]),
        DataType::Int16 => return ints(vec![column.as_primitive::<Int16Type>().value(row).into()]),
        DataType::Int32 => return ints(vec![column.as_primitive::<Int32Type>().value(row).into()]),
        DataType::Int64 => return ints(vec![column.as_primitive::<Int64Type>().value(row)]),
        DataType::UInt8 => return ints(vec![column.as_primitive::<UInt8Type>().value(row).into()]),
        DataType::UInt16 => return ints(vec![column.as_primitive::<UInt16Type>().value(row).into()]),
        DataType::UInt32 => return ints(vec![column.as_primitive::<UInt32Type>().value(row).into()]),
        // Times as their integer value (Spark timestamps: microseconds since the epoch).
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Duration(_) => {
            let single = column.slice(row, 1);
            let value = arrow::compute::cast(&single, &DataType::Int64)?;
            return ints(vec![value.as_primitive::<Int64Type>().value(0)]);
        }
        DataType::Float32 => {
            let v = column.as_primitive::<Float32Type>();
            Some(Feature::Floats(&v.values()[row..row + 1]))
        }
        DataType::Float64 => Some(Feature::OwnedFloats(vec![column.as_primitive::<Float64Type>().value(row) as f32])),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let values = match column.data_type() {
                DataType::List(_) => column.as_list::<i32>().value(row),
                DataType::LargeList(_) => column.as_list::<i64>().value(row),
                _ => column.as_fixed_size_list().value(row),
            };
            let values = arrow::compute::cast(&values, &list_target(values.data_type())?)?;
            match values.data_type() {
                DataType::Int64 => return ints(values.as_primitive::<Int64Type>().values().to_vec()),
                DataType::Float32 => Some(Feature::OwnedFloats(values.as_primitive::<Float32Type>().values().to_vec())),
                _ => Some(Feature::OwnedBytes(
                    (0..values.len()).map(|i| values.as_binary::<i32>().value(i).to_vec()).collect(),
                )),
            }
        }
        other => {
            return Err(Error::invalid(
                "column",
                format!("of type {other} cannot be a tf.train.Feature (binary, strings, numbers and lists of them can)"),
            ))
        }
    })
}

/// What a list's items become: int64, float32 or bytes.
fn list_target(item: &arrow::datatypes::DataType) -> Result<arrow::datatypes::DataType> {
    use arrow::datatypes::DataType::*;
    Ok(match item {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => Int64,
        Float16 | Float32 | Float64 => Float32,
        Binary | LargeBinary | Utf8 | LargeUtf8 => Binary,
        other => {
            return Err(Error::invalid(
                "column",
                format!("a list of {other} cannot be a tf.train.Feature"),
            ))
        }
    })
}

/// Every row of `batch` as a framed `tf.train.Example` with a feature per column (binary and
/// strings as bytes_list, integers as int64_list, floats as float_list, lists of them
/// likewise; nulls left out), concatenated as a TFRecord file holds them.
pub fn tfrecord_records(batch: &RecordBatch) -> Result<Vec<u8>> {
    let schema = batch.schema();
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        let mut features = Vec::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if let Some(feature) = any_feature(column.as_ref(), row)
                .map_err(|e| Error::invalid(format!("column {:?}", field.name()), e.to_string()))?
            {
                features.push((field.name().as_str(), feature));
            }
        }
        write_record(&mut out, &encode_example(&features)).expect("writing to memory");
    }
    Ok(out)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::invalid("batch", format!("no `{name}` column of the expected type")))
}

fn examples(batch: &RecordBatch, fixed_shape: Option<&[usize]>) -> Result<Vec<Vec<u8>>> {
    let ids = column::<UInt64Array>(batch, "row_id")?;
    let paths = column::<StringArray>(batch, "path")?;
    let labels = column::<StringArray>(batch, "label")?;
    let indices = column::<Int32Array>(batch, "label_index")?;
    let tensors = batch
        .column_by_name("tensor")
        .map(|_| TensorColumn::from_batch(batch, fixed_shape))
        .transpose()?;
    let content = batch
        .column_by_name("content")
        .map(|_| column::<BinaryArray>(batch, "content"))
        .transpose()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut features = vec![
            ("row_id", Feature::Ints(vec![ids.value(i) as i64])),
            ("path", Feature::Bytes(vec![paths.value(i).as_bytes()])),
        ];
        if labels.is_valid(i) {
            features.push(("label", Feature::Bytes(vec![labels.value(i).as_bytes()])));
            features.push(("label_index", Feature::Ints(vec![i64::from(indices.value(i))])));
        }
        if let Some(tensors) = &tensors {
            features.push((
                "tensor",
                match tensors.values(i) {
                    TensorValues::F32(v) => Feature::Floats(v),
                    TensorValues::U8(v) => Feature::Bytes(vec![v]),
                },
            ));
            let shape = tensors.shape(i).iter().map(|&d| d as i64).collect();
            features.push(("shape", Feature::Ints(shape)));
        }
        if let Some(content) = content {
            features.push(("content", Feature::Bytes(vec![content.value(i)])));
        }
        out.push(encode_example(&features));
    }
    Ok(out)
}

/// Writes one `part-NNNNN.tfrecord` per shard into `out_dir` (each verified before it is read);
/// returns the files and row count.
pub fn export(entry_dir: &Path, out_dir: &Path) -> Result<(Vec<PathBuf>, u64)> {
    let entry = EntryReader::open(entry_dir)?;
    fs::create_dir_all(out_dir).at("creating", out_dir)?;
    let fixed = entry.tensor_info().and_then(|t| t.shape.clone());
    // Drawn on stderr only when it is a terminal.
    let bar = indicatif::ProgressBar::new(entry.rows()).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} exporting [{bar:30}] {pos}/{len} rows {per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut files = Vec::new();
    let mut rows = 0;
    for index in 0..entry.manifest.shards.len() {
        let shard = entry.shard(index)?;
        let path = out_dir.join(format!("part-{index:05}.tfrecord"));
        let mut file = AtomicFile::create(&path)?;
        let mut out = BufWriter::new(file.take_file());
        for batch in shard.batches() {
            for example in examples(&batch?, fixed.as_deref())? {
                write_record(&mut out, &example).at("writing", &path)?;
                rows += 1;
                bar.inc(1);
            }
        }
        let inner = out
            .into_inner()
            .map_err(|e| Error::io("writing", &path, e.into_error()))?;
        file.commit_file(inner)?;
        files.push(path);
    }
    bar.finish_and_clear();
    Ok((files, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c_test: Mask(Value("foo")) round-trips and differs from Value.
        let crc = crc32c::crc32c(b"foo");
        assert_ne!(masked_crc(b"foo"), crc);
        let unmasked = masked_crc(b"foo").wrapping_sub(0xa282_ead8).rotate_left(15);
        assert_eq!(unmasked, crc);
        // CRC32C("123456789") = 0xE3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}
