//! Helpers shared by the end-to-end tests: run the real `wafer` binary on a
//! job file in a temporary directory, generate inputs with the repository's
//! generator, read outputs back.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

/// The repository root (see `wafer_guests_build::checkout`: a shared build
/// cache can hold these tests compiled in another checkout).
pub fn repo() -> PathBuf {
    wafer_guests_build::checkout(env!("CARGO_MANIFEST_DIR"))
}

/// Directory of the components built from source for tests.
pub fn components() -> &'static str {
    wafer_test_guests::COMPONENTS_DIR
}

/// A scratch directory for one test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a job file (with `@COMPONENTS@` replaced by the built
    /// components' directory) and returns its path.
    pub fn job(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, yaml.replace("@COMPONENTS@", components())).expect("write job");
        path
    }

    /// Runs `wafer run <job>` with extra environment.
    pub fn run(&self, job: &Path, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafer"));
        cmd.arg("run")
            .arg(job)
            .arg("--metrics-file")
            .arg(self.path("metrics.txt"));
        cmd.env("WAFER_COMPONENTS", components());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run wafer")
    }

    /// Runs and asserts success.
    pub fn run_ok(&self, job: &Path, env: &[(&str, &str)]) -> Output {
        let out = self.run(job, env);
        assert!(
            out.status.success(),
            "wafer failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Generates interaction events with examples/generate.py.
    pub fn generate_interactions(&self, out: &str, args: &[&str]) -> PathBuf {
        self.generate("interactions", out, args)
    }

    /// The interaction input the user-features tests share: `events`
    /// events of `users` skewed users, 1% corrupt lines, 1% late and 0.2%
    /// very late events. Returns the path without extension (`.jsonl` and
    /// `.pb` exist).
    pub fn reference_events(&self, out: &str, events: usize, users: usize, seed: u64) -> PathBuf {
        let (events, users, seed) = (events.to_string(), users.to_string(), seed.to_string());
        self.generate_interactions(
            out,
            &[
                "--events",
                &events,
                "--users",
                &users,
                "--skew",
                "1.1",
                "--corrupt",
                "0.01",
                "--late",
                "0.01",
                "--very-late",
                "0.002",
                "--seed",
                &seed,
            ],
        )
    }

    /// The view/engagement input the training-samples tests share: `views`
    /// views of `users` users and `items` items, half of them engaged, 30%
    /// decoy engagements, 1% late and 1% corrupt lines, then `extra`
    /// generator arguments. Returns the `(views, engagements)` files.
    pub fn reference_training(
        &self,
        out: &str,
        (views, users, items): (usize, usize, usize),
        seed: u64,
        extra: &[&str],
    ) -> (PathBuf, PathBuf) {
        let (views, users, items, seed) = (
            views.to_string(),
            users.to_string(),
            items.to_string(),
            seed.to_string(),
        );
        let mut args = vec![
            "--views",
            &views,
            "--users",
            &users,
            "--items",
            &items,
            "--engaged",
            "0.5",
            "--decoys",
            "0.3",
            "--late",
            "0.01",
            "--corrupt",
            "0.01",
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        self.generate_training(out, &args)
    }

    /// Generated views and engagements: `(views, engagements)` files.
    pub fn generate_training(&self, out: &str, args: &[&str]) -> (PathBuf, PathBuf) {
        let base = self.generate("training", out, args);
        let file = |suffix: &str| PathBuf::from(format!("{}-{suffix}.jsonl", base.display()));
        (file("views"), file("engagements"))
    }

    /// Runs `examples/generate.py <what> --out <scratch>/<out> <args>`.
    pub fn generate(&self, what: &str, out: &str, args: &[&str]) -> PathBuf {
        let path = self.path(out);
        let status = Command::new("python3")
            .arg(repo().join("examples/generate.py"))
            .arg(what)
            .arg("--out")
            .arg(&path)
            .args(args)
            .status()
            .expect("python3");
        assert!(status.success(), "generator failed");
        path
    }

    /// Reads `<dir>/<output>.jsonl`.
    pub fn output(&self, dir: &str, output: &str) -> Vec<Value> {
        read_jsonl(&self.path(dir).join(format!("{output}.jsonl")))
    }

    /// The final metrics of the last run.
    pub fn metrics(&self) -> String {
        std::fs::read_to_string(self.path("metrics.txt")).unwrap_or_default()
    }
}

/// Reads a JSON-lines file; every line must parse.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line in {}: {e}: {l}", path.display()))
        })
        .collect()
}

/// Rows as sorted canonical strings, for multiset comparisons.
pub fn multiset(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// Asserts that two sets of rows are equal as multisets, printing a short
/// account of the differences (not the whole sets) when they are not.
#[track_caller]
pub fn assert_same_rows(got: &[Value], want: &[Value]) {
    let (g, w) = (multiset(got), multiset(want));
    if g == w {
        return;
    }
    let missing: Vec<&String> = w.iter().filter(|x| g.binary_search(x).is_err()).take(5).collect();
    let extra: Vec<&String> = g.iter().filter(|x| w.binary_search(x).is_err()).take(5).collect();
    panic!(
        "rows differ: got {} rows, want {}\nmissing (first 5): {missing:#?}\nunexpected (first 5): {extra:#?}",
        g.len(),
        w.len()
    );
}

/// Lines of a raw input file (JSON lines) as the line framing defines them:
/// split at `\n`, a trailing `\r` dropped, blank lines skipped.
pub fn input_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .expect("read input")
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The value of a Prometheus sample (`name{labels}`) in a metrics dump.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Last row per key (outputs are upserts).
pub fn last_by(rows: &[Value], key: &[&str]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| {
            (
                key.iter()
                    .map(|k| r[*k].to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
                r.clone(),
            )
        })
        .collect()
}

pub fn same_numbers(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_f64() || b.is_f64() => (x - y).abs() <= 1e-6 * x.abs().max(1.0),
        _ => a == b,
    }
}

pub fn assert_upserts(got: &[Value], want: &[Value], key: &[&str], what: &str) {
    let (g, w) = (last_by(got, key), last_by(want, key));
    let missing: Vec<&String> = w.keys().filter(|k| !g.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = g.keys().filter(|k| !w.contains_key(*k)).take(5).collect();
    let mut wrong = Vec::new();
    for (k, want_row) in &w {
        if let Some(got_row) = g.get(k) {
            let obj = want_row.as_object().expect("object");
            let differs = obj.iter().any(|(f, v)| !same_numbers(&got_row[f], v))
                || got_row.as_object().map(|o| o.len()) != Some(obj.len());
            if differs {
                wrong.push((got_row.clone(), want_row.clone()));
            }
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{what}: got {} keys, want {}; missing {missing:?}; unexpected {extra:?}; wrong (got, want) {:?}",
        g.len(),
        w.len(),
        &wrong[..wrong.len().min(3)]
    );
}

pub fn sorted(rows: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// What `wafer state <dir>` reports: rows of (operator, state, entries,
/// entries with a TTL); timers appear as state `timers`.
pub fn state_census(dir: &Path) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("state")
        .arg(dir)
        .output()
        .expect("run wafer state");
    assert!(
        out.status.success(),
        "wafer state failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Runs `tests/oracles/<script>` with `args` and parses the JSON it prints.
pub fn run_oracle(script: &str, args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new("python3")
        .arg(repo().join("tests/oracles").join(script))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "oracle {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle output")
}

/// The raw payload a dead letter keeps: `payload` when it is text,
/// `payload_base64` otherwise (decoded here by hand, not by the host's
/// encoder).
pub fn dead_letter_payload(d: &Value) -> Vec<u8> {
    match (d["payload"].as_str(), d["payload_base64"].as_str()) {
        (Some(p), _) => p.as_bytes().to_vec(),
        (None, Some(b)) => base64_decode(b),
        _ => panic!("dead letter without payload: {d}"),
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = acc << 6 | A.iter().position(|&a| a == c).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The `late` output against the oracle's as a multiset, and the number of
/// dead letters, for either reference job.
pub fn assert_late_and_dead_letters(s: &Scratch, dir: &str, expected: &Value) {
    assert_eq!(
        sorted(&s.output(dir, "late")),
        sorted(&expected["late"].as_array().cloned().unwrap_or_default()),
        "late records ({dir})"
    );
    assert_eq!(
        Some(s.output(dir, "dlq").len() as u64),
        expected["dlq"].as_u64(),
        "dead letters ({dir})"
    );
}

/// Compares the training-samples outputs written to `<scratch>/<dir>` with
/// the oracle's `expected`: samples as upserts by view, late records as a
/// multiset, dead letters by count.
pub fn assert_training_samples(s: &Scratch, dir: &str, expected: &Value) {
    let want = |k: &str| expected[k].as_array().cloned().unwrap_or_default();
    assert_upserts(
        &s.output(dir, "samples"),
        &want("samples"),
        &["view_id"],
        "samples",
    );
    assert_late_and_dead_letters(s, dir, expected);
}

/// Compares the user-features outputs written to `<scratch>/<dir>` with the
/// oracle's `expected`: windows and sessions as upserts, late records as a
/// multiset, dead letters by count.
pub fn assert_user_features(s: &Scratch, dir: &str, expected: &Value) {
    assert_feature_upserts(|o| s.output(dir, o), |o| oracle_rows(expected, o), "");
    assert_late_and_dead_letters(s, dir, expected);
}

/// The user-features outputs that are upserts, with the fields keying them.
const FEATURE_UPSERTS: [(&str, &[&str]); 2] = [
    ("purchases_5m", &["user_id", "window_start_ms"]),
    ("sessions", &["user_id", "session_start_ms"]),
];

/// Asserts the final upserts of both user-features outputs, `got(output)`
/// against `want(output)`; `against` ends the failure messages.
pub fn assert_feature_upserts(
    got: impl Fn(&str) -> Vec<Value>,
    want: impl Fn(&str) -> Vec<Value>,
    against: &str,
) {
    for (output, key) in FEATURE_UPSERTS {
        assert_upserts(&got(output), &want(output), key, &format!("{output}{against}"));
    }
}

/// The user-features outputs read back from the Kafka topics
/// `<prefix><output>`, against the oracle's `expected`.
pub fn assert_kafka_features(brokers: &str, prefix: &str, expected: &Value) {
    assert_feature_upserts(
        |o| consume_rows(brokers, &format!("{prefix}{o}")),
        |o| oracle_rows(expected, o),
        "",
    );
}

/// The rows the oracle's `expected` holds for `output`.
pub fn oracle_rows(expected: &Value, output: &str) -> Vec<Value> {
    expected[output].as_array().cloned().unwrap_or_default()
}

/// Which partition a test puts a key in (any stable function will do: the
/// point is that all messages of a key share one partition, in order).
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let h = key
        .iter()
        .fold(2166136261u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(16777619));
    (h % partitions as u32) as i32
}

/// Produces each line of `input` to `topic`, in file order, into the
/// partition of its key fields (the first partition for lines without
/// them), one in flight at a time so offsets follow the order. Returns
/// `(partition, offset, line)` of every message.
pub fn produce_lines(
    brokers: &str,
    topic: &str,
    partitions: i32,
    input: &Path,
    key: &[&str],
) -> Vec<(i32, i64, Vec<u8>)> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("compression.codec", "lz4")
        .create()
        .expect("producer");
    let text = std::fs::read(input).expect("read input");
    let mut next = vec![0i64; partitions as usize];
    let mut sent = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let k: Option<Vec<u8>> = serde_json::from_slice::<Value>(line).ok().and_then(|v| {
            let parts: Option<Vec<String>> = key
                .iter()
                .map(|f| v.get(*f).and_then(Value::as_str).map(str::to_string))
                .collect();
            parts.map(|p| p.join("\u{1f}").into_bytes())
        });
        let p = k.as_deref().map_or(0, |k| partition_of(k, partitions));
        loop {
            let mut rec = BaseRecord::<Vec<u8>, [u8]>::to(topic).payload(line).partition(p);
            if let Some(k) = &k {
                rec = rec.key(k);
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(format!("{e}").contains("Queue full"), "produce: {e}");
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        sent.push((p, next[p as usize], line.to_vec()));
        next[p as usize] += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    sent
}

/// The values of a whole topic (see [`consume_all`]).
pub fn consume_rows(brokers: &str, topic: &str) -> Vec<Value> {
    consume_all(brokers, topic)
        .into_iter()
        .map(|(_, _, r)| r)
        .collect()
}

/// Reads a whole topic (read-committed) to the end the broker reports by
/// end-of-partition events (tansu 0.6 under-reports end offsets when asked,
/// so they are not used): `(partition, key, value)`.
pub fn consume_all(brokers: &str, topic: &str) -> Vec<(i32, Option<Vec<u8>>, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "wafer-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut partitions = BTreeSet::new();
    for t in md.topics() {
        for p in t.partitions() {
            partitions.insert(p.id());
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < partitions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            Some(Ok(m)) => {
                let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("json value");
                out.push((m.partition(), m.key().map(<[u8]>::to_vec), v));
            }
        }
    }
    assert_eq!(done.len(), partitions.len(), "topic {topic} not read to its end");
    out
}

/// Ids of the complete checkpoints in `dir` (those with a manifest).
pub fn complete_checkpoints(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = name.strip_prefix("chk-")?.parse().ok()?;
                    e.path().join("_MANIFEST").exists().then_some(id)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// librdkafka's mock cluster (one broker, in this process) with `topics`
/// created: `(name, partitions)`. Returns it and its bootstrap address.
pub fn mock_cluster(topics: &[(&str, i32)]) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let mock = MockCluster::new(1).expect("mock cluster");
    for (t, p) in topics {
        mock.create_topic(t, *p, 1).expect("topic");
    }
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}
