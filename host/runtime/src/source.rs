//! Source threads: read raw records, dead-letter what cannot be framed, and
//! shuffle the rest to deserialization workers by payload hash.
//!
//! The hash spreads records evenly over however many workers there are,
//! whatever the number of files or partitions feeding them, and sends a given
//! payload to the same worker on every run.

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
    let fresh = || RawBatch::with_capacity(batch_size, batch_size * 192);
    let mut batches: Vec<RawBatch> = (0..n).map(|_| fresh()).collect();
    let mut stats = SourceStats::default();
    let framing: Arc<str> = Arc::from("framing");
    let mut disconnected = false;
    loop {
        let more = reader.read(batch_size * n, |ev| match ev {
            FileEvent::Record {
                file,
                offset,
                payload,
            } => {
                let w = partition(hash(payload), n);
                let b = &mut batches[w];
                b.push(file, offset, payload);
                stats.records += 1;
                stats.bytes += payload.len() as u64;
                if b.len() >= batch_size {
                    let full = std::mem::replace(b, fresh());
                    disconnected |= senders[w].send(full).is_err();
                }
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
        if disconnected {
            // A worker is gone (it panicked); the job reports that error.
            break;
        }
        if !more {
            break;
        }
    }
    for (w, b) in batches.into_iter().enumerate() {
        if !b.is_empty() {
            let _ = senders[w].send(b);
        }
    }
    Ok(stats)
}
