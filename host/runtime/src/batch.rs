//! What flows between the threads of a running job.

use std::sync::Arc;

use wafer_core::dead_letter::Position;
use wafer_row::BatchBuf;

/// Raw records from a source, shuffled to one deserialization worker.
///
/// Records keep their position so that a dead letter can say where it came
/// from; the file name is stored once per run of records from the same file.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Payloads, back to back.
    pub records: BatchBuf,
    /// Offset of each record in its file.
    pub offsets: Vec<u64>,
    /// `(first record index, file)` for each run of records from one file.
    pub files: Vec<(u32, Arc<str>)>,
    /// The chunk of the source this batch is this worker's part of.
    pub chunk: u64,
    /// Sequence number of each record in the source.
    pub seqs: Vec<u64>,
}

impl RawBatch {
    /// An empty batch with room for `n` records of about `bytes` bytes.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        RawBatch {
            records: BatchBuf::with_capacity(n, bytes),
            offsets: Vec::with_capacity(n),
            files: Vec::new(),
            chunk: 0,
            seqs: Vec::with_capacity(n),
        }
    }

    /// Appends a record read at `offset` of `file`.
    #[inline]
    pub fn push(&mut self, file: &Arc<str>, offset: u64, payload: &[u8]) {
        if self.files.last().is_none_or(|(_, f)| !Arc::ptr_eq(f, file)) {
            self.files.push((self.records.len() as u32, file.clone()));
        }
        self.records.push(payload);
        self.offsets.push(offset);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Where record `i` came from.
    pub fn position(&self, i: usize) -> Position {
        let run = self.files.partition_point(|(start, _)| *start as usize <= i);
        let path = match run.checked_sub(1).and_then(|r| self.files.get(r)) {
            Some((_, f)) => f.clone(),
            None => Arc::from(""),
        };
        Position::File {
            path,
            offset: self.offsets.get(i).copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_file_runs() {
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let mut batch = RawBatch::default();
        batch.push(&a, 0, b"1");
        batch.push(&a, 2, b"2");
        batch.push(&b, 0, b"3");
        assert_eq!(batch.files.len(), 2);
        assert_eq!(
            batch.position(1),
            Position::File {
                path: a.clone(),
                offset: 2
            }
        );
        assert_eq!(batch.position(2), Position::File { path: b, offset: 0 });
    }
}
