//! `wafer`: the host binary. Runs a job file; checks one without running it;
//! inspects a component.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wafer_job::Job;
use wafer_metrics::Metrics;

/// A WebAssembly-pluggable stream processor.
#[derive(Parser)]
#[command(name = "wafer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a job until its bounded sources are drained.
    Run {
        /// The job file (YAML).
        job: PathBuf,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
        #[arg(long, env = "WAFER_METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Write the final metrics (Prometheus text) to this file when the
        /// job ends: the record of a bounded run.
        #[arg(long)]
        metrics_file: Option<PathBuf>,
        /// Start from this savepoint (`<checkpoint dir>/savepoints/<name>`)
        /// instead of the latest checkpoint.
        #[arg(long)]
        from_savepoint: Option<PathBuf>,
        /// Drop the state of sources and operators the job no longer has
        /// (otherwise starting from such a checkpoint is refused).
        #[arg(long)]
        allow_dropped_state: bool,
        /// Keep compiled components in this directory and reuse them at the
        /// next start [default: $XDG_CACHE_HOME/wafer/compiled, else
        /// ~/.cache/wafer/compiled]. It holds machine code that is run as
        /// is: keep it writable only by the user running wafer.
        #[arg(long, env = "WAFER_COMPILE_CACHE")]
        compile_cache: Option<PathBuf>,
        /// Compile every component at start instead.
        #[arg(long, conflicts_with = "compile_cache")]
        no_compile_cache: bool,
    },
    /// Asks a running job for a savepoint and waits for it; prints its path.
    Savepoint {
        /// The job's checkpoint directory (`checkpoints.dir`).
        dir: PathBuf,
        /// Its name (default: `sp-<time>`).
        #[arg(long)]
        name: Option<String>,
        /// Stop the job once the savepoint is written.
        #[arg(long)]
        stop: bool,
        /// How long to wait for the job.
        #[arg(long, default_value = "120")]
        timeout_secs: u64,
    },
    /// Lists the checkpoints and savepoints of a checkpoint directory.
    Checkpoints {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Delete this savepoint.
        #[arg(long)]
        delete_savepoint: Option<String>,
    },
    /// Checks a job file and loads its components, without reading any input.
    Check {
        /// The job file (YAML).
        job: PathBuf,
    },
    /// Prints what a component implements and says about itself.
    Inspect {
        /// The component (.wasm).
        component: PathBuf,
    },
    /// Prints what a job's state directory holds: entries per operator and
    /// state, and timers per operator.
    State {
        /// The state directory (`state.dir` of the job).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAFER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Where compiled components are kept unless told otherwise (`None`: no
/// home to put them in; every start compiles).
fn default_compile_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("wafer").join("compiled"))
}

/// Configuration problems (exit 2) versus failures while running (exit 1).
enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

fn config<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::Config(e.into())
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            job,
            metrics_addr,
            metrics_file,
            from_savepoint,
            allow_dropped_state,
            compile_cache,
            no_compile_cache,
        } => {
            let job = Job::load(&job).map_err(config)?;
            let metrics = Metrics::new();
            let opts = wafer_runtime::StartOptions {
                savepoint: from_savepoint,
                allow_dropped_state,
                compile_cache: if no_compile_cache {
                    None
                } else {
                    compile_cache.or_else(default_compile_cache)
                },
            };
            let prepared = wafer_runtime::prepare_from(&job, metrics.clone(), &Default::default(), &opts)
                .map_err(config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .map_err(Failure::Runtime)?;
            rt.block_on(async move {
                let _server = match metrics_addr {
                    Some(addr) => {
                        let (bound, task) = wafer_metrics::serve(addr, metrics.clone())
                            .await
                            .with_context(|| format!("cannot serve metrics on {addr}"))
                            .map_err(Failure::Config)?;
                        tracing::info!("metrics on http://{bound}/metrics");
                        Some(task)
                    }
                    None => None,
                };
                let started = std::time::Instant::now();
                let summary = tokio::task::spawn_blocking(move || prepared.run())
                    .await
                    .context("the job's thread failed")
                    .map_err(Failure::Runtime)?
                    .map_err(|e| Failure::Runtime(e.into()))?;
                let secs = started.elapsed().as_secs_f64();
                if let Some(path) = &metrics_file {
                    std::fs::write(path, metrics.render())
                        .with_context(|| format!("cannot write metrics to {}", path.display()))
                        .map_err(Failure::Runtime)?;
                }
                for (name, s) in &summary.sources {
                    tracing::info!(
                        source = name,
                        records = s.records,
                        corrupt = s.corrupt,
                        "source drained in {secs:.2}s ({:.0} records/s)",
                        s.records as f64 / secs.max(1e-9)
                    );
                }
                for (name, bytes) in &summary.outputs {
                    tracing::info!(output = name, bytes, "output written");
                }
                if summary.stopped {
                    tracing::info!("stopped with a savepoint");
                }
                Ok(())
            })
        }
        Command::Check { job } => {
            let job = Job::load(&job).map_err(config)?;
            wafer_runtime::prepare(&job, Metrics::new()).map_err(config)?;
            println!("{}: ok", job.path.display());
            Ok(())
        }
        Command::State { dir } => {
            if !dir.join("CURRENT").exists() {
                return Err(config(anyhow::anyhow!(
                    "{} is not a state directory",
                    dir.display()
                )));
            }
            let db = wafer_state::StateDb::open(&dir).map_err(config)?;
            let names: std::collections::BTreeMap<u16, String> = db
                .operators()
                .map_err(config)?
                .into_iter()
                .map(|(n, id)| (id, n))
                .collect();
            let census = db.census().map_err(config)?;
            let name = |op: &u16| names.get(op).cloned().unwrap_or_else(|| format!("#{op}"));
            println!("operator\tstate\tentries\twith_ttl");
            for ((op, state), (n, ttl)) in &census.states {
                println!("{}\t{state}\t{n}\t{ttl}", name(op));
            }
            for (op, n) in &census.timers {
                println!("{}\ttimers\t{n}\t0", name(op));
            }
            Ok(())
        }
        Command::Savepoint {
            dir,
            name,
            stop,
            timeout_secs,
        } => savepoint(&dir, name, stop, timeout_secs),
        Command::Checkpoints {
            dir,
            delete_savepoint,
        } => {
            let store = wafer_checkpoint::CheckpointStore::local(&dir, usize::MAX).map_err(config)?;
            if let Some(name) = delete_savepoint {
                store.delete_savepoint(&name).map_err(config)?;
                println!("deleted savepoint {name}");
                return Ok(());
            }
            let (latest, skipped) = store.latest().map_err(config)?;
            match latest {
                Some(m) => {
                    println!(
                        "latest checkpoint: {} ({} state files, {} bytes)",
                        m.id,
                        m.files.len(),
                        m.files.iter().map(|f| f.size).sum::<u64>()
                    );
                    // Where its Kafka output's commit marker is: the first
                    // thing to look at when a restart cannot tell which
                    // transactions committed.
                    if let Some(k) = &m.kafka_commits {
                        println!(
                            "kafka commit marker: group `{}`, topic `{}` partition 0 (transactional ids `{}-epoch-0..{}`; cut {} was committed before it)",
                            k.group, k.topic, k.transactional_id, k.slots, k.committed_before
                        );
                    }
                }
                None => println!("no complete checkpoint"),
            }
            for s in skipped {
                println!("skipped checkpoint {}: {}", s.id, s.reason);
            }
            for name in store.savepoints().map_err(config)? {
                println!("savepoint: {}", dir.join("savepoints").join(name).display());
            }
            Ok(())
        }
        Command::Inspect { component } => {
            let rt = wafer_wasm::WasmRuntime::new().map_err(config)?;
            let mut last = None;
            for world in [
                wafer_wasm::World::Deserializer,
                wafer_wasm::World::Filter,
                wafer_wasm::World::Processor,
                wafer_wasm::World::CoProcessor,
            ] {
                match rt.load("component", &component, world) {
                    Ok(c) => {
                        let i = c.info();
                        println!("world:   wafer:udf/{}@0.1.0", world.name());
                        println!("name:    {}", i.name);
                        println!("version: {}", i.version);
                        println!("sdk:     {}", i.sdk);
                        return Ok(());
                    }
                    Err(e @ wafer_wasm::LoadError::WrongWorld { .. }) => last = Some(e),
                    Err(e) => return Err(config(e)),
                }
            }
            Err(config(
                last.map(anyhow::Error::from)
                    .unwrap_or_else(|| anyhow::anyhow!("not a wafer component")),
            ))
        }
    }
}

/// Leaves a savepoint request for the job running with checkpoint directory
/// `dir` and waits for its answer.
fn savepoint(
    dir: &std::path::Path,
    name: Option<String>,
    stop: bool,
    timeout_secs: u64,
) -> Result<(), Failure> {
    let name = name.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        format!("sp-{secs}")
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || name.starts_with('.')
    {
        return Err(config(anyhow::anyhow!(
            "savepoint name `{name}`: use letters, digits, `.`, `_` and `-`"
        )));
    }
    if !dir.is_dir() {
        return Err(config(anyhow::anyhow!(
            "{} is not a checkpoint directory",
            dir.display()
        )));
    }
    let requests = wafer_runtime::requests_dir(dir);
    std::fs::create_dir_all(&requests)
        .with_context(|| format!("cannot create {}", requests.display()))
        .map_err(Failure::Runtime)?;
    let tmp = requests.join(format!("{name}.tmp"));
    let request = requests.join(format!("{name}.request"));
    std::fs::write(&tmp, if stop { "stop" } else { "keep" })
        .and_then(|()| std::fs::rename(&tmp, &request))
        .with_context(|| format!("cannot write {}", request.display()))
        .map_err(Failure::Runtime)?;
    let (done, failed) = (
        requests.join(format!("{name}.done")),
        requests.join(format!("{name}.failed")),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    while std::time::Instant::now() < deadline {
        if let Ok(path) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            println!("{path}");
            return Ok(());
        }
        if let Ok(why) = std::fs::read_to_string(&failed) {
            let _ = std::fs::remove_file(&failed);
            return Err(Failure::Runtime(anyhow::anyhow!(
                "savepoint `{name}` failed: {why}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&request);
    Err(Failure::Runtime(anyhow::anyhow!(
        "no job answered within {timeout_secs}s (is a job with checkpoints in {} running?)",
        dir.display()
    )))
}
