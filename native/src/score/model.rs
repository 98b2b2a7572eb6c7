//! What every scoring engine agrees on: the model's input and outputs as kiln sees them, a
//! batch of input rows, and the per-row outputs that come back.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Element type of the model's input, as kiln feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    Float32,
    Uint8,
}

impl InputType {
    pub fn name(self) -> &'static str {
        match self {
            InputType::Float32 => "float32",
            InputType::Uint8 => "uint8",
        }
    }
}

/// The model input kiln feeds: its name, type and shape (`None` for a dynamic dimension; the
/// first dimension is the batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    #[serde(rename = "dtype")]
    pub input_type: InputType,
    pub shape: Vec<Option<usize>>,
}

/// A model output: its name and, when the model declares it, the shape of one row's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub row_shape: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub input: InputSpec,
    pub outputs: Vec<OutputSpec>,
}

impl ModelInfo {
    /// The batch size the model fixes, if its first input dimension is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input.shape.first().copied().flatten()
    }

    /// The shape each row is fed as, given the entry's row shape: the entry's own when the
    /// model's dimensions agree with it (dynamic ones agree with anything), otherwise the
    /// model's fixed shape when it holds the same number of values (e.g. a `(80, 101)`
    /// log-mel fed to an MLP over `8080` values: a row-major reshape, no copy).
    pub fn row_shape_for(&self, entry_row: &[usize]) -> Result<Vec<usize>> {
        let model_row = self.input.shape.get(1..).unwrap_or(&[]);
        let agrees = model_row.len() == entry_row.len()
            && model_row
                .iter()
                .zip(entry_row)
                .all(|(m, e)| m.is_none_or(|m| m == *e));
        if agrees {
            return Ok(entry_row.to_vec());
        }
        let fixed: Option<Vec<usize>> = model_row.iter().copied().collect();
        if let Some(fixed) = fixed {
            if fixed.iter().product::<usize>() == entry_row.iter().product::<usize>() {
                return Ok(fixed);
            }
        }
        Err(Error::invalid(
            "model input",
            format!(
                "{:?} takes rows of shape {}; the input's rows are {entry_row:?}",
                self.input.name,
                shape_text(model_row)
            ),
        ))
    }
}

/// `[3, 224, 224]`, with `?` for dynamic dimensions.
pub fn shape_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A batch's input values, row-major, in the model's input type.
#[derive(Debug, Clone)]
pub enum InputValues {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl InputValues {
    pub fn len(&self) -> usize {
        match self {
            InputValues::F32(v) => v.len(),
            InputValues::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows to score: `rows` rows of `row_shape`, as one `(rows, *row_shape)` tensor.
#[derive(Debug, Clone)]
pub struct InputBatch {
    /// Position of the batch in the run (sent as the request id to endpoints).
    pub id: u64,
    pub rows: usize,
    pub row_shape: Vec<usize>,
    pub values: InputValues,
}

impl InputBatch {
    pub fn shape(&self) -> Vec<usize> {
        let mut shape = vec![self.rows];
        shape.extend_from_slice(&self.row_shape);
        shape
    }
}

/// One model output over a batch: `rows * row_shape.product()` values.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub row_shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl OutputTensor {
    /// Builds an output from the engine's full `(batch, ...)` shape, checking that it covers
    /// `rows` rows and that the values fill it.
    pub fn from_batch_shape(
        name: &str,
        shape: &[usize],
        values: Vec<f32>,
        rows: usize,
    ) -> std::result::Result<OutputTensor, String> {
        let Some((&batch, row_shape)) = shape.split_first() else {
            return Err(format!("output {name:?} is a scalar, not one value per row"));
        };
        if batch != rows {
            return Err(format!("output {name:?} has {batch} rows for a batch of {rows}"));
        }
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(values.len()) {
            return Err(format!(
                "output {name:?} has {} values for shape {shape:?}",
                values.len()
            ));
        }
        Ok(OutputTensor {
            name: name.to_owned(),
            row_shape: row_shape.to_vec(),
            values,
        })
    }

    pub fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    /// The first `rows` rows (drops the padding of a fixed-batch model's last batch).
    pub fn truncate_rows(&mut self, rows: usize) {
        self.values.truncate(rows * self.row_len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shape: Vec<Option<usize>>) -> ModelInfo {
        ModelInfo {
            input: InputSpec {
                name: "x".into(),
                input_type: InputType::Float32,
                shape,
            },
            outputs: vec![],
        }
    }

    #[test]
    fn rows_are_fed_as_the_entry_shape_or_reshaped_to_a_fixed_one() {
        let dynamic = info(vec![None, Some(80), None]);
        assert_eq!(dynamic.row_shape_for(&[80, 101]).unwrap(), vec![80, 101]);
        let flat = info(vec![None, Some(8080)]);
        assert_eq!(flat.row_shape_for(&[80, 101]).unwrap(), vec![8080]);
        let err = flat.row_shape_for(&[80, 100]).unwrap_err().to_string();
        assert!(err.contains("\"x\" takes rows of shape [8080]"), "{err}");
        assert!(err.contains("[80, 100]"), "{err}");
        let err = info(vec![None, None, Some(3)])
            .row_shape_for(&[4, 4])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[?, 3]"), "{err}");
    }

    #[test]
    fn outputs_are_checked_against_the_batch() {
        assert!(OutputTensor::from_batch_shape("p", &[2, 3], vec![0.0; 6], 2).is_ok());
        let e = OutputTensor::from_batch_shape("p", &[3, 3], vec![0.0; 9], 2).unwrap_err();
        assert!(e.contains("3 rows for a batch of 2"), "{e}");
        let e = OutputTensor::from_batch_shape("p", &[2, 3], vec![0.0; 5], 2).unwrap_err();
        assert!(e.contains("5 values"), "{e}");
        let e = OutputTensor::from_batch_shape("p", &[], vec![0.0], 1).unwrap_err();
        assert!(e.contains("scalar"), "{e}");
    }
}
