//! wafer's connectors: where records come from and where results go.
//!
//! [`file_source`] reads raw records from files with a framing and resumable
//! positions; [`kafka_source`] reads raw message values of topics with
//! positions per partition kept by the host, fetched by `kafka_fetch` (one
//! thread per partition leader; the wire format in `kafka_wire`) or, with
//! TLS or SASL, by librdkafka through `kafka_queue`; [`file_sink`] writes JSON lines
//! per output and [`kafka_sink`] produces them to topics, keyed by entity,
//! exactly once with checkpoints through [`kafka_txn`]'s two-phase commit.
//! Connectors move bytes only; decoding happens in deserializer components
//! after the shuffle.

pub mod file_sink;
pub mod file_source;
mod kafka_fetch;
mod kafka_queue;
pub mod kafka_sink;
pub mod kafka_source;
pub mod kafka_txn;
mod kafka_wire;
mod output;

pub use output::{EpochGate, Event, OutputWriter};

/// An output's part of a checkpoint: every line before barrier `barrier`
/// is written (and, for a file, on disk), none after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkCut {
    /// The output.
    pub output: String,
    /// The checkpoint.
    pub barrier: u64,
    /// A file output's length at the cut.
    pub file_length: Option<u64>,
}

use std::path::PathBuf;

/// A source that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path is neither a file, a directory nor a glob.
    #[error("input `{pattern}` does not exist")]
    NotFound {
        /// as configured
        pattern: String,
    },
    /// A directory or glob without files.
    #[error("no files match `{pattern}`")]
    NoFiles {
        /// as configured
        pattern: String,
    },
    /// A malformed glob.
    #[error("bad glob `{pattern}`: {message}")]
    Pattern {
        /// as configured
        pattern: String,
        /// glob's message
        message: String,
    },
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
}

/// A sink that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
    /// Kafka refused or failed to take an output's records.
    #[error("kafka sink of output `{output}`: {message}")]
    Kafka {
        /// the output
        output: String,
        /// what went wrong
        message: String,
    },
    /// A writer thread panicked.
    #[error("the writer of output `{0}` panicked")]
    Panicked(String),
}
