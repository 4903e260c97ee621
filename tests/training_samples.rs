//! The training-samples reference job, end to end: views and engagements
//! joined by a Wasm co-processor, against an independent oracle
//! (`tests/oracles/training_samples.py`, plain Python that groups and
//! scans), with the two inputs read at very different speeds, a tiny state
//! cache, and handcrafted scenarios for engagements that arrive after
//! their sample was emitted. Every run checks that RocksDB holds no state
//! afterwards.

mod common;

use std::path::{Path, PathBuf};

use common::{Scratch, assert_training_samples, repo, run_oracle, state_census};
use serde_json::{Value, json};

fn oracle(views: &Path, engagements: &Path) -> Value {
    run_oracle(
        "training_samples.py",
        &[views.as_os_str(), engagements.as_os_str()],
    )
}

/// The shared generated input (see `Scratch::reference_training`).
const BASE: (usize, usize, usize) = (20_000, 400, 60);
const BASE_SEED: u64 = 11;

/// Runs the example job and returns the output directory; asserts that the
/// state directory is empty afterwards (every view's sample is final and
/// every engagement expired at the end of input).
fn run_job(s: &Scratch, views: &Path, engagements: &Path, env: &[(&str, &str)], tag: &str) -> PathBuf {
    let out = s.path(tag);
    let state = s.path(&format!("{tag}-state"));
    let mut all: Vec<(&str, &str)> = vec![
        ("VIEWS", views.to_str().unwrap()),
        ("ENGAGEMENTS", engagements.to_str().unwrap()),
        ("OUTPUT_DIR", out.to_str().unwrap()),
        ("STATE_DIR", state.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    s.run_ok(&repo().join("examples/training-samples/job.yaml"), &all);
    let census = state_census(&state);
    assert!(
        census
            .iter()
            .all(|row| row.get(2).map(String::as_str) == Some("0")),
        "state left in RocksDB after the run ({tag}): {census:?}"
    );
    out
}

fn check_against_oracle(s: &Scratch, views: &Path, engagements: &Path, env: &[(&str, &str)], tag: &str) {
    check_with(s, views, engagements, env, tag, 10_000);
}

fn check_with(
    s: &Scratch,
    views: &Path,
    engagements: &Path,
    env: &[(&str, &str)],
    tag: &str,
    min_samples: usize,
) {
    let expected = oracle(views, engagements);
    run_job(s, views, engagements, env, tag);
    let as_vec = |k: &str| expected[k].as_array().cloned().unwrap_or_default();
    let want = as_vec("samples");
    let labelled = want
        .iter()
        .filter(|r| r["like"] == 1 || r["share"] == 1 || r["comment"] == 1)
        .count();
    assert!(
        want.len() > min_samples && labelled > min_samples / 2 && labelled < want.len(),
        "the input exercises the join"
    );
    assert!(!as_vec("late").is_empty(), "the input has late records");
    assert_training_samples(s, tag, &expected);
}

#[test]
fn samples_match_the_oracle_at_parallelism_1_and_2() {
    let s = Scratch::new();
    let (views, engagements) = s.reference_training("in", BASE, BASE_SEED, &[]);
    check_against_oracle(&s, &views, &engagements, &[("PARALLELISM", "1")], "p1");
    check_against_oracle(&s, &views, &engagements, &[("PARALLELISM", "2")], "p2");
}

#[test]
fn the_bundled_example_matches_the_oracle() {
    let s = Scratch::new();
    let data = repo().join("examples/training-samples/data");
    check_with(
        &s,
        &data.join("views.jsonl"),
        &data.join("engagements.jsonl"),
        &[],
        "example",
        1_000,
    );
}

#[test]
fn samples_are_the_same_when_one_input_is_read_much_faster() {
    let s = Scratch::new();
    // Engagements five times the size of views: the views source ends long
    // before the engagements one, whose records then arrive after every
    // view is buffered.
    let (views, engagements) = s.reference_training(
        "big-engagements",
        BASE,
        BASE_SEED,
        &["--pad-engagements", "150000"],
    );
    check_against_oracle(&s, &views, &engagements, &[("PARALLELISM", "2")], "big-e");
    // And the other way round: most engagements are read before their views.
    let (views, engagements) = s.reference_training("big-views", BASE, BASE_SEED, &["--pad-views", "150000"]);
    check_against_oracle(&s, &views, &engagements, &[("PARALLELISM", "2")], "big-v");
}

#[test]
fn state_larger_than_the_cache_gives_identical_samples() {
    let s = Scratch::new();
    let (views, engagements) = s.reference_training("in", BASE, BASE_SEED, &[]);
    check_against_oracle(
        &s,
        &views,
        &engagements,
        &[("PARALLELISM", "2"), ("STATE_CACHE_ENTRIES", "4")],
        "tiny-cache",
    );
}

fn view(id: &str, user: &str, item: &str, t: i64) -> String {
    json!({"view_id": id, "user_id": user, "item_id": item, "event_time_ms": t}).to_string()
}

fn engagement(user: &str, item: &str, kind: &str, t: i64) -> String {
    json!({"user_id": user, "item_id": item, "kind": kind, "event_time_ms": t}).to_string()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The last sample per view id.
fn final_samples(rows: &[Value]) -> Vec<(String, i64, i64, i64)> {
    let mut last = std::collections::BTreeMap::new();
    for r in rows {
        last.insert(
            r["view_id"].as_str().unwrap().to_string(),
            (
                r["like"].as_i64().unwrap(),
                r["share"].as_i64().unwrap(),
                r["comment"].as_i64().unwrap(),
            ),
        );
    }
    last.into_iter().map(|(k, (l, s, c))| (k, l, s, c)).collect()
}

#[test]
fn an_engagement_within_the_allowed_lateness_updates_an_emitted_sample() {
    let s = Scratch::new();
    let minute = 60_000;
    let views = vec![view("a", "u", "i", 0), view("b", "u", "j", 0)];
    // A long prefix of engagements of other keys lets the tiny views
    // source end first, so that from then on the engagements alone move the
    // watermark. The result does not depend on that order, only which code
    // path produces it.
    let mut engagements: Vec<String> = (0..20_000)
        .map(|i| engagement(&format!("p{i}"), "p", "like", i - 60_000))
        .collect();
    engagements.extend([
        // Watermark 10 min 55 s: a and b fire.
        engagement("w", "w", "like", 11 * minute),
        // After a's sample went out, but only 55 s behind the watermark: not
        // late, so a's sample is emitted again with the like.
        engagement("u", "i", "like", 10 * minute),
        // Watermark 12 min 5 s.
        engagement("w", "w", "like", 12 * minute + 10_000),
        // 125 s behind the watermark: late, b keeps its sample.
        engagement("u", "j", "share", 10 * minute),
        // Not late, but outside a's interval: counts for nothing.
        engagement("u", "i", "comment", 11 * minute + 30_000),
    ]);
    write_lines(&s.path("views.jsonl"), &views);
    write_lines(&s.path("engagements.jsonl"), &engagements);
    // One record per batch: the watermark moves record by record.
    let job = std::fs::read_to_string(repo().join("examples/training-samples/job.yaml")).unwrap();
    let job = s.job(
        "job.yaml",
        &job.replacen(
            "name: training-samples",
            "name: training-samples\nbatch_size: 1",
            1,
        ),
    );
    let out = s.path("out");
    s.run_ok(
        &job,
        &[
            ("VIEWS", s.path("views.jsonl").to_str().unwrap()),
            ("ENGAGEMENTS", s.path("engagements.jsonl").to_str().unwrap()),
            ("OUTPUT_DIR", out.to_str().unwrap()),
            ("PARALLELISM", "1"),
        ],
    );
    let samples = s.output("out", "samples");
    assert_eq!(
        final_samples(&samples),
        vec![("a".to_string(), 1, 0, 0), ("b".to_string(), 0, 0, 0),],
        "{samples:?}"
    );
    let late = s.output("out", "late");
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["kind"], "share");
}
