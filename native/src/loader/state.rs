//! Where a loader is in its stream.

use serde::{Deserialize, Serialize};

/// Enough to continue with exactly the rows not yet seen: each epoch's order is a pure
/// function of (seed, epoch, shard), so (epoch, position) pins the next row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: Option<u64>,
    pub epoch: u64,
    /// Rows of this worker's epoch already delivered.
    pub position: u64,
}
