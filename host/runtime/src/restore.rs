//! Starting a job from a checkpoint or savepoint: which one, whether it
//! fits the job, and what each stage starts from.
//!
//! State is matched by stable ids, never by position in the job: sources by
//! their id (topics and group, or path), operators by name. State the job no
//! longer has is an error unless dropping it is asked for; a source the
//! checkpoint does not know starts from its configured start. When the
//! number of workers changed, watermarks are restored conservatively (the
//! smallest of the old workers'), so no record becomes late that would not
//! have been.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use wafer_checkpoint::manifest::{KafkaCommits, Manifest, SourceState};
use wafer_checkpoint::{CheckpointStore, Kind};
use wafer_connectors::file_source::FilePosition;
use wafer_connectors::kafka_txn;
use wafer_job::Job;

use crate::RuntimeError;
use crate::checkpoint::KeyedCut;
use crate::sinks;

/// How to start a job.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Start from this savepoint (`<checkpoint dir>/savepoints/<name>`)
    /// instead of the latest checkpoint.
    pub savepoint: Option<PathBuf>,
    /// Drop state of sources and operators the job no longer has instead of
    /// refusing to start.
    pub allow_dropped_state: bool,
    /// Keep compiled components here and reuse them (`None`: compile every
    /// component at every start); see `WasmRuntime::with_compile_cache`.
    pub compile_cache: Option<PathBuf>,
}

/// What a job starts from.
pub(crate) struct Restored {
    pub manifest: Manifest,
    /// The store holding its files.
    pub store: CheckpointStore,
}

fn restore_error(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Plan {
        at: "restore".into(),
        message: message.into(),
    }
}

/// Opens the job's checkpoint store, if it has checkpoints. With Kafka
/// transactions at least two checkpoints are kept: the one the commit
/// marker names must outlive the next one until that one commits.
pub(crate) fn store(job: &Job) -> Result<Option<CheckpointStore>, RuntimeError> {
    match &job.checkpoints {
        Some(c) => {
            let retain = if sinks::epoch_transactions(job) {
                c.retain.max(2)
            } else {
                c.retain
            };
            CheckpointStore::local(&c.dir, retain)
                .map(Some)
                .map_err(|e| restore_error(e.to_string()))
        }
        None => Ok(None),
    }
}

/// Finds what to start from: the savepoint asked for, else the latest
/// complete checkpoint whose files check out (corrupt ones are reported and
/// skipped; checkpoints newer than the one used are discarded). With Kafka
/// transactions, the checkpoint whose records the commit marker says were
/// committed ([`pick`]).
pub(crate) fn load(
    job: &Job,
    store: Option<&CheckpointStore>,
    opts: &StartOptions,
) -> Result<Option<Restored>, RuntimeError> {
    if let Some(path) = &opts.savepoint {
        let (root, name) = savepoint_location(path)?;
        let store = CheckpointStore::local(&root, 1).map_err(|e| restore_error(e.to_string()))?;
        let manifest = store
            .savepoint(&name)
            .map_err(|e| restore_error(format!("savepoint {}: {e}", path.display())))?;
        if let Some(marker) = committed_marker(job, &manifest)?
            && marker > manifest.id
        {
            tracing::warn!(
                savepoint = manifest.id,
                committed = marker,
                "Kafka output after this savepoint was already committed; it will be written again"
            );
        }
        tracing::info!(savepoint = %path.display(), id = manifest.id, "starting from a savepoint");
        return Ok(Some(Restored { manifest, store }));
    }
    let Some(store) = store else { return Ok(None) };
    let (latest, skipped) = store.latest().map_err(|e| restore_error(e.to_string()))?;
    for s in &skipped {
        tracing::warn!(id = s.id, reason = %s.reason, "skipping checkpoint");
    }
    let Some(latest) = latest else { return Ok(None) };
    let manifest = match latest.kafka_commits.clone() {
        None => latest,
        Some(k) => {
            let marker = committed_marker(job, &latest)?;
            match pick(latest.id, &k, marker).map_err(restore_error)? {
                Pick::Latest => latest,
                Pick::Fresh => {
                    tracing::info!(
                        id = latest.id,
                        "no Kafka transaction of this job ever committed: starting from the beginning"
                    );
                    store.discard_after(0).map_err(|e| restore_error(e.to_string()))?;
                    return Ok(None);
                }
                Pick::Checkpoint(id) => {
                    let older = store.checkpoint(id).map_err(|e| restore_error(e.to_string()))?;
                    let Some(older) = older else {
                        return Err(restore_error(format!(
                            "checkpoint {id}, the last whose Kafka output was committed, is missing; \
                             restoring another would lose or repeat output"
                        )));
                    };
                    tracing::info!(
                        id,
                        newer = latest.id,
                        "the Kafka transactions after checkpoint {id} never committed (they were aborted): restoring it"
                    );
                    older
                }
                Pick::Savepoint(id) => {
                    let Some(manifest) = savepoint_by_id(store, id)? else {
                        return Err(restore_error(format!(
                            "the Kafka output was committed up to cut {id}, after the latest checkpoint \
                             ({}), and no savepoint has that id; restoring would repeat output",
                            latest.id
                        )));
                    };
                    tracing::info!(id, name = %manifest.name, "restoring the savepoint the Kafka output was last committed with");
                    return Ok(Some(Restored {
                        manifest,
                        store: store.clone(),
                    }));
                }
            }
        }
    };
    store
        .discard_after(manifest.id)
        .map_err(|e| restore_error(e.to_string()))?;
    tracing::info!(id = manifest.id, "restoring from checkpoint");
    Ok(Some(Restored {
        manifest,
        store: store.clone(),
    }))
}

/// Fences the transactions a cut's Kafka sink may have left open and reads
/// its commit marker; `None` when the cut had no Kafka transactions (or the
/// job no longer has them, which is only warned about).
fn committed_marker(job: &Job, m: &Manifest) -> Result<Option<u64>, RuntimeError> {
    let Some(k) = &m.kafka_commits else {
        return Ok(None);
    };
    let Some(settings) = sinks::txn_settings(job, k.topic.clone()) else {
        tracing::warn!(
            id = m.id,
            "the checkpoint's Kafka output was transactional and the job's no longer is: \
             its commit is not checked"
        );
        return Ok(None);
    };
    kafka_txn::recover(&settings, k.slots as usize, &k.group, &k.topic)
        .map_err(|e| restore_error(format!("checking which Kafka transactions committed: {e}")))
}

fn savepoint_by_id(store: &CheckpointStore, id: u64) -> Result<Option<Manifest>, RuntimeError> {
    for name in store.savepoints().map_err(|e| restore_error(e.to_string()))? {
        match store.savepoint(&name) {
            Ok(m) if m.id == id => return Ok(Some(m)),
            Ok(_) => {}
            Err(e) => tracing::warn!(savepoint = %name, error = %e, "skipping savepoint"),
        }
    }
    Ok(None)
}

/// Which cut to restore when the job's Kafka output is transactional.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The latest checkpoint: its transactions committed.
    Latest,
    /// An older checkpoint: the newer ones' transactions were aborted.
    Checkpoint(u64),
    /// The savepoint with this id: it was committed after the latest
    /// checkpoint.
    Savepoint(u64),
    /// Nothing: no transaction ever committed.
    Fresh,
}

/// Presumed abort: the cut to restore is the one the commit marker names.
/// `latest`: the newest valid checkpoint, with what its sink knew (`k`);
/// `marker`: the newest committed cut, read after
/// every transaction left open was aborted.
pub(crate) fn pick(latest: u64, k: &KafkaCommits, marker: Option<u64>) -> Result<Pick, String> {
    match marker {
        Some(kafka_txn::FINISHED) => Err(
            "this job ran to the end of its input and committed all its Kafka \
             output; remove the checkpoint directory to run it again"
                .into(),
        ),
        Some(m) if m == latest => Ok(Pick::Latest),
        Some(m) if m < latest => Ok(Pick::Checkpoint(m)),
        Some(m) => Ok(Pick::Savepoint(m)),
        None if k.committed_before == 0 => Ok(Pick::Fresh),
        None => Err(format!(
            "the commit marker of the Kafka output is gone (cut {} was committed before \
             checkpoint {latest}; Kafka drops an idle group's offsets after `offsets.retention.minutes`), \
             so which of the last transactions committed cannot be told. To start from checkpoint \
             {latest} anyway, set the offset of group `{}` on `{}` partition 0 to {latest} \
             (kafka-consumer-groups --reset-offsets --to-offset {latest}; `wafer checkpoints` shows both)",
            k.committed_before, k.group, k.topic
        )),
    }
}

/// `<root>/savepoints/<name>` → (root, name).
fn savepoint_location(path: &Path) -> Result<(PathBuf, String), RuntimeError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = path.parent();
    match (name, parent) {
        (Some(name), Some(parent)) if parent.file_name().is_some_and(|n| n == "savepoints") => {
            let root = parent.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok((root, name))
        }
        _ => Err(restore_error(format!(
            "{} is not a savepoint (expected <checkpoint dir>/savepoints/<name>)",
            path.display()
        ))),
    }
}

/// The manifest's state of each of the job's sources (by stable id), after
/// checking that the manifest has no source the job lost.
pub(crate) fn sources<'m>(
    job: &Job,
    m: &'m Manifest,
    allow_dropped: bool,
) -> Result<Vec<Option<&'m SourceState>>, RuntimeError> {
    let by_id: HashMap<&str, &SourceState> = m.sources.iter().map(|s| (s.id.as_str(), s)).collect();
    let lost: Vec<&SourceState> = m
        .sources
        .iter()
        .filter(|s| !job.sources.iter().any(|j| j.id == s.id))
        .collect();
    if !lost.is_empty() {
        let names: Vec<String> = lost
            .iter()
            .map(|s| format!("`{}` (source `{}`)", s.id, s.name))
            .collect();
        if !allow_dropped {
            return Err(restore_error(format!(
                "the {} has state for source id(s) {} that the job no longer has; a renamed source needs its old `id` to keep its position (or pass --allow-dropped-state to drop it)",
                kind_name(m),
                names.join(", ")
            )));
        }
        tracing::warn!(sources = %names.join(", "), "dropping the state of sources the job no longer has");
    }
    Ok(job
        .sources
        .iter()
        .map(|j| {
            let st = by_id.get(j.id.as_str()).copied();
            if st.is_none() {
                tracing::info!(source = %j.name, id = %j.id, "source not in the checkpoint: starts afresh");
            }
            st
        })
        .collect())
}

fn kind_name(m: &Manifest) -> &'static str {
    if m.kind == Kind::Savepoint as i32 {
        "savepoint"
    } else {
        "checkpoint"
    }
}

/// Where a file source resumes: the files still to read and the position
/// in the first of them.
pub(crate) fn file_start(st: &SourceState, files: Vec<PathBuf>) -> (Vec<PathBuf>, Option<FilePosition>) {
    let Some(c) = &st.file else { return (files, None) };
    if c.done {
        // Every file up to `last` was read: only later ones are new (none,
        // if the cursor does not say which file was last).
        let last = PathBuf::from(&c.last);
        let rest = files
            .into_iter()
            .filter(|f| !c.last.is_empty() && f > &last)
            .collect();
        return (rest, None);
    }
    let pos = FilePosition {
        file: PathBuf::from(&c.file),
        offset: c.offset,
    };
    (files, Some(pos))
}

/// A Kafka source's positions, in the order that gives lanes 0, 1, ….
pub(crate) fn kafka_positions(st: &SourceState) -> Vec<((String, i32), i64)> {
    st.kafka
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.offset))
        .collect()
}

/// Per new worker, the lanes to restore: (lane, largest event time seen,
/// finished). `lane_of` maps a lane's name to its number in the new run.
pub(crate) fn worker_lanes(
    st: &SourceState,
    workers: usize,
    lane_of: impl Fn(&str) -> Option<u32>,
) -> Vec<Vec<(u32, Option<i64>, bool)>> {
    let convert = |lanes: &[wafer_checkpoint::manifest::LaneMark]| -> Vec<(u32, Option<i64>, bool)> {
        lanes
            .iter()
            .filter_map(|l| lane_of(&l.lane).map(|n| (n, l.max_seen, l.finished)))
            .collect()
    };
    if st.workers.len() == workers {
        return st.workers.iter().map(|w| convert(&w.lanes)).collect();
    }
    // Different parallelism: each lane starts at the least advanced old
    // worker's progress (workers that never saw the lane do not count).
    let mut merged: BTreeMap<String, (Option<i64>, bool)> = BTreeMap::new();
    for w in &st.workers {
        for l in &w.lanes {
            let e = merged.entry(l.lane.clone()).or_insert((None, true));
            e.0 = match (e.0, l.max_seen) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.1 &= l.finished;
        }
    }
    let lanes: Vec<(u32, Option<i64>, bool)> = merged
        .into_iter()
        .filter_map(|(name, (seen, finished))| lane_of(&name).map(|n| (n, seen, finished)))
        .collect();
    vec![lanes; workers]
}

/// Per keyed worker, where its watermarks start: exact when the shape of the
/// job is unchanged, else every worker and sender from the smallest
/// watermark recorded.
pub(crate) fn keyed_cuts(m: &Manifest, workers: usize, senders: usize) -> Vec<Option<KeyedCut>> {
    if m.keyed.is_empty() {
        return vec![None; workers];
    }
    let same = m.keyed.len() == workers && m.keyed.iter().all(|k| k.senders.len() == senders);
    if same {
        let mut out = vec![None; workers];
        for k in &m.keyed {
            if let Some(slot) = out.get_mut(k.index as usize) {
                *slot = Some(KeyedCut {
                    watermark: k.watermark,
                    stream_time: k.stream_time,
                    senders: k.senders.clone(),
                });
            }
        }
        return out;
    }
    let wm = m.keyed.iter().map(|k| k.watermark).min().unwrap_or(i64::MIN);
    let stream_time = m.keyed.iter().map(|k| k.stream_time).max().unwrap_or(i64::MIN);
    vec![
        Some(KeyedCut {
            watermark: wm,
            stream_time,
            senders: vec![wm; senders],
        });
        workers
    ]
}

/// File outputs' lengths at the cut.
pub(crate) fn output_lengths(m: &Manifest) -> HashMap<String, u64> {
    m.outputs
        .iter()
        .filter_map(|o| o.file_length.map(|l| (o.name.clone(), l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_checkpoint::manifest::{FileCursor, LaneMark, WorkerWatermarks};

    fn lanes(marks: &[(&str, Option<i64>)]) -> WorkerWatermarks {
        WorkerWatermarks {
            lanes: marks
                .iter()
                .map(|(l, t)| LaneMark {
                    lane: l.to_string(),
                    max_seen: *t,
                    finished: false,
                })
                .collect(),
        }
    }

    #[test]
    fn watermarks_restore_exactly_or_from_the_least_advanced_worker() {
        let st = SourceState {
            workers: vec![
                lanes(&[("t/0", Some(10)), ("t/1", Some(50))]),
                lanes(&[("t/0", Some(30))]),
            ],
            ..SourceState::default()
        };
        let lane_of = |n: &str| match n {
            "t/0" => Some(0),
            "t/1" => Some(1),
            _ => None,
        };
        let same = worker_lanes(&st, 2, lane_of);
        assert_eq!(same[0], vec![(0, Some(10), false), (1, Some(50), false)]);
        assert_eq!(same[1], vec![(0, Some(30), false)]);
        let three = worker_lanes(&st, 3, lane_of);
        assert_eq!(three.len(), 3);
        assert!(
            three
                .iter()
                .all(|w| w == &vec![(0, Some(10), false), (1, Some(50), false)])
        );
    }

    #[test]
    fn a_finished_file_source_only_reads_files_after_its_last() {
        let st = SourceState {
            file: Some(FileCursor {
                done: true,
                last: "/d/b".into(),
                ..FileCursor::default()
            }),
            ..SourceState::default()
        };
        let files: Vec<PathBuf> = ["/d/a", "/d/b", "/d/c"].iter().map(PathBuf::from).collect();
        let (rest, pos) = file_start(&st, files);
        assert_eq!(rest, vec![PathBuf::from("/d/c")]);
        assert_eq!(pos, None);
    }

    #[test]
    fn savepoints_are_found_by_their_place_in_the_checkpoint_dir() {
        let (root, name) = savepoint_location(Path::new("/x/ck/savepoints/half")).unwrap();
        assert_eq!((root, name.as_str()), (PathBuf::from("/x/ck"), "half"));
        assert!(savepoint_location(Path::new("/x/ck/half")).is_err());
    }

    #[test]
    fn transactional_output_restores_the_cut_its_commit_marker_names() {
        let k = |before| KafkaCommits {
            committed_before: before,
            group: "g.commits".into(),
            topic: "out".into(),
            ..KafkaCommits::default()
        };
        // Crash after checkpoint 9's commit, or before it.
        assert_eq!(pick(9, &k(8), Some(9)), Ok(Pick::Latest));
        assert_eq!(pick(9, &k(8), Some(8)), Ok(Pick::Checkpoint(8)));
        // Failed checkpoints in between: the last committed one.
        assert_eq!(pick(9, &k(5), Some(5)), Ok(Pick::Checkpoint(5)));
        // A savepoint after the latest checkpoint was committed last.
        assert_eq!(pick(9, &k(9), Some(10)), Ok(Pick::Savepoint(10)));
        // Nothing ever committed: the first checkpoint's commit was lost.
        assert_eq!(pick(1, &k(0), None), Ok(Pick::Fresh));
        // The marker vanished although commits happened: no guessing.
        let gone = pick(9, &k(8), None).unwrap_err();
        assert!(
            gone.contains("g.commits") && gone.contains("`out` partition 0 to 9"),
            "{gone}"
        );
        let done = pick(9, &k(9), Some(kafka_txn::FINISHED)).unwrap_err();
        assert!(done.contains("ran to the end of its input"), "{done}");
    }
}
