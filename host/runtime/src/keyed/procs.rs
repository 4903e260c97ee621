//! Processor components in a keyed worker: batches grouped by key, calls in
//! state transactions, and isolation of the records (or timers) a guest
//! fails on.
//!
//! A call that traps, times out or exhausts memory is rolled back (its state
//! writes, timers and emitted rows are dropped) and re-run per key group,
//! then per record, so that only what fails on its own is dead-lettered and
//! keyed state never counts a record twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wafer_core::dead_letter::{DeadLetter, Reason};
use wafer_core::json::RowJson;
use wafer_metrics::{ComponentMetrics, StageMetrics};
use wafer_row::{BatchBuf, Row};
use wafer_state::{Domain, Fired};
use wafer_wasm::{KeyedBackend, ProcOutput, TimeDomain, TimerBatch};

use super::core::ProcBackend;
use super::{Core, KeyedBatch, OutputBuf, SourceInfo, row_payload};
use crate::RuntimeError;
use crate::dead_letters::{DeadLetters, reason_of};

/// One processor in one keyed worker.
pub(crate) struct ProcOp {
    pub name: Arc<str>,
    pub op: u16,
    pub stage: Box<dyn crate::Process>,
    /// Source index of each input, in order.
    pub inputs: Vec<usize>,
    /// Number of states it declared.
    pub states: u16,
    /// Worker output index of each of its outputs.
    pub outputs: Vec<usize>,
    /// Renderer of each of its outputs.
    pub json: Vec<RowJson>,
    pub metrics: StageMetrics,
    pub timing: ComponentMetrics,
}

/// Rows of one call, grouped by key.
struct Grouped {
    rows: BatchBuf,
    keys: BatchBuf,
    group_ends: Vec<u32>,
    /// Index in the source batch of each row.
    origin: Vec<u32>,
}

impl Grouped {
    fn groups(&self) -> usize {
        self.group_ends.len()
    }

    fn group(&self, g: usize) -> std::ops::Range<usize> {
        let start = if g == 0 {
            0
        } else {
            self.group_ends[g - 1] as usize
        };
        start..self.group_ends[g] as usize
    }

    /// A call holding only rows `range` of group `g`.
    fn subset(&self, g: usize, range: std::ops::Range<usize>) -> Grouped {
        let rows = self.rows.as_batch();
        let mut out = Grouped {
            rows: BatchBuf::new(),
            keys: BatchBuf::new(),
            group_ends: Vec::new(),
            origin: Vec::new(),
        };
        out.keys.push(self.keys.as_batch().get(g).unwrap_or_default());
        for i in range {
            out.rows.push(rows.get(i).unwrap_or_default());
            out.origin.push(self.origin[i]);
        }
        out.group_ends.push(out.rows.len() as u32);
        out
    }
}

fn lock(core: &Arc<Mutex<Core>>) -> Result<std::sync::MutexGuard<'_, Core>, RuntimeError> {
    core.lock()
        .map_err(|_| RuntimeError::Internal("keyed state lock poisoned".into()))
}

impl ProcOp {
    /// This processor's input index for a source, if it reads it.
    pub(crate) fn input_of(&self, source: usize) -> Option<u32> {
        self.inputs.iter().position(|s| *s == source).map(|i| i as u32)
    }

    fn backend(
        &self,
        core: &Arc<Mutex<Core>>,
        keys: &BatchBuf,
        wm: i64,
        horizons: Vec<i64>,
    ) -> Option<Box<dyn KeyedBackend>> {
        Some(Box::new(ProcBackend::new(
            core.clone(),
            self.op,
            self.states,
            keys.data.clone(),
            keys.ends.clone(),
            wm,
            horizons,
        )))
    }

    /// Hands the accepted rows of a batch to the processor, grouped by key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process(
        &mut self,
        core: &Arc<Mutex<Core>>,
        input: u32,
        batch: &KeyedBatch,
        accepted: &[u32],
        source: &SourceInfo,
        wm: i64,
        outputs: &mut [OutputBuf],
        dead: &mut DeadLetters,
    ) -> Result<(), RuntimeError> {
        if accepted.is_empty() {
            return Ok(());
        }
        self.metrics.records_in.inc_by(accepted.len() as u64);
        let rows = batch.rows.as_batch();
        let keys = batch.keys.as_batch();
        // Group by key, keeping arrival order within a key and the order of
        // first appearance between keys: number the groups, count them, and
        // place each row after its group's earlier rows (a counting sort, a
        // fixed number of allocations per batch whatever the keys).
        let mut index: HashMap<&[u8], u32, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(accepted.len(), Default::default());
        let mut group_of: Vec<u32> = Vec::with_capacity(accepted.len());
        // Per group: its first row (for the key), then where it starts.
        let mut first: Vec<u32> = Vec::new();
        let mut next: Vec<u32> = Vec::new();
        for &i in accepted {
            let k = keys.get(i as usize).unwrap_or_default();
            let g = *index.entry(k).or_insert_with(|| {
                first.push(i);
                next.push(0);
                (first.len() - 1) as u32
            });
            next[g as usize] += 1;
            group_of.push(g);
        }
        let mut grouped = Grouped {
            rows: BatchBuf::with_capacity(accepted.len(), batch.rows.data.len()),
            keys: BatchBuf::with_capacity(first.len(), 0),
            group_ends: Vec::with_capacity(first.len()),
            origin: vec![0; accepted.len()],
        };
        let mut end = 0u32;
        for (g, n) in next.iter_mut().enumerate() {
            grouped.keys.push(keys.get(first[g] as usize).unwrap_or_default());
            let start = end;
            end += *n;
            grouped.group_ends.push(end);
            *n = start;
        }
        for (&i, &g) in accepted.iter().zip(&group_of) {
            let at = &mut next[g as usize];
            grouped.origin[*at as usize] = i;
            *at += 1;
        }
        for &i in &grouped.origin {
            grouped.rows.push(rows.get(i as usize).unwrap_or_default());
        }
        self.run(core, input, &grouped, batch, source, wm, outputs, dead)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        core: &Arc<Mutex<Core>>,
        input: u32,
        call: &Grouped,
        batch: &KeyedBatch,
        source: &SourceInfo,
        wm: i64,
        outputs: &mut [OutputBuf],
        dead: &mut DeadLetters,
    ) -> Result<(), RuntimeError> {
        self.stage.follow_swap();
        let mut backend = self.backend(core, &call.keys, wm, Vec::new());
        lock(core)?.begin();
        let started = std::time::Instant::now();
        let result = self.stage.process(
            input,
            wafer_wasm::KeyedBatch {
                rows: &call.rows.data,
                row_ends: &call.rows.ends,
                keys: &call.keys.data,
                key_ends: &call.keys.ends,
                group_ends: &call.group_ends,
            },
            &mut backend,
        );
        self.timing.seconds.inc_by(started.elapsed().as_secs_f64());
        self.timing.calls.inc();
        match result {
            Ok(out) => {
                {
                    let mut c = lock(core)?;
                    c.commit()?;
                    c.check()?;
                }
                self.metrics.records_out.inc_by(call.rows.len() as u64);
                for f in &out.failures {
                    let i = call.origin.get(f.index as usize).copied().unwrap_or_default() as usize;
                    dead.push(&self.dead_letter(batch, source, i, reason_of(f.kind), f.message.clone()));
                }
                self.emit(out, outputs, dead, batch, source);
                Ok(())
            }
            Err(e) => {
                {
                    let mut c = lock(core)?;
                    c.abort();
                    c.check()?;
                }
                if call.groups() > 1 {
                    for g in 0..call.groups() {
                        let one = call.subset(g, call.group(g));
                        self.run(core, input, &one, batch, source, wm, outputs, dead)?;
                    }
                } else if call.rows.len() > 1 {
                    for i in 0..call.rows.len() {
                        let one = call.subset(0, i..i + 1);
                        self.run(core, input, &one, batch, source, wm, outputs, dead)?;
                    }
                } else if let Some(&i) = call.origin.first() {
                    let reason = reason_of(e.kind());
                    dead.push(&self.dead_letter(batch, source, i as usize, reason, e.to_string()));
                }
                Ok(())
            }
        }
    }

    fn dead_letter(
        &self,
        batch: &KeyedBatch,
        source: &SourceInfo,
        i: usize,
        reason: Reason,
        error: String,
    ) -> DeadLetter {
        DeadLetter {
            source: source.name.clone(),
            position: batch.positions.get(i),
            reason,
            stage: self.name.clone(),
            error,
            payload: row_payload(source, batch.rows.as_batch().get(i).unwrap_or_default()),
        }
    }

    fn emit(
        &self,
        out: ProcOutput,
        outputs: &mut [OutputBuf],
        dead: &mut DeadLetters,
        batch: &KeyedBatch,
        source: &SourceInfo,
    ) {
        for msg in &out.bad_rows {
            dead.push(&DeadLetter {
                source: source.name.clone(),
                position: batch.positions.get(0),
                reason: Reason::BadRow,
                stage: self.name.clone(),
                error: msg.clone(),
                payload: Vec::new(),
            });
        }
        self.write_rows(&out, outputs);
    }

    fn write_rows(&self, out: &ProcOutput, outputs: &mut [OutputBuf]) {
        let rows = out.rows.as_batch();
        for (i, &o) in out.outputs.iter().enumerate() {
            let (Some(&w), Some(json)) = (self.outputs.get(o as usize), self.json.get(o as usize)) else {
                continue;
            };
            let Some(spec) = self.stage.spec().outputs.get(o as usize) else {
                continue;
            };
            if let Some(buf) = outputs.get_mut(w) {
                json.write(
                    &Row::new(rows.get(i).unwrap_or_default(), spec.schema.len()),
                    &mut buf.buf,
                );
                buf.buf.push(b'\n');
            }
        }
    }

    /// Hands fired timers of this processor to its `on-timer`.
    pub(crate) fn on_timer(
        &mut self,
        core: &Arc<Mutex<Core>>,
        domain: Domain,
        fired: &[Fired],
        wm: i64,
        outputs: &mut [OutputBuf],
        dead: &mut DeadLetters,
    ) -> Result<(), RuntimeError> {
        let mut keys = BatchBuf::with_capacity(fired.len(), fired.len() * 16);
        for f in fired {
            keys.push(&f.key);
        }
        let times: Vec<i64> = fired.iter().map(|f| f.time).collect();
        let d = match domain {
            Domain::EventTime => TimeDomain::EventTime,
            Domain::ProcessingTime => TimeDomain::ProcessingTime,
        };
        let domains = vec![d; fired.len()];
        self.stage.follow_swap();
        // Event-time timers see state as of their own time.
        let horizons = match domain {
            Domain::EventTime => times.clone(),
            Domain::ProcessingTime => Vec::new(),
        };
        let mut backend = self.backend(core, &keys, wm, horizons);
        lock(core)?.begin();
        let started = std::time::Instant::now();
        let result = self.stage.on_timer(
            TimerBatch {
                keys: &keys.data,
                key_ends: &keys.ends,
                times: &times,
                domains: &domains,
            },
            &mut backend,
        );
        self.timing.seconds.inc_by(started.elapsed().as_secs_f64());
        self.timing.calls.inc();
        match result {
            Ok(out) => {
                {
                    let mut c = lock(core)?;
                    c.commit()?;
                    c.check()?;
                }
                for f in &out.failures {
                    tracing::warn!(processor = &*self.name, "on-timer failed: {}", f.message);
                }
                self.write_rows(&out, outputs);
                for msg in &out.bad_rows {
                    tracing::warn!(processor = &*self.name, "on-timer emitted a bad row: {msg}");
                }
                Ok(())
            }
            Err(e) => {
                {
                    let mut c = lock(core)?;
                    c.abort();
                    c.check()?;
                }
                if fired.len() > 1 {
                    for one in fired.chunks(1) {
                        self.on_timer(core, domain, one, wm, outputs, dead)?;
                    }
                } else if let Some(f) = fired.first() {
                    // A timer its processor cannot handle is dropped, and
                    // recorded with its key.
                    let mut payload = Vec::new();
                    wafer_core::json::write_base64(&mut payload, &f.key);
                    dead.push(&DeadLetter {
                        source: Arc::from(""),
                        position: wafer_core::dead_letter::Position::File {
                            path: Arc::from(format!("timer@{}", f.time)),
                            offset: 0,
                        },
                        reason: reason_of(e.kind()),
                        stage: self.name.clone(),
                        error: format!("on-timer at {}: {e}", f.time),
                        payload,
                    });
                }
                Ok(())
            }
        }
    }
}
