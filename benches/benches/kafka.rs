//! The user-features job reading a Kafka topic with 2 partitions against the
//! same job reading the same events from a file, both at parallelism 2 with
//! the shipped Wasm components, alternated in one process.
//!
//! The broker is tansu, started by `scripts/kafka-broker` (installed by it
//! if missing). `WAFER_BENCH_EVENTS` (default 1,000,000) sizes the input,
//! `WAFER_BENCH_USERS` (default 100,000) its keys, `WAFER_BENCH_RUNS` the
//! runs per source (default 3, median kept). `WAFER_BENCH_KAFKA_ONLY=1`
//! skips the file runs (to profile the Kafka path alone),
//! `WAFER_BENCH_FILE_ONLY=1` the Kafka runs. `WAFER_BENCH_FETCH=librdkafka`
//! has librdkafka fetch (the path for TLS and SASL) instead of the reader's
//! own fetcher. `WAFER_BENCH_PERF_TIMES=1`
//! prints each run's start and end on CLOCK_MONOTONIC, for `perf record -k
//! CLOCK_MONOTONIC` and `perf report --time`, so a profile can hold the
//! runs and not the setup (producing, compiling); `benches/kafka-threads.sh`
//! does that and reports each thread's CPU per run.
//!
//! Besides events/s it reports the CPU seconds each run cost (this process,
//! and the broker's process for Kafka runs: on two cores the job is
//! CPU-bound, so the extra CPU of the Kafka path is what the ratio loses),
//! and how fast the host's Kafka reader alone drains the topic (the
//! source's ceiling).

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use wafer_benches::{env_usize, example_job, interactions_file, rate, write_results};
use wafer_connectors::kafka_source::{KafkaReader, KafkaSettings, Start};
use wafer_metrics::Metrics;
use wafer_test_broker::{Broker, Storage};

fn produce(brokers: &str, topic: &str, input: &std::path::Path) -> (u64, f64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.codec", "lz4")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let text = std::fs::read(input).expect("input");
    let started = Instant::now();
    let mut n = 0u64;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // Keyed by user, as a feature pipeline's topic is.
        let key = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("user_id").and_then(|u| u.as_str()).map(str::to_string))
            .unwrap_or_default();
        let mut rec = BaseRecord::to(topic).payload(line).key(key.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    (n, started.elapsed().as_secs_f64())
}

/// The source's ceiling: the host's Kafka reader alone draining the topic
/// (bounded, a fresh group, the reader's default settings), touching each
/// payload's length only. Returns messages/s.
fn drain(brokers: &str, topic: &str, produced: u64) -> f64 {
    let settings = KafkaSettings {
        brokers: brokers.to_string(),
        topics: vec![topic.to_string()],
        group: "bench-drain".to_string(),
        start: Start::Earliest,
        bounded: true,
        connect_timeout: Duration::from_secs(30),
        properties: Vec::new(),
    };
    let started = Instant::now();
    let mut reader = KafkaReader::open(settings, Vec::new()).expect("open reader");
    let (mut n, mut bytes) = (0u64, 0u64);
    while reader
        .read(8192, Duration::from_millis(50), |r| {
            n += 1;
            bytes += r.payload.len() as u64;
        })
        .expect("read")
    {}
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, produced, "messages drained ({bytes} bytes)");
    rate(n, secs)
}

/// CPU seconds a process has used (user + system), from /proc: `self` or
/// a pid.
fn cpu_secs(process: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints now on CLOCK_MONOTONIC (perf's `-k CLOCK_MONOTONIC` time) when
/// `WAFER_BENCH_PERF_TIMES=1`: `Instant`'s debug form on Linux shows the
/// clock's seconds and nanoseconds.
fn perf_time(what: &str) {
    if std::env::var("WAFER_BENCH_PERF_TIMES").is_ok_and(|v| v == "1") {
        eprintln!("perf-time {what} {:?}", Instant::now());
    }
}

/// The median (the upper one of an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_usize("WAFER_BENCH_EVENTS", 1_000_000);
    let users = env_usize("WAFER_BENCH_USERS", 100_000);
    let runs = env_usize("WAFER_BENCH_RUNS", 3);
    let kafka_only = std::env::var("WAFER_BENCH_KAFKA_ONLY").is_ok_and(|v| v == "1");
    let file_only = std::env::var("WAFER_BENCH_FILE_ONLY").is_ok_and(|v| v == "1");
    let fetch = std::env::var("WAFER_BENCH_FETCH").ok();
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
    let broker = Broker::start(Storage::Memory);
    broker.create_topics(&[("events", 2)]);
    let (produced, secs) = produce(&broker.addr, "events", &input);
    eprintln!("produced {produced} messages in {secs:.1}s");
    let mut drained: Vec<f64> = (0..3).map(|_| drain(&broker.addr, "events", produced)).collect();
    let drained = median(&mut drained);
    eprintln!("the bare reader drained the topic at {drained:.0} messages/s");
    // The broker's CPU is reported only when its process is known (never
    // this process's in its place).
    let broker_pid = broker.pid().map(|p| p.to_string());
    let broker_secs = || broker_pid.as_deref().map(cpu_secs);
    let out = tempfile::tempdir().expect("tempdir");
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // CPU seconds per run: the job's process and the broker's.
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut broker_cpu: Vec<f64> = Vec::new();
    for run in 0..runs {
        for (i, kafka) in [false, true].into_iter().enumerate() {
            if (!kafka && kafka_only) || (kafka && file_only) {
                continue;
            }
            let mut vars = vec![
                ("PARALLELISM", "2".to_string()),
                ("OUTPUT_DIR", out.path().display().to_string()),
                ("INPUT", input.display().to_string()),
            ];
            if kafka {
                vars.extend([
                    ("KAFKA_BROKERS", broker.addr.clone()),
                    ("KAFKA_TOPIC", "events".to_string()),
                    ("KAFKA_GROUP", format!("bench-{run}")),
                    ("KAFKA_BOUNDED", "true".to_string()),
                    ("KAFKA_START", "earliest".to_string()),
                ]);
            }
            let mut job = example_job("user-features", &vars);
            if let Some(fetch) = &fetch {
                for src in &mut job.sources {
                    if let wafer_job::SourceKind::Kafka(k) = &mut src.kind {
                        k.properties.push(("wafer.fetch".into(), fetch.clone()));
                    }
                }
            }
            let prepared = wafer_runtime::prepare(&job, Metrics::new()).expect("prepare");
            perf_time("start");
            let started = Instant::now();
            let (job0, broker0) = (cpu_secs("self"), broker_secs());
            let summary = prepared.run().expect("run");
            let secs = started.elapsed().as_secs_f64();
            perf_time("end");
            cpu[i].push(cpu_secs("self") - job0);
            if let (true, Some(before), Some(after)) = (kafka, broker0, broker_secs()) {
                broker_cpu.push(after - before);
            }
            let records: u64 = summary.sources.iter().map(|(_, s)| s.records).sum();
            assert_eq!(records, produced, "records read");
            rates[i].push(rate(records, secs));
        }
    }
    if kafka_only {
        println!(
            "Kafka only: {:.0} events/s, {:.2} CPU-s per run + broker {:.2}",
            median(&mut rates[1]),
            median(&mut cpu[1]),
            median(&mut broker_cpu)
        );
        return;
    }
    if file_only {
        println!(
            "file only: {:.0} events/s, {:.2} CPU-s per run",
            median(&mut rates[0]),
            median(&mut cpu[0])
        );
        return;
    }
    // Each Kafka run against the file run just before it: the two share
    // the machine's state of the moment, so their ratio moves less than
    // either rate.
    let mut pairs: Vec<f64> = rates[1]
        .iter()
        .zip(&rates[0])
        .map(|(k, f)| 100.0 * k / f)
        .collect();
    let pair = median(&mut pairs);
    let (lo, hi) = (pairs[0], pairs[pairs.len() - 1]);
    let file = median(&mut rates[0]);
    let kafka = median(&mut rates[1]);
    let (file_cpu, kafka_cpu, broker_cpu) =
        (median(&mut cpu[0]), median(&mut cpu[1]), median(&mut broker_cpu));
    println!(
        "\nuser-features, {events} JSON events, {users} users, parallelism 2, {runs} runs each:\n\n\
         | source | events/s (median) | vs file | CPU-s per run (median) |\n|---|---|---|---|\n\
         | file | {file:.0} | 100% | {file_cpu:.2} |\n\
         | Kafka topic, 2 partitions (tansu, loopback) | {kafka:.0} | {:.0}% | {kafka_cpu:.2} + broker {broker_cpu:.2} |\n\n\
         Kafka run / the file run before it: median {pair:.1}%, from {lo:.1}% to {hi:.1}%\n\
         The reader alone drained the topic at {drained:.0} messages/s.\n",
        100.0 * kafka / file
    );
    let path = write_results(
        "kafka.json",
        &format!(
            r#"{{"events":{events},"file_events_per_s":{file:.0},"kafka_events_per_s":{kafka:.0},"pair_ratio_median_pct":{pair:.1},"pair_ratio_min_pct":{lo:.1},"pair_ratio_max_pct":{hi:.1},"file_cpu_s":{file_cpu:.2},"kafka_cpu_s":{kafka_cpu:.2},"broker_cpu_s":{broker_cpu:.2},"drain_messages_per_s":{drained:.0},"produce_events_per_s":{:.0}}}"#,
            produced as f64 / secs
        ),
    );
    eprintln!("results in {}", path.display());
}
