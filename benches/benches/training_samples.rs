//! The training-samples reference job end to end: views joined with
//! engagements by the Wasm co-processor, at parallelism 1 and 2. Reports
//! views/s and samples/s, the peak keyed state (live state entries and
//! pending timers, summed over keyed workers) and the peak RSS.
//!
//! `WAFER_BENCH_VIEWS` (default 500,000) sizes the input (about one
//! engagement per view on top); `WAFER_BENCH_RUNS` the runs per
//! configuration (default 3, median kept).

use std::time::Instant;

use wafer_benches::{env_usize, example_job, keyed_state_sum, rate, training_files, write_results};
use wafer_job::Job;
use wafer_metrics::Metrics;

fn job(par: usize, views: &str, engagements: &str, out: &str) -> Job {
    example_job(
        "training-samples",
        &[
            ("PARALLELISM", par.to_string()),
            ("VIEWS", views.to_string()),
            ("ENGAGEMENTS", engagements.to_string()),
            ("OUTPUT_DIR", out.to_string()),
        ],
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n_views = env_usize("WAFER_BENCH_VIEWS", 500_000);
    let runs = env_usize("WAFER_BENCH_RUNS", 3);
    let (views, engagements) = training_files(
        n_views,
        &[
            "--users",
            "50000",
            "--items",
            "5000",
            "--corrupt",
            "0.001",
            "--late",
            "0.001",
        ],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let mut table = String::from(
        "| parallelism | records/s | views/s | samples/s | peak state entries | peak timers |\n|---|---|---|---|---|---|\n",
    );
    let mut results = Vec::new();
    for par in [1usize, 2] {
        let mut measured = Vec::new();
        for _ in 0..runs {
            let job = job(
                par,
                &views.display().to_string(),
                &engagements.display().to_string(),
                &out.path().display().to_string(),
            );
            let metrics = Metrics::new();
            let prepared = wafer_runtime::prepare(&job, metrics.clone()).expect("prepare");
            let started = Instant::now();
            let summary = prepared.run().expect("run");
            let secs = started.elapsed().as_secs_f64();
            let records: u64 = summary.sources.iter().map(|(_, s)| s.records).sum();
            let view_records = summary
                .sources
                .iter()
                .find(|(n, _)| n.as_str() == "views")
                .map_or(0, |(_, s)| s.records);
            let samples = std::fs::read_to_string(out.path().join("samples.jsonl"))
                .map(|t| t.lines().count() as u64)
                .unwrap_or(0);
            let text = metrics.render();
            measured.push((
                secs,
                records,
                view_records,
                samples,
                keyed_state_sum(&text, "entries_peak"),
                keyed_state_sum(&text, "timers_peak"),
            ));
        }
        measured.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, records, view_records, samples, entries, timers) = measured[measured.len() / 2];
        eprintln!("parallelism {par}: {secs:.2} s, {samples} samples");
        table.push_str(&format!(
            "| {par} | {:.0} | {:.0} | {:.0} | {entries:.0} | {timers:.0} |\n",
            rate(records, secs),
            rate(view_records, secs),
            rate(samples, secs)
        ));
        results.push(format!(
            r#"{{"parallelism":{par},"seconds":{secs:.3},"records":{records},"views":{view_records},"samples":{samples},"peak_state_entries":{entries},"peak_timers":{timers}}}"#
        ));
    }
    let rss = wafer_benches::peak_rss().unwrap_or(0) as f64 / 1048576.0;
    println!(
        "\ntraining-samples, {n_views} views, {runs} runs each (median):\n\n{table}\npeak RSS of the bench process: {rss:.0} MiB"
    );
    let path = write_results("training_samples.json", &format!("[{}]\n", results.join(",")));
    eprintln!("results in {}", path.display());
}
