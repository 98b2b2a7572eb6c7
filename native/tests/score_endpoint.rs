//! `kiln score --endpoint` against a stand-in OIP v2 server written here, for what a real
//! server never does on purpose: malformed answers, hostile metadata, statuses that must not
//! be retried. (The real-server tests, KServe with onnxruntime, are in python/tests.) The
//! server computes each row's outputs itself from the request (sum and first value), so the
//! expected values come from the request kiln sent, checked against the entry's rows.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use support::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Fine,
    NotJson,
    WrongId,
    MissingOutput,
    WrongRows,
    NonNumeric,
    BadRequest,
    Unavailable,
}

struct Fake {
    mode: Mode,
    metadata: Value,
    infer_calls: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn metadata(width: usize) -> Value {
    json!({"name": "m", "versions": ["3"], "platform": "fake",
           "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, width, width]}],
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]})
}

async fn ready() -> &'static str {
    "{}"
}

async fn model_metadata(State(fake): State<Shared>) -> Response {
    let body = fake.lock().unwrap().metadata.clone();
    match body {
        Value::String(text) => text.into_response(),
        other => other.to_string().into_response(),
    }
}

async fn infer(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mode = {
        let mut f = fake.lock().unwrap();
        f.infer_calls += 1;
        f.mode
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json only").into_response();
    }
    let request: Value = serde_json::from_slice(&body).expect("kiln sends JSON");
    let input = &request["inputs"][0];
    assert_eq!(input["name"], "input");
    assert_eq!(input["datatype"], "FP32");
    let shape: Vec<usize> = serde_json::from_value(input["shape"].clone()).unwrap();
    let data: Vec<f64> = serde_json::from_value(input["data"].clone()).unwrap();
    let per_row: usize = shape[1..].iter().product();
    assert_eq!(data.len(), shape[0] * per_row);
    let mut outputs = Vec::new();
    for row in data.chunks(per_row) {
        outputs.push(row.iter().sum::<f64>() as f32);
        outputs.push(row[0] as f32);
    }
    let id = request["id"].clone();
    let answer = |rows: usize, data: Value| {
        json!({"model_name": "m", "model_version": "3", "id": id,
               "outputs": [{"name": "y", "datatype": "FP32", "shape": [rows, 2], "data": data}]})
        .to_string()
    };
    match mode {
        Mode::Fine => answer(shape[0], json!(outputs)).into_response(),
        Mode::NotJson => "<html>oops</html>".into_response(),
        Mode::WrongId => json!({"id": "someone else", "outputs": []})
            .to_string()
            .into_response(),
        Mode::MissingOutput => {
            json!({"id": id, "outputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]})
                .to_string()
                .into_response()
        }
        Mode::WrongRows => answer(shape[0] + 1, json!(vec![0.0; (shape[0] + 1) * 2])).into_response(),
        Mode::NonNumeric => answer(shape[0], json!(vec!["x"; shape[0] * 2])).into_response(),
        Mode::BadRequest => (StatusCode::BAD_REQUEST, "{\"error\": \"bad input\"}").into_response(),
        Mode::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response()
        }
    }
}

/// Starts the stand-in server on a loopback port; it lives until the test process ends.
fn serve(mode: Mode, metadata: Value) -> (String, Shared) {
    let fake = Arc::new(Mutex::new(Fake {
        mode,
        metadata,
        infer_calls: 0,
    }));
    let app = Router::new()
        .route("/v2/models/m/ready", get(ready))
        .route("/v2/models/m", get(model_metadata))
        .route("/v2/models/m/infer", post(infer))
        .with_state(fake.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{address}"), fake)
}

/// An entry of 6 images as (3, 16, 16) float tensors.
fn image_entry(name: &str) -> (PathBuf, PathBuf) {
    let root = temp_dir(name);
    make_dataset(&root.join("data"), &["a", "b"], 3, 11);
    let spec = write_spec(&root, "spec.json", IMAGE_SPEC);
    let out = convert_output(
        &root.join("data"),
        &spec,
        &root.join("cache"),
        &["--include", "*.png"],
    );
    let entry = PathBuf::from(json(&out)["entry"].as_str().unwrap());
    (root, entry)
}

fn score(entry: &Path, url: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "score",
        entry.to_str().unwrap(),
        "--endpoint",
        url,
        "--model-name",
        "m",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    kiln(&args)
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn outputs_are_what_the_server_computed_from_each_row_in_order() {
    let (root, entry) = image_entry("score-fine");
    let (url, fake) = serve(Mode::Fine, metadata(16));
    let out = root.join("out");
    let report = json(&score(
        &entry,
        &url,
        &out,
        &["--batch-size", "4", "--concurrency", "2"],
    ));
    assert_eq!(report["rows"], 6);
    assert_eq!(report["scored"], 6);
    assert_eq!(fake.lock().unwrap().infer_calls, 2);
    // The entry's rows, read by the loader, give the expected sums.
    let loader = kiln::loader::Loader::builder(&entry)
        .batch_size(6)
        .epochs(Some(1))
        .build()
        .unwrap();
    let batch = loader.into_iter().next().unwrap().unwrap();
    let tensors = kiln::shards::TensorColumn::from_batch(&batch.records, Some(&[3, 16, 16])).unwrap();
    let table = read_table(&out);
    assert_eq!(table.0, batch.row_ids());
    for (i, y) in table.1.iter().enumerate() {
        let kiln::shards::TensorValues::F32(row) = tensors.values(i) else {
            panic!("float rows")
        };
        let sum = row.iter().map(|&x| x as f64).sum::<f64>() as f32;
        assert_eq!(y, &vec![sum, row[0]], "row {i}");
    }
    let m = manifest(&out);
    assert_eq!(m["served_version"], "3");
    assert_eq!(m["model"]["versions"], json!(["3"]));
    assert_eq!(m["outputs"], json!([{"name": "y", "row_shape": [2]}]));
}

/// Row ids and `y` values of every output shard, in order.
fn read_table(out: &Path) -> (Vec<u64>, Vec<Vec<f32>>) {
    use arrow::array::{Array, FixedSizeListArray, Float32Array, UInt64Array};
    let mut ids = Vec::new();
    let mut ys = Vec::new();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    for part in parts {
        let file = std::fs::File::open(part).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let id = batch
                .column_by_name("row_id")
                .unwrap()
                .as_any()
                .downcast_ref::<UInt64Array>()
                .unwrap();
            ids.extend(id.values().iter().copied());
            let y = batch
                .column_by_name("y")
                .unwrap()
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .unwrap();
            for i in 0..y.len() {
                let v = y.value(i);
                ys.push(
                    v.as_any()
                        .downcast_ref::<Float32Array>()
                        .unwrap()
                        .values()
                        .to_vec(),
                );
            }
        }
    }
    (ids, ys)
}

#[test]
fn malformed_answers_fail_their_batch_at_once() {
    let (root, entry) = image_entry("score-malformed");
    for (mode, expected) in [
        (Mode::NotJson, "answer is not OIP v2 JSON"),
        (Mode::WrongId, "answer is for request \"someone else\""),
        (Mode::MissingOutput, "answer has no output \"y\""),
        (Mode::WrongRows, "output \"y\" has 4 rows for a batch of 3"),
        (Mode::NonNumeric, "output \"y\" holds a non-numeric value"),
        (
            Mode::BadRequest,
            "HTTP 400 Bad Request: {\"error\": \"bad input\"}",
        ),
    ] {
        let (url, fake) = serve(mode, metadata(16));
        let out = root.join(format!("out-{mode:?}"));
        let result = score(&entry, &url, &out, &["--batch-size", "3", "--retries", "3"]);
        assert!(!result.status.success(), "{mode:?}");
        assert!(
            stderr(&result).contains("6 rows failed to score"),
            "{mode:?}: {}",
            stderr(&result)
        );
        // Never retried: one request per batch.
        assert_eq!(fake.lock().unwrap().infer_calls, 2, "{mode:?}");
        let m = manifest(&out);
        let failures = m["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 6, "{mode:?}");
        let error = failures[0]["error"].as_str().unwrap();
        assert!(error.contains(expected), "{mode:?}: {error}");
        assert!(error.starts_with(&url), "the error names the endpoint: {error}");
    }
}

#[test]
fn unavailable_is_retried_then_recorded() {
    let (root, entry) = image_entry("score-unavailable");
    let (url, fake) = serve(Mode::Unavailable, metadata(16));
    let out = root.join("out");
    let result = score(&entry, &url, &out, &["--batch-size", "6", "--retries", "2"]);
    assert!(!result.status.success());
    assert_eq!(fake.lock().unwrap().infer_calls, 3);
    let error = manifest(&out)["failures"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("HTTP 503") && error.contains("(after 2 retries)"),
        "{error}"
    );
    // The server recovers: the next run scores exactly the failed rows.
    fake.lock().unwrap().mode = Mode::Fine;
    let report = json(&score(&entry, &url, &out, &["--batch-size", "6"]));
    assert_eq!(report["scored"], 6);
    assert_eq!(report["failed"], 0);
    assert_eq!(manifest(&out)["failures"], json!([]));
}

#[test]
fn metadata_problems_are_named() {
    let (root, entry) = image_entry("score-metadata");
    let out = root.join("out");
    let cases = [
        (
            Value::String("not json".into()),
            "model metadata is not OIP v2 JSON",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [-1]}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}),
            "input \"input\" is BYTES; kiln sends FP32 or UINT8",
        ),
        (
            json!({"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}, {"name": "b", "datatype": "FP32", "shape": [-1]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}),
            "model has inputs [\"a\", \"b\"]: choose one with --input-name",
        ),
        (
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}], "outputs": []}),
            "model metadata lists no outputs",
        ),
        (
            metadata(8),
            "\"input\" takes rows of shape [3, 8, 8]; the input's rows are [3, 16, 16]",
        ),
    ];
    for (metadata, expected) in cases {
        let (url, _) = serve(Mode::Fine, metadata);
        let result = score(&entry, &url, &out, &[]);
        assert!(!result.status.success());
        let message = stderr(&result);
        assert!(message.contains(expected), "{message}");
        assert!(
            message.contains(&url) || expected.contains("takes rows"),
            "{message}"
        );
    }
    let (url, _) = serve(Mode::Fine, metadata(16));
    let message = stderr(&score(&entry, &url, &out, &["--input-name", "other"]));
    assert!(
        message.contains("model has no input \"other\" (inputs: [\"input\"])"),
        "{message}"
    );
    let message = stderr(&score(&entry, &format!("{url}/"), &out, &["--max-rps", "0"]));
    assert!(
        message.contains("invalid --max-rps: 0 is not a positive rate"),
        "{message}"
    );
    let message = stderr(&score(&entry, "not a url", &out, &[]));
    assert!(message.contains("endpoint not a url: not a URL"), "{message}");
}

#[test]
fn the_rate_limit_spaces_requests() {
    let (root, entry) = image_entry("score-rate");
    let (url, fake) = serve(Mode::Fine, metadata(16));
    let started = std::time::Instant::now();
    json(&score(
        &entry,
        &url,
        &root.join("out"),
        &["--batch-size", "2", "--max-rps", "5", "--concurrency", "3"],
    ));
    assert_eq!(fake.lock().unwrap().infer_calls, 3);
    // Three requests at 5 per second: the third waits two 200 ms intervals after the first
    // (a lower bound, which only the limiter can explain).
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
}
