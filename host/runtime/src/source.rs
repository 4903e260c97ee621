//! Source threads: read raw records, dead-letter what cannot be framed, and
//! shuffle the rest to deserialization workers by payload hash.
//!
//! The hash spreads records evenly over however many workers there are,
//! whatever the number of files or partitions feeding them, and sends a given
//! payload to the same worker on every run.
//!
//! Records are read in *chunks* of up to `batch_size × workers` records
//! (fewer under a rate limit: a hundredth of a second's worth);
//! each chunk is split by hash into one batch per worker, every worker gets
//! its batch of every chunk (possibly empty), and each record keeps its
//! sequence number in the source. Downstream, the keyed stage puts a chunk's
//! parts back in source order, so the records of a key reach their processor
//! in the order they were read, whatever the parallelism and however the
//! threads race.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use wafer_connectors::SourceError;
use wafer_connectors::file_source::{FileEvent, FileReader};
use wafer_connectors::kafka_source::{KafkaReader, KafkaSourceError};
use wafer_core::dead_letter::{DeadLetter, Position, Reason};
use wafer_core::hash::{hash, partition};

use crate::batch::{Origin, RawBatch};
use crate::checkpoint::{Report, SourceCmd, SourcePos};
use crate::dead_letters::DeadLetters;

/// A source thread's link to the checkpoint coordinator.
pub(crate) struct SourceLink {
    /// This source's index.
    pub source: usize,
    pub cmds: crossbeam_channel::Receiver<SourceCmd>,
    pub reports: Sender<Report>,
}

/// What a source thread should do after looking at its commands.
enum After {
    Go,
    Stop,
}

/// What a source thread did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// Records framed and sent to workers.
    pub records: u64,
    /// Corrupt stretches dead-lettered by the framing.
    pub corrupt: u64,
    /// Bytes of payload sent.
    pub bytes: u64,
}

/// A source's reader.
pub(crate) enum Reader {
    /// Files.
    File(FileReader),
    /// Kafka topics (boxed: the consumer is large).
    Kafka(Box<KafkaReader>),
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Files.
    #[error(transparent)]
    File(#[from] SourceError),
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
}

/// How a source hands out records: its batch size and its rate limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Records per worker batch.
    pub batch_size: usize,
    /// Records per second at most (`None`: no limit).
    pub max_rate: Option<u64>,
}

/// Keeps a source at or under its rate limit: after each chunk it sleeps
/// until the records sent so far are due.
struct Throttle {
    rate: u64,
    started: Instant,
}

impl Throttle {
    /// Records per chunk under the limit: at most a hundredth of a second's
    /// worth, so that the source never sleeps long between looks at its
    /// commands (a checkpoint barrier waits behind at most one chunk).
    fn chunk_cap(&self) -> usize {
        usize::try_from(self.rate / 100).unwrap_or(usize::MAX).max(1)
    }

    /// Sleeps until `sent` records are due.
    fn wait(&self, sent: u64) {
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Cuts records into chunks, one batch per worker, and sends them.
struct Chunker {
    senders: Vec<Sender<RawBatch>>,
    batch_size: usize,
    batches: Vec<RawBatch>,
    chunk: u64,
    seq: u64,
    stats: SourceStats,
    throttle: Option<Throttle>,
}

impl Chunker {
    fn new(senders: Vec<Sender<RawBatch>>, pace: Pace) -> Self {
        let mut c = Chunker {
            senders,
            batch_size: pace.batch_size,
            batches: Vec::new(),
            chunk: 0,
            seq: 0,
            stats: SourceStats::default(),
            throttle: pace.max_rate.filter(|&r| r > 0).map(|rate| Throttle {
                rate,
                started: Instant::now(),
            }),
        };
        c.batches = c.fresh();
        c
    }

    fn fresh(&self) -> Vec<RawBatch> {
        (0..self.senders.len().max(1))
            .map(|_| RawBatch {
                chunk: self.chunk,
                ..RawBatch::with_capacity(self.batch_size, self.batch_size * 192)
            })
            .collect()
    }

    /// Records per chunk.
    fn capacity(&self) -> usize {
        let full = self.batch_size * self.senders.len().max(1);
        match &self.throttle {
            Some(t) => full.min(t.chunk_cap()),
            None => full,
        }
    }

    #[inline]
    fn push(&mut self, origin: &Arc<Origin>, lane: u32, offset: u64, payload: &[u8]) {
        let n = self.batches.len();
        let b = &mut self.batches[partition(hash(payload), n)];
        b.push(origin, lane, offset, payload);
        b.seqs.push(self.seq);
        self.seq += 1;
        self.stats.records += 1;
        self.stats.bytes += payload.len() as u64;
    }

    fn is_empty(&self) -> bool {
        self.batches.iter().all(RawBatch::is_empty)
    }

    /// Sends the chunk's parts, each carrying the source's lanes if given.
    /// Returns `false` if a worker is gone (it panicked; the job reports
    /// that).
    fn send_with(&mut self, lanes: Option<Arc<Vec<(u32, bool)>>>) -> bool {
        for b in &mut self.batches {
            b.lane_status = lanes.clone();
        }
        self.send()
    }

    /// Sends checkpoint barrier `id` to every worker, as a chunk of its
    /// own, after whatever is pending.
    fn send_barrier(&mut self, id: u64) -> bool {
        if !self.is_empty() && !self.send() {
            return false;
        }
        for b in &mut self.batches {
            b.barrier = Some(id);
        }
        self.send()
    }

    /// Sends the chunk's parts. Returns `false` if a worker is gone (it
    /// panicked; the job reports that).
    fn send(&mut self) -> bool {
        let next = {
            self.chunk += 1;
            self.fresh()
        };
        let parts = std::mem::replace(&mut self.batches, next);
        for (w, b) in parts.into_iter().enumerate() {
            if self.senders[w].send(b).is_err() {
                return false;
            }
        }
        if let Some(t) = &self.throttle {
            t.wait(self.stats.records);
        }
        true
    }
}

/// Reads a source to its end (forever, for an unbounded one), taking part
/// in checkpoints if `link` is given.
pub(crate) fn run_source(
    name: Arc<str>,
    reader: Reader,
    senders: Vec<Sender<RawBatch>>,
    pace: Pace,
    dead_letters: DeadLetters,
    link: Option<SourceLink>,
) -> Result<SourceStats, ReadError> {
    match reader {
        Reader::File(r) => Ok(run_file_source(name, r, senders, pace, dead_letters, link)?),
        Reader::Kafka(r) => Ok(run_kafka_source(&name, *r, senders, pace, dead_letters, link)?),
    }
}

/// Handles the coordinator's commands: for a barrier, reports `position`
/// and sends the barrier after everything read so far.
fn commands(
    link: &Option<SourceLink>,
    chunker: &mut Chunker,
    dead_letters: &mut DeadLetters,
    mut position: impl FnMut(u64) -> SourcePos,
    mut completed: impl FnMut(u64),
) -> After {
    let Some(link) = link else { return After::Go };
    while let Ok(cmd) = link.cmds.try_recv() {
        match cmd {
            SourceCmd::Barrier { id, stop } => {
                let _ = link.reports.send(Report::Source {
                    source: link.source,
                    id,
                    pos: position(id),
                });
                dead_letters.barrier(id);
                if !chunker.send_barrier(id) || stop {
                    return After::Stop;
                }
            }
            SourceCmd::Completed { id } => completed(id),
        }
    }
    After::Go
}

/// Tells the coordinator the source read everything.
fn ended(link: &Option<SourceLink>, pos: SourcePos) {
    if let Some(link) = link {
        let _ = link.reports.send(Report::SourceEnded {
            source: link.source,
            pos,
        });
    }
}

fn run_file_source(
    name: Arc<str>,
    mut reader: FileReader,
    senders: Vec<Sender<RawBatch>>,
    pace: Pace,
    mut dead_letters: DeadLetters,
    link: Option<SourceLink>,
) -> Result<SourceStats, SourceError> {
    let mut chunker = Chunker::new(senders, pace);
    let framing: Arc<str> = Arc::from("framing");
    // The origin of the file being read, made once per file.
    let mut origin: Option<(Arc<str>, Arc<Origin>)> = None;
    loop {
        let mut corrupt = 0;
        let max = chunker.capacity();
        let more = reader.read(max, |ev| match ev {
            FileEvent::Record {
                file,
                offset,
                payload,
            } => {
                let o = match &origin {
                    Some((f, o)) if Arc::ptr_eq(f, file) => o.clone(),
                    _ => {
                        let o = Arc::new(Origin::File(file.clone()));
                        origin = Some((file.clone(), o.clone()));
                        o
                    }
                };
                chunker.push(&o, 0, offset, payload);
            }
            FileEvent::Corrupt {
                file,
                offset,
                payload,
                error,
            } => {
                corrupt += 1;
                dead_letters.push(&DeadLetter {
                    source: name.clone(),
                    position: Position::File {
                        path: file.clone(),
                        offset,
                    },
                    reason: Reason::Framing,
                    stage: framing.clone(),
                    error: error.to_string(),
                    payload: payload.to_vec(),
                });
            }
        })?;
        chunker.stats.corrupt += corrupt;
        dead_letters.flush();
        if (!chunker.is_empty() || more) && !chunker.send() {
            return Ok(chunker.stats);
        }
        if let After::Stop = commands(
            &link,
            &mut chunker,
            &mut dead_letters,
            |_| SourcePos::File {
                position: reader.position(),
                last: reader.files().last().cloned(),
            },
            |_| {},
        ) {
            return Ok(chunker.stats);
        }
        if !more {
            ended(
                &link,
                SourcePos::File {
                    position: None,
                    last: reader.files().last().cloned(),
                },
            );
            return Ok(chunker.stats);
        }
    }
}

/// How long a Kafka source waits for more messages before it sends a
/// partial chunk: short, so that a trickle of messages is not held back.
const KAFKA_LINGER: Duration = Duration::from_millis(100);

/// How often a Kafka source with nothing to read still sends an (empty)
/// chunk: it carries the partitions' status, so that downstream watermarks
/// leave idle partitions out and windows fire without new records.
const KAFKA_HEARTBEAT: Duration = Duration::from_millis(500);

/// How often a Kafka source commits its positions back to the group.
const KAFKA_COMMIT_EVERY: Duration = Duration::from_secs(5);

/// How often a Kafka source updates its partitions' lag gauges (librdkafka
/// refreshes the partitions' ends every second).
const KAFKA_LAG_EVERY: Duration = Duration::from_secs(1);

fn run_kafka_source(
    name: &str,
    mut reader: KafkaReader,
    senders: Vec<Sender<RawBatch>>,
    pace: Pace,
    mut dead_letters: DeadLetters,
    link: Option<SourceLink>,
) -> Result<SourceStats, KafkaSourceError> {
    let mut chunker = Chunker::new(senders, pace);
    // Positions of checkpoints not yet complete, committed to the group
    // once they are.
    let mut cut_positions: std::collections::VecDeque<(u64, Vec<((String, i32), i64)>)> = Default::default();
    // The origin of each lane, made once.
    let mut origins: Vec<Option<Arc<Origin>>> = Vec::new();
    let mut last_sent = std::time::Instant::now();
    let mut lag = Lag::new(dead_letters.metrics().clone(), name);
    tracing::info!(source = %reader.describe(), "reading");
    loop {
        let max = chunker.capacity();
        let more = reader.read(max, KAFKA_LINGER, |r| {
            let lane = r.lane as usize;
            if origins.len() <= lane {
                origins.resize(lane + 1, None);
            }
            let origin = origins[lane].get_or_insert_with(|| {
                Arc::new(Origin::Kafka {
                    topic: r.partition.0.clone(),
                    partition: r.partition.1,
                })
            });
            chunker.push(origin, r.lane, r.offset.max(0) as u64, r.payload);
        })?;
        if !chunker.is_empty() || last_sent.elapsed() >= KAFKA_HEARTBEAT {
            if !chunker.send_with(Some(Arc::new(reader.lanes()))) {
                return Ok(chunker.stats);
            }
            last_sent = std::time::Instant::now();
        }
        if link.is_none() {
            reader.commit(KAFKA_COMMIT_EVERY);
        }
        lag.update(&reader, false);
        let mut done = Vec::new();
        let after = commands(
            &link,
            &mut chunker,
            &mut dead_letters,
            |id| {
                let positions = reader.positions();
                cut_positions.push_back((id, positions.clone()));
                SourcePos::Kafka {
                    positions,
                    lanes: reader.lane_names(),
                }
            },
            |id| done.push(id),
        );
        for id in done {
            while let Some((cut, positions)) = cut_positions.pop_front() {
                if cut == id {
                    reader.commit_positions(&positions);
                    break;
                }
            }
        }
        if let After::Stop = after {
            return Ok(chunker.stats);
        }
        if !more {
            lag.update(&reader, true);
            ended(
                &link,
                SourcePos::Kafka {
                    positions: reader.positions(),
                    lanes: reader.lane_names(),
                },
            );
            // End the input downstream first: the last commit is a round
            // trip to the group's coordinator (found on first use, as a
            // bounded reader never joined the group), and the job's last
            // windows and timers need not wait for it.
            let stats = chunker.stats;
            drop(chunker);
            if link.is_none() {
                reader.commit(Duration::ZERO);
            }
            close_in_background(reader);
            return Ok(stats);
        }
    }
}

/// Drops a bounded reader that read to its end on a thread of its own.
///
/// Dropping a consumer of a group runs rust-rdkafka's close loop, which
/// polls in steps of 100 ms and so takes 100 ms even when the close is
/// done at once: with the job's last records handled, the whole run waited
/// for it (a tenth of a million-message run). A bounded reader has nothing
/// left to do with its group: it never joined it (it assigns partitions
/// itself) and its last positions were committed synchronously before
/// this. So nothing waits for the close; should the process exit first,
/// nothing is lost.
fn close_in_background(reader: KafkaReader) {
    // Should no thread be had, the closure is dropped here, and the reader
    // with it: closed in place.
    let _ = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(reader));
}

/// A Kafka source's lag gauges, one per partition, set every
/// [`KAFKA_LAG_EVERY`].
struct Lag {
    metrics: Arc<wafer_metrics::Metrics>,
    source: String,
    gauges: HashMap<(String, i32), wafer_metrics::Gauge>,
    last: Option<std::time::Instant>,
}

impl Lag {
    fn new(metrics: Arc<wafer_metrics::Metrics>, source: &str) -> Self {
        Lag {
            metrics,
            source: source.to_string(),
            gauges: HashMap::new(),
            last: None,
        }
    }

    /// Sets the gauges if a second has passed since the last time, or
    /// `now`.
    fn update(&mut self, reader: &KafkaReader, now: bool) {
        if !now && self.last.is_some_and(|t| t.elapsed() < KAFKA_LAG_EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        for (key, behind) in reader.lag() {
            let (metrics, source) = (&self.metrics, &self.source);
            self.gauges
                .entry(key)
                .or_insert_with_key(|(t, p)| metrics.source_lag(source, &format!("{t}/{p}")))
                .set(behind as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rate limit caps chunks at a hundredth of a second's worth of
    /// records, and the records sent through a throttled chunker are not
    /// sent before they are due (a lower bound only: sleeping never
    /// undershoots, so this cannot fail on a slow machine).
    #[test]
    fn a_rate_limit_paces_chunks() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (tx2, rx2) = crossbeam_channel::unbounded();
        let pace = |max_rate| Pace {
            batch_size: 1024,
            max_rate,
        };
        assert_eq!(
            Chunker::new(vec![tx.clone(), tx2.clone()], pace(None)).capacity(),
            2048
        );
        assert_eq!(Chunker::new(vec![tx.clone()], pace(Some(50))).capacity(), 1);
        assert_eq!(
            Chunker::new(vec![tx.clone()], pace(Some(1_000_000))).capacity(),
            1024
        );

        // Taken before the chunker, whose clock starts when it is made: a
        // clock started after it could read a few microseconds short.
        let started = Instant::now();
        let mut chunker = Chunker::new(vec![tx, tx2], pace(Some(2_000)));
        assert_eq!(chunker.capacity(), 20);
        let origin = Arc::new(Origin::File(Arc::from("in.jsonl")));
        for chunk in 0..10u64 {
            for i in 0..chunker.capacity() as u64 {
                chunker.push(&origin, 0, chunk * 100 + i, format!("{chunk}:{i}").as_bytes());
            }
            assert!(chunker.send());
        }
        // 200 records at 2,000 per second: due after 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(100));
        let received: usize = rx.try_iter().chain(rx2.try_iter()).map(|b| b.len()).sum();
        assert_eq!(received, 200);
    }
}
