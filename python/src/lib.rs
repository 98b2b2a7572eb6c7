//! `kiln._kiln`: the native half of the Python package. The Python half (`kiln/__init__.py`,
//! `kiln/torch.py`) turns what this returns into numpy arrays and torch tensors.
//!
//! Everything crosses as Arrow (pyarrow objects through the C Data Interface, no copy) or
//! JSON (reports, manifests, loader states), so this layer holds no conversions of its own.
//! Every call that decodes, transforms or reads data releases the GIL.

mod batch;
mod scorer;

use scorer::ModelArgs;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Float32Array, UInt8Array};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::pyarrow::ToPyArrow;
use kiln::convert::{convert as run_convert, ConvertOptions, OnError};
use kiln::items::{LabelRule, TableColumns};
use kiln::loader::{Loader as NativeLoader, LoaderState};
use kiln::transform::SpecFile;
use kiln::{AnyBackend, BackendChoice};
use kiln_core::{Pipeline, Tensor};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

// Declared in module `kiln` (which re-exports them), so pickle finds them by name: errors
// raised in DataLoader worker processes must reach the main process intact.
create_exception!(
    kiln,
    KilnError,
    PyException,
    "Base class of every error kiln raises."
);
create_exception!(kiln, SpecError, KilnError, "A transform spec is invalid.");
create_exception!(
    kiln,
    DecodeError,
    KilnError,
    "A file could not be decoded or transformed."
);
create_exception!(
    kiln,
    CacheError,
    KilnError,
    "A cache entry, shard or label file is unusable."
);
create_exception!(
    kiln,
    SourceError,
    KilnError,
    "A source could not be listed or read (files, object stores)."
);
create_exception!(
    kiln,
    BackendError,
    KilnError,
    "The GPU backend could not start or run."
);
create_exception!(
    kiln,
    ArgumentError,
    KilnError,
    "An option is out of range or inconsistent."
);
create_exception!(
    kiln,
    ConversionError,
    KilnError,
    "Items failed under on_error='fail', or all items failed."
);

/// A kiln error as the Python exception of its kind, with the CLI's message.
fn py_error(error: kiln::Error) -> PyErr {
    use kiln::Error as E;
    let message = error.to_string();
    match error {
        E::Spec { .. } | E::Json { .. } => SpecError::new_err(message),
        E::Item { .. } => DecodeError::new_err(message),
        E::Entry { .. }
        | E::Shard { .. }
        | E::Cache { .. }
        | E::Labels { .. }
        | E::Parquet { .. }
        | E::Arrow(_) => CacheError::new_err(message),
        E::Io { .. } | E::Fetch { .. } | E::Source { .. } | E::Listing { .. } => {
            SourceError::new_err(message)
        }
        E::Gpu(_) => BackendError::new_err(message),
        E::Invalid { .. } => ArgumentError::new_err(message),
        E::Endpoint { .. } => SourceError::new_err(message),
        E::ScoreOutput { .. } | E::WindowsOutput { .. } => CacheError::new_err(message),
        E::Events { .. } => SourceError::new_err(message),
        E::ItemFailed { .. } | E::AllFailed { .. } => ConversionError::new_err(message),
        _ => KilnError::new_err(message),
    }
}

fn core_error(error: kiln_core::Error) -> PyErr {
    match error {
        kiln_core::Error::Spec { .. } => SpecError::new_err(error.to_string()),
        other => DecodeError::new_err(other.to_string()),
    }
}

fn argument(name: &str, problem: impl std::fmt::Display) -> PyErr {
    ArgumentError::new_err(format!("{name}: {problem}"))
}

fn open_backend(backend: &str) -> PyResult<AnyBackend> {
    let choice = match backend {
        "cpu" => BackendChoice::Cpu,
        "gpu" => BackendChoice::Gpu,
        other => return Err(argument("backend", format!("{other:?} is not 'cpu' or 'gpu'"))),
    };
    AnyBackend::open(choice).map_err(|e| BackendError::new_err(format!("starting the GPU backend: {e}")))
}

fn spec_from_json(spec_json: &str) -> PyResult<SpecFile> {
    let json: serde_json::Value = serde_json::from_str(spec_json)
        .map_err(|e| SpecError::new_err(format!("spec: not valid JSON: {e}")))?;
    SpecFile::from_value(json).map_err(py_error)
}

/// A tensor's values as one Arrow array over the same memory (no copy); complex values are
/// their interleaved float32 parts.
fn tensor_values(tensor: Tensor) -> ArrayRef {
    use kiln_core::tensor::TensorData;
    match tensor.data {
        TensorData::F32(data) | TensorData::C64(data) => Arc::new(Float32Array::new(
            ScalarBuffer::from(Buffer::from_vec(data)),
            None,
        )),
        TensorData::U8(data) => Arc::new(UInt8Array::new(ScalarBuffer::from(Buffer::from_vec(data)), None)),
    }
}

/// Runs `spec_json` on one input (`path` or `data`); returns `(values, shape, dtype)`, the
/// values a pyarrow array over the tensor's own buffer.
#[pyfunction]
#[pyo3(signature = (spec_json, path=None, data=None, backend="cpu"))]
fn transform(
    py: Python<'_>,
    spec_json: &str,
    path: Option<PathBuf>,
    data: Option<Vec<u8>>,
    backend: &str,
) -> PyResult<(Py<PyAny>, Vec<usize>, String)> {
    let spec = spec_from_json(spec_json)?;
    let backend = open_backend(backend)?;
    let pipeline = Pipeline::new(spec.spec);
    let tensor = py.detach(|| -> PyResult<Tensor> {
        match (path, data) {
            (Some(path), None) => kiln::transform::transform_file(&pipeline, &backend, &path)
                .map(|(tensor, _)| tensor)
                .map_err(py_error),
            (None, Some(data)) => pipeline
                .run_with_warnings(&backend, &data)
                .map(|(tensor, _)| tensor)
                .map_err(core_error),
            _ => Err(argument("source", "give a path or bytes")),
        }
    })?;
    let shape = tensor.shape.clone();
    let dtype = tensor.dtype().name().to_owned();
    let values = tensor_values(tensor);
    Ok((values.to_data().to_pyarrow(py)?.unbind(), shape, dtype))
}

/// `kiln convert`: returns the report as JSON (the CLI's `--json`).
#[pyfunction]
#[pyo3(signature = (source, spec_json, cache_dir=None, include=None, labels=None, label_regex=None,
                    on_error="skip", backend="cpu", workers=None, materialize="tensor", progress=true,
                    source_format="files", path_column="path", content_column="content", label_column=None))]
#[allow(clippy::too_many_arguments)]
fn convert(
    py: Python<'_>,
    source: String,
    spec_json: &str,
    cache_dir: Option<PathBuf>,
    include: Option<Vec<String>>,
    labels: Option<PathBuf>,
    label_regex: Option<String>,
    on_error: &str,
    backend: &str,
    workers: Option<usize>,
    materialize: &str,
    progress: bool,
    source_format: &str,
    path_column: &str,
    content_column: &str,
    label_column: Option<String>,
) -> PyResult<String> {
    let spec = spec_from_json(spec_json)?;
    let mut options = ConvertOptions::new(source, spec, cache_dir.unwrap_or_else(kiln::cache::default_dir));
    options.labels = match (labels, label_regex) {
        (Some(_), Some(_)) => return Err(argument("labels", "give labels or label_regex, not both")),
        (Some(file), None) => LabelRule::from_file(&file).map_err(py_error)?,
        (None, Some(re)) => LabelRule::from_regex(&re).map_err(py_error)?,
        (None, None) => LabelRule::ParentDir,
    };
    options.on_error = match on_error {
        "skip" => OnError::Skip,
        "fail" => OnError::Fail,
        other => return Err(argument("on_error", format!("{other:?} is not 'skip' or 'fail'"))),
    };
    options.materialize = match materialize {
        "tensor" => kiln::cache::Materialize::Tensor,
        "raw" => kiln::cache::Materialize::Raw,
        other => {
            return Err(argument(
                "materialize",
                format!("{other:?} is not 'tensor' or 'raw'"),
            ))
        }
    };
    options.table = match source_format {
        "files" => None,
        "parquet" => Some(TableColumns {
            path: path_column.to_owned(),
            content: content_column.to_owned(),
            label: label_column,
        }),
        other => {
            return Err(argument(
                "source_format",
                format!("{other:?} is not 'files' or 'parquet'"),
            ))
        }
    };
    options.include = match include {
        Some(globs) => globs,
        None if options.table.is_some() => vec!["*.parquet".to_owned()],
        None => Vec::new(),
    };
    options.backend = open_backend(backend)?;
    if let Some(workers) = workers {
        options.workers = workers;
    }
    options.progress = progress;
    let report = py.detach(|| run_convert(&options)).map_err(py_error)?;
    serde_json::to_string(&report).map_err(|e| KilnError::new_err(e.to_string()))
}

/// Makes the Parquet files in `dir` a table entry (`kiln.spark.make_spark_converter`):
/// writes its manifest and returns it as JSON.
#[pyfunction]
fn index_table(py: Python<'_>, dir: PathBuf, key: String, source: String) -> PyResult<String> {
    let manifest = py
        .detach(|| kiln::cache::index_table(&dir, &key, &source))
        .map_err(py_error)?;
    serde_json::to_string(&manifest).map_err(|e| KilnError::new_err(e.to_string()))
}

/// Events from Python: a location (directory, URL, file) or record batches.
fn windows_events(events: &Bound<'_, PyAny>) -> PyResult<kiln::windows::Events> {
    use arrow::pyarrow::FromPyArrow;
    if let Ok(location) = events.extract::<String>() {
        return Ok(kiln::windows::Events::Location(location));
    }
    let batches = events
        .try_iter()?
        .map(|b| arrow::record_batch::RecordBatch::from_pyarrow_bound(&b?))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(kiln::windows::Events::Batches(batches))
}

/// `kiln windows`. With `output`, writes shards and returns the report as JSON; without,
/// returns `(schema, batches)` of the windows computed in memory (events must be batches).
#[pyfunction]
#[pyo3(signature = (events, entity, time, spec_json, output=None, labels=None, format="parquet",
                    workers=None, memory=None, progress=true))]
#[allow(clippy::too_many_arguments)]
fn windows(
    py: Python<'_>,
    events: &Bound<'_, PyAny>,
    entity: String,
    time: String,
    spec_json: String,
    output: Option<PathBuf>,
    labels: Option<&Bound<'_, PyAny>>,
    format: &str,
    workers: Option<usize>,
    memory: Option<String>,
    progress: bool,
) -> PyResult<Py<PyAny>> {
    use kiln::windows::{Events, OutputFormat, WindowsOptions};
    let events = windows_events(events)?;
    let labels = labels.map(windows_events).transpose()?;
    let Some(output) = output else {
        let as_batches = |e: &Events| match e {
            Events::Batches(b) => Ok(b.clone()),
            Events::Location(_) => Err(argument(
                "events",
                "in-memory windows (output=None) need a table, not a path",
            )),
        };
        let events = as_batches(&events)?;
        let labels = labels.as_ref().map(as_batches).transpose()?;
        let (schema, batches) = py
            .detach(|| kiln::windows::windows_table(&events, labels.as_deref(), &entity, &time, &spec_json))
            .map_err(py_error)?;
        let batches = batches
            .iter()
            .map(|b| b.to_pyarrow(py).map(|b| b.unbind()))
            .collect::<PyResult<Vec<_>>>()?;
        let schema = schema.as_ref().to_pyarrow(py)?.unbind();
        return Ok((schema, batches).into_pyobject(py)?.into_any().unbind());
    };
    let format = match format {
        "parquet" => OutputFormat::Parquet,
        "tfrecord" => OutputFormat::Tfrecord,
        other => {
            return Err(argument(
                "format",
                format!("{other:?} is not 'parquet' or 'tfrecord'"),
            ))
        }
    };
    let memory = match memory {
        Some(text) => kiln::units::parse_size("memory", &text).map_err(py_error)?,
        None => kiln::windows::DEFAULT_MEMORY,
    };
    let options = WindowsOptions {
        events,
        labels,
        entity,
        time,
        spec_json,
        output,
        format,
        workers: workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        memory,
        progress,
    };
    let report = py.detach(|| kiln::windows::windows(&options)).map_err(py_error)?;
    let json = serde_json::to_string(&report).map_err(|e| KilnError::new_err(e.to_string()))?;
    Ok(json.into_pyobject(py)?.into_any().unbind())
}

/// `kiln score`: returns the report as JSON (the CLI's `--json`, plus `failures`). Failed rows
/// are in the report, not an exception: the caller decides what they mean.
#[pyfunction]
#[pyo3(signature = (input, output, model=None, endpoint=None, model_name=None, model_version=None,
                    spec_json=None, cache_dir=None, batch_size=64, workers=None, concurrency=8,
                    retries=5, timeout_s=30.0, max_rps=None, input_name=None, engine="tract",
                    ort_lib=None, shard_rows=kiln::score::DEFAULT_SHARD_ROWS, progress=true))]
#[allow(clippy::too_many_arguments)]
fn score(
    py: Python<'_>,
    input: String,
    output: PathBuf,
    model: Option<PathBuf>,
    endpoint: Option<String>,
    model_name: Option<String>,
    model_version: Option<String>,
    spec_json: Option<&str>,
    cache_dir: Option<PathBuf>,
    batch_size: usize,
    workers: Option<usize>,
    concurrency: usize,
    retries: u32,
    timeout_s: f64,
    max_rps: Option<f64>,
    input_name: Option<String>,
    engine: &str,
    ort_lib: Option<PathBuf>,
    shard_rows: usize,
    progress: bool,
) -> PyResult<String> {
    let source = scorer::model_source(ModelArgs {
        model,
        endpoint,
        model_name,
        model_version,
        engine,
        ort_lib,
        concurrency,
        retries,
        timeout_s,
        max_rps,
        input_name: input_name.clone(),
    })?;
    let mut options = kiln::score::ScoreOptions::new(input, source, output);
    options.spec = spec_json.map(spec_from_json).transpose()?;
    options.cache = cache_dir.unwrap_or_else(kiln::cache::default_dir);
    options.input_name = input_name;
    options.batch_size = batch_size;
    if let Some(workers) = workers {
        options.workers = workers;
    }
    options.shard_rows = shard_rows;
    options.progress = progress;
    let report = py.detach(|| kiln::score::score(&options)).map_err(py_error)?;
    serde_json::to_string(&report).map_err(|e| KilnError::new_err(e.to_string()))
}

/// An entry's manifest and the tensor it delivers, as JSON: `{"manifest": ..., "tensor":
/// {"dtype", "shape"}}`.
#[pyfunction]
fn entry_info(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    py.detach(|| {
        let entry = kiln::shards::EntryReader::open(&path)?;
        // A table entry (a materialized DataFrame) has columns, not a tensor.
        let tensor = match entry.manifest.materialize {
            kiln::cache::Materialize::Table => None,
            _ => Some(kiln::loader::delivered_tensor(&entry)?),
        };
        Ok::<_, kiln::Error>(serde_json::json!({
            "manifest": entry.manifest,
            "tensor": tensor.map(|t| serde_json::json!({"dtype": t.dtype, "shape": t.shape})),
        }))
    })
    .map_err(py_error)
    .map(|v| v.to_string())
}

/// The native loader: batches as pyarrow record batches, each with the loader state after it.
#[pyclass(module = "kiln._kiln")]
struct Loader {
    inner: Mutex<Option<NativeLoader>>,
    rows_per_epoch: u64,
    batches_per_epoch: u64,
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (entry, batch_size=32, cur_shard=0, shard_count=1, seed=None, num_epochs=None,
                        drop_last=false, prefetch=4, columns=None, state_json=None, backend="cpu"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        entry: PathBuf,
        batch_size: usize,
        cur_shard: u64,
        shard_count: u64,
        seed: Option<u64>,
        num_epochs: Option<u64>,
        drop_last: bool,
        prefetch: usize,
        columns: Option<Vec<String>>,
        state_json: Option<&str>,
        backend: &str,
    ) -> PyResult<Self> {
        let mut builder = NativeLoader::builder(&entry)
            .batch_size(batch_size)
            .shard(cur_shard, shard_count)
            .epochs(num_epochs)
            .drop_last(drop_last)
            .prefetch(prefetch)
            .backend(open_backend(backend)?)
            // Python gets writable arrays over the batches' memory: each batch needs its own.
            .owned_batches(true);
        if let Some(seed) = seed {
            builder = builder.shuffle(seed);
        }
        if let Some(columns) = columns {
            builder = builder.columns(columns);
        }
        if let Some(state) = state_json {
            let state: LoaderState = serde_json::from_str(state)
                .map_err(|e| argument("state", format!("not a loader state: {e}")))?;
            builder = builder.resume(state);
        }
        let loader = py.detach(|| builder.build()).map_err(py_error)?;
        Ok(Loader {
            rows_per_epoch: loader.rows_per_epoch(),
            batches_per_epoch: loader.batches_per_epoch(),
            inner: Mutex::new(Some(loader)),
        })
    }

    /// The next batch as `(pyarrow.RecordBatch, epoch, state_json)`, or `None` when the epochs
    /// asked for are done. Waits without the GIL.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<(Py<PyAny>, u64, String)>> {
        let next = py.detach(|| {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            guard.as_mut().and_then(|loader| loader.next())
        });
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(py_error(e)),
            Some(Ok(batch)) => {
                let state = serde_json::to_string(&batch.state_after)
                    .map_err(|e| KilnError::new_err(e.to_string()))?;
                Ok(Some((batch.records.to_pyarrow(py)?.unbind(), batch.epoch, state)))
            }
        }
    }

    /// The state after the last batch handed out, as JSON.
    fn state_json(&self) -> PyResult<String> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let loader = guard
            .as_ref()
            .ok_or_else(|| KilnError::new_err("the loader is closed"))?;
        serde_json::to_string(&loader.state()).map_err(|e| KilnError::new_err(e.to_string()))
    }

    #[getter]
    fn rows_per_epoch(&self) -> u64 {
        self.rows_per_epoch
    }

    #[getter]
    fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Stops the loader's threads and releases the entry.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            drop(guard.take());
        });
    }
}

/// Reads and validates a spec file; returns its JSON (errors as the CLI's for the same file).
#[pyfunction]
fn load_spec(path: PathBuf) -> PyResult<String> {
    SpecFile::load(&path)
        .map(|spec| spec.json.to_string())
        .map_err(py_error)
}

/// The default cache directory (`$KILN_CACHE`, else `~/.cache/kiln/datasets`), as the CLI's.
#[pyfunction]
fn default_cache_dir() -> PathBuf {
    kiln::cache::default_dir()
}

#[pymodule]
fn _kiln(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(transform, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(index_table, m)?)?;
    m.add_function(wrap_pyfunction!(windows, m)?)?;
    m.add_function(wrap_pyfunction!(batch::spec_output, m)?)?;
    m.add_function(wrap_pyfunction!(batch::transform_batch, m)?)?;
    m.add_function(wrap_pyfunction!(batch::tfrecord_batch, m)?)?;
    m.add_class::<scorer::Scorer>()?;
    m.add_function(wrap_pyfunction!(entry_info, m)?)?;
    m.add_function(wrap_pyfunction!(default_cache_dir, m)?)?;
    m.add_function(wrap_pyfunction!(load_spec, m)?)?;
    m.add_class::<Loader>()?;
    for (name, class) in [
        ("KilnError", py.get_type::<KilnError>()),
        ("SpecError", py.get_type::<SpecError>()),
        ("DecodeError", py.get_type::<DecodeError>()),
        ("CacheError", py.get_type::<CacheError>()),
        ("SourceError", py.get_type::<SourceError>()),
        ("BackendError", py.get_type::<BackendError>()),
        ("ArgumentError", py.get_type::<ArgumentError>()),
        ("ConversionError", py.get_type::<ConversionError>()),
    ] {
        m.add(name, class)?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
