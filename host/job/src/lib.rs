//! Job files: from YAML text to a validated [`Job`].
//!
//! Three steps, each with its own errors:
//! 1. [`interpolate`]: `${VAR:-default}` from the environment;
//! 2. [`spec`]: strict parsing (unknown keys are errors naming their line);
//! 3. [`validate`](Job::from_spec): references resolved (formats, components,
//!    outputs), paths made absolute against the job file's directory, built-in
//!    filters parsed. Checks that need a component's schema happen when the
//!    runtime loads the components, still before any record is read.

pub mod interpolate;
mod kafka;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wafer_core::filter::FilterSpec;
use wafer_core::framing::Framing;
use wafer_core::window::{AggFn, AggSpec, WindowKind};

use kafka::{kafka_sink, kafka_source};
use spec::{AggregateSpec, FilterEntry, FramingName, JobFile, Parallelism, WatermarkSpec};

/// Why a job file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("cannot read job file {path}: {source}")]
    Read {
        /// path
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
    /// A `${VAR}` could not be resolved.
    #[error("{path}: {source}")]
    Interpolation {
        /// path
        path: PathBuf,
        /// cause
        source: interpolate::InterpolationError,
    },
    /// Not valid YAML, or not the expected shape (unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// path
        path: PathBuf,
        /// serde's message, with line and column
        message: String,
    },
    /// Well-formed, but something in it does not make sense.
    #[error("{path}: {at}: {message}")]
    Invalid {
        /// path
        path: PathBuf,
        /// where in the job (`sources.events.format`)
        at: String,
        /// what is wrong
        message: String,
    },
}

/// Reserved output names.
pub const DLQ_OUTPUT: &str = "dlq";

/// A validated job, ready to be planned.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// The job file.
    pub path: PathBuf,
    /// Workers per stage.
    pub parallelism: usize,
    /// Records per batch.
    pub batch_size: usize,
    /// Batches buffered between stages.
    pub channel_capacity: usize,
    /// Guest limits.
    pub limits: GuestLimits,
    /// Components by name, with absolute paths.
    pub components: BTreeMap<String, PathBuf>,
    /// Sources, in name order.
    pub sources: Vec<Source>,
    /// The keyed stage, if the job has windows or processors.
    pub keyed: Option<Keyed>,
    /// The sink.
    pub sink: Sink,
    /// Periodic checkpoints, if on.
    pub checkpoints: Option<Checkpoints>,
}

/// Periodic checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    /// Where checkpoints and savepoints live.
    pub dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept.
    pub retain: usize,
    /// Checkpoints that may fail in a row before the job fails.
    pub tolerable_failures: u32,
    /// Dirty state entries a keyed worker keeps between batches before it
    /// writes the oldest back early (`None`: only at barriers).
    pub max_dirty_entries: Option<usize>,
    /// Entries a keyed worker's freeze captures between two batches.
    pub freeze_slice: usize,
}

/// The keyed stage: windows and processors over keyed sources.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// Keyed workers.
    pub parallelism: usize,
    /// Allowed lateness in milliseconds.
    pub allowed_lateness_ms: i64,
    /// Where late records go, if anywhere.
    pub late_output: Option<String>,
    /// RocksDB directory to keep; `None`: a temporary one.
    pub state_dir: Option<PathBuf>,
    /// Cache entries per keyed worker.
    pub cache_entries: usize,
    /// Windows, in name order.
    pub windows: Vec<Window>,
    /// Processors, in name order.
    pub processors: Vec<ProcessorUse>,
}

/// A window run by the host.
#[derive(Debug, Clone)]
pub struct Window {
    /// Its name (the stable id of its state).
    pub name: String,
    /// Index of the source it reads.
    pub input: usize,
    /// Shape.
    pub kind: WindowKind,
    /// Filters on its input.
    pub filter: Vec<FilterSpec>,
    /// Aggregates.
    pub aggregates: Vec<AggSpec>,
    /// Output name.
    pub output: String,
    /// Field holding the window start.
    pub start_field: String,
    /// Field holding the window end.
    pub end_field: String,
}

/// A processor component in the keyed stage.
#[derive(Debug, Clone)]
pub struct ProcessorUse {
    /// Its name (the stable id of its state).
    pub name: String,
    /// The component and config.
    pub component: ComponentUse,
    /// Indexes of the sources it reads, in order.
    pub inputs: Vec<usize>,
    /// Job output for each of its outputs, where renamed.
    pub outputs: BTreeMap<String, String>,
}

/// Watermark settings of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Bounded out-of-orderness in milliseconds.
    pub out_of_orderness_ms: i64,
    /// Idle timeout.
    pub idle_timeout: Duration,
}

/// Guest limits of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Deadline of one guest call.
    pub call_timeout: Duration,
    /// Memory cap of a guest instance.
    pub max_memory: usize,
    /// Whether guests see the real clock.
    pub clock: bool,
}

/// A component used by a stage, with its config as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentUse {
    /// The component's name in `components`.
    pub component: String,
    /// Its config, as JSON.
    pub config: String,
}

/// One filter step of a source.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterStep {
    /// A built-in filter.
    Builtin(FilterSpec),
    /// A filter component.
    Component(ComponentUse),
}

/// Where a source reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Files matching a path, directory or glob.
    File {
        /// absolute path, directory or glob
        path: String,
        /// largest record
        max_record: usize,
    },
    /// Kafka topics.
    Kafka(KafkaSource),
}

/// A Kafka source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topics read.
    pub topics: Vec<String>,
    /// Consumer group (offsets are committed under it for monitoring).
    pub group: String,
    /// Stable id of the source's state.
    pub id: String,
    /// Where to start without a stored position.
    pub start: KafkaStart,
    /// Stop at the end offsets seen at start.
    pub bounded: bool,
    /// How long to retry unreachable brokers at start.
    pub connect_timeout: Duration,
    /// librdkafka properties passed through.
    pub properties: Vec<(String, String)>,
}

/// Where a Kafka source starts reading a partition it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaStart {
    /// The group's committed offset (earliest if none).
    Committed,
    /// The first retained offset.
    Earliest,
    /// The end: only new messages.
    Latest,
    /// The first message at or after this time (epoch ms).
    Timestamp(i64),
}

/// A source and the stages that run right after it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The source's name.
    pub name: String,
    /// Its stable id: where its position is found in checkpoints and
    /// savepoints, whatever the job's other changes.
    pub id: String,
    /// Where it reads.
    pub kind: SourceKind,
    /// How records are delimited.
    pub framing: Framing,
    /// The deserializer.
    pub deserializer: ComponentUse,
    /// Filters, in order.
    pub filters: Vec<FilterStep>,
    /// The output its records go to directly, if any.
    pub output: Option<String>,
    /// Key fields, if its records reach the keyed stage.
    pub key_by: Option<Vec<String>>,
    /// Watermark settings.
    pub watermark: Watermark,
    /// Records read per second at most (`None`: as fast as it goes).
    pub max_records_per_second: Option<u64>,
}

/// Where outputs are written: Kafka topics for the outputs the Kafka sink
/// takes, `<dir>/<output>.jsonl` files for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    /// Directory of the file sink.
    pub files: Option<PathBuf>,
    /// The Kafka sink.
    pub kafka: Option<KafkaSink>,
}

impl Sink {
    /// Whether output `name` goes to Kafka.
    pub fn to_kafka(&self, name: &str) -> bool {
        self.kafka
            .as_ref()
            .is_some_and(|k| k.outputs.as_ref().is_none_or(|o| o.contains(name)))
    }
}

/// The Kafka sink, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSink {
    /// Bootstrap servers.
    pub brokers: String,
    /// Outputs it takes (`None`: all).
    pub outputs: Option<BTreeSet<String>>,
    /// Explicit topics by output.
    pub topics: BTreeMap<String, String>,
    /// Prefix of default topic names.
    pub topic_prefix: String,
    /// Row fields forming the message key.
    pub key_by: Vec<String>,
    /// librdkafka `compression.codec`.
    pub compression: String,
    /// Kafka transactions.
    pub exactly_once: bool,
    /// Prefix of transactional ids.
    pub transactional_id: String,
    /// How often an exactly-once sink commits.
    pub commit_interval: Duration,
    /// librdkafka properties passed through.
    pub properties: Vec<(String, String)>,
}

impl KafkaSink {
    /// The topic output `name` is written to.
    pub fn topic(&self, name: &str) -> String {
        match self.topics.get(name) {
            Some(t) => t.clone(),
            None => format!("{}{name}", self.topic_prefix),
        }
    }
}

impl Job {
    /// Reads, interpolates (from the process environment), parses and
    /// validates a job file.
    pub fn load(path: &Path) -> Result<Job, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, |name| std::env::var(name).ok())
    }

    /// Like [`load`](Self::load) from text, with a given environment.
    pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Job, JobError> {
        let text = interpolate::interpolate(text, env).map_err(|source| JobError::Interpolation {
            path: path.to_path_buf(),
            source,
        })?;
        let spec: JobFile = serde_yaml::from_str(&text).map_err(|e| JobError::Parse {
            path: path.to_path_buf(),
            message: pinpoint_unknown_key(&text, &e.to_string()),
        })?;
        Self::from_spec(path, spec)
    }

    /// Validates a parsed job file.
    pub fn from_spec(path: &Path, mut spec: JobFile) -> Result<Job, JobError> {
        let invalid = |at: &str, message: String| JobError::Invalid {
            path: path.to_path_buf(),
            at: at.to_string(),
            message,
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        // Absolute paths make dead-letter positions and messages unambiguous.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };

        if spec.name.trim().is_empty() {
            return Err(invalid("name", "the job needs a name".into()));
        }
        let parallelism = match spec.parallelism {
            Parallelism::Auto => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            Parallelism::Fixed(n) => n,
        };
        let batch_size = spec.batch_size.unwrap_or(1024);
        if !(1..=65_536).contains(&batch_size) {
            return Err(invalid(
                "batch_size",
                format!("{batch_size} is not between 1 and 65536"),
            ));
        }
        let channel_capacity = spec.channel_capacity.unwrap_or(4);
        if channel_capacity == 0 {
            return Err(invalid("channel_capacity", "must be at least 1".into()));
        }
        let limits = GuestLimits {
            call_timeout: spec.limits.call_timeout.unwrap_or(Duration::from_secs(1)),
            max_memory: spec.limits.memory.unwrap_or(256 << 20),
            clock: spec.limits.clock,
        };
        if limits.call_timeout.is_zero() {
            return Err(invalid("limits.call_timeout", "must be more than zero".into()));
        }
        if limits.max_memory < (1 << 20) {
            return Err(invalid("limits.memory", "must be at least 1MiB".into()));
        }

        let mut components = BTreeMap::new();
        for (name, p) in &spec.components {
            if p.trim().is_empty() {
                return Err(invalid(&format!("components.{name}"), "empty path".into()));
            }
            components.insert(name.clone(), resolve(p));
        }
        let component_ref = |at: &str, name: &str| -> Result<(), JobError> {
            if components.contains_key(name) {
                Ok(())
            } else {
                let known: Vec<&str> = components.keys().map(String::as_str).collect();
                Err(invalid(
                    at,
                    format!(
                        "unknown component `{name}` (components: {})",
                        if known.is_empty() {
                            "none declared".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
        };
        for (name, f) in &spec.formats {
            component_ref(&format!("formats.{name}.deserializer"), &f.deserializer)?;
        }

        if spec.sources.is_empty() {
            return Err(invalid("sources", "the job needs at least one source".into()));
        }
        let has_keyed = !spec.windows.is_empty() || !spec.processors.is_empty();
        let job_watermark = watermark(&spec.watermark, None);
        let mut sources = Vec::new();
        for (name, s) in std::mem::take(&mut spec.sources) {
            let at = format!("sources.{name}");
            // A source may name both a file and Kafka: it reads Kafka when
            // brokers are given (`KAFKA_BROKERS` set), else the file. So one
            // job file runs on files or on topics.
            let use_kafka = match (&s.file, &s.kafka) {
                (_, Some(k)) if !k.brokers.trim().is_empty() => true,
                (None, Some(_)) => true,
                _ => false,
            };
            let kind = match (&s.file, &s.kafka) {
                (_, Some(k)) if use_kafka => {
                    SourceKind::Kafka(kafka_source(&spec.name, &at, k).map_err(|(a, m)| invalid(&a, m))?)
                }
                (Some(f), _) => {
                    if f.path.trim().is_empty() {
                        return Err(invalid(&format!("{at}.file.path"), "empty path".into()));
                    }
                    SourceKind::File {
                        path: resolve(&f.path).to_string_lossy().into_owned(),
                        max_record: f.max_record.unwrap_or(16 << 20),
                    }
                }
                _ => return Err(invalid(&at, "a source needs a kind (`file` or `kafka`)".into())),
            };
            let format = spec.formats.get(&s.format).ok_or_else(|| {
                let known: Vec<&str> = spec.formats.keys().map(String::as_str).collect();
                invalid(
                    &format!("{at}.format"),
                    format!(
                        "unknown format `{}` (formats: {})",
                        s.format,
                        if known.is_empty() {
                            "none declared".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
            let framing = match format.framing {
                FramingName::Lines => Framing::Lines,
                FramingName::LengthDelimited => Framing::LengthDelimited,
            };
            let deserializer = ComponentUse {
                component: format.deserializer.clone(),
                config: config_json(&format.config)
                    .map_err(|m| invalid(&format!("formats.{}.config", s.format), m))?,
            };
            let mut filters = Vec::new();
            for (i, f) in s.filters.into_iter().enumerate() {
                let fat = format!("{at}.filters[{i}]");
                filters.push(filter_step(f).map_err(|m| invalid(&fat, m))?);
                if let Some(FilterStep::Component(c)) = filters.last() {
                    component_ref(&fat, &c.component)?;
                }
            }
            let output = match s.output {
                Some(o) => Some(o),
                None if has_keyed => None,
                None => Some(name.clone()),
            };
            if let Some(o) = &output {
                check_output_name(o).map_err(|m| invalid(&format!("{at}.output"), m))?;
            }
            let key_by = s.key_by.or_else(|| spec.key_by.clone());
            if key_by.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(
                    &format!("{at}.key_by"),
                    "needs at least one field".into(),
                ));
            }
            let watermark = match &s.watermark {
                Some(w) => watermark(w, Some(job_watermark)),
                None => job_watermark,
            };
            let id = match (&kind, &s.file) {
                (SourceKind::Kafka(k), _) => k.id.clone(),
                (SourceKind::File { .. }, Some(f)) => match f.id.as_deref().map(str::trim) {
                    Some(id) if !id.is_empty() => id.to_string(),
                    // The path as written (before resolving), so that moving
                    // the job file or the checkout keeps the id.
                    _ => format!("file:{}", f.path.trim()),
                },
                (SourceKind::File { path, .. }, None) => format!("file:{path}"),
            };
            if s.max_records_per_second == Some(0) {
                return Err(invalid(
                    &format!("{at}.max_records_per_second"),
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            sources.push(Source {
                name,
                id,
                kind,
                framing,
                deserializer,
                filters,
                output,
                key_by,
                watermark,
                max_records_per_second: s.max_records_per_second,
            });
        }
        let keyed = if has_keyed {
            Some(keyed_stage(
                &spec,
                &sources,
                parallelism,
                &resolve,
                &invalid,
                &component_ref,
            )?)
        } else {
            None
        };

        // Like a source's, the Kafka sink is off while its brokers are empty.
        let kafka_sink = match &spec.sink.kafka {
            Some(k) if !k.brokers.trim().is_empty() => {
                Some(kafka_sink(&spec.name, k, &spec.key_by).map_err(|(a, m)| invalid(&a, m))?)
            }
            _ => None,
        };
        let sink = Sink {
            files: spec.sink.file.as_ref().map(|f| resolve(&f.dir)),
            kafka: kafka_sink,
        };
        if sink.files.is_none() && sink.kafka.is_none() {
            return Err(invalid("sink", "a sink needs a kind (`file` or `kafka`)".into()));
        }
        let checkpoints = match spec.checkpoints.dir.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => {
                let interval = spec.checkpoints.interval.unwrap_or(Duration::from_secs(10));
                if interval.is_zero() {
                    return Err(invalid("checkpoints.interval", "must be more than 0".into()));
                }
                let retain = spec.checkpoints.retain.unwrap_or(3);
                if retain == 0 {
                    return Err(invalid("checkpoints.retain", "keep at least 1 checkpoint".into()));
                }
                let freeze_slice = spec.checkpoints.freeze_slice.unwrap_or(4096);
                if freeze_slice == 0 {
                    return Err(invalid(
                        "checkpoints.freeze_slice",
                        "capture at least 1 entry per step".into(),
                    ));
                }
                Some(Checkpoints {
                    dir: resolve(d),
                    interval,
                    retain,
                    tolerable_failures: spec.checkpoints.tolerable_failures.unwrap_or(3),
                    max_dirty_entries: spec.checkpoints.max_dirty_entries,
                    freeze_slice,
                })
            }
            _ => None,
        };
        let mut ids = BTreeMap::new();
        for s in &sources {
            if let Some(other) = ids.insert(s.id.as_str(), s.name.as_str()) {
                return Err(invalid(
                    &format!("sources.{}", s.name),
                    format!(
                        "has the same state id `{}` as source `{other}`; give one an `id`",
                        s.id
                    ),
                ));
            }
        }

        Ok(Job {
            name: spec.name,
            path: path.to_path_buf(),
            parallelism,
            batch_size,
            channel_capacity,
            limits,
            components,
            sources,
            keyed,
            sink,
            checkpoints,
        })
    }

    /// Every output the job writes that is known before components start
    /// (processors add the outputs they declare), dead letters included.
    pub fn outputs(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.sources.iter().filter_map(|s| s.output.clone()).collect();
        if let Some(k) = &self.keyed {
            out.extend(k.windows.iter().map(|w| w.output.clone()));
            out.extend(k.late_output.iter().cloned());
        }
        out.insert(DLQ_OUTPUT.to_string());
        out
    }
}

fn watermark(w: &WatermarkSpec, base: Option<Watermark>) -> Watermark {
    let base = base.unwrap_or(Watermark {
        out_of_orderness_ms: 5_000,
        idle_timeout: Duration::from_secs(30),
    });
    Watermark {
        out_of_orderness_ms: w
            .out_of_orderness
            .map(|d| d.as_millis() as i64)
            .unwrap_or(base.out_of_orderness_ms),
        idle_timeout: w.idle_timeout.unwrap_or(base.idle_timeout),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Validates windows, processors and the keyed stage's settings.
fn keyed_stage(
    spec: &JobFile,
    sources: &[Source],
    parallelism: usize,
    resolve: &dyn Fn(&str) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> JobError,
    component_ref: &dyn Fn(&str, &str) -> Result<(), JobError>,
) -> Result<Keyed, JobError> {
    let source_index = |at: &str, name: &Option<String>| -> Result<usize, JobError> {
        match name {
            Some(n) => sources.iter().position(|s| &s.name == n).ok_or_else(|| {
                let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                invalid(
                    at,
                    format!("unknown source `{n}` (sources: {})", known.join(", ")),
                )
            }),
            None if sources.len() == 1 => Ok(0),
            None => Err(invalid(at, "the job has several sources: name the input".into())),
        }
    };
    let mut used = BTreeSet::new();
    let mut windows = Vec::new();
    for (name, w) in &spec.windows {
        let at = format!("windows.{name}");
        let input = source_index(&format!("{at}.input"), &w.input)?;
        used.insert(input);
        let kinds = [w.tumbling.is_some(), w.sliding.is_some(), w.session.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(invalid(
                &at,
                "a window is exactly one of `tumbling`, `sliding` or `session`".into(),
            ));
        }
        let kind = if let Some(size) = w.tumbling {
            WindowKind::Tumbling { size_ms: ms(size) }
        } else if let Some(sl) = &w.sliding {
            if sl.slide.is_zero() || sl.slide > sl.size {
                return Err(invalid(
                    &format!("{at}.sliding"),
                    "`slide` must be positive and at most `size`".into(),
                ));
            }
            WindowKind::Sliding {
                size_ms: ms(sl.size),
                slide_ms: ms(sl.slide),
            }
        } else if let Some(se) = &w.session {
            WindowKind::Session { gap_ms: ms(se.gap) }
        } else {
            return Err(invalid(&at, "missing window shape".into()));
        };
        let positive = match kind {
            WindowKind::Tumbling { size_ms } => size_ms > 0,
            WindowKind::Sliding { size_ms, .. } => size_ms > 0,
            WindowKind::Session { gap_ms } => gap_ms > 0,
        };
        if !positive {
            return Err(invalid(&at, "window length must be more than zero".into()));
        }
        let mut filter = Vec::new();
        for (i, f) in w.filter.iter().enumerate() {
            match filter_step(clone_filter(f)).map_err(|m| invalid(&format!("{at}.where[{i}]"), m))? {
                FilterStep::Builtin(b) => filter.push(b),
                FilterStep::Component(_) => {
                    return Err(invalid(
                        &format!("{at}.where[{i}]"),
                        "window filters are built-in filters; put components in the source's filters".into(),
                    ));
                }
            }
        }
        if w.aggregates.is_empty() {
            return Err(invalid(
                &format!("{at}.aggregates"),
                "a window needs at least one aggregate".into(),
            ));
        }
        let aggregates = w
            .aggregates
            .iter()
            .map(|(n, a)| AggSpec {
                name: n.clone(),
                func: match a {
                    AggregateSpec::Count => AggFn::Count,
                    AggregateSpec::Sum(f) => AggFn::Sum(f.clone()),
                    AggregateSpec::Min(f) => AggFn::Min(f.clone()),
                    AggregateSpec::Max(f) => AggFn::Max(f.clone()),
                    AggregateSpec::Avg(f) => AggFn::Avg(f.clone()),
                },
            })
            .collect();
        let output = w.output.clone().unwrap_or_else(|| name.clone());
        check_output_name(&output).map_err(|m| invalid(&format!("{at}.output"), m))?;
        windows.push(Window {
            name: name.clone(),
            input,
            kind,
            filter,
            aggregates,
            output,
            start_field: w.start_field.clone().unwrap_or_else(|| "window_start_ms".into()),
            end_field: w.end_field.clone().unwrap_or_else(|| "window_end_ms".into()),
        });
    }
    let mut processors = Vec::new();
    for (name, p) in &spec.processors {
        let at = format!("processors.{name}");
        component_ref(&format!("{at}.component"), &p.component)?;
        let inputs = match &p.inputs {
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    &format!("{at}.inputs"),
                    "needs at least one input".into(),
                ));
            }
            Some(list) => list
                .iter()
                .map(|n| source_index(&format!("{at}.inputs"), &Some(n.clone())))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![source_index(&format!("{at}.inputs"), &None)?],
        };
        used.extend(inputs.iter().copied());
        for o in p.outputs.values() {
            check_output_name(o).map_err(|m| invalid(&format!("{at}.outputs"), m))?;
        }
        processors.push(ProcessorUse {
            name: name.clone(),
            component: ComponentUse {
                component: p.component.clone(),
                config: config_json(&p.config).map_err(|m| invalid(&format!("{at}.config"), m))?,
            },
            inputs,
            outputs: p.outputs.clone(),
        });
    }
    for i in used {
        if sources[i].key_by.is_none() {
            return Err(invalid(
                &format!("sources.{}", sources[i].name),
                "its records reach windows or processors, so it needs `key_by` (here or at the top of the job)".into(),
            ));
        }
    }
    if let Some(late) = &spec.late_output {
        check_output_name(late).map_err(|m| invalid("late_output", m))?;
    }
    let keyed_parallelism = match spec.keyed_parallelism {
        Parallelism::Auto => parallelism,
        Parallelism::Fixed(n) => n,
    };
    if keyed_parallelism > wafer_core::key::KEY_GROUPS as usize {
        return Err(invalid(
            "keyed_parallelism",
            format!("at most {} keyed workers", wafer_core::key::KEY_GROUPS),
        ));
    }
    Ok(Keyed {
        parallelism: keyed_parallelism,
        allowed_lateness_ms: spec.allowed_lateness.map(ms).unwrap_or(0),
        late_output: spec.late_output.clone(),
        state_dir: spec
            .state
            .dir
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(resolve),
        cache_entries: spec.state.cache_entries.unwrap_or(1_000_000).max(1),
        windows,
        processors,
    })
}

fn clone_filter(f: &FilterEntry) -> FilterEntry {
    match f {
        FilterEntry::EventTime { from, until } => FilterEntry::EventTime {
            from: from.clone(),
            until: until.clone(),
        },
        FilterEntry::Sample { fraction, seed } => FilterEntry::Sample {
            fraction: *fraction,
            seed: *seed,
        },
        FilterEntry::SampleBy {
            field,
            fraction,
            seed,
        } => FilterEntry::SampleBy {
            field: field.clone(),
            fraction: *fraction,
            seed: *seed,
        },
        FilterEntry::Include { field, values } => FilterEntry::Include {
            field: field.clone(),
            values: values.clone(),
        },
        FilterEntry::Exclude { field, values } => FilterEntry::Exclude {
            field: field.clone(),
            values: values.clone(),
        },
        FilterEntry::Component { name, config } => FilterEntry::Component {
            name: name.clone(),
            config: config.clone(),
        },
    }
}

/// serde reports an unknown key at the start of its enclosing mapping; move
/// the reported line to the key itself, which is where the typo is.
fn pinpoint_unknown_key(text: &str, message: &str) -> String {
    let Some(key) = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(k, _)| k)
    else {
        return message.to_string();
    };
    let Some((head, tail)) = message.rsplit_once(" at line ") else {
        return message.to_string();
    };
    let Some(line) = tail
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<usize>().ok())
    else {
        return message.to_string();
    };
    let found = text
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find(|(_, l)| {
            let l = l.trim_start();
            let l = l.strip_prefix("- ").unwrap_or(l).trim_start();
            l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        });
    match found {
        Some((i, _)) => format!("{head} at line {}", i + 1),
        None => message.to_string(),
    }
}

/// Output names become file names: keep them tame; `dlq` is reserved.
fn check_output_name(name: &str) -> Result<(), String> {
    if name == DLQ_OUTPUT {
        return Err(format!("`{DLQ_OUTPUT}` is reserved for dead letters"));
    }
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
    {
        Ok(())
    } else {
        Err(format!(
            "output name `{name}` must use only letters, digits, `_`, `-` and `.`"
        ))
    }
}

fn config_json(v: &serde_yaml::Value) -> Result<String, String> {
    if v.is_null() {
        return Ok("{}".into());
    }
    serde_json::to_string(v).map_err(|e| format!("config cannot be expressed as JSON: {e}"))
}

fn filter_step(f: FilterEntry) -> Result<FilterStep, String> {
    let time = |v: Option<spec::ScalarString>| -> Result<Option<i64>, String> {
        v.map(|s| wafer_core::time::parse_timestamp_ms(&s.0).map_err(|e| e.to_string()))
            .transpose()
    };
    let fraction = |f: f64| -> Result<f64, String> {
        if (0.0..=1.0).contains(&f) {
            Ok(f)
        } else {
            Err(format!("fraction {f} is not between 0 and 1"))
        }
    };
    Ok(FilterStep::Builtin(match f {
        FilterEntry::EventTime { from, until } => {
            let (from, until) = (time(from)?, time(until)?);
            if from.is_none() && until.is_none() {
                return Err("event_time needs `from`, `until` or both".into());
            }
            if let (Some(a), Some(b)) = (from, until)
                && a >= b
            {
                return Err("event_time: `from` must be before `until`".into());
            }
            FilterSpec::EventTime { from, until }
        }
        FilterEntry::Sample { fraction: f, seed } => FilterSpec::Sample {
            fraction: fraction(f)?,
            seed,
        },
        FilterEntry::SampleBy {
            field,
            fraction: f,
            seed,
        } => FilterSpec::SampleBy {
            field,
            fraction: fraction(f)?,
            seed,
        },
        FilterEntry::Include { field, values } => FilterSpec::Include {
            field,
            values: values.into_iter().map(|v| v.0).collect(),
        },
        FilterEntry::Exclude { field, values } => FilterSpec::Exclude {
            field,
            values: values.into_iter().map(|v| v.0).collect(),
        },
        FilterEntry::Component { name, config } => {
            return Ok(FilterStep::Component(ComponentUse {
                component: name,
                config: config_json(&config)?,
            }));
        }
    }))
}

#[cfg(test)]
mod tests;
