//! Runtime used by the export macros; not part of the SDK's API.
//!
//! Everything world-independent lives here as ordinary, testable Rust: the
//! batch loops of each world and the table of host functions. The macros only
//! add the thin glue between these and the bindings `wit-bindgen` generates in
//! the component's own crate.

use std::sync::OnceLock;

use wafer_row::{Batch, Row, RowWriter, Schema};

pub use wafer_sdk_macros::__world_bindings;
pub use wit_bindgen;

use crate::{Config, Deserializer, Error, ErrorKind, FieldMap, Filter, FromRow, Record};

/// Host functions every world imports, installed by the glue at `init`.
#[derive(Clone, Copy)]
pub struct HostFns {
    /// `log.log`
    pub log: fn(crate::log::Level, &str),
    /// `metrics.declare`
    pub declare: fn(&str, crate::metrics::Kind, &str) -> Result<u32, String>,
    /// `metrics.counter-add`
    pub counter_add: fn(u32, u64),
    /// `metrics.gauge-set`
    pub gauge_set: fn(u32, f64),
    /// `metrics.histogram-observe`
    pub histogram_observe: fn(u32, f64),
}

static HOST: OnceLock<HostFns> = OnceLock::new();

/// Installs the host functions (first call wins; they never change).
pub fn install_host(fns: HostFns) {
    let _ = HOST.set(fns);
}

/// The host functions, if running inside a host.
pub fn host() -> Option<&'static HostFns> {
    HOST.get()
}

/// A failed record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Index in the batch.
    pub index: u32,
    /// Kind of failure.
    pub kind: ErrorKind,
    /// Message.
    pub message: String,
}

/// Rows out of a batch call, one per input record (empty for failures).
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Rows, back to back.
    pub data: Vec<u8>,
    /// End offset of each row.
    pub ends: Vec<u32>,
    /// Failed records.
    pub errors: Vec<RecordError>,
}

impl BatchOutput {
    /// Every one of `n` records failed with `message`.
    pub fn all_failed(n: usize, message: &str) -> Self {
        BatchOutput {
            data: Vec::new(),
            ends: vec![0; n],
            errors: (0..n as u32)
                .map(|index| RecordError {
                    index,
                    kind: ErrorKind::Failed,
                    message: message.to_string(),
                })
                .collect(),
        }
    }
}

fn record_error(index: usize, e: Error) -> RecordError {
    RecordError {
        index: index as u32,
        kind: e.kind,
        message: e.message,
    }
}

/// A deserializer instance and the schema it declared.
pub struct DeserializerState<D: Deserializer> {
    inner: D,
    schema: Schema,
}

impl<D: Deserializer> DeserializerState<D> {
    /// Builds the user's deserializer from the job's config.
    pub fn new(config: &str) -> Result<Self, String> {
        let config = Config::from_json(config)?;
        let schema = <D::Record<'static> as Record>::schema()
            .map_err(|e| format!("the record type's schema is invalid: {e}"))?;
        Ok(DeserializerState {
            inner: D::new(&config)?,
            schema,
        })
    }

    /// The schema of the rows produced.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Deserializes a batch of payloads.
    pub fn run(&mut self, data: &[u8], ends: &[u32]) -> BatchOutput {
        let n = self.schema.len();
        let mut out = BatchOutput {
            // Rows are about the size of the payloads they come from.
            data: Vec::with_capacity(data.len() + data.len() / 4),
            ends: Vec::with_capacity(ends.len()),
            errors: Vec::new(),
        };
        let mut start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let end = end as usize;
            let payload = data.get(start..end);
            start = end;
            match payload {
                None => out
                    .errors
                    .push(record_error(i, Error::failed("bad batch offsets"))),
                Some(payload) => match self.inner.deserialize(payload) {
                    Ok(record) => {
                        let mut w = RowWriter::new(&mut out.data, n);
                        record.write(&mut w);
                        w.finish();
                    }
                    Err(e) => out.errors.push(record_error(i, e)),
                },
            }
            out.ends.push(out.data.len() as u32);
        }
        out
    }
}

/// A filter instance bound to its input schema.
pub struct FilterState<F: Filter> {
    inner: F,
    map: FieldMap,
    n: usize,
}

impl<F: Filter> FilterState<F> {
    /// Builds the user's filter and binds its record type to the input.
    pub fn new(config: &str, input: Schema) -> Result<Self, String> {
        let config = Config::from_json(config)?;
        let map = <F::Record<'static> as FromRow<'static>>::bind(&input)?;
        Ok(FilterState {
            inner: F::new(&config, &input)?,
            map,
            n: input.len(),
        })
    }

    /// Filters a batch of rows: one verdict byte per row, and the failures.
    pub fn run(&mut self, data: &[u8], ends: &[u32]) -> (Vec<u8>, Vec<RecordError>) {
        let batch = Batch::new(data, ends);
        let mut keep = Vec::with_capacity(batch.len());
        let mut errors = Vec::new();
        for i in 0..batch.len() {
            let verdict = match batch.get(i) {
                None => Err(Error::failed("bad batch offsets")),
                Some(bytes) => {
                    let row = Row::new(bytes, self.n);
                    match <F::Record<'_> as FromRow<'_>>::read(&row, &self.map) {
                        Ok(record) => self.inner.keep(&record),
                        Err(e) => Err(Error::invalid(e)),
                    }
                }
            };
            match verdict {
                Ok(k) => keep.push(u8::from(k)),
                Err(e) => {
                    keep.push(0);
                    errors.push(record_error(i, e));
                }
            }
        }
        (keep, errors)
    }
}

/// Host functions of the processor worlds (state and timers), installed by
/// the glue at `init`.
#[derive(Clone, Copy)]
pub struct ProcHostFns {
    /// `state.value-get-all`
    pub value_get_all: fn(u32) -> ValueBatch,
    /// `state.value-write-all`
    pub value_write_all: fn(ValueWrites),
    /// `state.list-get`
    pub list_get: fn(u32, u32) -> Vec<Vec<u8>>,
    /// `state.list-append`
    pub list_append: fn(u32, u32, &[u8]),
    /// `state.list-set`
    pub list_set: fn(u32, u32, &[Vec<u8>]),
    /// `state.map-get`
    pub map_get: fn(u32, u32, &[u8]) -> Option<Vec<u8>>,
    /// `state.map-put`
    pub map_put: fn(u32, u32, &[u8], &[u8]),
    /// `state.map-remove`
    pub map_remove: fn(u32, u32, &[u8]),
    /// `state.map-entries`
    pub map_entries: fn(u32, u32) -> Vec<(Vec<u8>, Vec<u8>)>,
    /// `state.clear`
    pub clear: fn(u32, u32),
    /// `timers.change-all`
    pub timer_change_all: fn(Vec<TimerChange>),
    /// `timers.watermark`
    pub watermark: fn() -> i64,
    /// `timers.processing-time`
    pub processing_time: fn() -> i64,
}

static PROC_HOST: OnceLock<ProcHostFns> = OnceLock::new();

/// Installs the processor host functions.
pub fn install_proc_host(fns: ProcHostFns) {
    let _ = PROC_HOST.set(fns);
}

/// The processor host functions, if running as a processor in a host.
pub fn proc_host() -> Option<&'static ProcHostFns> {
    PROC_HOST.get()
}

use std::cell::RefCell;

pub use crate::process::{
    CallState, Emitted, OutputDecl, StateDecl, StateKind, TimerChange, ValueBatch, ValueWrites,
};
use crate::process::{CoProcessor, Context, Processor, Setup, TimeDomain, Timer};

fn group_bounds(group_ends: &[u32], g: usize) -> (usize, usize) {
    let start = if g == 0 { 0 } else { group_ends[g - 1] as usize };
    (start, group_ends[g] as usize)
}

/// Runs `on_timer` for fired timers, shared by both processor kinds.
fn run_timers(
    key_schema: &Schema,
    keys: (&[u8], &[u32]),
    times: &[i64],
    domains: &[TimeDomain],
    mut f: impl FnMut(&mut Context<'_>, Timer) -> Result<(), Error>,
) -> (Emitted, Vec<RecordError>) {
    let keys = Batch::new(keys.0, keys.1);
    let key_list: Vec<&[u8]> = (0..times.len())
        .map(|i| keys.get(i).unwrap_or_default())
        .collect();
    // One key may have several timers in a batch.
    let call = RefCell::new(CallState::repeating(&key_list));
    let mut emitted = Emitted::default();
    let mut errors = Vec::new();
    for (i, (&time, &domain)) in times.iter().zip(domains).enumerate() {
        let mut ctx = Context::new(i as u32, key_list[i], key_schema, &mut emitted, &call);
        if let Err(e) = f(&mut ctx, Timer { time, domain }) {
            errors.push(record_error(i, e));
        }
    }
    call.into_inner().flush();
    (emitted, errors)
}

/// A processor instance bound to its input.
pub struct ProcessorState<P: Processor> {
    inner: P,
    map: FieldMap,
    n: usize,
    key_schema: Schema,
    setup: Setup,
}

impl<P: Processor> ProcessorState<P> {
    /// Builds the user's processor and binds its input type.
    pub fn new(config: &str, input: Schema, key: Schema) -> Result<Self, String> {
        let config = Config::from_json(config)?;
        let map = <P::Input<'static> as FromRow<'static>>::bind(&input)?;
        let mut setup = Setup::default();
        let inner = P::new(&config, &mut setup)?;
        Ok(ProcessorState {
            inner,
            map,
            n: input.len(),
            key_schema: key,
            setup,
        })
    }

    /// What it declared.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Handles a batch grouped by key.
    pub fn process(
        &mut self,
        rows: (&[u8], &[u32]),
        keys: (&[u8], &[u32]),
        group_ends: &[u32],
    ) -> (Emitted, Vec<RecordError>) {
        let rows = Batch::new(rows.0, rows.1);
        let keys = Batch::new(keys.0, keys.1);
        let mut emitted = Emitted::default();
        let mut errors = Vec::new();
        // The host hands each key of a batch once.
        let call = RefCell::new(CallState::distinct(group_ends.len()));
        for g in 0..group_ends.len() {
            let (start, end) = group_bounds(group_ends, g);
            let key = keys.get(g).unwrap_or_default();
            let mut ctx = Context::new(g as u32, key, &self.key_schema, &mut emitted, &call);
            self.inner.begin_key(&mut ctx);
            for i in start..end {
                let row = Row::new(rows.get(i).unwrap_or_default(), self.n);
                let result = match <P::Input<'_> as FromRow<'_>>::read(&row, &self.map) {
                    Ok(record) => self.inner.process(&mut ctx, record),
                    Err(e) => Err(Error::invalid(e)),
                };
                if let Err(e) = result {
                    errors.push(record_error(i, e));
                }
            }
            self.inner.end_key(&mut ctx);
        }
        call.into_inner().flush();
        (emitted, errors)
    }

    /// Handles fired timers.
    pub fn on_timer(
        &mut self,
        keys: (&[u8], &[u32]),
        times: &[i64],
        domains: &[TimeDomain],
    ) -> (Emitted, Vec<RecordError>) {
        let inner = &mut self.inner;
        run_timers(&self.key_schema, keys, times, domains, |ctx, t| {
            inner.on_timer(ctx, t)
        })
    }
}

/// A co-processor instance bound to its two inputs.
pub struct CoProcessorState<P: CoProcessor> {
    inner: P,
    maps: [FieldMap; 2],
    lens: [usize; 2],
    key_schema: Schema,
    setup: Setup,
}

impl<P: CoProcessor> CoProcessorState<P> {
    /// Builds the user's co-processor and binds its two input types.
    pub fn new(config: &str, inputs: Vec<(String, Schema)>, key: Schema) -> Result<Self, String> {
        let [(left_name, left), (right_name, right)]: [(String, Schema); 2] = inputs
            .try_into()
            .map_err(|v: Vec<_>| format!("a co-processor takes two inputs, not {}", v.len()))?;
        let config = Config::from_json(config)?;
        let lmap = <P::Left<'static> as FromRow<'static>>::bind(&left)
            .map_err(|e| format!("input `{left_name}`: {e}"))?;
        let rmap = <P::Right<'static> as FromRow<'static>>::bind(&right)
            .map_err(|e| format!("input `{right_name}`: {e}"))?;
        let mut setup = Setup::default();
        let inner = P::new(&config, &mut setup)?;
        Ok(CoProcessorState {
            inner,
            maps: [lmap, rmap],
            lens: [left.len(), right.len()],
            key_schema: key,
            setup,
        })
    }

    /// What it declared.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Handles a batch of one input, grouped by key.
    pub fn process(
        &mut self,
        input: u32,
        rows: (&[u8], &[u32]),
        keys: (&[u8], &[u32]),
        group_ends: &[u32],
    ) -> (Emitted, Vec<RecordError>) {
        let side = (input as usize).min(1);
        let rows = Batch::new(rows.0, rows.1);
        let keys = Batch::new(keys.0, keys.1);
        let mut emitted = Emitted::default();
        let mut errors = Vec::new();
        // The host hands each key of a batch once.
        let call = RefCell::new(CallState::distinct(group_ends.len()));
        for g in 0..group_ends.len() {
            let (start, end) = group_bounds(group_ends, g);
            let key = keys.get(g).unwrap_or_default();
            let mut ctx = Context::new(g as u32, key, &self.key_schema, &mut emitted, &call);
            self.inner.begin_key(&mut ctx);
            for i in start..end {
                let row = Row::new(rows.get(i).unwrap_or_default(), self.lens[side]);
                let result = if side == 0 {
                    match <P::Left<'_> as FromRow<'_>>::read(&row, &self.maps[0]) {
                        Ok(r) => self.inner.process_left(&mut ctx, r),
                        Err(e) => Err(Error::invalid(e)),
                    }
                } else {
                    match <P::Right<'_> as FromRow<'_>>::read(&row, &self.maps[1]) {
                        Ok(r) => self.inner.process_right(&mut ctx, r),
                        Err(e) => Err(Error::invalid(e)),
                    }
                };
                if let Err(e) = result {
                    errors.push(record_error(i, e));
                }
            }
            self.inner.end_key(&mut ctx);
        }
        call.into_inner().flush();
        (emitted, errors)
    }

    /// Handles fired timers.
    pub fn on_timer(
        &mut self,
        keys: (&[u8], &[u32]),
        times: &[i64],
        domains: &[TimeDomain],
    ) -> (Emitted, Vec<RecordError>) {
        let inner = &mut self.inner;
        run_timers(&self.key_schema, keys, times, domains, |ctx, t| {
            inner.on_timer(ctx, t)
        })
    }
}
