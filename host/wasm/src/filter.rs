//! Filter stages: rows in, a keep/drop verdict per row out, one failure per
//! bad record.

use std::sync::Arc;

use wafer_row::Schema;
use wasmtime::Store;

use crate::bindings::filter::Filter as Bindings;
use crate::bindings::types::Rows;
use crate::convert::{failure_from_wit, schema_to_wit};
use crate::engine::{LoadedComponent, Pre};
use crate::host::{GuestTelemetry, HostState};
use crate::stage::{Isolated, Role};
use crate::{ComponentSlot, FailKind, Failure, Limits, LoadError, WasmRuntime};

/// Verdicts on one batch of rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// One per row: whether it goes on. Failed rows are `false`.
    pub keep: Vec<bool>,
    /// The rows that failed, in index order.
    pub failures: Vec<Failure>,
}

struct FilterRole;

impl Role for FilterRole {
    type Bindings = Bindings;
    type Setup = ();
    type Input = Schema;

    fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        match pre {
            Pre::Filter(p) => p.instantiate(store),
            _ => Err(wasmtime::format_err!("not a filter")),
        }
    }

    fn init(
        b: &Bindings,
        store: &mut Store<HostState>,
        config: &str,
        input: &Schema,
    ) -> wasmtime::Result<Result<(), String>> {
        b.wafer_udf_filter_rows()
            .call_init(store, config, &schema_to_wit(input))
    }
}

type Raw = crate::bindings::filter::exports::wafer::udf::filter_rows::Verdicts;

fn call(b: &Bindings, store: &mut Store<HostState>, data: &[u8], ends: &[u32]) -> wasmtime::Result<Raw> {
    let input = Rows {
        data: data.to_vec(),
        ends: ends.to_vec(),
    };
    b.wafer_udf_filter_rows().call_filter(store, &input)
}

/// Runs a filter component over batches of rows, isolating bad records.
pub struct FilterStage {
    guest: Isolated<FilterRole>,
}

impl FilterStage {
    /// Starts an instance of the slot's component and initialises it with
    /// `config` and the schema of its input rows.
    pub fn new(
        rt: &WasmRuntime,
        slot: ComponentSlot,
        config: String,
        input: Schema,
        limits: Limits,
        telemetry: Arc<dyn GuestTelemetry>,
    ) -> Result<Self, LoadError> {
        Ok(FilterStage {
            guest: Isolated::new(rt, slot, config, input, limits, telemetry)?,
        })
    }

    /// The component currently in use.
    pub fn component(&self) -> &Arc<LoadedComponent> {
        self.guest.component()
    }

    /// Filters a batch of rows (`data` split at `ends`).
    pub fn run(&mut self, data: &[u8], ends: &[u32]) -> Verdicts {
        self.guest.follow_swap();
        match self.guest.call(|b, s| call(b, s, data, ends)) {
            Ok(raw) => accept(raw, ends.len()),
            Err(_) => {
                let mut out = Verdicts::default();
                let mut start = 0usize;
                for (i, &end) in ends.iter().enumerate() {
                    let end = end as usize;
                    let row = data.get(start..end).unwrap_or_default();
                    start = end;
                    match self.guest.call(|b, s| call(b, s, row, &[row.len() as u32])) {
                        Ok(raw) => {
                            let one = accept(raw, 1);
                            out.keep.push(one.keep.first().copied().unwrap_or(false));
                            out.failures.extend(one.failures.into_iter().map(|mut f| {
                                f.index = i as u32;
                                f
                            }));
                        }
                        Err(e) => {
                            out.keep.push(false);
                            out.failures.push(Failure {
                                index: i as u32,
                                kind: e.kind(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                out
            }
        }
    }
}

fn accept(raw: Raw, n: usize) -> Verdicts {
    if raw.keep.len() != n {
        return Verdicts {
            keep: vec![false; n],
            failures: (0..n as u32)
                .map(|index| Failure {
                    index,
                    kind: FailKind::BadOutput,
                    message: format!("the filter returned {} verdicts for {n} rows", raw.keep.len()),
                })
                .collect(),
        };
    }
    let mut keep: Vec<bool> = raw.keep.iter().map(|&k| k != 0).collect();
    let mut failures: Vec<Failure> = raw
        .errors
        .into_iter()
        .filter(|e| (e.index as usize) < n)
        .map(failure_from_wit)
        .collect();
    failures.sort_by_key(|f| f.index);
    failures.dedup_by_key(|f| f.index);
    for f in &failures {
        keep[f.index as usize] = false;
    }
    Verdicts { keep, failures }
}
