//! A keyed worker's state: a bounded in-memory cache of hot entries over
//! RocksDB, with write-back in batches and per-call transactions.
//!
//! Reads look in the cache, then entries evicted but not yet written, then
//! RocksDB. Writes go to the cache; dirty entries reach RocksDB when the
//! cache evicts them (in batches) or on [`KeyedState::flush`]. So the hot path
//! costs a hash lookup, not a RocksDB round trip, and a cache smaller than
//! the state only costs speed, never correctness.
//!
//! A transaction (one guest call) writes in place and keeps an undo log of
//! the entries as they were before its first write to each; an abort puts
//! them back. Aborts are rare (a guest trapped), so a commit, the common
//! case, costs nothing but dropping the log.
//!
//! TTL is measured in event time: an entry written when the worker's stream
//! time (largest event time it has processed) was `s` expires once the
//! watermark reaches `s + ttl`. Expired entries are never returned; they are
//! deleted when next touched, by the compaction filter, and at the end of
//! input (when the watermark reaches +infinity).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use wafer_core::key::key_group;

use crate::StateError;
use crate::cache::ClockCache;
use crate::codec::{Data, NO_EXPIRY, decode, encode, state_key};
use crate::db::{CF_STATE, StateDb};
use crate::frozen::{Frozen, Writes};
use crate::small_key::SmallKey;
use crate::stored::StoredKeys;
use crate::timers::Timers;

/// The kind of a piece of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value per key.
    Value,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

/// Entries of a map, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A declared piece of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDecl {
    /// Its kind.
    pub kind: Kind,
    /// Time to live after the last write, in event-time milliseconds.
    pub ttl_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Cell {
    data: Option<Data>,
    expiry: i64,
    dirty: bool,
    /// RocksDB (or the pending writes) may hold this entry: clearing it
    /// must write a delete. A cleared entry that never left memory just
    /// goes, so the cache holds live entries, not the ghosts of every
    /// window and session that ever closed.
    on_disk: bool,
    /// The transaction that last logged this cell's undo entry (0: none).
    tx: u32,
    /// The epoch of the dirty list the cell's slot is in (0: none). Every
    /// dirty cached cell is listed, so write-back visits the dirty list
    /// instead of the whole cache. A checkpoint barrier starts a new epoch:
    /// a dirty cell listed in an older one holds its value as of the
    /// barrier, not yet captured (see [`KeyedState::begin_freeze`]).
    listed: u32,
}

impl Cell {
    /// What RocksDB stores for it (`None`: a delete).
    fn encoded(&self) -> Option<Vec<u8>> {
        self.data.as_ref().map(|d| encode(d, self.expiry))
    }

    fn absent() -> Self {
        Cell {
            data: None,
            expiry: NO_EXPIRY,
            dirty: false,
            on_disk: false,
            tx: 0,
            listed: 0,
        }
    }

    /// Dirty since before the barrier that started `epoch` and not yet
    /// captured (meaningful while a freeze is under way).
    fn awaits_capture(&self, epoch: u32) -> bool {
        self.dirty && self.listed != epoch
    }

    /// Writes the cell out into `into` as RocksDB is to store it with the
    /// watermark at `wm` (`None`: a delete, also for an expired entry); the
    /// cell is clean from then on.
    fn write_out(&mut self, key: &[u8], wm: i64, into: &mut Writes) {
        let stored = match &self.data {
            Some(d) if self.expiry == NO_EXPIRY || self.expiry > wm => Some(encode(d, self.expiry)),
            _ => None,
        };
        self.on_disk = stored.is_some();
        self.dirty = false;
        self.listed = 0;
        into.insert(key.to_vec(), stored);
    }
}

/// Records the keys that `writes` puts into RocksDB in `stored`.
fn note_stored(stored: &mut Option<StoredKeys>, writes: &Writes) {
    if let Some(stored) = stored {
        for (key, value) in writes {
            if value.is_some() {
                stored.insert(key);
            }
        }
    }
}

/// Keeps a replaced value's buffer in `spare` for a later value (a free
/// function: callers hold a cell of the cache meanwhile).
fn keep_spare(spare: &mut Vec<Vec<u8>>, mut v: Vec<u8>) {
    if spare.len() < SPARE_VALUES && v.capacity() <= SPARE_VALUE_BYTES {
        v.clear();
        spare.push(v);
    }
}

/// A freeze under way: the barrier's dirty entries are captured a slice at
/// a time between batches.
struct Capture {
    /// Slots of the cells dirty at the barrier (the dirty list as it was).
    list: VecDeque<u32>,
    /// Captured so far, starting with the writes pending at the barrier.
    writes: Writes,
    timers: Vec<(Vec<u8>, bool)>,
    /// The watermark at the barrier (what expiry is judged against).
    watermark: i64,
}

/// Captures a cell's value as of the barrier into the freeze under way; the
/// cell is clean from then on (RocksDB will have that value).
fn capture(c: &mut Capture, key: &[u8], cell: &mut Cell) {
    cell.write_out(key, c.watermark, &mut c.writes);
}

/// The open transaction: its number and the cells as they were before it
/// first wrote them, in write order. Kept between transactions for its
/// allocations: logging a cell allocates nothing in the long run.
#[derive(Default)]
struct Tx {
    id: u32,
    /// The logged cells' keys, one after another.
    keys: Vec<u8>,
    /// Each logged cell as it was, with where its key ends in `keys`.
    undo: Vec<(usize, Cell)>,
    /// Change of the live-entry count by this transaction.
    live: isize,
}

/// How a call of `with_sub` uses the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    /// Changes the data it finds.
    Update,
    /// Replaces the data whatever it was: the old data is not cloned for
    /// the undo log but moved there (and `f` sees `None`).
    Replace,
}

/// Value buffers kept for reuse, at most this many...
const SPARE_VALUES: usize = 4096;
/// ...of at most this capacity each.
const SPARE_VALUE_BYTES: usize = 512;

/// Counters of cache behaviour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served by the cache or the open transaction.
    pub hits: u64,
    /// Lookups that went to the pending writes or RocksDB.
    pub misses: u64,
    /// Dirty entries evicted to RocksDB.
    pub evictions: u64,
    /// Batched writes to RocksDB.
    pub writes: u64,
    /// Misses answered without RocksDB: keys this worker never stored.
    pub reads_skipped: u64,
}

/// Evicted dirty entries are written to RocksDB in batches of this many.
const PENDING_BATCH: usize = 4096;

/// One keyed worker's state.
pub struct KeyedState {
    db: Arc<StateDb>,
    // foldhash, not SipHash: these maps are on the per-record path, and
    // keys come from the job's own key groups (no flooding to defend from
    // beyond foldhash's per-process seed).
    cache: ClockCache<Cell>,
    pending: Writes,
    /// The keys this worker has put into RocksDB, when it knows them all
    /// (the database held no state when it started): a miss on any other
    /// key needs no RocksDB read. `None`: every miss reads RocksDB.
    stored: Option<StoredKeys>,
    /// The writes handed over at the last checkpoint barrier, until the
    /// snapshot is taken: read before RocksDB, and while set this worker's
    /// own writes wait in `pending` (see `frozen`).
    held: Option<Arc<Frozen>>,
    /// A freeze under way (before `held`).
    capture: Option<Capture>,
    /// The current dirty list's epoch; a barrier starts the next.
    epoch: u32,
    /// Pending writes go to RocksDB in batches of this many.
    batch: usize,
    /// Slots of cells made dirty, oldest first. Every dirty cached cell's
    /// current slot is listed; a listed slot may since hold a clean cell or
    /// another key's (each visit checks the cell it finds).
    dirty: VecDeque<u32>,
    tx: Option<Tx>,
    /// The last transaction, emptied, for the next one's allocations.
    spare_tx: Option<Tx>,
    /// Buffers of values replaced or undone, for new values: in the steady
    /// state a call's writes of value state allocate nothing.
    spare_values: Vec<Vec<u8>>,
    /// Number of the last transaction opened.
    tx_count: u32,
    /// Declared states: a handful, searched linearly.
    decls: Vec<((u16, u16), StateDecl)>,
    scratch: Vec<u8>,
    /// The slot the next access may find its entry in (`hint_slot`).
    hint: Option<u32>,
    /// The slot of the last access's entry (`last_slot`).
    last_slot: u32,
    stream_time: i64,
    watermark: i64,
    /// While a timer for time `t` fires, entries expire as of `t` (see
    /// [`KeyedState::set_horizon`]).
    horizon: Option<i64>,
    /// Entries holding data, and their most so far.
    live: usize,
    peak_live: usize,
    stats: CacheStats,
}

impl KeyedState {
    /// State over `db` caching at most `cache_entries` entries.
    pub fn new(db: Arc<StateDb>, cache_entries: usize) -> Self {
        let stored = db.state_untouched().then(StoredKeys::new);
        KeyedState {
            db,
            cache: ClockCache::new(cache_entries),
            pending: HashMap::default(),
            stored,
            held: None,
            capture: None,
            epoch: 1,
            batch: PENDING_BATCH,
            dirty: VecDeque::new(),
            tx: None,
            spare_tx: None,
            spare_values: Vec::new(),
            tx_count: 0,
            decls: Vec::new(),
            scratch: Vec::new(),
            hint: None,
            last_slot: u32::MAX,
            stream_time: i64::MIN,
            watermark: i64::MIN,
            horizon: None,
            live: 0,
            peak_live: 0,
            stats: CacheStats::default(),
        }
    }

    /// A hint for the next access (one only): its entry may be in cache
    /// slot `slot`, as [`KeyedState::last_slot`] reported after an earlier
    /// access to it. When it is, the lookup skips hashing the key and
    /// probing the index; when the slot holds something else by now, the
    /// hint is ignored. A processor call reads a key's state and then
    /// writes it: the write finds it by hint.
    pub fn hint_slot(&mut self, slot: u32) {
        self.hint = Some(slot);
    }

    /// The cache slot of the last access's entry (meaningless, but
    /// harmless as a hint, if that access failed or removed the entry).
    pub fn last_slot(&self) -> u32 {
        self.last_slot
    }

    /// Declares state `state` of operator `op`.
    pub fn declare(&mut self, op: u16, state: u16, decl: StateDecl) {
        match self.decls.iter_mut().find(|(k, _)| *k == (op, state)) {
            Some((_, d)) => *d = decl,
            None => self.decls.push(((op, state), decl)),
        }
    }

    /// The declaration of a piece of state.
    pub fn decl(&self, op: u16, state: u16) -> Option<StateDecl> {
        self.decls
            .iter()
            .find(|(k, _)| *k == (op, state))
            .map(|(_, d)| *d)
    }

    /// Advances stream time (TTL clocks start from it).
    pub fn observe_event_time(&mut self, t: i64) {
        self.stream_time = self.stream_time.max(t);
    }

    /// Largest event time processed (what a checkpoint records).
    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    /// Sets the watermark entries expire against.
    pub fn set_watermark(&mut self, wm: i64) {
        self.watermark = self.watermark.max(wm);
    }

    /// Judges expiry as of `time` instead of the watermark (never later
    /// than it) until reset with `None`. A timer for `t` fires when the
    /// watermark passes `t`, possibly much later (at the end of input it
    /// jumps to +infinity): its handler sees the state as it was at `t`, so
    /// state with a TTL is not lost just because the watermark moved far in
    /// one step.
    pub fn set_horizon(&mut self, time: Option<i64>) {
        self.horizon = time;
    }

    /// Entries holding data: one per key and declared state (or entry
    /// `sub` of a key) written in this run and not cleared (nor found
    /// expired since).
    pub fn live_entries(&self) -> usize {
        self.live
    }

    /// The most live entries at once so far.
    pub fn peak_entries(&self) -> usize {
        self.peak_live
    }

    fn add_live(&mut self, delta: isize) {
        self.live = self.live.saturating_add_signed(delta);
        // Within a transaction the peak waits for the commit: what an
        // aborted call wrote never counts.
        if self.tx.is_none() {
            self.peak_live = self.peak_live.max(self.live);
        }
    }

    /// Cache counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Opens a transaction: writes until [`commit`](Self::commit) can be
    /// undone by [`abort`](Self::abort).
    pub fn begin(&mut self) {
        // Numbers wrap after 4 billion calls; 0 stays "never logged". A cell
        // last logged exactly 2^32 - 1 transactions ago would be taken as
        // logged, which needs it to stay cached untouched that long and the
        // call then to abort: not worth a wider field in every cell.
        self.tx_count = self.tx_count.wrapping_add(1).max(1);
        let mut tx = self.spare_tx.take().unwrap_or_default();
        tx.id = self.tx_count;
        tx.live = 0;
        self.tx = Some(tx);
    }

    /// Makes the open transaction's writes final.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if let Some(mut tx) = self.tx.take() {
            for (_, old) in tx.undo.drain(..) {
                if let Some(Data::Value(SmallKey::Heap(v))) = old.data {
                    keep_spare(&mut self.spare_values, v);
                }
            }
            tx.keys.clear();
            self.spare_tx = Some(tx);
        }
        self.peak_live = self.peak_live.max(self.live);
        Ok(())
    }

    /// Undoes the open transaction's writes.
    pub fn abort(&mut self) {
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        self.live = self.live.saturating_add_signed(-tx.live);
        // Latest first, so a cell logged twice (evicted and reloaded within
        // the call) ends as it was before the call. Restored cells are
        // dirty and maybe on disk: the undone value may have reached
        // RocksDB by eviction.
        while let Some((end, mut old)) = tx.undo.pop() {
            let start = tx.undo.last().map_or(0, |(e, _)| *e);
            let key = &tx.keys[start..end];
            old.dirty = true;
            old.on_disk = true;
            old.tx = 0;
            match self.cache.get_or_load(None, key, || Err(())) {
                Ok(c) => {
                    old.listed = self.epoch;
                    *c.value = old;
                    self.dirty.push_back(c.slot);
                }
                // Evicted since: the pending writes shadow RocksDB.
                Err(()) => {
                    self.pending.insert(key.to_vec(), old.encoded());
                }
            }
        }
        tx.keys.clear();
        self.spare_tx = Some(tx);
    }

    /// Queues an evicted entry for RocksDB if it holds unwritten changes.
    fn evicted(&mut self, evicted: Option<(Vec<u8>, Cell)>) -> Result<(), StateError> {
        if let Some((old_key, mut old)) = evicted
            && old.dirty
        {
            if let Some(c) = self.capture.as_mut()
                && old.awaits_capture(self.epoch)
            {
                // Dirty since before the barrier and untouched since: its
                // value is the barrier's.
                capture(c, &old_key, &mut old);
                return Ok(());
            }
            self.stats.evictions += 1;
            self.queue(old_key, old.encoded())?;
        }
        Ok(())
    }

    /// Queues a write for RocksDB (`None`: a delete), writing the queue out
    /// once it holds a batch.
    fn queue(&mut self, key: Vec<u8>, encoded: Option<Vec<u8>>) -> Result<(), StateError> {
        self.pending.insert(key, encoded);
        if self.pending.len() >= self.batch && !self.holding() {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        note_stored(&mut self.stored, &self.pending);
        self.db.write(
            CF_STATE,
            self.pending.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        self.stats.writes += 1;
        self.pending.clear();
        Ok(())
    }

    /// Runs `f` on the state of (`op`, `state`, `key`); `write` says whether
    /// `f` may change it.
    fn with<R>(
        &mut self,
        op: u16,
        state: u16,
        kind: Option<Kind>,
        key: &[u8],
        access: Access,
        f: impl FnOnce(&mut Option<Data>) -> R,
    ) -> Result<R, StateError> {
        self.with_sub(op, state, kind, key, &[], access, f)
    }

    /// Like `with`, for the entry `sub` of a key (a window of a key, say):
    /// stored under the key's key group, after the key's bytes.
    #[allow(clippy::too_many_arguments)]
    fn with_sub<R>(
        &mut self,
        op: u16,
        state: u16,
        kind: Option<Kind>,
        key: &[u8],
        sub: &[u8],
        access: Access,
        f: impl FnOnce(&mut Option<Data>) -> R,
    ) -> Result<R, StateError> {
        let hint = self.hint.take();
        let write = access != Access::Read;
        let decl = self.decl(op, state).ok_or(StateError::Undeclared { op, state })?;
        if let Some(kind) = kind
            && decl.kind != kind
        {
            return Err(StateError::WrongKind {
                op,
                state,
                declared: decl.kind,
                used: kind,
            });
        }
        state_key(&mut self.scratch, key_group(key), op, state, key);
        self.scratch.extend_from_slice(sub);
        let wm = match self.horizon {
            Some(h) => h.min(self.watermark),
            None => self.watermark,
        };
        let expiry = match decl.ttl_ms {
            Some(ttl) => self.stream_time.saturating_add(ttl),
            None => NO_EXPIRY,
        };
        let (pending, capture_, held, db) = (&self.pending, &self.capture, &self.held, &self.db);
        let (stored, skipped) = (&self.stored, &mut self.stats.reads_skipped);
        let scratch = &self.scratch;
        let loaded = self.cache.get_or_load(hint, scratch, || {
            let pending = || (!pending.is_empty()).then(|| pending.get(scratch)).flatten();
            let captured = || capture_.as_ref().and_then(|c| c.writes.get(scratch));
            let frozen = || held.as_ref().and_then(|f| f.get(scratch));
            let raw = match pending().or_else(captured).or_else(frozen) {
                Some(v) => v.clone(),
                None if stored.as_ref().is_some_and(|s| !s.may_contain(scratch)) => {
                    *skipped += 1;
                    None
                }
                None => db.get(CF_STATE, scratch)?,
            };
            Ok::<_, StateError>(match raw.as_deref().and_then(decode) {
                Some((data, expiry)) => Cell {
                    data: Some(data),
                    expiry,
                    dirty: false,
                    on_disk: true,
                    tx: 0,
                    listed: 0,
                },
                None => Cell::absent(),
            })
        })?;
        let (cell, slot, evicted, hit) = (loaded.value, loaded.slot, loaded.evicted, loaded.hit);
        self.last_slot = slot;
        if let Some(c) = self.capture.as_mut()
            && cell.awaits_capture(self.epoch)
        {
            // First touch since the barrier of an entry dirty at it: its
            // value as of the barrier is captured before anything changes it.
            capture(c, &self.scratch, cell);
        }
        let mut expired = 0;
        if cell.data.is_some() && cell.expiry != NO_EXPIRY && cell.expiry <= wm {
            // Expired: invisible, and deleted on write-back. (Not undone by
            // an abort: it is expired either way.)
            cell.data = None;
            cell.dirty = true;
            expired = -1;
        }
        let newly_dirty = (write || expired != 0) && cell.listed != self.epoch;
        let before = isize::from(cell.data.is_some());
        let replace = access == Access::Replace;
        if write
            && let Some(tx) = self.tx.as_mut()
            && cell.tx != tx.id
        {
            let data = if replace {
                cell.data.take()
            } else {
                cell.data.clone()
            };
            tx.keys.extend_from_slice(&self.scratch);
            tx.undo.push((tx.keys.len(), Cell { data, ..*cell }));
            cell.tx = tx.id;
        } else if replace && let Some(Data::Value(SmallKey::Heap(v))) = cell.data.take() {
            keep_spare(&mut self.spare_values, v);
        }
        let r = f(&mut cell.data);
        if write {
            cell.dirty = true;
            cell.expiry = expiry;
        }
        if newly_dirty {
            cell.listed = self.epoch;
        }
        let delta = isize::from(cell.data.is_some()) - before;
        let cleared = write && cell.data.is_none();
        let on_disk = cell.on_disk;
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.live += delta;
        }
        self.add_live(expired + delta);
        if newly_dirty {
            self.dirty.push_back(slot);
            self.compact_dirty_list();
        }
        self.evicted(evicted)?;
        if cleared {
            // The cache moves its last entry into the freed slot. A clear is
            // a write, so that slot is in the dirty list and the entry moving
            // in is visited through it.
            self.cache.remove_slot(slot);
            // The entry that moved into the slot may be one a freeze has
            // yet to capture, listed under its old slot.
            if let Some(c) = self.capture.as_mut()
                && let Some((_, moved)) = self.cache.slot_mut(slot)
                && moved.awaits_capture(self.epoch)
            {
                c.list.push_back(slot);
            }
            if on_disk {
                self.queue(self.scratch.clone(), None)?;
            }
        }
        Ok(r)
    }

    /// Value state: the value, if any.
    pub fn value_get(&mut self, op: u16, state: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.with(op, state, Some(Kind::Value), key, Access::Read, |d| match d {
            Some(Data::Value(v)) => Some(v.to_vec()),
            _ => None,
        })
    }

    /// Value state: hands the value (or `None`) to `f` without copying it.
    pub fn value_with<R>(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StateError> {
        self.with(op, state, Some(Kind::Value), key, Access::Read, |d| match d {
            Some(Data::Value(v)) => f(Some(v.as_slice())),
            _ => f(None),
        })
    }

    /// Value state: sets the value to a copy of `value`: inline when short,
    /// else in a buffer of a value replaced earlier when there is one.
    pub fn value_set_from(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let value = if value.len() <= crate::small_key::INLINE {
            SmallKey::new(value)
        } else {
            let mut buf = self.spare_values.pop().unwrap_or_default();
            buf.extend_from_slice(value);
            SmallKey::Heap(buf)
        };
        self.set_value(op, state, key, value)
    }

    /// Value state: sets the value.
    pub fn value_set(&mut self, op: u16, state: u16, key: &[u8], value: Vec<u8>) -> Result<(), StateError> {
        self.set_value(op, state, key, SmallKey::from_vec(value))
    }

    fn set_value(&mut self, op: u16, state: u16, key: &[u8], value: SmallKey) -> Result<(), StateError> {
        self.with(op, state, Some(Kind::Value), key, Access::Replace, |d| {
            *d = Some(Data::Value(value))
        })
    }

    /// List state: the items.
    pub fn list_get(&mut self, op: u16, state: u16, key: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        self.with(op, state, Some(Kind::List), key, Access::Read, |d| match d {
            Some(Data::List(v)) => v.clone(),
            _ => Vec::new(),
        })
    }

    /// List state: appends an item.
    pub fn list_append(&mut self, op: u16, state: u16, key: &[u8], item: Vec<u8>) -> Result<(), StateError> {
        self.with(op, state, Some(Kind::List), key, Access::Update, |d| match d {
            Some(Data::List(v)) => v.push(item),
            _ => *d = Some(Data::List(vec![item])),
        })
    }

    /// List state: replaces the items (an empty list clears it).
    pub fn list_set(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        items: Vec<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.with(op, state, Some(Kind::List), key, Access::Replace, |d| {
            *d = if items.is_empty() {
                None
            } else {
                Some(Data::List(items))
            }
        })
    }

    /// Map state: one entry.
    pub fn map_get(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.with(op, state, Some(Kind::Map), key, Access::Read, |d| match d {
            Some(Data::Map(m)) => m.get(map_key).cloned(),
            _ => None,
        })
    }

    /// Map state: sets an entry.
    pub fn map_put(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        self.with(op, state, Some(Kind::Map), key, Access::Update, |d| match d {
            Some(Data::Map(m)) => {
                m.insert(map_key, value);
            }
            _ => *d = Some(Data::Map([(map_key, value)].into_iter().collect())),
        })
    }

    /// Map state: removes an entry.
    pub fn map_remove(&mut self, op: u16, state: u16, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        self.with(op, state, Some(Kind::Map), key, Access::Update, |d| {
            if let Some(Data::Map(m)) = d {
                m.remove(map_key);
                if m.is_empty() {
                    *d = None;
                }
            }
        })
    }

    /// Map state: every entry, in key order.
    pub fn map_entries(&mut self, op: u16, state: u16, key: &[u8]) -> Result<Entries, StateError> {
        self.with(op, state, Some(Kind::Map), key, Access::Read, |d| match d {
            Some(Data::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        })
    }

    /// Removes the state of any kind.
    pub fn clear(&mut self, op: u16, state: u16, key: &[u8]) -> Result<(), StateError> {
        self.with(op, state, None, key, Access::Replace, |d| *d = None)
    }

    /// Value state of entry `sub` of a key (host-run operators: a window of
    /// a key).
    pub fn sub_get(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        sub: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.with_sub(
            op,
            state,
            Some(Kind::Value),
            key,
            sub,
            Access::Read,
            |d| match d {
                Some(Data::Value(v)) => Some(v.to_vec()),
                _ => None,
            },
        )
    }

    /// Sets value state of entry `sub` of a key.
    pub fn sub_set(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        sub: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        let value = SmallKey::from_vec(value);
        self.with_sub(op, state, Some(Kind::Value), key, sub, Access::Replace, |d| {
            *d = Some(Data::Value(value))
        })
    }

    /// Reads and rewrites value state of entry `sub` of a key with one
    /// lookup: `f` gets the value (`None` when absent) and leaves what is
    /// to be stored (`None` clears it).
    pub fn sub_update<R>(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        sub: &[u8],
        f: impl FnOnce(&mut Option<SmallKey>) -> R,
    ) -> Result<R, StateError> {
        self.with_sub(op, state, Some(Kind::Value), key, sub, Access::Update, |d| {
            let mut v = match d.take() {
                Some(Data::Value(v)) => Some(v),
                _ => None,
            };
            let r = f(&mut v);
            *d = v.map(Data::Value);
            r
        })
    }

    /// Removes value state of entry `sub` of a key.
    pub fn sub_clear(&mut self, op: u16, state: u16, key: &[u8], sub: &[u8]) -> Result<(), StateError> {
        self.with_sub(op, state, None, key, sub, Access::Replace, |d| *d = None)
    }

    /// Writes every dirty entry (cached or pending) to RocksDB. Entries stay
    /// cached.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.holding() {
            return Err(StateError::Order("flush while writes are held for a snapshot"));
        }
        self.write_back(0);
        #[cfg(debug_assertions)]
        for (k, cell) in self.cache.iter_mut() {
            debug_assert!(!cell.dirty, "dirty entry {k:?} missing from the dirty list");
        }
        self.write_pending()
    }

    /// Writes the oldest dirty entries back to RocksDB until at most
    /// `keep / 2` are left, if more than `keep` are dirty; between calls
    /// only (not inside a transaction). Called between batches when
    /// checkpoints are on, it bounds what a barrier must write (and so the
    /// pause) at the price of writing hot entries more often. Returns the
    /// entries written.
    pub fn write_back_excess(&mut self, keep: usize) -> Result<usize, StateError> {
        if self.tx.is_some() || self.holding() || self.dirty.len() <= keep {
            return Ok(0);
        }
        let n = self.write_back(keep / 2);
        self.write_pending()?;
        Ok(n)
    }

    /// Starts a freeze at a checkpoint barrier (no transaction open, no
    /// freeze or hold under way): the values of the entries dirty now, the
    /// pending writes and `timers`' changes are to form the frozen set
    /// ([`crate::Frozen`]). O(1) but for the timers: the dirty list becomes
    /// the capture list and a new epoch starts. [`freeze_step`](Self::freeze_step)
    /// captures the entries a slice at a time; an entry touched or evicted
    /// first is captured then. Until the release this worker's writes wait
    /// in memory and reads look in what is captured before RocksDB.
    pub fn begin_freeze(&mut self, timers: &mut Timers) -> Result<(), StateError> {
        if self.tx.is_some() {
            return Err(StateError::Order("freeze inside a transaction"));
        }
        if self.holding() {
            return Err(StateError::Order("freeze while the last one is under way"));
        }
        self.epoch = self.epoch.wrapping_add(1).max(1);
        self.capture = Some(Capture {
            list: std::mem::take(&mut self.dirty),
            writes: std::mem::take(&mut self.pending),
            timers: timers.take_changes(),
            watermark: self.watermark,
        });
        Ok(())
    }

    /// Captures up to `max` entries of the freeze under way; returns the
    /// frozen set once every entry is captured (and holds on through it).
    pub fn freeze_step(&mut self, max: usize) -> Option<Arc<Frozen>> {
        let c = self.capture.as_mut()?;
        let mut n = 0;
        while n < max {
            let Some(i) = c.list.pop_front() else { break };
            if let Some((k, cell)) = self.cache.slot_mut(i)
                && cell.awaits_capture(self.epoch)
            {
                capture(c, k, cell);
                n += 1;
            }
        }
        if !c.list.is_empty() {
            return None;
        }
        let c = self.capture.take()?;
        // Recorded now: the coordinator may write the set any time after.
        note_stored(&mut self.stored, &c.writes);
        let frozen = Arc::new(Frozen::new(c.writes, c.timers));
        self.held = Some(frozen.clone());
        Some(frozen)
    }

    /// Whether this worker's writes are held (a freeze under way or its
    /// set not yet snapshotted).
    fn holding(&self) -> bool {
        self.capture.is_some() || self.held.is_some()
    }

    /// Writes waiting because of a hold: evicted entries and deletes made
    /// since the barrier. A worker that finds too many waits for the
    /// snapshot and releases.
    pub fn writes_waiting(&self) -> usize {
        if self.holding() { self.pending.len() } else { 0 }
    }

    /// Ends the hold once the snapshot is taken (or abandoned): makes sure
    /// the frozen writes are in RocksDB, then lets this worker write again.
    pub fn release(&mut self) -> Result<(), StateError> {
        if self.capture.is_some() {
            return Err(StateError::Order("release before the freeze is complete"));
        }
        let Some(frozen) = self.held.take() else {
            return Ok(());
        };
        if let Err(e) = frozen.apply(&self.db) {
            self.held = Some(frozen);
            return Err(e);
        }
        if self.pending.len() >= self.batch {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Sets the size of write batches (tests write small ones often).
    #[cfg(test)]
    pub(crate) fn set_write_batch(&mut self, n: usize) {
        self.batch = n.max(1);
    }

    /// Moves dirty entries, oldest first, into the pending writes until at
    /// most `keep` keys are listed. Entries stay cached, now clean.
    fn write_back(&mut self, keep: usize) -> usize {
        let mut written = 0;
        self.pending.reserve(self.dirty.len().saturating_sub(keep));
        while self.dirty.len() > keep {
            let Some(i) = self.dirty.pop_front() else {
                break;
            };
            let Some((k, cell)) = self.cache.slot_mut(i) else {
                // The slot is gone (entries were removed).
                continue;
            };
            if cell.listed != self.epoch {
                continue;
            }
            cell.listed = 0;
            if !cell.dirty {
                continue;
            }
            cell.write_out(k, self.watermark, &mut self.pending);
            written += 1;
        }
        written
    }

    /// Slots whose dirty cell was evicted stay listed until visited: once
    /// the list is much longer than the cache, it is rebuilt from the dirty
    /// cells (a scan, paid once per that many listings).
    fn compact_dirty_list(&mut self) {
        if self.dirty.len() <= 2 * self.cache.capacity() + 1024 {
            return;
        }
        self.dirty.clear();
        let mut i = 0u32;
        while let Some((_, cell)) = self.cache.slot_mut(i) {
            // A cell a freeze has yet to capture stays in its list.
            if !(self.capture.is_some() && cell.awaits_capture(self.epoch)) {
                cell.listed = if cell.dirty { self.epoch } else { 0 };
                if cell.dirty {
                    self.dirty.push_back(i);
                }
            }
            i += 1;
        }
    }
}
