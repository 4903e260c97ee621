//! A keyed worker's timers: event-time and processing-time timers per
//! (operator, key), de-duplicated per (operator, key, time), fired in time
//! order, kept in memory and written to RocksDB in batches with the state.
//!
//! Memory holds every timer; RocksDB only needs them at a flush (a
//! checkpoint, the end of input). So each timer carries whether RocksDB has
//! it: setting a timer touches only memory, firing one RocksDB never saw
//! costs nothing, and a flush writes the timers set since the last one plus
//! deletes for the stored ones that went. Most timers live and die between
//! two checkpoints and never reach RocksDB.

use std::collections::BTreeMap;
use std::sync::Arc;

use wafer_core::key::key_group;

use crate::StateError;
use crate::codec::{split_timer_key, timer_key};
use crate::db::{CF_TIMERS, StateDb};
use crate::small_key::SmallKey;

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Fires when the watermark reaches its time.
    EventTime = 0,
    /// Fires when the wall clock reaches its time.
    ProcessingTime = 1,
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Its time.
    pub time: i64,
    /// The operator that set it.
    pub op: u16,
    /// The key it was set for.
    pub key: SmallKey,
}

/// A timer change of the open transaction.
struct TimerOp {
    register: bool,
    op: u16,
    key: SmallKey,
    domain: Domain,
    time: i64,
}

/// A timer in its queue: time first, so the queue is in firing order. The
/// key is inline when short, so setting a timer allocates nothing but its
/// share of a B-tree node.
type Entry = (i64, u16, SmallKey);

/// One keyed worker's timers.
pub struct Timers {
    db: Arc<StateDb>,
    /// Timers by time, each with whether RocksDB holds it.
    queues: [BTreeMap<Entry, bool>; 2],
    /// Timers set since the last flush (not in RocksDB).
    unsaved: usize,
    /// Storage keys of timers RocksDB holds that went since the last flush.
    deleted: Vec<Vec<u8>>,
    /// The open transaction's changes, in order (kept between
    /// transactions for its allocation).
    tx: Vec<TimerOp>,
    in_tx: bool,
    peak: usize,
}

impl Timers {
    /// No timers yet.
    pub fn new(db: Arc<StateDb>) -> Self {
        Timers {
            db,
            queues: [BTreeMap::new(), BTreeMap::new()],
            peak: 0,
            unsaved: 0,
            deleted: Vec::new(),
            tx: Vec::new(),
            in_tx: false,
        }
    }

    /// Loads the timers stored for the key groups `owns` accepts (after a
    /// restore).
    pub fn load(&mut self, owns: impl Fn(u16) -> bool) -> Result<usize, StateError> {
        let mut n = 0;
        let queues = &mut self.queues;
        self.db.scan(CF_TIMERS, &[], |k, _| {
            if let Some((group, op, domain, time, key)) = split_timer_key(k)
                && owns(group)
                && domain < 2
            {
                queues[domain as usize].insert((time, op, SmallKey::new(key)), true);
                n += 1;
            }
        })?;
        Ok(n)
    }

    /// Number of timers set.
    pub fn len(&self) -> usize {
        self.queues[0].len() + self.queues[1].len()
    }

    /// The most timers set at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a transaction (see `KeyedState::begin`).
    pub fn begin(&mut self) {
        self.tx.clear();
        self.in_tx = true;
    }

    /// Applies the open transaction.
    pub fn commit(&mut self) {
        if !self.in_tx {
            return;
        }
        self.in_tx = false;
        let mut ops = std::mem::take(&mut self.tx);
        for c in ops.drain(..) {
            self.apply(c);
        }
        self.tx = ops;
    }

    /// Drops the open transaction.
    pub fn abort(&mut self) {
        self.tx.clear();
        self.in_tx = false;
    }

    /// Sets a timer (a no-op if the same one is set).
    pub fn register(&mut self, op: u16, key: &[u8], domain: Domain, time: i64) {
        self.change(true, op, key, domain, time);
    }

    /// Removes a timer (a no-op if it is not set).
    pub fn delete(&mut self, op: u16, key: &[u8], domain: Domain, time: i64) {
        self.change(false, op, key, domain, time);
    }

    fn change(&mut self, register: bool, op: u16, key: &[u8], domain: Domain, time: i64) {
        let c = TimerOp {
            register,
            op,
            key: SmallKey::new(key),
            domain,
            time,
        };
        if self.in_tx {
            self.tx.push(c);
        } else {
            self.apply(c);
        }
    }

    fn apply(&mut self, c: TimerOp) {
        if c.register {
            self.apply_register(c.op, c.key, c.domain, c.time);
        } else {
            self.apply_delete(c.op, c.key, c.domain, c.time);
        }
    }

    fn apply_register(&mut self, op: u16, key: SmallKey, domain: Domain, time: i64) {
        if let std::collections::btree_map::Entry::Vacant(e) =
            self.queues[domain as usize].entry((time, op, key))
        {
            e.insert(false);
            self.unsaved += 1;
            self.peak = self.peak.max(self.len());
        }
    }

    fn apply_delete(&mut self, op: u16, key: SmallKey, domain: Domain, time: i64) {
        let entry = (time, op, key);
        match self.queues[domain as usize].remove(&entry) {
            Some(true) => self.gone(domain, &entry),
            Some(false) => self.unsaved = self.unsaved.saturating_sub(1),
            None => {}
        }
    }

    /// Notes that a timer RocksDB holds went.
    fn gone(&mut self, domain: Domain, entry: &Entry) {
        self.deleted.push(storage_key(domain as u8, entry));
    }

    /// The earliest timer of a domain.
    pub fn next(&self, domain: Domain) -> Option<i64> {
        self.queues[domain as usize]
            .first_key_value()
            .map(|((t, _, _), _)| *t)
    }

    /// Removes and returns up to `max` timers of `domain` due at `upto`
    /// (time ≤ upto), earliest first.
    pub fn pop_due(&mut self, domain: Domain, upto: i64, max: usize) -> Vec<Fired> {
        let mut out = Vec::new();
        while out.len() < max {
            let due = self.queues[domain as usize]
                .first_key_value()
                .is_some_and(|((t, _, _), _)| *t <= upto);
            if !due {
                break;
            }
            let Some((entry, saved)) = self.queues[domain as usize].pop_first() else {
                break;
            };
            if saved {
                self.gone(domain, &entry);
            } else {
                self.unsaved = self.unsaved.saturating_sub(1);
            }
            let (time, op, key) = entry;
            out.push(Fired { time, op, key });
        }
        out
    }

    /// Writes timer changes to RocksDB (see [`take_changes`](Self::take_changes)).
    pub fn flush(&mut self) -> Result<(), StateError> {
        let changes = self.take_changes();
        write_timer_changes(&self.db, &changes)
    }

    /// The changes RocksDB needs, as storage keys with whether to put
    /// (`false`: delete): deletes of stored timers that went, then every
    /// timer set since the last call (a timer deleted and set again in
    /// between ends up stored: a batch applies in order). From now on they
    /// count as stored.
    pub fn take_changes(&mut self) -> Vec<(Vec<u8>, bool)> {
        if self.deleted.is_empty() && self.unsaved == 0 {
            return Vec::new();
        }
        let mut changes: Vec<(Vec<u8>, bool)> = Vec::with_capacity(self.deleted.len() + self.unsaved);
        changes.extend(self.deleted.drain(..).map(|k| (k, false)));
        for (d, queue) in self.queues.iter_mut().enumerate() {
            for (entry, saved) in queue.iter_mut() {
                if !*saved {
                    changes.push((storage_key(d as u8, entry), true));
                    *saved = true;
                }
            }
        }
        self.unsaved = 0;
        changes
    }
}

/// Writes changes from [`Timers::take_changes`] to RocksDB in one batch.
pub(crate) fn write_timer_changes(db: &StateDb, changes: &[(Vec<u8>, bool)]) -> Result<(), StateError> {
    db.write(
        CF_TIMERS,
        changes
            .iter()
            .map(|(k, put)| (k.as_slice(), put.then_some(&[][..]))),
    )
}

/// Where a timer of `domain` is stored in RocksDB.
fn storage_key(domain: u8, (time, op, key): &Entry) -> Vec<u8> {
    timer_key(key_group(key), *op, domain, *time, key)
}
