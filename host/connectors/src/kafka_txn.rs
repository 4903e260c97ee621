//! Kafka transactions tied to checkpoints: the exactly-once Kafka sink's
//! two-phase commit, with a presumed-abort recovery.
//!
//! **Phase one.** The records of one checkpoint epoch (between two
//! barriers) go into a transaction of their own, shared by every Kafka
//! output of the job, so the outputs commit together. When an epoch ends at
//! an output ([`crate::Event::EpochEnd`]) the output flushes what it sent
//! and goes on in the next epoch's transaction, on another producer: a
//! producer holds one open transaction, and the ended one must stay open
//! until its checkpoint is complete. The pool has a few producers
//! (`<prefix>-epoch-<i>`), enough for the checkpoints that may fail in a row.
//!
//! **Phase two.** Once the checkpoint (or savepoint) at an epoch's end is
//! written, the coordinator calls [`Transactions::commit`]: every ended
//! transaction commits, the last with a *commit marker*: the cut's id,
//! stored as the offset of a consumer group of its own (`<prefix>.commits`)
//! through `send_offsets_to_transaction`, so the marker moves exactly when
//! the records become visible.
//!
//! **Recovery.** librdkafka cannot resume another process's transaction, so
//! a transaction left open by a crash cannot be committed later. Instead,
//! [`recover`] fences every producer id of the pool (which aborts what was
//! left open) and reads the marker: the newest cut whose records are
//! committed. The job restores exactly that cut; later checkpoints, whose
//! transactions were just aborted, are replayed. So a crash between a
//! checkpoint and its commit costs a replay, never a duplicate or a loss.
//!
//! **The one gap.** A failed checkpoint leaves its epoch's transaction
//! open; the next complete cut commits both epochs, one transaction after
//! the other (Kafka cannot commit two atomically), and only the second
//! moves the marker. A crash in the milliseconds between those two commits
//! makes the restart repeat the first epoch's records: duplicates, never a
//! loss.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::SinkError;
use crate::kafka_sink::{Ctx, Deliveries, producer_config};

/// The marker of a job that committed the records after its last cut: it
/// ran to the end of its input.
pub const FINISHED: u64 = i64::MAX as u64;

/// A sink producer.
pub(crate) type SinkProducer = BaseProducer<Ctx>;

/// How the sink's transactions are set up.
#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Prefix of the transactional ids and of the marker's group.
    pub prefix: String,
    /// Producers in the pool (at least 2).
    pub slots: usize,
    /// A topic of the sink's, partition 0 of which carries the marker.
    pub marker_topic: String,
    /// `compression.codec`.
    pub compression: String,
    /// How long a flush or a commit may take.
    pub timeout: Duration,
    /// librdkafka properties, passed through.
    pub properties: Vec<(String, String)>,
}

impl TxnSettings {
    /// The consumer group whose offset is the commit marker.
    pub fn marker_group(&self) -> String {
        marker_group(&self.prefix)
    }

    fn producer_config(&self, slot: usize) -> ClientConfig {
        producer_config(
            &self.brokers,
            &self.compression,
            Some(format!("{}-epoch-{slot}", self.prefix)),
            &self.properties,
        )
    }

    fn marker_consumer(&self, group: &str) -> Result<BaseConsumer, String> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        // Only connection settings apply to the marker's consumer: the
        // sink's other properties are the producers'.
        const CONNECTION: &[&str] = &[
            "security.",
            "sasl.",
            "ssl.",
            "client.",
            "socket.",
            "broker.",
            "api.",
            "reconnect.",
            "metadata.",
            "debug",
            "log",
        ];
        for (k, v) in &self.properties {
            if CONNECTION.iter().any(|p| k.starts_with(p)) {
                cfg.set(k, v);
            }
        }
        cfg.create().map_err(|e| format!("cannot create a consumer: {e}"))
    }
}

/// The consumer group whose offset is the commit marker of prefix `prefix`.
pub fn marker_group(prefix: &str) -> String {
    format!("{prefix}.commits")
}

fn err(message: String) -> SinkError {
    SinkError::Kafka {
        output: "*".into(),
        message,
    }
}

/// Fences every transactional id of a pool of `slots` producers (aborting
/// the transactions a crashed run left open) and reads the commit marker
/// kept in `group` at `topic`'s partition 0: the newest cut whose records
/// were committed, `None` if none ever was.
pub fn recover(s: &TxnSettings, slots: usize, group: &str, topic: &str) -> Result<Option<u64>, SinkError> {
    for slot in 0..slots.max(s.slots) {
        fenced_producer(s, slot, Arc::new(Deliveries::default()))?;
    }
    read_marker(s, group, topic)
}

/// Pool producer `slot`, its transactional id fenced (whatever an earlier
/// producer with that id left open is aborted).
fn fenced_producer(
    s: &TxnSettings,
    slot: usize,
    deliveries: Arc<Deliveries>,
) -> Result<SinkProducer, SinkError> {
    let producer: SinkProducer = s
        .producer_config(slot)
        .create_with_context(Ctx(deliveries))
        .map_err(|e| err(e.to_string()))?;
    producer.init_transactions(s.timeout).map_err(|e| {
        err(format!(
            "cannot start transactions as {}-epoch-{slot}: {e}",
            s.prefix
        ))
    })?;
    Ok(producer)
}

fn read_marker(s: &TxnSettings, group: &str, topic: &str) -> Result<Option<u64>, SinkError> {
    let consumer = s.marker_consumer(group).map_err(err)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer
        .committed_offsets(tpl, s.timeout)
        .map_err(|e| err(format!("cannot read the commit marker of group `{group}`: {e}")))?;
    Ok(got.find_partition(topic, 0).and_then(|p| match p.offset() {
        Offset::Offset(o) if o >= 0 => Some(o as u64),
        _ => None,
    }))
}

/// An epoch's transaction.
struct Open {
    slot: usize,
    records: u64,
}

struct Pool {
    producers: Vec<Arc<SinkProducer>>,
    free: Vec<usize>,
    /// Open transactions by the barrier their epoch starts after.
    open: BTreeMap<u64, Open>,
}

/// The transactions of a job's exactly-once Kafka outputs (see the module
/// docs).
pub struct Transactions {
    settings: TxnSettings,
    deliveries: Arc<Deliveries>,
    marker: ConsumerGroupMetadata,
    pool: Mutex<Pool>,
}

impl Transactions {
    /// Creates the pool's producers, fencing their ids (what an earlier run
    /// left open is aborted).
    pub fn start(settings: TxnSettings) -> Result<Arc<Self>, SinkError> {
        let deliveries = Arc::new(Deliveries::default());
        let mut producers = Vec::new();
        for slot in 0..settings.slots.max(2) {
            producers.push(Arc::new(fenced_producer(&settings, slot, deliveries.clone())?));
        }
        // The marker is an offset of the first output topic's partition 0:
        // Kafka refuses it for a topic that does not exist, which would
        // otherwise surface only at the first commit. Asking for the
        // topic's metadata creates it where the broker auto-creates topics.
        let topic = &settings.marker_topic;
        let metadata = producers[0]
            .client()
            .fetch_metadata(Some(topic), settings.timeout)
            .map_err(|e| err(format!("cannot read the metadata of topic `{topic}`: {e}")))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic.as_str() && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(err(format!(
                "topic `{topic}` does not exist; it is an output of the job and holds the commit marker of its transactions: create it"
            )));
        }
        let consumer = settings.marker_consumer(&settings.marker_group()).map_err(err)?;
        let marker = consumer
            .group_metadata()
            .ok_or_else(|| err("no consumer group metadata for the commit marker".into()))?;
        let free = (0..producers.len()).rev().collect();
        Ok(Arc::new(Transactions {
            settings,
            deliveries,
            marker,
            pool: Mutex::new(Pool {
                producers,
                free,
                open: BTreeMap::new(),
            }),
        }))
    }

    /// What the sink's producers failed to deliver.
    pub(crate) fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }

    /// The settings.
    pub fn settings(&self) -> &TxnSettings {
        &self.settings
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The producer of the epoch that starts after barrier `after`; the
    /// first output to get there begins its transaction.
    pub(crate) fn producer_after(&self, after: u64) -> Result<Arc<SinkProducer>, SinkError> {
        let mut pool = self.pool();
        if let Some(o) = pool.open.get(&after) {
            return Ok(pool.producers[o.slot].clone());
        }
        let Some(slot) = pool.free.pop() else {
            return Err(err(format!(
                "{} epochs' transactions are waiting for their checkpoints: too many checkpoints failed in a row",
                pool.producers.len()
            )));
        };
        let producer = pool.producers[slot].clone();
        if let Err(e) = producer.begin_transaction() {
            pool.free.push(slot);
            return Err(err(format!("cannot begin a transaction: {e}")));
        }
        pool.open.insert(after, Open { slot, records: 0 });
        Ok(producer)
    }

    /// An output sent `records` in the epoch after `after` and has flushed them.
    pub(crate) fn sent(&self, after: u64, records: u64) {
        if let Some(o) = self.pool().open.get_mut(&after) {
            o.records += records;
        }
    }

    /// Cut `id` is complete (its manifest is written): commits the
    /// transactions of every epoch that ended at or before it, oldest
    /// first, the last with the marker `id`. An error means records of a
    /// complete cut may be lost: the job must fail, and its recovery
    /// replays them.
    pub fn commit(&self, id: u64) -> Result<(), SinkError> {
        // Taken out under the lock, committed without it: outputs moving
        // to the next epoch need not wait for the broker's answers.
        let ended: Vec<(usize, Arc<SinkProducer>)> = {
            let mut pool = self.pool();
            let keys: Vec<u64> = pool.open.range(..id).map(|(k, _)| *k).collect();
            let mut ended = Vec::new();
            for k in keys {
                if let Some(o) = pool.open.remove(&k) {
                    ended.push((o.slot, pool.producers[o.slot].clone()));
                }
            }
            ended
        };
        // Only the newest carries the marker: should the process die
        // between two commits (possible only after a failed checkpoint), the
        // marker still names the cut before them, and the restart repeats
        // the older epoch's records rather than losing the newer one's.
        let last = ended.len().saturating_sub(1);
        for (i, (slot, producer)) in ended.into_iter().enumerate() {
            self.commit_one(&producer, (i == last).then_some(id))?;
            self.pool().free.push(slot);
        }
        Ok(())
    }

    fn commit_one(&self, producer: &SinkProducer, marker: Option<u64>) -> Result<(), SinkError> {
        if let Some(marker) = marker {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.settings.marker_topic, 0, Offset::Offset(marker as i64))
                .map_err(|e| err(e.to_string()))?;
            producer
                .send_offsets_to_transaction(&tpl, &self.marker, self.settings.timeout)
                .map_err(|e| err(format!("cannot add the commit marker to a transaction: {e}")))?;
        }
        producer
            .commit_transaction(self.settings.timeout)
            .map_err(|e| err(format!("committing a transaction: {e}")))
    }

    /// The job is over. If it `succeeded`, the epochs after its last cut
    /// that hold records commit with the marker [`FINISHED`] (it ran to the
    /// end of its input); the rest abort, so read-committed consumers need
    /// not wait for them to time out.
    pub fn finish(&self, succeeded: bool) -> Result<(), SinkError> {
        let mut pool = self.pool();
        let open = std::mem::take(&mut pool.open);
        let mut first_err = None;
        for o in open.into_values() {
            let producer = pool.producers[o.slot].clone();
            let result = if succeeded && o.records > 0 {
                self.commit_one(&producer, Some(FINISHED))
            } else {
                producer
                    .abort_transaction(self.settings.timeout)
                    .map_err(|e| err(format!("aborting a transaction: {e}")))
            };
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
            pool.free.push(o.slot);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against librdkafka's mock cluster, which speaks the transactional
    //! protocol (but keeps no commit markers and hides no aborted records,
    //! so what is checked here is the order of the protocol's steps).

    use std::collections::{BTreeMap, BTreeSet};

    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Message;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::kafka_sink::{KafkaSink, KafkaSinkSettings};

    fn settings(brokers: &str, slots: usize) -> TxnSettings {
        TxnSettings {
            brokers: brokers.into(),
            prefix: "t-job".into(),
            slots,
            marker_topic: "out".into(),
            compression: "lz4".into(),
            timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }

    fn sink(
        brokers: &str,
        txns: &Arc<Transactions>,
    ) -> (KafkaSink, crossbeam_channel::Receiver<crate::SinkCut>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = KafkaSinkSettings {
            brokers: brokers.into(),
            key_by: vec!["k".into()],
            compression: "lz4".into(),
            exactly_once: true,
            transactional_id: "t-job".into(),
            commit_interval: Duration::from_secs(3600),
            flush_timeout: Duration::from_secs(10),
            properties: Vec::new(),
        };
        let sink =
            KafkaSink::create(&s, [("a", "out".to_string())], 4, Some(tx), Some(txns.clone())).unwrap();
        (sink, rx)
    }

    fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range
            .map(|i| format!("{{\"k\":\"u{}\",\"i\":{i}}}\n", i % 7))
            .collect::<String>()
            .into_bytes()
    }

    fn read_all(brokers: &str) -> Vec<(i32, String, u32)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reader")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset("out", p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let (mut out, mut eof) = (Vec::new(), BTreeSet::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while eof.len() < 3 && std::time::Instant::now() < deadline {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                    let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                    out.push((m.partition(), key, v["i"].as_u64().unwrap() as u32));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn an_epoch_commits_only_when_its_checkpoint_is_complete() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 3, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let txns = Transactions::start(settings(&brokers, 2)).unwrap();
        let (sink, cuts) = sink(&brokers, &txns);
        // The first transaction to end meets this error: it must be the
        // commit after the checkpoint, not the epoch's end at the output.
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE],
        );
        let w = sink.writer("a").unwrap();
        w.write(lines(0..50));
        w.barrier(1);
        w.write(lines(50..80));
        let cut = cuts.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(cut.barrier, 1);
        let err = txns.commit(1).unwrap_err().to_string();
        assert!(err.contains("committing a transaction"), "{err}");
        drop(w);
        let _ = sink.finish();
    }

    #[test]
    fn epochs_commit_in_order_and_every_record_lands_once_in_its_keys_partition() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 3, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let txns = Transactions::start(settings(&brokers, 3)).unwrap();
        let (sink, cuts) = sink(&brokers, &txns);
        let (a, b) = (sink.writer("a").unwrap(), sink.writer("a").unwrap());
        a.write(lines(0..100));
        a.barrier(1);
        a.write(lines(100..200));
        b.write(lines(200..300));
        b.barrier(1);
        assert_eq!(cuts.recv_timeout(Duration::from_secs(20)).unwrap().barrier, 1);
        // Checkpoint 1 failed: its epoch waits for the next one.
        a.barrier(2);
        b.barrier(2);
        a.write(lines(300..400));
        assert_eq!(cuts.recv_timeout(Duration::from_secs(20)).unwrap().barrier, 2);
        txns.commit(2).unwrap();
        drop((a, b));
        sink.finish().unwrap();
        txns.finish(true).unwrap();
        let got = read_all(&brokers);
        let ids: BTreeSet<u32> = got.iter().map(|(_, _, i)| *i).collect();
        assert_eq!(got.len(), 400, "every record once");
        assert_eq!(ids, (0..400).collect());
        let mut home: BTreeMap<String, i32> = BTreeMap::new();
        for (p, k, i) in &got {
            assert_eq!(
                *home.entry(k.clone()).or_insert(*p),
                *p,
                "key {k} in two partitions"
            );
            assert_eq!(format!("u{}", i % 7), *k);
        }
        // Within a key, the log keeps the order the gate delivered the
        // records in (epoch 1: a's and b's, then a's later ones), across
        // the epochs' producers.
        let delivered: Vec<u32> = (0..100).chain(200..300).chain(100..200).chain(300..400).collect();
        for key in 0..7 {
            let want: Vec<u32> = delivered.iter().copied().filter(|i| i % 7 == key).collect();
            let have: Vec<u32> = got
                .iter()
                .filter(|(_, k, _)| *k == format!("u{key}"))
                .map(|(_, _, i)| *i)
                .collect();
            assert_eq!(have, want, "order of key u{key}");
        }
    }

    #[test]
    fn a_missing_marker_topic_is_named_at_start() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("other", 1, 1).unwrap();
        let mut s = settings(&mock.bootstrap_servers(), 2);
        s.properties
            .push(("allow.auto.create.topics".into(), "false".into()));
        s.marker_topic = "nowhere".into();
        mock.topic_error("nowhere", RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            .unwrap();
        let err = Transactions::start(s).err().expect("refused").to_string();
        assert!(err.contains("topic `nowhere` does not exist"), "{err}");
    }

    #[test]
    fn more_waiting_epochs_than_producers_fail_the_output_loudly() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 3, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let txns = Transactions::start(settings(&brokers, 2)).unwrap();
        let (sink, _cuts) = sink(&brokers, &txns);
        let w = sink.writer("a").unwrap();
        for n in 1..=3 {
            w.write(lines(0..10));
            w.barrier(n);
        }
        drop(w);
        let err = sink.finish().unwrap_err().to_string();
        assert!(err.contains("too many checkpoints failed in a row"), "{err}");
        txns.finish(false).unwrap();
    }
}
