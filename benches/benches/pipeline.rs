//! End-to-end: JSON events from a file through the deserializer and filters
//! to the file sink, events/s at parallelism 1 and 2, with the deserializer
//! in Wasm and the same deserializer compiled natively into the host (the
//! Wasm tax), side by side in one process.
//!
//! `WAFER_BENCH_EVENTS` sets the input size (default 1,000,000);
//! `WAFER_BENCH_RUNS` the runs per configuration (default 3, median kept).

use std::sync::Arc;
use std::time::Instant;

use wafer_benches::{NativeInteractionJson, env_usize, interactions_file, rate, write_results};
use wafer_job::Job;
use wafer_metrics::Metrics;
use wafer_runtime::{Deserialize, NativeDeserializer, Natives};

const JOB: &str = r#"
name: bench-clean-events
parallelism: ${PAR}
components:
  interaction-json: "${COMPONENTS}/interaction-json.wasm"
  drop-bots: "${COMPONENTS}/filter-example.wasm"
formats:
  json: { framing: lines, deserializer: interaction-json }
sources:
  events:
    file: { path: "${INPUT}" }
    format: json
    filters:
      - exclude: { field: event_type, values: [view] }
      - component: { name: drop-bots }
sink:
  file: { dir: "${OUT}" }
"#;

fn main() {
    // `cargo bench` passes `--bench`; anything else (like `cargo test
    // --benches`) only checks that this builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_usize("WAFER_BENCH_EVENTS", 1_000_000);
    let runs = env_usize("WAFER_BENCH_RUNS", 3);
    let input = interactions_file(events, &["--corrupt", "0.001"]);
    let out = tempfile::tempdir().expect("tempdir");
    let native: NativeDeserializer =
        Arc::new(|| Box::new(NativeInteractionJson::default()) as Box<dyn Deserialize>);

    let mut table = String::from(
        "| parallelism | deserializer | events/s (median) | Wasm / native |\n|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    for par in [1usize, 2] {
        let mut medians = Vec::new();
        for mode in ["wasm", "native"] {
            let mut natives = Natives::default();
            if mode == "native" {
                natives
                    .deserializers
                    .insert("interaction-json".into(), native.clone());
            }
            let mut rates = Vec::new();
            for _ in 0..runs {
                let vars = [
                    ("PAR", par.to_string()),
                    ("COMPONENTS", wafer_test_guests::COMPONENTS_DIR.to_string()),
                    ("INPUT", input.display().to_string()),
                    ("OUT", out.path().display().to_string()),
                ];
                let job = Job::parse(std::path::Path::new("bench.yaml"), JOB, |k| {
                    vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
                })
                .expect("job");
                let prepared = wafer_runtime::prepare_with(&job, Metrics::new(), &natives).expect("prepare");
                let started = Instant::now();
                let summary = prepared.run().expect("run");
                let secs = started.elapsed().as_secs_f64();
                let records: u64 = summary.sources.iter().map(|(_, s)| s.records).sum();
                rates.push(rate(records, secs));
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            eprintln!("parallelism {par}, {mode}: {median:.0} events/s (runs: {rates:.0?})");
            json.push(format!(
                r#"{{"parallelism":{par},"mode":"{mode}","events_per_s":{median:.0}}}"#
            ));
            medians.push(median);
        }
        let ratio = medians[0] / medians[1];
        table.push_str(&format!(
            "| {par} | Wasm | {:.0} | {:.0}% |\n",
            medians[0],
            ratio * 100.0
        ));
        table.push_str(&format!("| {par} | native | {:.0} | |\n", medians[1]));
    }
    println!("\nclean-events pipeline, {events} JSON events, {runs} runs each:\n\n{table}");
    let path = write_results("pipeline.json", &format!("[{}]\n", json.join(",")));
    eprintln!("results in {}", path.display());
}
