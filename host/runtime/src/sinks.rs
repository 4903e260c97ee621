//! The job's outputs: each goes to the Kafka sink if it takes it, else to a
//! JSON-lines file. Both hand out the same [`OutputWriter`], so stages do
//! not know where their rows end up.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::Sender;

use wafer_connectors::OutputWriter;
use wafer_connectors::file_sink::FileSink;
use wafer_connectors::kafka_sink::{KafkaSink, KafkaSinkSettings};
use wafer_connectors::{SinkCut, SinkError};
use wafer_job::Sink;

use crate::RuntimeError;

/// The open outputs of a job.
pub(crate) struct Sinks {
    files: Option<FileSink>,
    kafka: Option<KafkaSink>,
}

impl Sinks {
    /// Opens every output. An output the Kafka sink does not take needs a
    /// file sink. A restored job passes the file lengths its checkpoint
    /// recorded (files are cut back to them); with checkpoints, every
    /// output reports its epochs' ends to `cuts`.
    pub(crate) fn open(
        sink: &Sink,
        outputs: &[String],
        capacity: usize,
        lengths: &HashMap<String, u64>,
        cuts: Option<Sender<SinkCut>>,
    ) -> Result<Self, RuntimeError> {
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
        let kafka = match &sink.kafka {
            Some(k) if !to_kafka.is_empty() => {
                let settings = KafkaSinkSettings {
                    brokers: k.brokers.clone(),
                    key_by: k.key_by.clone(),
                    compression: k.compression.clone(),
                    exactly_once: k.exactly_once,
                    transactional_id: k.transactional_id.clone(),
                    commit_interval: k.commit_interval,
                    flush_timeout: Duration::from_secs(60),
                    properties: k.properties.clone(),
                };
                Some(KafkaSink::create(
                    &settings,
                    to_kafka.iter().map(|o| (o.as_str(), k.topic(o))),
                    capacity,
                    cuts,
                )?)
            }
            _ => None,
        };
        Ok(Sinks { files, kafka })
    }

    /// The writer of output `name`.
    pub(crate) fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.kafka
            .as_ref()
            .and_then(|k| k.writer(name))
            .or_else(|| self.files.as_ref().and_then(|f| f.writer(name)))
    }

    /// Drains and closes every output; bytes (files) or messages (Kafka)
    /// written per output.
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
