//! A deserialization worker: raw batches in; deserializer component, event
//! time check, filters (built-in and components) in order; surviving rows to
//! the next stage; every failure to the dead-letter output.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use wafer_core::dead_letter::{DeadLetter, Reason};
use wafer_core::filter::Filter;
use wafer_core::watermark::LaneWatermarks;
use wafer_metrics::{ComponentMetrics, LocalHist, Metrics, StageMetrics};
use wafer_row::{BatchBuf, Row, Schema};
use wafer_wasm::{Decoded, DeserializeStage, FilterStage};

use crate::batch::RawBatch;
use crate::checkpoint::Report;
use crate::dead_letters::{DeadLetters, reason_of};
use crate::downstream::Downstream;

/// A deserializer as a worker sees it: a Wasm component, or (for measuring
/// the Wasm tax) the same logic compiled into the host.
pub trait Deserialize: Send {
    /// The schema of the rows produced.
    fn schema(&self) -> &Schema;
    /// The name shown in metrics.
    fn name(&self) -> &str;
    /// Deserializes a batch; one row or one failure per payload.
    fn run(&mut self, data: &[u8], ends: &[u32]) -> Decoded;
}

impl Deserialize for DeserializeStage {
    fn schema(&self) -> &Schema {
        DeserializeStage::schema(self)
    }

    fn name(&self) -> &str {
        self.component().name()
    }

    fn run(&mut self, data: &[u8], ends: &[u32]) -> Decoded {
        DeserializeStage::run(self, data, ends)
    }
}

/// One step of the filter chain.
pub(crate) enum Step {
    /// A built-in filter.
    Builtin { filter: Filter, metrics: StageMetrics },
    /// A filter component.
    Component {
        stage: Box<FilterStage>,
        name: Arc<str>,
        metrics: StageMetrics,
        timing: ComponentMetrics,
    },
}

/// Everything a worker needs, built on the main thread so that every
/// instantiation error surfaces before any record is read.
pub(crate) struct DeserWorker {
    pub(crate) source: Arc<str>,
    pub(crate) deser: Box<dyn Deserialize>,
    pub(crate) steps: Vec<Step>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) downstream: Downstream,
    pub(crate) metrics: Arc<Metrics>,
    /// This worker's event-time watermark, per lane (partition).
    pub(crate) watermark: LaneWatermarks,
    /// With checkpoints: (source index, worker index, the coordinator).
    pub(crate) link: Option<(usize, usize, crossbeam_channel::Sender<Report>)>,
}

impl DeserWorker {
    /// Runs until the source side closes the channel.
    pub(crate) fn run(mut self, rx: Receiver<RawBatch>) {
        let schema = self.deser.schema().clone();
        let n_fields = schema.len();
        let event_time = schema.event_time();
        let stage = self.metrics.stage(&format!("deserialize:{}", self.source));
        let timing = self
            .metrics
            .component(&format!("deserialize:{}", self.source), self.deser.name());
        let payload_hist = LocalHist::new(&self.metrics.payload_bytes(&self.source));
        let age_hist = LocalHist::new(&self.metrics.event_age(&self.source));
        let deser_stage: Arc<str> = Arc::from("deserializer");
        let mut survivors: Vec<u32> = Vec::new();
        let mut row_wms: Vec<i64> = Vec::new();
        let mut scratch = BatchBuf::new();

        for batch in rx {
            let n = batch.len();
            stage.records_in.inc_by(n as u64);
            for p in batch.records.as_batch().iter() {
                payload_hist.observe(p.len() as f64);
            }

            let now_ms = wafer_core::time::now_ms().max(0) as u64;
            if let Some(id) = batch.barrier {
                // Everything before the barrier is handled: record the
                // watermarks and pass the barrier on.
                self.dead_letters.barrier(id);
                let wm = self.watermark.watermark(now_ms);
                self.downstream.barrier(id, batch.chunk, wm);
                if let Some((source, worker, reports)) = &self.link {
                    let _ = reports.send(Report::Deser {
                        source: *source,
                        worker: *worker,
                        id,
                        lanes: self.watermark.snapshot(),
                    });
                }
                continue;
            }
            if let Some(status) = &batch.lane_status {
                for &(lane, finished) in status.iter() {
                    self.watermark.register(lane, finished, now_ms);
                }
            }
            if n == 0 {
                // A heartbeat: nothing to decode, only the watermark to pass on.
                let wm = self.watermark.watermark(now_ms);
                self.downstream.send(
                    &schema,
                    &wafer_row::Batch::new(&[], &[]),
                    &[],
                    &batch,
                    &[],
                    wm,
                    &mut self.dead_letters,
                    &self.source,
                );
                continue;
            }

            let started = Instant::now();
            let decoded = self.deser.run(&batch.records.data, &batch.records.ends);
            timing.seconds.inc_by(started.elapsed().as_secs_f64());
            timing.calls.inc();

            let now = wafer_core::time::now_ms();
            row_wms.clear();
            row_wms.resize(n, i64::MIN);
            let rows = decoded.rows.as_batch();
            let mut failures = decoded.failures.iter().peekable();
            survivors.clear();
            for (i, row_wm) in row_wms.iter_mut().enumerate() {
                if let Some(f) = failures.next_if(|f| f.index as usize == i) {
                    self.dead_letters.push(&DeadLetter {
                        source: self.source.clone(),
                        position: batch.position(i),
                        reason: reason_of(f.kind),
                        stage: deser_stage.clone(),
                        error: f.message.clone(),
                        payload: batch.payload(i).to_vec(),
                    });
                    continue;
                }
                let row = Row::new(rows.get(i).unwrap_or_default(), n_fields);
                if let Some(et) = event_time {
                    match row.int(et) {
                        Some(t) => {
                            age_hist.observe((now - t) as f64 / 1000.0);
                            // The watermark a record is judged against is its
                            // lane's watermark just before it: its partition's
                            // own progress, whatever other partitions did.
                            let lane = batch.lanes.get(i).copied().unwrap_or(0);
                            *row_wm = self.watermark.observe(lane, t, now_ms);
                        }
                        None => {
                            self.dead_letters.push(&DeadLetter {
                                source: self.source.clone(),
                                position: batch.position(i),
                                reason: Reason::NoEventTime,
                                stage: deser_stage.clone(),
                                error: format!("event-time field `{}` is absent", schema.field(et).name),
                                payload: batch.payload(i).to_vec(),
                            });
                            continue;
                        }
                    }
                }
                survivors.push(i as u32);
            }

            for step in &mut self.steps {
                match step {
                    Step::Builtin { filter, metrics } => {
                        metrics.records_in.inc_by(survivors.len() as u64);
                        let before = survivors.len();
                        survivors.retain(|&i| {
                            let i = i as usize;
                            let row = Row::new(rows.get(i).unwrap_or_default(), n_fields);
                            filter.keep(&row, batch.payload(i))
                        });
                        metrics.records_out.inc_by(survivors.len() as u64);
                        metrics.filtered.inc_by((before - survivors.len()) as u64);
                    }
                    Step::Component {
                        stage: fstage,
                        name,
                        metrics,
                        timing,
                    } => {
                        if survivors.is_empty() {
                            continue;
                        }
                        metrics.records_in.inc_by(survivors.len() as u64);
                        scratch.clear();
                        for &i in &survivors {
                            scratch.push(rows.get(i as usize).unwrap_or_default());
                        }
                        let started = Instant::now();
                        let verdicts = fstage.run(&scratch.data, &scratch.ends);
                        timing.seconds.inc_by(started.elapsed().as_secs_f64());
                        timing.calls.inc();
                        for f in &verdicts.failures {
                            let i = survivors[f.index as usize] as usize;
                            self.dead_letters.push(&DeadLetter {
                                source: self.source.clone(),
                                position: batch.position(i),
                                reason: reason_of(f.kind),
                                stage: name.clone(),
                                error: f.message.clone(),
                                payload: batch.payload(i).to_vec(),
                            });
                        }
                        let before = survivors.len();
                        let mut k = 0;
                        survivors.retain(|_| {
                            let keep = verdicts.keep.get(k).copied().unwrap_or(false);
                            k += 1;
                            keep
                        });
                        metrics.records_out.inc_by(survivors.len() as u64);
                        metrics
                            .filtered
                            .inc_by((before - survivors.len() - verdicts.failures.len()) as u64);
                    }
                }
            }

            stage.records_out.inc_by(survivors.len() as u64);
            let wm = self.watermark.watermark(now_ms);
            self.downstream.send(
                &schema,
                &rows,
                &survivors,
                &batch,
                &row_wms,
                wm,
                &mut self.dead_letters,
                &self.source,
            );
            self.dead_letters.flush();
            payload_hist.flush();
            age_hist.flush();
        }
        self.downstream.finish();
    }
}
