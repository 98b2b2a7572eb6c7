//! What the loader hands out.

use arrow::array::{Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use kiln_gpu::GpuTensor;

use super::LoaderState;

/// One batch: Arrow columns `row_id`, `path`, `label`, `label_index`, `tensor` (+ `shape`).
/// With device output the tensors are in `device` as one `(batch, ...shape)` tensor instead,
/// and `records` holds the other columns.
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: RecordBatch,
    pub device: Option<GpuTensor>,
    pub epoch: u64,
    /// The loader's state once this batch has been consumed.
    pub state_after: LoaderState,
}

impl Batch {
    pub fn row_ids(&self) -> Vec<u64> {
        self.records
            .column_by_name("row_id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .map(|a| a.values().to_vec())
            .unwrap_or_default()
    }

    pub fn num_rows(&self) -> usize {
        self.records.num_rows()
    }
}
