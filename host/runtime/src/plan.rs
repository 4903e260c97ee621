//! From a validated job to ready-to-run workers: components loaded and
//! checked, instances started, filters, keys, windows and processors checked
//! against the schemas the deserializers declare, state opened. Every check
//! happens here, before any output is opened or any record read.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use wafer_connectors::file_source::{FileReader, list_files};
use wafer_connectors::kafka_source::{KafkaReader, KafkaSettings, Start};
use wafer_core::filter::Filter;
use wafer_core::json::RowJson;
use wafer_core::key::KeySpec;
use wafer_core::watermark::LaneWatermarks;
use wafer_core::window::Aggregates;
use wafer_job::{FilterStep, Job, KafkaStart, SourceKind};
use wafer_metrics::Metrics;
use wafer_row::{Field, FieldType, Schema};
use wafer_state::{Kind, StateDb, StateDecl};
use wafer_wasm::{
    ComponentSlot, DeserializeStage, FilterStage, Grants, GuestTelemetry, Limits, ProcInputs, ProcessorStage,
    StateKind, WasmRuntime, World,
};

use crate::checkpoint::{Control, CoordinatorSetup, KeyedLink, Report, SourceMeta};
use crate::dead_letters::DeadLetters;
use crate::deser_worker::{DeserWorker, Step};
use crate::downstream::Downstream;
use crate::keyed::{
    Core, KeyedMsg, KeyedRouter, KeyedSettings, KeyedWorker, OutputBuf, ProcOp, SourceInfo, WindowOp,
};
use crate::restore::{self, Restored, StartOptions};
use crate::sinks::Sinks;
use crate::source::Reader;
use crate::source::SourceLink;
use crate::telemetry::MetricsTelemetry;
use crate::{Deserialize, Natives, PreparedSource, RuntimeError, SourceFailure};

fn plan_error(at: impl Into<String>, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Plan {
        at: at.into(),
        message: message.into(),
    }
}

/// Loading context: the engine, limits, and each component loaded once per
/// world.
struct Loader<'a> {
    job: &'a Job,
    rt: WasmRuntime,
    limits: Limits,
    telemetry: Arc<dyn GuestTelemetry>,
    slots: HashMap<(String, World), ComponentSlot>,
}

impl Loader<'_> {
    fn slot(&mut self, name: &str, world: World) -> Result<ComponentSlot, RuntimeError> {
        if let Some(s) = self.slots.get(&(name.to_string(), world)) {
            return Ok(s.clone());
        }
        let path = self
            .job
            .components
            .get(name)
            .ok_or_else(|| plan_error("components", format!("unknown component `{name}`")))?;
        let loaded = self.rt.load(name, path, world)?;
        tracing::info!(
            component = name,
            world = world.name(),
            version = loaded.info().version,
            sdk = loaded.info().sdk,
            compiled = if loaded.from_cache() { "from cache" } else { "now" },
            "loaded component"
        );
        let s = ComponentSlot::new(loaded);
        self.slots.insert((name.to_string(), world), s.clone());
        Ok(s)
    }
}

enum PendingStep {
    Builtin(Filter, String),
    Component(FilterStage, Arc<str>),
}

struct PendingSource {
    name: Arc<str>,
    reader: Reader,
    /// Lane names → lane numbers of a restored source.
    lanes: HashMap<String, u32>,
    schema: Schema,
    workers: Vec<(Box<dyn Deserialize>, Vec<PendingStep>)>,
    key: Option<KeySpec>,
}

/// Everything [`crate::Prepared::run`] needs.
pub(crate) struct Plan {
    pub sources: Vec<PreparedSource>,
    pub keyed: Vec<(KeyedWorker, crossbeam_channel::Receiver<KeyedMsg>)>,
    pub sink: Sinks,
    pub state_db: Option<Arc<StateDb>>,
    pub keep_state: bool,
    pub temp_state: Option<tempfile::TempDir>,
    /// With checkpoints: the coordinator, and how to tell it the job is over.
    pub coordinator: Option<(CoordinatorSetup, crossbeam_channel::Sender<Report>)>,
    /// Forwards the sinks' cuts to the coordinator.
    pub cut_forwarder: Option<std::thread::JoinHandle<()>>,
    pub control: Arc<Control>,
}

pub(crate) fn prepare(
    job: &Job,
    metrics: Arc<Metrics>,
    natives: &Natives,
    opts: &StartOptions,
) -> Result<Plan, RuntimeError> {
    let store = restore::store(job)?;
    let restored = restore::load(job, store.as_ref(), opts)?;
    let source_states = match &restored {
        Some(r) => restore::sources(job, &r.manifest, opts.allow_dropped_state)?,
        None => vec![None; job.sources.len()],
    };
    let mut loader = Loader {
        job,
        rt: WasmRuntime::with_compile_cache(opts.compile_cache.as_deref())?,
        limits: Limits {
            call_timeout: job.limits.call_timeout,
            max_memory: job.limits.max_memory,
            grants: Grants {
                clock: job.limits.clock,
            },
        },
        telemetry: Arc::new(MetricsTelemetry::new(metrics.clone())),
        slots: HashMap::new(),
    };
    let pending = sources(&mut loader, natives, &source_states)?;
    let keyed = match &job.keyed {
        Some(k) => Some(keyed_plan(
            &mut loader,
            k,
            &pending,
            &metrics,
            natives,
            restored.as_ref(),
            opts.allow_dropped_state,
        )?),
        None => None,
    };
    let control = Arc::new(Control::default());
    let (reports_tx, reports_rx) = crossbeam_channel::unbounded::<Report>();
    let checkpointing = job.checkpoints.is_some();

    // Everything checked: open the outputs.
    let mut outputs = job.outputs();
    if let Some(k) = &keyed {
        outputs.extend(k.outputs.iter().cloned());
    }
    let outputs: Vec<String> = outputs.into_iter().collect();
    let lengths = restored
        .as_ref()
        .map(|r| restore::output_lengths(&r.manifest))
        .unwrap_or_default();
    let (cuts_tx, cuts_rx) = crossbeam_channel::unbounded::<wafer_connectors::SinkCut>();
    let sink = Sinks::open(
        job,
        &outputs,
        job.channel_capacity * 4,
        &lengths,
        checkpointing.then(|| cuts_tx.clone()),
    )?;
    drop(cuts_tx);
    // Sink cuts join the other reports; the thread ends when the sinks do.
    let cut_forwarder = if checkpointing {
        let reports = reports_tx.clone();
        Some(
            std::thread::Builder::new()
                .name("checkpoint-sinks".into())
                .spawn(move || {
                    for c in cuts_rx {
                        let _ = reports.send(Report::Sink(c));
                    }
                })
                .map_err(|e| RuntimeError::Internal(format!("cannot start a thread: {e}")))?,
        )
    } else {
        None
    };
    let writer = |name: &str| {
        sink.writer(name)
            .ok_or_else(|| RuntimeError::Internal(format!("output `{name}` has no writer")))
    };
    let dlq = writer(wafer_job::DLQ_OUTPUT)?;

    // Keyed workers and the channels into them.
    let mut keyed_workers = Vec::new();
    let mut keyed_senders = Vec::new();
    let (mut state_db, mut temp_state, mut keep_state) = (None, None, false);
    let mut keyed_go = Vec::new();
    if let Some(k) = keyed {
        let cuts = match &restored {
            Some(r) => restore::keyed_cuts(&r.manifest, k.workers.len(), k.senders),
            None => vec![None; k.workers.len()],
        };
        let mut cuts = cuts.into_iter();
        let n_keyed = k.workers.len();
        let settings = k.settings;
        state_db = Some(k.db.clone());
        temp_state = k.temp_dir;
        keep_state = k.keep;
        for w in k.workers {
            let (tx, rx) = crossbeam_channel::bounded::<KeyedMsg>(job.channel_capacity * 4);
            keyed_senders.push(tx);
            let outputs = k
                .outputs
                .iter()
                .map(|o| writer(o).map(OutputBuf::new))
                .collect::<Result<Vec<_>, _>>()?;
            let late = match &k.late {
                Some(l) => Some(OutputBuf::new(writer(l)?)),
                None => None,
            };
            keyed_workers.push((
                KeyedWorker {
                    index: keyed_workers.len(),
                    settings,
                    senders: k.senders,
                    sender_sources: k.sender_sources.clone(),
                    sources: k
                        .sources
                        .iter()
                        .map(|(name, schema)| SourceInfo {
                            name: name.clone(),
                            schema: schema.clone(),
                            json: RowJson::new(schema),
                        })
                        .collect(),
                    core: w.core,
                    windows: w.windows,
                    procs: w.procs,
                    late,
                    outputs,
                    dead_letters: DeadLetters::new(dlq.clone(), metrics.clone()),
                    metrics: metrics.clone(),
                    keep_state,
                    max_dirty: job.checkpoints.as_ref().and_then(|c| c.max_dirty_entries),
                    freeze_slice: job.checkpoints.as_ref().map_or(4096, |c| c.freeze_slice),
                    workers: n_keyed,
                    link: checkpointing.then(|| {
                        let (go_tx, go_rx) = crossbeam_channel::unbounded();
                        keyed_go.push(go_tx);
                        KeyedLink {
                            reports: reports_tx.clone(),
                            go: go_rx,
                            control: control.clone(),
                        }
                    }),
                    control: control.clone(),
                    restore: cuts.next().flatten(),
                    freezing: None,
                    snapshot_pending: None,
                },
                rx,
            ));
        }
    }

    let mut sources = Vec::new();
    let mut sender_id = 0;
    let mut source_meta = Vec::new();
    for (si, p) in pending.into_iter().enumerate() {
        let src = &job.sources[si];
        let out = match &src.output {
            Some(o) => Some(writer(o)?),
            None => None,
        };
        let mut workers = Vec::new();
        let restored_lanes = source_states[si]
            .map(|st| restore::worker_lanes(st, p.workers.len(), |name| p.lanes.get(name).copied()));
        let n_workers = p.workers.len();
        for (wi, (deser, steps)) in p.workers.into_iter().enumerate() {
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
            let keyed = match &p.key {
                Some(key) => {
                    let r = KeyedRouter {
                        sender: sender_id,
                        source: si,
                        key: key.clone(),
                        senders: keyed_senders.clone(),
                    };
                    sender_id += 1;
                    Some(r)
                }
                None => None,
            };
            workers.push(DeserWorker {
                source: p.name.clone(),
                deser,
                steps,
                dead_letters: DeadLetters::new(dlq.clone(), metrics.clone()),
                downstream: Downstream {
                    output: out.clone().map(|w| (w, RowJson::new(&schema))),
                    keyed,
                },
                metrics: metrics.clone(),
                watermark: {
                    let mut wm = LaneWatermarks::new(
                        src.watermark.out_of_orderness_ms,
                        src.watermark.idle_timeout.as_millis() as u64,
                    );
                    let now = wafer_core::time::now_ms().max(0) as u64;
                    for &(lane, seen, finished) in restored_lanes
                        .as_ref()
                        .and_then(|l| l.get(wi))
                        .into_iter()
                        .flatten()
                    {
                        wm.restore(lane, seen, finished, now);
                    }
                    wm
                },
                link: checkpointing.then(|| (si, wi, reports_tx.clone())),
            });
        }
        let link = checkpointing.then(|| {
            let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
            source_meta.push(SourceMeta {
                id: src.id.clone(),
                name: src.name.clone(),
                workers: n_workers,
                keyed: p.key.is_some(),
                cmd: cmd_tx,
            });
            SourceLink {
                source: si,
                cmds: cmd_rx,
                reports: reports_tx.clone(),
            }
        });
        sources.push(PreparedSource {
            name: p.name,
            reader: p.reader,
            max_rate: src.max_records_per_second,
            workers,
            dead_letters: DeadLetters::new(dlq.clone(), metrics.clone()),
            link,
        });
    }
    let coordinator = match (&job.checkpoints, store) {
        (Some(c), Some(store)) => {
            let first_id = store
                .last_id()
                .map_err(|e| plan_error("checkpoints", e.to_string()))?
                .max(restored.as_ref().map_or(0, |r| r.manifest.id))
                + 1;
            let previous = restored
                .as_ref()
                .filter(|r| r.manifest.kind == wafer_checkpoint::Kind::Checkpoint as i32)
                .map(|r| r.manifest.clone());
            Some((
                CoordinatorSetup {
                    store,
                    interval: c.interval,
                    tolerable_failures: c.tolerable_failures,
                    job: job.name.clone(),
                    components: component_versions(job, &loader),
                    sources: source_meta,
                    keyed_go,
                    outputs,
                    db: state_db.clone(),
                    parallelism: job.parallelism,
                    rx: reports_rx,
                    first_id,
                    previous,
                    control: control.clone(),
                    metrics: metrics.checkpoint(),
                    dir: c.dir.clone(),
                    commits: sink.transactions(),
                    // A restored cut's transactions were committed (the
                    // restore checked the marker).
                    committed: restored
                        .as_ref()
                        .filter(|r| r.manifest.kafka_commits.is_some())
                        .map_or(0, |r| r.manifest.id),
                },
                reports_tx,
            ))
        }
        _ => None,
    };
    Ok(Plan {
        sources,
        keyed: keyed_workers,
        sink,
        state_db,
        keep_state,
        temp_state,
        coordinator,
        cut_forwarder,
        control,
    })
}

/// Every component of the job with the version it declares and a digest of
/// its file, for the manifest.
fn component_versions(job: &Job, loader: &Loader<'_>) -> Vec<wafer_checkpoint::manifest::Component> {
    job.components
        .iter()
        .map(|(name, path)| {
            let version = loader
                .slots
                .iter()
                .find(|((n, _), _)| n == name)
                .map(|(_, s)| s.current().0.info().version.to_string())
                .unwrap_or_default();
            let digest = std::fs::read(path)
                .map(|b| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b)))
                .unwrap_or_default();
            wafer_checkpoint::manifest::Component {
                name: name.clone(),
                version,
                digest,
            }
        })
        .collect()
}

/// Sources and their deserialization workers, checked but not wired.
fn sources(
    loader: &mut Loader<'_>,
    natives: &Natives,
    states: &[Option<&wafer_checkpoint::manifest::SourceState>],
) -> Result<Vec<PendingSource>, RuntimeError> {
    let job = loader.job;
    let mut pending = Vec::new();
    for (si, src) in job.sources.iter().enumerate() {
        let at = format!("sources.{}", src.name);
        let state = states.get(si).copied().flatten();
        let mut lanes = HashMap::new();
        let native = natives.deserializers.get(&src.deserializer.component);
        let deser_slot = match native {
            Some(_) => None,
            None => Some(loader.slot(&src.deserializer.component, World::Deserializer)?),
        };
        let filter_slots = src
            .filters
            .iter()
            .map(|f| match f {
                FilterStep::Component(c) => loader.slot(&c.component, World::Filter).map(Some),
                FilterStep::Builtin(_) => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut workers = Vec::new();
        let mut schema = None;
        for _ in 0..job.parallelism {
            let deser: Box<dyn Deserialize> = match (native, &deser_slot) {
                (Some(make), _) => make(),
                (None, Some(slot)) => Box::new(DeserializeStage::new(
                    &loader.rt,
                    slot.clone(),
                    src.deserializer.config.clone(),
                    loader.limits,
                    loader.telemetry.clone(),
                )?),
                (None, None) => return Err(RuntimeError::Internal("deserializer without a slot".into())),
            };
            let s = deser.schema().clone();
            let mut steps = Vec::new();
            for (i, (f, fslot)) in src.filters.iter().zip(&filter_slots).enumerate() {
                match (f, fslot) {
                    (FilterStep::Builtin(spec), _) => {
                        let filter = spec
                            .compile(&s)
                            .map_err(|e| plan_error(format!("{at}.filters[{i}]"), e.to_string()))?;
                        steps.push(PendingStep::Builtin(
                            filter,
                            format!("filter:{}:{i}:{}", src.name, spec.kind()),
                        ));
                    }
                    (FilterStep::Component(c), Some(fslot)) => {
                        let stage = FilterStage::new(
                            &loader.rt,
                            fslot.clone(),
                            c.config.clone(),
                            s.clone(),
                            loader.limits,
                            loader.telemetry.clone(),
                        )?;
                        steps.push(PendingStep::Component(stage, Arc::from(c.component.as_str())));
                    }
                    (FilterStep::Component(_), None) => {
                        return Err(RuntimeError::Internal("filter component without a slot".into()));
                    }
                }
            }
            schema = Some(s);
            workers.push((deser, steps));
        }
        let schema = schema.ok_or_else(|| plan_error(&at, "no workers"))?;
        let key = match &src.key_by {
            Some(fields) if uses_source(job, pending.len()) => {
                if schema.event_time().is_none() {
                    return Err(plan_error(
                        &at,
                        "its records reach windows or processors, but its deserializer declares no event-time field",
                    ));
                }
                Some(
                    KeySpec::compile(fields, &schema)
                        .map_err(|e| plan_error(format!("{at}.key_by"), e.to_string()))?,
                )
            }
            _ => None,
        };
        let source_error = |error: SourceFailure| RuntimeError::Source {
            source_name: src.name.clone(),
            error: Box::new(error),
        };
        let reader = match &src.kind {
            SourceKind::File { path, max_record } => {
                let files = list_files(path).map_err(|e| source_error(e.into()))?;
                let (files, start) = match state {
                    Some(st) => restore::file_start(st, files),
                    None => (files, None),
                };
                lanes.insert(String::new(), 0);
                Reader::File(
                    FileReader::new(files, src.framing, *max_record, start.as_ref())
                        .map_err(|e| source_error(e.into()))?,
                )
            }
            SourceKind::Kafka(k) => {
                let settings = KafkaSettings {
                    brokers: k.brokers.clone(),
                    topics: k.topics.clone(),
                    group: k.group.clone(),
                    start: match k.start {
                        KafkaStart::Committed => Start::Committed,
                        KafkaStart::Earliest => Start::Earliest,
                        KafkaStart::Latest => Start::Latest,
                        KafkaStart::Timestamp(t) => Start::Timestamp(t),
                    },
                    bounded: k.bounded,
                    connect_timeout: k.connect_timeout,
                    properties: k.properties.clone(),
                };
                // A restored source goes on from its positions (partitions
                // it has none for start per `start`); lanes are numbered in
                // the order of the positions.
                let positions = state.map(restore::kafka_positions).unwrap_or_default();
                for (i, ((t, p), _)) in positions.iter().enumerate() {
                    lanes.insert(format!("{t}/{p}"), i as u32);
                }
                Reader::Kafka(Box::new(
                    KafkaReader::open(settings, positions).map_err(|e| source_error(e.into()))?,
                ))
            }
        };
        pending.push(PendingSource {
            name: Arc::from(src.name.as_str()),
            reader,
            lanes,
            schema,
            workers,
            key,
        });
    }
    Ok(pending)
}

/// Whether source `i` feeds the keyed stage.
fn uses_source(job: &Job, i: usize) -> bool {
    job.keyed.as_ref().is_some_and(|k| {
        k.windows.iter().any(|w| w.input == i) || k.processors.iter().any(|p| p.inputs.contains(&i))
    })
}

struct PendingKeyedWorker {
    core: Arc<Mutex<Core>>,
    windows: Vec<WindowOp>,
    procs: Vec<ProcOp>,
}

struct KeyedPlan {
    workers: Vec<PendingKeyedWorker>,
    /// Output names the keyed workers write, by index.
    outputs: Vec<String>,
    late: Option<String>,
    sources: Vec<(Arc<str>, Schema)>,
    senders: usize,
    sender_sources: Vec<usize>,
    settings: KeyedSettings,
    db: Arc<StateDb>,
    temp_dir: Option<tempfile::TempDir>,
    keep: bool,
}

fn keyed_plan(
    loader: &mut Loader<'_>,
    k: &wafer_job::Keyed,
    sources: &[PendingSource],
    metrics: &Arc<Metrics>,
    natives: &Natives,
    restored: Option<&Restored>,
    allow_dropped: bool,
) -> Result<KeyedPlan, RuntimeError> {
    let job = loader.job;
    let key_of = |i: usize, at: &str| -> Result<&KeySpec, RuntimeError> {
        sources[i]
            .key
            .as_ref()
            .ok_or_else(|| plan_error(at, format!("source `{}` has no key_by", sources[i].name)))
    };

    // State: a fresh database per run, or the one of the checkpoint the
    // job starts from.
    let (dir, temp_dir, keep) = match &k.state_dir {
        Some(d) => {
            if d.exists() {
                std::fs::remove_dir_all(d)
                    .map_err(|e| plan_error("state.dir", format!("cannot clear {}: {e}", d.display())))?;
            }
            (d.clone(), None, true)
        }
        None => {
            let parent = std::env::temp_dir();
            sweep_orphaned_state(&parent);
            let t = tempfile::Builder::new()
                .prefix(TEMP_STATE_PREFIX)
                .tempdir_in(&parent)
                .map_err(|e| plan_error("state", format!("cannot create a state directory: {e}")))?;
            // The owner's pid beside the database: a host killed before it
            // could remove the directory leaves it to the next one.
            std::fs::write(t.path().join(OWNER_FILE), std::process::id().to_string())
                .map_err(|e| plan_error("state", format!("cannot create a state directory: {e}")))?;
            (t.path().join("db"), Some(t), false)
        }
    };
    if let Some(r) = restored
        && !r.manifest.files.is_empty()
    {
        r.store
            .restore_files(&r.manifest, &dir)
            .map_err(|e| plan_error("restore", e.to_string()))?;
    }
    let db = StateDb::open(&dir).map_err(|e| plan_error("state.dir", e.to_string()))?;
    let used = std::cell::RefCell::new(BTreeSet::new());
    let op = |name: &str| {
        used.borrow_mut().insert(name.to_string());
        db.operator_id(name)
            .map_err(|e| plan_error("state", e.to_string()))
    };

    let mut outputs: Vec<String> = Vec::new();
    let mut output_index = |name: &str| -> usize {
        match outputs.iter().position(|o| o == name) {
            Some(i) => i,
            None => {
                outputs.push(name.to_string());
                outputs.len() - 1
            }
        }
    };

    // Windows: checked once, instantiated per worker (they are plain data).
    struct WindowTemplate {
        fire_op: u16,
        cleanup_op: u16,
        source: usize,
        kind: wafer_core::window::WindowKind,
        filter: Vec<Filter>,
        aggs: Aggregates,
        output: usize,
        schema: Schema,
        key_schema: Schema,
    }
    let mut windows = Vec::new();
    for w in &k.windows {
        let at = format!("windows.{}", w.name);
        let source_schema = &sources[w.input].schema;
        let key = key_of(w.input, &at)?;
        let filter = w
            .filter
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.compile(source_schema)
                    .map_err(|e| plan_error(format!("{at}.where[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let aggs =
            Aggregates::compile(&w.aggregates, source_schema).map_err(|e| plan_error(&at, e.to_string()))?;
        let mut fields: Vec<Field> = key.schema().fields().to_vec();
        fields.push(Field::required(w.start_field.clone(), FieldType::Int));
        fields.push(Field::required(w.end_field.clone(), FieldType::Int));
        fields.extend(aggs.output_fields());
        let schema = Schema::new(fields, None).map_err(|e| plan_error(&at, format!("output fields: {e}")))?;
        windows.push(WindowTemplate {
            fire_op: op(&format!("window:{}", w.name))?,
            cleanup_op: op(&format!("window:{}:cleanup", w.name))?,
            source: w.input,
            kind: w.kind,
            filter,
            aggs,
            output: output_index(&w.output),
            schema,
            key_schema: key.schema().clone(),
        });
    }

    // Processors: one instance per keyed worker.
    let mut proc_workers: Vec<Vec<ProcOp>> = (0..k.parallelism).map(|_| Vec::new()).collect();
    let mut proc_decls = Vec::new();
    for p in &k.processors {
        let at = format!("processors.{}", p.name);
        let key_schema = key_of(p.inputs[0], &at)?.schema().clone();
        for &i in &p.inputs[1..] {
            if key_of(i, &at)?.schema() != &key_schema {
                return Err(plan_error(
                    &at,
                    format!(
                        "its inputs are keyed differently (`{}` and `{}` must have the same key fields and types)",
                        sources[p.inputs[0]].name, sources[i].name
                    ),
                ));
            }
        }
        let world = if p.inputs.len() == 1 {
            World::Processor
        } else {
            World::CoProcessor
        };
        let native = natives.processors.get(&p.component.component);
        let slot = match native {
            Some(_) => None,
            None => Some(loader.slot(&p.component.component, world)?),
        };
        let inputs = ProcInputs {
            inputs: p
                .inputs
                .iter()
                .map(|&i| (sources[i].name.to_string(), sources[i].schema.clone()))
                .collect(),
            key: key_schema,
        };
        let op_id = op(&format!("processor:{}", p.name))?;
        let mut first_spec = None;
        for worker_procs in proc_workers.iter_mut() {
            let stage: Box<dyn crate::Process> = match (native, &slot) {
                (Some(make), _) => make(&inputs, &p.component.config).map_err(|e| plan_error(&at, e))?,
                (None, Some(slot)) => Box::new(ProcessorStage::new(
                    &loader.rt,
                    slot.clone(),
                    p.component.config.clone(),
                    inputs.clone(),
                    loader.limits,
                    loader.telemetry.clone(),
                )?),
                (None, None) => return Err(RuntimeError::Internal("processor without a slot".into())),
            };
            let spec = stage.spec().clone();
            for name in p.outputs.keys() {
                if !spec.outputs.iter().any(|o| &o.name == name) {
                    let declared: Vec<&str> = spec.outputs.iter().map(|o| o.name.as_str()).collect();
                    return Err(plan_error(
                        format!("{at}.outputs"),
                        format!(
                            "the processor has no output `{name}` (it declares: {})",
                            declared.join(", ")
                        ),
                    ));
                }
            }
            let outs: Vec<usize> = spec
                .outputs
                .iter()
                .map(|o| output_index(p.outputs.get(&o.name).unwrap_or(&o.name)))
                .collect();
            let json = spec.outputs.iter().map(|o| RowJson::new(&o.schema)).collect();
            let label = format!("processor:{}", p.name);
            worker_procs.push(ProcOp {
                name: Arc::from(p.name.as_str()),
                op: op_id,
                inputs: p.inputs.clone(),
                states: spec.states.len() as u16,
                outputs: outs,
                json,
                metrics: metrics.stage(&label),
                timing: metrics.component(&label, &p.component.component),
                stage,
            });
            first_spec.get_or_insert(spec);
        }
        if let Some(spec) = first_spec {
            for o in &spec.outputs {
                let name = p.outputs.get(&o.name).unwrap_or(&o.name);
                if name == wafer_job::DLQ_OUTPUT {
                    return Err(plan_error(
                        &at,
                        format!("output `{name}` is reserved for dead letters"),
                    ));
                }
            }
            proc_decls.push((op_id, spec));
        }
    }

    let mut workers = Vec::new();
    for procs in proc_workers {
        let mut core = Core::new(db.clone(), k.cache_entries);
        for w in &windows {
            core.state.declare(
                w.fire_op,
                0,
                StateDecl {
                    kind: Kind::Value,
                    ttl_ms: None,
                },
            );
        }
        for (op_id, spec) in &proc_decls {
            for (i, s) in spec.states.iter().enumerate() {
                let kind = match s.kind {
                    StateKind::Value => Kind::Value,
                    StateKind::List => Kind::List,
                    StateKind::Map => Kind::Map,
                };
                let ttl_ms = s.ttl_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
                core.state.declare(*op_id, i as u16, StateDecl { kind, ttl_ms });
            }
        }
        workers.push(PendingKeyedWorker {
            core: Arc::new(Mutex::new(core)),
            windows: windows
                .iter()
                .map(|w| WindowOp {
                    fire_op: w.fire_op,
                    cleanup_op: w.cleanup_op,
                    source: w.source,
                    kind: w.kind,
                    filter: w.filter.clone(),
                    aggs: w.aggs.clone(),
                    output: w.output,
                    json: RowJson::new(&w.schema),
                    schema: w.schema.clone(),
                    key_schema: w.key_schema.clone(),
                })
                .collect(),
            procs,
        });
    }

    // State of operators the job no longer has: refused unless dropping it
    // was asked for.
    let used = used.into_inner();
    let stale: Vec<(String, u16)> = db
        .operators()
        .map_err(|e| plan_error("state", e.to_string()))?
        .into_iter()
        .filter(|(name, _)| !used.contains(name))
        .collect();
    if !stale.is_empty() {
        let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
        if !allow_dropped {
            return Err(plan_error(
                "restore",
                format!(
                    "the checkpoint has state of operator(s) {} that the job no longer has; keep their names, or pass --allow-dropped-state to drop it",
                    names.join(", ")
                ),
            ));
        }
        for (name, id) in &stale {
            let n = db
                .drop_operator(*id)
                .map_err(|e| plan_error("state", e.to_string()))?;
            tracing::warn!(operator = %name, entries = n, "dropped the state of an operator the job no longer has");
        }
    }

    let keyed_sources: BTreeSet<usize> = (0..sources.len()).filter(|&i| sources[i].key.is_some()).collect();
    let senders = keyed_sources.len() * job.parallelism;
    // Senders are numbered source by source, in the order workers are built.
    let sender_sources: Vec<usize> = keyed_sources
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, job.parallelism))
        .collect();
    let idle = keyed_sources
        .iter()
        .map(|&i| job.sources[i].watermark.idle_timeout)
        .min()
        .unwrap_or(std::time::Duration::from_secs(30));
    Ok(KeyedPlan {
        workers,
        outputs,
        late: k.late_output.clone(),
        sources: sources
            .iter()
            .map(|s| (s.name.clone(), s.schema.clone()))
            .collect(),
        senders,
        sender_sources,
        settings: KeyedSettings {
            allowed_lateness_ms: k.allowed_lateness_ms,
            idle_timeout: idle,
        },
        db,
        temp_dir,
        keep,
    })
}

/// Prefix of the temporary state directories of jobs without `state.dir`.
const TEMP_STATE_PREFIX: &str = "wafer-state-";
/// The file in a temporary state directory naming the process using it.
const OWNER_FILE: &str = "owner.pid";

/// Removes the temporary state directories of hosts that are gone (killed
/// before they could clean up: `kill -9`, a crash, a power cut). A directory
/// whose owner cannot be told (no pid file, or not on Linux) is left alone;
/// a reused pid only delays the removal.
fn sweep_orphaned_state(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_STATE_PREFIX));
        if !is_ours {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(dir = %path.display(), pid, "removed the state directory of a host that is gone");
        }
    }
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn state_directories_of_dead_hosts_are_swept_and_no_other() {
        let parent = tempfile::tempdir().unwrap();
        // A pid that belonged to a process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: &str, owner: Option<u32>| {
            let d = parent.path().join(name);
            std::fs::create_dir_all(d.join("db")).unwrap();
            if let Some(pid) = owner {
                std::fs::write(d.join(OWNER_FILE), pid.to_string()).unwrap();
            }
            d
        };
        let orphan = make("wafer-state-orphan", Some(dead));
        let mine = make("wafer-state-mine", Some(std::process::id()));
        let unknown = make("wafer-state-unknown", None);
        let other = make("not-wafer", Some(dead));
        sweep_orphaned_state(parent.path());
        assert!(!orphan.exists(), "the dead host's state is removed");
        assert!(mine.exists() && unknown.exists() && other.exists());
    }
}
