//! The job's outputs: each goes to the Kafka sink if it takes it, else to a
//! JSON-lines file. Both hand out the same [`OutputWriter`], so stages do
//! not know where their rows end up. An exactly-once Kafka sink in a job
//! with checkpoints commits through epoch transactions
//! ([`wafer_connectors::kafka_txn`]), which the coordinator commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use wafer_connectors::OutputWriter;
use wafer_connectors::file_sink::FileSink;
use wafer_connectors::kafka_sink::{KafkaSink, KafkaSinkSettings};
use wafer_connectors::kafka_txn::{Transactions, TxnSettings};
use wafer_connectors::{SinkCut, SinkError};
use wafer_job::{Job, Sink};

use crate::RuntimeError;

/// How long a flush or a transaction's commit may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the job's Kafka output commits with its checkpoints.
pub(crate) fn epoch_transactions(job: &Job) -> bool {
    job.checkpoints.is_some() && job.sink.kafka.as_ref().is_some_and(|k| k.exactly_once)
}

/// The epoch transactions of the job's Kafka sink, with the commit marker
/// on `marker_topic`; `None` unless [`epoch_transactions`].
pub(crate) fn txn_settings(job: &Job, marker_topic: String) -> Option<TxnSettings> {
    if !epoch_transactions(job) {
        return None;
    }
    let k = job.sink.kafka.as_ref()?;
    let c = job.checkpoints.as_ref()?;
    let failures = c.tolerable_failures as usize;
    let mut properties = k.properties.clone();
    if !properties.iter().any(|(p, _)| p == "transaction.timeout.ms") {
        // A transaction stays open for an interval and the checkpoint's
        // completion, longer after failed checkpoints; the broker aborts
        // it after this (and caps it at its transaction.max.timeout.ms,
        // 15 minutes by default).
        let ms = (c.interval * (failures as u32 + 2) + Duration::from_secs(60)).as_millis();
        properties.push((
            "transaction.timeout.ms".into(),
            ms.clamp(60_000, 900_000).to_string(),
        ));
    }
    Some(TxnSettings {
        brokers: k.brokers.clone(),
        prefix: k.transactional_id.clone(),
        // An epoch per failed checkpoint waits, plus the one being written
        // and the next.
        slots: (failures + 2).min(16),
        marker_topic,
        compression: k.compression.clone(),
        timeout: KAFKA_TIMEOUT,
        properties,
    })
}

/// The open outputs of a job.
pub(crate) struct Sinks {
    files: Option<FileSink>,
    kafka: Option<KafkaSink>,
    txns: Option<Arc<Transactions>>,
}

impl Sinks {
    /// Opens every output. An output the Kafka sink does not take needs a
    /// file sink. A restored job passes the file lengths its checkpoint
    /// recorded (files are cut back to them); with checkpoints, every
    /// output reports its epochs' ends to `cuts`.
    pub(crate) fn open(
        job: &Job,
        outputs: &[String],
        capacity: usize,
        lengths: &HashMap<String, u64>,
        cuts: Option<Sender<SinkCut>>,
    ) -> Result<Self, RuntimeError> {
        let sink: &Sink = &job.sink;
        let (to_kafka, to_files): (Vec<&String>, Vec<&String>) =
            outputs.iter().partition(|o| sink.to_kafka(o));
        let files = match (&sink.files, to_files.is_empty()) {
            (Some(dir), _) => Some(FileSink::resume(
                dir,
                to_files.iter().map(|s| s.as_str()),
                capacity,
                lengths,
                cuts.clone(),
            )?),
            (None, true) => None,
            (None, false) => {
                return Err(RuntimeError::Plan {
                    at: "sink".into(),
                    message: format!(
                        "output(s) {} are not written to kafka and there is no `file` sink for them",
                        to_files
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        };
        let mut txns = None;
        let kafka = match &sink.kafka {
            Some(k) if !to_kafka.is_empty() => {
                let settings = KafkaSinkSettings {
                    brokers: k.brokers.clone(),
                    key_by: k.key_by.clone(),
                    compression: k.compression.clone(),
                    exactly_once: k.exactly_once,
                    transactional_id: k.transactional_id.clone(),
                    commit_interval: k.commit_interval,
                    flush_timeout: KAFKA_TIMEOUT,
                    properties: k.properties.clone(),
                };
                let mut topics: Vec<String> = to_kafka.iter().map(|o| k.topic(o)).collect();
                topics.sort();
                if let Some(t) = topics.first().and_then(|t| txn_settings(job, t.clone())) {
                    txns = Some(Transactions::start(t)?);
                }
                Some(KafkaSink::create(
                    &settings,
                    to_kafka.iter().map(|o| (o.as_str(), k.topic(o))),
                    capacity,
                    cuts,
                    txns.clone(),
                )?)
            }
            _ => None,
        };
        Ok(Sinks { files, kafka, txns })
    }

    /// The Kafka sink's epoch transactions, which the coordinator commits.
    pub(crate) fn transactions(&self) -> Option<Arc<Transactions>> {
        self.txns.clone()
    }

    /// The writer of output `name`.
    pub(crate) fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.kafka
            .as_ref()
            .and_then(|k| k.writer(name))
            .or_else(|| self.files.as_ref().and_then(|f| f.writer(name)))
    }

    /// Drains and closes every output; bytes (files) or messages (Kafka)
    /// written per output. Epoch transactions stay open for
    /// [`Transactions::finish`], once the last checkpoint is settled.
    pub(crate) fn finish(self) -> Result<Vec<(String, u64)>, SinkError> {
        let mut out = Vec::new();
        let kafka = self.kafka.map(KafkaSink::finish);
        if let Some(f) = self.files {
            out.extend(f.finish()?);
        }
        if let Some(k) = kafka {
            out.extend(k?);
        }
        Ok(out)
    }
}
