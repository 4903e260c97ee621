//! The job file as written: strict serde types mirroring the YAML. Every
//! struct rejects unknown keys, so a typo is an error that names its line.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The root of a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name.
    pub name: String,
    /// Workers per stage: `auto` (the machine's cores) or a number.
    #[serde(default)]
    pub parallelism: Parallelism,
    /// Records per batch handed between stages and to guests.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Batches buffered between two stages before the upstream one waits.
    #[serde(default)]
    pub channel_capacity: Option<usize>,
    /// Limits on guest components.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Components by name: the path of each `.wasm` file (relative to the
    /// job file).
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Input formats by name: framing plus deserializer.
    #[serde(default)]
    pub formats: BTreeMap<String, FormatSpec>,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceSpec>,
    /// Fields the keyed stage keys every source by (a source may override).
    #[serde(default)]
    pub key_by: Option<Vec<String>>,
    /// Watermarks of every source (a source may override).
    #[serde(default)]
    pub watermark: WatermarkSpec,
    /// How far behind the watermark a record may be and still count.
    #[serde(default, deserialize_with = "opt_duration")]
    pub allowed_lateness: Option<Duration>,
    /// The output late records go to, whole (without it they are dropped and
    /// counted).
    #[serde(default)]
    pub late_output: Option<String>,
    /// Keyed workers (default: `parallelism`).
    #[serde(default)]
    pub keyed_parallelism: Parallelism,
    /// Keyed state.
    #[serde(default)]
    pub state: StateSpec,
    /// Windows run by the host, by name.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub windows: BTreeMap<String, WindowSpec>,
    /// Processor components, by name.
    #[serde(default)]
    pub processors: BTreeMap<String, ProcessorSpec>,
    /// Where outputs go.
    pub sink: SinkSpec,
    /// Periodic checkpoints (off without a directory).
    #[serde(default)]
    pub checkpoints: CheckpointSpec,
}

/// Checkpoint settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Directory of checkpoints and savepoints; empty or absent: off.
    #[serde(default)]
    pub dir: Option<String>,
    /// Time between checkpoints (default 10s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Complete checkpoints kept (default 3).
    #[serde(default)]
    pub retain: Option<usize>,
    /// Checkpoints that may fail in a row before the job fails (default 3).
    #[serde(default)]
    pub tolerable_failures: Option<u32>,
    /// Dirty state entries a keyed worker keeps between batches; more are
    /// written to RocksDB early, bounding what a barrier freezes (default:
    /// none written early).
    #[serde(default)]
    pub max_dirty_entries: Option<usize>,
    /// Entries a keyed worker's freeze captures between two batches after
    /// a barrier (default 4096): the longest pause a checkpoint causes.
    #[serde(default)]
    pub freeze_slice: Option<usize>,
}

/// Watermark settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// How far out of event-time order records may arrive (default 5s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub out_of_orderness: Option<Duration>,
    /// An input silent this long (wall clock) stops holding the watermark
    /// back until it sends again (default 30s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
}

/// Keyed state settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// RocksDB directory (default: a temporary directory removed at exit).
    #[serde(default)]
    pub dir: Option<String>,
    /// Entries kept in memory per keyed worker (default 1,000,000).
    #[serde(default)]
    pub cache_entries: Option<usize>,
}

/// A window run by the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The source it reads (default: the only source).
    #[serde(default)]
    pub input: Option<String>,
    /// Tumbling windows of this size.
    #[serde(default, deserialize_with = "opt_duration")]
    pub tumbling: Option<Duration>,
    /// Sliding windows.
    #[serde(default)]
    pub sliding: Option<SlidingSpec>,
    /// Session windows.
    #[serde(default)]
    pub session: Option<SessionSpec>,
    /// Filters on the window's input (same forms as a source's filters).
    #[serde(default, rename = "where")]
    pub filter: Vec<FilterEntry>,
    /// Aggregates by output field name.
    pub aggregates: BTreeMap<String, AggregateSpec>,
    /// The output (default: the window's name).
    #[serde(default)]
    pub output: Option<String>,
    /// Name of the window-start field (default `window_start_ms`).
    #[serde(default)]
    pub start_field: Option<String>,
    /// Name of the window-end field (default `window_end_ms`).
    #[serde(default)]
    pub end_field: Option<String>,
}

/// Sliding windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingSpec {
    /// Window length.
    #[serde(deserialize_with = "req_duration")]
    pub size: Duration,
    /// Distance between window starts.
    #[serde(deserialize_with = "req_duration")]
    pub slide: Duration,
}

/// Session windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Inactivity gap.
    #[serde(deserialize_with = "req_duration")]
    pub gap: Duration,
}

/// An aggregate: `count`, or `{ sum | min | max | avg: field }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AggregateSpec {
    /// Number of records.
    Count,
    /// Sum of a field.
    Sum(String),
    /// Smallest value of a field.
    Min(String),
    /// Largest value of a field.
    Max(String),
    /// Mean of a field.
    Avg(String),
}

/// A processor component run by the keyed stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSpec {
    /// The component.
    pub component: String,
    /// The sources it reads, in order (default: the only source). Two or
    /// more make it a co-processor.
    #[serde(default)]
    pub inputs: Option<Vec<String>>,
    /// Config handed to its `init`.
    #[serde(default)]
    pub config: serde_yaml::Value,
    /// Job output for each of its outputs (default: the same name).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

/// `auto` or a positive number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// One worker per core.
    #[default]
    Auto,
    /// This many workers.
    Fixed(usize),
}

impl<'de> Deserialize<'de> for Parallelism {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = ScalarString::deserialize(d)?.0;
        match s.trim() {
            "auto" | "" => Ok(Parallelism::Auto),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(de::Error::custom(format!(
                    "parallelism must be `auto` or a positive number, not `{n}`"
                ))),
                Ok(n) => Ok(Parallelism::Fixed(n)),
            },
        }
    }
}

/// Guest limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Deadline of one guest call (`500ms`, `2s`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub call_timeout: Option<Duration>,
    /// Memory cap of a guest instance (`64MiB`).
    #[serde(default, deserialize_with = "opt_size")]
    pub memory: Option<usize>,
    /// Give guests the real clock (otherwise it is frozen at the epoch).
    #[serde(default)]
    pub clock: bool,
}

/// An input format: how records are framed and which deserializer decodes
/// them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// `lines` or `length-delimited`.
    pub framing: FramingName,
    /// The deserializer component's name.
    pub deserializer: String,
    /// Config handed to the deserializer's `init`.
    #[serde(default)]
    pub config: serde_yaml::Value,
}

/// Framing names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FramingName {
    /// One record per line.
    Lines,
    /// Varint length prefix.
    LengthDelimited,
}

/// A source of records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Read files.
    #[serde(default)]
    pub file: Option<FileSourceSpec>,
    /// Read Kafka topics.
    #[serde(default)]
    pub kafka: Option<KafkaSourceSpec>,
    /// The name of the format (in `formats`) of the records.
    pub format: String,
    /// Filters run in order right after deserialization; each is a one-key
    /// map (`- include: {...}`).
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub filters: Vec<FilterEntry>,
    /// The output the source's records go to (default: the source's name
    /// when the job has no windows or processors).
    #[serde(default)]
    pub output: Option<String>,
    /// Key fields for the keyed stage (overrides the job's `key_by`).
    #[serde(default)]
    pub key_by: Option<Vec<String>>,
    /// Watermark settings (override the job's).
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// Reads at most this many records per second (a backfill that must
    /// not flood its sink, a test that needs the job to take its time).
    #[serde(default)]
    pub max_records_per_second: Option<u64>,
}

/// A file source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// A file, a directory (every file in it) or a glob.
    pub path: String,
    /// Largest record accepted; larger ones are dead-lettered.
    #[serde(default, deserialize_with = "opt_size")]
    pub max_record: Option<usize>,
    /// Stable id of the source's state (default: `file:` and the path).
    #[serde(default)]
    pub id: Option<String>,
}

/// A Kafka source: raw message values of one or more topics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Bootstrap servers (`host:port,host:port`).
    pub brokers: String,
    /// Topics, as a list or a comma-separated string.
    pub topics: StringList,
    /// Consumer group (default: `wafer-<job name>`).
    #[serde(default)]
    pub group: Option<String>,
    /// Stable id of the source's state (default: derived from topics and group).
    #[serde(default)]
    pub id: Option<String>,
    /// Where to start without a stored position: `committed` (default),
    /// `earliest`, `latest`, or a timestamp (epoch ms or RFC 3339).
    #[serde(default)]
    pub start: Option<ScalarString>,
    /// Stop at the end offsets seen at start.
    #[serde(default)]
    pub bounded: Option<ScalarString>,
    /// How long to keep retrying unreachable brokers at start.
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Any librdkafka consumer property, passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, ScalarString>,
}

/// A list of strings written as a YAML list or as one comma-separated string
/// (which is what an environment variable gives).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(s) => s.split(',').map(str::to_string).collect(),
            Raw::Many(v) => v,
        };
        Ok(StringList(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

/// One filter step.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterEntry {
    /// Keep records with `from <= event time < until`.
    EventTime {
        /// inclusive lower bound (epoch ms or RFC 3339)
        #[serde(default)]
        from: Option<ScalarString>,
        /// exclusive upper bound
        #[serde(default)]
        until: Option<ScalarString>,
    },
    /// Keep a pseudo-random fraction of records.
    Sample {
        /// fraction kept
        fraction: f64,
        /// hash seed
        #[serde(default)]
        seed: u64,
    },
    /// Keep a stable fraction of entities.
    SampleBy {
        /// entity field
        field: String,
        /// fraction kept
        fraction: f64,
        /// hash seed
        #[serde(default)]
        seed: u64,
    },
    /// Keep records whose field has one of the values.
    Include {
        /// tested field
        field: String,
        /// accepted values
        values: Vec<ScalarString>,
    },
    /// Drop records whose field has one of the values.
    Exclude {
        /// tested field
        field: String,
        /// rejected values
        values: Vec<ScalarString>,
    },
    /// Run a filter component.
    Component {
        /// the component's name
        name: String,
        /// config handed to its `init`
        #[serde(default)]
        config: serde_yaml::Value,
    },
}

/// Where outputs go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// JSON lines files, one per output, in a directory.
    #[serde(default)]
    pub file: Option<FileSinkSpec>,
    /// Kafka topics, one per output.
    #[serde(default)]
    pub kafka: Option<KafkaSinkSpec>,
}

/// The Kafka sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// Bootstrap servers.
    pub brokers: String,
    /// The outputs written to Kafka (default: all; the others go to `file`).
    #[serde(default)]
    pub outputs: Option<StringList>,
    /// Topic of each output (default: `<topic_prefix><output>`).
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// Prefix of default topic names.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// Fields of an output row that form the message key (default: the
    /// job's `key_by`).
    #[serde(default)]
    pub key_by: Option<StringList>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Option<String>,
    /// `at-least-once` (default) or `exactly-once` (Kafka transactions).
    #[serde(default)]
    pub delivery: Option<String>,
    /// Prefix of transactional ids (default: `wafer-<job name>`).
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How often an exactly-once sink commits its transaction.
    #[serde(default, deserialize_with = "opt_duration")]
    pub commit_interval: Option<Duration>,
    /// Any librdkafka producer property, passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, ScalarString>,
}

/// The file sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    /// Directory of `<output>.jsonl` files.
    pub dir: String,
}

/// A YAML scalar (string, number or bool) read as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = ScalarString::deserialize(d)?.0;
    wafer_core::time::parse_duration(&s)
        .map(Some)
        .map_err(de::Error::custom)
}

fn req_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = ScalarString::deserialize(d)?.0;
    wafer_core::time::parse_duration(&s).map_err(de::Error::custom)
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let s = ScalarString::deserialize(d)?.0;
    parse_size(&s).map(Some).map_err(de::Error::custom)
}

/// Parses `1024`, `64KiB`, `16MiB`, `1GiB` (also `KB`, `MB`, `GB` as powers
/// of 1000).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try `64MiB`)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{text}`: unknown unit `{other}` (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}
