//! Checkpoints and savepoints of the wafer host: where they are stored and
//! in what format, independent of what the runtime puts in them.
//!
//! - [`manifest`]: the prost-encoded, versioned manifest of one cut.
//! - [`storage`]: the [`Storage`] trait (a flat key → bytes/file store) and
//!   [`LocalStorage`], a directory on local disk; an object store can follow.
//! - [`store`]: [`CheckpointStore`] on top of a storage: writes checkpoints
//!   with incremental state files (files unchanged since the previous
//!   checkpoint are not copied again), the manifest last and atomically;
//!   keeps the last K; finds the latest checkpoint whose every file checks
//!   out (a torn or corrupted one is skipped for the one before); writes and
//!   reads self-contained savepoints.

pub mod manifest;
pub mod storage;
pub mod store;

pub use manifest::{FORMAT_VERSION, Kind, Manifest};
pub use storage::{LocalStorage, Storage};
pub use store::{CheckpointStore, Skipped, WriteStats};

use std::path::PathBuf;

/// What went wrong with a checkpoint or savepoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the storage failed.
    #[error("checkpoint storage {path}: {source}")]
    Io {
        /// the file or directory
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
    /// A manifest or file does not match what was written.
    #[error("checkpoint {what} is corrupt: {reason}")]
    Corrupt {
        /// which checkpoint or file
        what: String,
        /// what does not match
        reason: String,
    },
    /// A savepoint that does not exist (its storage key).
    #[error("no savepoint at {0}")]
    NoSavepoint(PathBuf),
    /// A checkpoint or savepoint that is already complete was to be
    /// written again.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A storage key (or a file name in a manifest) that is not a plain
    /// relative '/'-separated path.
    #[error("invalid checkpoint storage key {key:?}: {reason}")]
    InvalidKey {
        /// the key
        key: String,
        /// what is wrong with it
        reason: String,
    },
    /// A savepoint name that is not a single safe path component.
    #[error("invalid savepoint name {0:?}: use letters, digits, '-', '_' and '.', not starting with '.'")]
    InvalidSavepointName(String),
    /// State files are restored only into an empty or missing directory, so
    /// no stale file of another state can mix in.
    #[error("cannot restore state files into {0}: the directory is not empty")]
    NotEmpty(PathBuf),
}

#[cfg(test)]
mod tests;
