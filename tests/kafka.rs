//! The Kafka source and sink, end to end through the real `wafer` binary and
//! a real Kafka-protocol broker (tansu, started by `scripts/kafka-broker`),
//! plus librdkafka's mock cluster for transactions, which tansu does not
//! implement yet.
//!
//! The reference inputs are produced into topics with fewer partitions than
//! deserialization workers, each key in one partition; the jobs run in
//! bounded mode and their outputs are checked against the same independent
//! oracles as the file runs, and against a file run of the same data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Scratch, assert_training_samples, consume_all, dead_letter_payload, mock_cluster, oracle_rows,
    produce_lines, repo, run_oracle, sorted,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use wafer_test_broker::{Broker, Storage};

/// Asserts that every key of `rows` lives in one partition.
fn assert_one_partition_per_key(rows: &[(i32, Option<Vec<u8>>, Value)], what: &str) {
    let mut seen: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for (p, k, v) in rows {
        let k = k
            .clone()
            .unwrap_or_else(|| panic!("{what}: message without a key: {v}"));
        let first = *seen.entry(k.clone()).or_insert(*p);
        assert_eq!(
            first,
            *p,
            "{what}: key {:?} in partitions {first} and {p}",
            String::from_utf8_lossy(&k)
        );
    }
}

/// The user-features outputs read back from the Kafka topics
/// `<prefix>purchases_5m` and `<prefix>sessions`.
struct KafkaFeatures {
    purchases: Vec<Value>,
    sessions: Vec<Value>,
}

impl KafkaFeatures {
    /// The rows of `output`.
    fn rows(&self, output: &str) -> Vec<Value> {
        if output == "sessions" {
            self.sessions.clone()
        } else {
            self.purchases.clone()
        }
    }
}

/// Reads the user-features outputs of a Kafka sink with topic prefix
/// `prefix`, asserting that every key lives in one partition.
fn kafka_features(brokers: &str, prefix: &str) -> KafkaFeatures {
    let read = |output: &str| {
        let rows = consume_all(brokers, &format!("{prefix}{output}"));
        assert_one_partition_per_key(&rows, output);
        rows.into_iter().map(|(_, _, r)| r).collect()
    };
    KafkaFeatures {
        purchases: read("purchases_5m"),
        sessions: read("sessions"),
    }
}

/// Asserts that no record of `rows` was written twice.
fn assert_written_once(rows: &[Value], what: &str) {
    let distinct: BTreeSet<String> = rows.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), rows.len(), "{what}: a record was written twice");
}

fn generate_events(s: &Scratch) -> PathBuf {
    s.reference_events("events", 30000, 1500, 23)
        .with_extension("jsonl")
}

#[test]
fn user_features_from_kafka_match_the_file_run_and_the_oracle() {
    let broker = Broker::start(Storage::Memory);
    let s = Scratch::new();
    let input = generate_events(&s);
    // Two partitions, three deserialization workers.
    broker.create_topics(&[("events", 2), ("uf.purchases_5m", 3), ("uf.sessions", 3)]);
    let sent = produce_lines(&broker.addr, "events", 2, &input, &["user_id"]);

    let out = s.path("kafka");
    let job = repo().join("examples/user-features/job.yaml");
    s.run_ok(
        &job,
        &[
            ("KAFKA_BROKERS", broker.addr.as_str()),
            ("KAFKA_TOPIC", "events"),
            ("KAFKA_GROUP", "uf-test"),
            ("KAFKA_BOUNDED", "true"),
            ("KAFKA_SINK_BROKERS", broker.addr.as_str()),
            ("KAFKA_OUTPUT_PREFIX", "uf."),
            ("PARALLELISM", "3"),
            ("OUTPUT_DIR", out.to_str().unwrap()),
        ],
    );
    // Read to the end: no partition is behind.
    let metrics = s.metrics();
    for p in 0..2 {
        let lag = common::metric(
            &metrics,
            &format!(r#"wafer_source_lag_messages{{partition="events/{p}",source="events"}}"#),
        );
        assert_eq!(lag, Some(0.0), "lag of events/{p}:\n{metrics}");
    }
    let file_out = s.path("file");
    s.run_ok(
        &job,
        &[
            ("INPUT", input.to_str().unwrap()),
            ("PARALLELISM", "3"),
            ("OUTPUT_DIR", file_out.to_str().unwrap()),
        ],
    );

    let expected = run_oracle("user_features.py", &[input.as_os_str(), "json".as_ref()]);
    let want = |k: &str| oracle_rows(&expected, k);
    assert!(want("purchases_5m").len() > 200 && want("sessions").len() > 500 && want("late").len() > 20);

    // Features came out of Kafka: every key in one partition, each record
    // once, final upserts as the oracle says and as the file run wrote.
    let features = kafka_features(&broker.addr, "uf.");
    for what in ["purchases_5m", "sessions"] {
        assert_written_once(&features.rows(what), what);
    }
    let got = |o: &str| features.rows(o);
    common::assert_feature_upserts(got, want, "");
    common::assert_feature_upserts(got, |o| s.output("file", o), " against the file run");
    assert_eq!(
        sorted(&s.output("kafka", "late")),
        sorted(&want("late")),
        "late records"
    );
    assert_eq!(
        sorted(&s.output("kafka", "late")),
        sorted(&s.output("file", "late"))
    );

    // Dead letters name topic, partition and offset of their message.
    let dlq = s.output("kafka", "dlq");
    assert_eq!(Some(dlq.len() as u64), expected["dlq"].as_u64(), "dead letters");
    let by_position: BTreeMap<(i64, i64), &Vec<u8>> =
        sent.iter().map(|(p, o, l)| ((*p as i64, *o), l)).collect();
    for d in &dlq {
        assert_eq!(d["topic"], "events", "{d}");
        let at = (d["partition"].as_i64().unwrap(), d["offset"].as_i64().unwrap());
        let line = by_position
            .get(&at)
            .unwrap_or_else(|| panic!("no message at {at:?}: {d}"));
        let payload = dead_letter_payload(d);
        assert_eq!(&payload, *line, "{d}");
    }
}

#[test]
fn training_samples_from_kafka_match_the_oracle() {
    let broker = Broker::start(Storage::Memory);
    let s = Scratch::new();
    let (views, engagements) = s.reference_training("t", (8000, 300, 40), 5, &[]);
    broker.create_topics(&[("views", 2), ("engagements", 3)]);
    produce_lines(&broker.addr, "views", 2, &views, &["user_id", "item_id"]);
    produce_lines(
        &broker.addr,
        "engagements",
        3,
        &engagements,
        &["user_id", "item_id"],
    );
    let out = s.path("kafka");
    s.run_ok(
        &repo().join("examples/training-samples/job.yaml"),
        &[
            ("KAFKA_BROKERS", broker.addr.as_str()),
            ("KAFKA_GROUP", "ts-test"),
            ("KAFKA_BOUNDED", "true"),
            ("PARALLELISM", "3"),
            ("OUTPUT_DIR", out.to_str().unwrap()),
        ],
    );
    let expected = run_oracle(
        "training_samples.py",
        &[views.as_os_str(), engagements.as_os_str()],
    );
    assert!(expected["samples"].as_array().is_some_and(|a| a.len() > 5000));
    assert_training_samples(&s, "kafka", &expected);
}

#[test]
fn an_empty_partition_does_not_stall_windows() {
    let broker = Broker::start(Storage::Memory);
    let s = Scratch::new();
    // Four partitions, of which only some get messages; the job is
    // unbounded, so nothing but the data moves the watermark.
    broker.create_topics(&[("in", 4), ("out.purchases_5m", 2), ("out.sessions", 2)]);
    // Keys spread over partitions 0 and 1 only.
    let placed = produce_purchases(&s, &broker.addr, "in", 2, 0..20, 4);
    let used: BTreeSet<i32> = placed.iter().map(|(p, _, _)| *p).collect();
    assert!(used.len() < 4, "every partition got messages: {used:?}");
    let child = start_unbounded(&s, &broker.addr, "in", "out.", "3s");
    // The watermark reaches 19 min - 5 s: the windows starting at 0, 5 and
    // 10 minutes have fired, 5 purchases per user in each.
    let want = windows(4, 0..3);
    let got = wait_for_windows(&broker.addr, "out.purchases_5m", &want);
    drop(child);
    assert!(
        want.is_subset(&got),
        "windows did not fire while partitions {:?} stayed empty: got {got:?}",
        (0..4).filter(|p| !used.contains(p)).collect::<Vec<_>>()
    );
}

#[test]
fn exactly_once_sink_writes_every_record_once_in_transactions() {
    exactly_once_run(false);
}

#[test]
fn exactly_once_sink_with_checkpoints_commits_each_epoch_once() {
    exactly_once_run(true);
}

/// Sets the commit marker the way a committed transaction would (the mock
/// cluster takes transactional offsets but does not keep them).
fn set_marker(brokers: &str, value: i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "wafer-user-features.commits")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("eo.purchases_5m", 0, Offset::Offset(value))
        .expect("tpl");
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit marker");
}

#[test]
fn a_restart_restores_the_checkpoint_the_kafka_commit_marker_names() {
    let (_mock, brokers) = mock_cluster(&[("eo.purchases_5m", 3), ("eo.sessions", 3)]);
    let s = Scratch::new();
    let input = s
        .reference_events("events", 200_000, 5000, 31)
        .with_extension("jsonl");
    let ckpt = s.path("checkpoints");
    let out = s.path("out");
    let env = [
        ("INPUT", input.to_str().unwrap()),
        ("KAFKA_SINK_BROKERS", brokers.as_str()),
        ("KAFKA_OUTPUT_PREFIX", "eo."),
        ("KAFKA_DELIVERY", "exactly-once"),
        ("PARALLELISM", "2"),
        ("OUTPUT_DIR", out.to_str().unwrap()),
        ("CHECKPOINT_DIR", ckpt.to_str().unwrap()),
        ("CHECKPOINT_INTERVAL", "50ms"),
        ("WAFER_LOG", "info"),
    ];
    let job = repo().join("examples/user-features/job.yaml");
    s.run_ok(&job, &env);
    let ids = common::complete_checkpoints(&ckpt);
    assert!(ids.len() >= 2, "checkpoints kept: {ids:?}");
    let listing = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["checkpoints", ckpt.to_str().unwrap()])
        .output()
        .expect("wafer checkpoints");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("kafka commit marker: group `wafer-user-features.commits`, topic `eo.purchases_5m`"),
        "{listing}"
    );
    let (oldest, newest) = (ids[0], ids[ids.len() - 1]);

    // The transactions after the oldest kept checkpoint never committed:
    // the restart must restore it (not the newest), and replay the rest.
    set_marker(&brokers, oldest as i64);
    let log = s.run_ok(&job, &env);
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(
        log.contains("never committed") && log.contains(&format!("id={oldest}")),
        "did not restore checkpoint {oldest} of {ids:?}:\n{log}"
    );
    let discarded = log
        .lines()
        .any(|l| l.contains("discarding checkpoint") && l.contains(&format!("id={newest}")));
    assert!(
        discarded,
        "checkpoint {newest}, whose transactions were aborted, was not discarded:\n{log}"
    );
    // Files restored from that checkpoint and finished: exactly the oracle
    // (late records and dead letters once each); the features in Kafka end
    // with the oracle's values (the mock shows aborted records too, so
    // only the last value per key is checked).
    let expected = run_oracle("user_features.py", &[input.as_os_str(), "json".as_ref()]);
    common::assert_late_and_dead_letters(&s, "out", &expected);
    common::assert_kafka_features(&brokers, "eo.", &expected);

    // A job whose whole output was committed does not run again.
    set_marker(&brokers, i64::MAX);
    let again = s.run(&job, &env);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "ran again after committing everything");
    assert!(err.contains("ran to the end of its input"), "{err}");
}

/// Runs user-features into an exactly-once Kafka sink (on librdkafka's mock
/// cluster: tansu 0.6 has no EndTxn) and reads it back read-committed.
/// With `checkpoints`, every 50 ms: each epoch is its own transaction,
/// committed after its checkpoint from a pool of producers.
fn exactly_once_run(checkpoints: bool) {
    let (_mock, brokers) = mock_cluster(&[("eo.purchases_5m", 3), ("eo.sessions", 3)]);
    let s = Scratch::new();
    // Checkpoints need a run long enough to take several.
    let input = match checkpoints {
        false => generate_events(&s),
        true => s
            .reference_events("events", 200_000, 5000, 29)
            .with_extension("jsonl"),
    };
    let out = s.path("eo");
    let ckpt = s.path("eo-checkpoints");
    let mut env = vec![
        ("INPUT", input.to_str().unwrap()),
        ("KAFKA_SINK_BROKERS", brokers.as_str()),
        ("KAFKA_OUTPUT_PREFIX", "eo."),
        ("KAFKA_DELIVERY", "exactly-once"),
        ("PARALLELISM", "2"),
        ("OUTPUT_DIR", out.to_str().unwrap()),
    ];
    if checkpoints {
        env.push(("CHECKPOINT_DIR", ckpt.to_str().unwrap()));
        env.push(("CHECKPOINT_INTERVAL", "50ms"));
    }
    let log = s.run_ok(&repo().join("examples/user-features/job.yaml"), &env);
    if checkpoints {
        let done =
            common::metric(&s.metrics(), r#"wafer_checkpoints_total{outcome="completed"}"#).unwrap_or(0.0);
        assert!(
            done >= 3.0,
            "{done} checkpoints completed: {}",
            String::from_utf8_lossy(&log.stderr)
        );
        let commits = common::metric(
            &s.metrics(),
            r#"wafer_checkpoint_seconds_count{phase="kafka_commit"}"#,
        )
        .unwrap_or(0.0);
        assert!(commits >= done, "{commits} commits for {done} checkpoints");
    }
    let expected = run_oracle("user_features.py", &[input.as_os_str(), "json".as_ref()]);
    let features = kafka_features(&brokers, "eo.");
    assert_written_once(&features.rows("sessions"), "sessions");
    common::assert_feature_upserts(|o| features.rows(o), |o| oracle_rows(&expected, o), "");
}

#[test]
fn unreachable_brokers_give_a_clear_error() {
    let s = Scratch::new();
    let job = s.job(
        "job.yaml",
        r#"
name: down
components: { json: "@COMPONENTS@/interaction-json.wasm" }
formats: { json: { framing: lines, deserializer: json } }
sources:
  events:
    kafka: { brokers: "127.0.0.1:9", topics: events, connect_timeout: 2s }
    format: json
sink: { file: { dir: out } }
"#,
    );
    let started = Instant::now();
    let out = s.run(&job, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach kafka brokers 127.0.0.1:9"),
        "unexpected error: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "gave up without retrying"
    );
}

/// Produces one purchase per user per minute of `minutes` to `topic`
/// (keys spread over its first `partitions` partitions, as
/// [`produce_lines`] places them); times start at a 5-minute boundary.
fn produce_purchases(
    s: &Scratch,
    brokers: &str,
    topic: &str,
    partitions: i32,
    minutes: std::ops::Range<i64>,
    users: usize,
) -> Vec<(i32, i64, Vec<u8>)> {
    let mut text = String::new();
    for m in minutes.clone() {
        for u in 0..users {
            let t = MINUTE_BASE + m * 60_000 + u as i64;
            text.push_str(&format!(
                "{{\"event_id\":\"e{m}-{u}\",\"user_id\":\"u{u}\",\"item_id\":\"i\",\"event_type\":\"purchase\",\"amount\":1.5,\"event_time_ms\":{t}}}\n"
            ));
        }
    }
    let file = s.path(&format!("{topic}-{}-{}.jsonl", minutes.start, minutes.end));
    std::fs::write(&file, text).expect("write input");
    produce_lines(brokers, topic, partitions, &file, &["user_id"])
}

const MINUTE_BASE: i64 = 1_699_999_800_000;

/// Starts the user-features example, unbounded, reading `topic` and writing
/// windows to `<prefix>purchases_5m`.
fn start_unbounded(s: &Scratch, brokers: &str, topic: &str, prefix: &str, idle: &str) -> Running {
    start_unbounded_logging(s, brokers, topic, prefix, idle, std::process::Stdio::null())
}

/// [`start_unbounded`], with the job's log going to `log`.
fn start_unbounded_logging(
    s: &Scratch,
    brokers: &str,
    topic: &str,
    prefix: &str,
    idle: &str,
    log: std::process::Stdio,
) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_wafer"))
            .arg("run")
            .arg(repo().join("examples/user-features/job.yaml"))
            .env("WAFER_COMPONENTS", common::components())
            .env("KAFKA_BROKERS", brokers)
            .env("KAFKA_TOPIC", topic)
            .env("KAFKA_GROUP", format!("{topic}-group"))
            .env("KAFKA_START", "earliest")
            .env("KAFKA_SINK_BROKERS", brokers)
            .env("KAFKA_OUTPUT_PREFIX", prefix)
            .env("PARALLELISM", "2")
            // Silent partitions stop holding the watermark back after this.
            .env("IDLE_TIMEOUT", idle)
            .env("OUTPUT_DIR", s.path("out"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start wafer"),
    )
}

/// A running `wafer`, killed when dropped (also when a test fails).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `topic` holds every `(user, window start, count)` of `want`.
fn wait_for_windows(
    brokers: &str,
    topic: &str,
    want: &BTreeSet<(String, i64, i64)>,
) -> BTreeSet<(String, i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = BTreeSet::new();
    while Instant::now() < deadline && !want.is_subset(&got) {
        std::thread::sleep(Duration::from_millis(500));
        got = consume_all(brokers, topic)
            .iter()
            .map(|(_, _, v)| {
                (
                    v["user_id"].as_str().unwrap_or_default().to_string(),
                    v["window_start_ms"].as_i64().unwrap_or_default(),
                    v["purchase_count"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
    }
    got
}

/// Windows of 5 purchases for `users` users, starting at the 5-minute
/// slots `starts`.
fn windows(users: usize, starts: std::ops::Range<i64>) -> BTreeSet<(String, i64, i64)> {
    (0..users)
        .flat_map(|u| {
            starts
                .clone()
                .map(move |w| (format!("u{u}"), MINUTE_BASE + w * 300_000, 5))
        })
        .collect()
}

#[test]
fn a_broker_restarted_mid_run_loses_nothing() {
    // Topics in SQLite, so that the restarted broker still has them.
    let mut broker = Broker::start(Storage::Sqlite);
    let s = Scratch::new();
    broker.create_topics(&[("r", 2), ("r.purchases_5m", 2), ("r.sessions", 2)]);
    produce_purchases(&s, &broker.addr, "r", 2, 0..11, 4);
    // Partitions must not turn idle while the broker is away: records of a
    // partition that resumes behind the watermark would (rightly) be late.
    let child = start_unbounded(&s, &broker.addr, "r", "r.", "10m");
    // Minutes 0-10 read: the window at 0 has fired.
    let early = windows(4, 0..1);
    let got = wait_for_windows(&broker.addr, "r.purchases_5m", &early);
    assert!(early.is_subset(&got), "before the restart: {got:?}");

    // The broker goes away for about a minute while the job runs.
    broker.restart();
    produce_purchases(&s, &broker.addr, "r", 2, 11..20, 4);
    // Everything up to minute 19 read: the windows at 0, 5 and 10 minutes
    // have fired with all their purchases; none was lost across the restart.
    let all = windows(4, 0..3);
    let got = wait_for_windows(&broker.addr, "r.purchases_5m", &all);
    drop(child);
    assert!(all.is_subset(&got), "after the restart: {got:?}");
}

#[test]
fn a_partition_assigned_while_running_is_read() {
    // A partition added to a topic reaches a running job the way this one
    // does: in a new assignment of the consumer group, for a partition the
    // job has never read (tansu cannot add partitions to a topic, so another
    // member of the group hands one over instead).
    let broker = Broker::start(Storage::Memory);
    let s = Scratch::new();
    broker.create_topics(&[("g", 2), ("g.purchases_5m", 2), ("g.sessions", 2)]);
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "g-group")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    other.subscribe(&["g"]).expect("subscribe");
    let holds = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let _ = other.poll(Duration::from_millis(100));
            if other.assignment().map(|a| a.count()).unwrap_or_default() == n {
                return true;
            }
        }
        false
    };
    assert!(holds(2), "the other member never got both partitions");

    // The job joins the group: each member gets one partition.
    let log_path = s.path("wafer.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = start_unbounded_logging(&s, &broker.addr, "g", "g.", "3s", log.into());
    assert!(holds(1), "the job never joined the group");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_for_log = |line: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !log_text().contains(line) {
            // The other member keeps taking part in the group meanwhile.
            let _ = other.poll(Duration::from_millis(100));
        }
    };
    wait_for_log("kafka partitions assigned partitions=1");
    // The other member leaves: its partition goes to the running job.
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !log_text().contains("kafka partitions assigned partitions=2") {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = log_text();
    let first = text.find("kafka partitions assigned partitions=1");
    let second = text.find("kafka partitions assigned partitions=2");
    assert!(
        first.is_some() && first < second,
        "the job held one partition, then both:\n{text}"
    );

    // Purchases in both partitions: the job reads the one it was handed.
    let placed = produce_purchases(&s, &broker.addr, "g", 2, 0..20, 8);
    let used: BTreeSet<i32> = placed.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(used.len(), 2, "purchases in both partitions");
    let want = windows(8, 0..3);
    let got = wait_for_windows(&broker.addr, "g.purchases_5m", &want);
    drop(child);
    assert!(want.is_subset(&got), "windows of both partitions: got {got:?}");
}
