//! The keyed stage: workers that own a share of the key space, their state
//! and timers, and run windows and processors over it.
//!
//! Deserialization workers hash each record's key into a key group and send
//! it to the keyed worker owning that group, so all records of a key meet in
//! one worker and per-key state needs no locks. Each message carries the
//! sender's watermark; a keyed worker's watermark is the minimum over its
//! senders (ended ones count as +infinity, idle ones are left out). For each
//! batch the worker, in order: judges lateness against the watermark as it
//! was before the batch, feeds windows and processors, then advances the
//! watermark and fires due timers in time order.

mod core;
mod procs;
mod windows;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wafer_connectors::OutputWriter;
use wafer_core::dead_letter::DeadLetter;
use wafer_core::json::RowJson;
use wafer_core::watermark::{InputWatermarks, MAX_WATERMARK};
use wafer_core::window::record_late;
use wafer_metrics::{Gauge, IntCounter, Metrics, StageMetrics};
use wafer_row::{BatchBuf, Row, Schema};
use wafer_state::{Domain, Fired};

use crate::RuntimeError;
use crate::batch::{Positions, RawBatch};
use crate::checkpoint::{Control, KeyedCut, KeyedLink};
use crate::dead_letters::DeadLetters;

pub(crate) use self::core::Core;
pub(crate) use procs::ProcOp;
pub(crate) use windows::WindowOp;

/// Records of one source for one keyed worker.
#[derive(Debug, Default)]
pub(crate) struct KeyedBatch {
    /// Index of the sending deserialization worker among the worker's inputs.
    pub sender: usize,
    /// Index of the source.
    pub source: usize,
    /// The source chunk these rows belong to (see `source.rs`).
    pub chunk: u64,
    /// Sequence number of each row in the source.
    pub seqs: Vec<u64>,
    /// Rows of the source's schema.
    pub rows: BatchBuf,
    /// Key rows, one per row.
    pub keys: BatchBuf,
    /// Event time of each row.
    pub times: Vec<i64>,
    /// Where each row came from.
    pub positions: Positions,
    /// The sender's watermark just before each row: what the row's lateness
    /// is judged against (at least as recent as the operator's watermark,
    /// and never ahead of a sequential reading of the input).
    pub row_watermarks: Vec<i64>,
    /// The sender's watermark after this batch.
    pub watermark: i64,
    /// A checkpoint barrier (the batch has no rows).
    pub barrier: Option<u64>,
}

/// What flows into a keyed worker.
#[derive(Debug)]
pub(crate) enum KeyedMsg {
    /// Records (possibly none: a watermark update).
    Batch(Box<KeyedBatch>),
    /// A sender is done.
    End {
        /// which
        sender: usize,
    },
}

/// A source as the keyed stage sees it.
pub(crate) struct SourceInfo {
    pub name: Arc<str>,
    pub schema: Schema,
    pub json: RowJson,
}

/// An output a keyed worker writes: rows rendered to JSON lines, handed over
/// per message.
pub(crate) struct OutputBuf {
    pub writer: OutputWriter,
    pub buf: Vec<u8>,
}

impl OutputBuf {
    pub(crate) fn new(writer: OutputWriter) -> Self {
        OutputBuf {
            writer,
            buf: Vec::new(),
        }
    }

    pub(crate) fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.writer.write(std::mem::take(&mut self.buf));
        }
    }
}

/// Job-wide settings of the keyed stage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyedSettings {
    pub allowed_lateness_ms: i64,
    pub idle_timeout: Duration,
}

/// One keyed worker.
pub(crate) struct KeyedWorker {
    pub index: usize,
    pub settings: KeyedSettings,
    pub senders: usize,
    /// The source each sender reads.
    pub sender_sources: Vec<usize>,
    pub sources: Vec<SourceInfo>,
    pub core: Arc<Mutex<Core>>,
    pub windows: Vec<WindowOp>,
    pub procs: Vec<ProcOp>,
    pub late: Option<OutputBuf>,
    pub outputs: Vec<OutputBuf>,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    /// Keep the state on disk, compacted, at the end.
    pub keep_state: bool,
    /// With checkpoints: dirty entries kept between batches before the
    /// oldest are written back early (bounds what a barrier freezes).
    pub max_dirty: Option<usize>,
    /// With checkpoints: entries a freeze captures between two batches.
    pub freeze_slice: usize,
    /// Keyed workers in the job.
    pub workers: usize,
    /// With checkpoints: the coordinator.
    pub link: Option<KeyedLink>,
    /// The job's flags.
    pub control: Arc<Control>,
    /// Restored from a checkpoint: watermarks and stream time to start from.
    pub restore: Option<KeyedCut>,
    /// A freeze under way: the checkpoint, the cut, the longest pause yet.
    pub freezing: Option<(u64, KeyedCut, Duration)>,
    /// The checkpoint whose snapshot this worker's writes are held for.
    pub snapshot_pending: Option<u64>,
}

fn poisoned() -> RuntimeError {
    RuntimeError::Internal("keyed state lock poisoned".into())
}

/// Writes a worker holds back while a snapshot is taken before it stops to
/// wait for the snapshot (evictions during a long alignment of the other
/// workers, say): bounds the memory they take.
const MAX_WRITES_WAITING: usize = 1 << 16;

/// Where a keyed worker is with each sender and source.
struct Flow {
    last_seen: Vec<Instant>,
    queues: Vec<VecDeque<Box<KeyedBatch>>>,
    ended: Vec<bool>,
    next_chunk: Vec<u64>,
    /// Sources held at a checkpoint barrier.
    blocked: Vec<Option<u64>>,
    /// Sources whose senders all ended and were drained.
    done: Vec<bool>,
    /// Sources feeding this stage.
    keyed_sources: Vec<usize>,
}

/// Counters of a keyed worker.
struct Counters {
    stage: StageMetrics,
    late: IntCounter,
    watermark: Gauge,
    lag: Gauge,
    /// Live state entries, their peak, pending timers, their peak.
    size: [Gauge; 4],
}

impl KeyedWorker {
    /// Runs until every sender has ended, then fires everything and flushes.
    pub(crate) fn run(mut self, rx: Receiver<KeyedMsg>) -> Result<(), RuntimeError> {
        let stage = self.metrics.stage("keyed");
        let (watermark, lag) = self.metrics.watermark(&format!("keyed-{}", self.index));
        let counters = Counters {
            stage,
            late: self.metrics.stage("late").records_out,
            watermark,
            lag,
            size: self.metrics.state_size(&self.index.to_string()),
        };
        let mut wms = InputWatermarks::new(self.senders);
        if let Some(r) = self.restore.take() {
            wms.restore(&r.senders, r.watermark);
            let (index, workers) = (self.index, self.workers);
            let mut core = self.lock()?;
            core.state.observe_event_time(r.stream_time);
            core.state.set_watermark(r.watermark);
            core.timers
                .load(|g| wafer_core::key::worker_of(g, workers) == index)
                .map_err(self::core::state_error)?;
            counters.watermark.set(r.watermark as f64);
        }
        let mut flow = Flow {
            last_seen: vec![Instant::now(); self.senders],
            queues: (0..self.senders).map(|_| VecDeque::new()).collect(),
            ended: vec![false; self.senders],
            next_chunk: vec![0u64; self.sources.len()],
            blocked: vec![None; self.sources.len()],
            done: vec![false; self.sources.len()],
            keyed_sources: {
                let mut v = self.sender_sources.clone();
                v.sort_unstable();
                v.dedup();
                v
            },
        };
        let tick = self
            .settings
            .idle_timeout
            .min(Duration::from_millis(200))
            .max(Duration::from_millis(10));
        loop {
            match rx.recv_timeout(tick) {
                Ok(KeyedMsg::Batch(batch)) => {
                    let (sender, source) = (batch.sender, batch.source);
                    flow.last_seen[sender] = Instant::now();
                    flow.queues[sender].push_back(batch);
                    self.drain(source, &mut flow, &mut wms, &counters)?;
                }
                Ok(KeyedMsg::End { sender }) => {
                    flow.ended[sender] = true;
                    let source = self.sender_sources.get(sender).copied().unwrap_or_default();
                    self.drain(source, &mut flow, &mut wms, &counters)?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    for (i, seen) in flow.last_seen.iter().enumerate() {
                        if now.duration_since(*seen) >= self.settings.idle_timeout
                            && !wms.is_idle(i)
                            && let Some(wm) = wms.set_idle(i)
                        {
                            self.advance(wm, &counters)?;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.align(&mut flow, &mut wms, &counters)?;
            if flow.keyed_sources.iter().all(|&s| flow.done[s]) {
                break;
            }
            self.fire_processing_time()?;
            self.flush_outputs();
            self.report_size(&counters)?;
            self.checkpoint_work(false)?;
        }
        // End of input: everything is complete. Not so when the job stops
        // with a savepoint: it will go on from there.
        if !self.control.stopping() {
            self.advance(MAX_WATERMARK, &counters)?;
        }
        self.flush_outputs();
        self.report_size(&counters)?;
        self.checkpoint_work(true)?;
        let mut core = self.lock()?;
        if self.keep_state {
            core.flush()?;
        }
        Ok(())
    }

    /// Once every keyed source is at the same checkpoint barrier (or has
    /// ended), takes this worker's part of the checkpoint and lets the
    /// sources go on.
    fn align(
        &mut self,
        flow: &mut Flow,
        wms: &mut InputWatermarks,
        counters: &Counters,
    ) -> Result<(), RuntimeError> {
        loop {
            let Some(id) = flow.keyed_sources.iter().filter_map(|&s| flow.blocked[s]).min() else {
                return Ok(());
            };
            let waiting = flow
                .keyed_sources
                .iter()
                .any(|&s| flow.blocked[s] != Some(id) && !flow.done[s]);
            if waiting {
                return Ok(());
            }
            self.checkpoint(id, wms)?;
            let sources = flow.keyed_sources.clone();
            for &s in &sources {
                flow.blocked[s] = None;
            }
            for &s in &sources {
                self.drain(s, flow, wms, counters)?;
            }
        }
    }

    /// This worker's part of checkpoint `id`: outputs told, a freeze of
    /// state and timers as of the barrier started. The worker goes on; the
    /// freeze completes a slice at a time between batches and is then
    /// handed to the coordinator with the watermarks, and the worker's own
    /// writes wait for the snapshot (see [`checkpoint_work`](Self::checkpoint_work)).
    fn checkpoint(&mut self, id: u64, wms: &InputWatermarks) -> Result<(), RuntimeError> {
        // The last checkpoint's snapshot was taken before this one began;
        // its go-ahead may still be in the channel.
        self.checkpoint_work(true)?;
        self.flush_outputs();
        for o in &self.outputs {
            o.writer.barrier(id);
        }
        if let Some(l) = &self.late {
            l.writer.barrier(id);
        }
        self.dead_letters.barrier(id);
        let started = Instant::now();
        let cut = {
            let mut core = self.lock()?;
            match self.link {
                Some(_) => core.begin_freeze()?,
                None => core.flush()?,
            }
            KeyedCut {
                watermark: wms.current(),
                stream_time: core.state.stream_time(),
                senders: wms.snapshot(),
            }
        };
        if self.link.is_some() {
            self.freezing = Some((id, cut, started.elapsed()));
            self.checkpoint_work(false)?;
        }
        Ok(())
    }

    /// Between batches: captures the next slice of a freeze under way
    /// (reporting the frozen set once complete), and once the snapshot this
    /// worker's writes are held for is taken (or abandoned) lets it write
    /// again. With `wait`, completes both; it also waits when too many
    /// writes are waiting.
    fn checkpoint_work(&mut self, wait: bool) -> Result<(), RuntimeError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        // Nothing under way: the common case between two batches.
        if self.freezing.is_none() && self.snapshot_pending.is_none() {
            return Ok(());
        }
        let wait = wait || self.lock()?.state.writes_waiting() > MAX_WRITES_WAITING;
        if let Some((id, _, paused)) = &mut self.freezing {
            let id = *id;
            let started = Instant::now();
            let slice = if wait { usize::MAX } else { self.freeze_slice };
            let frozen = self.core.lock().map_err(|_| poisoned())?.state.freeze_step(slice);
            *paused = (*paused).max(started.elapsed());
            let Some(frozen) = frozen else {
                return Ok(());
            };
            if let Some((_, cut, paused)) = self.freezing.take() {
                link.report(self.index, id, cut, frozen, paused);
            }
            self.snapshot_pending = Some(id);
        }
        let Some(id) = self.snapshot_pending else {
            return Ok(());
        };
        if !link.snapshot_done(id, wait)? {
            return Ok(());
        }
        self.lock()?.state.release().map_err(core::state_error)?;
        self.snapshot_pending = None;
        Ok(())
    }

    /// Handles every chunk of `source` whose parts from all its senders have
    /// arrived, in chunk order, each with its rows back in source order; stops
    /// at a checkpoint barrier until [`align`](Self::align) lets it go on.
    fn drain(
        &mut self,
        source: usize,
        flow: &mut Flow,
        wms: &mut InputWatermarks,
        counters: &Counters,
    ) -> Result<(), RuntimeError> {
        let members: Vec<usize> = (0..self.senders)
            .filter(|&x| self.sender_sources[x] == source)
            .collect();
        loop {
            if flow.blocked[source].is_some() || flow.done[source] {
                return Ok(());
            }
            if members
                .iter()
                .any(|&x| flow.queues[x].is_empty() && !flow.ended[x])
            {
                return Ok(());
            }
            let parts: Vec<Box<KeyedBatch>> = members
                .iter()
                .filter_map(|&x| flow.queues[x].pop_front())
                .collect();
            if parts.is_empty() {
                // Every sender of the source is done.
                flow.done[source] = true;
                for &x in &members {
                    if let Some(wm) = wms.end(x) {
                        self.advance(wm, counters)?;
                    }
                }
                return Ok(());
            }
            let chunk = flow.next_chunk.get(source).copied().unwrap_or_default();
            if parts.iter().any(|p| p.chunk != chunk) {
                return Err(RuntimeError::Internal(format!(
                    "keyed worker {}: chunks of source {source} out of step",
                    self.index
                )));
            }
            flow.next_chunk[source] += 1;
            if let Some(id) = parts[0].barrier {
                for p in &parts {
                    if let Some(wm) = wms.update(p.sender, p.watermark) {
                        self.advance(wm, counters)?;
                    }
                }
                flow.blocked[source] = Some(id);
                return Ok(());
            }
            let mut with_rows = parts.iter().filter(|p| !p.rows.is_empty());
            match (with_rows.next(), with_rows.next()) {
                (None, _) => {}
                // One sender had rows for this worker: already in order.
                (Some(only), None) => self.handle(only, wms.current(), counters)?,
                _ => self.handle(&merge(source, chunk, &parts), wms.current(), counters)?,
            }
            for p in &parts {
                if let Some(wm) = wms.update(p.sender, p.watermark) {
                    self.advance(wm, counters)?;
                }
            }
        }
    }

    fn report_size(&self, counters: &Counters) -> Result<(), RuntimeError> {
        let core = self.lock()?;
        let values = [
            core.state.live_entries(),
            core.state.peak_entries(),
            core.timers.len(),
            core.timers.peak(),
        ];
        for (g, v) in counters.size.iter().zip(values) {
            g.set(v as f64);
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Core>, RuntimeError> {
        self.core.lock().map_err(|_| poisoned())
    }

    fn flush_outputs(&mut self) {
        for o in &mut self.outputs {
            o.flush();
        }
        if let Some(l) = &mut self.late {
            l.flush();
        }
        self.dead_letters.flush();
    }

    /// Handles the rows of one batch at watermark `wm`.
    fn handle(&mut self, batch: &KeyedBatch, wm: i64, counters: &Counters) -> Result<(), RuntimeError> {
        let n = batch.rows.len();
        counters.stage.records_in.inc_by(n as u64);
        let Some(source) = self.sources.get(batch.source) else {
            return Err(RuntimeError::Internal(format!("unknown source {}", batch.source)));
        };
        let n_fields = source.schema.len();
        let rows = batch.rows.as_batch();
        let keys = batch.keys.as_batch();
        let lateness = self.settings.allowed_lateness_ms;
        let mut accepted: Vec<u32> = Vec::with_capacity(n);
        {
            let core_arc = Arc::clone(&self.core);
            let mut core = core_arc
                .lock()
                .map_err(|_| RuntimeError::Internal("keyed state lock poisoned".into()))?;
            for i in 0..n {
                let t = batch.times[i];
                let wm = batch.row_watermarks.get(i).copied().unwrap_or(wm).max(wm);
                core.state.observe_event_time(t);
                let row = Row::new(rows.get(i).unwrap_or_default(), n_fields);
                // A record feeding windows is late only when every window it
                // belongs to is closed; any other record when its event time
                // is older than the watermark minus the allowed lateness.
                let mut in_window = false;
                let mut window_open = false;
                // Windows taking the row, by index (a window's input filter
                // is evaluated once per row).
                let mut takes: u64 = 0;
                for (wi, w) in self.windows.iter().enumerate() {
                    if w.accepts(batch.source, &row) {
                        takes |= 1u64.checked_shl(wi as u32).unwrap_or(0);
                        in_window = true;
                        window_open |= w.open_for(t, lateness, wm);
                    }
                }
                let late = if in_window {
                    !window_open
                } else {
                    record_late(t, lateness, wm)
                };
                if late {
                    counters.late.inc();
                    if let Some(out) = &mut self.late {
                        source.json.write(&row, &mut out.buf);
                        out.buf.push(b'\n');
                    }
                    continue;
                }
                let key = keys.get(i).unwrap_or_default();
                for (wi, w) in self.windows.iter_mut().enumerate() {
                    let taken = match 1u64.checked_shl(wi as u32) {
                        Some(bit) => takes & bit != 0,
                        // Past 64 windows: asked again.
                        None => w.accepts(batch.source, &row),
                    };
                    if taken {
                        w.add(&mut core, key, &row, t, wm, lateness, &mut self.outputs)?;
                    }
                }
                accepted.push(i as u32);
            }
        }
        counters.stage.records_out.inc_by(accepted.len() as u64);
        for p in 0..self.procs.len() {
            if let Some(input) = self.procs[p].input_of(batch.source) {
                let (procs, outputs, dl) = (&mut self.procs, &mut self.outputs, &mut self.dead_letters);
                procs[p].process(&self.core, input, batch, &accepted, source, wm, outputs, dl)?;
            }
        }
        self.checkpoint_work(false)?;
        if let Some(max) = self.max_dirty {
            // Dirty entries go to RocksDB a few at a time between batches,
            // so that a barrier finds at most `max` left to write while
            // processing waits.
            self.lock()?
                .state
                .write_back_excess(max)
                .map_err(core::state_error)?;
        }
        Ok(())
    }

    /// Moves the watermark to `wm` and fires every event-time timer due.
    fn advance(&mut self, wm: i64, counters: &Counters) -> Result<(), RuntimeError> {
        counters.watermark.set(wm as f64);
        if wm != MAX_WATERMARK {
            counters
                .lag
                .set((wafer_core::time::now_ms().saturating_sub(wm)) as f64 / 1000.0);
        }
        self.lock()?.state.set_watermark(wm);
        self.fire(Domain::EventTime, wm)
    }

    fn fire_processing_time(&mut self) -> Result<(), RuntimeError> {
        let now = wafer_core::time::now_ms();
        let due = self
            .lock()?
            .timers
            .next(Domain::ProcessingTime)
            .is_some_and(|t| t <= now);
        if due {
            self.fire(Domain::ProcessingTime, now)?;
        }
        Ok(())
    }

    /// Fires timers of `domain` due at `upto`, in time order, until none is
    /// left (firing may set new ones).
    fn fire(&mut self, domain: Domain, upto: i64) -> Result<(), RuntimeError> {
        // Firing may set timers that are due at once; a guest that keeps
        // setting due timers must not hang the worker.
        for _round in 0..10_000 {
            let fired = self.lock()?.timers.pop_due(domain, upto, 4096);
            if fired.is_empty() {
                return Ok(());
            }
            let mut start = 0;
            while start < fired.len() {
                let op = fired[start].op;
                let end = fired[start..]
                    .iter()
                    .position(|f| f.op != op)
                    .map_or(fired.len(), |k| start + k);
                self.fire_op(op, domain, &fired[start..end], upto)?;
                start = end;
            }
            self.flush_outputs();
        }
        tracing::error!(
            worker = self.index,
            "timers keep firing; the rest fire with the next watermark"
        );
        Ok(())
    }

    fn fire_op(&mut self, op: u16, domain: Domain, fired: &[Fired], wm: i64) -> Result<(), RuntimeError> {
        let lateness = self.settings.allowed_lateness_ms;
        if let Some(w) = self.windows.iter_mut().find(|w| w.owns(op)) {
            let mut core = self
                .core
                .lock()
                .map_err(|_| RuntimeError::Internal("lock poisoned".into()))?;
            for f in fired {
                w.on_timer(&mut core, op, f, lateness, wm, &mut self.outputs)?;
            }
            return Ok(());
        }
        if let Some(p) = self.procs.iter_mut().find(|p| p.op == op) {
            return p.on_timer(
                &self.core,
                domain,
                fired,
                wm,
                &mut self.outputs,
                &mut self.dead_letters,
            );
        }
        tracing::warn!(op, "a timer of an unknown operator fired; dropped");
        Ok(())
    }
}

/// Puts the parts of one chunk back into source order: each part is in
/// order (a sender keeps its rows' order), so this merges them, taking the
/// part with the smallest next sequence number each time.
fn merge(source: usize, chunk: u64, parts: &[Box<KeyedBatch>]) -> KeyedBatch {
    let total = parts.iter().map(|p| p.seqs.len()).sum();
    let mut order: Vec<(u64, usize, usize)> = Vec::with_capacity(total);
    let mut next = vec![0usize; parts.len()];
    while order.len() < total {
        let mut best: Option<(u64, usize)> = None;
        for (pi, p) in parts.iter().enumerate() {
            if let Some(&seq) = p.seqs.get(next[pi])
                && best.is_none_or(|(s, _)| seq < s)
            {
                best = Some((seq, pi));
            }
        }
        let Some((seq, pi)) = best else { break };
        order.push((seq, pi, next[pi]));
        next[pi] += 1;
    }
    debug_assert!(order.windows(2).all(|w| w[0].0 <= w[1].0), "parts out of order");
    let mut out = KeyedBatch {
        sender: usize::MAX,
        source,
        chunk,
        rows: BatchBuf::with_capacity(order.len(), parts.iter().map(|p| p.rows.data.len()).sum()),
        keys: BatchBuf::with_capacity(order.len(), parts.iter().map(|p| p.keys.data.len()).sum()),
        positions: Positions::with_capacity(order.len()),
        ..KeyedBatch::default()
    };
    for (seq, pi, ri) in order {
        let p = &parts[pi];
        out.rows.push(p.rows.as_batch().get(ri).unwrap_or_default());
        out.keys.push(p.keys.as_batch().get(ri).unwrap_or_default());
        out.times.push(p.times[ri]);
        out.positions.push_from(&p.positions, ri);
        out.row_watermarks.push(p.row_watermarks[ri]);
        out.seqs.push(seq);
    }
    out
}

/// Sends rows to keyed workers by key group, and watermarks to all of them.
pub(crate) struct KeyedRouter {
    pub sender: usize,
    pub source: usize,
    pub key: wafer_core::key::KeySpec,
    pub senders: Vec<crossbeam_channel::Sender<KeyedMsg>>,
}

impl KeyedRouter {
    /// Routes rows `survivors` of a batch; records without their key fields
    /// are dead-lettered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        &mut self,
        schema: &Schema,
        rows: &wafer_row::Batch<'_>,
        survivors: &[u32],
        raw: &RawBatch,
        row_watermarks: &[i64],
        watermark: i64,
        dead: &mut DeadLetters,
        source_name: &Arc<str>,
    ) {
        let m = self.senders.len();
        // Each worker's part sized for a little over an even share, so that
        // filling it rarely grows (and copies) its buffers.
        let share = survivors.len().div_ceil(m.max(1));
        let room = share + share / 4 + 8;
        let row_bytes = rows.bytes() / rows.len().max(1) + 1;
        let mut out: Vec<KeyedBatch> = (0..m)
            .map(|_| KeyedBatch {
                sender: self.sender,
                source: self.source,
                chunk: raw.chunk,
                watermark,
                rows: BatchBuf::with_capacity(room, room * row_bytes),
                keys: BatchBuf::with_capacity(room, room * 24),
                times: Vec::with_capacity(room),
                positions: Positions::with_capacity(room),
                row_watermarks: Vec::with_capacity(room),
                seqs: Vec::with_capacity(room),
                barrier: None,
            })
            .collect();
        let et = schema.event_time();
        let n = schema.len();
        let mut key = Vec::with_capacity(64);
        for &i in survivors {
            let i = i as usize;
            let bytes = rows.get(i).unwrap_or_default();
            let row = Row::new(bytes, n);
            key.clear();
            if let Err(field) = self.key.extract(&row, &mut key) {
                dead.push(&DeadLetter {
                    source: source_name.clone(),
                    position: raw.position(i),
                    reason: wafer_core::dead_letter::Reason::NoKey,
                    stage: Arc::from("key_by"),
                    error: format!("key field `{field}` is absent"),
                    payload: raw.payload(i).to_vec(),
                });
                continue;
            }
            let w = wafer_core::key::worker_of(wafer_core::key::key_group(&key), m);
            let b = &mut out[w];
            b.rows.push(bytes);
            b.keys.push(&key);
            b.times.push(et.and_then(|e| row.int(e)).unwrap_or(i64::MIN));
            b.positions
                .push(raw.origin(i), raw.offsets.get(i).copied().unwrap_or_default());
            b.row_watermarks
                .push(row_watermarks.get(i).copied().unwrap_or(i64::MIN));
            b.seqs.push(raw.seqs.get(i).copied().unwrap_or_default());
        }
        // Every keyed worker gets every chunk, empty or not: it waits for all
        // parts of a chunk before handling it.
        for (w, b) in out.into_iter().enumerate() {
            let _ = self.senders[w].send(KeyedMsg::Batch(Box::new(b)));
        }
    }

    /// Sends checkpoint barrier `id` (chunk `chunk`) to every keyed worker.
    pub(crate) fn barrier(&mut self, id: u64, chunk: u64, watermark: i64) {
        for s in &self.senders {
            let _ = s.send(KeyedMsg::Batch(Box::new(KeyedBatch {
                sender: self.sender,
                source: self.source,
                chunk,
                watermark,
                barrier: Some(id),
                ..KeyedBatch::default()
            })));
        }
    }

    /// Tells every keyed worker this sender is done.
    pub(crate) fn finish(&self) {
        for s in &self.senders {
            let _ = s.send(KeyedMsg::End { sender: self.sender });
        }
    }
}

/// Renders a row of `source` as the payload of a dead letter.
pub(crate) fn row_payload(source: &SourceInfo, row: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    source.json.write(&Row::new(row, source.schema.len()), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::dead_letter::Position;

    fn part(sender: usize, seqs: &[u64]) -> Box<KeyedBatch> {
        let mut b = KeyedBatch {
            sender,
            ..KeyedBatch::default()
        };
        let origin = Arc::new(crate::batch::Origin::File("f".into()));
        for &s in seqs {
            b.rows.push(format!("row{s}").as_bytes());
            b.keys.push(format!("key{s}").as_bytes());
            b.times.push(s as i64 * 10);
            b.positions.push(Some(&origin), s * 100);
            b.row_watermarks.push(s as i64);
            b.seqs.push(s);
        }
        Box::new(b)
    }

    #[test]
    fn merge_restores_source_order_across_parts() {
        let parts = vec![part(0, &[0, 3, 4, 9]), part(1, &[]), part(2, &[1, 2, 5, 6, 7, 8])];
        let m = merge(7, 3, &parts);
        assert_eq!((m.source, m.chunk), (7, 3));
        assert_eq!(m.seqs, (0..10).collect::<Vec<u64>>());
        for s in 0..10u64 {
            let i = s as usize;
            assert_eq!(m.rows.as_batch().get(i), Some(format!("row{s}").as_bytes()));
            assert_eq!(m.keys.as_batch().get(i), Some(format!("key{s}").as_bytes()));
            assert_eq!((m.times[i], m.row_watermarks[i]), (s as i64 * 10, s as i64));
            assert_eq!(
                m.positions.get(i),
                Position::File {
                    path: "f".into(),
                    offset: s * 100
                }
            );
        }
    }
}
