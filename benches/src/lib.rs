//! Shared pieces of wafer's benchmarks: inputs, and the native stand-ins of
//! guest components (the same Rust logic compiled into the host) that the
//! Wasm runs are compared with.

pub mod hand_written;
mod native_sessions;

pub use native_sessions::NativeSessions;

use std::path::{Path, PathBuf};
use std::process::Command;

use wafer_row::{BatchBuf, RowWriter, Schema};
use wafer_runtime::{Decoded, Deserialize, FailKind, Failure};
use wafer_sdk::Record;

/// The repository root (see `wafer_guests_build::checkout`).
pub fn repo() -> PathBuf {
    wafer_guests_build::checkout(env!("CARGO_MANIFEST_DIR"))
}

/// A JSON interaction event of about `len` bytes (padded in `item_id`).
pub fn event_json(i: usize, len: usize) -> Vec<u8> {
    let base = format!(
        r#"{{"event_id":"ev-{i}","user_id":"user-{}","event_type":"click","item_id":"item-","event_time_ms":{}}}"#,
        i % 1000,
        1_700_000_000_000u64 + i as u64 * 100
    );
    let pad = len.saturating_sub(base.len());
    base.replace("item-", &format!("item-{}", "x".repeat(pad)))
        .into_bytes()
}

/// A batch of `n` events of about `len` bytes.
pub fn event_batch(n: usize, len: usize) -> BatchBuf {
    let mut b = BatchBuf::new();
    for i in 0..n {
        b.push(&event_json(i, len));
    }
    b
}

/// Generates (once) `events` interaction events as JSON lines with the
/// repository's generator and returns the file.
pub fn interactions_file(events: usize, extra: &[&str]) -> PathBuf {
    let dir = repo().join("target").join("bench-data");
    let _ = std::fs::create_dir_all(&dir);
    let tag = extra.join("").replace(['-', ' ', '.'], "");
    let base = dir.join(format!("interactions-{events}{tag}"));
    let file = base.with_extension("jsonl");
    if !file.exists() {
        let status = Command::new("python3")
            .arg(repo().join("examples/generate.py"))
            .args([
                "interactions",
                "--format",
                "json",
                "--events",
                &events.to_string(),
                "--out",
            ])
            .arg(&base)
            .args(extra)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "the generator failed");
    }
    file
}

/// Generates (once) the training-samples inputs with `views` views and
/// returns `(views, engagements)`.
pub fn training_files(views: usize, extra: &[&str]) -> (PathBuf, PathBuf) {
    let dir = repo().join("target").join("bench-data");
    let _ = std::fs::create_dir_all(&dir);
    let tag = extra.join("").replace(['-', ' ', '.'], "");
    let base = dir.join(format!("training-{views}{tag}"));
    let file = |s: &str| PathBuf::from(format!("{}-{s}.jsonl", base.display()));
    if !file("engagements").exists() {
        let status = Command::new("python3")
            .arg(repo().join("examples/generate.py"))
            .args(["training", "--views", &views.to_string(), "--out"])
            .arg(&base)
            .args(extra)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "the generator failed");
    }
    (file("views"), file("engagements"))
}

/// The sum over keyed workers of a `wafer_keyed_state` gauge (`what`:
/// entries, entries_peak, timers, timers_peak) in rendered metrics.
pub fn keyed_state_sum(metrics: &str, what: &str) -> f64 {
    let label = format!("what=\"{what}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("wafer_keyed_state{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The interaction JSON deserializer of `guests/interaction-json`, compiled
/// natively: the same record type, the same parse (`Interaction::from_json`),
/// the same rows.
pub struct NativeInteractionJson {
    schema: Schema,
}

impl Default for NativeInteractionJson {
    fn default() -> Self {
        NativeInteractionJson {
            schema: <interaction::Interaction<'static> as Record>::schema().expect("schema"),
        }
    }
}

impl Deserialize for NativeInteractionJson {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn name(&self) -> &str {
        "native-interaction-json"
    }

    fn run(&mut self, data: &[u8], ends: &[u32]) -> Decoded {
        let n = self.schema.len();
        let mut out = Decoded {
            rows: BatchBuf::with_capacity(ends.len(), data.len()),
            failures: Vec::new(),
        };
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let payload = &data[start..end as usize];
            start = end as usize;
            let parsed = interaction::Interaction::from_json(payload);
            match parsed {
                Ok(rec) => {
                    let mut w = RowWriter::new(&mut out.rows.data, n);
                    rec.write(&mut w);
                    w.finish();
                }
                Err(e) => out.failures.push(Failure {
                    index: i as u32,
                    kind: match e.kind {
                        wafer_sdk::ErrorKind::Decode => FailKind::Decode,
                        wafer_sdk::ErrorKind::Invalid => FailKind::Invalid,
                        wafer_sdk::ErrorKind::Failed => FailKind::Failed,
                    },
                    message: e.message,
                }),
            }
            out.rows.end_record();
        }
        out
    }
}

/// A `usize` from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `examples/<name>/job.yaml` with its variables taken from `vars` (and the
/// components built for tests), as the user would run it.
pub fn example_job(name: &str, vars: &[(&str, String)]) -> wafer_job::Job {
    let path = repo().join("examples").join(name).join("job.yaml");
    let text = std::fs::read_to_string(&path).expect("job file");
    wafer_job::Job::parse(&path, &text, |k| {
        if k == "WAFER_COMPONENTS" {
            return Some(wafer_test_guests::COMPONENTS_DIR.to_string());
        }
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .expect("job")
}

/// Events per second.
pub fn rate(events: u64, secs: f64) -> f64 {
    events as f64 / secs.max(1e-9)
}

/// Writes a results file under `target/bench-results`.
pub fn write_results(name: &str, text: &str) -> PathBuf {
    let dir = repo().join("target").join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    let _ = std::fs::write(&path, text);
    path
}

/// Peak resident set size of this process so far, in bytes (Linux).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
