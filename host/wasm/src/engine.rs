//! The engine, its epoch ticker, and loading components: compile once, check
//! the world, pre-instantiate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, Store};

use crate::bindings;
use crate::host::{Grants, GuestTelemetry, HostState};

/// Which world a component must implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `wafer:udf/deserializer`
    Deserializer,
    /// `wafer:udf/filter`
    Filter,
    /// `wafer:udf/processor`
    Processor,
    /// `wafer:udf/co-processor`
    CoProcessor,
}

impl World {
    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::Deserializer => "deserializer",
            World::Filter => "filter",
            World::Processor => "processor",
            World::CoProcessor => "co-processor",
        }
    }

    /// The interface a component of this world exports.
    fn export(self) -> &'static str {
        match self {
            World::Deserializer => "wafer:udf/deserialize@0.1.0",
            World::Filter => "wafer:udf/filter-rows@0.1.0",
            World::Processor => "wafer:udf/process@0.1.0",
            World::CoProcessor => "wafer:udf/co-process@0.1.0",
        }
    }

    fn all() -> [World; 4] {
        [
            World::Deserializer,
            World::Filter,
            World::Processor,
            World::CoProcessor,
        ]
    }
}

/// Per-job limits on guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one call into a guest (a batch, or one record when a batch
    /// is re-run record by record).
    pub call_timeout: Duration,
    /// Cap on each linear memory of a guest instance, in bytes.
    pub max_memory: usize,
    /// What the guest may reach beyond the wafer imports.
    pub grants: Grants,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(1),
            max_memory: 256 << 20,
            grants: Grants::default(),
        }
    }
}

/// What a component says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentInfo {
    /// The component's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The SDK that built it.
    pub sdk: String,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("component `{name}`: cannot read {path}: {source}")]
    Read {
        /// job's name for it
        name: String,
        /// path
        path: PathBuf,
        /// cause
        source: std::io::Error,
    },
    /// Not a valid WebAssembly component.
    #[error("component `{name}` ({path}) is not a valid WebAssembly component: {detail}")]
    Compile {
        /// job's name for it
        name: String,
        /// path
        path: PathBuf,
        /// what the compiler said
        detail: String,
    },
    /// A component of another world, or of another version of the contract.
    #[error(
        "component `{name}` ({path}) does not implement the `{expected}` world of wafer:udf@0.1.0: {detail}"
    )]
    WrongWorld {
        /// job's name for it
        name: String,
        /// path
        path: PathBuf,
        /// expected world
        expected: &'static str,
        /// what is wrong
        detail: String,
    },
    /// Instantiation or `init` failed.
    #[error("component `{name}` ({path}) failed to start: {detail}")]
    Start {
        /// job's name for it
        name: String,
        /// path
        path: PathBuf,
        /// what went wrong
        detail: String,
    },
}

/// The pre-instantiated form of a component, by world.
#[derive(Clone)]
pub(crate) enum Pre {
    Deserializer(bindings::deserializer::DeserializerPre<HostState>),
    Filter(bindings::filter::FilterPre<HostState>),
    Processor(bindings::processor::ProcessorPre<HostState>),
    CoProcessor(bindings::co_processor::CoProcessorPre<HostState>),
}

/// A component compiled, checked and pre-instantiated, ready to be
/// instantiated cheaply per worker.
pub struct LoadedComponent {
    pub(crate) name: Arc<str>,
    pub(crate) path: PathBuf,
    pub(crate) world: World,
    pub(crate) pre: Pre,
    pub(crate) info: ComponentInfo,
    pub(crate) from_cache: bool,
}

impl LoadedComponent {
    /// The job's name for the component.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.world
    }

    /// What it says about itself.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// Whether its machine code came from the compile cache instead of
    /// being compiled now.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub(crate) fn start_error(&self, detail: impl std::fmt::Display) -> LoadError {
        LoadError::Start {
            name: self.name.to_string(),
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }
}

/// Owns the wasmtime engine and the epoch ticker.
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// The compile cache, when on (see [`WasmRuntime::with_compile_cache`]).
    cache: Option<wasmtime::Cache>,
    tick: Duration,
    stop: Arc<AtomicBool>,
    linkers: [Linker<HostState>; 4],
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl WasmRuntime {
    /// Creates the engine and starts its epoch ticker; every component is
    /// compiled when loaded.
    pub fn new() -> Result<Self, LoadError> {
        Self::with_compile_cache(None)
    }

    /// Like [`new`](Self::new), keeping compiled components in `cache_dir`
    /// (created if missing): loading a component compiled before, with the
    /// same wasmtime version and settings, reads its machine code instead
    /// of compiling it again, which is most of a job's start. Entries are
    /// keyed by a hash of the component's bytes and the engine's settings;
    /// an entry that does not load is compiled again and replaced. The
    /// directory holds native code that is run as is: it must be writable
    /// only by the user running wafer (wasmtime's own cache works alike).
    pub fn with_compile_cache(cache_dir: Option<&Path>) -> Result<Self, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Compile {
            name: "-".into(),
            path: PathBuf::new(),
            detail: format!("cannot create the Wasm engine: {e:#}"),
        };
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Calls are synchronous; without this, every guest-to-host call
            // (each state read or write) allocates and frees a host task in
            // the store's concurrency tables.
            .concurrency_support(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `WAFER_PERF_MAP=1` writes /tmp/perf-<pid>.map, so that `perf`
        // names the guests' functions instead of showing bare addresses.
        if std::env::var_os("WAFER_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let cache = match cache_dir {
            Some(dir) => Some(compile_cache(dir)?),
            None => None,
        };
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(engine_error)?;
        let tick = Duration::from_millis(2);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Compile {
                    name: "-".into(),
                    path: PathBuf::new(),
                    detail: format!("cannot start the epoch ticker: {e}"),
                })?;
        }
        let linkers = World::all().map(|w| Self::linker(&engine, w));
        let linkers = match linkers {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
            [a, b, c, d] => {
                let e = [a.err(), b.err(), c.err(), d.err()].into_iter().flatten().next();
                return Err(engine_error(
                    e.unwrap_or_else(|| wasmtime::format_err!("linker setup failed")),
                ));
            }
        };
        Ok(WasmRuntime {
            inner: Arc::new(Inner {
                engine,
                cache,
                tick,
                stop,
                linkers,
            }),
        })
    }

    /// A linker providing exactly what `world` imports (and WASI, which
    /// guests built with a standard library import, granting nothing).
    fn linker(engine: &Engine, world: World) -> wasmtime::Result<Linker<HostState>> {
        use wasmtime::component::HasSelf;
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        match world {
            World::Deserializer => {
                bindings::deserializer::Deserializer::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?
            }
            World::Filter => bindings::filter::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
            World::Processor => {
                bindings::processor::Processor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?
            }
            World::CoProcessor => {
                bindings::co_processor::CoProcessor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?
            }
        }
        Ok(linker)
    }

    /// Epoch ticks for a deadline.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        (d.as_micros() / self.inner.tick.as_micros().max(1)) as u64 + 1
    }

    /// A fresh store for one instance.
    pub(crate) fn store(
        &self,
        component: &Arc<str>,
        limits: &Limits,
        telemetry: &Arc<dyn GuestTelemetry>,
    ) -> Store<HostState> {
        let mut store = Store::new(
            &self.inner.engine,
            HostState::new(
                component.clone(),
                limits.max_memory,
                limits.grants,
                telemetry.clone(),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.ticks(limits.call_timeout));
        store
    }

    /// Compiles the component at `path`, checks that it implements `world`,
    /// pre-instantiates it and asks it what it is.
    pub fn load(&self, name: &str, path: &Path, world: World) -> Result<LoadedComponent, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(name, path, &bytes, world)
    }

    /// Like [`load`](Self::load), from bytes already in memory.
    pub fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        world: World,
    ) -> Result<LoadedComponent, LoadError> {
        let engine = &self.inner.engine;
        let hits = self.inner.cache.as_ref().map(wasmtime::Cache::cache_hits);
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
            name: name.to_string(),
            path: path.to_path_buf(),
            detail: first_line(&format!("{e:#}")),
        })?;
        // Loads are sequential in a job's start; a concurrent one could
        // only make this claim a hit that was not.
        let from_cache = hits.is_some() && self.inner.cache.as_ref().map(wasmtime::Cache::cache_hits) > hits;
        let wrong = |detail: String| LoadError::WrongWorld {
            name: name.to_string(),
            path: path.to_path_buf(),
            expected: world.name(),
            detail,
        };
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(n, item)| match item.ty {
                ComponentItem::ComponentInstance(_) => n.to_string(),
                _ => format!("{n} (not an interface)"),
            })
            .collect();
        if !exports.iter().any(|e| e == world.export()) {
            let looks_like = World::all()
                .into_iter()
                .find(|w| exports.iter().any(|e| e == w.export()))
                .map(|w| format!("; it implements the `{}` world instead", w.name()))
                .unwrap_or_default();
            return Err(wrong(format!(
                "it does not export `{}` (it exports: {}){looks_like}",
                world.export(),
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                },
            )));
        }
        let linker = &self.inner.linkers[world as usize];
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            wrong(format!(
                "its imports cannot be satisfied: {}",
                first_line(&format!("{e:#}"))
            ))
        })?;
        let detail = |e: wasmtime::Error| wrong(first_line(&format!("{e:#}")));
        let pre = match world {
            World::Deserializer => {
                Pre::Deserializer(bindings::deserializer::DeserializerPre::new(pre).map_err(detail)?)
            }
            World::Filter => Pre::Filter(bindings::filter::FilterPre::new(pre).map_err(detail)?),
            World::Processor => Pre::Processor(bindings::processor::ProcessorPre::new(pre).map_err(detail)?),
            World::CoProcessor => {
                Pre::CoProcessor(bindings::co_processor::CoProcessorPre::new(pre).map_err(detail)?)
            }
        };
        let mut loaded = LoadedComponent {
            name: name.into(),
            path: path.to_path_buf(),
            world,
            pre,
            info: ComponentInfo {
                name: String::new(),
                version: String::new(),
                sdk: String::new(),
            },
            from_cache,
        };
        loaded.info = self.probe_info(&loaded)?;
        Ok(loaded)
    }

    /// Instantiates once and calls `info`, which proves the component starts.
    fn probe_info(&self, c: &LoadedComponent) -> Result<ComponentInfo, LoadError> {
        let telemetry: Arc<dyn GuestTelemetry> = Arc::new(crate::NoTelemetry);
        let mut store = self.store(&c.name, &Limits::default(), &telemetry);
        let fail = |e: wasmtime::Error, store: &Store<HostState>| {
            let stderr = store.data().stderr.take();
            c.start_error(format!(
                "{}{}",
                first_line(&format!("{e:#}")),
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(" (guest stderr: {stderr})")
                }
            ))
        };
        let info = match &c.pre {
            Pre::Deserializer(p) => {
                let i = p.instantiate(&mut store).map_err(|e| fail(e, &store))?;
                i.wafer_udf_deserialize().call_info(&mut store)
            }
            Pre::Filter(p) => {
                let i = p.instantiate(&mut store).map_err(|e| fail(e, &store))?;
                i.wafer_udf_filter_rows().call_info(&mut store)
            }
            Pre::Processor(p) => {
                let i = p.instantiate(&mut store).map_err(|e| fail(e, &store))?;
                i.wafer_udf_process().call_info(&mut store)
            }
            Pre::CoProcessor(p) => {
                let i = p.instantiate(&mut store).map_err(|e| fail(e, &store))?;
                i.wafer_udf_co_process().call_info(&mut store)
            }
        }
        .map_err(|e| fail(e, &store))?;
        Ok(ComponentInfo {
            name: info.name,
            version: info.version,
            sdk: info.sdk,
        })
    }
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The compile cache in `dir`, created if missing.
fn compile_cache(dir: &Path) -> Result<wasmtime::Cache, LoadError> {
    let failed = |detail: String| LoadError::Compile {
        name: "-".into(),
        path: dir.to_path_buf(),
        detail: format!("cannot use the compile cache: {detail}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    // wasmtime wants an absolute path.
    let dir = dir.canonicalize().map_err(|e| failed(e.to_string()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config).map_err(|e| failed(format!("{e:#}")))
}
