//! Checkpoints of a running job: barriers, the coordinator, and what each
//! stage reports.
//!
//! **Barriers.** Every `interval` the coordinator asks each source thread
//! for barrier `n`. A source records its position, reports it, and sends a
//! barrier chunk to every deserialization worker, in line with its records.
//! A deserialization worker reports its per-lane watermarks when the barrier
//! reaches it and passes the barrier on to every keyed worker and output. A
//! keyed worker *aligns*: having seen barrier `n` from every sender of a
//! source, it stops taking that source's chunks until it has seen `n` from
//! every source (ended ones count as passed). Then everything before the
//! cut and nothing after it is in its state: it freezes its dirty state and
//! timer changes (`KeyedState::begin_freeze`, `wafer_state::Frozen`), reports them with its watermarks,
//! tells its outputs, and goes on processing, holding its own writes to
//! RocksDB back. Once every keyed worker has reported, the coordinator writes
//! the frozen sets, takes one RocksDB checkpoint (hard links) and lets the
//! workers write again. Processing pauses only to freeze. Outputs end the epoch
//! once every producer has passed the barrier (`wafer_connectors::EpochGate`)
//! and report their file lengths. With every part in, the coordinator
//! uploads the new state files and writes the manifest: the checkpoint is
//! complete. This is Chandy–Lamport with aligned barriers, as in Flink, on
//! the chunk order the pipeline already keeps.
//!
//! **Savepoints** are the same cut written as a self-contained directory,
//! asked for by `wafer savepoint` through a request file in the checkpoint
//! directory; with `--stop`, sources stop right after the barrier and the
//! job ends without firing what end of input would fire.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use wafer_checkpoint::manifest::{
    self, FileCursor, KeyedWorker, LaneMark, Manifest, Output, PartitionOffset, SourceState, WorkerWatermarks,
};
use wafer_checkpoint::{CheckpointStore, Kind};
use wafer_connectors::SinkCut;
use wafer_connectors::file_source::FilePosition;
use wafer_connectors::kafka_txn::{self, Transactions};
use wafer_metrics::CheckpointMetrics;
use wafer_state::{Frozen, StateDb};

use crate::RuntimeError;

/// Flags every thread of a running job can see.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// A stop-with-savepoint is under way: sources stop after its barrier
    /// and keyed workers do not fire what end of input would.
    pub stopping: AtomicBool,
    /// Something failed: threads waiting on others give up.
    pub failed: AtomicBool,
}

impl Control {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }
}

/// What the coordinator asks a source thread.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SourceCmd {
    /// Record the position and send barrier `id`; stop after it if `stop`.
    Barrier { id: u64, stop: bool },
    /// Checkpoint `id` is complete (a Kafka source commits its offsets).
    Completed { id: u64 },
}

/// A source's position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourcePos {
    /// A file source: the next unread record (`None` when done), and the
    /// last file it covers.
    File {
        position: Option<FilePosition>,
        last: Option<PathBuf>,
    },
    /// A Kafka source: next offset per partition, and each lane's partition.
    Kafka {
        positions: Vec<((String, i32), i64)>,
        lanes: Vec<(u32, String)>,
    },
}

/// A keyed worker's part of a cut.
#[derive(Debug, Clone)]
pub(crate) struct KeyedCut {
    pub watermark: i64,
    pub stream_time: i64,
    pub senders: Vec<i64>,
}

/// What stages tell the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    Source {
        source: usize,
        id: u64,
        pos: SourcePos,
    },
    SourceEnded {
        source: usize,
        pos: SourcePos,
    },
    Deser {
        source: usize,
        worker: usize,
        id: u64,
        lanes: Vec<(u32, Option<i64>, bool)>,
    },
    Keyed {
        worker: usize,
        id: u64,
        cut: KeyedCut,
        /// The worker's writes as of the barrier, for the snapshot.
        frozen: Arc<Frozen>,
        /// How long the worker stopped processing for this barrier.
        paused: Duration,
    },
    Sink(SinkCut),
    /// The job is over: finish what can be finished and stop.
    Shutdown,
}

/// A keyed worker's link to the coordinator.
pub(crate) struct KeyedLink {
    pub reports: Sender<Report>,
    pub go: Receiver<u64>,
    pub control: Arc<Control>,
}

impl KeyedLink {
    /// Reports the worker's cut with its frozen writes; returns at once.
    pub(crate) fn report(
        &self,
        worker: usize,
        id: u64,
        cut: KeyedCut,
        frozen: Arc<Frozen>,
        paused: Duration,
    ) {
        let _ = self.reports.send(Report::Keyed {
            worker,
            id,
            cut,
            frozen,
            paused,
        });
    }

    /// Whether the snapshot of checkpoint `id` is taken (or abandoned, or
    /// the coordinator gone), waiting for it if `wait`.
    pub(crate) fn snapshot_done(&self, id: u64, wait: bool) -> Result<bool, RuntimeError> {
        loop {
            let got = if wait {
                self.go.recv_timeout(Duration::from_millis(100))
            } else {
                self.go.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            };
            match got {
                Ok(n) if n >= id => return Ok(true),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.control.failed() {
                        return Err(RuntimeError::Internal(
                            "the job failed while a checkpoint was being taken".into(),
                        ));
                    }
                    if !wait {
                        return Ok(false);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(true),
            }
        }
    }
}

/// A source as the coordinator sees it.
pub(crate) struct SourceMeta {
    pub id: String,
    pub name: String,
    pub workers: usize,
    /// Whether its deserialization workers' watermarks matter (it feeds the
    /// keyed stage).
    pub keyed: bool,
    pub cmd: Sender<SourceCmd>,
}

/// What the coordinator needs.
pub(crate) struct CoordinatorSetup {
    pub store: CheckpointStore,
    pub interval: Duration,
    pub tolerable_failures: u32,
    pub job: String,
    pub components: Vec<manifest::Component>,
    pub sources: Vec<SourceMeta>,
    pub keyed_go: Vec<Sender<u64>>,
    pub outputs: Vec<String>,
    pub db: Option<Arc<StateDb>>,
    pub parallelism: usize,
    pub rx: Receiver<Report>,
    pub first_id: u64,
    pub previous: Option<Manifest>,
    pub control: Arc<Control>,
    pub metrics: CheckpointMetrics,
    pub dir: PathBuf,
    /// The Kafka sink's epoch transactions, committed with each cut.
    pub commits: Option<Arc<Transactions>>,
    /// The newest cut whose Kafka transactions are known committed.
    pub committed: u64,
}

/// A savepoint asked for through a request file.
#[derive(Debug, Clone)]
struct SavepointRequest {
    name: String,
    stop: bool,
    file: PathBuf,
}

struct Pending {
    id: u64,
    started: Instant,
    savepoint: Option<SavepointRequest>,
    sources: Vec<Option<SourcePos>>,
    deser: Vec<Vec<Option<Vec<(u32, Option<i64>, bool)>>>>,
    keyed: Vec<Option<KeyedCut>>,
    /// The keyed workers' writes as of the barrier, applied before the
    /// snapshot.
    frozen: Vec<Arc<Frozen>>,
    /// The RocksDB checkpoint, once every keyed worker reported.
    db_dir: Option<PathBuf>,
    pause: Duration,
    /// Each output's cut once it reported: a file's length, or `None`
    /// (Kafka).
    sinks: HashMap<String, Option<Option<u64>>>,
}

/// Where `wafer savepoint` leaves requests and finds answers.
pub fn requests_dir(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join("requests")
}

/// The coordinator thread's body. Returns an error when more checkpoints
/// failed in a row than tolerated.
pub(crate) fn run_coordinator(mut s: CoordinatorSetup) -> Result<(), RuntimeError> {
    let tick = Duration::from_millis(20);
    let mut next_id = s.first_id;
    let mut last_trigger = Instant::now();
    let mut last_poll = Instant::now();
    let mut pending: Option<Pending> = None;
    let mut ended: Vec<Option<SourcePos>> = vec![None; s.sources.len()];
    let mut failures = 0u32;
    let timeout = (s.interval * 10).max(Duration::from_secs(60));
    let tmp_root = s.dir.join("tmp");
    let _ = std::fs::remove_dir_all(&tmp_root);
    let mut shutdown = false;
    loop {
        // Wait for one report, then take whatever else arrived before
        // deciding.
        let first = match s.rx.recv_timeout(tick) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Report::Shutdown),
        };
        for r in first
            .into_iter()
            .chain(std::iter::from_fn(|| s.rx.try_recv().ok()))
        {
            match r {
                Report::Shutdown => shutdown = true,
                Report::SourceEnded { source, pos } => {
                    if let Some(e) = ended.get_mut(source) {
                        *e = Some(pos);
                    }
                }
                r => route(&s, pending.as_mut(), r),
            }
        }

        if let Some(p) = pending.as_mut() {
            // Every keyed worker is at the barrier: write what they froze
            // there, snapshot the state and let them write again. They
            // went on processing meanwhile.
            if p.db_dir.is_none() && p.keyed.iter().all(Option::is_some) {
                let snap_started = Instant::now();
                let snap = tmp_root.join(p.id.to_string());
                let dir = snap.join("db");
                let result = match &s.db {
                    Some(db) => snapshot(db, &p.frozen, &snap, &dir),
                    None => Ok(()),
                };
                for go in &s.keyed_go {
                    let _ = go.send(p.id);
                }
                p.frozen.clear();
                tracing::debug!(
                    id = p.id,
                    ms = snap_started.elapsed().as_millis() as u64,
                    "state snapshot taken"
                );
                match result {
                    Ok(()) => p.db_dir = Some(dir),
                    Err(e) => {
                        let id = p.id;
                        pending = None;
                        fail(&mut s, &mut failures, id, &format!("state snapshot: {e}"))?;
                        continue;
                    }
                }
            }
        }
        let complete = pending.as_ref().is_some_and(|p| is_complete(p, &s, &ended));
        if complete && let Some(p) = pending.take() {
            let id = p.id;
            match finish(&mut s, p, &ended) {
                Ok(checkpoint) => {
                    failures = 0;
                    completed(&mut s, id, checkpoint)?;
                }
                Err(e) => fail(&mut s, &mut failures, id, &e)?,
            }
        } else if let Some(p) = &pending
            && p.started.elapsed() > timeout
        {
            let id = p.id;
            if let Some(r) = &p.savepoint {
                answer(r, Err(format!("timed out after {timeout:?}")));
            }
            // Keyed workers waiting at this barrier go on.
            for go in &s.keyed_go {
                let _ = go.send(id);
            }
            pending = None;
            fail(
                &mut s,
                &mut failures,
                id,
                &format!("not complete after {timeout:?}"),
            )?;
        }
        if shutdown {
            if let Some(p) = pending.take()
                && let Some(r) = &p.savepoint
            {
                answer(r, Err("the job ended before the savepoint was complete".into()));
            }
            let _ = std::fs::remove_dir_all(&tmp_root);
            return Ok(());
        }

        let all_ended = ended.iter().all(Option::is_some);
        if pending.is_none() && !all_ended {
            let request = if last_poll.elapsed() >= Duration::from_millis(100) {
                last_poll = Instant::now();
                next_request(&s.dir)
            } else {
                None
            };
            if request.is_some() || last_trigger.elapsed() >= s.interval {
                let id = next_id;
                next_id += 1;
                last_trigger = Instant::now();
                let stop = request.as_ref().is_some_and(|r| r.stop);
                if stop {
                    s.control.stopping.store(true, Ordering::Release);
                }
                for src in &s.sources {
                    let _ = src.cmd.send(SourceCmd::Barrier { id, stop });
                }
                pending = Some(Pending {
                    id,
                    started: Instant::now(),
                    savepoint: request,
                    sources: vec![None; s.sources.len()],
                    deser: s.sources.iter().map(|m| vec![None; m.workers]).collect(),
                    keyed: vec![None; s.keyed_go.len()],
                    frozen: Vec::new(),
                    db_dir: None,
                    pause: Duration::ZERO,
                    sinks: s.outputs.iter().map(|o| (o.clone(), None)).collect(),
                });
                tracing::debug!(id, "checkpoint triggered");
            }
        }
    }
}

/// Writes the keyed workers' frozen writes and checkpoints RocksDB into
/// `dir` (inside `snap`).
fn snapshot(db: &StateDb, frozen: &[Arc<Frozen>], snap: &Path, dir: &Path) -> Result<(), String> {
    for f in frozen {
        f.apply(db).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(snap).map_err(|e| e.to_string())?;
    db.checkpoint(dir).map_err(|e| e.to_string())
}

/// Hands a report to the pending checkpoint; a keyed worker reporting for
/// a checkpoint that is no longer pending (it was given up) is let go.
fn route(s: &CoordinatorSetup, pending: Option<&mut Pending>, r: Report) {
    match (pending, r) {
        (Some(p), r) if report_id(&r).is_none_or(|id| id == p.id) => take(p, r),
        (_, Report::Keyed { worker, id, .. }) => {
            if let Some(go) = s.keyed_go.get(worker) {
                let _ = go.send(id);
            }
        }
        _ => {}
    }
}

fn report_id(r: &Report) -> Option<u64> {
    match r {
        Report::Source { id, .. } | Report::Deser { id, .. } | Report::Keyed { id, .. } => Some(*id),
        Report::Sink(c) => Some(c.barrier),
        _ => None,
    }
}

fn take(p: &mut Pending, r: Report) {
    match r {
        Report::Source { source, id, pos } if id == p.id => {
            if let Some(x) = p.sources.get_mut(source) {
                *x = Some(pos);
            }
        }
        Report::Deser {
            source,
            worker,
            id,
            lanes,
        } if id == p.id => {
            if let Some(x) = p.deser.get_mut(source).and_then(|w| w.get_mut(worker)) {
                *x = Some(lanes);
            }
        }
        Report::Keyed {
            worker,
            id,
            cut,
            frozen,
            paused,
        } if id == p.id => {
            if let Some(x) = p.keyed.get_mut(worker) {
                *x = Some(cut);
            }
            p.frozen.push(frozen);
            p.pause = p.pause.max(paused);
        }
        Report::Sink(c) if c.barrier == p.id => {
            tracing::debug!(id = p.id, output = %c.output, "output reached the cut");
            p.sinks.insert(c.output.clone(), Some(c.file_length));
        }
        _ => {}
    }
}

/// Whether every part of the cut is in. A source that ended before the
/// barrier takes part with its final position (and its workers with none).
fn is_complete(p: &Pending, s: &CoordinatorSetup, ended: &[Option<SourcePos>]) -> bool {
    let sources = p
        .sources
        .iter()
        .zip(ended)
        .all(|(pos, end)| pos.is_some() || end.is_some());
    let deser = p.deser.iter().enumerate().all(|(i, w)| {
        w.iter().all(Option::is_some) || (p.sources[i].is_none() && ended[i].is_some()) || !s.sources[i].keyed
    });
    let keyed = p.keyed.iter().all(Option::is_some) && (p.db_dir.is_some() || s.keyed_go.is_empty());
    sources && deser && keyed && p.sinks.values().all(Option::is_some)
}

fn fail(s: &mut CoordinatorSetup, failures: &mut u32, id: u64, why: &str) -> Result<(), RuntimeError> {
    *failures += 1;
    s.metrics.failed.inc();
    tracing::warn!(id, failures = *failures, "checkpoint failed: {why}");
    if *failures > s.tolerable_failures {
        s.control.fail();
        return Err(RuntimeError::Internal(format!(
            "{} checkpoints failed in a row (tolerated: {}); the last: {why}",
            *failures, s.tolerable_failures
        )));
    }
    Ok(())
}

/// Cut `id` is written: its Kafka transactions commit, then (for a
/// checkpoint) sources commit their offsets. A failed commit fails the job:
/// the cut's output may be lost, and only a restart, which restores the
/// cut the commit marker names, replays it.
fn completed(s: &mut CoordinatorSetup, id: u64, checkpoint: bool) -> Result<(), RuntimeError> {
    if let Some(t) = &s.commits {
        let started = Instant::now();
        let result = t.commit(id);
        s.metrics.kafka_commit.observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            s.control.fail();
            return Err(RuntimeError::Internal(format!(
                "cut {id} is written but its Kafka transactions did not commit ({e}); \
                 a restart replays them"
            )));
        }
        s.committed = id;
    }
    if checkpoint {
        for src in &s.sources {
            let _ = src.cmd.send(SourceCmd::Completed { id });
        }
    }
    Ok(())
}

/// Builds the manifest, uploads the state files and writes it; whether it
/// was a checkpoint (not a savepoint).
fn finish(s: &mut CoordinatorSetup, p: Pending, ended: &[Option<SourcePos>]) -> Result<bool, String> {
    let mut m = Manifest {
        format_version: wafer_checkpoint::FORMAT_VERSION,
        id: p.id,
        kind: Kind::Checkpoint as i32,
        created_ms: wafer_core::time::now_ms(),
        job: s.job.clone(),
        components: s.components.clone(),
        parallelism: s.parallelism as u32,
        ..Manifest::default()
    };
    for (i, meta) in s.sources.iter().enumerate() {
        let (pos, was_ended) = match (&p.sources[i], &ended[i]) {
            (Some(pos), _) => (pos.clone(), false),
            (None, Some(pos)) => (pos.clone(), true),
            (None, None) => return Err(format!("source `{}` did not report", meta.name)),
        };
        let mut st = SourceState {
            id: meta.id.clone(),
            name: meta.name.clone(),
            ended: was_ended,
            ..SourceState::default()
        };
        let lane_names: BTreeMap<u32, String> = match &pos {
            SourcePos::File { position, last } => {
                let last = last
                    .as_ref()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                st.file = Some(match position {
                    Some(f) => FileCursor {
                        file: f.file.to_string_lossy().into_owned(),
                        offset: f.offset,
                        done: false,
                        last,
                    },
                    None => FileCursor {
                        done: true,
                        last,
                        ..FileCursor::default()
                    },
                });
                BTreeMap::from([(0, String::new())])
            }
            SourcePos::Kafka { positions, lanes } => {
                st.kafka = positions
                    .iter()
                    .map(|((t, part), o)| PartitionOffset {
                        topic: t.clone(),
                        partition: *part,
                        offset: *o,
                    })
                    .collect();
                lanes.iter().cloned().collect()
            }
        };
        for w in &p.deser[i] {
            st.workers.push(WorkerWatermarks {
                lanes: w
                    .iter()
                    .flatten()
                    .map(|(lane, max_seen, finished)| LaneMark {
                        lane: lane_names
                            .get(lane)
                            .cloned()
                            .unwrap_or_else(|| format!("#{lane}")),
                        max_seen: *max_seen,
                        finished: *finished,
                    })
                    .collect(),
            });
        }
        m.sources.push(st);
    }
    for (i, k) in p.keyed.iter().enumerate() {
        if let Some(k) = k {
            m.keyed.push(KeyedWorker {
                index: i as u32,
                watermark: k.watermark,
                stream_time: k.stream_time,
                senders: k.senders.clone(),
            });
        }
    }
    for (name, length) in &p.sinks {
        m.outputs.push(Output {
            name: name.clone(),
            file_length: length.flatten(),
        });
    }
    m.outputs.sort_by(|a, b| a.name.cmp(&b.name));
    m.kafka_commits = s.commits.as_ref().map(|t| {
        let t = t.settings();
        manifest::KafkaCommits {
            transactional_id: t.prefix.clone(),
            slots: t.slots as u32,
            group: kafka_txn::marker_group(&t.prefix),
            topic: t.marker_topic.clone(),
            committed_before: s.committed,
        }
    });
    if let Some(db) = &s.db {
        m.operators = db
            .operators()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(name, id)| manifest::Operator { name, id: id.into() })
            .collect();
    }
    let state_dir = if s.db.is_some() { p.db_dir.as_deref() } else { None };
    let result = match &p.savepoint {
        Some(r) => {
            m.kind = Kind::Savepoint as i32;
            m.name = r.name.clone();
            s.store.write_savepoint(&r.name, m, state_dir).map(|m| (m, None))
        }
        None => s
            .store
            .write_checkpoint(m, state_dir, s.previous.as_ref())
            .map(|(m, stats)| (m, Some(stats))),
    };
    if let Some(dir) = p.db_dir.as_deref().and_then(Path::parent) {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (m, stats) = match result {
        Ok(x) => x,
        Err(e) => {
            if let Some(r) = &p.savepoint {
                answer(r, Err(e.to_string()));
            }
            return Err(e.to_string());
        }
    };
    let total = p.started.elapsed();
    s.metrics.completed.inc();
    s.metrics.total.observe(total.as_secs_f64());
    s.metrics.pause.observe(p.pause.as_secs_f64());
    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
    s.metrics.id.set(m.id as f64);
    s.metrics.bytes.set(bytes as f64);
    s.metrics.files.set(m.files.len() as f64);
    s.metrics
        .completed_at
        .set(wafer_core::time::now_ms() as f64 / 1000.0);
    if let Some(st) = &stats {
        s.metrics.uploaded.set(st.bytes_uploaded as f64);
    }
    match &p.savepoint {
        Some(r) => {
            tracing::info!(id = m.id, name = %r.name, bytes, "savepoint written");
            answer(r, Ok(s.store_path(&r.name)));
            Ok(false)
        }
        None => {
            tracing::debug!(
                id = m.id,
                bytes,
                uploaded = stats.as_ref().map_or(0, |x| x.bytes_uploaded),
                ms = total.as_millis() as u64,
                pause_ms = p.pause.as_millis() as u64,
                "checkpoint complete"
            );
            s.previous = Some(m);
            Ok(true)
        }
    }
}

impl CoordinatorSetup {
    fn store_path(&self, name: &str) -> PathBuf {
        self.dir.join("savepoints").join(name)
    }
}

/// The oldest savepoint request waiting, if any: `requests/<name>.request`
/// holding `stop` or `keep`.
fn next_request(dir: &Path) -> Option<SavepointRequest> {
    let entries = std::fs::read_dir(requests_dir(dir)).ok()?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "request"))
        .collect();
    found.sort();
    let file = found.into_iter().next()?;
    let name = file.file_stem()?.to_string_lossy().into_owned();
    let body = std::fs::read_to_string(&file).unwrap_or_default();
    Some(SavepointRequest {
        name,
        stop: body.trim() == "stop",
        file,
    })
}

/// Answers a savepoint request: `<name>.done` holding the savepoint's path,
/// or `<name>.failed` holding the reason; the request file goes.
fn answer(r: &SavepointRequest, result: Result<PathBuf, String>) {
    let (ext, body) = match result {
        Ok(path) => ("done", path.to_string_lossy().into_owned()),
        Err(e) => ("failed", e),
    };
    let out = r.file.with_extension(ext);
    let tmp = r.file.with_extension("tmp");
    if std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &out))
        .is_err()
    {
        tracing::warn!(file = %out.display(), "cannot answer a savepoint request");
    }
    let _ = std::fs::remove_file(&r.file);
}
