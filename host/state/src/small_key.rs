//! Byte strings kept inline when short: the keys of the state cache's slots
//! and of timers, and the values of value state.
//!
//! Keys on the per-record path are short (a user id, a 6-byte prefix and
//! an encoded key: 20 to 40 bytes). Kept inline, creating one costs no
//! allocation and comparing one reads memory the caller already loaded,
//! instead of following a pointer to a separate heap block. Values of a
//! feature job are short too (a session's five numbers, a window's
//! accumulators): inline in the cache's slot, reading one costs no cache
//! miss beyond the slot's own.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Byte strings up to this long live inside the value (48 bytes in all
/// with the length and the tag).
pub const INLINE: usize = 46;

/// A byte string, inline when at most [`INLINE`] bytes long.
#[derive(Clone)]
pub enum SmallKey {
    /// Short: the bytes in place.
    Inline {
        /// Bytes used.
        len: u8,
        /// The bytes, `len` of them used.
        bytes: [u8; INLINE],
    },
    /// Long: on the heap.
    Heap(Vec<u8>),
}

impl SmallKey {
    /// A copy of `key`.
    pub fn new(key: &[u8]) -> SmallKey {
        if key.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            SmallKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            SmallKey::Heap(key.to_vec())
        }
    }

    /// `bytes`, moved to the heap variant when too long to be inline.
    pub fn from_vec(bytes: Vec<u8>) -> SmallKey {
        if bytes.len() <= INLINE {
            SmallKey::new(&bytes)
        } else {
            SmallKey::Heap(bytes)
        }
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> SmallKey {
        if len <= INLINE {
            SmallKey::Inline {
                len: len as u8,
                bytes: [0; INLINE],
            }
        } else {
            SmallKey::Heap(vec![0; len])
        }
    }

    /// The bytes, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            SmallKey::Inline { len, bytes } => &mut bytes[..*len as usize],
            SmallKey::Heap(b) => b,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            SmallKey::Inline { len, bytes } => &bytes[..*len as usize],
            SmallKey::Heap(b) => b,
        }
    }
}

impl Deref for SmallKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SmallKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SmallKey {}

impl PartialOrd for SmallKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, like `[u8]`'s (timers of one time fire in key order).
impl Ord for SmallKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for SmallKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for SmallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::{INLINE, SmallKey};

    #[test]
    fn every_way_of_making_one_holds_the_same_bytes() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 200] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let (a, b) = (SmallKey::new(&bytes), SmallKey::from_vec(bytes.clone()));
            assert_eq!(a.as_slice(), bytes.as_slice());
            assert_eq!(b.as_slice(), bytes.as_slice());
            assert_eq!(matches!(b, SmallKey::Inline { .. }), len <= INLINE);
            let mut z = SmallKey::zeroed(len);
            assert_eq!(z.as_slice(), vec![0; len].as_slice());
            z.as_mut_slice().copy_from_slice(&bytes);
            assert_eq!(z, a);
        }
    }

    #[test]
    fn inline_and_heap_keys_compare_as_their_bytes() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"ab".to_vec(),
            vec![7; INLINE],
            vec![7; INLINE + 1],
            vec![8; 300],
            vec![0; INLINE],
        ];
        for a in &keys {
            let ka = SmallKey::new(a);
            assert_eq!(ka.as_slice(), a.as_slice());
            assert_eq!(matches!(ka, SmallKey::Inline { .. }), a.len() <= INLINE);
            for b in &keys {
                let kb = SmallKey::new(b);
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
            }
        }
    }
}
