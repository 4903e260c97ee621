//! Keyed processors: per-record functions with keyed state, timers and named
//! outputs.
//!
//! The host groups each batch by key and calls the processor once per batch;
//! the SDK calls [`Processor::begin_key`], then [`Processor::process`] for
//! each record of the key, then [`Processor::end_key`]. Everything a call does
//! through a [`Context`] (state, timers, emitted rows) concerns that key. State
//! lives in the host (RocksDB behind a cache); a call that traps leaves it
//! untouched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;

#[doc(hidden)]
pub use wafer_row::ValueBatch;
use wafer_row::{Row, RowWriter, Schema};

use crate::__private::proc_host;
use crate::{Config, Error, FromRow, ReadField, Record};

/// A value that can be kept in keyed state: a compact binary encoding.
///
/// Implemented for integers, floats, bools, strings, byte vectors, options
/// and tuples of these; implement it for your own types by composing those.
pub trait StateCodec: Sized {
    /// Appends the encoding of `self`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Option<Self>;
}

macro_rules! fixed_codec {
    ($($t:ty),*) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                const N: usize = std::mem::size_of::<$t>();
                let b: [u8; N] = input.get(..N)?.try_into().ok()?;
                *input = &input[N..];
                Some(<$t>::from_le_bytes(b))
            }
        }
    )*};
}

fixed_codec!(i64, u64, i32, u32, f64, u8);

impl StateCodec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        u8::decode(input).map(|b| b != 0)
    }
}

impl StateCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let n = u32::decode(input)? as usize;
        let b = input.get(..n)?.to_vec();
        *input = &input[n..];
        Some(b)
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        String::from_utf8(Vec::<u8>::decode(input)?).ok()
    }
}

impl<T: StateCodec> StateCodec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
            None => out.push(0),
        }
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        match u8::decode(input)? {
            0 => Some(None),
            _ => T::decode(input).map(Some),
        }
    }
}

macro_rules! tuple_codec {
    ($($n:tt $t:ident),*) => {
        impl<$($t: StateCodec),*> StateCodec for ($($t,)*) {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$n.encode(out);)*
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                Some(($($t::decode(input)?,)*))
            }
        }
    };
}

tuple_codec!(0 A, 1 B);
tuple_codec!(0 A, 1 B, 2 C);
tuple_codec!(0 A, 1 B, 2 C, 3 D);
tuple_codec!(0 A, 1 B, 2 C, 3 D, 4 E);
tuple_codec!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F);

fn to_bytes<T: StateCodec>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

fn from_bytes<T: StateCodec>(b: &[u8]) -> Option<T> {
    let mut input = b;
    T::decode(&mut input)
}

/// The kind of a declared piece of state.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Value,
    List,
    Map,
}

/// A declared piece of state.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct StateDecl {
    pub name: String,
    pub kind: StateKind,
    pub ttl_ms: Option<u64>,
}

/// A declared output.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct OutputDecl {
    pub name: String,
    pub schema: Schema,
    pub key: Vec<String>,
}

/// What a processor declares in `new`: its state and its outputs.
#[derive(Debug, Default)]
pub struct Setup {
    #[doc(hidden)]
    pub states: Vec<StateDecl>,
    #[doc(hidden)]
    pub outputs: Vec<OutputDecl>,
}

impl Setup {
    fn state(&mut self, name: &str, kind: StateKind, ttl_ms: Option<u64>) -> u32 {
        self.states.push(StateDecl {
            name: name.to_string(),
            kind,
            ttl_ms,
        });
        (self.states.len() - 1) as u32
    }

    /// Declares value state (one `T` per key). With `ttl_ms`, a value not
    /// written for that long (in event time) disappears.
    pub fn value<T: StateCodec>(&mut self, name: &str, ttl_ms: Option<u64>) -> ValueState<T> {
        ValueState {
            idx: self.state(name, StateKind::Value, ttl_ms),
            _t: PhantomData,
        }
    }

    /// Declares list state.
    pub fn list<T: StateCodec>(&mut self, name: &str, ttl_ms: Option<u64>) -> ListState<T> {
        ListState {
            idx: self.state(name, StateKind::List, ttl_ms),
            _t: PhantomData,
        }
    }

    /// Declares map state.
    pub fn map<K: StateCodec, V: StateCodec>(&mut self, name: &str, ttl_ms: Option<u64>) -> MapState<K, V> {
        MapState {
            idx: self.state(name, StateKind::Map, ttl_ms),
            _t: PhantomData,
        }
    }

    /// Declares an output of rows `R`; `key` names the fields identifying a
    /// result (later rows with the same key replace earlier ones).
    pub fn output<R: Record>(&mut self, name: &str, key: &[&str]) -> Result<Output<R>, String> {
        let schema = R::schema().map_err(|e| format!("output `{name}`: {e}"))?;
        let n = schema.len();
        self.outputs.push(OutputDecl {
            name: name.to_string(),
            schema,
            key: key.iter().map(|k| k.to_string()).collect(),
        });
        Ok(Output {
            idx: (self.outputs.len() - 1) as u32,
            n,
            _r: PhantomData,
        })
    }
}

/// A named output of rows `R`.
#[derive(Debug)]
pub struct Output<R> {
    idx: u32,
    n: usize,
    _r: PhantomData<fn(&R)>,
}

/// The key of the records (or timer) being handled: a row of the key fields.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    row: Row<'a>,
    schema: &'a Schema,
}

impl<'a> Key<'a> {
    /// A key field by name.
    pub fn get<T: ReadField<'a>>(&self, name: &str) -> Result<T, String> {
        T::read(&self.row, self.schema.index_of(name), name)
    }

    /// A str key field by name.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.row.str(self.schema.index_of(name)?)
    }

    /// An int key field by name.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.row.int(self.schema.index_of(name)?)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.row.as_bytes()
    }
}

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// The watermark.
    EventTime,
    /// The host's clock.
    ProcessingTime,
}

/// A timer that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// The time it was set for.
    pub time: i64,
    /// Its clock.
    pub domain: TimeDomain,
}

/// Rows emitted during one call.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Emitted {
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
    pub outputs: Vec<u32>,
}

/// Value-state writes of a call (`state.value-writes` in WIT).
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueWrites {
    pub states: Vec<u32>,
    pub keys: Vec<u32>,
    pub values: ValueBatch,
}

/// A timer set or removed during a call (`timers.timer-change` in WIT).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerChange {
    pub key: u32,
    pub domain: TimeDomain,
    pub time: i64,
    pub delete: bool,
}

const UNWRITTEN: u32 = u32::MAX;

/// A hasher for the keys of one call: SipHash (std's default) was a few
/// percent of a timer-heavy processor's time. No defence against crafted
/// collisions is needed: the keys come from the host, and the map lives for
/// one call.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
        }
        let mut w = [0u8; 8];
        let rest = chunks.remainder();
        w[..rest.len()].copy_from_slice(rest);
        self.0 = (self.0 ^ u64::from_le_bytes(w) ^ bytes.len() as u64)
            .wrapping_mul(K)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        // Mixed once more: hashbrown takes its control bits from the top.
        let h = self.0 ^ (self.0 >> 32);
        h.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (h >> 29)
    }
}

/// A value state read for every key of the call, and the last write to
/// each key since.
#[derive(Debug)]
struct Fetched {
    values: ValueBatch,
    last_write: Vec<u32>,
}

/// What a call does to value state and timers, batched: a value state is
/// read for all keys of the call the first time it is touched, and writes
/// and timer changes go to the host in one call each when the call ends
/// (one host call per batch instead of one per key; calls across the
/// component boundary are what a stateful guest spends its time on).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct CallState {
    n_keys: u32,
    /// Key index to the first index with the same key bytes, when keys
    /// repeat (fired timers); empty when every key is distinct (the groups
    /// of a batch).
    canon: Vec<u32>,
    /// By state: a processor has a handful, so a list searched in order
    /// beats hashing the state number (SipHash) on every read and write.
    fetched: Vec<(u32, Fetched)>,
    writes: ValueWrites,
    timers: Vec<TimerChange>,
}

impl CallState {
    /// For a call over distinct keys.
    pub fn distinct(n_keys: usize) -> Self {
        CallState {
            n_keys: n_keys as u32,
            ..CallState::default()
        }
    }

    /// For a call over keys that may repeat: state of a repeated key is
    /// read and written under its first index, so a write is seen by the
    /// later entries of the same key.
    pub fn repeating(keys: &[&[u8]]) -> Self {
        let mut first: HashMap<&[u8], u32, BuildHasherDefault<KeyHasher>> =
            HashMap::with_capacity_and_hasher(keys.len(), Default::default());
        let canon: Vec<u32> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| *first.entry(*k).or_insert(i as u32))
            .collect();
        let distinct = canon.iter().enumerate().all(|(i, &c)| c == i as u32);
        CallState {
            n_keys: keys.len() as u32,
            canon: if distinct { Vec::new() } else { canon },
            ..CallState::default()
        }
    }

    fn canon(&self, key: u32) -> u32 {
        self.canon.get(key as usize).copied().unwrap_or(key)
    }

    fn value(&mut self, state: u32, key: u32) -> Option<&[u8]> {
        let key = self.canon(key);
        if !self.fetched.iter().any(|(s, _)| *s == state) {
            let h = proc_host()?;
            let values = (h.value_get_all)(state);
            let mut last_write = vec![UNWRITTEN; self.n_keys as usize];
            // Writes buffered before the first read of this state.
            for (w, (&s, &k)) in self.writes.states.iter().zip(&self.writes.keys).enumerate() {
                if s == state
                    && let Some(slot) = last_write.get_mut(k as usize)
                {
                    *slot = w as u32;
                }
            }
            self.fetched.push((state, Fetched { values, last_write }));
        }
        let (_, f) = self.fetched.iter().find(|(s, _)| *s == state)?;
        match f.last_write.get(key as usize).copied() {
            Some(UNWRITTEN) | None => f.values.get(key as usize),
            Some(w) => self.writes.values.get(w as usize),
        }
    }

    fn write(&mut self, state: u32, key: u32, encode: Option<impl FnOnce(&mut Vec<u8>)>) {
        let key = self.canon(key);
        let w = self.writes.values.push_with(encode);
        self.writes.states.push(state);
        self.writes.keys.push(key);
        if let Some(slot) = self
            .fetched
            .iter_mut()
            .find(|(s, _)| *s == state)
            .and_then(|(_, f)| f.last_write.get_mut(key as usize))
        {
            *slot = w;
        }
    }

    fn timer(&mut self, key: u32, domain: TimeDomain, time: i64, delete: bool) {
        self.timers.push(TimerChange {
            key: self.canon(key),
            domain,
            time,
            delete,
        });
    }

    /// Sends the buffered writes and timer changes to the host.
    pub fn flush(self) {
        let Some(h) = proc_host() else { return };
        if !self.writes.states.is_empty() {
            (h.value_write_all)(self.writes);
        }
        if !self.timers.is_empty() {
            (h.timer_change_all)(self.timers);
        }
    }
}

/// What a processor can do for the key being handled.
pub struct Context<'a> {
    key_index: u32,
    key: Key<'a>,
    emitted: &'a mut Emitted,
    call: &'a RefCell<CallState>,
}

impl<'a> Context<'a> {
    #[doc(hidden)]
    pub fn new(
        key_index: u32,
        key: &'a [u8],
        key_schema: &'a Schema,
        emitted: &'a mut Emitted,
        call: &'a RefCell<CallState>,
    ) -> Self {
        Context {
            key_index,
            key: Key {
                row: Row::new(key, key_schema.len()),
                schema: key_schema,
            },
            emitted,
            call,
        }
    }

    /// The current key.
    pub fn key(&self) -> Key<'a> {
        self.key
    }

    /// Emits a row to an output.
    pub fn emit<R: Record>(&mut self, output: &Output<R>, row: &R) {
        let mut w = RowWriter::new(&mut self.emitted.data, output.n);
        row.write(&mut w);
        let end = w.finish();
        self.emitted.ends.push(end as u32);
        self.emitted.outputs.push(output.idx);
    }

    /// Sets an event-time timer for the current key (one per time; setting it
    /// again is a no-op).
    pub fn set_timer(&mut self, time: i64) {
        self.set_timer_in(TimeDomain::EventTime, time);
    }

    /// Removes an event-time timer of the current key.
    pub fn delete_timer(&mut self, time: i64) {
        self.delete_timer_in(TimeDomain::EventTime, time);
    }

    /// Sets a timer in either clock (sent to the host when the call ends).
    pub fn set_timer_in(&mut self, domain: TimeDomain, time: i64) {
        self.call.borrow_mut().timer(self.key_index, domain, time, false);
    }

    /// Removes a timer in either clock (sent to the host when the call ends).
    pub fn delete_timer_in(&mut self, domain: TimeDomain, time: i64) {
        self.call.borrow_mut().timer(self.key_index, domain, time, true);
    }

    /// The operator's event-time watermark.
    pub fn watermark(&self) -> i64 {
        proc_host().map(|h| (h.watermark)()).unwrap_or(i64::MIN)
    }

    /// The host's clock, in milliseconds since the epoch.
    pub fn processing_time(&self) -> i64 {
        proc_host().map(|h| (h.processing_time)()).unwrap_or(0)
    }

    fn index(&self) -> u32 {
        self.key_index
    }
}

/// One `T` per key.
#[derive(Debug)]
pub struct ValueState<T> {
    idx: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateCodec> ValueState<T> {
    /// The value for the current key (the first read of a call reads the
    /// state of all its keys at once).
    pub fn get(&self, ctx: &Context<'_>) -> Option<T> {
        ctx.call
            .borrow_mut()
            .value(self.idx, ctx.index())
            .and_then(from_bytes)
    }

    /// Sets the value for the current key (sent to the host when the call
    /// ends; later reads in the call see it).
    pub fn set(&self, ctx: &mut Context<'_>, value: &T) {
        ctx.call
            .borrow_mut()
            .write(self.idx, ctx.index(), Some(|out: &mut Vec<u8>| value.encode(out)));
    }

    /// Removes the value for the current key.
    pub fn clear(&self, ctx: &mut Context<'_>) {
        ctx.call
            .borrow_mut()
            .write(self.idx, ctx.index(), None::<fn(&mut Vec<u8>)>);
    }
}

/// A list of `T` per key.
#[derive(Debug)]
pub struct ListState<T> {
    idx: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateCodec> ListState<T> {
    /// The items for the current key (items that cannot be decoded are
    /// skipped).
    pub fn get(&self, ctx: &Context<'_>) -> Vec<T> {
        match proc_host() {
            Some(h) => (h.list_get)(self.idx, ctx.index())
                .iter()
                .filter_map(|b| from_bytes(b))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Appends an item.
    pub fn push(&self, ctx: &mut Context<'_>, item: &T) {
        if let Some(h) = proc_host() {
            (h.list_append)(self.idx, ctx.index(), &to_bytes(item));
        }
    }

    /// Replaces the items.
    pub fn set(&self, ctx: &mut Context<'_>, items: &[T]) {
        if let Some(h) = proc_host() {
            let items: Vec<Vec<u8>> = items.iter().map(to_bytes).collect();
            (h.list_set)(self.idx, ctx.index(), &items);
        }
    }

    /// Removes the list.
    pub fn clear(&self, ctx: &mut Context<'_>) {
        if let Some(h) = proc_host() {
            (h.clear)(self.idx, ctx.index());
        }
    }
}

/// A map from `K` to `V` per key.
#[derive(Debug)]
pub struct MapState<K, V> {
    idx: u32,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: StateCodec, V: StateCodec> MapState<K, V> {
    /// One entry.
    pub fn get(&self, ctx: &Context<'_>, key: &K) -> Option<V> {
        let h = proc_host()?;
        (h.map_get)(self.idx, ctx.index(), &to_bytes(key)).and_then(|b| from_bytes(&b))
    }

    /// Sets an entry.
    pub fn put(&self, ctx: &mut Context<'_>, key: &K, value: &V) {
        if let Some(h) = proc_host() {
            (h.map_put)(self.idx, ctx.index(), &to_bytes(key), &to_bytes(value));
        }
    }

    /// Removes an entry.
    pub fn remove(&self, ctx: &mut Context<'_>, key: &K) {
        if let Some(h) = proc_host() {
            (h.map_remove)(self.idx, ctx.index(), &to_bytes(key));
        }
    }

    /// Every entry, in key byte order.
    pub fn entries(&self, ctx: &Context<'_>) -> Vec<(K, V)> {
        match proc_host() {
            Some(h) => (h.map_entries)(self.idx, ctx.index())
                .iter()
                .filter_map(|(k, v)| Some((from_bytes(k)?, from_bytes(v)?)))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Removes the whole map.
    pub fn clear(&self, ctx: &mut Context<'_>) {
        if let Some(h) = proc_host() {
            (h.clear)(self.idx, ctx.index());
        }
    }
}

/// A keyed function of one input.
pub trait Processor: Sized + 'static {
    /// The fields it reads, by name.
    type Input<'a>: FromRow<'a>;

    /// Creates it from its `config`, declaring state and outputs in `setup`.
    fn new(config: &Config, setup: &mut Setup) -> Result<Self, String>;

    /// Called before the records of one key in a batch.
    fn begin_key(&mut self, _ctx: &mut Context<'_>) {}

    /// Handles one record of the current key.
    fn process(&mut self, ctx: &mut Context<'_>, record: Self::Input<'_>) -> Result<(), Error>;

    /// Called after the records of one key in a batch.
    fn end_key(&mut self, _ctx: &mut Context<'_>) {}

    /// Handles a timer of the current key.
    fn on_timer(&mut self, _ctx: &mut Context<'_>, _timer: Timer) -> Result<(), Error> {
        Ok(())
    }
}

/// A keyed function of two inputs (left and right, in the job's order),
/// sharing state and timers per key.
pub trait CoProcessor: Sized + 'static {
    /// Fields read from the first input.
    type Left<'a>: FromRow<'a>;
    /// Fields read from the second input.
    type Right<'a>: FromRow<'a>;

    /// Creates it from its `config`, declaring state and outputs in `setup`.
    fn new(config: &Config, setup: &mut Setup) -> Result<Self, String>;

    /// Called before the records of one key in a batch (of either input).
    fn begin_key(&mut self, _ctx: &mut Context<'_>) {}

    /// Handles a record of the first input.
    fn process_left(&mut self, ctx: &mut Context<'_>, record: Self::Left<'_>) -> Result<(), Error>;

    /// Handles a record of the second input.
    fn process_right(&mut self, ctx: &mut Context<'_>, record: Self::Right<'_>) -> Result<(), Error>;

    /// Called after the records of one key in a batch.
    fn end_key(&mut self, _ctx: &mut Context<'_>) {}

    /// Handles a timer of the current key.
    fn on_timer(&mut self, _ctx: &mut Context<'_>, _timer: Timer) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::__private::{ProcHostFns, install_proc_host};

    // A host for the batched state calls: a map from (state, key bytes) to
    // value, the keys of the current call, and the timer changes received.
    thread_local! {
        static STORE: RefCell<HashMap<(u32, String), Vec<u8>>> = RefCell::new(HashMap::new());
        static KEYS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        static TIMERS: RefCell<Vec<(String, i64, bool)>> = const { RefCell::new(Vec::new()) };
        static HOST_CALLS: RefCell<usize> = const { RefCell::new(0) };
    }

    fn key_of(i: u32) -> String {
        KEYS.with(|k| k.borrow()[i as usize].clone())
    }

    fn fake_host() {
        install_proc_host(ProcHostFns {
            value_get_all: |state| {
                HOST_CALLS.with(|c| *c.borrow_mut() += 1);
                let mut out = ValueBatch::default();
                let keys = KEYS.with(|k| k.borrow().clone());
                for k in keys {
                    let v = STORE.with(|s| s.borrow().get(&(state, k)).cloned());
                    out.push(v.as_deref());
                }
                out
            },
            value_write_all: |w| {
                HOST_CALLS.with(|c| *c.borrow_mut() += 1);
                for (i, (&state, &key)) in w.states.iter().zip(&w.keys).enumerate() {
                    let k = (state, key_of(key));
                    STORE.with(|s| match w.values.get(i) {
                        Some(v) => s.borrow_mut().insert(k, v.to_vec()),
                        None => s.borrow_mut().remove(&k),
                    });
                }
            },
            list_get: |_, _| Vec::new(),
            list_append: |_, _, _| {},
            list_set: |_, _, _| {},
            map_get: |_, _, _| None,
            map_put: |_, _, _, _| {},
            map_remove: |_, _, _| {},
            map_entries: |_, _| Vec::new(),
            clear: |_, _| {},
            timer_change_all: |changes| {
                HOST_CALLS.with(|c| *c.borrow_mut() += 1);
                for c in changes {
                    TIMERS.with(|t| t.borrow_mut().push((key_of(c.key), c.time, c.delete)));
                }
            },
            watermark: || 0,
            processing_time: || 0,
        });
    }

    fn call_over(keys: &[&str]) {
        KEYS.with(|k| *k.borrow_mut() = keys.iter().map(|s| s.to_string()).collect());
    }

    fn stored(state: u32, key: &str) -> Option<i64> {
        STORE.with(|s| {
            s.borrow()
                .get(&(state, key.to_string()))
                .and_then(|v| from_bytes(v))
        })
    }

    // `ctx!` makes a `&mut Context` for reads and writes alike.
    #[allow(clippy::unnecessary_mut_passed)]
    #[test]
    fn batched_state_reads_see_the_calls_own_writes_and_reach_the_host_once() {
        fake_host();
        STORE.with(|s| {
            let mut s = s.borrow_mut();
            s.insert((0, "a".into()), to_bytes(&7i64));
            s.insert((0, "c".into()), to_bytes(&9i64));
            s.insert((1, "a".into()), to_bytes(&1i64));
        });
        call_over(&["a", "b", "c"]);
        let schema = Schema::new(Vec::new(), None).unwrap();
        let call = RefCell::new(CallState::distinct(3));
        macro_rules! ctx {
            ($i:expr) => {
                &mut Context::new($i, &[], &schema, &mut Emitted::default(), &call)
            };
        }
        let count: ValueState<i64> = ValueState {
            idx: 0,
            _t: PhantomData,
        };
        let other: ValueState<i64> = ValueState {
            idx: 1,
            _t: PhantomData,
        };
        // A write before the state's first read is seen by that read.
        count.set(ctx!(1), &5);
        assert_eq!(count.get(ctx!(1)), Some(5));
        assert_eq!(count.get(ctx!(0)), Some(7));
        count.set(ctx!(0), &8);
        count.set(ctx!(0), &10);
        assert_eq!(count.get(ctx!(0)), Some(10));
        count.clear(ctx!(2));
        assert_eq!(count.get(ctx!(2)), None);
        assert_eq!(other.get(ctx!(0)), Some(1), "states are apart");
        ctx!(2).set_timer(30);
        ctx!(0).set_timer(10);
        ctx!(0).delete_timer(10);
        // Nothing reached the host but the two reads.
        assert_eq!(HOST_CALLS.with(|c| *c.borrow()), 2);
        assert_eq!(stored(0, "a"), Some(7));
        call.into_inner().flush();
        assert_eq!(HOST_CALLS.with(|c| *c.borrow()), 4);
        assert_eq!(stored(0, "a"), Some(10));
        assert_eq!(stored(0, "b"), Some(5));
        assert_eq!(stored(0, "c"), None);
        assert_eq!(stored(1, "a"), Some(1));
        assert_eq!(
            TIMERS.with(|t| t.borrow().clone()),
            vec![
                ("c".into(), 30, false),
                ("a".into(), 10, false),
                ("a".into(), 10, true)
            ]
        );

        // Fired timers may repeat a key: its entries share one state.
        STORE.with(|s| s.borrow_mut().insert((0, "x".into()), to_bytes(&1i64)));
        call_over(&["x", "y", "x"]);
        let keys: [&[u8]; 3] = [b"x", b"y", b"x"];
        let call = RefCell::new(CallState::repeating(&keys));
        macro_rules! ctx {
            ($i:expr) => {
                &mut Context::new($i, &[], &schema, &mut Emitted::default(), &call)
            };
        }
        for i in [0, 2, 1] {
            let n = count.get(ctx!(i)).unwrap_or(0);
            count.set(ctx!(i), &(n + 1));
        }
        assert_eq!(count.get(ctx!(2)), Some(3));
        call.into_inner().flush();
        assert_eq!(stored(0, "x"), Some(3));
        assert_eq!(stored(0, "y"), Some(1));
    }

    #[test]
    fn repeated_keys_map_to_their_first_index() {
        // Keys of every length around the hasher's 8-byte steps, each
        // repeated at a distance; the oracle is a linear search.
        let owned: Vec<Vec<u8>> = (0..300u32)
            .map(|i| i % 53)
            .map(|j| {
                vec![b'k'; (j % 19) as usize]
                    .into_iter()
                    .chain(j.to_le_bytes())
                    .collect()
            })
            .collect();
        let keys: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let call = CallState::repeating(&keys);
        for (i, k) in keys.iter().enumerate() {
            let first = keys.iter().position(|o| o == k).unwrap_or(i) as u32;
            assert_eq!(call.canon(i as u32), first, "key {i}");
        }
        assert!(!call.canon.is_empty(), "keys repeat");
        let distinct = CallState::repeating(&[b"a", b"ab", b""]);
        assert!(distinct.canon.is_empty());
    }

    #[test]
    fn codecs_round_trip() {
        let v = (1i64, -2i64, Some("x".to_string()), vec![1u8, 2], true, 0.5f64);
        assert_eq!(
            from_bytes::<(i64, i64, Option<String>, Vec<u8>, bool, f64)>(&to_bytes(&v)),
            Some(v)
        );
        assert_eq!(from_bytes::<i64>(&[1, 2]), None);
    }
}
