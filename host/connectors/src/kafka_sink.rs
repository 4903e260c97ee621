//! The Kafka sink: each output's JSON lines become messages of a topic,
//! keyed by the entity so that all records of one key land in one partition.
//!
//! Workers hand over buffers of complete lines through the same
//! [`OutputWriter`] the file sink uses; a thread per output produces them.
//! The message key is read from the row's key fields (the job's `key_by` by
//! default): one field gives its string value, several a JSON array, and a
//! row without them (a dead letter) has no key. Partitioning uses murmur2,
//! like the Java client, so Java consumers and Kafka Streams agree on where
//! a key lives.
//!
//! Delivery: librdkafka retries transient failures; a message that still
//! fails is never dropped silently: the sink counts it and the job ends with
//! an error naming the output. `exactly-once` produces inside Kafka
//! transactions, so read-committed consumers see each record once. With
//! checkpoints a transaction holds one checkpoint epoch of every Kafka
//! output and commits once the checkpoint is complete ([`crate::kafka_txn`]);
//! without, each output commits its own every `commit_interval` and at the
//! end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::kafka_txn::{SinkProducer, Transactions};
use crate::output::{EpochGate, Event, OutputThreads, OutputWriter};
use crate::{SinkCut, SinkError};

/// How to write to Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSinkSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Row fields forming the message key.
    pub key_by: Vec<String>,
    /// `compression.codec`.
    pub compression: String,
    /// Produce in transactions.
    pub exactly_once: bool,
    /// Prefix of transactional ids (one per output).
    pub transactional_id: String,
    /// How often a transaction is committed.
    pub commit_interval: Duration,
    /// How long to wait for outstanding deliveries at the end.
    pub flush_timeout: Duration,
    /// librdkafka properties, passed through.
    pub properties: Vec<(String, String)>,
}

/// Delivery failures, recorded by librdkafka's callback.
#[derive(Default)]
pub(crate) struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

pub(crate) struct Ctx(pub(crate) Arc<Deliveries>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.0.first.lock().unwrap_or_else(PoisonError::into_inner);
            if first.is_none() {
                *first = Some(format!("{} (topic {})", e, m.topic()));
            }
        }
    }
}

/// Producer threads for the outputs written to Kafka.
pub struct KafkaSink {
    threads: OutputThreads,
}

impl KafkaSink {
    /// Starts a thread per `(output, topic)`. With `txns` (exactly-once
    /// with checkpoints) the outputs share its epoch transactions; else each
    /// has a producer of its own, in transactions committed every
    /// `commit_interval` when exactly-once.
    /// `cuts`: the job takes checkpoints; each epoch's end is reported there.
    pub fn create<'a>(
        settings: &KafkaSinkSettings,
        outputs: impl IntoIterator<Item = (&'a str, String)>,
        capacity: usize,
        cuts: Option<Sender<SinkCut>>,
        txns: Option<Arc<Transactions>>,
    ) -> Result<Self, SinkError> {
        let mut threads = OutputThreads::default();
        for (name, topic) in outputs {
            let err = |message: String| SinkError::Kafka {
                output: name.to_string(),
                message,
            };
            let (mode, deliveries) = match &txns {
                Some(t) => (Mode::Epochs(t.clone()), t.deliveries().clone()),
                None => {
                    let deliveries = Arc::new(Deliveries::default());
                    let producer = own_producer(settings, name, deliveries.clone()).map_err(err)?;
                    (Mode::Own(Arc::new(producer)), deliveries)
                }
            };
            let output = OutputThread {
                name: name.to_string(),
                topic,
                deliveries,
                key_by: settings.key_by.clone(),
                exactly_once: settings.exactly_once,
                commit_interval: settings.commit_interval,
                flush_timeout: settings.flush_timeout,
                cuts: cuts.clone(),
                mode,
            };
            threads
                .spawn(name, format!("kafka-{name}"), capacity, move |rx| output.run(rx))
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(KafkaSink { threads })
    }

    /// The writer of output `name`.
    pub fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.threads.writer(name)
    }

    /// Waits for every output to drain and be delivered (and, with
    /// transactions of its own, committed); call after dropping all writer
    /// clones. Epoch transactions are finished by their owner
    /// ([`Transactions::finish`]). Returns messages written per output.
    pub fn finish(self) -> Result<Vec<(String, u64)>, SinkError> {
        self.threads.finish()
    }
}

/// The configuration of every sink producer: keyed by murmur2 as Java
/// clients are, batched, with the user's properties last so they win.
pub(crate) fn producer_config(
    brokers: &str,
    compression: &str,
    transactional_id: Option<String>,
    properties: &[(String, String)],
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("compression.codec", compression)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000");
    if let Some(id) = transactional_id {
        cfg.set("transactional.id", id);
    }
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

/// An output's own producer, in transactions if exactly-once.
fn own_producer(
    settings: &KafkaSinkSettings,
    name: &str,
    deliveries: Arc<Deliveries>,
) -> Result<SinkProducer, String> {
    let transactional_id = settings
        .exactly_once
        .then(|| format!("{}-{name}", settings.transactional_id));
    let producer: SinkProducer = producer_config(
        &settings.brokers,
        &settings.compression,
        transactional_id,
        &settings.properties,
    )
    .create_with_context(Ctx(deliveries))
    .map_err(|e| e.to_string())?;
    if settings.exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| format!("cannot start transactions: {e}"))?;
        producer
            .begin_transaction()
            .map_err(|e| format!("cannot begin a transaction: {e}"))?;
    }
    Ok(producer)
}

/// Whose producer an output uses.
enum Mode {
    /// Its own (see [`own_producer`]).
    Own(Arc<SinkProducer>),
    /// The epoch transactions shared by the job's Kafka outputs.
    Epochs(Arc<Transactions>),
}

struct OutputThread {
    name: String,
    topic: String,
    deliveries: Arc<Deliveries>,
    key_by: Vec<String>,
    exactly_once: bool,
    commit_interval: Duration,
    flush_timeout: Duration,
    cuts: Option<Sender<SinkCut>>,
    mode: Mode,
}

impl OutputThread {
    fn err(&self, message: String) -> SinkError {
        SinkError::Kafka {
            output: self.name.clone(),
            message,
        }
    }

    fn run(self, gate: EpochGate) -> Result<u64, SinkError> {
        match &self.mode {
            Mode::Own(p) => self.run_own(p, gate),
            Mode::Epochs(t) => self.run_epochs(t, gate),
        }
    }

    /// Produces with the output's own producer; exactly-once commits every
    /// `commit_interval` and at the end.
    fn run_own(&self, producer: &SinkProducer, mut gate: EpochGate) -> Result<u64, SinkError> {
        let mut sent = 0u64;
        let mut last_commit = Instant::now();
        loop {
            match gate.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Lines(buf)) => sent += self.send_lines(producer, &buf)?,
                Ok(Event::EpochEnd(n)) => {
                    self.flush(producer)?;
                    self.report(n);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            producer.poll(Duration::ZERO);
            self.check()?;
            if self.exactly_once && last_commit.elapsed() >= self.commit_interval {
                self.commit(producer, true)?;
                last_commit = Instant::now();
            }
        }
        if self.exactly_once {
            self.commit(producer, false)?;
        } else {
            self.flush(producer)?;
        }
        Ok(sent)
    }

    /// Produces each epoch into its transaction. At an epoch's end the
    /// output flushes before it reports the cut: the checkpoint may only
    /// complete once the epoch's records are with the broker, and a key's
    /// records of the next epoch (another producer) must land after them.
    fn run_epochs(&self, txns: &Transactions, mut gate: EpochGate) -> Result<u64, SinkError> {
        let mut sent = 0u64;
        let mut after = 0u64;
        let mut in_epoch = 0u64;
        let mut producer = txns.producer_after(after)?;
        loop {
            match gate.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Lines(buf)) => {
                    let n = self.send_lines(&producer, &buf)?;
                    sent += n;
                    in_epoch += n;
                }
                Ok(Event::EpochEnd(n)) => {
                    self.flush(&producer)?;
                    txns.sent(after, std::mem::take(&mut in_epoch));
                    after = n;
                    producer = txns.producer_after(after)?;
                    self.report(n);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            producer.poll(Duration::ZERO);
            self.check()?;
        }
        self.flush(&producer)?;
        txns.sent(after, in_epoch);
        Ok(sent)
    }

    /// Produces each line of `buf`; returns how many.
    fn send_lines(&self, producer: &SinkProducer, buf: &[u8]) -> Result<u64, SinkError> {
        let mut n = 0;
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let key = message_key(line, &self.key_by);
            self.send(producer, line, key.as_deref())?;
            n += 1;
        }
        Ok(n)
    }

    /// Tells the checkpoint that the epoch ending at barrier `n` is written.
    fn report(&self, n: u64) {
        if let Some(c) = &self.cuts {
            let _ = c.send(SinkCut {
                output: self.name.clone(),
                barrier: n,
                file_length: None,
            });
        }
    }

    /// Waits until everything sent is delivered, failing if some was not.
    fn flush(&self, producer: &SinkProducer) -> Result<(), SinkError> {
        producer
            .flush(self.flush_timeout)
            .map_err(|e| self.err(format!("flushing: {e}")))?;
        self.check()
    }

    /// Produces one message, waiting while librdkafka's queue is full.
    fn send(&self, producer: &SinkProducer, line: &[u8], key: Option<&[u8]>) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(&self.topic).payload(line);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(self.err(format!("producing to {}: {e}", self.topic))),
            }
        }
    }

    /// Commits the open transaction (flushing it first) and, if `more`,
    /// begins the next one.
    fn commit(&self, producer: &SinkProducer, more: bool) -> Result<(), SinkError> {
        producer
            .commit_transaction(self.flush_timeout)
            .map_err(|e| self.err(format!("committing a transaction: {e}")))?;
        self.check()?;
        if more {
            producer
                .begin_transaction()
                .map_err(|e| self.err(format!("beginning a transaction: {e}")))?;
        }
        Ok(())
    }

    /// Fails once a message could not be delivered after librdkafka's
    /// retries.
    fn check(&self) -> Result<(), SinkError> {
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .deliveries
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        Err(self.err(format!("{failed} message(s) could not be delivered: {first}")))
    }
}

/// The message key of a JSON row: the string value of a single key field,
/// a JSON array of several, `None` if the row lacks them.
pub fn message_key(line: &[u8], key_by: &[String]) -> Option<Vec<u8>> {
    if key_by.is_empty() {
        return None;
    }
    let row: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    let mut values = Vec::with_capacity(key_by.len());
    for f in key_by {
        values.push(row.get(f)?);
    }
    match values.as_slice() {
        [serde_json::Value::String(s)] => Some(s.as_bytes().to_vec()),
        [v] => Some(v.to_string().into_bytes()),
        vs => serde_json::to_vec(vs).ok(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    fn at_least_once(brokers: &str) -> KafkaSink {
        let s = KafkaSinkSettings {
            brokers: brokers.into(),
            key_by: vec!["k".into()],
            compression: "none".into(),
            exactly_once: false,
            transactional_id: "t".into(),
            commit_interval: Duration::from_secs(1),
            flush_timeout: Duration::from_secs(20),
            properties: vec![("message.timeout.ms".into(), "5000".into())],
        };
        KafkaSink::create(&s, [("a", "out".to_string())], 4, None, None).unwrap()
    }

    fn lines(n: u32) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"k\":\"u{i}\"}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    /// Messages in topic `out` (2 partitions).
    fn count(brokers: &str) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "count")
            .create()
            .unwrap();
        (0..2)
            .map(|p| {
                let (lo, hi) = c.fetch_watermarks("out", p, Duration::from_secs(10)).unwrap();
                hi - lo
            })
            .sum()
    }

    #[test]
    fn transient_produce_errors_are_retried_and_nothing_is_lost() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 2, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
        );
        let sink = at_least_once(&brokers);
        let w = sink.writer("a").unwrap();
        w.write(lines(500));
        drop(w);
        assert_eq!(sink.finish().unwrap(), vec![("a".to_string(), 500)]);
        assert_eq!(count(&brokers), 500);
    }

    #[test]
    fn a_message_that_cannot_be_delivered_fails_the_output_by_name() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 2, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
        );
        let sink = at_least_once(&brokers);
        let w = sink.writer("a").unwrap();
        w.write(lines(10));
        drop(w);
        let err = sink.finish().unwrap_err().to_string();
        assert!(
            err.contains("output `a`") && err.contains("could not be delivered") && err.contains("topic out"),
            "{err}"
        );
    }

    #[test]
    fn keys_come_from_the_key_fields() {
        let k = |line: &str, fields: &[&str]| {
            let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            message_key(line.as_bytes(), &fields).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            k(r#"{"user_id":"ü1","n":2}"#, &["user_id"]).as_deref(),
            Some("ü1")
        );
        assert_eq!(k(r#"{"user_id":7}"#, &["user_id"]).as_deref(), Some("7"));
        assert_eq!(
            k(r#"{"user_id":"u","item_id":"i"}"#, &["user_id", "item_id"]).as_deref(),
            Some(r#"["u","i"]"#)
        );
        assert_eq!(k(r#"{"source":"events","payload":"x"}"#, &["user_id"]), None);
        assert_eq!(k("not json", &["user_id"]), None);
        assert_eq!(k(r#"{"user_id":"u"}"#, &[]), None);
    }
}
