//! `kiln._kiln.Scorer`: a model loaded once (or an endpoint connected once) in this process,
//! scoring Arrow columns of tensors, for `kiln.spark.score` (one per Python worker). The
//! batches and retries are `kiln score`'s own.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, BinaryArray, Float32Builder, Int32Array, ListArray, ListBuilder,
    StringBuilder, UInt32Array, UInt8Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use kiln::cache::DType;
use kiln::score::engine::Scorer as NativeScorer;
use kiln::score::input::{input_batch, ReaderConfig};
use kiln::score::{Backoff, EndpointOptions, Engine, ModelSource};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{argument, py_error};

#[pyclass(module = "kiln._kiln")]
pub struct Scorer {
    scorer: Arc<dyn NativeScorer>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("model", &self.scorer.identity())
            .finish()
    }
}

/// What Python passes to name a model or an endpoint (`kiln.score`, `kiln.spark.score`).
pub struct ModelArgs<'a> {
    pub model: Option<std::path::PathBuf>,
    pub endpoint: Option<String>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub engine: &'a str,
    pub ort_lib: Option<std::path::PathBuf>,
    pub concurrency: usize,
    pub retries: u32,
    pub timeout_s: f64,
    pub max_rps: Option<f64>,
    pub input_name: Option<String>,
}

/// The model source those arguments name, or why they do not name one.
pub fn model_source(args: ModelArgs<'_>) -> PyResult<ModelSource> {
    let timeout_s = args.timeout_s;
    if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s < 1e9) {
        return Err(argument(
            "timeout",
            format!("{timeout_s} is not a positive number of seconds"),
        ));
    }
    match (args.model, args.endpoint) {
        (Some(path), None) => Ok(ModelSource::Onnx {
            path,
            engine: match args.engine {
                "tract" => Engine::Tract,
                "onnxruntime" => Engine::OnnxRuntime {
                    library: args.ort_lib,
                },
                other => {
                    return Err(argument(
                        "engine",
                        format!("{other:?} is not 'tract' or 'onnxruntime'"),
                    ))
                }
            },
        }),
        (None, Some(url)) => Ok(ModelSource::Endpoint(EndpointOptions {
            url,
            model_name: args
                .model_name
                .ok_or_else(|| argument("model_name", "an endpoint needs the model's name"))?,
            model_version: args.model_version,
            input_name: args.input_name,
            concurrency: args.concurrency,
            retries: args.retries,
            timeout: std::time::Duration::from_secs_f64(timeout_s),
            max_rps: args.max_rps,
            backoff: Backoff::default(),
        })),
        _ => Err(argument(
            "model",
            "give model= (an ONNX file) or endpoint= (with model_name=)",
        )),
    }
}

/// The rows as the `tensor` (+ `shape`) columns kiln's readers take: `list<float32>` or
/// binary (uint8) values, and each row's shape.
fn kiln_columns(values: ArrayRef, shapes: &ListArray) -> PyResult<(RecordBatch, DType)> {
    let (tensor, dtype): (ArrayRef, DType) = match values.data_type() {
        DataType::List(_) => {
            let list = values.as_any().downcast_ref::<ListArray>().expect("a list");
            let items =
                arrow::compute::cast(list.values(), &DataType::Float32).map_err(|e| argument("tensor", e))?;
            let field = Arc::new(Field::new("item", DataType::Float32, true));
            (
                Arc::new(ListArray::new(
                    field,
                    list.offsets().clone(),
                    items,
                    list.nulls().cloned(),
                )),
                DType::Float32,
            )
        }
        DataType::Binary => {
            let binary = values.as_any().downcast_ref::<BinaryArray>().expect("binary");
            let items = UInt8Array::new(binary.values().clone().into(), None);
            let field = Arc::new(Field::new("item", DataType::UInt8, true));
            let offsets = OffsetBuffer::new(binary.offsets().inner().clone());
            (
                Arc::new(ListArray::new(
                    field,
                    offsets,
                    Arc::new(items),
                    binary.nulls().cloned(),
                )),
                DType::Uint8,
            )
        }
        other => {
            return Err(argument(
                "input_col",
                format!("is {other}, not array<float> or binary"),
            ))
        }
    };
    let dims = shapes
        .values()
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| argument("shape", "is not array<int>"))?;
    let dims = UInt32Array::from_iter(dims.iter().map(|d| d.and_then(|d| u32::try_from(d).ok())));
    let field = Arc::new(Field::new("item", DataType::UInt32, false));
    let shape = ListArray::new(
        field,
        shapes.offsets().clone(),
        Arc::new(dims),
        shapes.nulls().cloned(),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("tensor", tensor.data_type().clone(), true),
        Field::new("shape", shape.data_type().clone(), true),
    ]));
    let batch =
        RecordBatch::try_new(schema, vec![tensor, Arc::new(shape)]).map_err(|e| argument("tensor", e))?;
    Ok((batch, dtype))
}

#[pymethods]
impl Scorer {
    #[new]
    #[pyo3(signature = (model=None, endpoint=None, model_name=None, model_version=None, engine="tract",
                        ort_lib=None, workers=1, concurrency=8, retries=5, timeout_s=30.0, max_rps=None,
                        input_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: Option<std::path::PathBuf>,
        endpoint: Option<String>,
        model_name: Option<String>,
        model_version: Option<String>,
        engine: &str,
        ort_lib: Option<std::path::PathBuf>,
        workers: usize,
        concurrency: usize,
        retries: u32,
        timeout_s: f64,
        max_rps: Option<f64>,
        input_name: Option<String>,
    ) -> PyResult<Scorer> {
        let source = model_source(ModelArgs {
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| argument("runtime", e))?;
        let scorer = py
            .detach(|| kiln::score::open_model(&source, input_name.as_deref(), workers, &runtime))
            .map_err(py_error)?;
        Ok(Scorer { scorer, runtime })
    }

    /// The model's outputs: `[(name, row shape or None)]`.
    fn outputs(&self) -> Vec<(String, Option<Vec<usize>>)> {
        self.scorer
            .info()
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.row_shape.clone()))
            .collect()
    }

    /// Scores rows in order, `batch_size` at a time: `values` (pyarrow `list<float>` or
    /// binary for uint8) with each row's `shapes` (`list<int32>`). Returns `({output name:
    /// list<float32> array}, errors string array)`, null where a row's batch failed.
    fn score<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
        shapes: &Bound<'py, PyAny>,
        batch_size: usize,
    ) -> PyResult<(Bound<'py, PyDict>, Py<PyAny>)> {
        if batch_size == 0 {
            return Err(argument("batch_size", "must be at least 1"));
        }
        let values = arrow::array::make_array(ArrayData::from_pyarrow_bound(values)?);
        let shapes = arrow::array::make_array(ArrayData::from_pyarrow_bound(shapes)?);
        let shapes = shapes
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| argument("shape", "is not array<int>"))?;
        if shapes.len() != values.len() {
            return Err(argument("shape", "has another length than the tensors"));
        }
        let (rows, stored) = kiln_columns(values, shapes)?;
        let info = self.scorer.info().clone();
        let config = ReaderConfig {
            entry: std::path::PathBuf::new(),
            stored,
            fixed_shape: None,
            batch_size,
            info: info.clone(),
            threads: 1,
        };
        let n = rows.num_rows();
        let scorer = self.scorer.clone();
        let results = py.detach(|| {
            let chunks: Vec<(usize, usize)> = (0..n)
                .step_by(batch_size)
                .map(|s| (s, batch_size.min(n - s)))
                .collect();
            self.runtime.block_on(async {
                futures::stream::iter(chunks.into_iter().enumerate())
                    .map(|(id, (start, len))| {
                        let slice = rows.slice(start, len);
                        let scorer = scorer.clone();
                        let config = &config;
                        async move {
                            let has_null =
                                slice.column(0).null_count() > 0 || slice.column(1).null_count() > 0;
                            let result = if has_null {
                                Err("a row has no tensor (null)".to_owned())
                            } else {
                                match input_batch(config, &slice, id as u64) {
                                    Ok(batch) => scorer.score(batch).await,
                                    Err(e) => Err(e),
                                }
                            };
                            (len, result)
                        }
                    })
                    .buffered(scorer.parallelism().max(1))
                    .collect::<Vec<_>>()
                    .await
            })
        });
        let mut builders: Vec<ListBuilder<Float32Builder>> = info
            .outputs
            .iter()
            .map(|_| ListBuilder::new(Float32Builder::new()))
            .collect();
        let mut errors = StringBuilder::new();
        for (len, result) in results {
            match result {
                Ok(outputs) => {
                    for (builder, output) in builders.iter_mut().zip(&outputs) {
                        let width = output.row_len();
                        for r in 0..len {
                            builder
                                .values()
                                .append_slice(&output.values[r * width..(r + 1) * width]);
                            builder.append(true);
                        }
                    }
                    (0..len).for_each(|_| errors.append_null());
                }
                Err(e) => {
                    for builder in &mut builders {
                        (0..len).for_each(|_| builder.append(false));
                    }
                    (0..len).for_each(|_| errors.append_value(&e));
                }
            }
        }
        let out = PyDict::new(py);
        for (spec, mut builder) in info.outputs.iter().zip(builders) {
            let array: ArrayRef = Arc::new(builder.finish());
            out.set_item(&spec.name, array.to_data().to_pyarrow(py)?)?;
        }
        let errors: ArrayRef = Arc::new(errors.finish());
        Ok((out, errors.to_data().to_pyarrow(py)?.unbind()))
    }
}
