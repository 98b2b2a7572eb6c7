//! `convert --backend gpu` runs items in device batches (same-shape items together, one
//! upload, submission and readback per batch) and writes what the CPU writes.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, FixedSizeListArray, Float32Array, ListArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use support::*;

fn convert(source: &Path, spec: &str, cache: &Path, extra: &[&str]) -> Value {
    json(&convert_output(source, spec, cache, extra))
}

/// Tensor values by row id.
fn tensors(report: &Value) -> BTreeMap<u64, Vec<f32>> {
    let entry = PathBuf::from(report["entry"].as_str().unwrap());
    let mut rows = BTreeMap::new();
    for file in std::fs::read_dir(&entry).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("row_id").unwrap();
            let ids = ids.as_any().downcast_ref::<UInt64Array>().unwrap();
            let column = batch.column_by_name("tensor").unwrap();
            for i in 0..batch.num_rows() {
                let values = match column.as_any().downcast_ref::<FixedSizeListArray>() {
                    Some(fixed) => fixed.value(i),
                    None => column.as_any().downcast_ref::<ListArray>().unwrap().value(i),
                };
                let floats = values.as_any().downcast_ref::<Float32Array>().unwrap();
                rows.insert(ids.value(i), floats.values().to_vec());
            }
        }
    }
    rows
}

fn png(path: &Path, width: u32, height: u32, seed: u32) {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 + seed) as u8,
            (y * 5 + seed * 3) as u8,
            ((x * y + seed) % 251) as u8,
        ])
    });
    img.save(path).unwrap();
}

fn assert_batched(gpu: &Value, items: u64) {
    let get = |k: &str| gpu[k].as_u64().unwrap_or_else(|| panic!("no {k} in {gpu}"));
    assert_eq!(get("items"), items, "{gpu}");
    assert!(get("batches") < items, "nothing was batched: {gpu}");
    for k in ["uploads", "submissions", "readbacks"] {
        assert_eq!(get(k), get("batches"), "{k}: {gpu}");
    }
}

#[test]
fn gpu_images_batch_by_shape_and_equal_the_cpu_bit_for_bit() {
    let root = temp_dir("gpu-convert-images");
    let data = root.join("data");
    for (class, count) in [("a", 6u32), ("b", 5)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..count {
            // Two input sizes, interleaved: the same output shape from different plans.
            let (w, h) = if i % 3 == 0 { (50, 36) } else { (40, 30) };
            png(&data.join(class).join(format!("{i:02}.png")), w, h, i * 11);
        }
    }
    std::fs::write(data.join("a/corrupt.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let cpu = convert(&data, &spec, &root.join("cpu"), &[]);
    let gpu = convert(
        &data,
        &spec,
        &root.join("gpu"),
        &["--backend", "gpu", "--gpu-batch", "4"],
    );
    assert!(cpu.get("gpu").is_none(), "{cpu}");
    assert_eq!(gpu["rows"], 11, "{gpu}");
    assert_eq!(gpu["failures"], cpu["failures"]);
    assert_eq!(gpu["failures"][0]["path"], "a/corrupt.png");
    assert_batched(&gpu["gpu"], 11);
    let (want, got) = (tensors(&cpu), tensors(&gpu));
    assert_eq!(want.len(), 11);
    for (id, values) in &want {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(values) == bits(&got[id]), "row {id} differs from the CPU");
    }
}

#[test]
fn gpu_audio_batches_and_matches_the_cpu() {
    let root = temp_dir("gpu-convert-audio");
    let data = root.join("data/x");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = Rng(7);
    for i in 0..7 {
        // fix_length below makes every clip one shape, so they batch.
        std::fs::write(data.join(format!("{i}.wav")), wav(&mut rng, 3000 + 500 * i)).unwrap();
    }
    let spec = write_spec(
        &root,
        "audio.json",
        r#"{"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": 4000},
            {"op": "stft", "n_fft": 256, "hop_length": 128}, {"op": "magnitude", "power": 2.0},
            {"op": "mel", "n_mels": 16}, {"op": "power_to_db"}]}"#,
    );
    let data = root.join("data");
    let cpu = convert(&data, &spec, &root.join("cpu"), &[]);
    let gpu = convert(
        &data,
        &spec,
        &root.join("gpu"),
        &["--backend", "gpu", "--gpu-batch", "3"],
    );
    assert_eq!(gpu["rows"], 7, "{gpu}");
    assert_batched(&gpu["gpu"], 7);
    assert_eq!(gpu["gpu"]["batches"], 3, "chunks of 3, 3 and 1: {gpu}");
    let (want, got) = (tensors(&cpu), tensors(&gpu));
    for (id, values) in &want {
        assert_eq!(values.len(), 16 * 32, "row {id}");
        let worst = values
            .iter()
            .zip(&got[id])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "row {id}: GPU differs from the CPU by {worst} dB");
    }
}

#[test]
fn gpu_batch_size_out_of_range_is_an_error() {
    let root = temp_dir("gpu-convert-bad");
    let data = root.join("data");
    make_dataset(&data, &["a"], 1, 2);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    for bad in ["0", "5000"] {
        let out = convert_output(
            &data,
            &spec,
            &root.join("c"),
            &["--backend", "gpu", "--gpu-batch", bad],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("--gpu-batch: {bad} is not in 1..=4096")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn gpu_stream_of_a_raw_entry_runs_each_batch_as_device_batches() {
    let root = temp_dir("gpu-stream");
    let data = root.join("data/a");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..9u32 {
        let (w, h) = if i % 4 == 0 { (50, 36) } else { (40, 30) };
        png(&data.join(format!("{i}.png")), w, h, i);
    }
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let raw = convert(
        &root.join("data"),
        &spec,
        &root.join("c"),
        &["--materialize", "raw"],
    );
    let entry = raw["entry"].as_str().unwrap();
    let stream = |backend: &str| {
        json(&kiln(&[
            "stream",
            entry,
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--backend",
            backend,
            "--json",
        ]))
    };
    let (cpu, gpu) = (stream("cpu"), stream("gpu"));
    assert_eq!(gpu["rows"], 9, "{gpu}");
    assert_eq!(
        gpu["checksum"], cpu["checksum"],
        "GPU batches differ from the CPU's"
    );
    let activity = &gpu["gpu"];
    assert_eq!(activity["items"], 9, "{gpu}");
    // Three loader batches, each at most two shapes: one upload and submission per shape.
    let device_batches = activity["batches"].as_u64().unwrap();
    assert!((3..=6).contains(&device_batches), "{gpu}");
    assert_eq!(activity["uploads"], activity["batches"], "{gpu}");
    // The only readbacks are the checksum's, one per loader batch.
    assert_eq!(activity["readbacks"], 3, "{gpu}");
    assert!(cpu.get("gpu").is_none());
}
