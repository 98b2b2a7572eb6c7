//! End-to-end: generated datasets converted, reconverted, changed, streamed in every sharding
//! mode, resumed mid-epoch and after a crash, exported to TFRecord.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::Array;
use kiln::loader::Loader;
use serde_json::Value;
use support::*;

fn convert(source: &Path, spec: &str, cache: &Path, extra: &[&str]) -> Value {
    json(&convert_output(source, spec, cache, extra))
}

fn stream(entry: &str, extra: &[&str]) -> Value {
    let mut args = vec!["stream", entry, "--json", "--ids"];
    args.extend_from_slice(extra);
    json(&kiln(&args))
}

fn ids(report: &Value) -> Vec<u64> {
    report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn convert_reports_failures_hits_cache_and_rekeys_on_change() {
    let root = temp_dir("convert");
    let data = root.join("data");
    make_dataset(&data, &["cat", "dog", "owl"], 20, 1);
    let cache = root.join("cache");
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);

    let first = convert(
        &data,
        &spec,
        &cache,
        &["--include", "*.png", "--include", "*.jpg", "--shard-size", "20KB"],
    );
    assert_eq!(first["cache_hit"], false);
    assert_eq!(first["rows"], 120, "{first}");
    assert_eq!(first["failed"], 2);
    let failed: BTreeSet<&str> = first["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(failed, BTreeSet::from(["cat/corrupt.jpg", "cat/corrupt.png"]));
    assert!(
        first["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("corrupt or unsupported"),
        "{first}"
    );
    let entry = first["entry"].as_str().unwrap().to_owned();

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&entry).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["labels"], serde_json::json!(["cat", "dog", "owl"]));
    assert_eq!(manifest["tensor"]["shape"], serde_json::json!([3, 16, 16]));
    assert_eq!(manifest["failed"].as_array().unwrap().len(), 2);
    let shards = manifest["shards"].as_array().unwrap();
    assert!(shards.len() > 1, "20KB shards should split 120 rows");
    assert_eq!(
        shards.iter().map(|s| s["rows"].as_u64().unwrap()).sum::<u64>(),
        120
    );
    for s in shards {
        let file = Path::new(&entry).join(s["file"].as_str().unwrap());
        assert_eq!(
            kiln::cache::sha256_file(&file).unwrap(),
            s["sha256"].as_str().unwrap()
        );
    }

    // Plain text mode: progress on stderr, the entry directory as the last stdout line.
    let text = kiln(&[
        "convert",
        data.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        cache.to_str().unwrap(),
        "--include",
        "*.png",
        "--include",
        "*.jpg",
        "--shard-size",
        "20KB",
    ]);
    assert!(text.status.success());
    assert_eq!(stdout(&text).lines().last().unwrap(), entry);
    assert!(stderr(&text).contains("cache hit"), "{}", stderr(&text));

    let again = convert(
        &data,
        &spec,
        &cache,
        &["--include", "*.png", "--include", "*.jpg", "--shard-size", "20KB"],
    );
    assert_eq!(again["cache_hit"], true);
    assert_eq!(again["entry"].as_str().unwrap(), entry);

    // Any change to a listed file makes a new entry.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut rng = Rng(99);
    std::fs::write(data.join("dog/003.png"), image(&mut rng, image::ImageFormat::Png)).unwrap();
    let changed = convert(
        &data,
        &spec,
        &cache,
        &["--include", "*.png", "--include", "*.jpg", "--shard-size", "20KB"],
    );
    assert_eq!(changed["cache_hit"], false);
    assert_ne!(changed["entry"].as_str().unwrap(), entry);

    // So does a changed spec.
    let spec2 = write_spec(
        &root,
        "image2.json",
        &IMAGE_SPEC.replace("\"height\": 16, \"width\": 16", "\"height\": 8, \"width\": 8"),
    );
    let other = convert(&data, &spec2, &cache, &["--include", "*.png"]);
    assert_ne!(other["entry"], changed["entry"]);

    let listed = json(&kiln(&[
        "cache",
        "ls",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(listed["entries"].as_array().unwrap().len(), 3);
    let key = Path::new(&entry).file_name().unwrap().to_str().unwrap();
    assert!(kiln(&["cache", "rm", key, "--cache", cache.to_str().unwrap()])
        .status
        .success());
    assert!(!Path::new(&entry).exists());
    let gc_args = [
        "cache",
        "gc",
        "--cache",
        cache.to_str().unwrap(),
        "--max-size",
        "0",
    ];
    // Entries just converted (or read) are kept by default: a job may be about to open them.
    let kept = kiln(&gc_args);
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "");
    // A directory that is not a kiln entry is never touched, whatever the limits.
    std::fs::create_dir_all(cache.join("photos")).unwrap();
    std::fs::write(cache.join("photos/cat.jpg"), b"not kiln's").unwrap();
    let refused = kiln(&["cache", "rm", "photos", "--cache", cache.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a kiln cache entry"),
        "{}",
        stderr(&refused)
    );
    let gc = kiln(&[&gc_args[..], &["--keep-recent", "0s"]].concat());
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        cache.join("photos/cat.jpg").is_file(),
        "gc deleted a user's directory"
    );
    assert_eq!(
        json(&kiln(&[
            "cache",
            "ls",
            "--cache",
            cache.to_str().unwrap(),
            "--json"
        ]))["entries"],
        serde_json::json!([])
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn on_error_fail_stops_at_the_bad_file() {
    let root = temp_dir("fail");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 3, 2);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let out = kiln(&[
        "convert",
        data.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        root.join("c").to_str().unwrap(),
        "--include",
        "*.wav",
        "--on-error",
        "fail",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a/corrupt.wav") && stderr(&out).contains("--on-error fail"),
        "{}",
        stderr(&out)
    );
    let missing = kiln(&[
        "convert",
        root.join("nope").to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        root.join("c").to_str().unwrap(),
    ]);
    assert!(
        stderr(&missing).contains("nope: not a directory"),
        "{}",
        stderr(&missing)
    );
    let empty = kiln(&[
        "convert",
        data.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        root.join("c").to_str().unwrap(),
        "--include",
        "*.flac",
    ]);
    assert!(
        stderr(&empty).contains("has no files matching"),
        "{}",
        stderr(&empty)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn streaming_shards_evenly_deterministically_and_resumes() {
    let root = temp_dir("stream");
    let data = root.join("data");
    make_dataset(&data, &["x", "y", "z", "w"], 25, 3);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    for materialize in ["tensor", "raw"] {
        let report = convert(
            &data,
            &spec,
            &root.join("cache"),
            &[
                "--include",
                "*.wav",
                "--materialize",
                materialize,
                "--shard-size",
                "30KB",
                "--row-group-rows",
                "7",
            ],
        );
        assert_eq!(report["rows"], 100, "{report}");
        let entry = report["entry"].as_str().unwrap().to_owned();

        for seed in [None, Some("5")] {
            let seed_args: Vec<&str> = seed.map(|s| vec!["--seed", s]).unwrap_or_default();
            for shards in [1u64, 2, 3, 7] {
                let mut all = Vec::new();
                for i in 0..shards {
                    let shard = format!("{i}/{shards}");
                    let mut args = vec!["--batch-size", "8", "--shard", &shard, "--shuffle-buffer", "16"];
                    args.extend(&seed_args);
                    let r = stream(&entry, &args);
                    let got = ids(&r);
                    assert_eq!(
                        got.len() as u64,
                        100 / shards,
                        "{materialize} shard {shard}: every worker gets total/n rows"
                    );
                    assert_eq!(r["batches"].as_u64().unwrap(), (100 / shards).div_ceil(8));
                    all.extend(got);
                }
                let unique: BTreeSet<_> = all.iter().collect();
                assert_eq!(
                    unique.len(),
                    all.len(),
                    "{materialize}: a row went to two workers ({shards} shards)"
                );
            }
        }

        // Same seed, any thread count: same order and checksum. Different epochs differ.
        let one = stream(
            &entry,
            &[
                "--batch-size",
                "10",
                "--seed",
                "9",
                "--threads",
                "1",
                "--epochs",
                "2",
            ],
        );
        let four = stream(
            &entry,
            &[
                "--batch-size",
                "10",
                "--seed",
                "9",
                "--threads",
                "4",
                "--prefetch",
                "1",
                "--epochs",
                "2",
            ],
        );
        assert_eq!(one["checksum"], four["checksum"]);
        assert_eq!(ids(&one), ids(&four));
        let order = ids(&one);
        assert_eq!(order.len(), 200);
        assert_ne!(order[..100], order[100..], "epochs should reshuffle");
        let first_epoch: BTreeSet<_> = order[..100].iter().collect();
        assert_eq!(first_epoch.len(), 100, "one epoch visits every row once");

        // Stop after 7 batches, resume from the saved state: the same rows as one run.
        let state = root.join(format!("state-{materialize}.json"));
        let part1 = stream(
            &entry,
            &[
                "--batch-size",
                "10",
                "--seed",
                "9",
                "--epochs",
                "2",
                "--max-batches",
                "13",
                "--state-out",
                state.to_str().unwrap(),
            ],
        );
        let part2 = stream(
            &entry,
            &[
                "--batch-size",
                "10",
                "--epochs",
                "2",
                "--resume",
                state.to_str().unwrap(),
            ],
        );
        let mut joined = ids(&part1);
        joined.extend(ids(&part2));
        assert_eq!(
            joined, order,
            "{materialize}: resumed stream differs from the uninterrupted one"
        );

        // drop_last: 100 rows / 3 shards = 33 rows per worker, 8-row batches -> 4 full batches.
        let dropped = stream(&entry, &["--batch-size", "8", "--shard", "2/3", "--drop-last"]);
        assert_eq!(dropped["rows"], 32);
        assert_eq!(dropped["batches"], 4);
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn library_loader_is_infinite_by_default_and_reports_state() {
    let root = temp_dir("lib");
    let data = root.join("data");
    make_dataset(&data, &["p", "q"], 10, 4);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let report = convert(&data, &spec, &root.join("cache"), &["--include", "*.png"]);
    let mut loader = Loader::builder(report["entry"].as_str().unwrap())
        .batch_size(6)
        .shuffle(1)
        .build()
        .unwrap();
    assert_eq!(loader.rows_per_epoch(), 20);
    assert_eq!(loader.batches_per_epoch(), 4);
    let batches: Vec<_> = loader.by_ref().take(10).map(Result::unwrap).collect();
    assert_eq!(
        batches.last().unwrap().epoch,
        2,
        "keeps going past the first epoch"
    );
    assert_eq!(loader.state().epoch, 2);
    let records = &batches[0].records;
    let names: Vec<_> = records
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["row_id", "path", "label", "label_index", "tensor"]);
    assert_eq!(records.schema().metadata()["kiln.tensor_shape"], "[3,16,16]");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn killed_conversion_resumes_without_losing_or_repeating_rows() {
    let root = temp_dir("crash");
    let data = root.join("data");
    make_dataset(&data, &["u", "v"], 40, 5);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let cache = root.join("cache");
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        cache.to_str().unwrap(),
        "--include",
        "*.wav",
        "--shard-size",
        "16KB",
        "--json",
    ];
    let crashed = kiln_env(&args, &[("KILN_CRASH_AFTER_SHARDS", "2")]);
    assert!(
        !crashed.status.success(),
        "the fault hook should have killed the run"
    );
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    assert!(
        !entry.join("manifest.json").exists(),
        "a crashed entry must not look complete"
    );
    assert!(
        Loader::builder(&entry).build().is_err(),
        "the loader must refuse a partial entry"
    );
    // A temporary left by the crash is cleaned up, not read.
    std::fs::write(entry.join("part-00002.parquet.tmp.1"), b"half a shard").unwrap();

    let resumed = json(&kiln(&args));
    assert!(resumed["resumed_from"].as_u64().unwrap() > 0, "{resumed}");
    assert_eq!(resumed["rows"], 80);
    assert_eq!(
        resumed["failures"].as_array().unwrap().len(),
        1,
        "the corrupt file is reported once"
    );
    assert!(!entry.join("part-00002.parquet.tmp.1").exists());

    let fresh = json(&kiln(&[
        "convert",
        data.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        root.join("fresh").to_str().unwrap(),
        "--include",
        "*.wav",
        "--shard-size",
        "16KB",
        "--json",
    ]));
    let a = stream(resumed["entry"].as_str().unwrap(), &["--batch-size", "16"]);
    let b = stream(fresh["entry"].as_str().unwrap(), &["--batch-size", "16"]);
    assert_eq!(
        a["checksum"], b["checksum"],
        "resumed entry differs from an uninterrupted one"
    );
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a).len(), 80);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn tfrecord_export_reads_back_with_the_tfrecord_package() {
    let root = temp_dir("tfrecord");
    let data = root.join("data");
    make_dataset(&data, &["m", "n"], 6, 6);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let report = convert(
        &data,
        &spec,
        &root.join("cache"),
        &["--include", "*.png", "--shard-size", "8KB"],
    );
    let entry = report["entry"].as_str().unwrap();
    let out = root.join("tfr");
    let export = kiln(&[
        "export",
        entry,
        "--format",
        "tfrecord",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    // Read back with an independent implementation and compare with what the loader delivers.
    let script = r#"
import glob, json, sys
from tfrecord.reader import tfrecord_loader
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/*.tfrecord")):
    for ex in tfrecord_loader(path, None, {"row_id": "int", "path": "byte", "label": "byte", "label_index": "int", "tensor": "float", "shape": "int"}):
        rows.append({"row_id": int(ex["row_id"][0]), "path": bytes(ex["path"]).decode(), "label": bytes(ex["label"]).decode(),
                     "label_index": int(ex["label_index"][0]), "sum": float(ex["tensor"].astype("float64").sum()),
                     "len": int(ex["tensor"].shape[0]), "shape": [int(d) for d in ex["shape"]]})
print(json.dumps(rows))
"#;
    let py = std::process::Command::new(python())
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(rows.len(), 12);
    let loader = Loader::builder(entry)
        .batch_size(100)
        .epochs(Some(1))
        .build()
        .unwrap();
    let batch = loader.into_iter().next().unwrap().unwrap().records;
    let tensors = batch
        .column_by_name("tensor")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::FixedSizeListArray>()
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row["row_id"].as_u64().unwrap(),
            batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap()
                .value(i)
        );
        assert_eq!(row["shape"], serde_json::json!([3, 16, 16]));
        assert_eq!(row["len"], 768);
        let values = tensors.value(i);
        let ours: f64 = values
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap()
            .values()
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        assert!((ours - row["sum"].as_f64().unwrap()).abs() < 1e-6, "row {i}");
        assert!(row["path"]
            .as_str()
            .unwrap()
            .starts_with(row["label"].as_str().unwrap()));
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn spark_style_parquet_table_is_a_source() {
    let root = temp_dir("table");
    let data = root.join("data");
    make_dataset(&data, &["cat", "dog"], 5, 7);
    let table_dir = root.join("table");
    std::fs::create_dir_all(&table_dir).unwrap();
    // Written by pyarrow with Spark binaryFile's schema plus an extra column, in two files.
    let script = r#"
import sys, glob, os, datetime
import pyarrow as pa, pyarrow.parquet as pq
data, out = sys.argv[1], sys.argv[2]
files = sorted(p for p in glob.glob(data + "/*/*.png"))
rows = [{"path": "file:" + p, "modificationTime": datetime.datetime.fromtimestamp(os.path.getmtime(p)),
         "length": os.path.getsize(p), "content": open(p, "rb").read(),
         "species": os.path.basename(os.path.dirname(p)).upper()} for p in files]
half = len(rows) // 2
pq.write_table(pa.Table.from_pylist(rows[:half]), out + "/part-0.parquet", row_group_size=3)
pq.write_table(pa.Table.from_pylist(rows[half:]), out + "/part-1.parquet", row_group_size=3)
"#;
    let py = std::process::Command::new(python())
        .args(["-c", script, data.to_str().unwrap(), table_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let cache = root.join("cache");
    let from_table = convert(&table_dir, &spec, &cache, &["--source-format", "parquet"]);
    assert_eq!(from_table["rows"], 10, "{from_table}");
    assert_eq!(
        from_table["failures"].as_array().unwrap().len(),
        1,
        "the corrupt PNG row is reported"
    );
    assert!(from_table["failures"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("cat/corrupt.png"));
    let manifest = kiln::cache::read_manifest(Path::new(from_table["entry"].as_str().unwrap())).unwrap();
    assert_eq!(
        manifest.labels,
        ["cat", "dog"],
        "labels from the parent directory in the path column"
    );

    let from_dir = convert(&data, &spec, &cache, &["--include", "*.png"]);
    let a = stream(from_table["entry"].as_str().unwrap(), &["--batch-size", "4"]);
    let b = stream(from_dir["entry"].as_str().unwrap(), &["--batch-size", "4"]);
    assert_eq!(
        a["checksum"], b["checksum"],
        "the table and the directory hold the same images"
    );

    let labelled = convert(
        &table_dir,
        &spec,
        &cache,
        &["--source-format", "parquet", "--label-column", "species"],
    );
    let manifest = kiln::cache::read_manifest(Path::new(labelled["entry"].as_str().unwrap())).unwrap();
    assert_eq!(manifest.labels, ["CAT", "DOG"]);
    let missing = kiln(&[
        "convert",
        table_dir.to_str().unwrap(),
        "--spec",
        &spec,
        "--cache",
        cache.to_str().unwrap(),
        "--source-format",
        "parquet",
        "--content-column",
        "bytes",
    ]);
    assert!(
        stderr(&missing).contains("no column `bytes`"),
        "{}",
        stderr(&missing)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn labels_from_regex_and_csv_file() {
    let root = temp_dir("labels");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 3, 8);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let cache = root.join("cache");
    let by_regex = convert(
        &data,
        &spec,
        &cache,
        &["--include", "*.png", "--label-regex", r"/(\d)\d\d\.png$"],
    );
    let manifest = kiln::cache::read_manifest(Path::new(by_regex["entry"].as_str().unwrap())).unwrap();
    assert_eq!(manifest.labels, ["0"]);
    let csv = root.join("labels.csv");
    std::fs::write(&csv, "path,label\na/000.png,zebra\nb/001.png,yak\n").unwrap();
    let by_file = convert(
        &data,
        &spec,
        &cache,
        &["--include", "*.png", "--labels", csv.to_str().unwrap()],
    );
    let entry = by_file["entry"].as_str().unwrap();
    let manifest = kiln::cache::read_manifest(Path::new(entry)).unwrap();
    assert_eq!(manifest.labels, ["yak", "zebra"]);
    let loader = Loader::builder(entry)
        .batch_size(100)
        .epochs(Some(1))
        .build()
        .unwrap();
    let batch = loader.into_iter().next().unwrap().unwrap().records;
    let paths = batch
        .column_by_name("path")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .clone();
    let index = batch
        .column_by_name("label_index")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Int32Array>()
        .unwrap()
        .clone();
    for i in 0..batch.num_rows() {
        let expected = match paths.value(i) {
            "a/000.png" => Some(1),
            "b/001.png" => Some(0),
            _ => None,
        };
        assert_eq!(
            index.is_valid(i).then(|| index.value(i)),
            expected,
            "{}",
            paths.value(i)
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn gpu_resident_batches_match_host_batches() {
    let root = temp_dir("gpu");
    let data = root.join("data");
    make_dataset(&data, &["r", "s"], 6, 9);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let gpu =
        std::sync::Arc::new(kiln_gpu::GpuBackend::new().expect("GPU tests need an adapter (lavapipe in CI)"));
    for materialize in ["tensor", "raw"] {
        let report = convert(
            &data,
            &spec,
            &root.join("cache"),
            &["--include", "*.png", "--materialize", materialize],
        );
        let entry = report["entry"].as_str().unwrap();
        let host = Loader::builder(entry)
            .batch_size(5)
            .shuffle(3)
            .epochs(Some(1))
            .build()
            .unwrap();
        let device = Loader::builder(entry)
            .batch_size(5)
            .shuffle(3)
            .epochs(Some(1))
            .backend(kiln::AnyBackend::Gpu(gpu.clone()))
            .device_output(true)
            .build()
            .unwrap();
        let mut batches = 0;
        for (h, d) in host.zip(device) {
            let (h, d) = (h.unwrap(), d.unwrap());
            assert_eq!(h.row_ids(), d.row_ids());
            assert!(
                d.records.column_by_name("tensor").is_none(),
                "tensors live on the device"
            );
            let on_device = d.device.as_ref().expect("device tensor");
            assert_eq!(on_device.shape, vec![h.records.num_rows(), 3, 16, 16]);
            let back = gpu.read(on_device).unwrap();
            let list = h
                .records
                .column_by_name("tensor")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::FixedSizeListArray>()
                .unwrap()
                .clone();
            let values = list
                .values()
                .as_any()
                .downcast_ref::<arrow::array::Float32Array>()
                .unwrap()
                .values()
                .to_vec();
            let worst = values
                .iter()
                .zip(back.as_f32().unwrap())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // Tensor entries upload stored values (exact); raw entries run the spec on the GPU.
            let allowed = if materialize == "tensor" { 0.0 } else { 1e-6 };
            assert!(
                worst <= allowed,
                "{materialize}: device batch differs from host by {worst}"
            );
            batches += 1;
        }
        assert_eq!(batches, 3);
    }
    let audio = write_spec(&root, "audio.json", AUDIO_SPEC);
    let varying = convert(&data, &audio, &root.join("cache"), &["--include", "*.wav"]);
    let refused = Loader::builder(varying["entry"].as_str().unwrap())
        .backend(kiln::AnyBackend::Gpu(gpu))
        .device_output(true)
        .build();
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("GPU batches need a fixed tensor shape"));
    std::fs::remove_dir_all(root).unwrap();
}
