//! How shards are encoded: the tensor column's Parquet encoding as `--tensor-encoding` chose
//! it (never a dictionary of distinct floats), the same values whatever the encoding, and the
//! same bytes whatever the worker count (row groups are encoded in parallel, appended in order).

mod support;

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float32Array, ListArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Encoding;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;
use support::*;

fn convert(source: &Path, spec: &str, cache: &Path, extra: &[&str]) -> Value {
    json(&convert_output(source, spec, cache, extra))
}

fn shards(report: &Value) -> Vec<PathBuf> {
    let entry = PathBuf::from(report["entry"].as_str().unwrap());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&entry)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{report}");
    files
}

/// Encodings of the column chunks whose path starts with `column`, over every row group.
fn encodings(shard: &Path, column: &str) -> Vec<Encoding> {
    let reader = SerializedFileReader::new(std::fs::File::open(shard).unwrap()).unwrap();
    let mut found = Vec::new();
    for group in reader.metadata().row_groups() {
        for chunk in group.columns() {
            if chunk.column_path().parts()[0] == column {
                found.extend(chunk.encodings());
            }
        }
    }
    assert!(!found.is_empty(), "no column {column} in {}", shard.display());
    found
}

fn is_dictionary(e: &Encoding) -> bool {
    matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY)
}

/// Every tensor value of an entry, in row order.
fn tensor_values(report: &Value) -> Vec<f32> {
    let mut values = Vec::new();
    for shard in shards(report) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(shard).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("tensor").unwrap();
            let list = column.as_any().downcast_ref::<ListArray>().unwrap();
            let floats = list.values().as_any().downcast_ref::<Float32Array>().unwrap();
            values.extend(floats.values().iter());
        }
    }
    values
}

#[test]
fn audio_tensors_use_byte_stream_split_and_plain_gives_the_same_values() {
    let root = temp_dir("encoding-audio");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 6, 3);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let auto = convert(&data, &spec, &root.join("auto"), &["--include", "*.wav"]);
    for shard in shards(&auto) {
        let tensor = encodings(&shard, "tensor");
        assert!(tensor.contains(&Encoding::BYTE_STREAM_SPLIT), "{tensor:?}");
        assert!(!tensor.iter().any(is_dictionary), "{tensor:?}");
        // Paths are all distinct; labels repeat.
        assert!(!encodings(&shard, "path").iter().any(is_dictionary));
        assert!(encodings(&shard, "label").iter().any(is_dictionary));
    }
    let plain = convert(
        &data,
        &spec,
        &root.join("plain"),
        &["--include", "*.wav", "--tensor-encoding", "plain"],
    );
    for shard in shards(&plain) {
        let tensor = encodings(&shard, "tensor");
        assert!(!tensor.contains(&Encoding::BYTE_STREAM_SPLIT), "{tensor:?}");
        assert!(!tensor.iter().any(is_dictionary), "{tensor:?}");
    }
    let (a, b) = (tensor_values(&auto), tensor_values(&plain));
    assert_eq!(auto["rows"], 12);
    assert!(!a.is_empty());
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn float_images_use_a_dictionary_unless_told_otherwise() {
    let root = temp_dir("encoding-image");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 5, 4);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let auto = convert(&data, &spec, &root.join("auto"), &["--include", "*.png"]);
    for shard in shards(&auto) {
        assert!(encodings(&shard, "tensor").iter().any(is_dictionary));
    }
    let split = convert(
        &data,
        &spec,
        &root.join("split"),
        &["--include", "*.png", "--tensor-encoding", "byte-stream-split"],
    );
    for shard in shards(&split) {
        let tensor = encodings(&shard, "tensor");
        assert!(tensor.contains(&Encoding::BYTE_STREAM_SPLIT), "{tensor:?}");
        assert!(!tensor.iter().any(is_dictionary), "{tensor:?}");
    }
    let bad = convert_output(&data, &spec, &root.join("bad"), &["--tensor-encoding", "delta"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--tensor-encoding"), "{}", stderr(&bad));
}

#[test]
fn shards_are_byte_identical_whatever_the_worker_count() {
    let root = temp_dir("encoding-workers");
    let data = root.join("data");
    make_dataset(&data, &["a", "b", "c"], 10, 5);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    // Small row groups and shards, so many row groups encode at once and shards roll over.
    let args = [
        "--include",
        "*.wav",
        "--row-group-size",
        "8KB",
        "--shard-size",
        "40KB",
    ];
    let hashes = |workers: &str| {
        let mut extra = args.to_vec();
        extra.extend(["--workers", workers]);
        let report = convert(&data, &spec, &root.join(format!("w{workers}")), &extra);
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(Path::new(report["entry"].as_str().unwrap()).join("manifest.json")).unwrap(),
        )
        .unwrap();
        let shards = manifest["shards"].as_array().unwrap().clone();
        shards
            .iter()
            .map(|s| (s["file"].clone(), s["sha256"].clone(), s["row_groups"].clone()))
            .collect::<Vec<_>>()
    };
    let one = hashes("1");
    assert!(one.len() > 1, "{one:?}");
    assert!(one.iter().any(|s| s.2.as_array().unwrap().len() > 1), "{one:?}");
    assert_eq!(one, hashes("4"));
}

#[test]
fn row_groups_of_one_shard_read_on_many_threads_at_once_are_intact() {
    let root = temp_dir("encoding-threads");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 12, 8);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let report = convert(
        &data,
        &spec,
        &root.join("c"),
        &["--include", "*.wav", "--row-group-size", "4KB"],
    );
    let entry = kiln::shards::EntryReader::open(report["entry"].as_str().unwrap()).unwrap();
    assert!(entry.blocks.len() > 4, "{} row groups", entry.blocks.len());
    let alone: Vec<_> = entry
        .blocks
        .iter()
        .map(|b| entry.read_block(b).unwrap())
        .collect();
    // Every row group read by eight threads at once, from the one verified file handle.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for (block, want) in entry.blocks.iter().zip(&alone).rev() {
                    assert_eq!(&entry.read_block(block).unwrap(), want);
                }
            });
        }
    });
}
