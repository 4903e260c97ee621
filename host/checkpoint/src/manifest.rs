//! The manifest of a checkpoint or savepoint: everything needed to resume a
//! job as of one consistent cut of its input, except the state files
//! themselves, which it lists with their sizes and checksums.
//!
//! Encoded with prost (protobuf), so fields can be added without breaking
//! older manifests, and wrapped in an envelope (magic, format version,
//! length, CRC-32 of the body) so a torn or corrupted manifest is detected
//! before it is decoded.

use crate::CheckpointError;

/// Version of the manifest format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Checkpoint (periodic, retained K at a time) or savepoint (on demand,
/// retained until deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    /// Taken periodically; the last K are kept.
    Checkpoint = 0,
    /// Taken on demand; kept until deleted.
    Savepoint = 1,
}

/// One checkpoint or savepoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    /// Checkpoint number, increasing within a checkpoint directory.
    #[prost(uint64, tag = "2")]
    pub id: u64,
    /// Checkpoint or savepoint.
    #[prost(enumeration = "Kind", tag = "3")]
    pub kind: i32,
    /// When the cut was taken (epoch ms).
    #[prost(int64, tag = "4")]
    pub created_ms: i64,
    /// The job's name.
    #[prost(string, tag = "5")]
    pub job: String,
    /// Components in use, with a digest of their bytes.
    #[prost(message, repeated, tag = "6")]
    pub components: Vec<Component>,
    /// Source positions and deserialization watermarks, by stable id.
    #[prost(message, repeated, tag = "7")]
    pub sources: Vec<SourceState>,
    /// Per keyed worker: watermarks and stream time.
    #[prost(message, repeated, tag = "8")]
    pub keyed: Vec<KeyedWorker>,
    /// Outputs as of the cut.
    #[prost(message, repeated, tag = "9")]
    pub outputs: Vec<Output>,
    /// Operators (windows, processors) that own state, by name.
    #[prost(message, repeated, tag = "10")]
    pub operators: Vec<Operator>,
    /// Files of the state database (a RocksDB checkpoint).
    #[prost(message, repeated, tag = "11")]
    pub files: Vec<StateFile>,
    /// Deserialization workers per source when the cut was taken.
    #[prost(uint32, tag = "12")]
    pub parallelism: u32,
    /// Name of the savepoint (savepoints only).
    #[prost(string, tag = "13")]
    pub name: String,
    /// With an exactly-once Kafka sink: where the commit marker of the
    /// cut's transactions is kept.
    #[prost(message, optional, tag = "14")]
    pub kafka_commits: Option<KafkaCommits>,
}

/// Where an exactly-once Kafka sink keeps its commit marker (the id of the
/// newest cut whose records are committed), and what it knew when the cut
/// was written. The cut may only be restored once the marker reached it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KafkaCommits {
    /// Prefix of the sink's transactional ids.
    #[prost(string, tag = "1")]
    pub transactional_id: String,
    /// Producers in its pool (`<transactional_id>-epoch-<i>`).
    #[prost(uint32, tag = "2")]
    pub slots: u32,
    /// The consumer group whose offset is the marker.
    #[prost(string, tag = "3")]
    pub group: String,
    /// The topic at whose partition 0 the marker is kept.
    #[prost(string, tag = "4")]
    pub topic: String,
    /// The newest cut committed before this one was written (0: none).
    #[prost(uint64, tag = "5")]
    pub committed_before: u64,
}

/// A component the job used.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Component {
    /// Name in the job.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Version it declares.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Hex digest of the `.wasm` file.
    #[prost(string, tag = "3")]
    pub digest: String,
}

/// A source's position and its deserialization workers' watermarks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceState {
    /// Stable id (Kafka: topics and group; files: the path), under which the
    /// state is found again after the job changes.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Name in the job when the cut was taken (for messages).
    #[prost(string, tag = "2")]
    pub name: String,
    /// A file source's cursor.
    #[prost(message, optional, tag = "3")]
    pub file: Option<FileCursor>,
    /// A Kafka source's next offset per partition.
    #[prost(message, repeated, tag = "4")]
    pub kafka: Vec<PartitionOffset>,
    /// One entry per deserialization worker, in worker order.
    #[prost(message, repeated, tag = "5")]
    pub workers: Vec<WorkerWatermarks>,
    /// Whether the source had ended (read everything) at the cut.
    #[prost(bool, tag = "6")]
    pub ended: bool,
}

/// An ordered cursor over a file source: every file sorting before `file`
/// is done, `file` is read up to `offset`. `done` means every file is read.
/// This stays one entry however many files were read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileCursor {
    /// The file being read.
    #[prost(string, tag = "1")]
    pub file: String,
    /// Offset of the next unread record in it.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    /// Every file matched at the cut was read to its end.
    #[prost(bool, tag = "3")]
    pub done: bool,
    /// The last file read, when done (files sorting after it are new).
    #[prost(string, tag = "4")]
    pub last: String,
}

/// Next offset of one partition.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionOffset {
    /// Topic.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Partition.
    #[prost(int32, tag = "2")]
    pub partition: i32,
    /// Next offset to read.
    #[prost(int64, tag = "3")]
    pub offset: i64,
}

/// One deserialization worker's per-lane watermark state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerWatermarks {
    /// One per lane the worker knew.
    #[prost(message, repeated, tag = "1")]
    pub lanes: Vec<LaneMark>,
}

/// A lane's progress in one worker.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LaneMark {
    /// The lane: `topic/partition`, or empty for a file source.
    #[prost(string, tag = "1")]
    pub lane: String,
    /// Largest event time seen, if any.
    #[prost(int64, optional, tag = "2")]
    pub max_seen: Option<i64>,
    /// Whether the lane had finished.
    #[prost(bool, tag = "3")]
    pub finished: bool,
}

/// One keyed worker's time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyedWorker {
    /// Worker index.
    #[prost(uint32, tag = "1")]
    pub index: u32,
    /// The worker's (operator) watermark.
    #[prost(int64, tag = "2")]
    pub watermark: i64,
    /// Largest event time processed (TTL clocks start from it).
    #[prost(int64, tag = "3")]
    pub stream_time: i64,
    /// Watermark of each sender (deserialization worker), in sender order.
    #[prost(int64, repeated, tag = "4")]
    pub senders: Vec<i64>,
}

/// An output as of the cut.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Output {
    /// Output name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// For a file output: its length at the cut (a restore truncates to it,
    /// dropping what was written after the cut).
    #[prost(uint64, optional, tag = "2")]
    pub file_length: Option<u64>,
}

/// An operator that owns state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operator {
    /// Its name (`window:<name>`, `processor:<name>`, …).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its id in the state database.
    #[prost(uint32, tag = "2")]
    pub id: u32,
}

/// A file of the state database.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StateFile {
    /// Path relative to the database directory.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Where the storage keeps it.
    #[prost(string, tag = "2")]
    pub key: String,
    /// Size in bytes.
    #[prost(uint64, tag = "3")]
    pub size: u64,
    /// CRC-32 of its bytes.
    #[prost(uint32, tag = "4")]
    pub crc32: u32,
}

/// First bytes of every encoded manifest (the last byte is the envelope's
/// own layout version).
pub const MAGIC: [u8; 8] = *b"WAFERMF\x01";

/// Envelope header: magic, format version (u32 LE), body length (u64 LE),
/// CRC-32 of the body (u32 LE).
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

impl Manifest {
    /// Encodes the manifest in its envelope, as [`FORMAT_VERSION`].
    pub fn to_bytes(&self) -> Vec<u8> {
        envelope(FORMAT_VERSION, &prost::Message::encode_to_vec(self))
    }

    /// Decodes an envelope written by [`Manifest::to_bytes`]. `what` names
    /// the manifest (its storage key) in errors. The envelope is checked
    /// before the body is decoded, so a torn or flipped manifest is reported
    /// as such rather than decoded into something plausible.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            what: what.to_string(),
            reason,
        };
        // Only the bytes present are compared, so that a file cut inside
        // the magic reads as truncated, not as something else.
        let head = &bytes[..bytes.len().min(MAGIC.len())];
        if head != &MAGIC[..head.len()] {
            return Err(corrupt(format!(
                "bad magic {:?}, expected {:?} (not a wafer manifest)",
                head.escape_ascii().to_string(),
                MAGIC.escape_ascii().to_string()
            )));
        }
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let version = u32::from_le_bytes(le_array(&bytes[8..12]));
        let length = u64::from_le_bytes(le_array(&bytes[12..20]));
        let crc = u32::from_le_bytes(le_array(&bytes[20..24]));
        let body = &bytes[HEADER_LEN..];
        let actual = body.len() as u64;
        if actual < length {
            return Err(corrupt(format!(
                "truncated: body is {actual} bytes, header says {length}"
            )));
        }
        if actual > length {
            return Err(corrupt(format!(
                "{} stray bytes after the {length}-byte body",
                actual - length
            )));
        }
        let actual_crc = crc32fast::hash(body);
        if actual_crc != crc {
            return Err(corrupt(format!(
                "CRC-32 mismatch: body has {actual_crc:08x}, header says {crc:08x}"
            )));
        }
        if version > FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version} is newer than {FORMAT_VERSION}, the newest this build reads"
            )));
        }
        <Manifest as prost::Message>::decode(body)
            .map_err(|e| corrupt(format!("cannot decode the manifest body: {e}")))
    }
}

/// Wraps an encoded manifest body in the envelope.
pub(crate) fn envelope(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The first `N` bytes of `bytes` as an array (callers pass exactly `N`).
fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}
