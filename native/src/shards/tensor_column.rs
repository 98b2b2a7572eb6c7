//! The one decoder of a batch's `tensor` column (fixed-size or variable lists of float32 or
//! uint8, with a `shape` column when shapes vary), checked so a row's values always match its
//! shape. The loader, GPU upload, export and the stream checksum all read tensors through it.

use arrow::array::{Array, FixedSizeListArray, Float32Array, ListArray, UInt32Array, UInt8Array};
use arrow::record_batch::RecordBatch;
use kiln_core::{Tensor, TensorData};

use crate::error::{Error, Result};

/// A row's (or a batch's) elements, borrowed from the Arrow buffers.
#[derive(Debug, Clone, Copy)]
pub enum TensorValues<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl TensorValues<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len(),
            TensorValues::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len() * 4,
            TensorValues::U8(v) => v.len(),
        }
    }

    pub fn to_tensor(self, shape: Vec<usize>) -> Tensor {
        match self {
            TensorValues::F32(v) => Tensor::new(shape, TensorData::F32(v.to_vec())),
            TensorValues::U8(v) => Tensor::new(shape, TensorData::U8(v.to_vec())),
        }
    }
}

#[derive(Debug)]
enum Elements {
    F32(Float32Array),
    U8(UInt8Array),
}

/// The decoded `tensor` column of one batch.
#[derive(Debug)]
pub struct TensorColumn {
    elements: Elements,
    /// Element range of each row within `elements`.
    ranges: Vec<(usize, usize)>,
    shapes: Vec<Vec<usize>>,
}

fn bad(problem: impl Into<String>) -> Error {
    Error::invalid("tensor column", problem)
}

impl TensorColumn {
    /// Decodes `batch`'s tensor column; `fixed_shape` is the entry's shape when fixed.
    pub fn from_batch(batch: &RecordBatch, fixed_shape: Option<&[usize]>) -> Result<TensorColumn> {
        let column = batch
            .column_by_name("tensor")
            .ok_or_else(|| bad("no `tensor` column"))?;
        let n = batch.num_rows();
        let (values, ranges, shapes) =
            if let Some(list) = column.as_any().downcast_ref::<FixedSizeListArray>() {
                let shape = fixed_shape.ok_or_else(|| bad("fixed-size tensors without a fixed shape"))?;
                let width = list.value_length() as usize;
                if shape.iter().product::<usize>() != width {
                    return Err(bad(format!("rows of {width} values cannot have shape {shape:?}")));
                }
                let start = list.offset() * width;
                let values = list.values().slice(start, n * width);
                let ranges = (0..n).map(|i| (i * width, (i + 1) * width)).collect();
                (values, ranges, vec![shape.to_vec(); n])
            } else if let Some(list) = column.as_any().downcast_ref::<ListArray>() {
                let shape_column = batch
                    .column_by_name("shape")
                    .and_then(|c| c.as_any().downcast_ref::<ListArray>())
                    .ok_or_else(|| bad("variable-size tensors without a `shape` list column"))?;
                let offsets = list.value_offsets();
                let base = offsets[0] as usize;
                let values = list.values().slice(base, offsets[n] as usize - base);
                let mut ranges = Vec::with_capacity(n);
                let mut shapes = Vec::with_capacity(n);
                for i in 0..n {
                    let dims = shape_column.value(i);
                    let dims = dims
                        .as_any()
                        .downcast_ref::<UInt32Array>()
                        .ok_or_else(|| bad("`shape` is not a list of uint32"))?;
                    let shape: Vec<usize> = dims.values().iter().map(|&d| d as usize).collect();
                    let (from, to) = (offsets[i] as usize - base, offsets[i + 1] as usize - base);
                    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                    if count != Some(to - from) {
                        return Err(bad(format!(
                            "row {i} has {} values but shape {shape:?}",
                            to - from
                        )));
                    }
                    ranges.push((from, to));
                    shapes.push(shape);
                }
                (values, ranges, shapes)
            } else {
                return Err(bad(format!("`tensor` is {}, not a list", column.data_type())));
            };
        let elements = if let Some(f) = values.as_any().downcast_ref::<Float32Array>() {
            Elements::F32(f.clone())
        } else if let Some(u) = values.as_any().downcast_ref::<UInt8Array>() {
            Elements::U8(u.clone())
        } else {
            return Err(bad(format!("unsupported element type {}", values.data_type())));
        };
        Ok(TensorColumn {
            elements,
            ranges,
            shapes,
        })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn shape(&self, row: usize) -> &[usize] {
        &self.shapes[row]
    }

    /// Row `row`'s elements.
    pub fn values(&self, row: usize) -> TensorValues<'_> {
        let (from, to) = self.ranges[row];
        match &self.elements {
            Elements::F32(f) => TensorValues::F32(&f.values()[from..to]),
            Elements::U8(u) => TensorValues::U8(&u.values()[from..to]),
        }
    }

    /// Every row's elements, contiguous and in row order.
    pub fn all_values(&self) -> TensorValues<'_> {
        match &self.elements {
            Elements::F32(f) => TensorValues::F32(f.values()),
            Elements::U8(u) => TensorValues::U8(u.values()),
        }
    }

    /// Row `row` as an owned tensor.
    pub fn tensor(&self, row: usize) -> Tensor {
        self.values(row).to_tensor(self.shapes[row].clone())
    }
}
