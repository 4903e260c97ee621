//! Encodings of state keys, timer keys and state values in RocksDB.
//!
//! Values start with their expiry (i64 little endian; `i64::MAX` = never),
//! then a kind byte and the data, so the TTL compaction filter can judge an
//! entry without decoding it.

use std::collections::BTreeMap;

use crate::small_key::SmallKey;

/// A piece of state, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Value state (inline when short: see `small_key`).
    Value(SmallKey),
    /// List state.
    List(Vec<Vec<u8>>),
    /// Map state.
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// Never expires.
pub const NO_EXPIRY: i64 = i64::MAX;

/// `[key group][operator][state][key]`.
pub fn state_key(out: &mut Vec<u8>, group: u16, op: u16, state: u16, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(&op.to_be_bytes());
    out.extend_from_slice(&state.to_be_bytes());
    out.extend_from_slice(key);
}

/// Splits a state key into (group, operator, state, key).
pub fn split_state_key(k: &[u8]) -> Option<(u16, u16, u16, &[u8])> {
    if k.len() < 6 {
        return None;
    }
    Some((
        u16::from_be_bytes([k[0], k[1]]),
        u16::from_be_bytes([k[2], k[3]]),
        u16::from_be_bytes([k[4], k[5]]),
        &k[6..],
    ))
}

/// Time as big-endian bytes that sort like the signed value.
fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    (u64::from_be_bytes(a) ^ (1 << 63)) as i64
}

/// `[key group][operator][domain][time][key]`.
pub fn timer_key(group: u16, op: u16, domain: u8, time: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + key.len());
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(&op.to_be_bytes());
    out.push(domain);
    out.extend_from_slice(&ordered(time));
    out.extend_from_slice(key);
    out
}

/// Splits a timer key into (group, operator, domain, time, key).
pub fn split_timer_key(k: &[u8]) -> Option<(u16, u16, u8, i64, &[u8])> {
    if k.len() < 13 {
        return None;
    }
    Some((
        u16::from_be_bytes([k[0], k[1]]),
        u16::from_be_bytes([k[2], k[3]]),
        k[4],
        unordered(&k[5..13]),
        &k[13..],
    ))
}

/// The expiry of an encoded value.
pub fn expiry_of(v: &[u8]) -> Option<i64> {
    let b: [u8; 8] = v.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a value with its expiry.
pub fn encode(data: &Data, expiry: i64) -> Vec<u8> {
    // Sized up front: growing the buffer as it fills cost more than the
    // copying when a barrier encodes every dirty entry.
    let size = 9 + match data {
        Data::Value(v) => v.len(),
        Data::List(items) => 4 + items.iter().map(|i| 4 + i.len()).sum::<usize>(),
        Data::Map(m) => 4 + m.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>(),
    };
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&expiry.to_le_bytes());
    match data {
        Data::Value(v) => {
            out.push(0);
            out.extend_from_slice(v);
        }
        Data::List(items) => {
            out.push(1);
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for i in items {
                put_bytes(&mut out, i);
            }
        }
        Data::Map(m) => {
            out.push(2);
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            for (k, v) in m {
                put_bytes(&mut out, k);
                put_bytes(&mut out, v);
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.0.get(..4)?.try_into().ok()?;
        self.0 = &self.0[4..];
        Some(u32::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }
}

/// Decodes a value and its expiry; `None` if the bytes are not a value
/// written by [`encode`].
pub fn decode(v: &[u8]) -> Option<(Data, i64)> {
    let expiry = expiry_of(v)?;
    let kind = *v.get(8)?;
    let mut r = Reader(&v[9..]);
    let data = match kind {
        0 => Data::Value(SmallKey::new(&v[9..])),
        1 => {
            let n = r.u32()?;
            let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                items.push(r.bytes()?.to_vec());
            }
            Data::List(items)
        }
        2 => {
            let n = r.u32()?;
            let mut m = BTreeMap::new();
            for _ in 0..n {
                let k = r.bytes()?.to_vec();
                let v = r.bytes()?.to_vec();
                m.insert(k, v);
            }
            Data::Map(m)
        }
        _ => return None,
    };
    Some((data, expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(b"k".to_vec(), b"v".to_vec());
        m.insert(vec![], vec![0, 1]);
        for (d, e) in [
            (Data::Value(SmallKey::new(b"hello")), 5),
            (Data::Value(SmallKey::new(&[7; 100])), 5),
            (Data::List(vec![vec![], b"x".to_vec()]), NO_EXPIRY),
            (Data::Map(m), -3),
        ] {
            assert_eq!(decode(&encode(&d, e)), Some((d, e)));
        }
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn timer_keys_sort_by_time_including_negative_times() {
        let a = timer_key(1, 2, 0, -5, b"k");
        let b = timer_key(1, 2, 0, 3, b"a");
        assert!(a < b);
        assert_eq!(split_timer_key(&a), Some((1, 2, 0, -5, &b"k"[..])));
    }
}
