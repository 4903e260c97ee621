//! A keyed worker's writes as of a checkpoint barrier, handed to the
//! checkpoint coordinator so that the worker does not wait for RocksDB.
//!
//! At a barrier a worker starts a freeze ([`KeyedState::begin_freeze`]):
//! the entries dirty then are to be captured with their values as of the
//! barrier, together with the evicted-but-unwritten entries and the timer
//! changes. Starting costs no more than swapping two lists; the capture runs
//! a slice at a time between batches ([`KeyedState::freeze_step`]), and an
//! entry the worker touches (or evicts) first is captured right then, before
//! anything changes it. Once all are captured the set is a [`Frozen`], handed
//! to the coordinator. From the barrier until the worker is
//! [released](KeyedState::release) it holds its own writes back (evicted
//! entries wait in memory), and reads that miss the cache look in the
//! captured values before RocksDB. The coordinator [applies](Frozen::apply)
//! every worker's set and snapshots RocksDB, which so holds exactly the
//! state as of the barrier, then tells the workers to go on writing.
//!
//! Why not write at the barrier: writing back a hundred thousand entries
//! takes RocksDB a quarter of a second and the snapshot tens of milliseconds
//! more, all while processing waits; even encoding them takes ~0.5 µs each
//! (cache misses). Processing now pauses for one slice at a time.
//!
//! A set may be applied twice (the coordinator, and a worker released
//! without it because the checkpoint failed): the second time does nothing,
//! and neither call returns before the set is in RocksDB.
//!
//! [`KeyedState::begin_freeze`]: crate::KeyedState::begin_freeze
//! [`KeyedState::freeze_step`]: crate::KeyedState::freeze_step
//! [`KeyedState::release`]: crate::KeyedState::release

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;

use crate::StateError;
use crate::db::{CF_STATE, StateDb};
use crate::timers::write_timer_changes;

/// Encoded state writes by storage key (`None`: a delete).
pub(crate) type Writes = HashMap<Vec<u8>, Option<Vec<u8>>, RandomState>;

/// One worker's writes as of a barrier.
pub struct Frozen {
    state: Writes,
    /// Timer storage keys to delete, then to put (a batch applies in order).
    timers: Vec<(Vec<u8>, bool)>,
    /// Whether the set is in RocksDB. Held while applying, so a second
    /// caller waits for the first.
    applied: Mutex<bool>,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("state", &self.state.len())
            .field("timers", &self.timers.len())
            .field("applied", &self.is_applied())
            .finish()
    }
}

impl Frozen {
    pub(crate) fn new(state: Writes, timers: Vec<(Vec<u8>, bool)>) -> Self {
        Frozen {
            state,
            timers,
            applied: Mutex::new(false),
        }
    }

    /// State entries in the set.
    pub fn state_entries(&self) -> usize {
        self.state.len()
    }

    /// Whether the set is in RocksDB.
    pub fn is_applied(&self) -> bool {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the set to RocksDB unless that was done. Returns whether this
    /// call wrote it.
    pub fn apply(&self, db: &StateDb) -> Result<bool, StateError> {
        // A panic while applying leaves `false`: the next caller writes the
        // set again (idempotent puts and deletes).
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if *applied {
            return Ok(false);
        }
        db.write(
            CF_STATE,
            self.state.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        write_timer_changes(db, &self.timers)?;
        *applied = true;
        Ok(true)
    }

    /// The frozen write of a state entry, if the set has one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.state.get(key)
    }
}
