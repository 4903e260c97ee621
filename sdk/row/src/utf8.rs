//! UTF-8 checks that are quick on ASCII, the usual text of a record.
//!
//! Why not only `std::str::from_utf8`: its ASCII fast path steps a machine
//! word at a time, 4 bytes on `wasm32`, and in a guest every loop iteration
//! also pays wasmtime's epoch-deadline check. Checking 16 bytes per
//! iteration first made the checks (the JSON deserializer's payload check,
//! a processor's string reads) a fraction of their cost in Wasm; text that
//! is not all ASCII falls back to the standard check.

use std::str::Utf8Error;

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// `bytes` as a `str`, or why it is not UTF-8 (as `std::str::from_utf8`).
#[inline]
pub fn str_from_utf8(bytes: &[u8]) -> Result<&str, Utf8Error> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        #[allow(unsafe_code)]
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
}

/// Whether every byte of `bytes` is ASCII.
#[inline]
pub fn is_ascii(bytes: &[u8]) -> bool {
    if bytes.len() < 16 {
        return bytes.is_ascii();
    }
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        if (word(&c[..8]) | word(&c[8..])) & HIGH_BITS != 0 {
            return false;
        }
    }
    // The last 16 bytes, overlapping what was checked: no loop for the tail.
    let tail = &bytes[bytes.len() - 16..];
    (word(&tail[..8]) | word(&tail[8..])) & HIGH_BITS == 0
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_std_at_every_length_and_position() {
        let samples: [&[u8]; 4] = [b"\xc3\xa9", b"\xff", b"\xe2\x82", b"\xf0\x9f\x98\x80"];
        for len in 0..70 {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(str_from_utf8(&ascii).ok(), std::str::from_utf8(&ascii).ok());
            assert!(is_ascii(&ascii));
            for at in 0..=len {
                for s in samples {
                    let mut b = ascii.clone();
                    b.splice(at..at, s.iter().copied());
                    assert!(!is_ascii(&b), "len {len} at {at}");
                    assert_eq!(
                        str_from_utf8(&b).map_err(|e| e.valid_up_to()),
                        std::str::from_utf8(&b).map_err(|e| e.valid_up_to()),
                        "len {len} at {at} {s:?}"
                    );
                }
            }
        }
    }
}
