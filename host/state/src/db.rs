//! The RocksDB database behind a job's keyed state and timers.
//!
//! One database per job, shared by the keyed workers, with three column
//! families:
//!
//! - `state`: `[key group u16][operator u16][state u16][key…]` → an encoded
//!   value (`codec`), whose first 8 bytes are its expiry;
//! - `timers`: `[key group u16][operator u16][domain u8][time u64][key…]` → ∅;
//! - `meta`: operator names → operator ids, so that state is addressed by the
//!   name a job gives an operator, not by its position in the job.
//!
//! Keys start with the key group so that a worker's share of the state is a
//! set of contiguous ranges. A compaction filter drops state entries whose
//! expiry the watermark has passed (TTL), so expired state is removed from
//! disk and not only hidden.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::StateError;
use crate::codec::{NO_EXPIRY, expiry_of};

pub(crate) const CF_STATE: &str = "state";
pub(crate) const CF_TIMERS: &str = "timers";
const CF_META: &str = "meta";

/// Most write-ahead log kept before RocksDB flushes memtables (and so the
/// most a checkpoint copies besides new SST files).
const WAL_LIMIT: u64 = 32 << 20;

/// A job's state database.
pub struct StateDb {
    db: DB,
    path: PathBuf,
    /// Entries expiring at or before this are dropped by compaction.
    expired_before: Arc<AtomicI64>,
    write_opts: WriteOptions,
    /// Whether the state column family held nothing when the database was
    /// opened and nothing has been written to it since (see
    /// [`StateDb::state_untouched`]).
    state_empty_at_open: bool,
    state_written: AtomicBool,
}

fn err(path: &Path) -> impl Fn(rocksdb::Error) -> StateError + '_ {
    move |e| StateError::Db {
        path: path.to_path_buf(),
        message: e.into_string(),
    }
}

impl StateDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Arc<Self>, StateError> {
        std::fs::create_dir_all(path).map_err(|e| StateError::Db {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let expired_before = Arc::new(AtomicI64::new(i64::MIN));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // The write-ahead log is what lets a checkpoint skip the memtable
        // flush (see `checkpoint`). Bounding it bounds what a checkpoint
        // copies: past this size RocksDB flushes memtables in the background.
        opts.set_max_total_wal_size(WAL_LIMIT);
        let mut state_opts = Options::default();
        state_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // State is read by whole key, and a miss (a key that does not exist
        // yet) is the common read of a feature job once state outgrows the
        // cache: Bloom filters let RocksDB answer it without reading a data
        // block of every level, and the memtable's without searching it.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        state_opts.set_block_based_table_factory(&table);
        state_opts.set_memtable_prefix_bloom_ratio(0.02);
        state_opts.set_memtable_whole_key_filtering(true);
        let horizon = expired_before.clone();
        state_opts.set_compaction_filter("wafer-ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
            match expiry_of(value) {
                Some(exp) if exp != NO_EXPIRY && exp <= horizon.load(Ordering::Relaxed) => {
                    rocksdb::compaction_filter::Decision::Remove
                }
                _ => rocksdb::compaction_filter::Decision::Keep,
            }
        });
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_STATE, state_opts),
            ColumnFamilyDescriptor::new(CF_TIMERS, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(err(path))?;
        // Durability comes from checkpoints, not from the write-ahead log:
        // it is written (so checkpoints can take it) but never synced.
        let write_opts = WriteOptions::default();
        let state_empty_at_open = match db.cf_handle(CF_STATE) {
            Some(cf) => db
                .iterator_cf(cf, IteratorMode::Start)
                .next()
                .transpose()
                .map_err(err(path))?
                .is_none(),
            None => false,
        };
        Ok(Arc::new(StateDb {
            db,
            path: path.to_path_buf(),
            expired_before,
            write_opts,
            state_empty_at_open,
            state_written: AtomicBool::new(false),
        }))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db.cf_handle(name).ok_or_else(|| StateError::Db {
            path: self.path.clone(),
            message: format!("missing column family {name}"),
        })
    }

    /// The id of the operator called `name`, assigned on first use and kept
    /// in the database.
    pub fn operator_id(&self, name: &str) -> Result<u16, StateError> {
        let cf = self.cf(CF_META)?;
        let key = format!("op:{name}");
        if let Some(v) = self.db.get_cf(cf, key.as_bytes()).map_err(err(&self.path))?
            && let [a, b] = v[..]
        {
            return Ok(u16::from_be_bytes([a, b]));
        }
        let next = match self.db.get_cf(cf, b"next-op").map_err(err(&self.path))? {
            Some(v) if v.len() == 2 => u16::from_be_bytes([v[0], v[1]]),
            _ => 1,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key.as_bytes(), next.to_be_bytes());
        batch.put_cf(cf, b"next-op", (next + 1).to_be_bytes());
        self.db.write(batch).map_err(err(&self.path))?;
        // Rare writes: flushed at once, so this column family never pins
        // old write-ahead log files (which checkpoints would copy).
        self.db.flush_cf(cf).map_err(err(&self.path))?;
        Ok(next)
    }

    /// Every operator name with its id.
    pub fn operators(&self) -> Result<Vec<(String, u16)>, StateError> {
        let cf = self.cf(CF_META)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(b"op:", Direction::Forward))
        {
            let (k, v) = item.map_err(err(&self.path))?;
            let Some(name) = k.strip_prefix(b"op:") else { break };
            if let [a, b] = v[..] {
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    u16::from_be_bytes([a, b]),
                ));
            }
        }
        Ok(out)
    }

    pub(crate) fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let cf = self.cf(cf)?;
        self.db.get_cf(cf, key).map_err(err(&self.path))
    }

    /// Whether no state has been in the database since it was opened: then
    /// a keyed worker created now knows every state entry RocksDB will hold
    /// (those it writes), and can skip reading keys it never wrote.
    pub(crate) fn state_untouched(&self) -> bool {
        self.state_empty_at_open && !self.state_written.load(Ordering::Acquire)
    }

    /// Applies puts (`Some`) and deletes (`None`) in one write.
    pub(crate) fn write<'a>(
        &self,
        cf: &str,
        changes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), StateError> {
        let handle = self.cf(cf)?;
        let mut batch = WriteBatch::default();
        for (k, v) in changes {
            match v {
                Some(v) => batch.put_cf(handle, k, v),
                None => batch.delete_cf(handle, k),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        if cf == CF_STATE {
            self.state_written.store(true, Ordering::Release);
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(err(&self.path))
    }

    /// Visits every entry of a column family whose key starts with `prefix`.
    pub(crate) fn scan(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        let handle = self.cf(cf)?;
        for item in self
            .db
            .iterator_cf(handle, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(err(&self.path))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v);
        }
        Ok(())
    }

    /// Writes a consistent copy of the database to `dir` (which must not
    /// exist): SST files are hard-linked, so unchanged files cost nothing,
    /// and the write-ahead log since the last memtable flush is copied.
    /// Call while no worker writes (the checkpoint barrier).
    ///
    /// Why not flush the memtables instead: that builds an SST from every
    /// write since the last flush, ~1 µs per entry, while the keyed workers
    /// wait; copying the log (bounded by `WAL_LIMIT`) is a sequential copy.
    /// Opening the copy replays the log.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StateError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(err(&self.path))?;
        cp.create_checkpoint_with_log_size(dir, u64::MAX)
            .map_err(err(&self.path))
    }

    /// Removes all state and timers of operator `op` (state of an operator
    /// the job no longer has, dropped on request).
    pub fn drop_operator(&self, op: u16) -> Result<usize, StateError> {
        let mut n = 0;
        for cf in [CF_STATE, CF_TIMERS] {
            let mut doomed = Vec::new();
            self.scan(cf, &[], |k, _| {
                let of = match cf {
                    CF_STATE => crate::codec::split_state_key(k).map(|(_, o, _, _)| o),
                    _ => crate::codec::split_timer_key(k).map(|(_, o, _, _, _)| o),
                };
                if of == Some(op) {
                    doomed.push(k.to_vec());
                }
            })?;
            n += doomed.len();
            self.write(cf, doomed.iter().map(|k| (k.as_slice(), None)))?;
        }
        let cf = self.cf(CF_META)?;
        for (name, id) in self.operators()? {
            if id == op {
                self.db
                    .delete_cf(cf, format!("op:{name}").as_bytes())
                    .map_err(err(&self.path))?;
            }
        }
        Ok(n)
    }

    /// Lets compaction drop entries that expired at or before `wm` (the
    /// smallest watermark of the job's keyed workers).
    pub fn set_expiry_horizon(&self, wm: i64) {
        self.expired_before.fetch_max(wm, Ordering::Relaxed);
    }

    /// Flushes memtables and compacts the state, applying the TTL filter to
    /// everything on disk.
    pub fn compact(&self) -> Result<(), StateError> {
        for name in [CF_STATE, CF_TIMERS] {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(err(&self.path))?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        self.db.flush_cf(self.cf(CF_META)?).map_err(err(&self.path))?;
        Ok(())
    }

    /// Number of entries in the state and timers column families (for
    /// inspection and tests).
    pub fn count(&self) -> Result<(usize, usize), StateError> {
        let mut s = 0;
        self.scan(CF_STATE, &[], |_, _| s += 1)?;
        let mut t = 0;
        self.scan(CF_TIMERS, &[], |_, _| t += 1)?;
        Ok((s, t))
    }

    /// Entries per (operator id, state index), and timers per operator id.
    pub fn census(&self) -> Result<Census, StateError> {
        let mut c = Census::default();
        self.scan(CF_STATE, &[], |k, v| {
            if let Some((_, op, state, _)) = crate::codec::split_state_key(k) {
                let e = c.states.entry((op, state)).or_default();
                e.0 += 1;
                if expiry_of(v).is_some_and(|x| x != NO_EXPIRY) {
                    e.1 += 1;
                }
            }
        })?;
        self.scan(CF_TIMERS, &[], |k, _| {
            if let Some((_, op, _, _, _)) = crate::codec::split_timer_key(k) {
                *c.timers.entry(op).or_default() += 1;
            }
        })?;
        Ok(c)
    }
}

/// What a state database holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// (operator, state) → (entries, entries with a TTL).
    pub states: std::collections::BTreeMap<(u16, u16), (usize, usize)>,
    /// operator → timers.
    pub timers: std::collections::BTreeMap<u16, usize>,
}
