//! What flows between the threads of a running job.

use std::sync::Arc;

use wafer_core::dead_letter::Position;
use wafer_row::BatchBuf;

/// Where a run of records comes from: a file or a Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(Arc<str>),
    /// A Kafka partition.
    Kafka {
        /// topic
        topic: Arc<str>,
        /// partition
        partition: i32,
    },
}

/// Raw records from a source, shuffled to one deserialization worker.
///
/// Records keep their position so that a dead letter can say where it came
/// from; the origin (file or partition) is stored once per run of records
/// from the same origin.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Payloads, back to back.
    pub records: BatchBuf,
    /// Offset of each record in its file or partition.
    pub offsets: Vec<u64>,
    /// `(first record index, origin)` for each run of records from one origin.
    pub files: Vec<(u32, Arc<Origin>)>,
    /// The lane (partition) of each record: watermarks are kept per lane.
    pub lanes: Vec<u32>,
    /// The source's lanes and whether each is finished, when the source
    /// knows them ahead of records (Kafka's assigned partitions).
    pub lane_status: Option<Arc<Vec<(u32, bool)>>>,
    /// The chunk of the source this batch is this worker's part of.
    pub chunk: u64,
    /// Sequence number of each record in the source.
    pub seqs: Vec<u64>,
    /// A checkpoint barrier (the batch has no records).
    pub barrier: Option<u64>,
}

impl RawBatch {
    /// An empty batch with room for `n` records of about `bytes` bytes.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        RawBatch {
            records: BatchBuf::with_capacity(n, bytes),
            offsets: Vec::with_capacity(n),
            files: Vec::new(),
            lanes: Vec::with_capacity(n),
            lane_status: None,
            chunk: 0,
            seqs: Vec::with_capacity(n),
            barrier: None,
        }
    }

    /// Appends a record read at `offset` of `origin`, in lane `lane`.
    #[inline]
    pub fn push(&mut self, origin: &Arc<Origin>, lane: u32, offset: u64, payload: &[u8]) {
        if self.files.last().is_none_or(|(_, f)| !Arc::ptr_eq(f, origin)) {
            self.files.push((self.records.len() as u32, origin.clone()));
        }
        self.records.push(payload);
        self.offsets.push(offset);
        self.lanes.push(lane);
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
        let offset = self.offsets.get(i).copied().unwrap_or_default();
        match run
            .checked_sub(1)
            .and_then(|r| self.files.get(r))
            .map(|(_, o)| &**o)
        {
            Some(Origin::File(path)) => Position::File {
                path: path.clone(),
                offset,
            },
            Some(Origin::Kafka { topic, partition }) => Position::Kafka {
                topic: topic.clone(),
                partition: *partition,
                offset: offset as i64,
            },
            None => Position::File {
                path: Arc::from(""),
                offset,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_file_runs() {
        let a: Arc<str> = "a".into();
        let fa = Arc::new(Origin::File(a.clone()));
        let kb = Arc::new(Origin::Kafka {
            topic: "t".into(),
            partition: 3,
        });
        let mut batch = RawBatch::default();
        batch.push(&fa, 0, 0, b"1");
        batch.push(&fa, 0, 2, b"2");
        batch.push(&kb, 1, 17, b"3");
        assert_eq!(batch.files.len(), 2);
        assert_eq!(batch.lanes, vec![0, 0, 1]);
        assert_eq!(
            batch.position(1),
            Position::File {
                path: a.clone(),
                offset: 2
            }
        );
        assert_eq!(
            batch.position(2),
            Position::Kafka {
                topic: "t".into(),
                partition: 3,
                offset: 17
            }
        );
    }
}
