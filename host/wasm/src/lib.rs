//! The wasmtime side of the wafer host.
//!
//! - [`WasmRuntime`] owns the engine and its epoch ticker (the execution
//!   deadline of every guest call).
//! - [`WasmRuntime::load`] compiles a component once, checks that it
//!   implements the expected world, and keeps it pre-instantiated
//!   ([`LoadedComponent`]).
//! - [`ComponentSlot`] is the handle stages reach a component through; the
//!   runtime can swap what it holds, and stages pick the new version up
//!   between two batches.
//! - [`DeserializeStage`] and [`FilterStage`] make batch calls and isolate
//!   failures: when a batch traps, times out or hits the memory cap, the
//!   instance is replaced and the batch re-run record by record, so only the
//!   records at fault are dead-lettered.

pub mod bindings;
mod convert;
mod deserialize;
mod engine;
mod filter;
mod host;
mod processor;
mod slot;
mod stage;

pub use deserialize::{Decoded, DeserializeStage};
pub use engine::{ComponentInfo, Limits, LoadError, LoadedComponent, WasmRuntime, World};
pub use filter::{FilterStage, Verdicts};
pub use host::{Grants, GuestTelemetry, NoTelemetry};
pub use processor::{
    KeyedBackend, KeyedBatch, OutputSpec, ProcInputs, ProcOutput, ProcessorSpec, ProcessorStage, StateKind,
    StateSpec, TimeDomain, TimerBatch, TimerChange, check_writes,
};
pub use slot::ComponentSlot;

/// How a record failed inside a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailKind {
    /// The guest said the payload is not in its format.
    Decode,
    /// The guest said the record breaks its rules.
    Invalid,
    /// The guest said it could not handle the record.
    Failed,
    /// The guest trapped on the record.
    Trap,
    /// The guest ran past its deadline on the record.
    Timeout,
    /// The guest hit its memory limit on the record.
    Memory,
    /// The guest returned something that breaks the contract (a malformed
    /// batch, a row not matching its schema).
    BadOutput,
}

/// A record that failed in a guest, by its index in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the record in the batch.
    pub index: u32,
    /// How it failed.
    pub kind: FailKind,
    /// What went wrong, in words.
    pub message: String,
}

/// Why a whole call failed (the instance is unusable afterwards).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest ran past its deadline.
    #[error("guest ran past its deadline of {0:?}")]
    Timeout(std::time::Duration),
    /// The guest hit its memory limit.
    #[error("guest hit its memory limit of {0} bytes")]
    Memory(usize),
}

impl CallError {
    /// The per-record failure kind this call error maps to.
    pub fn kind(&self) -> FailKind {
        match self {
            CallError::Trap(_) => FailKind::Trap,
            CallError::Timeout(_) => FailKind::Timeout,
            CallError::Memory(_) => FailKind::Memory,
        }
    }
}
