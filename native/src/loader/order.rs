//! The order in which one worker sees the rows of an epoch: a pure function of (row-group
//! sizes, seed, epoch, shard), so it is the same whatever the thread count and can be replayed
//! to resume mid-epoch.
//!
//! 1. Row groups are shuffled (with a seed) and concatenated into the epoch's stream.
//! 2. The stream is cut into `shard_count` equal contiguous ranges of `total / shard_count`
//!    rows; worker `cur_shard` takes its range, so every worker gets the same number of rows and
//!    batches. The `total % shard_count` rows at the end of the stream are left out of that
//!    epoch (a different set each epoch when shuffling).
//! 3. A bounded shuffle buffer (Petastorm's `shuffle_row_drop_partitions`-free variant) mixes
//!    rows within the range; a worker only ever reads the row groups its range touches.

/// SplitMix64: tiny, fast and fixed forever, so orders never change with a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Rows a worker delivers per epoch.
pub fn rows_per_worker(total: u64, shard_count: u64) -> u64 {
    total / shard_count
}

/// Global row positions (in shard/row-group storage order) for one worker's epoch.
pub fn epoch_order(
    group_rows: &[u64],
    seed: Option<u64>,
    epoch: u64,
    cur_shard: u64,
    shard_count: u64,
    shuffle_buffer: usize,
) -> Vec<u64> {
    let mut starts = Vec::with_capacity(group_rows.len());
    let mut total = 0;
    for &n in group_rows {
        starts.push(total);
        total += n;
    }
    let mut groups: Vec<usize> = (0..group_rows.len()).collect();
    if let Some(seed) = seed {
        let mut rng = Rng::new(seed, 2 * epoch);
        for i in (1..groups.len()).rev() {
            groups.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let per_worker = rows_per_worker(total, shard_count);
    let (from, to) = (cur_shard * per_worker, (cur_shard + 1) * per_worker);
    // Walk the stream, keeping only positions in [from, to).
    let mut range = Vec::with_capacity(per_worker as usize);
    let mut position = 0u64;
    for g in groups {
        let n = group_rows[g];
        let (lo, hi) = (position.max(from), (position + n).min(to));
        for p in lo..hi {
            range.push(starts[g] + (p - position));
        }
        position += n;
        if position >= to {
            break;
        }
    }
    match seed {
        Some(seed) if shuffle_buffer > 1 => {
            let mut rng = Rng::new(seed, 2 * epoch + 1 + (cur_shard << 32));
            let mut buffer: Vec<u64> = Vec::with_capacity(shuffle_buffer);
            let mut out = Vec::with_capacity(range.len());
            for row in range {
                if buffer.len() == shuffle_buffer {
                    let pick = rng.below(buffer.len() as u64) as usize;
                    out.push(std::mem::replace(&mut buffer[pick], row));
                } else {
                    buffer.push(row);
                }
            }
            while !buffer.is_empty() {
                let pick = rng.below(buffer.len() as u64) as usize;
                out.push(buffer.swap_remove(pick));
            }
            out
        }
        _ => range,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_partition_the_epoch_equally_and_disjointly() {
        let groups = [7, 3, 10, 5, 9];
        for seed in [None, Some(1), Some(42)] {
            let mut seen = Vec::new();
            for cur in 0..3 {
                let order = epoch_order(&groups, seed, 2, cur, 3, 4);
                assert_eq!(order.len(), 34 / 3);
                seen.extend(order);
            }
            let unique: std::collections::BTreeSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "a row was given to two workers");
            assert!(seen.iter().all(|&r| r < 34));
        }
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let groups = [100, 100, 50];
        let a = epoch_order(&groups, Some(7), 0, 0, 1, 64);
        assert_eq!(a, epoch_order(&groups, Some(7), 0, 0, 1, 64));
        assert_ne!(a, epoch_order(&groups, Some(7), 1, 0, 1, 64));
        assert_ne!(a, epoch_order(&groups, Some(8), 0, 0, 1, 64));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..250).collect::<Vec<_>>(),
            "one worker sees every row once"
        );
        assert_eq!(
            epoch_order(&groups, None, 3, 0, 1, 64),
            (0..250).collect::<Vec<_>>()
        );
    }
}
