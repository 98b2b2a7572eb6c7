//! The default in-process engine: an ONNX model run by `tract` (pure Rust, no native
//! library). The model is loaded and simplified once; an optimized plan is built once per
//! input shape (the full batches and the last, smaller one) and shared by the workers, each
//! of which keeps its own run state per plan.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::engine::LocalModel;
use super::model::{InputBatch, InputSpec, InputType, InputValues, ModelInfo, OutputSpec, OutputTensor};
use crate::error::{Error, Result};

pub struct TractModel {
    model: TypedModel,
    /// Symbols in the input's shape, with their position, bound per batch.
    symbols: Vec<(usize, Symbol)>,
    plans: Mutex<HashMap<Vec<usize>, Arc<TypedRunnableModel>>>,
    info: ModelInfo,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A worker's run states, one per plan it has used.
pub struct TractWorker {
    states: HashMap<Vec<usize>, TypedSimpleState>,
}

impl std::fmt::Debug for TractWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractWorker")
            .field("plans", &self.states.len())
            .finish()
    }
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("--model", format!("{}: {e:#}", path.display()))
}

impl TractModel {
    pub fn load(path: &Path, input_name: Option<&str>) -> Result<TractModel> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(|e| model_error(path, e))?;
        let inputs = model.input_outlets().map_err(|e| model_error(path, e))?.to_vec();
        let names: Vec<String> = inputs.iter().map(|o| model.node(o.node).name.clone()).collect();
        let index = match input_name {
            Some(wanted) => names
                .iter()
                .position(|n| n == wanted)
                .ok_or_else(|| model_error(path, format!("has no input {wanted:?} (inputs: {names:?})")))?,
            None => 0,
        };
        if names.len() != 1 {
            // kiln has one tensor per row to give; a second input would have no values.
            return Err(model_error(
                path,
                format!(
                    "has {} inputs {names:?}; kiln feeds models with one input",
                    names.len()
                ),
            ));
        }
        let fact = model.input_fact(index).map_err(|e| model_error(path, e))?.clone();
        let input_type = match fact.datum_type {
            DatumType::F32 => InputType::Float32,
            DatumType::U8 => InputType::Uint8,
            other => {
                return Err(model_error(
                    path,
                    format!(
                        "input {:?} is {other:?}; kiln feeds float32 or uint8",
                        names[index]
                    ),
                ))
            }
        };
        let mut shape = Vec::new();
        let mut symbols = Vec::new();
        for (axis, dim) in fact.shape.iter().enumerate() {
            match dim.as_i64() {
                Some(d) if d >= 0 => shape.push(Some(d as usize)),
                _ => {
                    shape.push(None);
                    match dim {
                        TDim::Sym(s) => symbols.push((axis, s.clone())),
                        other => {
                            return Err(model_error(
                                path,
                                format!("input dimension {axis} is the expression {other}; kiln binds plain symbols only"),
                            ))
                        }
                    }
                }
            }
        }
        let outputs = model.output_outlets().map_err(|e| model_error(path, e))?.to_vec();
        let outputs = outputs
            .iter()
            .enumerate()
            .map(|(i, outlet)| {
                let name = model
                    .outlet_label(*outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| model.node(outlet.node).name.clone());
                let fact = model.output_fact(i).map_err(|e| model_error(path, e))?;
                let row_shape: Option<Vec<usize>> = fact
                    .shape
                    .iter()
                    .skip(1)
                    .map(|d| d.as_i64().and_then(|d| usize::try_from(d).ok()))
                    .collect();
                Ok(OutputSpec { name, row_shape })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TractModel {
            model,
            symbols,
            plans: Mutex::new(HashMap::new()),
            info: ModelInfo {
                input: InputSpec {
                    name: names[index].clone(),
                    input_type,
                    shape,
                },
                outputs,
            },
        })
    }

    fn plan(&self, shape: &[usize]) -> std::result::Result<Arc<TypedRunnableModel>, String> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(shape) {
            return Ok(plan.clone());
        }
        let bindings: HashMap<Symbol, TDim> = self
            .symbols
            .iter()
            .map(|(axis, symbol)| (symbol.clone(), TDim::Val(shape[*axis] as i64)))
            .collect();
        let plan = self
            .model
            .set_symbols(&bindings)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("planning the model for input shape {shape:?}: {e:#}"))?;
        plans.insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }
}

fn to_f32(value: &TValue) -> std::result::Result<Vec<f32>, String> {
    let cast = value.cast_to::<f32>().map_err(|e| format!("{e:#}"))?;
    let ram = cast.try_as_plain_ram().map_err(|e| format!("{e:#}"))?;
    Ok(ram.as_slice::<f32>().map_err(|e| format!("{e:#}"))?.to_vec())
}

impl LocalModel for TractModel {
    type Worker = TractWorker;

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn engine(&self) -> &'static str {
        "tract"
    }

    fn worker(&self) -> Result<TractWorker> {
        Ok(TractWorker {
            states: HashMap::new(),
        })
    }

    fn run(
        &self,
        worker: &mut TractWorker,
        batch: InputBatch,
    ) -> std::result::Result<Vec<OutputTensor>, String> {
        let shape = batch.shape();
        let rows = batch.rows;
        // The batch's own buffer becomes the tensor: no copy.
        let dims = tract_ndarray::IxDyn(&shape);
        let input: Tensor = match batch.values {
            InputValues::F32(v) => {
                tract_ndarray::ArrayD::from_shape_vec(dims, v).map(IntoTensor::into_tensor)
            }
            InputValues::U8(v) => tract_ndarray::ArrayD::from_shape_vec(dims, v).map(IntoTensor::into_tensor),
        }
        .map_err(|e| format!("{e:#}"))?;
        if !worker.states.contains_key(&shape) {
            let state = self.plan(&shape)?.spawn().map_err(|e| format!("{e:#}"))?;
            worker.states.insert(shape.clone(), state);
        }
        let state = worker.states.get_mut(&shape).expect("inserted above");
        let outputs = state.run(tvec!(input.into())).map_err(|e| format!("{e:#}"))?;
        outputs
            .iter()
            .zip(&self.info.outputs)
            .map(|(value, spec)| {
                OutputTensor::from_batch_shape(&spec.name, value.shape(), to_f32(value)?, rows)
            })
            .collect()
    }
}
