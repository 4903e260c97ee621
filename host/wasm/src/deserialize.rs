//! Deserializer stages: raw payloads in, validated rows out, one failure per
//! bad record.

use std::sync::Arc;

use wafer_row::{BatchBuf, Schema};
use wasmtime::Store;

use crate::bindings::deserializer::Deserializer as Bindings;
use crate::bindings::types::Payloads;
use crate::convert::{check_ends, failure_from_wit, schema_from_wit};
use crate::engine::{LoadedComponent, Pre};
use crate::host::{GuestTelemetry, HostState};
use crate::stage::{Isolated, Role};
use crate::{ComponentSlot, FailKind, Failure, Limits, LoadError, WasmRuntime};

/// The rows of one batch.
#[derive(Debug, Default)]
pub struct Decoded {
    /// One row per input record, in order. The row of a failed record is
    /// meaningless (usually empty): check `failures` first.
    pub rows: BatchBuf,
    /// The records that failed, in index order.
    pub failures: Vec<Failure>,
}

struct Deser;

impl Role for Deser {
    type Bindings = Bindings;
    type Setup = Schema;
    type Input = ();

    fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        match pre {
            Pre::Deserializer(p) => p.instantiate(store),
            _ => Err(wasmtime::format_err!("not a deserializer")),
        }
    }

    fn init(
        b: &Bindings,
        store: &mut Store<HostState>,
        config: &str,
        _: &(),
    ) -> wasmtime::Result<Result<Schema, String>> {
        Ok(b.wafer_udf_deserialize()
            .call_init(store, config)?
            .and_then(schema_from_wit))
    }
}

type Raw = crate::bindings::deserializer::exports::wafer::udf::deserialize::Decoded;

fn call(b: &Bindings, store: &mut Store<HostState>, data: &[u8], ends: &[u32]) -> wasmtime::Result<Raw> {
    // The generated binding takes the record by reference; building it
    // copies the batch once more on the host, which is cheap next to the
    // copy into guest memory.
    let input = Payloads {
        data: data.to_vec(),
        ends: ends.to_vec(),
    };
    b.wafer_udf_deserialize().call_deserialize(store, &input)
}

/// Runs a deserializer component over batches, isolating bad records.
pub struct DeserializeStage {
    guest: Isolated<Deser>,
}

impl DeserializeStage {
    /// Starts an instance of the slot's component and initialises it with
    /// `config` (JSON text).
    pub fn new(
        rt: &WasmRuntime,
        slot: ComponentSlot,
        config: String,
        limits: Limits,
        telemetry: Arc<dyn GuestTelemetry>,
    ) -> Result<Self, LoadError> {
        Ok(DeserializeStage {
            guest: Isolated::new(rt, slot, config, (), limits, telemetry)?,
        })
    }

    /// The schema of the rows the deserializer produces.
    pub fn schema(&self) -> &Schema {
        self.guest.setup()
    }

    /// The component currently in use.
    pub fn component(&self) -> &Arc<LoadedComponent> {
        self.guest.component()
    }

    /// Deserializes a batch of payloads (`data` split at `ends`). Never fails
    /// as a whole: a batch that traps, times out or exhausts memory is re-run
    /// record by record, and only the records at fault are reported.
    pub fn run(&mut self, data: &[u8], ends: &[u32]) -> Decoded {
        self.guest.follow_swap();
        match self.guest.call(|b, s| call(b, s, data, ends)) {
            Ok(raw) => self.accept(raw, ends.len()),
            Err(_) => self.isolate(data, ends),
        }
    }

    fn accept(&self, raw: Raw, n: usize) -> Decoded {
        let schema = self.schema();
        let rows = BatchBuf {
            data: raw.rows.data,
            ends: raw.rows.ends,
        };
        if let Err(msg) = check_ends(&rows.ends, n, rows.data.len()) {
            return all_failed(n, FailKind::BadOutput, &format!("the deserializer {msg}"));
        }
        let mut failures: Vec<Failure> = raw
            .errors
            .into_iter()
            .filter(|e| (e.index as usize) < n)
            .map(failure_from_wit)
            .collect();
        failures.sort_by_key(|f| f.index);
        failures.dedup_by_key(|f| f.index);
        let view = rows.as_batch();
        let mut next_failure = 0;
        let mut bad_rows = Vec::new();
        for i in 0..n {
            if failures.get(next_failure).is_some_and(|f| f.index as usize == i) {
                next_failure += 1;
                continue;
            }
            let row = view.get(i).unwrap_or_default();
            if let Err(e) = wafer_row::validate(row, schema) {
                bad_rows.push(Failure {
                    index: i as u32,
                    kind: FailKind::BadOutput,
                    message: format!("the deserializer returned a row that breaks its schema: {e}"),
                });
            }
        }
        if !bad_rows.is_empty() {
            failures.extend(bad_rows);
            failures.sort_by_key(|f| f.index);
        }
        Decoded { rows, failures }
    }

    fn isolate(&mut self, data: &[u8], ends: &[u32]) -> Decoded {
        let mut out = Decoded {
            rows: BatchBuf::with_capacity(ends.len(), data.len()),
            failures: Vec::new(),
        };
        let mut start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let end = end as usize;
            let payload = data.get(start..end).unwrap_or_default();
            start = end;
            match self
                .guest
                .call(|b, s| call(b, s, payload, &[payload.len() as u32]))
            {
                Ok(raw) => {
                    let one = self.accept(raw, 1);
                    match one.failures.into_iter().next() {
                        Some(mut f) => {
                            f.index = i as u32;
                            out.failures.push(f);
                            out.rows.end_record();
                        }
                        None => out.rows.push(one.rows.as_batch().get(0).unwrap_or_default()),
                    }
                }
                Err(e) => {
                    out.failures.push(Failure {
                        index: i as u32,
                        kind: e.kind(),
                        message: e.to_string(),
                    });
                    out.rows.end_record();
                }
            }
        }
        out
    }
}

fn all_failed(n: usize, kind: FailKind, message: &str) -> Decoded {
    Decoded {
        rows: BatchBuf {
            data: Vec::new(),
            ends: vec![0; n],
        },
        failures: (0..n as u32)
            .map(|index| Failure {
                index,
                kind,
                message: message.to_string(),
            })
            .collect(),
    }
}
