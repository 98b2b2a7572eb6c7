//! The optional faster engine (cargo feature `onnxruntime`): ONNX Runtime loaded at run time
//! from a `libonnxruntime.so` (the onnxruntime wheel's, for one), one session per worker, each
//! single-threaded like tract's states so `--workers` means the same for both engines.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::engine::{BatchResult, LocalModel};
use super::model::{InputBatch, InputSpec, InputType, InputValues, ModelInfo, OutputSpec, OutputTensor};
use crate::error::{Error, Result};

pub struct OrtModel {
    environment: ort::environment::Environment,
    path: PathBuf,
    info: ModelInfo,
    output_names: Vec<String>,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("--model", format!("{}: {e}", path.display()))
}

fn dims(value: &ValueType, skip: usize) -> Vec<Option<usize>> {
    value
        .tensor_shape()
        .map(|shape| {
            shape
                .iter()
                .skip(skip)
                .map(|&d| usize::try_from(d).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl OrtModel {
    /// `library`: the `libonnxruntime.so` to load (default: `$ORT_DYLIB_PATH`).
    pub fn load(path: &Path, library: Option<&Path>, input_name: Option<&str>) -> Result<OrtModel> {
        let library: PathBuf = match library {
            Some(l) => l.to_owned(),
            None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or_else(|| {
                Error::invalid(
                    "--ort-lib",
                    "the onnxruntime engine needs the path of libonnxruntime.so (--ort-lib or ORT_DYLIB_PATH), \
                     e.g. the onnxruntime wheel's onnxruntime/capi/libonnxruntime.so.*",
                )
            })?,
        };
        if !library.is_file() {
            return Err(Error::invalid(
                "--ort-lib",
                format!("{} is not a file", library.display()),
            ));
        }
        let environment = ort::init_from(&library)
            .map_err(|e| Error::invalid("--ort-lib", format!("{}: {e}", library.display())))?
            .build()
            .map_err(|e| Error::invalid("--ort-lib", format!("{}: {e}", library.display())))?;
        let session = Self::session(&environment, path).map_err(|e| model_error(path, e))?;
        let names: Vec<String> = session.inputs().iter().map(|i| i.name().to_owned()).collect();
        if let Some(wanted) = input_name {
            if !names.iter().any(|n| n == wanted) {
                return Err(model_error(
                    path,
                    format!("has no input {wanted:?} (inputs: {names:?})"),
                ));
            }
        }
        if names.len() != 1 {
            return Err(model_error(
                path,
                format!(
                    "has {} inputs {names:?}; kiln feeds models with one input",
                    names.len()
                ),
            ));
        }
        let input = &session.inputs()[0];
        let input_type = match input.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                ..
            } => InputType::Float32,
            ValueType::Tensor {
                ty: TensorElementType::Uint8,
                ..
            } => InputType::Uint8,
            other => {
                return Err(model_error(
                    path,
                    format!("input {:?} is {other:?}; kiln feeds float32 or uint8", names[0]),
                ))
            }
        };
        let outputs: Vec<OutputSpec> = session
            .outputs()
            .iter()
            .map(|o| OutputSpec {
                name: o.name().to_owned(),
                row_shape: dims(o.dtype(), 1).into_iter().collect(),
            })
            .collect();
        Ok(OrtModel {
            output_names: outputs.iter().map(|o| o.name.clone()).collect(),
            info: ModelInfo {
                input: InputSpec {
                    name: names[0].clone(),
                    input_type,
                    shape: dims(input.dtype(), 0),
                },
                outputs,
            },
            environment,
            path: path.to_owned(),
        })
    }

    fn session(
        environment: &ort::environment::Environment,
        path: &Path,
    ) -> std::result::Result<Session, String> {
        Session::builder(environment)
            .map_err(|e| e.to_string())?
            .with_intra_threads(1)
            .map_err(|e| e.to_string())?
            .with_inter_threads(1)
            .map_err(|e| e.to_string())?
            .commit_from_file(path)
            .map_err(|e| e.to_string())
    }
}

fn extract(value: &ort::value::DynValue) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let shape_of = |shape: &ort::value::Shape| shape.iter().map(|&d| d as usize).collect::<Vec<_>>();
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Ok((shape_of(shape), data.to_vec()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
        return Ok((shape_of(shape), data.iter().map(|&x| x as f32).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i32>() {
        return Ok((shape_of(shape), data.iter().map(|&x| x as f32).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<f64>() {
        return Ok((shape_of(shape), data.iter().map(|&x| x as f32).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<u8>() {
        return Ok((shape_of(shape), data.iter().map(|&x| x as f32).collect()));
    }
    Err(format!(
        "output of type {:?} cannot be stored as float32",
        value.dtype()
    ))
}

impl LocalModel for OrtModel {
    type Worker = Session;

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn engine(&self) -> &'static str {
        "onnxruntime"
    }

    fn worker(&self) -> Result<Session> {
        Self::session(&self.environment, &self.path).map_err(|e| model_error(&self.path, e))
    }

    fn run(&self, session: &mut Session, batch: InputBatch) -> BatchResult {
        let shape: Vec<i64> = batch.shape().iter().map(|&d| d as i64).collect();
        let name = self.info.input.name.as_str();
        let outputs = match &batch.values {
            InputValues::F32(v) => session.run(ort::inputs![
                name => TensorRef::from_array_view((shape, &v[..])).map_err(|e| e.to_string())?
            ]),
            InputValues::U8(v) => session.run(ort::inputs![
                name => TensorRef::from_array_view((shape, &v[..])).map_err(|e| e.to_string())?
            ]),
        }
        .map_err(|e| e.to_string())?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name.as_str())
                    .ok_or_else(|| format!("onnxruntime returned no output {name:?}"))?;
                let (shape, values) = extract(value)?;
                OutputTensor::from_batch_shape(name, &shape, values, batch.rows)
            })
            .collect()
    }
}
