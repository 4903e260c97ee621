//! Keyed state and timers of the wafer host, on RocksDB.
//!
//! - [`StateDb`]: one RocksDB database per job (state, timers, operator ids).
//! - [`KeyedState`]: a keyed worker's value, list and map state, with TTL, a
//!   bounded cache written back in batches, and per-call transactions so that
//!   a guest call that traps leaves state as it was.
//! - [`Timers`]: a keyed worker's event-time and processing-time timers.
//! - [`Frozen`]: a worker's writes as of a checkpoint barrier, handed over
//!   so that the worker goes on while they are written and snapshotted.

mod cache;
pub mod codec;
mod db;
mod frozen;
mod keyed;
mod small_key;
mod stored;
mod timers;

pub use codec::Data;
pub use db::{Census, StateDb};
pub use frozen::Frozen;
pub use keyed::{CacheStats, KeyedState, Kind, StateDecl};
pub use small_key::SmallKey;
pub use timers::{Domain, Fired, Timers};

use std::path::PathBuf;

/// A state operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// RocksDB failed.
    #[error("state database {path}: {message}")]
    Db {
        /// database directory
        path: PathBuf,
        /// RocksDB's message
        message: String,
    },
    /// An operator used state it did not declare.
    #[error("state {state} of operator {op} was never declared")]
    Undeclared {
        /// operator id
        op: u16,
        /// state index
        state: u16,
    },
    /// An operator used state as another kind than it declared.
    #[error("state {state} of operator {op} is {declared:?} state, used as {used:?}")]
    WrongKind {
        /// operator id
        op: u16,
        /// state index
        state: u16,
        /// declared kind
        declared: Kind,
        /// kind used
        used: Kind,
    },
    /// The host called the state API out of order (a bug in the host).
    #[error("state used out of order: {0}")]
    Order(&'static str),
}

#[cfg(test)]
mod tests;
