//! Keyed processors (one input) and co-processors (several inputs): batch
//! calls grouped by key, with keyed state and timers reached through a
//! [`KeyedBackend`] the runtime lends to the instance for the call.

use std::sync::Arc;

use wafer_row::{BatchBuf, Schema, Validator, ValueBatch};
use wasmtime::Store;
use wasmtime::component::{ComponentType, Func, Lower};

use crate::bindings::co_processor::CoProcessor;
use crate::bindings::co_processor::exports::wafer::udf::co_process::Input;
use crate::bindings::processing as p;
use crate::bindings::processor::Processor;
use crate::bindings::types::Payloads;
use crate::bindings::{state, timers};
use crate::convert::{failure_from_wit, schema_from_wit, schema_to_wit};
use crate::engine::{LoadedComponent, Pre};
use crate::host::{GuestTelemetry, HostState};
use crate::stage::{FlatRef, Isolated, Role, export_func};
use crate::{CallError, ComponentSlot, Failure, Limits, LoadError, WasmRuntime};

/// The kind of a piece of processor state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

/// A clock for timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// The watermark.
    EventTime,
    /// The wall clock.
    ProcessingTime,
}

/// State a processor declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpec {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Time to live, if any.
    pub ttl_ms: Option<u64>,
}

/// An output a processor declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Its name.
    pub name: String,
    /// Schema of its rows.
    pub schema: Schema,
    /// Fields identifying a result (upsert key).
    pub key: Vec<String>,
}

/// What a processor declared in `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorSpec {
    /// Its state.
    pub states: Vec<StateSpec>,
    /// Its outputs.
    pub outputs: Vec<OutputSpec>,
}

/// A timer set or removed, for [`KeyedBackend::timer_change_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerChange {
    /// Index of the key in the call.
    pub key: u32,
    /// Its clock.
    pub domain: TimeDomain,
    /// Its time.
    pub time: i64,
    /// Removed (true) or set (false).
    pub delete: bool,
}

/// Keyed state and timers as an instance sees them during one call: `key`
/// arguments are indexes into the keys of the call (key groups of a batch,
/// or fired timers). Errors trap the guest.
///
/// The `_all` methods are the batched forms guests use on the hot path; by
/// default they loop over the per-key ones.
pub trait KeyedBackend: Send {
    /// Number of keys of the call.
    fn key_count(&self) -> u32;
    /// Value state.
    fn value_get(&mut self, state: u32, key: u32) -> Result<Option<Vec<u8>>, String>;
    /// Value state.
    fn value_set(&mut self, state: u32, key: u32, value: Vec<u8>) -> Result<(), String>;
    /// Value state `state` of every key of the call, in key order, appended
    /// to `out`.
    fn value_get_all(&mut self, state: u32, out: &mut ValueBatch) -> Result<(), String> {
        for key in 0..self.key_count() {
            let v = self.value_get(state, key)?;
            out.push(v.as_deref());
        }
        Ok(())
    }
    /// Applies value writes in order: write `i` sets state `states[i]` of key
    /// `keys[i]` to `values.get(i)`, or clears it when that is absent.
    fn value_write_all(&mut self, states: &[u32], keys: &[u32], values: &ValueBatch) -> Result<(), String> {
        check_writes(states, keys, values)?;
        for (i, (&state, &key)) in states.iter().zip(keys).enumerate() {
            match values.get(i) {
                Some(v) => self.value_set(state, key, v.to_vec())?,
                None => self.clear(state, key)?,
            }
        }
        Ok(())
    }
    /// Applies timer changes in order.
    fn timer_change_all(&mut self, changes: &[TimerChange]) -> Result<(), String> {
        for c in changes {
            if c.delete {
                self.timer_delete(c.key, c.domain, c.time)?;
            } else {
                self.timer_register(c.key, c.domain, c.time)?;
            }
        }
        Ok(())
    }
    /// List state.
    fn list_get(&mut self, state: u32, key: u32) -> Result<Vec<Vec<u8>>, String>;
    /// List state.
    fn list_append(&mut self, state: u32, key: u32, item: Vec<u8>) -> Result<(), String>;
    /// List state.
    fn list_set(&mut self, state: u32, key: u32, items: Vec<Vec<u8>>) -> Result<(), String>;
    /// Map state.
    fn map_get(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> Result<Option<Vec<u8>>, String>;
    /// Map state.
    fn map_put(&mut self, state: u32, key: u32, map_key: Vec<u8>, value: Vec<u8>) -> Result<(), String>;
    /// Map state.
    fn map_remove(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> Result<(), String>;
    /// Map state.
    fn map_entries(&mut self, state: u32, key: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String>;
    /// Any state.
    fn clear(&mut self, state: u32, key: u32) -> Result<(), String>;
    /// Sets a timer.
    fn timer_register(&mut self, key: u32, domain: TimeDomain, time: i64) -> Result<(), String>;
    /// Removes a timer.
    fn timer_delete(&mut self, key: u32, domain: TimeDomain, time: i64) -> Result<(), String>;
    /// The operator's watermark.
    fn watermark(&self) -> i64;
    /// The host's clock.
    fn processing_time(&self) -> i64;
}

/// Checks that a batch of value writes is consistent: one state, key and
/// value (or absence) per write, with offsets inside the data.
pub fn check_writes(states: &[u32], keys: &[u32], values: &ValueBatch) -> Result<(), String> {
    let n = states.len();
    if keys.len() != n || values.ends.len() != n || values.present.len() != n {
        return Err(format!(
            "value writes are inconsistent: {n} states, {} keys, {} ends, {} presence flags",
            keys.len(),
            values.ends.len(),
            values.present.len()
        ));
    }
    let mut prev = 0u32;
    for &end in &values.ends {
        if end < prev || end as usize > values.data.len() {
            return Err(format!(
                "value writes have bad offsets: {end} after {prev} in {} bytes",
                values.data.len()
            ));
        }
        prev = end;
    }
    Ok(())
}

fn backend(h: &mut HostState) -> wasmtime::Result<&mut Box<dyn KeyedBackend>> {
    h.keyed.as_mut().ok_or_else(|| {
        wasmtime::format_err!("keyed state is only reachable during process and on-timer calls")
    })
}

fn trap<T>(r: Result<T, String>) -> wasmtime::Result<T> {
    r.map_err(|e| wasmtime::format_err!("{e}"))
}

impl state::Host for HostState {
    fn value_get(&mut self, state: u32, key: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        trap(backend(self)?.value_get(state, key))
    }
    fn value_set(&mut self, state: u32, key: u32, value: Vec<u8>) -> wasmtime::Result<()> {
        trap(backend(self)?.value_set(state, key, value))
    }
    fn list_get(&mut self, state: u32, key: u32) -> wasmtime::Result<Vec<Vec<u8>>> {
        trap(backend(self)?.list_get(state, key))
    }
    fn list_append(&mut self, state: u32, key: u32, item: Vec<u8>) -> wasmtime::Result<()> {
        trap(backend(self)?.list_append(state, key, item))
    }
    fn list_set(&mut self, state: u32, key: u32, items: Vec<Vec<u8>>) -> wasmtime::Result<()> {
        trap(backend(self)?.list_set(state, key, items))
    }
    fn map_get(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        trap(backend(self)?.map_get(state, key, map_key))
    }
    fn map_put(&mut self, state: u32, key: u32, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        trap(backend(self)?.map_put(state, key, map_key, value))
    }
    fn map_remove(&mut self, state: u32, key: u32, map_key: Vec<u8>) -> wasmtime::Result<()> {
        trap(backend(self)?.map_remove(state, key, map_key))
    }
    fn map_entries(&mut self, state: u32, key: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        trap(backend(self)?.map_entries(state, key))
    }
    fn clear(&mut self, state: u32, key: u32) -> wasmtime::Result<()> {
        trap(backend(self)?.clear(state, key))
    }
    fn value_get_all(&mut self, state: u32) -> wasmtime::Result<state::Values> {
        let mut out = ValueBatch::default();
        trap(backend(self)?.value_get_all(state, &mut out))?;
        Ok(state::Values {
            data: out.data,
            ends: out.ends,
            present: out.present,
        })
    }
    fn value_write_all(&mut self, w: state::ValueWrites) -> wasmtime::Result<()> {
        let values = ValueBatch {
            data: w.values.data,
            ends: w.values.ends,
            present: w.values.present,
        };
        trap(backend(self)?.value_write_all(&w.states, &w.keys, &values))
    }
}

fn domain(d: timers::TimeDomain) -> TimeDomain {
    match d {
        timers::TimeDomain::EventTime => TimeDomain::EventTime,
        timers::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}

impl timers::Host for HostState {
    fn register(&mut self, key: u32, d: timers::TimeDomain, time: i64) -> wasmtime::Result<()> {
        trap(backend(self)?.timer_register(key, domain(d), time))
    }
    fn delete(&mut self, key: u32, d: timers::TimeDomain, time: i64) -> wasmtime::Result<()> {
        trap(backend(self)?.timer_delete(key, domain(d), time))
    }
    fn change_all(&mut self, changes: Vec<timers::TimerChange>) -> wasmtime::Result<()> {
        let changes: Vec<TimerChange> = changes
            .into_iter()
            .map(|c| TimerChange {
                key: c.key,
                domain: domain(c.domain),
                time: c.time,
                delete: c.delete,
            })
            .collect();
        trap(backend(self)?.timer_change_all(&changes))
    }
    fn watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(backend(self)?.watermark())
    }
    fn processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(backend(self)?.processing_time())
    }
}

impl p::Host for HostState {}

/// The inputs of a processor and the schema of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInputs {
    /// One schema for a processor; named schemas, in order, for a
    /// co-processor.
    pub inputs: Vec<(String, Schema)>,
    /// The schema of the key rows.
    pub key: Schema,
}

pub(crate) enum ProcBindings {
    /// With the `process` export, for calls that lend the batch.
    One(Processor, Func),
    Co(CoProcessor, Func),
}

/// `processing.keyed-rows`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
struct KeyedRowsRef<'a> {
    #[component(name = "rows")]
    rows: FlatRef<'a>,
    #[component(name = "keys")]
    keys: FlatRef<'a>,
    #[component(name = "group-ends")]
    group_ends: &'a [u32],
}

struct ProcRole;

impl Role for ProcRole {
    type Bindings = ProcBindings;
    type Setup = ProcessorSpec;
    type Input = ProcInputs;

    fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<ProcBindings> {
        match pre {
            Pre::Processor(p) => {
                let instance = p.instance_pre().instantiate(&mut *store)?;
                Ok(ProcBindings::One(
                    Processor::new(&mut *store, &instance)?,
                    export_func(&instance, store, "wafer:udf/process@0.1.0", "process")?,
                ))
            }
            Pre::CoProcessor(p) => {
                let instance = p.instance_pre().instantiate(&mut *store)?;
                Ok(ProcBindings::Co(
                    CoProcessor::new(&mut *store, &instance)?,
                    export_func(&instance, store, "wafer:udf/co-process@0.1.0", "process")?,
                ))
            }
            _ => Err(wasmtime::format_err!("not a processor")),
        }
    }

    fn init(
        b: &ProcBindings,
        store: &mut Store<HostState>,
        config: &str,
        input: &ProcInputs,
    ) -> wasmtime::Result<Result<ProcessorSpec, String>> {
        let key = schema_to_wit(&input.key);
        let spec = match (b, input.inputs.as_slice()) {
            (ProcBindings::One(b, _), [(_, schema)]) => {
                b.wafer_udf_process()
                    .call_init(store, config, &schema_to_wit(schema), &key)?
            }
            (ProcBindings::One(..), inputs) => {
                return Ok(Err(format!(
                    "a processor takes one input, not {}; use a co-processor for several",
                    inputs.len()
                )));
            }
            (ProcBindings::Co(b, _), inputs) => {
                let inputs: Vec<Input> = inputs
                    .iter()
                    .map(|(name, schema)| Input {
                        name: name.clone(),
                        schema: schema_to_wit(schema),
                    })
                    .collect();
                b.wafer_udf_co_process().call_init(store, config, &inputs, &key)?
            }
        };
        Ok(spec.and_then(spec_from_wit))
    }
}

fn spec_from_wit(s: p::ProcessorSpec) -> Result<ProcessorSpec, String> {
    let states = s
        .states
        .into_iter()
        .map(|d| StateSpec {
            name: d.name,
            kind: match d.kind {
                p::StateKind::Value => StateKind::Value,
                p::StateKind::List => StateKind::List,
                p::StateKind::Map => StateKind::Map,
            },
            ttl_ms: d.ttl_ms,
        })
        .collect();
    let mut outputs = Vec::new();
    for o in s.outputs {
        let schema = schema_from_wit(o.schema).map_err(|e| format!("output `{}`: {e}", o.name))?;
        for k in &o.key {
            if schema.index_of(k).is_none() {
                return Err(format!(
                    "output `{}`: key field `{k}` is not in its schema",
                    o.name
                ));
            }
        }
        outputs.push(OutputSpec {
            name: o.name,
            schema,
            key: o.key,
        });
    }
    Ok(ProcessorSpec { states, outputs })
}

/// Rows grouped by key, as handed to `process`.
#[derive(Debug, Clone, Copy)]
pub struct KeyedBatch<'a> {
    /// Rows, back to back.
    pub rows: &'a [u8],
    /// End of each row.
    pub row_ends: &'a [u32],
    /// Key rows, one per group.
    pub keys: &'a [u8],
    /// End of each key.
    pub key_ends: &'a [u32],
    /// End row index of each group.
    pub group_ends: &'a [u32],
}

/// Timers that fired, as handed to `on-timer`.
#[derive(Debug, Clone, Copy)]
pub struct TimerBatch<'a> {
    /// Keys, back to back.
    pub keys: &'a [u8],
    /// End of each key.
    pub key_ends: &'a [u32],
    /// Time of each timer.
    pub times: &'a [i64],
    /// Clock of each timer.
    pub domains: &'a [TimeDomain],
}

/// What a call produced.
#[derive(Debug, Default)]
pub struct ProcOutput {
    /// Emitted rows, valid against their output's schema.
    pub rows: BatchBuf,
    /// The output index of each row.
    pub outputs: Vec<u32>,
    /// Input records the processor reported failing on.
    pub failures: Vec<Failure>,
    /// Emitted rows that broke the contract (unknown output, bad row).
    pub bad_rows: Vec<String>,
}

/// Runs a processor or co-processor component.
pub struct ProcessorStage {
    guest: Isolated<ProcRole>,
    /// One per declared output, checking the rows emitted to it.
    validators: Vec<Validator>,
}

fn payloads(data: &[u8], ends: &[u32]) -> Payloads {
    Payloads {
        data: data.to_vec(),
        ends: ends.to_vec(),
    }
}

impl ProcessorStage {
    /// Starts an instance and initialises it with `config` and its inputs.
    pub fn new(
        rt: &WasmRuntime,
        slot: ComponentSlot,
        config: String,
        inputs: ProcInputs,
        limits: Limits,
        telemetry: Arc<dyn GuestTelemetry>,
    ) -> Result<Self, LoadError> {
        let guest: Isolated<ProcRole> = Isolated::new(rt, slot, config, inputs, limits, telemetry)?;
        Ok(ProcessorStage {
            validators: guest
                .setup()
                .outputs
                .iter()
                .map(|o| Validator::new(&o.schema))
                .collect(),
            guest,
        })
    }

    /// What the processor declared.
    pub fn spec(&self) -> &ProcessorSpec {
        self.guest.setup()
    }

    /// The component in use.
    pub fn component(&self) -> &Arc<LoadedComponent> {
        self.guest.component()
    }

    /// Switches to a swapped-in version, if any (between calls only).
    pub fn follow_swap(&mut self) {
        self.guest.follow_swap();
    }

    /// Calls `process` for input `input` (0 for a one-input processor). The
    /// backend is lent to the instance for the call and is back in `keyed`
    /// when this returns, whatever happened.
    pub fn process(
        &mut self,
        input: u32,
        batch: KeyedBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        let wit = KeyedRowsRef {
            rows: FlatRef {
                data: batch.rows,
                ends: batch.row_ends,
            },
            keys: FlatRef {
                data: batch.keys,
                ends: batch.key_ends,
            },
            group_ends: batch.group_ends,
        };
        let n = batch.row_ends.len();
        let raw = self.guest.call(|b, store| {
            store.data_mut().keyed = keyed.take();
            // Typed views checked per call (a few comparisons), so that the
            // batch is lowered from the caller's buffers.
            let r = match b {
                ProcBindings::One(_, f) => f
                    .typed::<(KeyedRowsRef<'_>,), (p::Output,)>(&*store)
                    .and_then(|f| f.call(&mut *store, (wit,))),
                ProcBindings::Co(_, f) => f
                    .typed::<(u32, KeyedRowsRef<'_>), (p::Output,)>(&*store)
                    .and_then(|f| f.call(&mut *store, (input, wit))),
            };
            *keyed = store.data_mut().keyed.take();
            r.map(|(out,)| out)
        })?;
        Ok(self.accept(raw, n))
    }

    /// Calls `on-timer` for timers that fired.
    pub fn on_timer(
        &mut self,
        fired: TimerBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        let wit = p::FiredTimers {
            keys: payloads(fired.keys, fired.key_ends),
            times: fired.times.to_vec(),
            domains: fired
                .domains
                .iter()
                .map(|d| match d {
                    TimeDomain::EventTime => timers::TimeDomain::EventTime,
                    TimeDomain::ProcessingTime => timers::TimeDomain::ProcessingTime,
                })
                .collect(),
        };
        let raw = self.guest.call(|b, store| {
            store.data_mut().keyed = keyed.take();
            let r = match b {
                ProcBindings::One(b, _) => b.wafer_udf_process().call_on_timer(&mut *store, &wit),
                ProcBindings::Co(b, _) => b.wafer_udf_co_process().call_on_timer(&mut *store, &wit),
            };
            *keyed = store.data_mut().keyed.take();
            r
        })?;
        Ok(self.accept(raw, 0))
    }

    fn accept(&self, raw: p::Output, n_inputs: usize) -> ProcOutput {
        let spec = self.spec();
        let mut out = ProcOutput {
            failures: raw
                .errors
                .into_iter()
                .filter(|e| (e.index as usize) < n_inputs)
                .map(failure_from_wit)
                .collect(),
            ..ProcOutput::default()
        };
        let rows = wafer_row::Batch::new(&raw.rows.data, &raw.rows.ends);
        if raw.outputs.len() != rows.len() {
            out.bad_rows.push(format!(
                "the processor emitted {} rows but named outputs for {}",
                rows.len(),
                raw.outputs.len()
            ));
            return out;
        }
        for (i, &o) in raw.outputs.iter().enumerate() {
            let (Some(decl), Some(validator)) =
                (spec.outputs.get(o as usize), self.validators.get(o as usize))
            else {
                out.bad_rows
                    .push(format!("row {i} names output {o}, which was never declared"));
                continue;
            };
            let Some(row) = rows.get(i) else {
                out.bad_rows.push(format!("row {i} has inconsistent offsets"));
                continue;
            };
            match validator.check(row) {
                Ok(()) => {
                    out.rows.push(row);
                    out.outputs.push(o);
                }
                Err(e) => out
                    .bad_rows
                    .push(format!("a row for output `{}` breaks its schema: {e}", decl.name)),
            }
        }
        out.failures.sort_by_key(|f| f.index);
        out
    }
}
