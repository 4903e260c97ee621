//! Checkpoints, recovery and savepoints, through the real binary:
//!
//! - crash tests: the reference jobs run with short checkpoint intervals and
//!   are killed with SIGKILL at random moments (some of them while a
//!   checkpoint is being written), restarted with the same command each
//!   time, and their final outputs compared with the independent oracles:
//!   nothing lost, nothing counted twice, no late record or dead letter
//!   written twice; also reading from Kafka, whose offsets are the
//!   source's checkpointed state;
//! - a savepoint taken while the job runs, the job stopped, changed (a new
//!   filter, other parallelism, a new version of the sessions processor)
//!   and started from the savepoint: the files already read are not read
//!   again and the results are those of one uninterrupted run;
//! - a corrupted latest checkpoint is skipped for the one before.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Scratch, assert_training_samples, assert_user_features, complete_checkpoints, components, metric,
    mock_cluster, produce_lines, repo, run_oracle,
};

/// A small deterministic random generator (xorshift), so a failing run can
/// be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn spawn(job: &Path, env: &[(&str, String)], log: &Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafer"));
    cmd.arg("run").arg(job).args(extra);
    cmd.env("WAFER_COMPONENTS", components());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    cmd.stdout(Stdio::null()).stderr(log);
    cmd.spawn().expect("spawn wafer")
}

/// Whether a checkpoint is being written (its state snapshot exists).
fn checkpoint_in_progress(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("tmp")).is_ok_and(|mut rd| rd.next().is_some())
}

/// `job` with each source limited to `rate` records per second, written to
/// the scratch directory (`spawn` points `WAFER_COMPONENTS` at the built
/// components, so the moved file needs no other change). How much input a
/// life between two kills reads then has a bound whatever the machine's
/// speed: unlimited, a fast machine read the whole input before the last
/// kill, and a savepoint meant for mid-input came after the end.
fn rate_limited(s: &Scratch, job: &Path, rate: u64) -> PathBuf {
    let yaml = std::fs::read_to_string(job).expect("job file");
    let mut out = String::new();
    let mut sources = 0;
    for line in yaml.lines() {
        out.push_str(line);
        out.push('\n');
        // A source's `format:` (sources' members are indented by four).
        if line.starts_with("    format: ") {
            out.push_str(&format!("    max_records_per_second: {rate}\n"));
            sources += 1;
        }
    }
    assert!(sources > 0, "no source found in {}", job.display());
    let path = s.path(&format!(
        "limited-{}",
        job.file_name().and_then(|n| n.to_str()).unwrap_or("job.yaml")
    ));
    std::fs::write(&path, out).expect("write the limited job");
    path
}

/// Runs `job` until it finishes by itself, killing it with SIGKILL at
/// random moments at least `kills` times and restarting it with the same
/// command. Every life makes progress: a kill comes only after a new
/// checkpoint completed. Each source reads at most `rate` records per
/// second, so that the input lasts for the kills on any machine. Returns
/// how many kills landed while a checkpoint was being written.
#[allow(clippy::too_many_arguments)]
fn run_with_crashes(
    s: &Scratch,
    job: &Path,
    env: &[(&str, String)],
    ckpt: &Path,
    kills: usize,
    rate: u64,
    seed: u64,
) -> usize {
    let job = &rate_limited(s, job, rate);
    let mut rng = Rng(seed);
    let log = s.path("crash.log");
    let mut killed = 0;
    let mut during = 0;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        assert!(Instant::now() < deadline, "the crash test did not finish in time");
        let before = complete_checkpoints(ckpt).last().copied().unwrap_or(0);
        let mut child = spawn(job, env, &log, &[]);
        if killed >= kills {
            let status = child.wait().expect("wait");
            assert!(
                status.success(),
                "the last run failed ({status}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            return during;
        }
        // Wait for progress (a new checkpoint), then kill at a random moment
        // soon after: sometimes right when a checkpoint is being written.
        let mid_checkpoint = killed % 3 == 1;
        let mut finished = None;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                finished = Some(status);
                break;
            }
            if complete_checkpoints(ckpt).last().copied().unwrap_or(0) > before {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(status) = finished {
            panic!(
                "the job ended ({status}) after {killed} kills; the input is too small for {kills}. log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if mid_checkpoint {
            let until = Instant::now() + Duration::from_secs(2);
            while !checkpoint_in_progress(ckpt) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if checkpoint_in_progress(ckpt) {
                during += 1;
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        if child.try_wait().expect("try_wait").is_some() {
            panic!("the job ended by itself after {killed} kills; the input is too small");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        killed += 1;
    }
}

fn user_features_input(s: &Scratch, events: usize) -> PathBuf {
    s.reference_events("events", events, 3000, 23)
        .with_extension("jsonl")
}

/// The user-features example's environment: JSON `input`, outputs to
/// `<scratch>/out`, two workers, checkpoints in `ckpt` every `interval`.
fn user_features_env(s: &Scratch, input: &Path, ckpt: &Path, interval: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INPUT", input.display().to_string()),
        ("INPUT_FORMAT", "json".into()),
        ("OUTPUT_DIR", s.path("out").display().to_string()),
        ("PARALLELISM", "2".into()),
        ("CHECKPOINT_DIR", ckpt.display().to_string()),
        ("CHECKPOINT_INTERVAL", interval.into()),
    ]
}

/// Compares the user-features outputs in `out` with the oracle's.
fn check_user_features(s: &Scratch, input: &Path, out: &str) {
    let expected = run_oracle("user_features.py", &[input.as_os_str(), "json".as_ref()]);
    assert_user_features(s, out, &expected);
}

#[test]
fn user_features_survives_repeated_sigkill() {
    let s = Scratch::new();
    let input = user_features_input(&s, 400000);
    let ckpt = s.path("ckpt");
    let mut env = user_features_env(&s, &input, &ckpt, "100ms");
    // State is also written back between barriers (a small bound, so that
    // it happens all the time): a kill then finds post-barrier values in
    // RocksDB, which recovery must not use.
    env.push(("CHECKPOINT_MAX_DIRTY", "64".into()));
    // Barriers' freezes span many batches, so kills and restores land while
    // entries are captured on touch and writes are held.
    env.push(("CHECKPOINT_FREEZE_SLICE", "4".into()));
    let during = run_with_crashes(
        &s,
        &repo().join("examples/user-features/job.yaml"),
        &env,
        &ckpt,
        10,
        50_000,
        7,
    );
    assert!(during >= 1, "no kill landed during a checkpoint");
    check_user_features(&s, &input, "out");
}

#[test]
fn user_features_from_kafka_survives_repeated_sigkill() {
    // librdkafka's mock cluster, not tansu: tansu 0.6 answers a fetch from
    // inside a record batch with the batches after it, so a restart from
    // such an offset skips the rest of that batch (Kafka returns the batch
    // holding the offset; tansu's SQL storage gets it right but is too
    // slow here). The mock lives in this process and outlives every kill;
    // it keeps at most 100,000 messages (5 MB) per partition.
    let (_mock, brokers) = mock_cluster(&[("events", 2)]);
    let s = Scratch::new();
    let input = user_features_input(&s, 190_000);
    produce_lines(&brokers, "events", 2, &input, &["user_id"]);
    let ckpt = s.path("ckpt");
    let mut env = user_features_env(&s, &input, &ckpt, "50ms");
    // Each restart resumes from the checkpoint's offset per partition
    // (its watermark per partition lane, its state), not from the group.
    env.extend([
        ("KAFKA_BROKERS", brokers.clone()),
        ("KAFKA_TOPIC", "events".into()),
        ("KAFKA_GROUP", "crash-test".into()),
        ("KAFKA_BOUNDED", "true".into()),
        ("CHECKPOINT_FREEZE_SLICE", "4".into()),
    ]);
    let during = run_with_crashes(
        &s,
        &repo().join("examples/user-features/job.yaml"),
        &env,
        &ckpt,
        5,
        40_000,
        11,
    );
    assert!(during >= 1, "no kill landed during a checkpoint");
    check_user_features(&s, &input, "out");
}

#[test]
fn training_samples_survives_repeated_sigkill() {
    let s = Scratch::new();
    let (views, engagements) = s.reference_training("training", (200_000, 400, 60), 5, &[]);
    let ckpt = s.path("ckpt");
    let out = s.path("out");
    let env: Vec<(&str, String)> = vec![
        ("VIEWS", views.display().to_string()),
        ("ENGAGEMENTS", engagements.display().to_string()),
        ("OUTPUT_DIR", out.display().to_string()),
        ("PARALLELISM", "2".into()),
        ("CHECKPOINT_DIR", ckpt.display().to_string()),
        ("CHECKPOINT_INTERVAL", "100ms".into()),
    ];
    // Smaller batches: a barrier waits behind fewer queued records, so each
    // life between kills is shorter and ten kills fit in the input.
    let yaml = std::fs::read_to_string(repo().join("examples/training-samples/job.yaml"))
        .unwrap()
        .replace(
            "parallelism: ${PARALLELISM:-auto}",
            "parallelism: ${PARALLELISM:-auto}\nbatch_size: 256",
        );
    let job = s.path("training-job.yaml");
    std::fs::write(&job, yaml).unwrap();
    run_with_crashes(&s, &job, &env, &ckpt, 10, 40_000, 11);
    let expected = run_oracle(
        "training_samples.py",
        &[views.as_os_str(), engagements.as_os_str()],
    );
    assert!(expected["samples"].as_array().is_some_and(|a| a.len() > 1000));
    assert_training_samples(&s, "out", &expected);
}

#[test]
fn user_features_into_kafka_survives_repeated_sigkill() {
    // Files in, the features out to Kafka at least once (the mock cluster
    // again): each output flushes at every epoch's end before the
    // checkpoint may complete, so a restart repeats records but never
    // loses one, and each key's last value is the oracle's.
    let (_mock, brokers) = mock_cluster(&[("f.purchases_5m", 2), ("f.sessions", 2)]);
    let s = Scratch::new();
    let input = user_features_input(&s, 200_000);
    let ckpt = s.path("ckpt");
    let mut env = user_features_env(&s, &input, &ckpt, "50ms");
    env.extend([
        ("KAFKA_SINK_BROKERS", brokers.clone()),
        ("KAFKA_OUTPUT_PREFIX", "f.".into()),
        ("CHECKPOINT_FREEZE_SLICE", "4".into()),
    ]);
    // Messages wait in the producer for a second: only the flush at each
    // epoch's end gets them to the broker before a kill that follows the
    // checkpoint.
    let yaml = std::fs::read_to_string(repo().join("examples/user-features/job.yaml"))
        .unwrap()
        .replace(
            "    delivery: ${KAFKA_DELIVERY:-at-least-once}",
            "    delivery: ${KAFKA_DELIVERY:-at-least-once}\n    properties: { linger.ms: 1000 }",
        );
    let job = s.path("job.yaml");
    std::fs::write(&job, yaml).unwrap();
    run_with_crashes(&s, &job, &env, &ckpt, 5, 40_000, 17);
    let expected = run_oracle("user_features.py", &[input.as_os_str(), "json".as_ref()]);
    common::assert_kafka_features(&brokers, "f.", &expected);
    common::assert_late_and_dead_letters(&s, "out", &expected);
}

#[test]
fn training_samples_from_kafka_survives_repeated_sigkill() {
    // Two Kafka sources: every restart resumes both from the same cut. On
    // the mock cluster, for the reason given in the user-features test.
    let (_mock, brokers) = mock_cluster(&[("views", 2), ("engagements", 3)]);
    let s = Scratch::new();
    let (views, engagements) = s.reference_training("training", (100_000, 400, 60), 5, &[]);
    produce_lines(&brokers, "views", 2, &views, &["user_id", "item_id"]);
    produce_lines(&brokers, "engagements", 3, &engagements, &["user_id", "item_id"]);
    let ckpt = s.path("ckpt");
    let env: Vec<(&str, String)> = vec![
        ("KAFKA_BROKERS", brokers.clone()),
        ("KAFKA_GROUP", "crash-test".into()),
        ("KAFKA_BOUNDED", "true".into()),
        ("OUTPUT_DIR", s.path("out").display().to_string()),
        ("PARALLELISM", "2".into()),
        ("CHECKPOINT_DIR", ckpt.display().to_string()),
        ("CHECKPOINT_INTERVAL", "50ms".into()),
    ];
    run_with_crashes(
        &s,
        &repo().join("examples/training-samples/job.yaml"),
        &env,
        &ckpt,
        5,
        30_000,
        13,
    );
    let expected = run_oracle(
        "training_samples.py",
        &[views.as_os_str(), engagements.as_os_str()],
    );
    assert!(expected["samples"].as_array().is_some_and(|a| a.len() > 1000));
    assert_training_samples(&s, "out", &expected);
}

/// The records a finished run read from its sources.
fn records_read(metrics: &str) -> f64 {
    metric(metrics, "wafer_records_in_total{stage=\"deserialize:events\"}").unwrap_or(0.0)
}

#[test]
fn a_savepoint_carries_state_into_a_changed_job_without_rereading_files() {
    let s = Scratch::new();
    // Two files: the savepoint is taken while the first is being read or
    // soon after.
    let input = user_features_input(&s, 300000);
    let dir = s.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    // Split the input into two files, in path order.
    let text = std::fs::read(&input).unwrap();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let half = lines.len() / 2;
    std::fs::write(dir.join("a.jsonl"), lines[..half].concat()).unwrap();
    std::fs::write(dir.join("b.jsonl"), lines[half..].concat()).unwrap();

    let ckpt = s.path("ckpt");
    let job = repo().join("examples/user-features/job.yaml");
    let env = user_features_env(&s, &dir, &ckpt, "1h");
    let first_metrics = s.path("first.txt");
    // At most 100,000 records a second: the savepoint comes mid-input
    // however fast the machine is.
    let mut child = spawn(
        &rate_limited(&s, &job, 100_000),
        &env,
        &s.path("first.log"),
        &["--metrics-file", first_metrics.to_str().unwrap()],
    );
    // Let it read for a while, then take a savepoint and stop.
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["savepoint", ckpt.to_str().unwrap(), "--name", "half", "--stop"])
        .output()
        .expect("wafer savepoint");
    assert!(
        out.status.success(),
        "savepoint failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(s.path("first.log")).unwrap_or_default()
    );
    let savepoint = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(savepoint, ckpt.join("savepoints").join("half"));
    let status = child.wait().unwrap();
    assert!(status.success(), "the stopped job failed: {status}");
    let read_first = records_read(&std::fs::read_to_string(&first_metrics).unwrap());
    let total = lines.len() as f64;
    assert!(
        read_first > 0.0 && read_first < total,
        "the first run read {read_first} of {total} records: the savepoint should come mid-input"
    );

    // The changed job: a filter that drops nothing the oracle keeps, one
    // worker instead of two, and a new version of the sessions processor.
    let yaml = std::fs::read_to_string(&job).unwrap();
    let yaml = yaml
        .replace(
            "    format: ${INPUT_FORMAT:-json}\n",
            "    format: ${INPUT_FORMAT:-json}\n    filters:\n      - exclude: { field: event_type, values: [heartbeat-never-sent] }\n",
        )
        .replace(
            "sessions: ${WAFER_COMPONENTS:-../../target/components}/sessions.wasm",
            "sessions: ${WAFER_COMPONENTS:-../../target/components}/sessions-v2.wasm",
        );
    let changed = s.path("changed.yaml");
    std::fs::write(&changed, &yaml).unwrap();
    let mut env2: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env2.retain(|(k, _)| *k != "PARALLELISM");
    env2.push(("PARALLELISM", "1"));
    let out = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("run")
        .arg(&changed)
        .arg("--from-savepoint")
        .arg(&savepoint)
        .arg("--metrics-file")
        .arg(s.path("second.txt"))
        .env("WAFER_COMPONENTS", components())
        .envs(env2.iter().copied())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "restoring from the savepoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_second = records_read(&std::fs::read_to_string(s.path("second.txt")).unwrap());
    assert_eq!(
        read_first + read_second,
        total,
        "records read before and after the savepoint must add up to the input, once"
    );
    check_user_features(&s, &input, "out");
    // The savepoint stays until deleted.
    assert!(savepoint.join("_MANIFEST").exists());
}

#[test]
fn a_corrupt_latest_checkpoint_is_skipped_for_the_one_before() {
    let s = Scratch::new();
    let input = user_features_input(&s, 200000);
    let ckpt = s.path("ckpt");
    let job = repo().join("examples/user-features/job.yaml");
    let env = user_features_env(&s, &input, &ckpt, "100ms");
    let log = s.path("run.log");
    let mut child = spawn(&job, &env, &log, &[]);
    while complete_checkpoints(&ckpt).len() < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended too early: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let ids = complete_checkpoints(&ckpt);
    let latest = *ids.last().unwrap();
    // Flip a byte in the middle of the latest manifest.
    let manifest = ckpt.join(format!("chk-{latest:010}")).join("_MANIFEST");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&manifest, bytes).unwrap();

    let listing = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["checkpoints", ckpt.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains(&format!("skipped checkpoint {latest}")),
        "the corrupt checkpoint is reported: {text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("run")
        .arg(&job)
        .env("WAFER_COMPONENTS", components())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping checkpoint") && stderr.contains("restoring from checkpoint"),
        "the run says what it skipped and what it restored: {stderr}"
    );
    check_user_features(&s, &input, "out");
}

/// Runs the job with `extra` arguments to completion; its status and log.
fn run_to_end(job: &Path, env: &[(&str, String)], extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafer"));
    cmd.arg("run").arg(job).args(extra);
    cmd.env("WAFER_COMPONENTS", components());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run wafer");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn state_the_changed_job_no_longer_has_is_refused_unless_dropped_explicitly() {
    let s = Scratch::new();
    let input = user_features_input(&s, 100_000);
    let ckpt = s.path("ckpt");
    let job = repo().join("examples/user-features/job.yaml");
    let mut env = user_features_env(&s, &input, &ckpt, "50ms");
    let log = s.path("run.log");
    let mut child = spawn(&job, &env, &log, &[]);
    while complete_checkpoints(&ckpt).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before a checkpoint: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The source reads another path: a new source id, so the checkpoint's
    // position would be silently dropped and its files read again.
    let moved = s.path("moved.jsonl");
    std::fs::copy(&input, &moved).unwrap();
    for (k, v) in env.iter_mut() {
        if *k == "INPUT" {
            *v = moved.display().to_string();
        }
    }
    let (status, err) = run_to_end(&job, &env, &[]);
    assert!(!status.success(), "a lost source was accepted: {err}");
    assert!(
        err.contains(&format!("file:{}", input.display())) && err.contains("--allow-dropped-state"),
        "the error names the source and the way out: {err}"
    );
    let (status, err) = run_to_end(&job, &env, &["--allow-dropped-state"]);
    assert!(status.success(), "{err}");
    assert!(err.contains("dropping the state of sources"), "{err}");

    // An operator with state removed from the job: the same.
    let yaml = std::fs::read_to_string(&job).unwrap();
    let start = yaml.find("processors:").unwrap();
    let end = yaml[start..].find("\nsink:").unwrap() + start;
    let without = format!("{}{}", &yaml[..start], &yaml[end + 1..]);
    let changed = s.path("no-sessions.yaml");
    std::fs::write(&changed, without).unwrap();
    let (status, err) = run_to_end(&changed, &env, &[]);
    assert!(
        !status.success(),
        "a removed operator's state was dropped silently: {err}"
    );
    assert!(
        err.contains("processor:sessions") && err.contains("--allow-dropped-state"),
        "the error names the operator and the way out: {err}"
    );
}
