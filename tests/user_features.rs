//! The user-features reference job, end to end, against an independent
//! oracle (`tests/oracles/user_features.py`, plain sequential Python that
//! sorts and groups), plus handcrafted scenarios for late firing, processor
//! traps and state TTL.

mod common;

use std::path::Path;

use common::{Scratch, assert_user_features, read_jsonl, repo, run_oracle, state_census};
use serde_json::Value;

fn oracle(input: &Path, format: &str) -> Value {
    run_oracle("user_features.py", &[input.as_os_str(), format.as_ref()])
}

/// Runs the example job on `input` and compares every output with the
/// oracle.
fn check_against_oracle(s: &Scratch, input: &Path, format: &str, env: &[(&str, &str)], tag: &str) {
    let expected = oracle(input, format);
    let out = s.path(tag);
    let mut all: Vec<(&str, &str)> = vec![
        ("INPUT", input.to_str().unwrap()),
        ("INPUT_FORMAT", format),
        ("OUTPUT_DIR", out.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    s.run_ok(&repo().join("examples/user-features/job.yaml"), &all);
    let as_vec = |k: &str| expected[k].as_array().cloned().unwrap_or_default();
    assert!(
        as_vec("purchases_5m").len() > 500 && as_vec("sessions").len() > 1000 && as_vec("late").len() > 50
    );
    assert_user_features(s, tag, &expected);
}

fn generate(s: &Scratch) -> std::path::PathBuf {
    s.reference_events("events", 60000, 3000, 17)
}

#[test]
fn json_input_matches_the_oracle_at_parallelism_1_and_2() {
    let s = Scratch::new();
    let base = generate(&s);
    let input = base.with_extension("jsonl");
    check_against_oracle(&s, &input, "json", &[("PARALLELISM", "1")], "p1");
    check_against_oracle(&s, &input, "json", &[("PARALLELISM", "2")], "p2");
}

#[test]
fn protobuf_input_matches_the_oracle_at_parallelism_1_and_2() {
    let s = Scratch::new();
    let base = generate(&s);
    let input = base.with_extension("pb");
    check_against_oracle(&s, &input, "protobuf", &[("PARALLELISM", "1")], "p1");
    check_against_oracle(&s, &input, "protobuf", &[("PARALLELISM", "2")], "p2");
}

#[test]
fn state_larger_than_the_cache_gives_identical_results() {
    let s = Scratch::new();
    let base = generate(&s);
    // 3000 users and their windows against 8 cached entries per worker:
    // nearly every access goes through RocksDB.
    check_against_oracle(
        &s,
        &base.with_extension("jsonl"),
        "json",
        &[("PARALLELISM", "2"), ("STATE_CACHE_ENTRIES", "8")],
        "tiny-cache",
    );
}

fn ev(user: &str, kind: &str, t: i64, amount: Option<f64>, id: &str) -> String {
    let mut v = serde_json::json!({"event_id": id, "user_id": user, "event_type": kind, "event_time_ms": t});
    if let Some(a) = amount {
        v["amount"] = serde_json::json!(a);
    }
    v.to_string()
}

#[test]
fn a_window_fires_again_for_late_records_within_lateness_and_not_after() {
    let s = Scratch::new();
    let lines = [
        ev("u", "purchase", 1_000, Some(1.0), "a"),
        ev("v", "click", 302_000, None, "b"),
        ev("v", "click", 310_000, None, "c"), // watermark 305000: [0, 300000) fires
        ev("u", "purchase", 299_000, Some(2.0), "d"), // late but within 60 s: fires again
        ev("v", "click", 370_000, None, "e"), // watermark 365000: the window closes
        ev("u", "purchase", 299_500, Some(4.0), "f"), // too late: late output
    ];
    std::fs::write(s.path("in.jsonl"), lines.join("\n")).unwrap();
    let out = s.path("out");
    // The example job, with one worker and one record per batch so that the
    // watermark moves record by record.
    let job = std::fs::read_to_string(repo().join("examples/user-features/job.yaml"))
        .unwrap()
        .replace(
            "parallelism: ${PARALLELISM:-auto}",
            "parallelism: 1\nbatch_size: 1",
        )
        .replace(
            "${WAFER_COMPONENTS:-../../target/components}",
            common::components(),
        );
    let job_path = s.path("job.yaml");
    std::fs::write(&job_path, job).unwrap();
    s.run_ok(
        &job_path,
        &[
            ("INPUT", s.path("in.jsonl").to_str().unwrap()),
            ("OUTPUT_DIR", out.to_str().unwrap()),
        ],
    );
    let windows: Vec<Value> = read_jsonl(&out.join("purchases_5m.jsonl"))
        .into_iter()
        .filter(|r| r["user_id"] == "u")
        .collect();
    let totals: Vec<(f64, i64)> = windows
        .iter()
        .map(|r| {
            (
                r["purchase_total"].as_f64().unwrap(),
                r["purchase_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        vec![(1.0, 1), (3.0, 2)],
        "fired, then fired again with the late record"
    );
    let late = read_jsonl(&out.join("late.jsonl"));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["event_id"], "f");
    assert_eq!(late[0]["amount"], 4.0);
}

fn probe_job(s: &Scratch, ttl_ms: i64, state_dir: &Path) -> std::path::PathBuf {
    s.job(
        "probe.yaml",
        &format!(
            r#"
name: probe
parallelism: 1
batch_size: 1
components:
  json: "@COMPONENTS@/interaction-json.wasm"
  probe: "@COMPONENTS@/probe.wasm"
formats: {{ json: {{ framing: lines, deserializer: json }} }}
sources:
  events: {{ file: {{ path: in.jsonl }}, format: json }}
key_by: [user_id]
allowed_lateness: 60s
state: {{ dir: "{}" }}
processors:
  probe: {{ component: probe, config: {{ ttl_ms: {ttl_ms} }} }}
sink: {{ file: {{ dir: out }} }}
"#,
            state_dir.display()
        ),
    )
}

#[test]
fn a_trapping_processor_call_is_rolled_back_and_only_its_record_dead_lettered() {
    let s = Scratch::new();
    let mut lines = Vec::new();
    for i in 0..6 {
        lines.push(ev(
            "a",
            if i == 3 { "@@TRAP@@" } else { "click" },
            1_000 * i,
            None,
            &format!("a{i}"),
        ));
        lines.push(ev("b", "click", 1_000 * i + 500, None, &format!("b{i}")));
    }
    std::fs::write(s.path("in.jsonl"), lines.join("\n")).unwrap();
    let job = probe_job(&s, 3_600_000, &s.path("state"));
    // Batches of many records: the trap poisons a whole call, which must be
    // undone and re-run record by record.
    let job_text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("batch_size: 1", "batch_size: 64");
    std::fs::write(&job, job_text).unwrap();
    s.run_ok(&job, &[]);
    let probe = s.output("out", "probe");
    // Field `field` of the user's probe rows, in order.
    let of = |user: &str, field: &str| -> Vec<i64> {
        probe
            .iter()
            .filter(|r| r["user_id"] == user)
            .map(|r| r[field].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        of("a", "prev_count"),
        vec![0, 1, 2, 3, 4],
        "the trapped record is never counted"
    );
    assert_eq!(of("b", "prev_count"), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        of("a", "trail_len"),
        vec![0, 1, 2, 3, 4],
        "the trapped record's list append is rolled back"
    );
    assert_eq!(of("b", "trail_len"), vec![0, 1, 2, 3, 4, 5]);
    let dlq = s.output("out", "dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["reason"], "trap");
    assert_eq!(dlq[0]["stage"], "probe");
    assert!(
        dlq[0]["error"].as_str().unwrap().contains("trap marker for a"),
        "{}",
        dlq[0]
    );
    assert!(dlq[0]["payload"].as_str().unwrap().contains("@@TRAP@@"));
}

#[test]
fn state_past_its_ttl_is_invisible_and_removed_from_rocksdb() {
    let s = Scratch::new();
    let mut lines = Vec::new();
    // `a` writes at 0 s and 10 s, then is silent for 15 minutes: with a TTL
    // of 60 s its count has expired when it comes back. `b` writes every
    // 30 s and never expires.
    lines.push(ev("a", "click", 0, None, "a0"));
    for i in 0..=40 {
        let t = i * 30_000;
        if i == 0 {
            lines.push(ev("a", "click", 10_000, None, "a1"));
        }
        lines.push(ev("b", "click", t + 1, None, &format!("b{i}")));
    }
    lines.push(ev("a", "click", 1_200_500, None, "a2"));
    lines.push(ev("a", "click", 1_201_000, None, "a3"));
    std::fs::write(s.path("in.jsonl"), lines.join("\n")).unwrap();
    let state = s.path("state");
    s.run_ok(&probe_job(&s, 60_000, &state), &[]);
    let probe = s.output("out", "probe");
    let prev = |user: &str| -> Vec<i64> {
        probe
            .iter()
            .filter(|r| r["user_id"] == user)
            .map(|r| r["prev_count"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        prev("a"),
        vec![0, 1, 0, 1],
        "a's count expired during its silence"
    );
    assert_eq!(
        prev("b"),
        (0..=40).collect::<Vec<i64>>(),
        "b's count never expired"
    );

    // After the run the watermark is at +infinity: every entry with a TTL has
    // expired and compaction removed it from disk; `seen` (no TTL) remains.
    let rows = state_census(&state);
    let text = format!("{rows:?}");
    let entries = |state: &str| -> Option<&str> {
        rows.iter()
            .find(|r| r[0] == "processor:probe" && r[1] == state)
            .map(|r| r[2].as_str())
    };
    assert_eq!(
        entries("0"),
        None,
        "expired TTL state is gone from RocksDB:\n{text}"
    );
    assert_eq!(entries("1"), Some("2"), "state without TTL stays:\n{text}");
    assert_eq!(entries("2"), Some("2"), "list state without TTL stays:\n{text}");
}
