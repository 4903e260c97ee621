//! Dead letters: records the job could not process, with where they came
//! from and why, so that nothing is lost and nothing stops the job.

use std::fmt;
use std::sync::Arc;

use crate::json::{write_base64, write_int, write_str};

/// Why a record was dead-lettered. Each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The byte stream could not be cut into records (truncated, oversized).
    Framing,
    /// The deserializer could not decode the payload.
    Decode,
    /// The record decoded but broke its rules (missing or mistyped field).
    Invalid,
    /// A user function reported that it failed on this record.
    Failed,
    /// A guest trapped (panicked, hit `unreachable`, ...) on this record.
    Trap,
    /// A guest ran past its execution deadline on this record.
    Timeout,
    /// A guest hit its memory limit on this record.
    Memory,
    /// A guest returned a row that does not match its declared schema.
    BadRow,
    /// The record has no event time.
    NoEventTime,
    /// The record lacks a field of its key.
    NoKey,
}

impl Reason {
    /// Every reason, for exporting zero-valued counters.
    pub const ALL: [Reason; 10] = [
        Reason::Framing,
        Reason::Decode,
        Reason::Invalid,
        Reason::Failed,
        Reason::Trap,
        Reason::Timeout,
        Reason::Memory,
        Reason::BadRow,
        Reason::NoEventTime,
        Reason::NoKey,
    ];

    /// The reason's name in dead-letter rows and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Framing => "framing",
            Reason::Decode => "decode",
            Reason::Invalid => "invalid",
            Reason::Failed => "failed",
            Reason::Trap => "trap",
            Reason::Timeout => "timeout",
            Reason::Memory => "memory",
            Reason::BadRow => "bad-row",
            Reason::NoEventTime => "no-event-time",
            Reason::NoKey => "no-key",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// A byte offset in a file.
    File {
        /// the file's path
        path: Arc<str>,
        /// byte offset of the record's first byte (its length prefix, for
        /// length-delimited files)
        offset: u64,
    },
    /// A message in a Kafka partition.
    Kafka {
        /// topic
        topic: Arc<str>,
        /// partition
        partition: i32,
        /// message offset
        offset: i64,
    },
}

/// A record the job could not process.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The job's name for the source.
    pub source: Arc<str>,
    /// Where in the source.
    pub position: Position,
    /// Why.
    pub reason: Reason,
    /// The stage that gave up on it (`framing`, `deserializer`, a filter's
    /// name, ...).
    pub stage: Arc<str>,
    /// The error in words.
    pub error: String,
    /// The raw payload as read from the source.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// Appends the dead letter as one JSON object (no newline).
    ///
    /// The payload is written as text in `payload` when it is UTF-8, else as
    /// base64 in `payload_base64`, so binary inputs survive intact.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"source\":");
        write_str(out, self.source.as_bytes());
        match &self.position {
            Position::File { path, offset } => {
                out.extend_from_slice(b",\"file\":");
                write_str(out, path.as_bytes());
                out.extend_from_slice(b",\"offset\":");
                write_int(out, *offset as i64);
            }
            Position::Kafka {
                topic,
                partition,
                offset,
            } => {
                out.extend_from_slice(b",\"topic\":");
                write_str(out, topic.as_bytes());
                out.extend_from_slice(b",\"partition\":");
                write_int(out, i64::from(*partition));
                out.extend_from_slice(b",\"offset\":");
                write_int(out, *offset);
            }
        }
        out.extend_from_slice(b",\"reason\":");
        write_str(out, self.reason.name().as_bytes());
        out.extend_from_slice(b",\"stage\":");
        write_str(out, self.stage.as_bytes());
        out.extend_from_slice(b",\"error\":");
        write_str(out, self.error.as_bytes());
        match std::str::from_utf8(&self.payload) {
            Ok(text) => {
                out.extend_from_slice(b",\"payload\":");
                write_str(out, text.as_bytes());
            }
            Err(_) => {
                out.extend_from_slice(b",\"payload_base64\":");
                write_base64(out, &self.payload);
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_survive_as_base64() {
        let dl = DeadLetter {
            source: "events".into(),
            position: Position::File {
                path: "in/a.bin".into(),
                offset: 42,
            },
            reason: Reason::Decode,
            stage: "deserializer".into(),
            error: "bad \"thing\"".into(),
            payload: vec![0xff, 0x00, 0x10],
        };
        let mut out = Vec::new();
        dl.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["offset"], 42);
        assert_eq!(v["reason"], "decode");
        assert_eq!(v["error"], "bad \"thing\"");
        assert_eq!(v["payload_base64"], "/wAQ");
        assert!(v.get("payload").is_none());
    }
}
