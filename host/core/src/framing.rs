//! Framing: cutting a raw byte stream into records.
//!
//! Two framings are supported: newline-delimited records (JSON lines, CSV,
//! text) and varint length-delimited records (protobuf's `writeDelimitedTo`:
//! a base-128 varint byte length, then the message).
//!
//! A [`Framer`] looks at the unread bytes of a buffer and says what comes
//! next: a record, a corrupt stretch to dead-letter, a skippable blank, or
//! "need more bytes". It never loses bytes: every byte of the input ends up in
//! a record, in a corrupt stretch, or in a skipped blank line (which carries no
//! data). The caller owns the buffer and the I/O.

use std::fmt;
use std::ops::Range;

/// How records are delimited in a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One record per line (`\n`, with an optional `\r` before it).
    Lines,
    /// A varint byte length, then that many bytes.
    LengthDelimited,
}

impl Framing {
    /// The name used in job files.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::LengthDelimited => "length-delimited",
        }
    }
}

/// What is wrong with a stretch of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A record longer than the configured maximum.
    TooLarge {
        /// declared or observed length
        len: u64,
        /// configured maximum
        max: usize,
    },
    /// The input ended inside a record.
    Truncated {
        /// bytes the record needs
        need: u64,
        /// bytes that were there
        have: usize,
    },
    /// A length prefix that is not a valid varint.
    BadLength,
    /// Bytes after an unrecoverable error: length-delimited input cannot be
    /// re-synchronised, so the rest of the stream is dead-lettered in chunks.
    AfterCorruption,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "record of {len} bytes exceeds the maximum of {max} bytes")
            }
            FrameError::Truncated { need, have } => write!(
                f,
                "input ends inside a record: it needs {need} bytes, only {have} are there"
            ),
            FrameError::BadLength => write!(f, "length prefix is not a valid varint"),
            FrameError::AfterCorruption => write!(
                f,
                "bytes after an unrecoverable framing error (length-delimited input cannot resynchronise)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// The next thing in the buffer, as ranges relative to the slice given to
/// [`Framer::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A record: its payload, and how many bytes it consumed (payload plus
    /// delimiter or length prefix).
    Record {
        /// the payload's bytes
        payload: Range<usize>,
        /// bytes to advance past
        consumed: usize,
    },
    /// A stretch of corrupt input to dead-letter.
    Corrupt {
        /// the corrupt bytes (dead-lettered as the payload)
        payload: Range<usize>,
        /// bytes to advance past
        consumed: usize,
        /// what is wrong
        error: FrameError,
    },
    /// Bytes that carry no record (a blank line).
    Skip {
        /// bytes to advance past
        consumed: usize,
    },
    /// The buffer ends before the next record does; `at_least` is the total
    /// number of unread bytes needed to make progress, if known.
    NeedMore {
        /// unread bytes needed, if known
        at_least: Option<usize>,
    },
    /// Nothing left (only at end of input).
    End,
}

/// Cuts records out of a byte stream; one per stream (it keeps state across
/// calls, e.g. after an unrecoverable error).
#[derive(Debug, Clone)]
pub struct Framer {
    framing: Framing,
    max_record: usize,
    /// Lines: discarding the rest of an oversized line.
    discarding: bool,
    /// Length-delimited: a broken length prefix was seen; nothing after it
    /// can be trusted.
    poisoned: bool,
}

impl Framer {
    /// A framer for records of at most `max_record` bytes.
    pub fn new(framing: Framing, max_record: usize) -> Self {
        Framer {
            framing,
            max_record: max_record.max(1),
            discarding: false,
            poisoned: false,
        }
    }

    /// The largest record this framer accepts.
    pub fn max_record(&self) -> usize {
        self.max_record
    }

    /// Looks at the unread bytes `buf`; `eof` says whether more will come.
    pub fn next(&mut self, buf: &[u8], eof: bool) -> Step {
        if buf.is_empty() {
            return if eof {
                Step::End
            } else {
                Step::NeedMore { at_least: Some(1) }
            };
        }
        match self.framing {
            Framing::Lines => self.next_line(buf, eof),
            Framing::LengthDelimited => self.next_delimited(buf, eof),
        }
    }

    fn next_line(&mut self, buf: &[u8], eof: bool) -> Step {
        // memchr scans a word or a vector at a time; lines are ~100+ bytes.
        let newline = memchr::memchr(b'\n', buf);
        if self.discarding {
            // The head of this line was dead-lettered already; drop its tail
            // (the error named the line as oversized).
            return match newline {
                Some(i) => {
                    self.discarding = false;
                    Step::Corrupt {
                        payload: 0..i,
                        consumed: i + 1,
                        error: FrameError::TooLarge {
                            len: i as u64,
                            max: self.max_record,
                        },
                    }
                }
                None if eof => {
                    self.discarding = false;
                    Step::Corrupt {
                        payload: 0..buf.len(),
                        consumed: buf.len(),
                        error: FrameError::TooLarge {
                            len: buf.len() as u64,
                            max: self.max_record,
                        },
                    }
                }
                None if buf.len() >= self.max_record => Step::Corrupt {
                    payload: 0..buf.len(),
                    consumed: buf.len(),
                    error: FrameError::TooLarge {
                        len: buf.len() as u64,
                        max: self.max_record,
                    },
                },
                None => Step::NeedMore { at_least: None },
            };
        }
        let (line_end, consumed) = match newline {
            Some(i) => (i, i + 1),
            None if eof => (buf.len(), buf.len()),
            None if buf.len() > self.max_record => {
                self.discarding = true;
                return Step::Corrupt {
                    payload: 0..buf.len(),
                    consumed: buf.len(),
                    error: FrameError::TooLarge {
                        len: buf.len() as u64,
                        max: self.max_record,
                    },
                };
            }
            None => return Step::NeedMore { at_least: None },
        };
        let mut end = line_end;
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
        if buf[..end].iter().all(u8::is_ascii_whitespace) {
            return Step::Skip { consumed };
        }
        if end > self.max_record {
            return Step::Corrupt {
                payload: 0..end,
                consumed,
                error: FrameError::TooLarge {
                    len: end as u64,
                    max: self.max_record,
                },
            };
        }
        Step::Record {
            payload: 0..end,
            consumed,
        }
    }

    fn next_delimited(&mut self, buf: &[u8], eof: bool) -> Step {
        if self.poisoned {
            let n = buf.len().min(self.max_record);
            if n < buf.len() || eof || n == self.max_record {
                return Step::Corrupt {
                    payload: 0..n,
                    consumed: n,
                    error: FrameError::AfterCorruption,
                };
            }
            return Step::NeedMore { at_least: None };
        }
        let (len, prefix) = match read_varint(buf) {
            Varint::Value(len, prefix) => (len, prefix),
            Varint::Incomplete if eof => {
                return Step::Corrupt {
                    payload: 0..buf.len(),
                    consumed: buf.len(),
                    error: FrameError::Truncated {
                        need: 1,
                        have: buf.len(),
                    },
                };
            }
            Varint::Incomplete => {
                return Step::NeedMore {
                    at_least: Some(buf.len() + 1),
                };
            }
            Varint::Invalid => {
                self.poisoned = true;
                let n = buf.len().min(self.max_record);
                return Step::Corrupt {
                    payload: 0..n,
                    consumed: n,
                    error: FrameError::BadLength,
                };
            }
        };
        if len > self.max_record as u64 {
            // The length cannot be trusted, so neither can anything after it.
            self.poisoned = true;
            let n = buf.len().min(self.max_record);
            return Step::Corrupt {
                payload: 0..n,
                consumed: n,
                error: FrameError::TooLarge {
                    len,
                    max: self.max_record,
                },
            };
        }
        let len = len as usize;
        let total = prefix + len;
        if buf.len() >= total {
            return Step::Record {
                payload: prefix..total,
                consumed: total,
            };
        }
        if eof {
            return Step::Corrupt {
                payload: 0..buf.len(),
                consumed: buf.len(),
                error: FrameError::Truncated {
                    need: len as u64,
                    have: buf.len() - prefix,
                },
            };
        }
        Step::NeedMore {
            at_least: Some(total),
        }
    }
}

enum Varint {
    Value(u64, usize),
    Incomplete,
    Invalid,
}

fn read_varint(buf: &[u8]) -> Varint {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Varint::Invalid;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value(value, i + 1);
        }
    }
    if buf.len() >= 10 {
        Varint::Invalid
    } else {
        Varint::Incomplete
    }
}

/// Appends `len` as a varint to `out` (the writer's side of
/// [`Framing::LengthDelimited`]).
pub fn write_varint(out: &mut Vec<u8>, mut len: u64) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames a whole input fed in chunks of `chunk` bytes, the way the file
    /// source does, and returns records and corrupt stretches in order.
    fn frame(framing: Framing, input: &[u8], chunk: usize, max: usize) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut framer = Framer::new(framing, max);
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let eof = fed == input.len();
            match framer.next(&buf, eof) {
                Step::Record { payload, consumed } => {
                    out.push(Ok(buf[payload].to_vec()));
                    buf.drain(..consumed);
                }
                Step::Corrupt { consumed, error, .. } => {
                    out.push(Err(error));
                    buf.drain(..consumed);
                }
                Step::Skip { consumed } => {
                    buf.drain(..consumed);
                }
                Step::NeedMore { .. } => {
                    assert!(!eof, "NeedMore at end of input");
                    let n = chunk.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
                Step::End => break,
            }
        }
        out
    }

    #[test]
    fn lines_handle_crlf_blank_lines_and_missing_final_newline() {
        for chunk in [1, 3, 1024] {
            let out = frame(Framing::Lines, b"a\r\n\n  \nbb\nccc", chunk, 100);
            assert_eq!(
                out,
                vec![Ok(b"a".to_vec()), Ok(b"bb".to_vec()), Ok(b"ccc".to_vec())]
            );
        }
    }

    #[test]
    fn oversized_line_is_dead_lettered_and_the_next_line_survives() {
        for chunk in [2, 7, 1024] {
            let out = frame(Framing::Lines, b"ok\n0123456789abcdef\nafter\n", chunk, 8);
            assert_eq!(out.first(), Some(&Ok(b"ok".to_vec())), "chunk {chunk}");
            assert_eq!(out.last(), Some(&Ok(b"after".to_vec())), "chunk {chunk}");
            assert!(
                out[1..out.len() - 1]
                    .iter()
                    .all(|r| matches!(r, Err(FrameError::TooLarge { .. })))
            );
        }
    }

    fn delimited(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            write_varint(&mut out, r.len() as u64);
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn length_delimited_round_trips_in_any_chunking() {
        let big = vec![7u8; 300]; // two-byte varint
        let input = delimited(&[b"x", b"", &big, b"tail"]);
        for chunk in [1, 2, 5, 4096] {
            let out = frame(Framing::LengthDelimited, &input, chunk, 1000);
            assert_eq!(
                out,
                vec![
                    Ok(b"x".to_vec()),
                    Ok(vec![]),
                    Ok(big.clone()),
                    Ok(b"tail".to_vec())
                ]
            );
        }
    }

    #[test]
    fn truncated_final_record_is_reported() {
        let mut input = delimited(&[b"good"]);
        input.extend_from_slice(&[10, 1, 2, 3]); // claims 10 bytes, has 3
        let out = frame(Framing::LengthDelimited, &input, 3, 1000);
        assert_eq!(out[0], Ok(b"good".to_vec()));
        assert_eq!(out[1], Err(FrameError::Truncated { need: 10, have: 3 }));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn absurd_length_poisons_the_rest_without_losing_bytes() {
        let mut input = delimited(&[b"good"]);
        input.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // ~4 GiB
        input.extend_from_slice(&[1u8; 25]);
        let out = frame(Framing::LengthDelimited, &input, 4, 10);
        assert_eq!(out[0], Ok(b"good".to_vec()));
        assert!(matches!(out[1], Err(FrameError::TooLarge { .. })));
        assert!(out[2..].iter().all(|r| *r == Err(FrameError::AfterCorruption)));
    }

    #[test]
    fn varint_longer_than_ten_bytes_is_invalid() {
        let input = [0xffu8; 12];
        let out = frame(Framing::LengthDelimited, &input, 12, 100);
        assert_eq!(out[0], Err(FrameError::BadLength));
    }
}
