//! A keyed worker's state and timers, and the backend through which a
//! processor instance reaches them during a call.

use std::sync::{Arc, Mutex};

use wafer_row::Batch;
use wafer_row::ValueBatch;
use wafer_state::{Domain, KeyedState, StateDb, StateError, Timers};
use wafer_wasm::{KeyedBackend, TimeDomain, TimerChange, check_writes};

use crate::RuntimeError;

/// State and timers of one keyed worker.
pub(crate) struct Core {
    pub state: KeyedState,
    pub timers: Timers,
    /// A storage failure seen during a guest call (which trapped the guest);
    /// the worker turns it into a job failure after the call.
    pub fatal: Option<StateError>,
}

impl Core {
    pub(crate) fn new(db: Arc<StateDb>, cache_entries: usize) -> Self {
        Core {
            state: KeyedState::new(db.clone(), cache_entries),
            timers: Timers::new(db),
            fatal: None,
        }
    }

    pub(crate) fn begin(&mut self) {
        self.state.begin();
        self.timers.begin();
    }

    pub(crate) fn commit(&mut self) -> Result<(), RuntimeError> {
        self.timers.commit();
        self.state.commit().map_err(state_error)
    }

    pub(crate) fn abort(&mut self) {
        self.state.abort();
        self.timers.abort();
    }

    /// Turns a storage failure recorded during a call into an error.
    pub(crate) fn check(&mut self) -> Result<(), RuntimeError> {
        match self.fatal.take() {
            Some(e) => Err(state_error(e)),
            None => Ok(()),
        }
    }

    /// Starts freezing dirty state and timer changes as of now (a
    /// checkpoint barrier); see `wafer_state::Frozen`.
    pub(crate) fn begin_freeze(&mut self) -> Result<(), RuntimeError> {
        self.state.begin_freeze(&mut self.timers).map_err(state_error)
    }

    /// Writes dirty state and timers to RocksDB.
    pub(crate) fn flush(&mut self) -> Result<(), RuntimeError> {
        self.state.flush().map_err(state_error)?;
        self.timers.flush().map_err(state_error)
    }
}

pub(crate) fn state_error(e: StateError) -> RuntimeError {
    RuntimeError::Internal(format!("keyed state: {e}"))
}

/// What a processor instance may touch during one call: its operator's
/// declared state, for the keys of the call.
pub(crate) struct ProcBackend {
    pub core: Arc<Mutex<Core>>,
    pub op: u16,
    /// Number of states the processor declared.
    pub states: u16,
    pub keys: Vec<u8>,
    pub key_ends: Vec<u32>,
    pub watermark: i64,
    /// For a timer call, the time of each key's timer: state expires as of
    /// it (`KeyedState::set_horizon`). Empty for record calls.
    pub horizons: Vec<i64>,
    /// Per (state, key) of the call, the cache slot its entry was last
    /// found in (`NO_SLOT`: not yet), handed to the next access of it as a
    /// hint: a call reads a key's state, then writes it.
    pub slots: Vec<std::cell::Cell<u32>>,
}

/// No slot known yet, in `ProcBackend::slots`.
pub(crate) const NO_SLOT: u32 = u32::MAX;

impl ProcBackend {
    /// The backend of one call over the keys `keys` (ends `key_ends`).
    pub(crate) fn new(
        core: Arc<Mutex<Core>>,
        op: u16,
        states: u16,
        keys: Vec<u8>,
        key_ends: Vec<u32>,
        watermark: i64,
        horizons: Vec<i64>,
    ) -> Self {
        let slots = vec![std::cell::Cell::new(NO_SLOT); usize::from(states) * key_ends.len()];
        ProcBackend {
            core,
            op,
            states,
            keys,
            key_ends,
            watermark,
            horizons,
            slots,
        }
    }

    fn check_state(&self, state: u32) -> Result<(), String> {
        if state >= u32::from(self.states) {
            return Err(format!(
                "state {state} was never declared (the processor declared {})",
                self.states
            ));
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Core>, String> {
        self.core
            .lock()
            .map_err(|_| "keyed state lock poisoned".to_string())
    }

    /// Runs `f` on the state of key `key` (an index into the call's keys),
    /// with the key's expiry horizon set, on a locked core.
    fn on_key<T>(
        &self,
        core: &mut Core,
        state: u32,
        key: u32,
        f: impl FnOnce(&mut Core, u16, u16, &[u8]) -> Result<T, StateError>,
    ) -> Result<T, String> {
        let keys = Batch::new(&self.keys, &self.key_ends);
        let Some(k) = keys.get(key as usize) else {
            return Err(format!("key {key} is not a key of this call"));
        };
        core.state.set_horizon(self.horizons.get(key as usize).copied());
        let slot = self
            .slots
            .get(state as usize * self.key_ends.len() + key as usize);
        if let Some(s) = slot
            && s.get() != NO_SLOT
        {
            core.state.hint_slot(s.get());
        }
        let result = f(core, self.op, state as u16, k);
        if let Some(s) = slot {
            s.set(core.state.last_slot());
        }
        core.state.set_horizon(None);
        match result {
            Ok(v) => Ok(v),
            Err(e @ StateError::Db { .. }) => {
                let msg = e.to_string();
                core.fatal = Some(e);
                Err(msg)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn with<T>(
        &mut self,
        state: u32,
        key: u32,
        f: impl FnOnce(&mut Core, u16, u16, &[u8]) -> Result<T, StateError>,
    ) -> Result<T, String> {
        self.check_state(state)?;
        let mut core = self.lock()?;
        self.on_key(&mut core, state, key, f)
    }

    fn timer_key(&self, key: u32) -> Result<&[u8], String> {
        Batch::new(&self.keys, &self.key_ends)
            .get(key as usize)
            .ok_or_else(|| format!("key {key} is not a key of this call"))
    }
}

fn domain(d: TimeDomain) -> Domain {
    match d {
        TimeDomain::EventTime => Domain::EventTime,
        TimeDomain::ProcessingTime => Domain::ProcessingTime,
    }
}

impl KeyedBackend for ProcBackend {
    fn key_count(&self) -> u32 {
        self.key_ends.len() as u32
    }
    fn value_get(&mut self, state: u32, key: u32) -> Result<Option<Vec<u8>>, String> {
        self.with(state, key, |c, op, s, k| c.state.value_get(op, s, k))
    }
    fn value_set(&mut self, state: u32, key: u32, value: Vec<u8>) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| c.state.value_set(op, s, k, value))
    }
    fn list_get(&mut self, state: u32, key: u32) -> Result<Vec<Vec<u8>>, String> {
        self.with(state, key, |c, op, s, k| c.state.list_get(op, s, k))
    }
    fn list_append(&mut self, state: u32, key: u32, item: Vec<u8>) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| c.state.list_append(op, s, k, item))
    }
    fn list_set(&mut self, state: u32, key: u32, items: Vec<Vec<u8>>) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| c.state.list_set(op, s, k, items))
    }
    fn map_get(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        self.with(state, key, |c, op, s, k| c.state.map_get(op, s, k, &map_key))
    }
    fn map_put(&mut self, state: u32, key: u32, map_key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| {
            c.state.map_put(op, s, k, map_key, value)
        })
    }
    fn map_remove(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| c.state.map_remove(op, s, k, &map_key))
    }
    fn map_entries(&mut self, state: u32, key: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        self.with(state, key, |c, op, s, k| c.state.map_entries(op, s, k))
    }
    fn clear(&mut self, state: u32, key: u32) -> Result<(), String> {
        self.with(state, key, |c, op, s, k| c.state.clear(op, s, k))
    }
    fn timer_register(&mut self, key: u32, d: TimeDomain, time: i64) -> Result<(), String> {
        let k = self.timer_key(key)?;
        self.lock()?.timers.register(self.op, k, domain(d), time);
        Ok(())
    }
    fn timer_delete(&mut self, key: u32, d: TimeDomain, time: i64) -> Result<(), String> {
        let k = self.timer_key(key)?;
        self.lock()?.timers.delete(self.op, k, domain(d), time);
        Ok(())
    }
    fn value_get_all(&mut self, state: u32, out: &mut ValueBatch) -> Result<(), String> {
        self.check_state(state)?;
        let mut core = self.lock()?;
        let n = self.key_ends.len();
        // Room for every key's value up front (a processor's values are
        // usually small): growing the batch copied it again and again.
        out.ends.reserve(n);
        out.present.reserve(n);
        out.data.reserve(n * 64);
        for key in 0..n as u32 {
            self.on_key(&mut core, state, key, |c, op, s, k| {
                c.state.value_with(op, s, k, |v| out.push(v))
            })?;
        }
        Ok(())
    }
    fn value_write_all(&mut self, states: &[u32], keys: &[u32], values: &ValueBatch) -> Result<(), String> {
        check_writes(states, keys, values)?;
        let mut core = self.lock()?;
        for (i, (&state, &key)) in states.iter().zip(keys).enumerate() {
            self.check_state(state)?;
            match values.get(i) {
                Some(v) => self.on_key(&mut core, state, key, |c, op, s, k| {
                    c.state.value_set_from(op, s, k, v)
                })?,
                None => self.on_key(&mut core, state, key, |c, op, s, k| c.state.clear(op, s, k))?,
            }
        }
        Ok(())
    }
    fn timer_change_all(&mut self, changes: &[TimerChange]) -> Result<(), String> {
        let mut core = self.lock()?;
        for c in changes {
            let k = self.timer_key(c.key)?;
            if c.delete {
                core.timers.delete(self.op, k, domain(c.domain), c.time);
            } else {
                core.timers.register(self.op, k, domain(c.domain), c.time);
            }
        }
        Ok(())
    }
    fn watermark(&self) -> i64 {
        self.watermark
    }
    fn processing_time(&self) -> i64 {
        wafer_core::time::now_ms()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use wafer_state::{Kind, StateDecl};

    use super::*;

    const KEYS: [&str; 6] = ["k0", "k1", "k2", "ключ", "k4", "k5"];

    fn backend(core: &Arc<Mutex<Core>>, op: u16, keys: &[usize]) -> ProcBackend {
        let (mut data, mut ends) = (Vec::new(), Vec::new());
        for &k in keys {
            data.extend_from_slice(KEYS[k].as_bytes());
            ends.push(data.len() as u32);
        }
        ProcBackend::new(core.clone(), op, 2, data, ends, 0, Vec::new())
    }

    /// A little generator, so the script is the same on every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The batched calls a Rust guest makes and the per-key calls a guest
    /// of another SDK may make reach the same state: one random script runs
    /// per key on operator 1 and batched on operator 2, and every read and
    /// the timers left at the end match a map kept by the test.
    #[test]
    fn batched_state_calls_match_per_key_calls_and_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let core = Arc::new(Mutex::new(Core::new(db, 4)));
        {
            let mut c = core.lock().unwrap();
            for op in [1, 2] {
                for s in [0, 1] {
                    c.state.declare(
                        op,
                        s,
                        StateDecl {
                            kind: Kind::Value,
                            ttl_ms: None,
                        },
                    );
                }
            }
        }
        let mut model: HashMap<(u32, usize), Vec<u8>> = HashMap::new();
        let mut model_timers: BTreeSet<(usize, i64)> = BTreeSet::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for call in 0..300 {
            // The keys of a call: distinct, in random order.
            let mut keys: Vec<usize> = (0..KEYS.len()).collect();
            for i in (1..keys.len()).rev() {
                keys.swap(i, rng.below(i as u64 + 1) as usize);
            }
            keys.truncate(1 + rng.below(KEYS.len() as u64) as usize);
            let mut one = backend(&core, 1, &keys);
            let mut all = backend(&core, 2, &keys);
            for state in [0, 1] {
                let mut got = ValueBatch::default();
                all.value_get_all(state, &mut got).unwrap();
                assert_eq!(got.len(), keys.len());
                for (i, &k) in keys.iter().enumerate() {
                    let want = model.get(&(state, k)).map(Vec::as_slice);
                    assert_eq!(got.get(i), want, "call {call}: batched read of {}", KEYS[k]);
                    assert_eq!(
                        one.value_get(state, i as u32).unwrap().as_deref(),
                        want,
                        "call {call}: per-key read of {}",
                        KEYS[k]
                    );
                }
            }
            let (mut states, mut idx, mut values, mut changes) =
                (Vec::new(), Vec::new(), ValueBatch::default(), Vec::new());
            for _ in 0..rng.below(8) {
                let (state, i) = (rng.below(2) as u32, rng.below(keys.len() as u64) as u32);
                let k = keys[i as usize];
                if rng.below(4) == 0 {
                    one.clear(state, i).unwrap();
                    values.push(None);
                    model.remove(&(state, k));
                } else {
                    let v = format!("{call}:{}", rng.below(1000)).into_bytes();
                    one.value_set(state, i, v.clone()).unwrap();
                    values.push(Some(&v));
                    model.insert((state, k), v);
                }
                states.push(state);
                idx.push(i);
                let time = rng.below(5) as i64;
                let delete = rng.below(3) == 0;
                if delete {
                    one.timer_delete(i, TimeDomain::EventTime, time).unwrap();
                    model_timers.remove(&(k, time));
                } else {
                    one.timer_register(i, TimeDomain::EventTime, time).unwrap();
                    model_timers.insert((k, time));
                }
                changes.push(TimerChange {
                    key: i,
                    domain: TimeDomain::EventTime,
                    time,
                    delete,
                });
            }
            all.value_write_all(&states, &idx, &values).unwrap();
            all.timer_change_all(&changes).unwrap();
        }
        let fired = core
            .lock()
            .unwrap()
            .timers
            .pop_due(Domain::EventTime, i64::MAX, usize::MAX);
        let timers_of = |op: u16| -> BTreeSet<(usize, i64)> {
            fired
                .iter()
                .filter(|f| f.op == op)
                .map(|f| {
                    (
                        KEYS.iter()
                            .position(|k| k.as_bytes() == f.key.as_slice())
                            .unwrap(),
                        f.time,
                    )
                })
                .collect()
        };
        assert_eq!(timers_of(1), model_timers);
        assert_eq!(timers_of(2), model_timers);

        // Bad batches are refused with a message, not applied in part.
        let mut all = backend(&core, 2, &[0]);
        let mut v = ValueBatch::default();
        v.push(Some(b"x"));
        let err = all.value_write_all(&[0, 1], &[0], &v).unwrap_err();
        assert!(err.contains("inconsistent"), "{err}");
        assert!(
            all.value_write_all(&[0], &[3], &v)
                .unwrap_err()
                .contains("not a key")
        );
        assert!(
            all.value_write_all(&[7], &[0], &v)
                .unwrap_err()
                .contains("never declared")
        );
    }
}
