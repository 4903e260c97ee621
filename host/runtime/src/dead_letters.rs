//! The dead-letter output as seen by a worker: renders dead letters to JSON
//! lines, counts them per reason, and hands them to the `dlq` writer once
//! per batch.

use std::collections::HashMap;
use std::sync::Arc;

use wafer_connectors::OutputWriter;
use wafer_core::dead_letter::{DeadLetter, Reason};
use wafer_metrics::{IntCounter, Metrics};
use wafer_wasm::FailKind;

/// One worker's handle on the dead-letter output.
pub(crate) struct DeadLetters {
    writer: OutputWriter,
    buf: Vec<u8>,
    counters: HashMap<Reason, IntCounter>,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    pub(crate) fn new(writer: OutputWriter, metrics: Arc<Metrics>) -> Self {
        DeadLetters {
            writer,
            buf: Vec::new(),
            counters: HashMap::new(),
            metrics,
        }
    }

    /// The job's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records one dead letter.
    pub(crate) fn push(&mut self, dl: &DeadLetter) {
        dl.write_json(&mut self.buf);
        self.buf.push(b'\n');
        let metrics = &self.metrics;
        self.counters
            .entry(dl.reason)
            .or_insert_with(|| metrics.dead_letters(dl.reason.name()))
            .inc();
    }

    /// Sends what was recorded since the last flush.
    pub(crate) fn flush(&mut self) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.writer.write(buf);
        }
    }
}

impl DeadLetters {
    /// Sends what was recorded, then checkpoint barrier `id`.
    pub(crate) fn barrier(&mut self, id: u64) {
        self.flush();
        self.writer.barrier(id);
    }
}

impl Drop for DeadLetters {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The dead-letter reason of a guest failure.
pub(crate) fn reason_of(kind: FailKind) -> Reason {
    match kind {
        FailKind::Decode => Reason::Decode,
        FailKind::Invalid => Reason::Invalid,
        FailKind::Failed => Reason::Failed,
        FailKind::Trap => Reason::Trap,
        FailKind::Timeout => Reason::Timeout,
        FailKind::Memory => Reason::Memory,
        FailKind::BadOutput => Reason::BadRow,
    }
}
