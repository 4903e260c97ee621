//! The running pipeline of a wafer job.
//!
//! [`prepare`] turns a validated job into ready-to-run threads: it loads and
//! checks every component, instantiates one deserializer per worker, checks
//! filters against the deserializer's schema and opens sources and sinks, so
//! that every mistake is reported before the first record is read.
//! [`Prepared::run`] then runs the threads to the end of the input:
//!
//! ```text
//! source thread ──hash(payload)──▶ N deserialization workers ──hash(key)──▶ M keyed workers ──▶ outputs
//!      │ framing errors                 │ decode/filter errors      │ windows, processors,
//!      └──────────────▶ dlq ◀───────────┴───────────────────────────┘ late records
//! ```
//!
//! Channels are bounded: a slow stage makes the ones before it wait rather
//! than buffer without limit.

mod batch;
mod checkpoint;
mod dead_letters;
mod deser_worker;
mod downstream;
mod keyed;
mod plan;
mod restore;
mod sinks;
mod source;
mod telemetry;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use wafer_connectors::SinkError;
use wafer_job::Job;
use wafer_metrics::Metrics;
use wafer_wasm::LoadError;

pub use checkpoint::requests_dir;
pub use deser_worker::Deserialize;
pub use restore::StartOptions;
pub use source::{ReadError as SourceFailure, SourceStats};
use wafer_wasm::ProcessorStage;
pub use wafer_wasm::{
    CallError, Decoded, FailKind, Failure, KeyedBackend, OutputSpec, ProcInputs, ProcOutput, ProcessorSpec,
    StateKind, StateSpec, TimeDomain, TimerBatch,
};

use batch::RawBatch;
use dead_letters::DeadLetters;
use deser_worker::DeserWorker;

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
        /// cause (boxed: Kafka's errors are large)
        error: Box<SourceFailure>,
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
    /// The job stopped with a savepoint instead of reaching the end of its
    /// input.
    pub stopped: bool,
}

pub(crate) struct PreparedSource {
    name: Arc<str>,
    reader: source::Reader,
    /// Records per second at most.
    max_rate: Option<u64>,
    workers: Vec<DeserWorker>,
    dead_letters: DeadLetters,
    link: Option<source::SourceLink>,
}

/// A job ready to run: components loaded and instantiated, sources and
/// sinks open.
pub struct Prepared {
    batch_size: usize,
    channel_capacity: usize,
    plan: plan::Plan,
}

/// Makes a native deserializer for one worker.
pub type NativeDeserializer = Arc<dyn Fn() -> Box<dyn Deserialize> + Send + Sync>;

/// A processor as a keyed worker sees it: a Wasm component, or (for
/// measuring the Wasm tax) the same logic compiled into the host.
pub trait Process: Send {
    /// What it declared.
    fn spec(&self) -> &ProcessorSpec;
    /// Switches to a swapped-in version between calls, if any.
    fn follow_swap(&mut self) {}
    /// Handles a batch of input `input`, grouped by key.
    fn process(
        &mut self,
        input: u32,
        batch: wafer_wasm::KeyedBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError>;
    /// Handles fired timers.
    fn on_timer(
        &mut self,
        fired: TimerBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError>;
}

impl Process for ProcessorStage {
    fn spec(&self) -> &ProcessorSpec {
        ProcessorStage::spec(self)
    }
    fn follow_swap(&mut self) {
        ProcessorStage::follow_swap(self);
    }
    fn process(
        &mut self,
        input: u32,
        batch: wafer_wasm::KeyedBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        ProcessorStage::process(self, input, batch, keyed)
    }
    fn on_timer(
        &mut self,
        fired: TimerBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        ProcessorStage::on_timer(self, fired, keyed)
    }
}

/// Makes a native processor for one keyed worker from its inputs and config.
pub type NativeProcessor = Arc<dyn Fn(&ProcInputs, &str) -> Result<Box<dyn Process>, String> + Send + Sync>;

/// Stand-ins compiled into the host for components named in a job, used to
/// measure what running a stage in Wasm costs against the same logic run
/// natively (benchmarks); a job never needs them.
#[derive(Default, Clone)]
pub struct Natives {
    /// Deserializers by component name.
    pub deserializers: HashMap<String, NativeDeserializer>,
    /// Processors by component name.
    pub processors: HashMap<String, NativeProcessor>,
}

/// Loads a job's components and builds its workers; reports any problem
/// before a record is read.
pub fn prepare(job: &Job, metrics: Arc<Metrics>) -> Result<Prepared, RuntimeError> {
    prepare_with(job, metrics, &Natives::default())
}

/// Like [`prepare`], serving the components named in `natives` natively.
pub fn prepare_with(job: &Job, metrics: Arc<Metrics>, natives: &Natives) -> Result<Prepared, RuntimeError> {
    prepare_from(job, metrics, natives, &StartOptions::default())
}

/// Like [`prepare_with`], starting as `opts` says (from a savepoint; with
/// checkpoints on, from the latest complete checkpoint by default).
pub fn prepare_from(
    job: &Job,
    metrics: Arc<Metrics>,
    natives: &Natives,
    opts: &StartOptions,
) -> Result<Prepared, RuntimeError> {
    let plan = plan::prepare(job, metrics, natives, opts)?;
    Ok(Prepared {
        batch_size: job.batch_size,
        channel_capacity: job.channel_capacity,
        plan,
    })
}

impl Prepared {
    /// Runs every source to its end and waits for the outputs to be written.
    pub fn run(self) -> Result<Summary, RuntimeError> {
        let mut plan = self.plan;
        let spawn_err = |e: std::io::Error| RuntimeError::Internal(format!("cannot start a thread: {e}"));
        let (coordinator, shutdown) = match plan.coordinator.take() {
            Some((setup, reports)) => (
                Some(
                    std::thread::Builder::new()
                        .name("checkpoints".into())
                        .spawn(move || checkpoint::run_coordinator(setup))
                        .map_err(spawn_err)?,
                ),
                Some(reports),
            ),
            None => (None, None),
        };
        let mut keyed_threads = Vec::new();
        for (w, rx) in plan.keyed {
            keyed_threads.push(
                std::thread::Builder::new()
                    .name(format!("keyed-{}", w.index))
                    .spawn(move || w.run(rx))
                    .map_err(spawn_err)?,
            );
        }
        let mut source_threads: Vec<(String, JoinHandle<Result<SourceStats, SourceFailure>>)> = Vec::new();
        let mut worker_threads: Vec<JoinHandle<()>> = Vec::new();
        for src in plan.sources {
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
            let link = src.link;
            let pace = source::Pace {
                batch_size,
                max_rate: src.max_rate,
            };
            let handle = std::thread::Builder::new()
                .name(format!("source-{name}"))
                .spawn(move || source::run_source(name, src.reader, senders, pace, src.dead_letters, link))
                .map_err(spawn_err)?;
            source_threads.push((src.name.to_string(), handle));
        }
        let mut summary = Summary::default();
        let mut first_error = None;
        let control = plan.control.clone();
        for (name, h) in source_threads {
            match h.join() {
                Ok(Ok(stats)) => summary.sources.push((name, stats)),
                Ok(Err(error)) => {
                    control.fail();
                    first_error.get_or_insert(RuntimeError::Source {
                        source_name: name,
                        error: Box::new(error),
                    });
                }
                Err(_) => {
                    first_error.get_or_insert(RuntimeError::Internal(format!("source `{name}` panicked")));
                }
            }
        }
        for h in worker_threads {
            if h.join().is_err() {
                first_error.get_or_insert(RuntimeError::Internal("a deserialization worker panicked".into()));
            }
        }
        for h in keyed_threads {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    control.fail();
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    control.fail();
                    first_error.get_or_insert(RuntimeError::Internal("a keyed worker panicked".into()));
                }
            }
        }
        summary.stopped = control.stopping();
        if let (Some(db), true, false) = (&plan.state_db, plan.keep_state, summary.stopped) {
            // The watermark is at +infinity: everything with a TTL has
            // expired. Compacting applies that to the files on disk.
            db.set_expiry_horizon(i64::MAX);
            if let Err(e) = db.compact() {
                first_error.get_or_insert(RuntimeError::Internal(format!("compacting state: {e}")));
            }
        }
        // Outputs end their last epochs as they close; the coordinator can
        // then finish a checkpoint (or the savepoint of a stop) under way.
        let txns = plan.sink.transactions();
        let outputs = plan.sink.finish();
        if let Some(f) = plan.cut_forwarder.take() {
            let _ = f.join();
        }
        if let Some(s) = shutdown {
            let _ = s.send(checkpoint::Report::Shutdown);
        }
        if let Some(c) = coordinator {
            match c.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(RuntimeError::Internal(
                        "the checkpoint coordinator panicked".into(),
                    ));
                }
            }
        }
        // The last cut is settled: the Kafka output after it commits if the
        // job succeeded (it ran to its end), else it is aborted and a
        // restart replays it.
        if let Some(t) = txns {
            let succeeded = first_error.is_none() && outputs.is_ok();
            if let Err(e) = t.finish(succeeded) {
                first_error.get_or_insert(RuntimeError::Sink(e));
            }
        }
        drop(plan.state_db);
        drop(plan.temp_state);
        summary.outputs = outputs?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}
