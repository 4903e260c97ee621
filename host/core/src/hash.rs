//! Hashing and partitioning: which worker a record or key goes to.
//!
//! xxh3 is used everywhere for speed and because its output is stable across
//! platforms and releases, so the same input always lands on the same worker
//! and sampling decisions are reproducible.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hash of a payload or key.
#[inline]
pub fn hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Hash of a payload or key with a seed (for sampling).
#[inline]
pub fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(bytes, seed)
}

/// Maps a hash onto `0..n` without the bias of a plain modulo on small `n`.
#[inline]
pub fn partition(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Whether a hash falls in the kept `fraction` (0.0..=1.0) of the hash space.
#[inline]
pub fn keep_fraction(hash: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 {
        return false;
    }
    (hash as f64) < fraction * (u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_covers_range_evenly() {
        let n = 7;
        let mut counts = vec![0usize; n];
        for i in 0..70_000u32 {
            counts[partition(hash(&i.to_le_bytes()), n)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven partition: {c}");
        }
    }

    #[test]
    fn keep_fraction_keeps_about_that_fraction() {
        let kept = (0..100_000u32)
            .filter(|i| keep_fraction(hash_seeded(&i.to_le_bytes(), 7), 0.25))
            .count();
        assert!((24_000..26_000).contains(&kept), "kept {kept}");
        assert!(keep_fraction(0, 1.0));
        assert!(!keep_fraction(0, 0.0));
    }
}
