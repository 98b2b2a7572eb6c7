//! Whole Arrow batches through kiln in one call, for `kiln.spark` (whose `mapInArrow`
//! functions hand over pyarrow batches): a spec over a binary column, and rows as TFRecord.
//! No per-row Python: the rows are transformed on native threads, the GIL released.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, BinaryArray, BinaryBuilder, Float32Builder, Int32Builder, LargeBinaryArray,
    ListBuilder, StringBuilder,
};
use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use arrow::record_batch::RecordBatch;
use kiln::cache::{DType, TensorInfo};
use kiln_core::{Pipeline, TensorData};
use pyo3::prelude::*;

use crate::{argument, open_backend, py_error, spec_from_json};

/// The stored dtype and (fixed) shape a spec's output has: `("float32" | "uint8", shape or None)`.
#[pyfunction]
pub fn spec_output(spec_json: &str) -> PyResult<(String, Option<Vec<usize>>)> {
    let spec = spec_from_json(spec_json)?;
    let info = TensorInfo::of_spec(&spec.spec).map_err(py_error)?;
    Ok((info.dtype.name().to_owned(), info.shape))
}

/// Runs `spec_json` over every value of `contents` (a pyarrow binary array; nulls are
/// errors). Returns three pyarrow arrays of the same length: the tensors (`list<float32>`, or
/// `binary` for uint8 specs; null where the row failed), their shapes (`list<int32>`) and the
/// errors (`string`, null where the row is fine).
#[pyfunction]
#[pyo3(signature = (spec_json, contents, backend="cpu", threads=None))]
pub fn transform_batch(
    py: Python<'_>,
    spec_json: &str,
    contents: &Bound<'_, PyAny>,
    backend: &str,
    threads: Option<usize>,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    let spec = spec_from_json(spec_json)?;
    let info = TensorInfo::of_spec(&spec.spec).map_err(py_error)?;
    let backend = open_backend(backend)?;
    let data = ArrayData::from_pyarrow_bound(contents)?;
    let array: ArrayRef = arrow::array::make_array(data);
    let values: Vec<Option<&[u8]>> = if let Some(a) = array.as_any().downcast_ref::<BinaryArray>() {
        a.iter().collect()
    } else if let Some(a) = array.as_any().downcast_ref::<LargeBinaryArray>() {
        a.iter().collect()
    } else {
        return Err(argument(
            "content",
            format!("is {}, not binary", array.data_type()),
        ));
    };
    let pipeline = Pipeline::new(spec.spec);
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    let results: Vec<Result<kiln_core::Tensor, String>> = py.detach(|| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<kiln_core::Tensor, String>>>> =
            (0..values.len()).map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..threads.min(values.len().max(1)) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= values.len() {
                        return;
                    }
                    let result = match values[i] {
                        None => Err("no content (null)".to_owned()),
                        Some(bytes) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            pipeline.run_with_warnings(&backend, bytes)
                        }))
                        .map_err(|_| "the transform panicked".to_owned())
                        .and_then(|r| r.map(|(t, _)| t).map_err(|e| e.to_string())),
                    };
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                });
            }
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Err("not run".into()))
            })
            .collect()
    });
    let mut shapes = ListBuilder::new(Int32Builder::new());
    let mut errors = StringBuilder::new();
    let tensors: ArrayRef = match info.dtype {
        DType::Float32 => {
            let mut out = ListBuilder::new(Float32Builder::new());
            for result in &results {
                match result {
                    Ok(t) => match &t.data {
                        TensorData::F32(v) => {
                            out.values().append_slice(v);
                            out.append(true);
                        }
                        _ => out.append(false),
                    },
                    Err(_) => out.append(false),
                }
            }
            Arc::new(out.finish())
        }
        DType::Uint8 => {
            let mut out = BinaryBuilder::new();
            for result in &results {
                match result {
                    Ok(t) => match &t.data {
                        TensorData::U8(v) => out.append_value(v),
                        _ => out.append_null(),
                    },
                    Err(_) => out.append_null(),
                }
            }
            Arc::new(out.finish())
        }
    };
    for result in &results {
        match result {
            Ok(t) => {
                let dims: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
                shapes.values().append_slice(&dims);
                shapes.append(true);
                errors.append_null();
            }
            Err(e) => {
                shapes.append(false);
                errors.append_value(e);
            }
        }
    }
    let shapes: ArrayRef = Arc::new(shapes.finish());
    let errors: ArrayRef = Arc::new(errors.finish());
    Ok((
        tensors.to_data().to_pyarrow(py)?.unbind(),
        shapes.to_data().to_pyarrow(py)?.unbind(),
        errors.to_data().to_pyarrow(py)?.unbind(),
    ))
}

/// Every row of a pyarrow record batch as a framed `tf.train.Example` (as `kiln export`
/// writes them), concatenated: the bytes of a TFRecord file.
#[pyfunction]
pub fn tfrecord_batch(py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let batch = RecordBatch::from_pyarrow_bound(batch)?;
    let bytes = py
        .detach(|| kiln::export::tfrecord_records(&batch))
        .map_err(py_error)?;
    Ok(pyo3::types::PyBytes::new(py, &bytes).into_any().unbind())
}
