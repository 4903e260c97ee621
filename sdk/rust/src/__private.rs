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
        let batch = Batch::new(data, ends);
        let n = self.schema.len();
        let mut out = BatchOutput {
            // Rows are about the size of the payloads they come from.
            data: Vec::with_capacity(data.len() + data.len() / 4),
            ends: Vec::with_capacity(ends.len()),
            errors: Vec::new(),
        };
        for i in 0..batch.len() {
            match batch.get(i) {
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
