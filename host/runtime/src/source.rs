//! Source threads: read raw records, dead-letter what cannot be framed, and
//! shuffle the rest to deserialization workers by payload hash.
//!
//! The hash spreads records evenly over however many workers there are,
//! whatever the number of files or partitions feeding them, and sends a given
//! payload to the same worker on every run.
//!
//! Records are read in *chunks* of `batch_size × workers` records; each chunk
//! is split by hash into one batch per worker, every worker gets its batch of
//! every chunk (possibly empty), and each record keeps its sequence number in
//! the source. Downstream, the keyed stage puts a chunk's parts back in source
//! order, so the records of a key reach their processor in the order they
//! were read, whatever the parallelism and however the threads race.

use std::sync::Arc;

use crossbeam_channel::Sender;
use wafer_connectors::SourceError;
use wafer_connectors::file_source::{FileEvent, FileReader};
use wafer_core::dead_letter::{DeadLetter, Position, Reason};
use wafer_core::hash::{hash, partition};

use crate::batch::RawBatch;
use crate::dead_letters::DeadLetters;

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

/// Reads a file source to its end.
pub(crate) fn run_file_source(
    name: Arc<str>,
    mut reader: FileReader,
    senders: Vec<Sender<RawBatch>>,
    batch_size: usize,
    mut dead_letters: DeadLetters,
) -> Result<SourceStats, SourceError> {
    let n = senders.len().max(1);
    let fresh = |chunk: u64| RawBatch {
        chunk,
        ..RawBatch::with_capacity(batch_size, batch_size * 192)
    };
    let mut chunk = 0u64;
    let mut seq = 0u64;
    let mut stats = SourceStats::default();
    let framing: Arc<str> = Arc::from("framing");
    loop {
        let mut batches: Vec<RawBatch> = (0..n).map(|_| fresh(chunk)).collect();
        let more = reader.read(batch_size * n, |ev| match ev {
            FileEvent::Record {
                file,
                offset,
                payload,
            } => {
                let b = &mut batches[partition(hash(payload), n)];
                b.push(file, offset, payload);
                b.seqs.push(seq);
                seq += 1;
                stats.records += 1;
                stats.bytes += payload.len() as u64;
            }
            FileEvent::Corrupt {
                file,
                offset,
                payload,
                error,
            } => {
                stats.corrupt += 1;
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
        dead_letters.flush();
        let empty = batches.iter().all(RawBatch::is_empty);
        if !empty || more {
            for (w, b) in batches.into_iter().enumerate() {
                if senders[w].send(b).is_err() {
                    // A worker is gone (it panicked); the job reports that.
                    return Ok(stats);
                }
            }
            chunk += 1;
        }
        if !more {
            return Ok(stats);
        }
    }
}
