//! A keyed worker's state and timers, and the backend through which a
//! processor instance reaches them during a call.

use std::sync::{Arc, Mutex};

use wafer_row::Batch;
use wafer_state::{Domain, KeyedState, StateDb, StateError, Timers};
use wafer_wasm::{KeyedBackend, TimeDomain};

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
}

impl ProcBackend {
    fn with<T>(
        &mut self,
        state: u32,
        key: u32,
        f: impl FnOnce(&mut Core, u16, u16, &[u8]) -> Result<T, StateError>,
    ) -> Result<T, String> {
        if state >= u32::from(self.states) {
            return Err(format!(
                "state {state} was never declared (the processor declared {})",
                self.states
            ));
        }
        let keys = Batch::new(&self.keys, &self.key_ends);
        let Some(k) = keys.get(key as usize) else {
            return Err(format!("key {key} is not a key of this call"));
        };
        let mut core = self
            .core
            .lock()
            .map_err(|_| "keyed state lock poisoned".to_string())?;
        core.state.set_horizon(self.horizons.get(key as usize).copied());
        let result = f(&mut core, self.op, state as u16, k);
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
}

fn domain(d: TimeDomain) -> Domain {
    match d {
        TimeDomain::EventTime => Domain::EventTime,
        TimeDomain::ProcessingTime => Domain::ProcessingTime,
    }
}

impl KeyedBackend for ProcBackend {
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
        let keys = Batch::new(&self.keys, &self.key_ends);
        let k = keys
            .get(key as usize)
            .ok_or_else(|| format!("key {key} is not a key of this call"))?;
        let mut core = self
            .core
            .lock()
            .map_err(|_| "keyed state lock poisoned".to_string())?;
        core.timers.register(self.op, k, domain(d), time);
        Ok(())
    }
    fn timer_delete(&mut self, key: u32, d: TimeDomain, time: i64) -> Result<(), String> {
        let keys = Batch::new(&self.keys, &self.key_ends);
        let k = keys
            .get(key as usize)
            .ok_or_else(|| format!("key {key} is not a key of this call"))?;
        let mut core = self
            .core
            .lock()
            .map_err(|_| "keyed state lock poisoned".to_string())?;
        core.timers.delete(self.op, k, domain(d), time);
        Ok(())
    }
    fn watermark(&self) -> i64 {
        self.watermark
    }
    fn processing_time(&self) -> i64 {
        wafer_core::time::now_ms()
    }
}
