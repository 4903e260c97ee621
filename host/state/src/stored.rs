//! A filter of the state keys a keyed worker has put into RocksDB, so that a
//! cache miss on a key that was never stored costs no RocksDB read.
//!
//! Why: most misses of a feature job are keys that do not exist yet (a
//! user's next session, a new window), and a RocksDB `get` for an absent
//! key costs about a microsecond even when the database is empty (taking a
//! reference to the current version, searching the memtable, asking every
//! SST file's filter). That was 15% of the keyed workers' time on the
//! user-features job.
//!
//! The filter is exact in one direction: a key it has never seen is not in
//! RocksDB, provided the worker's share of the database was empty when the
//! worker started and no one else writes its keys (true of keyed workers:
//! each owns its key groups). A key it has seen may or may not be there
//! (deleted since, or a false positive): then RocksDB is asked. Hence it is
//! only used for a database that held no state when it was opened; a
//! restored one is always asked.
//!
//! It is a blocked Bloom filter (each key sets bits in one 64-byte block:
//! one cache miss per lookup) that grows by layers: when the newest layer
//! holds as many keys as it was sized for, a layer twice as large is added.
//! The false-positive rate stays around 1–2% per layer; memory is about
//! 1.3 bytes per key ever stored.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// Bits per key a layer is sized for.
const BITS_PER_KEY: usize = 10;
/// Bits set (and tested) per key within its block.
const PROBES: u32 = 6;
/// Keys the first layer is sized for.
const FIRST_LAYER_KEYS: usize = 1 << 16;

/// One Bloom filter of 512-bit blocks.
struct Layer {
    blocks: Vec<[u64; 8]>,
    keys: usize,
    capacity: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(512).max(1);
        Layer {
            blocks: vec![[0; 8]; blocks],
            keys: 0,
            capacity,
        }
    }

    /// The block of `hash` among `blocks` and the bits in it (word, mask).
    fn probe(hash: u64, blocks: usize) -> (usize, impl Iterator<Item = (usize, u64)>) {
        // The high half picks the block (multiply-shift, no division), the
        // low half is stepped through to pick the bits (double hashing).
        let block = ((hash >> 32) * blocks as u64) >> 32;
        let (mut h, step) = (hash as u32, (hash >> 17) as u32 | 1);
        let bits = (0..PROBES).map(move |_| {
            h = h.wrapping_add(step);
            let bit = (h >> 23) as usize; // 9 bits: 0..512
            (bit / 64, 1u64 << (bit % 64))
        });
        (block as usize, bits)
    }

    fn insert(&mut self, hash: u64) {
        let (b, bits) = Self::probe(hash, self.blocks.len());
        let block = &mut self.blocks[b];
        for (word, mask) in bits {
            block[word] |= mask;
        }
        self.keys += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (b, mut bits) = Self::probe(hash, self.blocks.len());
        let block = &self.blocks[b];
        bits.all(|(word, mask)| block[word] & mask != 0)
    }
}

/// The keys put into RocksDB (see the module docs).
pub(crate) struct StoredKeys {
    layers: Vec<Layer>,
    hasher: FixedState,
}

impl StoredKeys {
    /// An empty filter: no key stored.
    pub(crate) fn new() -> Self {
        StoredKeys {
            layers: vec![Layer::new(FIRST_LAYER_KEYS)],
            // A fixed seed: nothing here is exposed to an attacker beyond
            // costing an extra RocksDB read on a collision.
            hasher: FixedState::with_seed(0x5741_4645_525f_4b45),
        }
    }

    /// Records that `key` is (about to be) in RocksDB.
    pub(crate) fn insert(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if self.layers.iter().any(|l| l.may_contain(hash)) {
            return;
        }
        let last = self.layers.len() - 1;
        if self.layers[last].keys >= self.layers[last].capacity {
            let capacity = self.layers[last].capacity * 2;
            self.layers.push(Layer::new(capacity));
        }
        if let Some(l) = self.layers.last_mut() {
            l.insert(hash);
        }
    }

    /// Whether RocksDB may hold `key`; `false` means it certainly does not.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        if self.layers.iter().all(|l| l.keys == 0) {
            // Nothing stored yet (a job whose state fits its cache, before
            // its first checkpoint): no hashing, no probe.
            return false;
        }
        let hash = self.hasher.hash_one(key);
        // Newest first: the layers of keys stored long ago are the least
        // likely to be asked about again.
        self.layers.iter().rev().any(|l| l.may_contain(hash))
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.blocks.len() * 64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        let mut k = b"key-".to_vec();
        k.extend_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn never_forgets_a_stored_key_as_it_grows() {
        let mut f = StoredKeys::new();
        let n = 300_000;
        for i in 0..n {
            f.insert(&key(i));
            // Checked as it goes too: growing must not lose earlier keys.
            if i % 9_973 == 0 {
                assert!((0..=i).step_by(101).all(|j| f.may_contain(&key(j))));
            }
        }
        assert!((0..n).all(|i| f.may_contain(&key(i))));
        assert!(f.layers.len() >= 3, "{} layers", f.layers.len());
        // About 1.3 bytes a key, counting the layers' slack.
        assert!(f.bytes() < n as usize * 4, "{} bytes", f.bytes());
    }

    #[test]
    fn rarely_claims_a_key_never_stored() {
        let mut f = StoredKeys::new();
        for i in 0..200_000 {
            f.insert(&key(i));
        }
        let tries = 200_000;
        let false_positives = (1_000_000..1_000_000 + tries)
            .filter(|&i| f.may_contain(&key(i)))
            .count();
        // Each of the (here three) layers errs on ~1–2% of keys.
        let rate = false_positives as f64 / tries as f64;
        assert!(rate < 0.06, "false-positive rate {rate}");
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let f = StoredKeys::new();
        assert!(!f.may_contain(b""));
        assert!(!f.may_contain(b"anything"));
    }
}
