//! Dense host tensors: a shape and row-major data of one dtype.

/// Element type of a [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U8,
    F32,
    /// Complex with f32 parts, stored interleaved (re, im), as NumPy's `complex64`.
    C64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::F32 => "float32",
            DType::C64 => "complex64",
        }
    }
}

/// Row-major element storage. `C64` keeps two `f32` per element.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    U8(Vec<u8>),
    F32(Vec<f32>),
    C64(Vec<f32>),
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// Panics if `data.len()` does not match the product of `shape`.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Self {
        let tensor = Tensor { shape, data };
        assert_eq!(
            tensor.element_count(),
            tensor.shape.iter().product::<usize>(),
            "tensor data does not match its shape"
        );
        tensor
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self::new(shape, TensorData::F32(data))
    }

    pub fn u8(shape: Vec<usize>, data: Vec<u8>) -> Self {
        Self::new(shape, TensorData::U8(data))
    }

    pub fn c64(shape: Vec<usize>, interleaved: Vec<f32>) -> Self {
        Self::new(shape, TensorData::C64(interleaved))
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::U8(_) => DType::U8,
            TensorData::F32(_) => DType::F32,
            TensorData::C64(_) => DType::C64,
        }
    }

    pub fn element_count(&self) -> usize {
        match &self.data {
            TensorData::U8(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::C64(v) => v.len() / 2,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.data {
            TensorData::U8(v) => Some(v),
            _ => None,
        }
    }

    /// Interleaved (re, im) pairs of a complex tensor.
    pub fn as_c64(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::C64(v) => Some(v),
            _ => None,
        }
    }
}
