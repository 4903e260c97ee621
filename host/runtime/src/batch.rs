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

    /// The raw bytes of record `i` (empty if there is none).
    pub fn payload(&self, i: usize) -> &[u8] {
        self.records.as_batch().get(i).unwrap_or_default()
    }

    /// Where record `i` came from.
    pub fn position(&self, i: usize) -> Position {
        let offset = self.offsets.get(i).copied().unwrap_or_default();
        position_of(self.origin(i).map(|o| &**o), offset)
    }

    /// The origin of record `i` (the file or partition of its run).
    pub fn origin(&self, i: usize) -> Option<&Arc<Origin>> {
        if let [(_, only)] = &self.files[..] {
            return Some(only);
        }
        let run = self.files.partition_point(|(start, _)| *start as usize <= i);
        run.checked_sub(1).and_then(|r| self.files.get(r)).map(|(_, o)| o)
    }
}

/// The position of a record at `offset` of `origin`.
fn position_of(origin: Option<&Origin>, offset: u64) -> Position {
    match origin {
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

/// The positions of a batch's records, kept as an origin number and an
/// offset per record: a [`Position`] holds its file's or topic's name as an
/// `Arc`, and cloning and dropping one per record on two threads made every
/// record bounce the name's reference count between cores.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    origins: Vec<Arc<Origin>>,
    at: Vec<(u32, u64)>,
}

impl Positions {
    /// Room for `n` records.
    pub fn with_capacity(n: usize) -> Self {
        Positions {
            origins: Vec::new(),
            at: Vec::with_capacity(n),
        }
    }

    /// Appends the position `offset` of `origin` (`None`: unknown).
    #[inline]
    pub fn push(&mut self, origin: Option<&Arc<Origin>>, offset: u64) {
        let Some(origin) = origin else {
            self.at.push((u32::MAX, offset));
            return;
        };
        // Records come in runs of one origin, and parts of one chunk share
        // their origins' `Arc`s: comparing pointers finds it without a clone.
        let n = match self.origins.iter().rposition(|o| Arc::ptr_eq(o, origin)) {
            Some(n) => n,
            None => {
                self.origins.push(origin.clone());
                self.origins.len() - 1
            }
        };
        self.at.push((n as u32, offset));
    }

    /// Appends the position of record `i` of `other`.
    #[inline]
    pub fn push_from(&mut self, other: &Positions, i: usize) {
        if let Some(&(o, offset)) = other.at.get(i) {
            self.push(other.origins.get(o as usize), offset);
        }
    }

    /// Where record `i` came from.
    pub fn get(&self, i: usize) -> Position {
        let (o, offset) = self.at.get(i).copied().unwrap_or((u32::MAX, 0));
        position_of(self.origins.get(o as usize).map(|o| &**o), offset)
    }

    /// Number of records.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_keep_each_records_origin_through_a_merge() {
        let a = Arc::new(Origin::File("a".into()));
        let k = Arc::new(Origin::Kafka {
            topic: "t".into(),
            partition: 3,
        });
        let (mut p, mut q) = (Positions::default(), Positions::default());
        p.push(Some(&a), 0);
        q.push(Some(&k), 7);
        p.push(Some(&a), 10);
        q.push(None, 9);
        q.push(Some(&a), 20);
        let mut merged = Positions::with_capacity(5);
        for (part, i) in [(&p, 0), (&q, 0), (&p, 1), (&q, 1), (&q, 2)] {
            merged.push_from(part, i);
        }
        let file = |offset| Position::File {
            path: "a".into(),
            offset,
        };
        let got: Vec<Position> = (0..merged.len()).map(|i| merged.get(i)).collect();
        assert_eq!(
            got,
            vec![
                file(0),
                Position::Kafka {
                    topic: "t".into(),
                    partition: 3,
                    offset: 7
                },
                file(10),
                Position::File {
                    path: "".into(),
                    offset: 9
                },
                file(20),
            ]
        );
        assert_eq!(merged.origins.len(), 2, "one entry per origin, not per record");
    }

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
