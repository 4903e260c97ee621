//! A keyed worker's state: a bounded in-memory cache of hot entries over
//! RocksDB, with write-back in batches and per-call transactions.
//!
//! Reads look in the open transaction, then the cache, then entries evicted
//! but not yet written, then RocksDB. Writes go to the transaction (during a
//! guest call) or straight to the cache; dirty entries reach RocksDB when the
//! cache evicts them (in batches) or on [`KeyedState::flush`]. So the hot path
//! costs a hash lookup, not a RocksDB round trip, and a cache smaller than
//! the state only costs speed, never correctness.
//!
//! TTL is measured in event time: an entry written when the worker's stream
//! time (largest event time it has processed) was `s` expires once the
//! watermark reaches `s + ttl`. Expired entries are never returned; they are
//! deleted when next touched, by the compaction filter, and at the end of
//! input (when the watermark reaches +infinity).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use foldhash::fast::RandomState;
use lru::LruCache;
use wafer_core::key::key_group;

use crate::StateError;
use crate::codec::{Data, NO_EXPIRY, decode, encode, state_key};
use crate::db::{CF_STATE, StateDb};

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
}

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
}

/// Evicted dirty entries are written to RocksDB in batches of this many.
const PENDING_BATCH: usize = 4096;

/// One keyed worker's state.
pub struct KeyedState {
    db: Arc<StateDb>,
    // foldhash, not SipHash: these maps are on the per-record path, and
    // keys come from the job's own key groups (no flooding to defend from
    // beyond foldhash's per-process seed).
    cache: LruCache<Vec<u8>, Cell, RandomState>,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>, RandomState>,
    tx: Option<HashMap<Vec<u8>, Cell, RandomState>>,
    decls: HashMap<(u16, u16), StateDecl>,
    scratch: Vec<u8>,
    stream_time: i64,
    watermark: i64,
    /// While a timer for time `t` fires, entries expire as of `t` (see
    /// [`KeyedState::set_horizon`]).
    horizon: Option<i64>,
    /// Entries holding data (committed), and their most so far.
    live: usize,
    peak_live: usize,
    /// Change of `live` by the open transaction.
    tx_live: isize,
    stats: CacheStats,
}

impl KeyedState {
    /// State over `db` caching at most `cache_entries` entries.
    pub fn new(db: Arc<StateDb>, cache_entries: usize) -> Self {
        KeyedState {
            db,
            cache: LruCache::with_hasher(
                NonZeroUsize::new(cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN),
                RandomState::default(),
            ),
            pending: HashMap::default(),
            tx: None,
            decls: HashMap::new(),
            scratch: Vec::new(),
            stream_time: i64::MIN,
            watermark: i64::MIN,
            horizon: None,
            live: 0,
            peak_live: 0,
            tx_live: 0,
            stats: CacheStats::default(),
        }
    }

    /// Declares state `state` of operator `op`.
    pub fn declare(&mut self, op: u16, state: u16, decl: StateDecl) {
        self.decls.insert((op, state), decl);
    }

    /// The declaration of a piece of state.
    pub fn decl(&self, op: u16, state: u16) -> Option<StateDecl> {
        self.decls.get(&(op, state)).copied()
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
        self.peak_live = self.peak_live.max(self.live);
    }

    /// Cache counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Opens a transaction: writes until [`commit`](Self::commit) or
    /// [`abort`](Self::abort) are kept apart.
    pub fn begin(&mut self) {
        self.tx = Some(HashMap::default());
        self.tx_live = 0;
    }

    /// Makes the open transaction's writes visible.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if let Some(tx) = self.tx.take() {
            let delta = std::mem::take(&mut self.tx_live);
            self.add_live(delta);
            for (k, cell) in tx {
                self.insert_cache(k, cell)?;
            }
        }
        Ok(())
    }

    /// Forgets the open transaction's writes.
    pub fn abort(&mut self) {
        self.tx = None;
        self.tx_live = 0;
    }

    fn insert_cache(&mut self, key: Vec<u8>, cell: Cell) -> Result<(), StateError> {
        if let Some((old_key, old)) = self.cache.push(key, cell)
            && old.dirty
            && !self.cache.contains(&old_key)
        {
            self.stats.evictions += 1;
            let encoded = old.data.as_ref().map(|d| encode(d, old.expiry));
            self.pending.insert(old_key, encoded);
            if self.pending.len() >= PENDING_BATCH {
                self.write_pending()?;
            }
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.db.write(
            CF_STATE,
            self.pending.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        self.stats.writes += 1;
        self.pending.clear();
        Ok(())
    }

    /// Loads the cell at `self.scratch` from below the transaction.
    fn load_lower(&mut self) -> Result<Cell, StateError> {
        if let Some(c) = self.cache.get(&self.scratch) {
            self.stats.hits += 1;
            return Ok(c.clone());
        }
        self.stats.misses += 1;
        let raw = match self.pending.get(&self.scratch) {
            Some(v) => v.clone(),
            None => self.db.get(CF_STATE, &self.scratch)?,
        };
        Ok(match raw.as_deref().and_then(decode) {
            Some((data, expiry)) => Cell {
                data: Some(data),
                expiry,
                dirty: false,
            },
            None => Cell {
                data: None,
                expiry: NO_EXPIRY,
                dirty: false,
            },
        })
    }

    /// Runs `f` on the state of (`op`, `state`, `key`); `write` says whether
    /// `f` may change it.
    fn with<R>(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        write: bool,
        f: impl FnOnce(&mut Option<Data>) -> R,
    ) -> Result<R, StateError> {
        self.with_sub(op, state, key, &[], write, f)
    }

    /// Like `with`, for the entry `sub` of a key (a window of a key, say):
    /// stored under the key's key group, after the key's bytes.
    fn with_sub<R>(
        &mut self,
        op: u16,
        state: u16,
        key: &[u8],
        sub: &[u8],
        write: bool,
        f: impl FnOnce(&mut Option<Data>) -> R,
    ) -> Result<R, StateError> {
        let decl = self.decl(op, state).ok_or(StateError::Undeclared { op, state })?;
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
        // Returns `f`'s result and the change in live entries.
        let apply = |cell: &mut Cell| {
            let before = isize::from(cell.data.is_some());
            if cell.data.is_some() && cell.expiry != NO_EXPIRY && cell.expiry <= wm {
                // Expired: invisible, and deleted on write-back.
                cell.data = None;
                cell.dirty = true;
            }
            let r = f(&mut cell.data);
            if write {
                cell.dirty = true;
                cell.expiry = expiry;
            }
            (r, isize::from(cell.data.is_some()) - before)
        };
        if self.tx.is_some() {
            let in_tx = self.tx.as_ref().is_some_and(|t| t.contains_key(&self.scratch));
            if !in_tx {
                let cell = self.load_lower()?;
                if let Some(tx) = self.tx.as_mut() {
                    tx.insert(self.scratch.clone(), cell);
                }
            } else {
                self.stats.hits += 1;
            }
            let cell = self
                .tx
                .as_mut()
                .and_then(|t| t.get_mut(&self.scratch))
                .ok_or(StateError::Undeclared { op, state })?;
            let (r, delta) = apply(cell);
            self.tx_live += delta;
            return Ok(r);
        }
        if let Some(cell) = self.cache.get_mut(&self.scratch) {
            self.stats.hits += 1;
            let (r, delta) = apply(cell);
            self.add_live(delta);
            return Ok(r);
        }
        let mut cell = self.load_lower()?;
        let (r, delta) = apply(&mut cell);
        self.add_live(delta);
        let key = self.scratch.clone();
        self.insert_cache(key, cell)?;
        Ok(r)
    }

    fn check_kind(&self, op: u16, state: u16, kind: Kind) -> Result<(), StateError> {
        match self.decl(op, state) {
            Some(d) if d.kind == kind => Ok(()),
            Some(d) => Err(StateError::WrongKind {
                op,
                state,
                declared: d.kind,
                used: kind,
            }),
            None => Err(StateError::Undeclared { op, state }),
        }
    }

    /// Value state: the value, if any.
    pub fn value_get(&mut self, op: u16, state: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.check_kind(op, state, Kind::Value)?;
        self.with(op, state, key, false, |d| match d {
            Some(Data::Value(v)) => Some(v.clone()),
            _ => None,
        })
    }

    /// Value state: sets the value.
    pub fn value_set(&mut self, op: u16, state: u16, key: &[u8], value: Vec<u8>) -> Result<(), StateError> {
        self.check_kind(op, state, Kind::Value)?;
        self.with(op, state, key, true, |d| *d = Some(Data::Value(value)))
    }

    /// List state: the items.
    pub fn list_get(&mut self, op: u16, state: u16, key: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        self.check_kind(op, state, Kind::List)?;
        self.with(op, state, key, false, |d| match d {
            Some(Data::List(v)) => v.clone(),
            _ => Vec::new(),
        })
    }

    /// List state: appends an item.
    pub fn list_append(&mut self, op: u16, state: u16, key: &[u8], item: Vec<u8>) -> Result<(), StateError> {
        self.check_kind(op, state, Kind::List)?;
        self.with(op, state, key, true, |d| match d {
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
        self.check_kind(op, state, Kind::List)?;
        self.with(op, state, key, true, |d| {
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
        self.check_kind(op, state, Kind::Map)?;
        self.with(op, state, key, false, |d| match d {
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
        self.check_kind(op, state, Kind::Map)?;
        self.with(op, state, key, true, |d| match d {
            Some(Data::Map(m)) => {
                m.insert(map_key, value);
            }
            _ => *d = Some(Data::Map([(map_key, value)].into_iter().collect())),
        })
    }

    /// Map state: removes an entry.
    pub fn map_remove(&mut self, op: u16, state: u16, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        self.check_kind(op, state, Kind::Map)?;
        self.with(op, state, key, true, |d| {
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
        self.check_kind(op, state, Kind::Map)?;
        self.with(op, state, key, false, |d| match d {
            Some(Data::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        })
    }

    /// Removes the state of any kind.
    pub fn clear(&mut self, op: u16, state: u16, key: &[u8]) -> Result<(), StateError> {
        self.with(op, state, key, true, |d| *d = None)
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
        self.check_kind(op, state, Kind::Value)?;
        self.with_sub(op, state, key, sub, false, |d| match d {
            Some(Data::Value(v)) => Some(v.clone()),
            _ => None,
        })
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
        self.check_kind(op, state, Kind::Value)?;
        self.with_sub(op, state, key, sub, true, |d| *d = Some(Data::Value(value)))
    }

    /// Removes value state of entry `sub` of a key.
    pub fn sub_clear(&mut self, op: u16, state: u16, key: &[u8], sub: &[u8]) -> Result<(), StateError> {
        self.with_sub(op, state, key, sub, true, |d| *d = None)
    }

    /// Writes every dirty entry (cached or pending) to RocksDB. Entries stay
    /// cached.
    pub fn flush(&mut self) -> Result<(), StateError> {
        for (k, cell) in self.cache.iter_mut() {
            if cell.dirty {
                let encoded = match &cell.data {
                    Some(d) if cell.expiry == NO_EXPIRY || cell.expiry > self.watermark => {
                        Some(encode(d, cell.expiry))
                    }
                    _ => None,
                };
                self.pending.insert(k.clone(), encoded);
                cell.dirty = false;
            }
        }
        self.write_pending()
    }
}
