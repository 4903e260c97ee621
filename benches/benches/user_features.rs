//! The user-features reference job end to end: events/s at parallelism 1
//! and 2 with the sessions processor in Wasm and compiled natively (the Wasm
//! tax), side by side in one process, against a hand-written
//! single-threaded program doing the filter and window alone (the issue's
//! yardstick, `wafer_benches::hand_written`); then the peak memory of the
//! release binary on an input with 1,000,000 distinct users.
//!
//! `WAFER_BENCH_EVENTS` (default 2,000,000) and `WAFER_BENCH_USERS`
//! (default 200,000) size the throughput input; `WAFER_BENCH_RUNS` the runs
//! per configuration (default 3, median kept); `WAFER_BENCH_RSS_EVENTS`
//! (default 2,000,000) the input of the memory run.

use std::sync::Arc;
use std::time::Instant;

use wafer_benches::{
    NativeInteractionJson, NativeSessions, env_usize, example_job, hand_written, interactions_file, rate,
    repo, write_results,
};
use wafer_job::Job;
use wafer_metrics::Metrics;
use wafer_runtime::{Deserialize, NativeDeserializer, NativeProcessor, Natives, Process};

fn job(par: usize, input: &str, out: &str) -> Job {
    example_job(
        "user-features",
        &[
            ("PARALLELISM", par.to_string()),
            ("INPUT", input.to_string()),
            ("OUTPUT_DIR", out.to_string()),
        ],
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_usize("WAFER_BENCH_EVENTS", 2_000_000);
    let users = env_usize("WAFER_BENCH_USERS", 200_000);
    let runs = env_usize("WAFER_BENCH_RUNS", 3);
    let input = interactions_file(
        events,
        &[
            "--users",
            &users.to_string(),
            "--corrupt",
            "0.001",
            "--gap-ms",
            "20",
        ],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let sessions: NativeProcessor =
        Arc::new(|inputs, _config| NativeSessions::new(inputs).map(|s| Box::new(s) as Box<dyn Process>));
    let json: NativeDeserializer =
        Arc::new(|| Box::new(NativeInteractionJson::default()) as Box<dyn Deserialize>);
    // A yardstick run next to the job: issue 3 states its goal (1.4M
    // events/s) next to a hand-written program's 3.2M, i.e. 43.75%. This
    // program is written our way, not theirs (it ran slower than their
    // figure on a machine where Flink matched the issue's), so the ratio
    // is a guide; benches/flink calibrates against Flink itself.
    let mut hand_rates = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let done = hand_written::purchases_5m(&input, &out.path().join("hand-written.jsonl"))
            .expect("hand-written run");
        hand_rates.push(rate(done.events, started.elapsed().as_secs_f64()));
    }
    hand_rates.sort_by(f64::total_cmp);
    let hand_rate = hand_rates[hand_rates.len() / 2];
    eprintln!("hand-written filter + window, single-threaded: {hand_rate:.0} events/s ({hand_rates:.0?})");
    let mut table = String::from(
        "| parallelism | deserializer | sessions | events/s (median) | vs all-native | vs hand-written |\n|---|---|---|---|---|---|\n",
    );
    let mut results = vec![format!(
        r#"{{"hand_written_filter_window_events_per_s":{hand_rate:.0}}}"#
    )];
    let mut shipped_p2 = 0.0;
    for par in [1usize, 2] {
        let mut native_rate = 0.0;
        for (label, native_deser, native_sessions) in [
            ("native", true, true),
            ("Wasm", false, true),
            ("Wasm", false, false),
        ] {
            let mut natives = Natives::default();
            if native_deser {
                natives
                    .deserializers
                    .insert("interaction-json".into(), json.clone());
            }
            if native_sessions {
                natives.processors.insert("sessions".into(), sessions.clone());
            }
            let mut rates = Vec::new();
            for _ in 0..runs {
                let job = job(
                    par,
                    &input.display().to_string(),
                    &out.path().display().to_string(),
                );
                let prepared = wafer_runtime::prepare_with(&job, Metrics::new(), &natives).expect("prepare");
                let started = Instant::now();
                let summary = prepared.run().expect("run");
                let secs = started.elapsed().as_secs_f64();
                rates.push(rate(summary.sources.iter().map(|(_, s)| s.records).sum(), secs));
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            let sess = if native_sessions { "native" } else { "Wasm" };
            if native_deser && native_sessions {
                native_rate = median;
            }
            eprintln!(
                "parallelism {par}, deserializer {label}, sessions {sess}: {median:.0} events/s ({rates:.0?})"
            );
            if !native_deser && !native_sessions && par == 2 {
                shipped_p2 = median;
            }
            table.push_str(&format!(
                "| {par} | {label} | {sess} | {median:.0} | {:.0}% | {:.1}% |\n",
                100.0 * median / native_rate.max(1.0),
                100.0 * median / hand_rate.max(1.0)
            ));
            results.push(format!(
                r#"{{"parallelism":{par},"deserializer":"{label}","sessions":"{sess}","events_per_s":{median:.0}}}"#
            ));
        }
    }
    println!("\nuser-features, {events} JSON events, {users} users, {runs} runs each:\n\n{table}");
    println!(
        "hand-written single-threaded filter + 5-minute window: {hand_rate:.0} events/s; \
         the shipped job at parallelism 2 runs at {:.1}% of it (goal: 1.4M of 3.2M = 43.75%)\n",
        100.0 * shipped_p2 / hand_rate.max(1.0)
    );

    // Peak memory of the real binary with 1M distinct keys.
    let rss_events = env_usize("WAFER_BENCH_RSS_EVENTS", 2_000_000);
    let rss_input = interactions_file(
        rss_events,
        &[
            "--users",
            "1000000",
            "--skew",
            "0",
            "--corrupt",
            "0",
            "--gap-ms",
            "20",
        ],
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let bin = target.join("release").join("wafer");
    let metrics = out.path().join("metrics.txt");
    let status = std::process::Command::new(&bin)
        .arg("run")
        .arg(repo().join("examples/user-features/job.yaml"))
        .arg("--metrics-file")
        .arg(&metrics)
        .env("INPUT", &rss_input)
        .env("OUTPUT_DIR", out.path().join("rss"))
        .env("PARALLELISM", "2")
        .env("WAFER_COMPONENTS", wafer_test_guests::COMPONENTS_DIR)
        .status();
    let rss = std::fs::read_to_string(&metrics).ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("wafer_process_peak_rss_bytes "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    });
    match (status, rss) {
        (Ok(s), Some(rss)) if s.success() => {
            println!(
                "peak RSS, {rss_events} events over 1,000,000 distinct users, parallelism 2: {:.0} MiB",
                rss / 1048576.0
            );
            results.push(format!(
                r#"{{"rss_events":{rss_events},"distinct_keys":1000000,"peak_rss_bytes":{rss:.0}}}"#
            ));
        }
        other => {
            eprintln!("memory run failed ({other:?}); build the release binary first (cargo build --release)")
        }
    }
    let path = write_results("user_features.json", &format!("[{}]\n", results.join(",")));
    eprintln!("results in {}", path.display());
}
