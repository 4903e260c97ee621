//! The direct fetch path: Fetch requests sent by the host itself, one
//! thread per partition leader, record batches decoded by
//! [`crate::kafka_wire`] and handed to the reader one chunk per partition
//! per response.
//!
//! librdkafka still does everything else (bootstrap, metadata, the group
//! protocol, offset lookups and commits), and does the fetching too where
//! this path does not apply (TLS or SASL; see `KafkaReader`). Why fetch
//! ourselves: librdkafka allocates, queues, locks and frees an op per
//! message, ~0.23 CPU-s per million messages on the machine the benchmarks
//! run on; here the per-message work is decoding a record's varints.
//!
//! Ordering: a partition has at most one fetch in flight, and its chunk is
//! queued before the next fetch of it may start, so chunks of a partition
//! reach the reader in offset order even when its leader moves. Every
//! (re)assignment or seek bumps the partition's generation; chunks of an
//! older generation are dropped by the reader.
//!
//! Failures: a connection that breaks is reopened with a growing pause and
//! the reader is asked to refresh metadata (the leader may have moved);
//! partition errors that mean "not the leader" do the same; an offset out
//! of range is handed to the reader to reset; authorization failures are
//! fatal.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::kafka_wire::{self as wire, FetchPartition, FetchRequest, Records};

/// How the fetches are made.
#[derive(Debug, Clone)]
pub(crate) struct FetchConfig {
    /// Sent as the client id.
    pub client_id: String,
    /// How long the broker may hold a fetch that has less than `min_bytes`.
    pub max_wait_ms: i32,
    /// Bytes a fetch waits for.
    pub min_bytes: i32,
    /// Most bytes per response.
    pub max_bytes: i32,
    /// Most bytes per partition per response.
    pub partition_max_bytes: i32,
    /// Only committed transactional messages.
    pub read_committed: bool,
    /// Report a partition's end (bounded readers).
    pub eof: bool,
    /// Chunks queued for the reader before fetching pauses.
    pub queued_chunks: usize,
    /// Bytes of records fetched but not yet handed over (or dropped) above
    /// which no new fetch starts (librdkafka's
    /// `queued.max.messages.kbytes`).
    pub queued_bytes: usize,
}

/// What one fetch brought for one partition.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The partition's index in the fetcher.
    pub part: usize,
    /// The generation it was fetched for.
    pub generation: u64,
    /// Its records.
    pub records: Records,
    /// Where the partition's next fetch starts (past skipped batches too).
    pub next: i64,
    /// The partition had nothing more: the fetch reached its end.
    pub eof: bool,
    /// Its bytes' share of the fetcher's budget, given back when the chunk
    /// is dropped (handed over, stale, or left at shutdown).
    _budget: Budget,
}

/// Bytes of a chunk counted against [`FetchConfig::queued_bytes`].
struct Budget {
    shared: Arc<Shared>,
    bytes: usize,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({} bytes)", self.bytes)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let limit = self.shared.config.queued_bytes;
        let before = self.shared.queued.fetch_sub(self.bytes, Ordering::AcqRel);
        if before > limit && before - self.bytes <= limit {
            // Under the lock, so a broker thread between its check and its
            // wait cannot miss it.
            let _st = self.shared.lock();
            self.shared.changed.notify_all();
        }
    }
}

/// Why the fetcher cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kafka fetch: {0}")]
pub(crate) struct FetchError(String);

/// A partition whose offset was out of range, as of the fetch that found
/// it (see [`Fetcher::reset`]).
#[derive(Debug, Clone)]
pub(crate) struct Reset {
    pub part: usize,
    pub generation: u64,
    pub topic: String,
    pub partition: i32,
}

/// One partition as the fetcher sees it.
struct Part {
    topic: Arc<str>,
    partition: i32,
    /// The next offset to fetch.
    offset: i64,
    generation: u64,
    active: bool,
    /// The leader's node id, if known.
    leader: Option<i32>,
    /// A fetch of it is in flight (or its chunk not yet queued).
    busy: bool,
    /// Its offset is out of range: waits for the reader to seek.
    reset: bool,
    /// Its last fetch reported its end.
    at_eof: bool,
    /// Not fetched again before this.
    retry_at: Option<Instant>,
    /// Its end as of the last response (-1: none yet).
    end: i64,
    /// Most bytes asked of it per fetch: doubled while a response holds
    /// only part of its next batch (a broker without KIP-74).
    max_bytes: i32,
}

impl Part {
    /// Fetches it from `offset` on, as a new generation: what was fetched
    /// before is stale, and an end, reset or retry pause no longer holds.
    fn seek(&mut self, offset: i64) {
        self.offset = offset;
        self.generation += 1;
        self.active = true;
        self.reset = false;
        self.at_eof = false;
        self.retry_at = None;
    }
}

#[derive(Default)]
struct State {
    parts: Vec<Part>,
    /// Node id to `host:port`.
    brokers: HashMap<i32, String>,
    /// Nodes that have a thread.
    threads: Vec<i32>,
    /// Open connections, for shutting them down on drop.
    sockets: HashMap<i32, TcpStream>,
    /// Metadata is wanted (a leader moved or is unknown).
    stale: bool,
    /// Partitions whose offset was out of range, with their generation.
    resets: Vec<(usize, u64)>,
    /// Fatal errors.
    errors: Vec<FetchError>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Bytes of chunks not yet dropped (see [`Budget`]).
    queued: AtomicUsize,
    /// Wakes broker threads: partitions or leaders changed, or stop.
    changed: Condvar,
    config: FetchConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fetcher: partitions in, chunks out.
pub(crate) struct Fetcher {
    shared: Arc<Shared>,
    tx: Sender<Chunk>,
    rx: Receiver<Chunk>,
}

impl Fetcher {
    pub(crate) fn new(config: FetchConfig) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(config.queued_chunks.max(1));
        Fetcher {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                queued: AtomicUsize::new(0),
                changed: Condvar::new(),
                config,
            }),
            tx,
            rx,
        }
    }

    /// Starts (or restarts) fetching a partition at `offset`. Returns its
    /// index.
    pub(crate) fn add(&self, topic: &str, partition: i32, offset: i64) -> usize {
        let mut st = self.shared.lock();
        let i = match st
            .parts
            .iter()
            .position(|p| &*p.topic == topic && p.partition == partition)
        {
            Some(i) => i,
            None => {
                st.parts.push(Part {
                    topic: Arc::from(topic),
                    partition,
                    offset,
                    generation: 0,
                    active: false,
                    leader: None,
                    busy: false,
                    reset: false,
                    at_eof: false,
                    retry_at: None,
                    end: -1,
                    max_bytes: self.shared.config.partition_max_bytes,
                });
                st.stale = true;
                st.parts.len() - 1
            }
        };
        st.parts[i].seek(offset);
        drop(st);
        self.shared.changed.notify_all();
        i
    }

    /// Stops fetching a partition (chunks already queued are stale).
    pub(crate) fn remove(&self, topic: &str, partition: i32) {
        let mut st = self.shared.lock();
        if let Some(p) = st
            .parts
            .iter_mut()
            .find(|p| &*p.topic == topic && p.partition == partition)
        {
            p.active = false;
            p.reset = false;
            p.generation += 1;
        }
    }

    /// The partition of index `part` and its generation if it is fetched.
    pub(crate) fn current(&self, part: usize) -> Option<((Arc<str>, i32), u64)> {
        let st = self.shared.lock();
        let p = st.parts.get(part)?;
        p.active.then(|| ((p.topic.clone(), p.partition), p.generation))
    }

    /// The partitions fetched, for metadata requests.
    pub(crate) fn topics(&self) -> Vec<String> {
        let st = self.shared.lock();
        let mut t: Vec<String> = st.parts.iter().map(|p| p.topic.to_string()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Each fetched partition's end as of its last response (last stable
    /// offset when reading committed, else the high watermark).
    pub(crate) fn ends(&self) -> Vec<((String, i32), i64)> {
        let st = self.shared.lock();
        st.parts
            .iter()
            .filter(|p| p.active && p.end >= 0)
            .map(|p| ((p.topic.to_string(), p.partition), p.end))
            .collect()
    }

    /// Whether metadata is wanted; clears the request.
    pub(crate) fn take_stale(&self) -> bool {
        std::mem::take(&mut self.shared.lock().stale)
    }

    /// Partitions whose offset was out of range and that still wait for a
    /// reset (not re-seeked or removed since).
    pub(crate) fn take_resets(&self) -> Vec<Reset> {
        let mut st = self.shared.lock();
        let resets = std::mem::take(&mut st.resets);
        resets
            .into_iter()
            .filter_map(|(i, generation)| {
                let p = st.parts.get(i)?;
                (p.active && p.reset && p.generation == generation).then(|| Reset {
                    part: i,
                    generation,
                    topic: p.topic.to_string(),
                    partition: p.partition,
                })
            })
            .collect()
    }

    /// Resets a partition found out of range to `offset`, unless it was
    /// re-seeked or removed since. Returns whether it did.
    pub(crate) fn reset(&self, r: &Reset, offset: i64) -> bool {
        let mut st = self.shared.lock();
        let Some(p) = st.parts.get_mut(r.part) else {
            return false;
        };
        if !(p.active && p.reset && p.generation == r.generation) {
            return false;
        }
        p.seek(offset);
        drop(st);
        self.shared.changed.notify_all();
        true
    }

    /// The first fatal error, if any.
    pub(crate) fn error(&self) -> Option<FetchError> {
        self.shared.lock().errors.first().cloned()
    }

    /// New metadata: brokers (node id, host, port) and partition leaders
    /// (-1: none). Starts a thread for every leader without one.
    pub(crate) fn set_metadata(&self, brokers: &[(i32, String, i32)], leaders: &[(String, i32, i32)]) {
        let mut st = self.shared.lock();
        for (id, host, port) in brokers {
            st.brokers.insert(*id, format!("{host}:{port}"));
        }
        let mut unknown = false;
        for p in &mut st.parts {
            if let Some(&(_, _, leader)) = leaders
                .iter()
                .find(|(t, n, _)| **t == *p.topic && *n == p.partition)
            {
                p.leader = (leader >= 0).then_some(leader);
            }
            unknown |= p.active && p.leader.is_none();
        }
        st.stale |= unknown;
        let wanted: Vec<i32> = st
            .parts
            .iter()
            .filter_map(|p| p.leader)
            .filter(|l| st.brokers.contains_key(l))
            .collect();
        for node in wanted {
            if !st.threads.contains(&node) {
                st.threads.push(node);
                let (shared, tx) = (self.shared.clone(), self.tx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("wafer-fetch-{node}"))
                    .spawn(move || {
                        let run = std::panic::AssertUnwindSafe(|| broker_thread(&shared, node, &tx));
                        if let Err(panic) = std::panic::catch_unwind(run) {
                            // Its partitions would wait forever: fail loudly.
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            let mut st = shared.lock();
                            st.threads.retain(|&n| n != node);
                            st.errors.push(FetchError(format!(
                                "the fetch thread of broker {node} panicked: {what}"
                            )));
                        }
                    });
                if let Err(e) = spawned {
                    st.threads.retain(|&n| n != node);
                    tracing::error!(node, error = %e, "cannot start a kafka fetch thread");
                }
            }
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// The next chunk, waiting until `until` at most.
    pub(crate) fn recv(&self, until: Instant) -> Option<Chunk> {
        self.rx.recv_deadline(until).ok()
    }

    /// The next chunk if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Chunk> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.stop = true;
        // Threads blocked on a response return at once.
        for s in st.sockets.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        drop(st);
        self.shared.changed.notify_all();
        // Threads blocked on a full queue return once it is gone.
        while self.rx.try_recv().is_ok() {}
    }
}

/// A connection to one broker.
struct Conn {
    stream: TcpStream,
    correlation: i32,
    version: i16,
    out: Vec<u8>,
    frame: Vec<u8>,
    /// Largest response size accepted.
    limit: usize,
}

/// Why a fetch failed.
enum Failure {
    /// The connection: reconnect and retry.
    Io(std::io::Error),
    /// Retrying cannot help (the broker's protocol versions).
    Fatal(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl Conn {
    /// Connects to `addr` and registers the socket so that the fetcher's
    /// drop can shut it down, then agrees on a Fetch version.
    fn open(addr: &str, config: &FetchConfig, shared: &Shared, node: i32) -> Result<Self, Failure> {
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("`{addr}` resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        // A held fetch answers within max_wait; allow the broker that much
        // plus a generous round trip.
        stream.set_read_timeout(Some(
            Duration::from_millis(config.max_wait_ms.max(0) as u64) + Duration::from_secs(30),
        ))?;
        {
            let mut st = shared.lock();
            if st.stop {
                return Err(Failure::Io(std::io::Error::other("stopping")));
            }
            st.sockets.insert(node, stream.try_clone()?);
        }
        let mut conn = Conn {
            stream,
            correlation: 0,
            version: wire::FETCH_MIN,
            out: Vec::new(),
            frame: Vec::new(),
            limit: 0,
        };
        // The largest response taken: librdkafka's receive.message.max.bytes
        // default, or twice what a fetch may ask for. A bigger size is not
        // a Kafka response (a TLS alert read as a size, say).
        conn.limit = 100_000_000usize.max(2 * config.max_bytes.max(0) as usize);
        let body = conn
            .roundtrip(wire::API_VERSIONS, 0, &[], &config.client_id)?
            .to_vec();
        let range = wire::fetch_versions(&body).map_err(std::io::Error::other)?;
        conn.version = match range {
            Some((min, max)) if min <= wire::FETCH_MAX && max >= wire::FETCH_MIN => max.min(wire::FETCH_MAX),
            other => {
                return Err(Failure::Fatal(format!(
                    "broker {addr} speaks Fetch versions {other:?}, the direct fetch path {}..={}; set `wafer.fetch = librdkafka`",
                    wire::FETCH_MIN,
                    wire::FETCH_MAX
                )));
            }
        };
        Ok(conn)
    }

    /// Sends a request and reads its response's body.
    fn roundtrip(&mut self, api: i16, version: i16, body: &[u8], client_id: &str) -> std::io::Result<&[u8]> {
        self.correlation = self.correlation.wrapping_add(1);
        self.out.clear();
        wire::request(&mut self.out, api, version, self.correlation, client_id, body);
        self.stream.write_all(&self.out)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|&n| n <= self.limit)
            .ok_or_else(|| {
                std::io::Error::other(format!("response size {size:?} is not a Kafka response's"))
            })?;
        self.frame.resize(size, 0);
        self.stream.read_exact(&mut self.frame)?;
        let (id, body) = wire::response(&self.frame).map_err(std::io::Error::other)?;
        if id != self.correlation {
            return Err(std::io::Error::other(format!(
                "response {id} to request {}",
                self.correlation
            )));
        }
        Ok(body)
    }
}

/// A partition in a fetch: index, generation, offset.
type Asked = (usize, u64, i64);

/// Fetches the active partitions led by `node` until the fetcher stops.
fn broker_thread(shared_arc: &Arc<Shared>, node: i32, tx: &Sender<Chunk>) {
    let shared: &Shared = shared_arc;
    let config = &shared.config;
    let mut conn: Option<Conn> = None;
    let mut pause = Duration::from_millis(100);
    let mut body = Vec::new();
    // Which partition leads the next request.
    let mut turn = 0usize;
    loop {
        // The partitions to fetch, marked busy.
        let (addr, asked, topics) = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return;
                }
                // The reader is behind: wait until it took enough.
                if shared.queued.load(Ordering::Acquire) > config.queued_bytes {
                    st = match shared.changed.wait_timeout(st, Duration::from_millis(100)) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                    continue;
                }
                let now = Instant::now();
                let mut asked: Vec<Asked> = st
                    .parts
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.active
                            && p.leader == Some(node)
                            && !p.busy
                            && !p.reset
                            && p.retry_at.is_none_or(|t| t <= now)
                    })
                    .map(|(i, p)| (i, p.generation, p.offset))
                    .collect();
                if let (false, Some(addr)) = (asked.is_empty(), st.brokers.get(&node).cloned()) {
                    // Each request leads with another partition, as Kafka's
                    // own clients do: a broker fills a response in request
                    // order, and some (tansu) give the first partition all
                    // of it until it is drained, which would read
                    // partitions one after another instead of together.
                    let n = asked.len();
                    asked.rotate_left(turn % n);
                    turn = turn.wrapping_add(1);
                    let mut topics: Vec<(Arc<str>, Vec<FetchPartition>)> = Vec::new();
                    for &(i, _, offset) in &asked {
                        let p = &mut st.parts[i];
                        p.busy = true;
                        let fp = FetchPartition {
                            partition: p.partition,
                            offset,
                            max_bytes: p.max_bytes,
                        };
                        match topics.iter_mut().find(|(t, _)| *t == p.topic) {
                            Some((_, v)) => v.push(fp),
                            None => topics.push((p.topic.clone(), vec![fp])),
                        }
                    }
                    break (addr, asked, topics);
                }
                st = match shared.changed.wait_timeout(st, Duration::from_millis(100)) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
        };
        let result = fetch(&mut conn, &addr, shared, node, &topics, &mut body);
        let chunks = match result {
            Ok(parts) => {
                pause = Duration::from_millis(100);
                settle(shared_arc, node, &asked, parts)
            }
            Err(failure) => {
                conn = None;
                let mut st = shared.lock();
                st.sockets.remove(&node);
                match failure {
                    Failure::Io(e) => {
                        if !st.stop {
                            tracing::warn!(broker = %addr, error = %e, "kafka fetch failed; reconnecting");
                        }
                        st.stale = true;
                    }
                    Failure::Fatal(e) => st.errors.push(FetchError(e)),
                }
                let retry = Instant::now() + pause;
                for &(i, ..) in &asked {
                    st.parts[i].retry_at = Some(retry);
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                Vec::new()
            }
        };
        // Queue the chunks before the partitions may be fetched again.
        let mut gone = false;
        for chunk in chunks {
            gone |= tx.send(chunk).is_err();
        }
        let mut st = shared.lock();
        for &(i, ..) in &asked {
            st.parts[i].busy = false;
        }
        if gone || st.stop {
            return;
        }
    }
}

/// Decoded partitions of one fetch response: index in `topics`' order is
/// not kept, so each carries its names.
type Fetched = Vec<(Arc<str>, i32, Result<Response, PartError>)>;

/// One partition's part of a response.
struct Response {
    records: Records,
    high_watermark: i64,
    last_stable: i64,
    /// The records held only part of a batch: nothing to hand over, and
    /// the next fetch must ask for more.
    partial: bool,
}

/// Why a partition's part of a response is not records.
enum PartError {
    /// The broker's error code.
    Code(i16),
    /// Its records do not decode (corrupt, or a format this path does not
    /// read): retrying the same offset would fail the same way.
    Decode(String),
}

/// One fetch on `conn` (opened first if needed).
fn fetch(
    conn: &mut Option<Conn>,
    addr: &str,
    shared: &Shared,
    node: i32,
    topics: &[(Arc<str>, Vec<FetchPartition>)],
    body: &mut Vec<u8>,
) -> Result<Fetched, Failure> {
    let config = &shared.config;
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Conn::open(addr, config, shared, node)?),
    };
    if shared.lock().stop {
        return Err(Failure::Io(std::io::Error::other("stopping")));
    }
    let request = FetchRequest {
        max_wait_ms: config.max_wait_ms,
        min_bytes: config.min_bytes,
        max_bytes: config.max_bytes,
        read_committed: config.read_committed,
        topics: topics.iter().map(|(t, p)| (&**t, p.clone())).collect(),
    };
    body.clear();
    wire::fetch_body(body, c.version, &request);
    let version = c.version;
    let response = c.roundtrip(wire::API_FETCH, version, body, &config.client_id)?;
    let (top, parts) = wire::fetch_response(version, response).map_err(std::io::Error::other)?;
    if top != 0 {
        return Err(Failure::Io(std::io::Error::other(format!(
            "fetch error code {top}"
        ))));
    }
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let Some((topic, asked)) = topics.iter().find(|(t, _)| **t == *p.topic) else {
            continue;
        };
        let Some(from) = asked
            .iter()
            .find(|a| a.partition == p.partition)
            .map(|a| a.offset)
        else {
            continue;
        };
        if p.error != 0 {
            out.push((topic.clone(), p.partition, Err(PartError::Code(p.error))));
            continue;
        }
        let mut records = Records::default();
        let result =
            match wire::decode_records(p.records, from, config.read_committed, &p.aborted, &mut records) {
                Ok(()) => Ok(Response {
                    partial: records.next.is_none() && !p.records.is_empty(),
                    records,
                    high_watermark: p.high_watermark,
                    last_stable: p.last_stable,
                }),
                Err(e) => Err(PartError::Decode(format!(
                    "{}/{} at offset {from}: {e}",
                    p.topic, p.partition
                ))),
            };
        out.push((topic.clone(), p.partition, result));
    }
    Ok(out)
}

/// Kafka error codes that mean "ask someone else" (metadata is stale) or
/// "try again shortly".
const RETRIABLE: &[i16] = &[
    3,  // UNKNOWN_TOPIC_OR_PARTITION
    5,  // LEADER_NOT_AVAILABLE
    6,  // NOT_LEADER_OR_FOLLOWER
    9,  // REPLICA_NOT_AVAILABLE
    13, // NETWORK_EXCEPTION
    56, // KAFKA_STORAGE_ERROR
    74, // FENCED_LEADER_EPOCH
    75, // UNKNOWN_LEADER_EPOCH
    78, // OFFSET_NOT_AVAILABLE
];

/// Applies a response to the partitions it was for and returns the chunks
/// to queue: records, a moved offset, or a newly reached end.
fn settle(shared: &Arc<Shared>, node: i32, asked: &[Asked], fetched: Fetched) -> Vec<Chunk> {
    let config = &shared.config;
    let mut st = shared.lock();
    let mut chunks = Vec::new();
    for (topic, partition, result) in fetched {
        let Some(&(i, generation, from)) = asked.iter().find(|(i, ..)| {
            st.parts
                .get(*i)
                .is_some_and(|p| p.topic == topic && p.partition == partition)
        }) else {
            continue;
        };
        let p = &mut st.parts[i];
        // Re-seeked, removed or moved while the fetch was out.
        if !p.active || p.generation != generation || p.offset != from {
            continue;
        }
        match result {
            Ok(r) if r.partial => {
                // A broker that does not return a whole first batch
                // (before KIP-74): ask for more next time, up to the
                // response's limit.
                let more = p
                    .max_bytes
                    .saturating_mul(2)
                    .min(config.max_bytes.max(p.max_bytes));
                if more == p.max_bytes {
                    p.active = false;
                    st.errors.push(FetchError(format!(
                        "{topic}/{partition} at offset {from}: a record batch larger than fetch.max.bytes ({})",
                        config.max_bytes
                    )));
                } else {
                    tracing::warn!(%topic, partition, bytes = more, "kafka fetch: a batch beyond max.partition.fetch.bytes; asking for more");
                    p.max_bytes = more;
                }
            }
            Ok(r) => {
                let end = if config.read_committed && r.last_stable >= 0 {
                    r.last_stable
                } else {
                    r.high_watermark
                };
                let next = r.records.next.unwrap_or(from).max(from);
                let eof = config.eof && r.records.recs.is_empty() && next >= end && !p.at_eof;
                p.at_eof = next >= end && r.records.recs.is_empty();
                p.offset = next;
                p.end = end;
                if next > from {
                    p.max_bytes = config.partition_max_bytes;
                }
                if !r.records.recs.is_empty() || next > from || eof {
                    // Capacity, not length: that is what is held.
                    let bytes = r.records.bufs.iter().map(Vec::capacity).sum();
                    shared.queued.fetch_add(bytes, Ordering::AcqRel);
                    chunks.push(Chunk {
                        _budget: Budget {
                            shared: shared.clone(),
                            bytes,
                        },
                        part: i,
                        generation,
                        records: r.records,
                        next,
                        eof,
                    });
                }
            }
            Err(PartError::Code(1)) => {
                // OFFSET_OUT_OF_RANGE: the reader resets it.
                p.reset = true;
                st.resets.push((i, generation));
            }
            Err(PartError::Code(code @ (29 | 31))) => {
                // TOPIC_ or CLUSTER_AUTHORIZATION_FAILED: retrying will not help.
                p.active = false;
                st.errors.push(FetchError(format!(
                    "{topic}/{partition}: not authorized to read it (error code {code})"
                )));
            }
            Err(PartError::Decode(e)) => {
                p.active = false;
                st.errors.push(FetchError(e));
            }
            Err(PartError::Code(code)) => {
                if RETRIABLE.contains(&code) {
                    tracing::debug!(%topic, partition, node, code, "kafka fetch: leader moved or unavailable");
                } else {
                    tracing::warn!(%topic, partition, node, code, "kafka fetch error; retrying");
                }
                p.retry_at = Some(Instant::now() + Duration::from_millis(200));
                st.stale = true;
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    //! The fetcher against a scripted broker on loopback: the failures no
    //! real broker here produces on demand (corrupt batches, offsets out of
    //! range, partial batches, dropped connections). Frames are built by
    //! hand from the protocol's layout, not with `kafka_wire`.

    use std::net::TcpListener;

    use super::*;
    use crate::kafka_wire::tests::batch;

    /// A request as the fake broker saw it: api key, version, body.
    type Seen = Arc<Mutex<Vec<(i16, i16, Vec<u8>)>>>;

    /// Serves connections on loopback: ApiVersions (v0) grants Fetch v4;
    /// every Fetch is answered with `respond(n)` (n counts fetches), a
    /// partition-0 entry of topic `t` (error code, high watermark,
    /// records), or `None` to drop the connection.
    fn fake(
        respond: impl Fn(usize) -> Option<(i16, i64, Vec<u8>)> + Send + Sync + 'static,
    ) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let respond = Arc::new(respond);
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let (log, respond, fetches) = (log.clone(), respond.clone(), fetches.clone());
                std::thread::spawn(move || {
                    loop {
                        let mut size = [0u8; 4];
                        if s.read_exact(&mut size).is_err() {
                            return;
                        }
                        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
                        s.read_exact(&mut frame).unwrap();
                        let api = i16::from_be_bytes([frame[0], frame[1]]);
                        let version = i16::from_be_bytes([frame[2], frame[3]]);
                        let correlation = &frame[4..8];
                        let id_len = i16::from_be_bytes([frame[8], frame[9]]) as usize;
                        let body = frame[10 + id_len..].to_vec();
                        log.lock().unwrap().push((api, version, body));
                        let mut out = Vec::new();
                        if api == 18 {
                            out.extend(0i16.to_be_bytes());
                            out.extend(1i32.to_be_bytes());
                            out.extend([0, 1, 0, 4, 0, 4]); // Fetch 4..=4
                        } else {
                            let n = fetches.fetch_add(1, Ordering::SeqCst);
                            let Some((error, hw, records)) = respond(n) else {
                                return;
                            };
                            out.extend(0i32.to_be_bytes()); // throttle
                            out.extend(1i32.to_be_bytes());
                            out.extend(1i16.to_be_bytes());
                            out.push(b't');
                            out.extend(1i32.to_be_bytes());
                            out.extend(0i32.to_be_bytes()); // partition
                            out.extend(error.to_be_bytes());
                            out.extend(hw.to_be_bytes());
                            out.extend(hw.to_be_bytes()); // last stable
                            out.extend((-1i32).to_be_bytes()); // no aborted
                            out.extend((records.len() as i32).to_be_bytes());
                            out.extend(records);
                        }
                        let mut frame = ((out.len() + 4) as i32).to_be_bytes().to_vec();
                        frame.extend(correlation);
                        frame.extend(out);
                        if s.write_all(&frame).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr.port().to_string(), seen)
    }

    fn fetcher(port: &str, partition_max_bytes: i32) -> Fetcher {
        let f = Fetcher::new(FetchConfig {
            client_id: "test".into(),
            max_wait_ms: 10,
            min_bytes: 1,
            max_bytes: 4 * partition_max_bytes,
            partition_max_bytes,
            read_committed: true,
            eof: true,
            queued_chunks: 4,
            queued_bytes: 1 << 20,
        });
        f.add("t", 0, 0);
        f.set_metadata(
            &[(1, "127.0.0.1".into(), port.parse().unwrap())],
            &[("t".into(), 0, 1)],
        );
        f
    }

    /// The (offset, max bytes) of partition 0 in each Fetch (v4) seen.
    fn asked(seen: &Seen) -> Vec<(i64, i32)> {
        // replica, max wait, min bytes, max bytes (16), isolation (1),
        // topic count (4), "t" (3), partition count (4), partition (4).
        let at = 16 + 1 + 4 + 3 + 4 + 4;
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(api, ..)| *api == 1)
            .map(|(_, _, b)| {
                let offset = i64::from_be_bytes(b[at..at + 8].try_into().unwrap());
                let max = i32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap());
                (offset, max)
            })
            .collect()
    }

    fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "no {what} within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn records_that_do_not_decode_fail_the_fetcher_naming_partition_and_offset() {
        // An lz4 batch whose data is not lz4.
        let mut records = batch(0, 0, &[Some(b"abc")], 0, -1, false);
        records[22] |= 3;
        let (port, _) = fake(move |_| Some((0, 1, records.clone())));
        let f = fetcher(&port, 1 << 16);
        let e = wait_for("error", || f.error()).to_string();
        assert!(e.contains("t/0 at offset 0") && e.contains("lz4"), "{e}");
        assert!(f.current(0).is_none(), "the partition is still fetched");
    }

    #[test]
    fn an_offset_out_of_range_waits_for_a_reset_of_its_own_generation() {
        let data = batch(7, 0, &[Some(b"x")], 0, -1, false);
        let (port, seen) = fake(move |n| {
            Some(if n == 0 {
                (1, 8, Vec::new())
            } else {
                (0, 8, data.clone())
            })
        });
        let f = fetcher(&port, 1 << 16);
        let r = wait_for("reset", || f.take_resets().pop());
        assert_eq!((r.topic.as_str(), r.partition), ("t", 0));
        // Not fetched while it waits.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(asked(&seen), vec![(0, 1 << 16)]);
        // A reset for an older generation (the partition was re-seeked
        // since) does nothing; one for the current generation applies.
        let stale = Reset {
            generation: r.generation - 1,
            ..r.clone()
        };
        assert!(!f.reset(&stale, 3));
        assert!(f.reset(&r, 7));
        let chunk = wait_for("chunk", || f.try_recv());
        assert_eq!(
            chunk.records.recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![7]
        );
        assert_eq!(chunk.next, 8);
        assert_eq!(asked(&seen)[1], (7, 1 << 16));
        // Nor does a reset of a partition removed meanwhile.
        f.remove("t", 0);
        assert!(!f.reset(&r, 0));
    }

    #[test]
    fn a_response_with_only_part_of_a_batch_doubles_what_is_asked() {
        // A broker before KIP-74 answers with what fits: part of a batch.
        let whole = batch(0, 0, &[Some(&[b'v'; 3000][..])], 0, -1, false);
        let (port, seen) = fake(move |n| {
            let fits = 1024usize << n;
            Some((0, 1, whole[..whole.len().min(fits)].to_vec()))
        });
        let f = fetcher(&port, 1024);
        let chunk = wait_for("chunk", || f.try_recv());
        assert_eq!(chunk.records.recs.len(), 1);
        assert_eq!(chunk.next, 1);
        let sizes: Vec<i32> = asked(&seen).iter().map(|a| a.1).collect();
        assert_eq!(&sizes[..3], &[1024, 2048, 4096]);
        // Back to the configured size once it moved on.
        wait_for("next fetch", || (asked(&seen).len() > 3).then_some(()));
        assert_eq!(asked(&seen)[3], (1, 1024));
    }

    #[test]
    fn a_dropped_connection_is_reopened_and_the_fetch_retried() {
        let data = batch(0, 0, &[Some(b"a"), Some(b"b")], 0, -1, false);
        let (port, seen) = fake(move |n| (n > 0).then(|| (0, 2, data.clone())));
        let f = fetcher(&port, 1 << 16);
        let chunk = wait_for("chunk", || f.try_recv());
        assert_eq!(chunk.records.recs.len(), 2);
        // Two handshakes: the first connection was dropped mid-fetch.
        let versions = seen.lock().unwrap().iter().filter(|(api, ..)| *api == 18).count();
        assert_eq!(versions, 2);
        assert_eq!(asked(&seen)[..2], [(0, 1 << 16), (0, 1 << 16)]);
        assert!(f.take_stale(), "a dropped connection asks for metadata");
    }
}
