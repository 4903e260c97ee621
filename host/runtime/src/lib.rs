//! The running pipeline of a wafer job.
//!
//! [`prepare`] turns a validated job into ready-to-run threads: it loads and
//! checks every component, instantiates one deserializer per worker, checks
//! filters against the deserializer's schema and opens sources and sinks, so
//! that every mistake is reported before the first record is read.
//! [`Prepared::run`] then runs the threads to the end of the input:
//!
//! ```text
//! source thread ──hash(payload)──▶ N deserialization workers ──▶ outputs
//!      │ framing errors                 │ decode/filter errors
//!      └──────────────▶ dlq ◀───────────┘
//! ```
//!
//! Channels are bounded: a slow stage makes the ones before it wait rather
//! than buffer without limit.

mod batch;
mod dead_letters;
mod deser_worker;
mod downstream;
mod source;
mod telemetry;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use wafer_connectors::file_sink::FileSink;
use wafer_connectors::file_source::{FileReader, list_files};
use wafer_connectors::{SinkError, SourceError};
use wafer_core::json::RowJson;
use wafer_job::{FilterStep, Job, Sink, SourceKind};
use wafer_metrics::Metrics;
use wafer_wasm::{
    ComponentSlot, DeserializeStage, FilterStage, Grants, Limits, LoadError, WasmRuntime, World,
};

pub use deser_worker::Deserialize;
pub use source::SourceStats;
pub use wafer_wasm::{Decoded, FailKind, Failure};

use batch::RawBatch;
use dead_letters::DeadLetters;
use deser_worker::{DeserWorker, Step};
use downstream::Downstream;
use telemetry::MetricsTelemetry;

/// Why a job could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A component could not be loaded or started.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A source could not be read.
    #[error("source `{source_name}`: {error}")]
    Source {
        /// the source
        source_name: String,
        /// cause
        error: SourceError,
    },
    /// An output could not be written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The job does not fit its components (a filter naming a field the
    /// deserializer does not produce, say).
    #[error("{at}: {message}")]
    Plan {
        /// where in the job
        at: String,
        /// what is wrong
        message: String,
    },
    /// A worker thread died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a finished run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Per source.
    pub sources: Vec<(String, SourceStats)>,
    /// Bytes written per output.
    pub outputs: Vec<(String, u64)>,
}

struct PreparedSource {
    name: Arc<str>,
    reader: FileReader,
    workers: Vec<DeserWorker>,
    dead_letters: DeadLetters,
}

/// A job ready to run: components loaded and instantiated, sources and
/// sinks open.
pub struct Prepared {
    batch_size: usize,
    channel_capacity: usize,
    sources: Vec<PreparedSource>,
    sink: FileSink,
}

/// Makes a native deserializer for one worker.
pub type NativeDeserializer = Arc<dyn Fn() -> Box<dyn Deserialize> + Send + Sync>;

/// Stand-ins compiled into the host for components named in a job, used to
/// measure what running a stage in Wasm costs against the same logic run
/// natively (benchmarks); a job never needs them.
#[derive(Default, Clone)]
pub struct Natives {
    /// Deserializers by component name.
    pub deserializers: HashMap<String, NativeDeserializer>,
}

/// Loads a job's components and builds its workers; reports any problem
/// before a record is read.
pub fn prepare(job: &Job, metrics: Arc<Metrics>) -> Result<Prepared, RuntimeError> {
    prepare_with(job, metrics, &Natives::default())
}

/// Like [`prepare`], serving the components named in `natives` natively.
pub fn prepare_with(job: &Job, metrics: Arc<Metrics>, natives: &Natives) -> Result<Prepared, RuntimeError> {
    let rt = WasmRuntime::new()?;
    let limits = Limits {
        call_timeout: job.limits.call_timeout,
        max_memory: job.limits.max_memory,
        grants: Grants {
            clock: job.limits.clock,
        },
    };
    let telemetry: Arc<dyn wafer_wasm::GuestTelemetry> = Arc::new(MetricsTelemetry::new(metrics.clone()));

    // Load each (component, world) once; every worker instantiates from it.
    let mut slots: HashMap<(String, World), ComponentSlot> = HashMap::new();
    let mut slot = |name: &str, world: World| -> Result<ComponentSlot, RuntimeError> {
        if let Some(s) = slots.get(&(name.to_string(), world)) {
            return Ok(s.clone());
        }
        let path = job.components.get(name).ok_or_else(|| RuntimeError::Plan {
            at: "components".into(),
            message: format!("unknown component `{name}`"),
        })?;
        let loaded = rt.load(name, path, world)?;
        tracing::info!(
            component = name,
            world = world.name(),
            version = loaded.info().version,
            sdk = loaded.info().sdk,
            "loaded component"
        );
        let s = ComponentSlot::new(loaded);
        slots.insert((name.to_string(), world), s.clone());
        Ok(s)
    };

    // Sources and their workers, still without any output open.
    struct Pending {
        name: Arc<str>,
        reader: FileReader,
        workers: Vec<(Box<dyn Deserialize>, Vec<PendingStep>)>,
        output: String,
    }
    enum PendingStep {
        Builtin(wafer_core::filter::Filter, String),
        Component(FilterStage, Arc<str>),
    }
    let mut pending = Vec::new();
    for src in &job.sources {
        let at = format!("sources.{}", src.name);
        let native = natives.deserializers.get(&src.deserializer.component);
        let deser_slot = match native {
            Some(_) => None,
            None => Some(slot(&src.deserializer.component, World::Deserializer)?),
        };
        let filter_slots = src
            .filters
            .iter()
            .map(|f| match f {
                FilterStep::Component(c) => slot(&c.component, World::Filter).map(Some),
                FilterStep::Builtin(_) => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut workers = Vec::new();
        for _ in 0..job.parallelism {
            let deser: Box<dyn Deserialize> = match (native, &deser_slot) {
                (Some(make), _) => make(),
                (None, Some(slot)) => Box::new(DeserializeStage::new(
                    &rt,
                    slot.clone(),
                    src.deserializer.config.clone(),
                    limits,
                    telemetry.clone(),
                )?),
                (None, None) => return Err(RuntimeError::Internal("deserializer without a slot".into())),
            };
            let schema = deser.schema().clone();
            let mut steps = Vec::new();
            for (i, (f, fslot)) in src.filters.iter().zip(&filter_slots).enumerate() {
                match (f, fslot) {
                    (FilterStep::Builtin(spec), _) => {
                        let filter = deser_worker::compile_filter(spec, &schema).map_err(|message| {
                            RuntimeError::Plan {
                                at: format!("{at}.filters[{i}]"),
                                message,
                            }
                        })?;
                        steps.push(PendingStep::Builtin(
                            filter,
                            format!("filter:{}:{i}:{}", src.name, spec.kind()),
                        ));
                    }
                    (FilterStep::Component(c), Some(fslot)) => {
                        let stage = FilterStage::new(
                            &rt,
                            fslot.clone(),
                            c.config.clone(),
                            schema.clone(),
                            limits,
                            telemetry.clone(),
                        )?;
                        steps.push(PendingStep::Component(stage, Arc::from(c.component.as_str())));
                    }
                    (FilterStep::Component(_), None) => {
                        return Err(RuntimeError::Internal("filter component without a slot".into()));
                    }
                }
            }
            workers.push((deser, steps));
        }
        let SourceKind::File { path, max_record } = &src.kind;
        let files = list_files(path).map_err(|error| RuntimeError::Source {
            source_name: src.name.clone(),
            error,
        })?;
        let reader =
            FileReader::new(files, src.framing, *max_record, None).map_err(|error| RuntimeError::Source {
                source_name: src.name.clone(),
                error,
            })?;
        pending.push(Pending {
            name: Arc::from(src.name.as_str()),
            reader,
            workers,
            output: src.output.clone(),
        });
    }

    // Everything checked: open the outputs.
    let Sink::Files { dir } = &job.sink;
    let outputs = job.outputs();
    let sink = FileSink::create(dir, outputs.iter().map(String::as_str), job.channel_capacity * 4)?;
    let writer = |name: &str| {
        sink.writer(name)
            .ok_or_else(|| RuntimeError::Internal(format!("output `{name}` has no writer")))
    };
    let dlq = writer(wafer_job::DLQ_OUTPUT)?;
    let mut sources = Vec::new();
    for p in pending {
        let out = writer(&p.output)?;
        let mut workers = Vec::new();
        for (deser, steps) in p.workers {
            let schema = deser.schema().clone();
            let steps = steps
                .into_iter()
                .map(|s| match s {
                    PendingStep::Builtin(filter, stage) => Step::Builtin {
                        filter,
                        metrics: metrics.stage(&stage),
                    },
                    PendingStep::Component(stage, name) => {
                        let label = format!("filter:{}:{}", p.name, name);
                        Step::Component {
                            stage: Box::new(stage),
                            metrics: metrics.stage(&label),
                            timing: metrics.component(&label, &name),
                            name,
                        }
                    }
                })
                .collect();
            workers.push(DeserWorker {
                source: p.name.clone(),
                deser,
                steps,
                dead_letters: DeadLetters::new(dlq.clone(), metrics.clone()),
                downstream: Downstream::Output {
                    writer: out.clone(),
                    json: RowJson::new(&schema),
                },
                metrics: metrics.clone(),
            });
        }
        sources.push(PreparedSource {
            name: p.name,
            reader: p.reader,
            workers,
            dead_letters: DeadLetters::new(dlq.clone(), metrics.clone()),
        });
    }
    Ok(Prepared {
        batch_size: job.batch_size,
        channel_capacity: job.channel_capacity,
        sources,
        sink,
    })
}

impl Prepared {
    /// Runs every source to its end and waits for the outputs to be written.
    pub fn run(self) -> Result<Summary, RuntimeError> {
        let mut source_threads: Vec<(String, JoinHandle<Result<SourceStats, SourceError>>)> = Vec::new();
        let mut worker_threads: Vec<JoinHandle<()>> = Vec::new();
        let spawn_err = |e: std::io::Error| RuntimeError::Internal(format!("cannot start a thread: {e}"));
        for src in self.sources {
            let mut senders = Vec::new();
            for (i, w) in src.workers.into_iter().enumerate() {
                let (tx, rx) = crossbeam_channel::bounded::<RawBatch>(self.channel_capacity);
                senders.push(tx);
                worker_threads.push(
                    std::thread::Builder::new()
                        .name(format!("deser-{}-{i}", src.name))
                        .spawn(move || w.run(rx))
                        .map_err(spawn_err)?,
                );
            }
            let name = src.name.clone();
            let batch_size = self.batch_size;
            let handle = std::thread::Builder::new()
                .name(format!("source-{name}"))
                .spawn(move || {
                    source::run_file_source(name, src.reader, senders, batch_size, src.dead_letters)
                })
                .map_err(spawn_err)?;
            source_threads.push((src.name.to_string(), handle));
        }
        let mut summary = Summary::default();
        let mut first_error = None;
        for (name, h) in source_threads {
            match h.join() {
                Ok(Ok(stats)) => summary.sources.push((name, stats)),
                Ok(Err(error)) => {
                    first_error.get_or_insert(RuntimeError::Source {
                        source_name: name,
                        error,
                    });
                }
                Err(_) => {
                    first_error.get_or_insert(RuntimeError::Internal(format!("source `{name}` panicked")));
                }
            }
        }
        for h in worker_threads {
            if h.join().is_err() {
                first_error.get_or_insert(RuntimeError::Internal("a worker panicked".into()));
            }
        }
        summary.outputs = self.sink.finish()?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}
