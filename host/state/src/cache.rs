//! The bounded map under the keyed-state cache: CLOCK (second-chance)
//! eviction over entries kept in one vector, found through a hash table of
//! slot numbers.
//!
//! Why not an LRU list: every hit of an LRU moves the entry to the head of a
//! doubly linked list, which touches the entry's two neighbours and the old
//! head, four cache lines scattered over the heap per lookup. With hundreds
//! of thousands of keys those are cache misses, and they were the largest
//! single cost of the keyed stage. A CLOCK hit only sets a flag in the entry
//! it already reads; eviction sweeps the vector in order. CLOCK approximates
//! LRU closely enough for a cache whose misses cost one RocksDB read.

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use crate::small_key::SmallKey as Key;

struct Slot<V> {
    hash: u64,
    key: Key,
    value: V,
    /// Touched since the clock hand last passed.
    referenced: bool,
}

/// What [`ClockCache::get_or_load`] found or loaded.
pub(crate) struct Loaded<'a, V> {
    pub value: &'a mut V,
    /// Its slot number.
    pub slot: u32,
    /// The entry evicted to make room, with its key.
    pub evicted: Option<(Vec<u8>, V)>,
    /// Whether it was cached already.
    pub hit: bool,
}

/// A map of at most `capacity` entries that evicts one it has not seen used
/// recently when a new one would exceed that.
pub(crate) struct ClockCache<V> {
    slots: Vec<Slot<V>>,
    index: HashTable<u32>,
    hasher: RandomState,
    hand: usize,
    capacity: usize,
}

impl<V> ClockCache<V> {
    /// An empty cache of at most `capacity` (at least 1) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        ClockCache {
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::default(),
            hand: 0,
            // Slot numbers are u32.
            capacity: capacity.clamp(1, u32::MAX as usize),
        }
    }

    #[cfg(test)]
    fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| slots[i as usize].key.as_slice() == key)
            .map(|&i| i as usize)
    }

    /// The entry of `key`, marked as used.
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = self.find(key)?;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        Some(&mut slot.value)
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key` is cached (without marking it used).
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// The entry of `key`, loaded with `load` and inserted when absent.
    /// Inserting into a full cache evicts another entry, returned beside
    /// the entry (never the one asked for).
    ///
    /// `hint` is the slot the caller last found `key` in, if any: when that
    /// slot still holds `key`, it is used without hashing the key and
    /// probing the index (a slot may have been reused since: the key check
    /// is what makes a stale hint harmless).
    pub(crate) fn get_or_load<E>(
        &mut self,
        hint: Option<u32>,
        key: &[u8],
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Loaded<'_, V>, E> {
        if let Some(h) = hint
            && self
                .slots
                .get(h as usize)
                .is_some_and(|s| s.key.as_slice() == key)
        {
            let slot = &mut self.slots[h as usize];
            slot.referenced = true;
            return Ok(Loaded {
                value: &mut slot.value,
                slot: h,
                evicted: None,
                hit: true,
            });
        }
        let hash = self.hasher.hash_one(key);
        if let Some(i) = self.find_hashed(hash, key) {
            let slot = &mut self.slots[i];
            slot.referenced = true;
            return Ok(Loaded {
                value: &mut slot.value,
                slot: i as u32,
                evicted: None,
                hit: true,
            });
        }
        let value = load()?;
        let (i, evicted) = self.insert_new(hash, key, value);
        Ok(Loaded {
            value: &mut self.slots[i].value,
            slot: i as u32,
            evicted,
            hit: false,
        })
    }

    /// The entry in slot `i` and its key, without marking it used. Slot
    /// numbers are stable until the entry is evicted or removed.
    pub(crate) fn slot_mut(&mut self, i: u32) -> Option<(&[u8], &mut V)> {
        let slot = self.slots.get_mut(i as usize)?;
        Some((slot.key.as_slice(), &mut slot.value))
    }

    /// Inserts an entry known to be absent; returns its slot and what it
    /// evicted.
    fn insert_new(&mut self, hash: u64, key: &[u8], value: V) -> (usize, Option<(Vec<u8>, V)>) {
        let slot = Slot {
            hash,
            key: Key::new(key),
            value,
            // A new entry earns its second chance by being used again, so
            // a run of keys seen once does not push out the hot ones.
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            let i = self.slots.len();
            self.slots.push(slot);
            let slots = &self.slots;
            self.index
                .insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
            return (i, None);
        }
        // Sweep: give every used entry a second chance, take the first
        // unused one. Ends within two turns, as the sweep clears the flags.
        let n = self.slots.len();
        let victim = loop {
            let at = self.hand;
            self.hand = (at + 1) % n;
            let s = &mut self.slots[at];
            if s.referenced {
                s.referenced = false;
            } else {
                break at;
            }
        };
        let old_hash = self.slots[victim].hash;
        if let Ok(e) = self.index.find_entry(old_hash, |&j| j as usize == victim) {
            e.remove();
        }
        let old = std::mem::replace(&mut self.slots[victim], slot);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, victim as u32, |&j| slots[j as usize].hash);
        (victim, Some((old.key.as_slice().to_vec(), old.value)))
    }

    /// Removes the entry of `key`; the last slot's entry moves into the
    /// freed slot.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let i = match self
            .index
            .find_entry(hash, |&i| slots[i as usize].key.as_slice() == key)
        {
            Ok(e) => e.remove().0 as usize,
            Err(_) => return None,
        };
        Some(self.vacate(i))
    }

    /// Removes the entry in slot `i` (the slot [`ClockCache::get_or_load`]
    /// just gave): found in the index by the slot's stored hash and number,
    /// without hashing or comparing its key. The last slot's entry moves
    /// into the freed slot.
    pub(crate) fn remove_slot(&mut self, i: u32) -> Option<V> {
        let i = i as usize;
        let hash = self.slots.get(i)?.hash;
        match self.index.find_entry(hash, |&j| j as usize == i) {
            Ok(e) => {
                e.remove();
            }
            Err(_) => return None,
        }
        Some(self.vacate(i))
    }

    /// Takes the entry of slot `i`, already out of the index, out of the
    /// slots.
    fn vacate(&mut self, i: usize) -> V {
        let last = self.slots.len() - 1;
        if i != last {
            // The last slot moves into the hole: repoint its index entry.
            let moved = self.slots[last].hash;
            if let Some(j) = self.index.find_mut(moved, |&j| j as usize == last) {
                *j = i as u32;
            }
        }
        let removed = self.slots.swap_remove(i);
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
        removed.value
    }

    /// Inserts or replaces the entry of `key`; returns what it evicted.
    #[cfg(test)]
    pub(crate) fn put(&mut self, key: Vec<u8>, value: V) -> Option<(Vec<u8>, V)> {
        let hash = self.hasher.hash_one(&key[..]);
        if let Some(i) = self.find_hashed(hash, &key) {
            let slot = &mut self.slots[i];
            slot.value = value;
            slot.referenced = true;
            return None;
        }
        self.insert_new(hash, &key, value).1
    }

    /// Every entry, in no particular order (for checks in debug builds).
    #[cfg(debug_assertions)]
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&[u8], &mut V)> {
        self.slots.iter_mut().map(|s| (s.key.as_slice(), &mut s.value))
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::ClockCache;
    use std::collections::HashMap;

    fn key(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn holds_at_most_capacity_and_returns_what_it_evicts() {
        let mut c = ClockCache::new(3);
        let mut evicted = Vec::new();
        for i in 0..10u32 {
            if let Some((k, v)) = c.put(key(i), i) {
                assert_eq!(k, key(v), "an evicted key comes with its own value");
                evicted.push(v);
            }
            assert!(c.len() <= 3);
        }
        assert_eq!(evicted.len(), 7);
        // Nothing is both cached and evicted, nothing lost.
        let cached: Vec<u32> = (0..10).filter(|&i| c.contains(&key(i))).collect();
        assert_eq!(cached.len(), 3);
        for i in 0..10 {
            assert!(cached.contains(&i) ^ evicted.contains(&i), "key {i}");
        }
    }

    #[test]
    fn long_keys_work_like_short_ones() {
        let mut c = ClockCache::new(8);
        let long: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 200]).collect();
        for (i, k) in long.iter().enumerate() {
            c.put(k.clone(), i);
        }
        c.put(vec![9; 46], 9);
        c.put(vec![9; 47], 10);
        for (i, k) in long.iter().enumerate() {
            assert_eq!(c.get_mut(k).copied(), Some(i));
        }
        assert_eq!(c.get_mut(&[9; 46]).copied(), Some(9));
        assert_eq!(c.get_mut(&[9; 47]).copied(), Some(10));
        assert!(c.get_mut(&[0; 199]).is_none());
    }

    #[test]
    fn an_entry_in_use_survives_a_sweep() {
        let mut c = ClockCache::new(4);
        for i in 0..4u32 {
            c.put(key(i), i);
        }
        // Key 0 is used before each new key comes in: it stays while the
        // others go.
        for i in 100..104u32 {
            assert!(c.get_mut(&key(0)).is_some());
            c.put(key(i), i);
        }
        assert!(c.contains(&key(0)));
        assert!(!c.contains(&key(1)));
    }

    #[test]
    fn agrees_with_a_map_plus_evictions() {
        // Random operations; every value ever written is either cached or
        // was handed back by an eviction or a removal, and the latest one
        // wins. The slot index stays right through swaps and sweeps.
        let mut c = ClockCache::new(17);
        let mut oracle: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut cached = std::collections::HashSet::new();
        let mut slot_of: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 64) as u32);
            if x.is_multiple_of(7) {
                // By key, or by the slot a lookup found it in.
                let removed = if x.is_multiple_of(2) {
                    c.remove(&k)
                } else {
                    c.find(&k).and_then(|i| c.remove_slot(i as u32))
                };
                assert_eq!(removed.is_some(), cached.remove(&k));
                if let Some(v) = removed {
                    assert_eq!(oracle.get(&k), Some(&v));
                }
                oracle.remove(&k);
                continue;
            }
            let evicted = if x.is_multiple_of(3) {
                c.put(k.clone(), step)
            } else {
                // A hint that may be right, stale (the slot was reused or
                // emptied since) or out of range.
                let hint = match x % 5 {
                    0 => None,
                    1 => Some((x >> 8) as u32 % 20),
                    _ => slot_of.get(&k).copied(),
                };
                let got = c
                    .get_or_load(hint, &k, || Ok::<_, ()>(oracle.get(&k).copied().unwrap_or(0)))
                    .unwrap();
                assert_eq!(got.hit, cached.contains(&k));
                assert_eq!(*got.value, oracle.get(&k).copied().unwrap_or(0));
                *got.value = step;
                let slot = got.slot;
                let evicted = got.evicted;
                slot_of.insert(k.clone(), slot);
                assert_eq!(c.slot_mut(slot).map(|(sk, _)| sk.to_vec()), Some(k.clone()));
                evicted
            };
            cached.insert(k.clone());
            oracle.insert(k, step);
            if let Some((ek, ev)) = evicted {
                assert_eq!(oracle.get(&ek), Some(&ev));
                assert!(cached.remove(&ek));
            }
            assert_eq!(c.len(), cached.len());
        }
        for (k, v) in c.iter_mut() {
            assert_eq!(oracle.get(k), Some(&*v));
        }
    }
}
