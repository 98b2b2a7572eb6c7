//! Parquet shards: the Arrow schema of an entry, the writer that produces a shard through a
//! temporary file, and the reader that verifies a shard before any of its rows are used.

mod entry;
mod reader;
mod tensor_column;
mod writer;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use kiln_core::Tensor;

use crate::cache::{DType, TensorInfo};

pub use entry::{Block, EntryReader};
pub use reader::ShardReader;
pub use tensor_column::{TensorColumn, TensorValues};
pub use writer::{to_batch, EncodedRowGroup, RowGroupEncoder, ShardOptions, ShardWriter, TensorEncoding};

/// What a row carries besides its identity.
#[derive(Debug, Clone)]
pub enum Payload {
    Tensor(Tensor),
    Raw(Bytes),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub row_id: u64,
    pub path: String,
    pub label: Option<String>,
    pub label_index: Option<i32>,
    pub payload: Payload,
}

impl Row {
    pub fn payload_bytes(&self) -> usize {
        match &self.payload {
            Payload::Tensor(t) => t.element_count() * if t.dtype() == kiln_core::DType::U8 { 1 } else { 4 },
            Payload::Raw(b) => b.len(),
        }
    }
}

/// The layout of the payload column(s).
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// `content`: the file's bytes.
    Raw,
    /// `tensor` (+ `shape` when shapes vary).
    Tensor(TensorInfo),
    /// Whatever columns the table has (checked equal across the entry's shards).
    Table,
}

fn element_type(dtype: DType) -> DataType {
    match dtype {
        DType::Uint8 => DataType::UInt8,
        DType::Float32 => DataType::Float32,
    }
}

pub fn schema(layout: &Layout) -> SchemaRef {
    let mut fields = vec![
        Field::new("row_id", DataType::UInt64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("label_index", DataType::Int32, true),
    ];
    let mut metadata = std::collections::HashMap::new();
    match layout {
        // Only the identity columns are known; the reader takes the first shard's schema.
        Layout::Table => {}
        Layout::Raw => fields.push(Field::new("content", DataType::Binary, false)),
        Layout::Tensor(info) => {
            let item = Arc::new(Field::new("item", element_type(info.dtype), false));
            match &info.shape {
                Some(shape) => {
                    let n = shape.iter().product::<usize>() as i32;
                    fields.push(Field::new("tensor", DataType::FixedSizeList(item, n), false));
                }
                None => {
                    fields.push(Field::new("tensor", DataType::List(item), false));
                    let dim = Arc::new(Field::new("item", DataType::UInt32, false));
                    fields.push(Field::new("shape", DataType::List(dim), false));
                }
            }
            metadata.insert("kiln.tensor_dtype".to_owned(), info.dtype.name().to_owned());
            metadata.insert(
                "kiln.tensor_shape".to_owned(),
                serde_json::to_string(&info.shape).expect("a shape serialises"),
            );
        }
    }
    Arc::new(Schema::new_with_metadata(fields, metadata))
}
