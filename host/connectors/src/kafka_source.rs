//! The Kafka source: raw message values out of topics, with positions kept
//! by the host.
//!
//! The reader never lets Kafka decide where it is: it tracks the next offset
//! of every partition itself ([`KafkaReader::positions`]), so positions can
//! be checkpointed with the rest of the job, and it commits them back to the
//! group only so that monitoring tools see the lag (auto-commit is off).
//!
//! Two modes:
//! - **unbounded**: the group's protocol assigns partitions (so several hosts
//!   can share a topic, and partitions added while running are picked up);
//!   on every assignment the reader seeks each partition to the position it
//!   holds, or else to the configured start;
//! - **bounded**: the reader assigns every partition of the topics itself and
//!   stops at the end offsets seen at start (tests, backfills, the reference
//!   jobs). Partitions empty at start are not read at all. A partition is
//!   finished once it reached its end offset at start and then either the
//!   broker reports its end, a message produced after the start shows up
//!   (not read), or it stays silent for a while: robust both to topics being
//!   written to and to brokers that under-report end offsets.
//!
//! Each partition is a *lane*: the unit of order downstream watermarks are
//! kept per. [`KafkaReader::lanes`] tells which lanes exist and which are
//! finished, so that an assigned partition holds watermarks back (until it
//! turns idle) even before its first record.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::kafka_fetch::{Chunk, FetchConfig, Fetcher, Reset};
use crate::kafka_queue::{Batch, MessageQueue};

/// A partition: topic and number.
pub type Partition = (Arc<str>, i32);

/// Where a reader starts a partition it holds no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The group's committed offset, else the earliest.
    Committed,
    /// The first retained message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// The first message at or after this time (epoch ms).
    Timestamp(i64),
}

/// How to reach and read the topics.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topics.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group: String,
    /// Start of partitions without a position.
    pub start: Start,
    /// Stop at the end offsets seen at start.
    pub bounded: bool,
    /// How long to retry unreachable brokers at start.
    pub connect_timeout: Duration,
    /// librdkafka properties, passed through.
    pub properties: Vec<(String, String)>,
}

/// Why Kafka could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// A bad property or client setup.
    #[error("kafka consumer for {topics}: {source}")]
    Client {
        /// topics
        topics: String,
        /// librdkafka's error
        source: KafkaError,
    },
    /// Brokers did not answer within the connect timeout.
    #[error("cannot reach kafka brokers {brokers} within {waited:?} (retried {attempts} times): {last}")]
    Unreachable {
        /// bootstrap servers
        brokers: String,
        /// how long it tried
        waited: Duration,
        /// attempts
        attempts: u32,
        /// the last error
        last: String,
    },
    /// A topic does not exist.
    #[error("kafka topic `{0}` does not exist")]
    NoTopic(String),
    /// A fatal consumer error while running.
    #[error("kafka consumer failed: {0}")]
    Fatal(KafkaError),
    /// A fatal error of the direct fetch path.
    #[error("{0}")]
    Fetch(String),
    /// A setting wafer reads itself has a bad value.
    #[error("kafka property `{key}`: {reason}")]
    BadSetting {
        /// the property
        key: String,
        /// what is wrong
        reason: String,
    },
}

/// A message as the reader hands it over.
#[derive(Debug)]
pub struct KafkaRecord<'a> {
    /// Its partition.
    pub partition: &'a Partition,
    /// The partition's lane number (stable for the reader's life).
    pub lane: u32,
    /// Its offset.
    pub offset: i64,
    /// Its value (empty for a tombstone).
    pub payload: &'a [u8],
}

/// foldhash for the maps looked up per message (keys are our own
/// partitions: nothing to defend from).
type Fast = foldhash::fast::RandomState;

/// The next offset to read of one partition. The reader stores it after
/// every message (a plain store, where a lock per message cost a tenth of
/// the source thread); the rebalance callback and checkpoints load it.
#[derive(Debug)]
struct Position(AtomicI64);

impl Position {
    fn new(offset: i64) -> Arc<Self> {
        Arc::new(Position(AtomicI64::new(offset)))
    }
    fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, offset: i64) {
        self.0.store(offset, Ordering::Release);
    }
}

/// Positions shared with the rebalance callback, which runs inside `poll`.
#[derive(Default)]
struct Shared {
    /// Next offset to read per partition read or restored.
    positions: HashMap<(String, i32), Arc<Position>, Fast>,
    /// Lane of every partition ever assigned.
    lanes: HashMap<(String, i32), (Partition, u32)>,
    /// Partitions assigned now.
    assigned: std::collections::BTreeSet<(String, i32)>,
    /// The broker's end of each partition (last stable offset, else high
    /// watermark) as of librdkafka's last statistics, or the direct
    /// fetcher's last response: the lag's reference.
    ends: HashMap<(String, i32), i64>,
    /// Direct path: assigned partitions whose start offset could not be
    /// looked up yet (the reader retries).
    unresolved: Vec<((String, i32), Offset)>,
}

impl Shared {
    /// The lane of a partition, numbering new ones in order of appearance.
    fn lane(&mut self, key: &(String, i32)) -> (Partition, u32) {
        let n = self.lanes.len() as u32;
        self.lanes
            .entry(key.clone())
            .or_insert_with(|| ((Arc::from(key.0.as_str()), key.1), n))
            .clone()
    }
}

/// The consumer context: seeks newly assigned partitions to the host's
/// positions (or the start) instead of the group's committed offsets.
struct Ctx {
    shared: Arc<Mutex<Shared>>,
    start: Start,
    /// The reader's message queue: newly assigned partitions are routed
    /// there first. Weak: the reader owns it and drops it before the
    /// consumer (whose context this is).
    queue: OnceLock<Weak<MessageQueue>>,
    /// The direct fetch path's fetcher, when the reader uses it: assigned
    /// partitions are fetched there, not by librdkafka.
    fetcher: OnceLock<Weak<Fetcher>>,
    /// Set by every rebalance, so the reader drops chunks of partitions it
    /// no longer holds.
    rebalanced: AtomicBool,
    /// The offset reset policy for a partition without a committed offset.
    reset_latest: bool,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics (every `statistics.interval.ms`, served by
    /// `poll`) carry each partition's end as the fetcher last saw it.
    fn stats(&self, statistics: Statistics) {
        // The direct path knows the ends from its own fetches; librdkafka's
        // figures are of partitions it does not fetch.
        if self.fetcher.get().is_some() {
            return;
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, t) in statistics.topics {
            for (p, part) in t.partitions {
                // -1 is librdkafka's placeholder for unassigned messages.
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                if p >= 0 && end >= 0 {
                    shared.ends.insert((topic.clone(), p), end);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how bounded reading learns where it is, not
        // a failure.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            tracing::debug!(%reason, "kafka partition end");
        } else {
            tracing::warn!(error = %error, %reason, "kafka client error");
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.rebalanced.store(true, Ordering::Release);
                let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                let mut assignment = TopicPartitionList::new();
                let queue = self.queue.get().and_then(Weak::upgrade);
                let fetcher = self.fetcher.get().and_then(Weak::upgrade);
                for e in tpl.elements() {
                    if let (Some(q), None) = (&queue, &fetcher) {
                        q.route(e.topic(), e.partition());
                    }
                    let key = (e.topic().to_string(), e.partition());
                    shared.lane(&key);
                    shared.assigned.insert(key.clone());
                    let offset = match shared.positions.get(&key) {
                        Some(o) => Offset::Offset(o.get()),
                        None => start_offset(consumer, self.start, e.topic(), e.partition()),
                    };
                    if let Some(fetcher) = &fetcher {
                        match resolve(consumer, offset, e.topic(), e.partition(), self.reset_latest) {
                            Ok(from) => {
                                fetcher.add(e.topic(), e.partition(), from);
                            }
                            Err(err) => {
                                tracing::warn!(topic = e.topic(), partition = e.partition(), error = %err, "kafka start offset lookup failed; retrying");
                                shared.unresolved.push((key.clone(), offset));
                            }
                        }
                    }
                    // The offset is valid here: add_partition_offset only
                    // fails for a partition already in the list.
                    let _ = assignment.add_partition_offset(e.topic(), e.partition(), offset);
                }
                tracing::info!(partitions = assignment.count(), "kafka partitions assigned");
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!(error = %e, "kafka assignment failed");
                }
                // The direct path fetches them: librdkafka must not (what
                // it fetched before the pause comes through `poll` and is
                // dropped; positions are the host's).
                if fetcher.is_some()
                    && let Err(e) = consumer.pause(&assignment)
                {
                    tracing::error!(error = %e, "pausing librdkafka's fetching failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "kafka partitions revoked");
                self.rebalanced.store(true, Ordering::Release);
                let fetcher = self.fetcher.get().and_then(Weak::upgrade);
                let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                for e in tpl.elements() {
                    let key = (e.topic().to_string(), e.partition());
                    shared.unresolved.retain(|(k, _)| *k != key);
                    shared.assigned.remove(&key);
                    if let Some(f) = &fetcher {
                        f.remove(e.topic(), e.partition());
                    }
                }
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "kafka unassignment failed");
                }
            }
            other => tracing::error!(error = ?other, "kafka rebalance error"),
        }
    }
}

/// The offset a partition without a position starts at.
fn start_offset<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    start: Start,
    topic: &str,
    partition: i32,
) -> Offset {
    match start {
        // Invalid = librdkafka's "use the committed offset, else
        // auto.offset.reset" (set to earliest).
        Start::Committed => Offset::Invalid,
        Start::Earliest => Offset::Beginning,
        Start::Latest => Offset::End,
        Start::Timestamp(ms) => {
            let mut q = TopicPartitionList::new();
            let _ = q.add_partition_offset(topic, partition, Offset::Offset(ms));
            match consumer.offsets_for_times(q, Duration::from_secs(10)) {
                Ok(r) => match r.find_partition(topic, partition).map(|e| e.offset()) {
                    // No message at or after the time: start at the end.
                    Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                    _ => Offset::End,
                },
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "offsets_for_times failed; starting at the end");
                    Offset::End
                }
            }
        }
    }
}

/// A start offset as a number: the direct path fetches from offsets, not
/// from librdkafka's logical ones. A lookup that fails is an error, for the
/// reader to retry (guessing would replay or skip the partition).
fn resolve<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offset: Offset,
    topic: &str,
    partition: i32,
    reset_latest: bool,
) -> Result<i64, KafkaError> {
    let timeout = Duration::from_secs(10);
    let watermark = |latest: bool| {
        consumer
            .fetch_watermarks(topic, partition, timeout)
            .map(|(low, high)| if latest { high } else { low })
    };
    match offset {
        Offset::Offset(o) if o >= 0 => Ok(o),
        Offset::Beginning => watermark(false),
        Offset::End => watermark(true),
        _ => {
            let mut q = TopicPartitionList::new();
            q.add_partition(topic, partition);
            let committed = consumer.committed_offsets(q, timeout)?;
            match committed.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Ok(o),
                _ => watermark(reset_latest),
            }
        }
    }
}

/// How long a bounded partition that reached its end at start must stay
/// silent to count as finished, when no end-of-partition event decides.
const BOUNDED_IDLE: Duration = Duration::from_secs(2);

/// How long a read that has its first message waits for the rest of the
/// batch asked for.
const FILL: Duration = Duration::from_millis(5);

/// A partition of a bounded reader still being read.
///
/// It is finished when, past the end offset seen at start, a message
/// produced after the start arrives (not read), or the broker reports the
/// partition's end, or it stays silent for [`BOUNDED_IDLE`]. Going by the
/// start's end offset alone would stop early on brokers that under-report
/// it; going by end-of-partition alone would never stop on a topic that is
/// being written to.
struct BoundedPartition {
    /// Which partition it is.
    key: (String, i32),
    /// End offset reported at start.
    end: i64,
    /// Whether the reader got there.
    reached: bool,
    /// When it last delivered a message.
    last_seen: Instant,
}

/// The direct fetch path's side of the reader (see `kafka_fetch`).
struct DirectRead {
    fetcher: Arc<Fetcher>,
    /// Chunks not yet handed over, per fetcher partition index, with how
    /// many records of the front one were.
    bufs: Vec<(VecDeque<Chunk>, usize)>,
    /// Chunks in `bufs`: taking from the fetcher stops at a bound, so that
    /// its queue (and so fetching) stays bounded.
    buffered: usize,
    /// When metadata was last asked for.
    last_metadata: Option<Instant>,
    /// When start offsets that failed to resolve were last retried.
    last_resolve: Option<Instant>,
    /// Metadata is wanted.
    stale: bool,
    /// Partitions to reset once the broker answers.
    resets: Vec<Reset>,
}

impl DirectRead {
    /// Buffers a chunk unless its partition was re-seeked or dropped since.
    fn keep(&mut self, chunk: Chunk) {
        if self
            .fetcher
            .current(chunk.part)
            .is_none_or(|(_, g)| g != chunk.generation)
        {
            return;
        }
        if self.bufs.len() <= chunk.part {
            self.bufs.resize_with(chunk.part + 1, || (VecDeque::new(), 0));
        }
        self.bufs[chunk.part].0.push_back(chunk);
        self.buffered += 1;
    }

    /// Takes what the fetcher has queued, up to the buffer's bound.
    fn take(&mut self) {
        while self.buffered < BUFFERED_CHUNKS {
            let Some(chunk) = self.fetcher.try_recv() else {
                return;
            };
            self.keep(chunk);
        }
    }

    /// Drops buffered chunks of partitions re-seeked or no longer fetched.
    fn drop_stale(&mut self) {
        for (part, (chunks, at)) in self.bufs.iter_mut().enumerate() {
            let current = self.fetcher.current(part).map(|(_, g)| g);
            self.buffered -= stale_chunks(current, chunks, at);
        }
    }
}

/// Drops a partition's buffered chunks not of its `current` generation
/// (`None`: no longer fetched) and returns how many. Generations only grow
/// along the queue, so a drop takes the front chunk, and the count of its
/// records handed over (`at`) starts again.
fn stale_chunks(current: Option<u64>, chunks: &mut VecDeque<Chunk>, at: &mut usize) -> usize {
    let before = chunks.len();
    chunks.retain(|c| Some(c.generation) == current);
    if chunks.len() != before {
        *at = 0;
    }
    before - chunks.len()
}

/// A record's place in the timestamp merge: its timestamp, or first when
/// it has none (-1), as librdkafka's messages without one.
fn merge_key(r: &crate::kafka_wire::Rec) -> i64 {
    if r.timestamp < 0 { i64::MIN } else { r.timestamp }
}

/// The timestamp merge's choice among partitions' next timestamps (`None`:
/// nothing buffered): the partition whose next one is oldest (the first
/// such on a tie), and the oldest next one among the others, up to which
/// it may hand over (`i64::MAX` when it is alone with messages).
fn oldest(heads: impl Iterator<Item = Option<i64>>) -> Option<(usize, i64)> {
    let mut best: Option<(usize, i64)> = None;
    let mut second = i64::MAX;
    for (i, ts) in heads.enumerate() {
        let Some(ts) = ts else { continue };
        match best {
            Some((_, b)) if ts >= b => second = second.min(ts),
            _ => {
                if let Some((_, b)) = best {
                    second = second.min(b);
                }
                best = Some((i, ts));
            }
        }
    }
    best.map(|(i, _)| (i, second))
}

/// Chunks the reader buffers beyond the fetcher's queue.
const BUFFERED_CHUNKS: usize = 8;

/// How often metadata may be asked for when a leader is unknown.
const METADATA_EVERY: Duration = Duration::from_millis(500);

/// Properties the direct fetch path reads, with librdkafka's defaults
/// where wafer keeps them. Returns the config, whether the path applies,
/// and the properties for librdkafka (without wafer's own).
fn fetch_config(
    settings: &KafkaSettings,
) -> Result<(FetchConfig, bool, bool, Vec<(String, String)>), KafkaSourceError> {
    let bad = |key: &str, reason: String| KafkaSourceError::BadSetting {
        key: key.to_string(),
        reason,
    };
    let mut direct = None;
    let mut props = Vec::new();
    for (k, v) in &settings.properties {
        if k == "wafer.fetch" {
            direct = Some(match v.trim() {
                "direct" => true,
                "librdkafka" => false,
                other => return Err(bad(k, format!("`{other}` is neither `direct` nor `librdkafka`"))),
            });
        } else {
            props.push((k.clone(), v.clone()));
        }
    }
    let prop = |key: &str| props.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.trim());
    let number = |key: &str, default: i32| -> Result<i32, KafkaSourceError> {
        match prop(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad(key, format!("`{v}` is not a non-negative number"))),
        }
    };
    // TLS and SASL are librdkafka's to speak.
    let plaintext = prop("security.protocol").is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
    if direct == Some(true) && !plaintext {
        return Err(bad(
            "wafer.fetch",
            "`direct` speaks plaintext only; with security.protocol set use `librdkafka`".into(),
        ));
    }
    let config = FetchConfig {
        client_id: prop("client.id").unwrap_or("wafer").to_string(),
        max_wait_ms: number("fetch.wait.max.ms", if settings.bounded { 10 } else { 50 })?,
        min_bytes: number("fetch.min.bytes", 1)?,
        max_bytes: number("fetch.max.bytes", 52_428_800)?,
        partition_max_bytes: number("max.partition.fetch.bytes", 1_048_576)?.max(1),
        read_committed: prop("isolation.level") != Some("read_uncommitted"),
        eof: settings.bounded,
        queued_chunks: 16,
        queued_bytes: number("queued.max.messages.kbytes", 65_536)?.max(1) as usize * 1024,
    };
    let reset_latest = matches!(prop("auto.offset.reset"), Some("latest" | "largest" | "end"));
    Ok((config, direct.unwrap_or(plaintext), reset_latest, props))
}

/// Reads raw messages of some topics.
pub struct KafkaReader {
    // Dropped in this order: the buffered messages and the partition
    // queues before the consumer they belong to (see `kafka_queue`).
    /// Messages popped but not yet handed over, per routed partition (by
    /// the queue's partition index), with how many were handed over.
    pending: Vec<(Batch, usize)>,
    queue: Arc<MessageQueue>,
    /// The direct fetch path, if used (else librdkafka fetches).
    direct: Option<DirectRead>,
    consumer: BaseConsumer<Ctx>,
    settings: KafkaSettings,
    shared: Arc<Mutex<Shared>>,
    /// Partitions seen, their names and lanes (a cache of `shared`).
    recent: Vec<((String, i32), Partition, u32, Arc<Position>)>,
    /// Bounded mode: the partitions still being read.
    /// By lane, so that the per-message lookup hashes a number.
    ends: Option<HashMap<u32, BoundedPartition, Fast>>,
    /// When the reader started (epoch ms): in bounded mode, messages
    /// produced later are beyond the bound.
    started_ms: i64,
    last_commit: Instant,
}

impl KafkaReader {
    /// Connects (retrying until the connect timeout), checks that the
    /// topics exist, and assigns or subscribes. `positions` are where a
    /// restored job left off: next offset per (topic, partition).
    pub fn open(
        settings: KafkaSettings,
        positions: Vec<((String, i32), i64)>,
    ) -> Result<Self, KafkaSourceError> {
        let topics_label = settings.topics.join(",");
        let client = |source| KafkaSourceError::Client {
            topics: topics_label.clone(),
            source,
        };
        let (fetch, use_direct, reset_latest, properties) = fetch_config(&settings)?;
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "enable.partition.eof",
                if settings.bounded { "true" } else { "false" },
            )
            // Partitions added while running are noticed within seconds
            // (librdkafka's default is 5 minutes).
            .set("topic.metadata.refresh.interval.ms", "10000")
            // Statistics carry the partitions' ends, for the lag.
            .set("statistics.interval.ms", "1000")
            // How long the broker may hold a fetch while it has less than
            // fetch.min.bytes to send. Kafka answers at once when data is
            // there, so this matters once caught up: an unbounded reader
            // idles there and lets the broker hold its fetch (50 ms); a
            // bounded one learns of a partition's end from the empty fetch
            // that follows its last message, so it asks for 10 ms. Some
            // brokers (tansu 0.6) hold *every* fetch this long, data or
            // not: there the bounded reader drains a topic ~1.6x faster.
            .set("fetch.wait.max.ms", if settings.bounded { "10" } else { "50" })
            .set("queued.min.messages", "200000")
            // Once the local queue holds queued.min.messages, librdkafka
            // waits this long before fetching again (1 s by default): the
            // job drained the queue in a fraction of that and then sat idle,
            // which cost a third of the throughput.
            .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &properties {
            cfg.set(k, v);
        }
        let mut shared = Shared::default();
        // Restored partitions get lanes 0, 1, … in the order given, so the
        // caller can restore their watermarks before the first record.
        for (key, offset) in positions {
            shared.lane(&key);
            shared.positions.insert(key, Position::new(offset));
        }
        let shared = Arc::new(Mutex::new(shared));
        let consumer: BaseConsumer<Ctx> = cfg
            .create_with_context(Ctx {
                shared: shared.clone(),
                start: settings.start,
                queue: OnceLock::new(),
                fetcher: OnceLock::new(),
                rebalanced: AtomicBool::new(false),
                reset_latest,
            })
            .map_err(client)?;
        let queue = Arc::new(MessageQueue::new(&consumer));
        let _ = consumer.context().queue.set(Arc::downgrade(&queue));
        let direct = use_direct.then(|| {
            let fetcher = Arc::new(Fetcher::new(fetch));
            let _ = consumer.context().fetcher.set(Arc::downgrade(&fetcher));
            DirectRead {
                fetcher,
                bufs: Vec::new(),
                buffered: 0,
                last_metadata: None,
                last_resolve: None,
                stale: false,
                resets: Vec::new(),
            }
        });

        // Brokers down at start: retry with a growing pause, then give up
        // with a message naming them.
        let began = Instant::now();
        let mut attempts = 0u32;
        let mut pause = Duration::from_millis(200);
        let metadata = loop {
            attempts += 1;
            match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(m) if !m.brokers().is_empty() => break m,
                Ok(_) => {}
                Err(e) => {
                    if began.elapsed() >= settings.connect_timeout {
                        return Err(KafkaSourceError::Unreachable {
                            brokers: settings.brokers.clone(),
                            waited: began.elapsed(),
                            attempts,
                            last: e.to_string(),
                        });
                    }
                    tracing::warn!(brokers = %settings.brokers, attempt = attempts, error = %e, "kafka brokers unreachable; retrying");
                }
            }
            if began.elapsed() >= settings.connect_timeout {
                return Err(KafkaSourceError::Unreachable {
                    brokers: settings.brokers.clone(),
                    waited: began.elapsed(),
                    attempts,
                    last: "no brokers in metadata".into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        };
        let brokers: Vec<(i32, String, i32)> = metadata
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        let mut leaders = Vec::new();
        let mut partitions = Vec::new();
        for t in &settings.topics {
            let Some(mt) = metadata.topics().iter().find(|mt| mt.name() == t) else {
                return Err(KafkaSourceError::NoTopic(t.clone()));
            };
            if mt.error().is_some() || mt.partitions().is_empty() {
                return Err(KafkaSourceError::NoTopic(t.clone()));
            }
            for p in mt.partitions() {
                partitions.push((t.clone(), p.id()));
                leaders.push((t.clone(), p.id(), p.leader()));
            }
        }
        partitions.sort();

        let mut reader = KafkaReader {
            pending: Vec::new(),
            queue,
            direct,
            consumer,
            settings,
            shared,
            recent: Vec::new(),
            ends: None,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            last_commit: Instant::now(),
        };
        if reader.settings.bounded {
            reader.assign_bounded(&partitions).map_err(client)?;
        } else {
            let topics: Vec<&str> = reader.settings.topics.iter().map(String::as_str).collect();
            reader.consumer.subscribe(&topics).map_err(client)?;
        }
        if let Some(d) = &mut reader.direct {
            d.fetcher.set_metadata(&brokers, &leaders);
            d.last_metadata = Some(Instant::now());
        }
        Ok(reader)
    }

    /// Bounded mode: every partition, from its position (or start) to the
    /// end offset it has now.
    fn assign_bounded(&mut self, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        let timeout = Duration::from_secs(10);
        let mut committed = HashMap::new();
        if self.settings.start == Start::Committed {
            let mut q = TopicPartitionList::new();
            for (t, p) in partitions {
                q.add_partition(t, *p);
            }
            for e in self.consumer.committed_offsets(q, timeout)?.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        let positions: HashMap<(String, i32), i64> = self.positions().into_iter().collect();
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::default();
        for (t, p) in partitions {
            let (low, high) = self.consumer.fetch_watermarks(t, *p, timeout)?;
            let from = match positions.get(&(t.clone(), *p)) {
                Some(&o) => o,
                None => match self.settings.start {
                    Start::Committed => committed.get(&(t.clone(), *p)).copied().unwrap_or(low),
                    Start::Earliest => low,
                    Start::Latest => high,
                    Start::Timestamp(_) => match start_offset(&self.consumer, self.settings.start, t, *p) {
                        Offset::Offset(o) => o,
                        _ => high,
                    },
                },
            }
            .max(low);
            tracing::info!(topic = %t, partition = p, from, end = high, "kafka partition (bounded)");
            // Every partition is read, even one whose reported end is not
            // ahead of the start or that looks empty: some Kafka-protocol
            // brokers under-report the end (tansu 0.6 answers with its last
            // batch's base offset, 0 for a partition written in one batch).
            // Where the end really is is settled while reading (see
            // `BoundedPartition`); a partition that is really empty ends at
            // its end-of-partition event.
            let (_, lane) = self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lane(&(t.clone(), *p));
            ends.insert(
                lane,
                BoundedPartition {
                    key: (t.clone(), *p),
                    end: high,
                    reached: from >= high,
                    last_seen: Instant::now(),
                },
            );
            match &self.direct {
                Some(d) => {
                    d.fetcher.add(t, *p, from);
                }
                None => {
                    self.queue.route(t, *p);
                    tpl.add_partition_offset(t, *p, Offset::Offset(from))?;
                }
            }
        }
        if self.direct.is_none() {
            self.consumer.assign(&tpl)?;
        }
        self.ends = Some(ends);
        Ok(())
    }

    /// Reads up to `max` messages, waiting at most `linger` for the first
    /// and handing each to `f`. Returns `false` once a bounded reader has
    /// read everything (an unbounded one always returns `true`).
    ///
    /// Messages come in batches from each partition's own queue and are
    /// handed over merged by their Kafka timestamps (see [`Self::merge`]);
    /// `poll` is called once per batch to serve rebalances and client
    /// errors (and hands over any message not routed to the queues).
    pub fn read(
        &mut self,
        max: usize,
        linger: Duration,
        mut f: impl FnMut(KafkaRecord<'_>),
    ) -> Result<bool, KafkaSourceError> {
        // The clock is read once per call, not per message: at hundreds of
        // thousands of messages a second it showed in profiles.
        let now = Instant::now();
        let deadline = now + linger;
        if self.direct.is_some() {
            self.read_direct(max, now, deadline, &mut f)?;
        } else {
            self.read_into(max, now, deadline, &mut f)?;
        }
        self.finish_idle();
        Ok(!self.ends.as_ref().is_some_and(HashMap::is_empty))
    }

    fn read_into(
        &mut self,
        max: usize,
        now: Instant,
        deadline: Instant,
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> Result<(), KafkaSourceError> {
        let mut n = 0;
        // Once a read has a message it waits at most FILL for the rest.
        let mut fill_until: Option<Instant> = None;
        while n < max {
            if self.ends.as_ref().is_some_and(HashMap::is_empty) {
                return Ok(());
            }
            let routed = self.queue.len();
            let until = fill_until.unwrap_or(deadline);
            // Rebalances and errors; a message only if it was not routed.
            // Until partitions are routed, poll is where the wait is.
            let polled = self.consumer.poll(if routed > 0 {
                Duration::ZERO
            } else {
                until.saturating_duration_since(Instant::now())
            });
            if let Some(polled) = polled {
                match polled {
                    Ok(m) => {
                        // Rare (a partition not routed): copied, so that the
                        // message's borrow of the consumer ends here.
                        let topic = (self.settings.topics.len() > 1).then(|| m.topic().to_string());
                        let (p, offset, produced) = (m.partition(), m.offset(), m.timestamp().to_millis());
                        let payload = m.payload().unwrap_or_default().to_vec();
                        drop(m);
                        if self.deliver(now, topic.as_deref(), p, offset, || produced, &payload, f) {
                            n += 1;
                        }
                    }
                    Err(KafkaError::PartitionEOF(p)) => self.partition_end(p, None),
                    Err(e) => self.consumer_error(e)?,
                }
                continue;
            }
            // Forget earlier wake-ups before looking, so that a message
            // arriving after the look wakes the wait below.
            self.queue.arm();
            self.refill(routed, max);
            let (handed, taken) = self.merge(now, max - n, f)?;
            n += handed;
            if n > 0 && fill_until.is_none() {
                fill_until = Some(Instant::now() + FILL);
            }
            if taken > 0 {
                continue;
            }
            // Nothing buffered anywhere.
            let until = fill_until.unwrap_or(deadline);
            if Instant::now() >= until {
                break;
            }
            if routed > 0 {
                self.queue.wait(until);
            }
            if n == 0 {
                self.finish_idle();
            }
        }
        Ok(())
    }

    /// [`Self::read_into`] for the direct fetch path: chunks from the
    /// fetcher instead of librdkafka's queues, merged the same way.
    fn read_direct(
        &mut self,
        max: usize,
        now: Instant,
        deadline: Instant,
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> Result<(), KafkaSourceError> {
        let mut n = 0;
        let mut fill_until: Option<Instant> = None;
        while n < max {
            if self.ends.as_ref().is_some_and(HashMap::is_empty) {
                return Ok(());
            }
            // Rebalances and client errors. Messages librdkafka fetched
            // before its pause took effect are dropped: the fetcher reads
            // those partitions from the host's positions.
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => {
                    self.consumer_error(e)?;
                    continue;
                }
                None => {}
            }
            self.maintain()?;
            let Some(d) = &mut self.direct else {
                return Ok(());
            };
            if self.consumer.context().rebalanced.swap(false, Ordering::AcqRel) {
                d.drop_stale();
            }
            d.take();
            let (handed, taken) = self.merge_direct(now, max - n, f)?;
            n += handed;
            if n > 0 && fill_until.is_none() {
                fill_until = Some(Instant::now() + FILL);
            }
            if taken > 0 {
                continue;
            }
            let until = fill_until.unwrap_or(deadline);
            if Instant::now() >= until {
                break;
            }
            // Wake at least every 100 ms to serve rebalances and metadata.
            if let Some(d) = &mut self.direct
                && let Some(chunk) = d
                    .fetcher
                    .recv(until.min(Instant::now() + Duration::from_millis(100)))
            {
                d.keep(chunk);
            }
            if n == 0 {
                self.finish_idle();
            }
        }
        Ok(())
    }

    /// The direct path's upkeep: fatal fetch errors, offsets out of range
    /// (reset per `auto.offset.reset`) and metadata when a leader is
    /// unknown or moved.
    fn maintain(&mut self) -> Result<(), KafkaSourceError> {
        let Some(d) = &mut self.direct else {
            return Ok(());
        };
        if let Some(e) = d.fetcher.error() {
            return Err(KafkaSourceError::Fetch(e.to_string()));
        }
        d.resets.extend(d.fetcher.take_resets());
        let reset_latest = self.consumer.context().reset_latest;
        let timeout = Duration::from_secs(5);
        let mut left = Vec::new();
        for r in std::mem::take(&mut d.resets) {
            match self.consumer.fetch_watermarks(&r.topic, r.partition, timeout) {
                Ok((low, high)) => {
                    let to = if reset_latest { high } else { low };
                    // Not if it was re-seeked or revoked meanwhile.
                    if d.fetcher.reset(&r, to) {
                        tracing::warn!(topic = %r.topic, partition = r.partition, to, "kafka offset out of range; reset");
                        d.drop_stale();
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %r.topic, partition = r.partition, error = %e, "kafka offset reset failed; retrying");
                    left.push(r);
                }
            }
        }
        d.resets = left;
        // Start offsets that could not be looked up in the rebalance,
        // retried at most every METADATA_EVERY (they are behind the shared
        // lock: not taken and put back on every read).
        if d.last_resolve.is_none_or(|t| t.elapsed() >= METADATA_EVERY) {
            d.last_resolve = Some(Instant::now());
            let unresolved = std::mem::take(
                &mut self
                    .shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unresolved,
            );
            let mut left = Vec::new();
            for (key, offset) in unresolved {
                // Revocations happen in `poll`, on this thread: one checked
                // here holds until the add.
                let assigned = self
                    .shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .assigned
                    .contains(&key);
                if !assigned {
                    continue;
                }
                match resolve(&self.consumer, offset, &key.0, key.1, reset_latest) {
                    Ok(from) => {
                        d.fetcher.add(&key.0, key.1, from);
                    }
                    Err(_) => left.push((key, offset)),
                }
            }
            if !left.is_empty() {
                self.shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unresolved
                    .extend(left);
            }
        }
        d.stale |= d.fetcher.take_stale();
        if d.stale && d.last_metadata.is_none_or(|t| t.elapsed() >= METADATA_EVERY) {
            d.last_metadata = Some(Instant::now());
            let mut brokers = Vec::new();
            let mut leaders = Vec::new();
            let mut failed = false;
            for topic in d.fetcher.topics() {
                match self.consumer.fetch_metadata(Some(&topic), timeout) {
                    Ok(m) => {
                        for b in m.brokers() {
                            brokers.push((b.id(), b.host().to_string(), b.port()));
                        }
                        // Deleted while read: as librdkafka's path, fatal.
                        if m.topics().iter().any(|mt| {
                            mt.error()
                                .is_some_and(|e| e == RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                        }) {
                            return Err(KafkaSourceError::NoTopic(topic));
                        }
                        for mt in m.topics() {
                            for p in mt.partitions() {
                                leaders.push((mt.name().to_string(), p.id(), p.leader()));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "kafka metadata unavailable; retrying");
                        failed = true;
                    }
                }
            }
            d.fetcher.set_metadata(&brokers, &leaders);
            // set_metadata asks again while a leader is unknown.
            d.stale = failed || d.fetcher.take_stale();
        }
        Ok(())
    }

    /// [`Self::merge`] for the direct path's chunks: hands over up to
    /// `max` buffered records, oldest Kafka timestamp first across
    /// partitions. Returns the records handed over and the entries taken
    /// (records and spent chunks).
    fn merge_direct(
        &mut self,
        now: Instant,
        max: usize,
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> Result<(usize, usize), KafkaSourceError> {
        let Some(d) = &mut self.direct else {
            return Ok((0, 0));
        };
        let mut bufs = std::mem::take(&mut d.bufs);
        let one_topic = self.settings.topics.len() == 1;
        let (mut handed, mut taken) = (0, 0);
        // A spent chunk (its end still to settle) goes first.
        let head = |(chunks, at): &(VecDeque<Chunk>, usize)| {
            let c = chunks.front()?;
            Some(c.records.recs.get(*at).map_or(i64::MIN, merge_key))
        };
        while handed < max {
            let Some((i, second)) = oldest(bufs.iter().map(head)) else {
                break;
            };
            let (chunks, at) = &mut bufs[i];
            let Some(chunk) = chunks.front() else { break };
            let current = self.direct.as_ref().and_then(|d| d.fetcher.current(chunk.part));
            let generation = current.as_ref().map(|(_, g)| *g);
            let Some((name, _)) = current.filter(|(_, g)| *g == chunk.generation) else {
                // Re-seeked or no longer fetched: its chunks are stale.
                let dropped = stale_chunks(generation, chunks, at);
                if let Some(d) = &mut self.direct {
                    d.buffered -= dropped;
                }
                taken += dropped;
                continue;
            };
            let topic = (!one_topic).then_some(&*name.0);
            while handed < max {
                let Some(r) = chunk.records.recs.get(*at) else {
                    break;
                };
                if second < i64::MAX && merge_key(r) > second {
                    break;
                }
                *at += 1;
                taken += 1;
                let ts = (r.timestamp >= 0).then_some(r.timestamp);
                if self.deliver(now, topic, name.1, r.offset, || ts, chunk.records.value(r), f) {
                    handed += 1;
                }
            }
            if *at >= chunk.records.recs.len() {
                // Spent: its position moves past what it skipped too.
                let (next, eof) = (chunk.next, chunk.eof);
                chunks.pop_front();
                *at = 0;
                taken += 1;
                if let Some(d) = &mut self.direct {
                    d.buffered -= 1;
                }
                self.chunk_done(topic, name.1, next, eof);
            }
        }
        if let Some(d) = &mut self.direct {
            d.bufs = bufs;
            // A bounded partition finished while handing over.
            d.drop_stale();
        }
        Ok((handed, taken))
    }

    /// A chunk was handed over: the partition's position moves to where its
    /// next fetch starts (past control and aborted batches), and a bounded
    /// partition that reached its end is finished.
    fn chunk_done(&mut self, topic: Option<&str>, partition: i32, next: i64, eof: bool) {
        let at = self.slot(topic, partition, next);
        let (key, _, lane, position) = &self.recent[at];
        let key = key.clone();
        let finished = self.ends.as_ref().is_some_and(|ends| !ends.contains_key(lane));
        // Not past records beyond a bounded partition's end: they were
        // not handed over.
        if !finished && next > position.get() {
            position.set(next);
        }
        if let Some(b) = self.ends.as_mut().and_then(|ends| ends.get_mut(lane))
            && next >= b.end
        {
            b.reached = true;
        }
        if eof {
            self.partition_end_of(&key, Some(next));
        }
    }

    /// Pops what each of the `routed` partitions' queues holds (up to
    /// `max`) into the buffers of the partitions whose buffers are spent.
    fn refill(&mut self, routed: usize, max: usize) {
        if self.pending.len() < routed {
            self.pending.resize_with(routed, || (Batch::default(), 0));
        }
        for (part, (batch, at)) in self.pending.iter_mut().enumerate() {
            if *at >= batch.len() {
                batch.clear();
                *at = 0;
                self.queue.pop(part, batch, max);
            }
        }
    }

    /// Hands over up to `max` buffered messages, oldest Kafka timestamp
    /// first across partitions: from the partition whose next message is
    /// oldest, as long as its messages are no newer than the next one of
    /// any other partition. So partitions with a backlog advance together
    /// (in event time, where producers stamp messages as events happen)
    /// instead of in the order librdkafka fetched them; a partition with
    /// nothing buffered holds nobody up. Returns the messages handed over
    /// and the entries taken (messages and events).
    fn merge(
        &mut self,
        now: Instant,
        max: usize,
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> Result<(usize, usize), KafkaSourceError> {
        let one_topic = self.settings.topics.len() == 1;
        let mut pending = std::mem::take(&mut self.pending);
        let result = (|| {
            let (mut handed, mut taken) = (0, 0);
            // A message without a timestamp goes first.
            let head = |(b, at): &(Batch, usize)| b.get(*at).map(|m| m.timestamp_ms().unwrap_or(i64::MIN));
            while handed < max {
                let Some((i, second)) = oldest(pending.iter().map(head)) else {
                    break;
                };
                let (batch, at) = &mut pending[i];
                while handed < max {
                    let Some(m) = batch.get(*at) else { break };
                    // Alone with messages (one partition, or the others
                    // spent): no timestamp to look up.
                    if second < i64::MAX && m.timestamp_ms().unwrap_or(i64::MIN) > second {
                        break;
                    }
                    *at += 1;
                    taken += 1;
                    match m.err() {
                        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {
                            let topic = if one_topic {
                                None
                            } else {
                                Some(m.topic().unwrap_or_default())
                            };
                            if self.deliver(
                                now,
                                topic,
                                m.partition(),
                                m.offset(),
                                || m.timestamp_ms(),
                                m.payload(),
                                f,
                            ) {
                                handed += 1;
                            }
                        }
                        RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                            self.partition_end(m.partition(), Some(m.offset()));
                        }
                        code => self.consumer_error(KafkaError::MessageConsumption(code.into()))?,
                    }
                }
            }
            Ok((handed, taken))
        })();
        self.pending = pending;
        result
    }

    /// Hands one message to `f` unless a bounded reader is past its end;
    /// returns whether it did. `topic` is `None` with a single topic.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        now: Instant,
        topic: Option<&str>,
        partition: i32,
        offset: i64,
        produced: impl FnOnce() -> Option<i64>,
        payload: &[u8],
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> bool {
        let at = self.slot(topic, partition, offset);
        let (key, partition, lane, position) = &self.recent[at];
        if let Some(ends) = &mut self.ends {
            // A message of a finished partition fetched before the pause
            // took effect.
            let Some(b) = ends.get_mut(lane) else {
                return false;
            };
            b.last_seen = now;
            if offset >= b.end && produced().unwrap_or(i64::MIN) > self.started_ms {
                // Produced after the start: beyond the bound.
                ends.remove(lane);
                stop(&self.consumer, self.direct.as_mut(), key);
                return false;
            }
            if offset + 1 >= b.end {
                b.reached = true;
            }
        }
        f(KafkaRecord {
            partition,
            lane: *lane,
            offset,
            payload,
        });
        position.set(offset + 1);
        true
    }

    /// Where in `recent` a partition is (added on its first message, whose
    /// offset starts its position if it has none). `topic` is `None` with a
    /// single topic.
    fn slot(&mut self, topic: Option<&str>, partition: i32, offset: i64) -> usize {
        // The partition's key, lane and name without allocating: a linear
        // scan of the few partitions seen.
        let at = self
            .recent
            .iter()
            .position(|(k, ..)| k.1 == partition && topic.is_none_or(|t| k.0 == t));
        match at {
            Some(at) => at,
            None => {
                let name = topic.unwrap_or_else(|| self.settings.topics.first().map_or("", String::as_str));
                let key = (name.to_string(), partition);
                let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                let (p, lane) = shared.lane(&key);
                let position = shared
                    .positions
                    .entry(key.clone())
                    .or_insert_with(|| Position::new(offset))
                    .clone();
                drop(shared);
                self.recent.push((key, p, lane, position));
                self.recent.len() - 1
            }
        }
    }

    /// The broker's end of partition `p` as of now: a partition that
    /// reached its end at start is done. librdkafka names only the
    /// partition number, so this is decisive with one topic; with several,
    /// the idle rule decides. `at` is the offset the end was found at, when
    /// known: a partition whose last entries are transaction markers (never
    /// handed over) reaches its end there.
    fn partition_end(&mut self, p: i32, at: Option<i64>) {
        if let [topic] = self.settings.topics.as_slice() {
            let key = (topic.clone(), p);
            self.partition_end_of(&key, at);
        }
    }

    /// The broker's end of partition `key` as of now (see `partition_end`).
    fn partition_end_of(&mut self, key: &(String, i32), at: Option<i64>) {
        let Some(ends) = &mut self.ends else {
            return;
        };
        let lane = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lanes
            .get(key)
            .map(|&(_, lane)| lane);
        if let (Some(lane), Some(at)) = (lane, at)
            && let Some(b) = ends.get_mut(&lane)
            && at >= b.end
        {
            b.reached = true;
        }
        if let Some(lane) = lane
            && ends.get(&lane).is_some_and(|b| b.reached)
        {
            ends.remove(&lane);
            stop(&self.consumer, self.direct.as_mut(), key);
        }
    }

    /// A consumer error: fatal ones end the read; for the rest (broker
    /// down, leader moved, ...) librdkafka reconnects and resumes fetching
    /// from where it was.
    fn consumer_error(&self, e: KafkaError) -> Result<(), KafkaSourceError> {
        if is_fatal(&e) {
            return Err(KafkaSourceError::Fatal(e));
        }
        tracing::warn!(error = %e, "kafka consumer error; retrying");
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    /// Finishes the bounded partitions that reached their end at start and
    /// have been silent since for [`BOUNDED_IDLE`].
    fn finish_idle(&mut self) {
        let Some(ends) = &mut self.ends else {
            return;
        };
        let idle: Vec<u32> = ends
            .iter()
            .filter(|(_, b)| b.reached && b.last_seen.elapsed() >= BOUNDED_IDLE)
            .map(|(&lane, _)| lane)
            .collect();
        for lane in idle {
            if let Some(b) = ends.remove(&lane) {
                stop(&self.consumer, self.direct.as_mut(), &b.key);
            }
        }
    }

    /// Every lane with whether it is finished: in bounded mode, partitions
    /// read to their end; otherwise partitions no longer assigned to this
    /// reader. Downstream watermarks wait for the others.
    pub fn lanes(&self) -> Vec<(u32, bool)> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(u32, bool)> = shared
            .lanes
            .iter()
            .map(|(key, (_, lane))| {
                let finished = match &self.ends {
                    Some(ends) => !ends.contains_key(lane),
                    None => !shared.assigned.contains(key),
                };
                (*lane, finished)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Every lane's partition, as `topic/partition`, by lane number.
    pub fn lane_names(&self) -> Vec<(u32, String)> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(u32, String)> = shared
            .lanes
            .iter()
            .map(|((t, p), (_, lane))| (*lane, format!("{t}/{p}")))
            .collect();
        v.sort_unstable();
        v
    }

    /// How many messages each partition read here is behind, in partition
    /// order: an unbounded reader, behind the broker's end (as of
    /// librdkafka's last statistics or the direct fetcher's last response)
    /// for the partitions assigned to it now; a bounded one, behind its
    /// bound (0 once finished).
    pub fn lag(&self) -> Vec<((String, i32), i64)> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        // The direct path's ends come from its own fetches.
        if let Some(d) = &self.direct {
            shared.ends.extend(d.fetcher.ends());
        }
        let mut v: Vec<_> = match &self.ends {
            Some(bounds) => shared
                .positions
                .iter()
                .filter_map(|(k, pos)| {
                    let (_, lane) = shared.lanes.get(k)?;
                    let left = bounds.get(lane).map_or(0, |b| (b.end - pos.get()).max(0));
                    Some((k.clone(), left))
                })
                .collect(),
            None => shared
                .positions
                .iter()
                .filter(|(k, _)| shared.assigned.contains(*k))
                .filter_map(|(k, pos)| {
                    let end = shared.ends.get(k)?;
                    Some((k.clone(), (end - pos.get()).max(0)))
                })
                .collect(),
        };
        v.sort();
        v
    }

    /// Commits the given positions to the group (those of a completed
    /// checkpoint), for monitoring tools.
    pub fn commit_positions(&mut self, positions: &[((String, i32), i64)]) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in positions {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::warn!(error = %e, "committing kafka offsets failed");
        }
    }

    /// Next offset to read per partition, in partition order.
    pub fn positions(&self) -> Vec<((String, i32), i64)> {
        let mut v: Vec<_> = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .positions
            .iter()
            .map(|(k, o)| (k.clone(), o.get()))
            .collect();
        v.sort();
        v
    }

    /// Commits the positions to the group, for monitoring tools, at most
    /// every `every` (always when `every` is zero).
    pub fn commit(&mut self, every: Duration) {
        if self.last_commit.elapsed() < every {
            return;
        }
        self.last_commit = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in self.positions() {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
        }
        if tpl.count() == 0 {
            return;
        }
        let mode = if every.is_zero() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "committing kafka offsets failed");
        }
    }

    /// The topics, group and mode, for messages.
    pub fn describe(&self) -> String {
        format!(
            "kafka {} (group {}, {})",
            self.settings.topics.join(","),
            self.settings.group,
            if self.settings.bounded {
                "bounded"
            } else {
                "unbounded"
            }
        )
    }
}

/// Stops fetching a finished partition: in the direct fetcher (dropping
/// what was buffered of it) or librdkafka.
fn stop(consumer: &BaseConsumer<Ctx>, direct: Option<&mut DirectRead>, key: &(String, i32)) {
    if let Some(d) = direct {
        d.fetcher.remove(&key.0, key.1);
        d.drop_stale();
        return;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::debug!(error = %e, "pausing a finished partition");
    }
}

/// Errors that mean the consumer cannot go on.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::InvalidConfig
        )
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use wafer_test_broker::{Broker, Storage};

    use super::*;

    /// Produces `m{from}..m{to}` to partition 0 of `topic`.
    fn produce(brokers: &str, topic: &str, range: std::ops::Range<i64>) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        for i in range {
            let payload = format!("m{i}");
            let rec = BaseRecord::<(), str>::to(topic).payload(&payload).partition(0);
            producer.send(rec).unwrap();
            // One batch per message: tansu 0.6 reports a batch's base
            // offset as the partition's end, and fetches from inside a
            // batch return nothing.
            producer.flush(Duration::from_secs(30)).unwrap();
        }
    }

    /// Runs a test on both fetch paths: `$name::direct` and
    /// `$name::librdkafka` call `$body` with the path's name.
    macro_rules! on_both_paths {
        ($($name:ident => $body:ident,)*) => {$(
            mod $name {
                #[test]
                fn direct() {
                    super::$body("direct");
                }
                #[test]
                fn librdkafka() {
                    super::$body("librdkafka");
                }
            }
        )*};
    }

    on_both_paths! {
        merged_by_timestamp => partitions_with_a_backlog_are_handed_over_oldest_timestamp_first,
        starts => every_start_reads_from_where_it_says,
        no_linger => a_read_hands_over_what_is_there_without_waiting_out_its_linger,
        lag => lag_is_what_the_broker_holds_beyond_the_readers_position,
        codecs => every_codec_reads_back_what_librdkafka_wrote,
        out_of_range => a_position_beyond_the_end_is_reset_to_the_earliest,
        no_timestamps => messages_without_timestamps_are_merged_too,
    }

    fn settings(
        brokers: &str,
        topic: &str,
        group: &str,
        start: Start,
        bounded: bool,
        fetch: &str,
    ) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            topics: vec![topic.into()],
            group: group.into(),
            start,
            bounded,
            connect_timeout: Duration::from_secs(30),
            properties: vec![("wafer.fetch".into(), fetch.into())],
        }
    }

    fn open(
        brokers: &str,
        topic: &str,
        group: &str,
        start: Start,
        bounded: bool,
        fetch: &str,
    ) -> KafkaReader {
        KafkaReader::open(settings(brokers, topic, group, start, bounded, fetch), Vec::new()).unwrap()
    }

    /// What a reader hands over until it is done (bounded) or quiet for a
    /// second (unbounded).
    fn drain(r: &mut KafkaReader) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            let before = got.len();
            let more = r
                .read(100, Duration::from_millis(100), |m| {
                    got.push(String::from_utf8_lossy(m.payload).into_owned())
                })
                .unwrap();
            if !more {
                break;
            }
            if got.len() > before {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        got
    }

    /// What a bounded reader hands over until it says it is done (within
    /// 30 s, else the test fails).
    fn drain_to_end(r: &mut KafkaReader) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while r
            .read(100, Duration::from_millis(100), |m| {
                got.push(String::from_utf8_lossy(m.payload).into_owned())
            })
            .unwrap()
        {
            assert!(
                Instant::now() < deadline,
                "the bounded reader never finished; it read {got:?}"
            );
        }
        got
    }

    /// Message `i` of the codec test: compressible, of varied length.
    fn padded(i: i64) -> String {
        format!("m{i}-{}", "x".repeat((i % 97) as usize))
    }

    fn every_codec_reads_back_what_librdkafka_wrote(fetch: &str) {
        let broker = Broker::start(Storage::Memory);
        let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
        let topics: Vec<String> = codecs.iter().map(|c| format!("codec-{c}")).collect();
        let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 1)).collect();
        broker.create_topics(&specs);
        for (codec, topic) in codecs.iter().zip(&topics) {
            // Many messages per batch, so batches are compressed as a whole.
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &broker.addr)
                .set("compression.codec", *codec)
                .set("linger.ms", "100")
                .create()
                .unwrap();
            for i in 0..500 {
                let payload = padded(i);
                producer
                    .send(BaseRecord::<(), str>::to(topic).payload(&payload).partition(0))
                    .unwrap();
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            let mut r = open(
                &broker.addr,
                topic,
                &format!("g-{codec}"),
                Start::Earliest,
                true,
                fetch,
            );
            let want: Vec<String> = (0..500).map(padded).collect();
            assert_eq!(drain_to_end(&mut r), want, "{codec}");
        }
    }

    fn messages_without_timestamps_are_merged_too(fetch: &str) {
        // Timestamp -1 (none: old producers, up-converted messages) on two
        // partitions: the merge hands them over in partition runs rather
        // than by time, and must not stall on them.
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("untimed", 2, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for i in 0..20 {
            let payload = format!("m{i}");
            let rec = BaseRecord::<(), str>::to("untimed")
                .payload(&payload)
                .partition(i % 2)
                .timestamp(-1);
            producer.send(rec).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut r = open(&brokers, "untimed", "g-untimed", Start::Earliest, true, fetch);
        // On a thread: a merge that stalls never returns from `read`.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(drain_to_end(&mut r));
        });
        let mut got = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the reader stalled");
        got.sort_by_key(|m| m[1..].parse::<i64>().unwrap_or(-1));
        assert_eq!(got, names(0..20));
    }

    fn a_position_beyond_the_end_is_reset_to_the_earliest(fetch: &str) {
        // A restored position the topic no longer has (it was recreated,
        // or retention passed it): auto.offset.reset (earliest) applies.
        // On librdkafka's mock cluster: tansu answers such a fetch with
        // nothing instead of OFFSET_OUT_OF_RANGE.
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("reset", 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        produce(&brokers, "reset", 0..5);
        let mut r = KafkaReader::open(
            settings(&brokers, "reset", "g-reset", Start::Earliest, false, fetch),
            vec![(("reset".to_string(), 0), 1000)],
        )
        .unwrap();
        // The mock's group joins take seconds: read until all five came.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 5 && Instant::now() < deadline {
            r.read(100, Duration::from_millis(100), |m| {
                got.push(String::from_utf8_lossy(m.payload).into_owned())
            })
            .unwrap();
        }
        assert_eq!(got, names(0..5));
        assert_eq!(r.positions(), vec![(("reset".to_string(), 0), 5)]);
    }

    #[test]
    fn the_merge_takes_the_oldest_head_up_to_the_next_oldest() {
        assert_eq!(oldest([None, None].into_iter()), None);
        // Alone with messages: no bound.
        assert_eq!(oldest([None, Some(5)].into_iter()), Some((1, i64::MAX)));
        assert_eq!(oldest([Some(7), Some(3), Some(5)].into_iter()), Some((1, 5)));
        assert_eq!(
            oldest([Some(3), None, Some(9), Some(4)].into_iter()),
            Some((0, 4))
        );
        // A tie goes to the first, bounded by the other.
        assert_eq!(oldest([Some(4), Some(4)].into_iter()), Some((0, 4)));
        // No timestamp goes first.
        assert_eq!(oldest([Some(1), Some(i64::MIN)].into_iter()), Some((1, 1)));
    }

    fn names(range: std::ops::Range<i64>) -> Vec<String> {
        range.map(|i| format!("m{i}")).collect()
    }

    fn partitions_with_a_backlog_are_handed_over_oldest_timestamp_first(fetch: &str) {
        let broker = Broker::start(Storage::Memory);
        broker.create_topics(&[("merged", 2)]);
        // Message i goes to partition i % 2, stamped base + i: the order
        // the events happened in is 0, 1, 2, ... across the partitions.
        let n = 2000;
        let base = 1_700_000_000_000i64;
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("linger.ms", "100")
            .create()
            .unwrap();
        for i in 0..n {
            let payload = format!("m{i}");
            let rec = BaseRecord::<(), str>::to("merged")
                .payload(&payload)
                .partition((i % 2) as i32)
                .timestamp(base + i);
            producer.send(rec).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut r = open(&broker.addr, "merged", "g-merged", Start::Earliest, true, fetch);
        // Let librdkafka fetch both partitions before the first read, as
        // behind a backlog: fetched one after the other, each partition's
        // messages would otherwise come as one run.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(drain(&mut r), names(0..n));
    }

    fn every_start_reads_from_where_it_says(fetch: &str) {
        let broker = Broker::start(Storage::Memory);
        broker.create_topics(&[("starts", 1)]);
        produce(&broker.addr, "starts", 0..5);
        // Messages are stamped when produced (and tansu looks times up by
        // when it stored them): m5 is the first after `middle`.
        std::thread::sleep(Duration::from_millis(100));
        let middle = wafer_core::time::now_ms();
        std::thread::sleep(Duration::from_millis(100));
        produce(&broker.addr, "starts", 5..10);
        // The group's committed offset, else the earliest.
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", "g-committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("starts", 0, Offset::Offset(7)).unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
        for bounded in [true, false] {
            let b = if bounded { "bounded" } else { "unbounded" };
            let mut r = open(
                &broker.addr,
                "starts",
                "g-committed",
                Start::Committed,
                bounded,
                fetch,
            );
            assert_eq!(drain(&mut r), names(7..10), "committed ({b})");
            let mut r = open(
                &broker.addr,
                "starts",
                &format!("g-none-{b}"),
                Start::Committed,
                bounded,
                fetch,
            );
            assert_eq!(drain(&mut r), names(0..10), "no commit: earliest ({b})");
            let mut r = open(
                &broker.addr,
                "starts",
                &format!("g-e-{b}"),
                Start::Earliest,
                bounded,
                fetch,
            );
            assert_eq!(drain(&mut r), names(0..10), "earliest ({b})");
            let mut r = open(
                &broker.addr,
                "starts",
                &format!("g-t-{b}"),
                Start::Timestamp(middle),
                bounded,
                fetch,
            );
            assert_eq!(drain(&mut r), names(5..10), "timestamp ({b})");
        }
        // Latest: only what is produced from now on (nothing, bounded).
        let mut r = open(&broker.addr, "starts", "g-l-bounded", Start::Latest, true, fetch);
        assert_eq!(drain(&mut r), Vec::<String>::new(), "latest (bounded)");
        let mut r = open(
            &broker.addr,
            "starts",
            "g-l-unbounded",
            Start::Latest,
            false,
            fetch,
        );
        assert_eq!(drain(&mut r), Vec::<String>::new(), "latest (unbounded), before");
        produce(&broker.addr, "starts", 10..13);
        assert_eq!(drain(&mut r), names(10..13), "latest (unbounded), after");
    }

    fn a_read_hands_over_what_is_there_without_waiting_out_its_linger(fetch: &str) {
        // Five messages and a read asking for a thousand with a two-minute
        // linger: the read hands the five over (and the bounded reader
        // ends) as soon as they are there. librdkafka's batch consume,
        // asked with the linger as its timeout, would have held them for
        // all of it, so the answer would come two minutes late: a minute
        // is the generous limit here, not a speed measure.
        let broker = Broker::start(Storage::Memory);
        broker.create_topics(&[("short", 1)]);
        produce(&broker.addr, "short", 0..5);
        let mut r = open(&broker.addr, "short", "g-short", Start::Earliest, true, fetch);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while r
                .read(1000, Duration::from_secs(120), |m| {
                    got.push(String::from_utf8_lossy(m.payload).into_owned())
                })
                .unwrap()
            {}
            let _ = tx.send(got);
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(got, Ok(names(0..5)), "the reader held its messages back");
    }

    fn lag_is_what_the_broker_holds_beyond_the_readers_position(fetch: &str) {
        let broker = Broker::start(Storage::Memory);
        broker.create_topics(&[("lagging", 1)]);
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .create()
            .unwrap();
        for i in 0..100 {
            producer
                .send(BaseRecord::<(), str>::to("lagging").payload(&format!("m{i}")))
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut reader = KafkaReader::open(
            KafkaSettings {
                brokers: broker.addr.clone(),
                topics: vec!["lagging".into()],
                group: "lag-test".into(),
                start: Start::Earliest,
                bounded: false,
                connect_timeout: Duration::from_secs(30),
                properties: vec![
                    ("statistics.interval.ms".into(), "100".into()),
                    ("wafer.fetch".into(), fetch.into()),
                ],
            },
            Vec::new(),
        )
        .unwrap();
        // One message at a time until the statistics have the end, and
        // then a few more: the lag follows the reader.
        let (mut read, mut seen) = (0i64, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 5 && Instant::now() < deadline {
            reader.read(1, Duration::from_millis(150), |_| read += 1).unwrap();
            if let [(p, lag)] = reader.lag().as_slice() {
                assert_eq!(*p, ("lagging".to_string(), 0));
                seen.push((read, *lag));
            }
        }
        assert_eq!(seen.len(), 5, "no lag reported");
        for (read, lag) in seen {
            assert_eq!(lag, 100 - read, "lag after reading {read}");
        }
    }
}
