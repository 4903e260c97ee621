//! Per-record errors returned by user functions.

use std::fmt;

/// What kind of failure a record had; the host counts dead letters by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The payload is not valid in its format.
    Decode,
    /// The record decoded but breaks its rules.
    Invalid,
    /// The function could not handle the record.
    Failed,
}

/// A record's failure; the record goes to the dead-letter output with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in words.
    pub message: String,
}

impl Error {
    /// The payload is not valid in its format.
    pub fn decode(message: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Decode,
            message: message.to_string(),
        }
    }

    /// The record breaks its rules (missing field, wrong type, bad value).
    pub fn invalid(message: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Invalid,
            message: message.to_string(),
        }
    }

    /// The function could not handle the record.
    pub fn failed(message: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Failed,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// JSON syntax errors and truncation are `decode` failures; well-formed JSON
/// with missing or mistyped fields is `invalid`.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => Error::invalid(e),
            _ => Error::decode(e),
        }
    }
}
