//! Deserializer stages: raw payloads in, validated rows out, one failure per
//! bad record.

use std::sync::Arc;

use wafer_row::{BatchBuf, Schema, Validator};
use wasmtime::Store;
use wasmtime::component::Func;

use crate::bindings::deserializer::Deserializer as Bindings;
use crate::convert::{failure_from_wit, schema_from_wit};
use crate::engine::{LoadedComponent, Pre};
use crate::host::{GuestTelemetry, HostState};
use crate::stage::{FlatRef, Isolated, Role, export_func};
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

/// An instance's bindings, and its `deserialize` export for calls that lend
/// the batch instead of copying it into an owned record first.
pub(crate) struct DeserBindings {
    bindings: Bindings,
    deserialize: Func,
}

impl Role for Deser {
    type Bindings = DeserBindings;
    type Setup = Schema;
    type Input = ();

    fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<DeserBindings> {
        let Pre::Deserializer(p) = pre else {
            return Err(wasmtime::format_err!("not a deserializer"));
        };
        let instance = p.instance_pre().instantiate(&mut *store)?;
        Ok(DeserBindings {
            bindings: Bindings::new(&mut *store, &instance)?,
            deserialize: export_func(&instance, store, "wafer:udf/deserialize@0.1.0", "deserialize")?,
        })
    }

    fn init(
        b: &DeserBindings,
        store: &mut Store<HostState>,
        config: &str,
        _: &(),
    ) -> wasmtime::Result<Result<Schema, String>> {
        Ok(b.bindings
            .wafer_udf_deserialize()
            .call_init(store, config)?
            .and_then(schema_from_wit))
    }
}

type Raw = crate::bindings::deserializer::exports::wafer::udf::deserialize::Decoded;

fn call(b: &DeserBindings, store: &mut Store<HostState>, data: &[u8], ends: &[u32]) -> wasmtime::Result<Raw> {
    // The typed view is checked against the component's type on each call
    // (a few comparisons); in exchange the batch is lowered into the guest
    // straight from the source's buffer, without an owned copy first.
    let f = b.deserialize.typed::<(FlatRef<'_>,), (Raw,)>(&*store)?;
    let (raw,) = f.call(store, (FlatRef { data, ends },))?;
    Ok(raw)
}

/// Runs a deserializer component over batches, isolating bad records.
pub struct DeserializeStage {
    guest: Isolated<Deser>,
    /// Checks the rows against the declared schema (fixed for the stage's
    /// life: a new version with another schema is refused).
    validator: Validator,
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
        let guest = Isolated::new(rt, slot, config, (), limits, telemetry)?;
        Ok(DeserializeStage {
            validator: Validator::new(guest.setup()),
            guest,
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
        let rows = BatchBuf {
            data: raw.rows.data,
            ends: raw.rows.ends,
        };
        if rows.ends.len() != n {
            return all_failed(
                n,
                FailKind::BadOutput,
                &format!(
                    "the deserializer returned {} results for {n} records",
                    rows.ends.len()
                ),
            );
        }
        let mut failures: Vec<Failure> = raw
            .errors
            .into_iter()
            .filter(|e| (e.index as usize) < n)
            .map(failure_from_wit)
            .collect();
        failures.sort_by_key(|f| f.index);
        failures.dedup_by_key(|f| f.index);
        // Offsets and rows in one pass; the rows of failed records are
        // meaningless, so the list of failures is only consulted for rows
        // that fail the quick check.
        let mut invalid = Vec::new();
        if let Err(msg) = self.validator.check_batch(&rows.data, &rows.ends, &mut invalid) {
            return all_failed(
                n,
                FailKind::BadOutput,
                &format!("the deserializer returned bad row offsets: {msg}"),
            );
        }
        let view = rows.as_batch();
        let mut bad_rows = Vec::new();
        for i in invalid {
            if failures.binary_search_by_key(&(i as u32), |f| f.index).is_ok() {
                continue;
            }
            if let Err(e) = self.validator.check(view.get(i).unwrap_or_default()) {
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
