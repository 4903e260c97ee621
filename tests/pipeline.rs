//! End-to-end tests of the foundation pipeline: files → Wasm deserializer →
//! filters → file sink, run through the real `wafer` binary.
//!
//! Expected outputs come from an oracle written here with `serde_json::Value`
//! (it shares no code with the host or the guests): it decides which input
//! lines are valid interactions and what the host must write for them.

mod common;

use std::collections::BTreeMap;

use common::{Scratch, assert_same_rows, dead_letter_payload, input_lines, metric, read_jsonl};
use serde_json::{Map, Value};

/// The job used by most tests: one source, a format chosen by `FORMAT`,
/// optional filters.
fn job(filters: &str) -> String {
    format!(
        r#"
name: foundation
parallelism: ${{PARALLELISM:-2}}
batch_size: ${{BATCH:-256}}
limits:
  call_timeout: 2s
components:
  json: "@COMPONENTS@/interaction-json.wasm"
  protobuf: "@COMPONENTS@/interaction-protobuf.wasm"
  bots: "@COMPONENTS@/filter-example.wasm"
  bots-py: "@COMPONENTS@/filter-example-py.wasm"
formats:
  json: {{ framing: lines, deserializer: json }}
  protobuf: {{ framing: length-delimited, deserializer: protobuf }}
sources:
  events:
    file: {{ path: "${{INPUT}}" }}
    format: ${{FORMAT:-json}}
    filters: {filters}
sink:
  file: {{ dir: "${{OUT}}" }}
"#
    )
}

/// The oracle: what the host must output for one JSON input line, or `None`
/// if the line must be dead-lettered.
fn oracle(line: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    let user = obj.get("user_id")?.as_str()?;
    if user.is_empty() {
        return None;
    }
    let kind = obj.get("event_type")?.as_str()?;
    let t = obj.get("event_time_ms")?;
    if !(t.is_i64()) {
        return None;
    }
    let mut out = Map::new();
    for key in ["event_id", "item_id"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                out.insert(key.into(), Value::String(s.clone()));
            }
            Some(_) => return None,
        }
    }
    match obj.get("amount") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            out.insert("amount".into(), Value::from(n.as_f64()?));
        }
        Some(_) => return None,
    }
    out.insert("user_id".into(), Value::String(user.into()));
    out.insert("event_type".into(), Value::String(kind.into()));
    out.insert("event_time_ms".into(), t.clone());
    Some(Value::Object(out))
}

fn run_format(s: &Scratch, input: &std::path::Path, format: &str, par: &str, filters: &str, out: &str) {
    let job = s.job(&format!("job-{out}.yaml"), &job(filters));
    s.run_ok(
        &job,
        &[
            ("INPUT", input.to_str().unwrap()),
            ("FORMAT", format),
            ("PARALLELISM", par),
            ("OUT", s.path(out).to_str().unwrap()),
        ],
    );
}

#[test]
fn output_matches_the_oracle_and_nothing_is_lost() {
    let s = Scratch::new();
    let base = s.generate_interactions(
        "events",
        &["--events", "20000", "--corrupt", "0.03", "--seed", "11"],
    );
    let input = base.with_extension("jsonl");
    run_format(&s, &input, "json", "2", "[]", "out");

    let lines = input_lines(&input);
    let expected: Vec<Value> = lines.iter().filter_map(|l| oracle(l)).collect();
    let out = s.output("out", "events");
    let dlq = s.output("out", "dlq");
    assert_same_rows(&out, &expected);
    assert_eq!(
        lines.len(),
        out.len() + dlq.len(),
        "count in = count out + dead letters"
    );
    assert!(
        dlq.len() > 300,
        "the input should have corrupt records: {}",
        dlq.len()
    );
    // Every dead letter carries its source, position, reason, error and the
    // exact payload, which is one of the input lines the oracle rejects.
    let rejected: Vec<String> = lines
        .iter()
        .filter(|l| oracle(l).is_none())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let mut seen = Vec::new();
    let raw = std::fs::read(&input).unwrap();
    for d in &dlq {
        assert_eq!(d["source"], "events");
        assert!(
            ["decode", "invalid"].contains(&d["reason"].as_str().unwrap()),
            "{d}"
        );
        assert!(!d["error"].as_str().unwrap().is_empty());
        let offset = d["offset"].as_u64().unwrap() as usize;
        let payload = dead_letter_payload(d);
        assert_eq!(
            &raw[offset..offset + payload.len()],
            &payload[..],
            "position points at the payload"
        );
        seen.push(String::from_utf8_lossy(&payload).into_owned());
    }
    seen.sort();
    let mut rejected = rejected;
    rejected.sort();
    assert_eq!(seen, rejected);
}

#[test]
fn json_and_protobuf_inputs_give_the_same_records() {
    let s = Scratch::new();
    let base = s.generate_interactions(
        "events",
        &["--events", "10000", "--corrupt", "0.02", "--seed", "5"],
    );
    run_format(&s, &base.with_extension("jsonl"), "json", "2", "[]", "json");
    run_format(&s, &base.with_extension("pb"), "protobuf", "2", "[]", "pb");
    let json = s.output("json", "events");
    let pb = s.output("pb", "events");
    assert!(json.len() > 9000);
    assert_same_rows(&json, &pb);
    assert_eq!(s.output("json", "dlq").len(), s.output("pb", "dlq").len());
}

#[test]
fn parallelism_does_not_change_the_output() {
    let s = Scratch::new();
    let base = s.generate_interactions("events", &["--events", "8000", "--seed", "3"]);
    let input = base.with_extension("jsonl");
    let filters = "[{ exclude: { field: event_type, values: [view] } }, { component: { name: bots } }]";
    run_format(&s, &input, "json", "1", filters, "p1");
    run_format(&s, &input, "json", "4", filters, "p4");
    let one = s.output("p1", "events");
    assert!(!one.is_empty());
    assert_same_rows(&one, &s.output("p4", "events"));
    assert_same_rows(&s.output("p1", "dlq"), &s.output("p4", "dlq"));
}

#[test]
fn builtin_and_component_filters_keep_what_they_should() {
    let s = Scratch::new();
    let base = s.generate_interactions(
        "events",
        &[
            "--events",
            "20000",
            "--corrupt",
            "0",
            "--late",
            "0",
            "--very-late",
            "0",
            "--seed",
            "9",
        ],
    );
    let input = base.with_extension("jsonl");
    let lines = input_lines(&input);
    let all: Vec<Value> = lines.iter().filter_map(|l| oracle(l)).collect();
    let times: Vec<i64> = all.iter().map(|v| v["event_time_ms"].as_i64().unwrap()).collect();
    let mid = times[times.len() / 2];

    // Event-time cutoff, include and exclude, and the bot filter component,
    // each checked against the oracle.
    let filters = format!(
        "[{{ event_time: {{ from: {mid} }} }}, {{ include: {{ field: event_type, values: [click, purchase, view] }} }}, {{ exclude: {{ field: event_type, values: [view] }} }}, {{ component: {{ name: bots, config: {{ prefixes: [bot-, ユーザー] }} }} }}]"
    );
    run_format(&s, &input, "json", "2", &filters, "f");
    let expected: Vec<Value> = all
        .iter()
        .filter(|v| v["event_time_ms"].as_i64().unwrap() >= mid)
        .filter(|v| ["click", "purchase"].contains(&v["event_type"].as_str().unwrap()))
        .filter(|v| {
            let u = v["user_id"].as_str().unwrap();
            !u.starts_with("bot-") && !u.starts_with("ユーザー")
        })
        .cloned()
        .collect();
    assert!(expected.len() > 1000);
    assert_same_rows(&s.output("f", "events"), &expected);

    // Sampling: deterministic, about the fraction asked for, independent of
    // parallelism; entity sampling keeps all or none of a user's events.
    let sample = "[{ sample: { fraction: 0.3, seed: 1 } }]";
    run_format(&s, &input, "json", "1", sample, "s1");
    run_format(&s, &input, "json", "3", sample, "s3");
    let s1 = s.output("s1", "events");
    assert_same_rows(&s1, &s.output("s3", "events"));
    let frac = s1.len() as f64 / all.len() as f64;
    assert!((0.27..0.33).contains(&frac), "sampled {frac}");

    run_format(
        &s,
        &input,
        "json",
        "2",
        "[{ sample_by: { field: user_id, fraction: 0.5, seed: 2 } }]",
        "e",
    );
    let kept = s.output("e", "events");
    let mut per_user: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for v in &all {
        per_user
            .entry(v["user_id"].as_str().unwrap().into())
            .or_default()
            .0 += 1;
    }
    for v in &kept {
        per_user
            .entry(v["user_id"].as_str().unwrap().into())
            .or_default()
            .1 += 1;
    }
    let kept_users = per_user.values().filter(|(_, k)| *k > 0).count();
    for (user, (total, k)) in &per_user {
        assert!(*k == 0 || k == total, "user {user}: kept {k} of {total}");
    }
    let share = kept_users as f64 / per_user.len() as f64;
    assert!((0.35..0.65).contains(&share), "kept {share} of users");
}

#[test]
fn the_python_filter_behaves_like_the_rust_one() {
    if let Err(why) = wafer_test_guests::PY_FILTER_EXAMPLE {
        panic!("the Python guest could not be built: {why}");
    }
    let s = Scratch::new();
    let base = s.generate_interactions("events", &["--events", "3000", "--seed", "21"]);
    let input = base.with_extension("jsonl");
    let config = "config: { prefixes: [bot-, usér] }";
    run_format(
        &s,
        &input,
        "json",
        "2",
        &format!("[{{ component: {{ name: bots, {config} }} }}]"),
        "rust",
    );
    run_format(
        &s,
        &input,
        "json",
        "2",
        &format!("[{{ component: {{ name: bots-py, {config} }} }}]"),
        "py",
    );
    let rust = s.output("rust", "events");
    let py = s.output("py", "events");
    assert!(
        rust.iter()
            .all(|v| !v["user_id"].as_str().unwrap().starts_with("bot-"))
    );
    assert!(rust.len() > 2000);
    assert_same_rows(&rust, &py);
}

/// Handcrafted corrupt inputs: each line says what it is; the test checks
/// the reason the host gives and that every good line gets through.
#[test]
fn every_kind_of_corrupt_input_is_dead_lettered() {
    let s = Scratch::new();
    let good = |i: usize| {
        format!(
            r#"{{"event_id":"g{i}","user_id":"u{i}","event_type":"click","event_time_ms":{}}}"#,
            1_700_000_000_000u64 + i as u64
        )
    };
    let mut text = Vec::new();
    let mut expect: Vec<&str> = Vec::new();
    let mut push = |line: Vec<u8>, reason: &'static str| {
        text.extend_from_slice(&line);
        text.push(b'\n');
        expect.push(reason);
    };
    push(good(0).into_bytes(), "ok");
    push(br#"{"event_id":"t","user_id":"u","event_ty"#.to_vec(), "decode"); // truncated
    push(vec![0xff, 0xfe, 0x00, 0x13, 0x80, b'{'], "decode"); // binary junk
    push(
        br#"{"user_id":"u","event_type":"click","event_time_ms":"soon"}"#.to_vec(),
        "invalid",
    ); // wrong type
    push(br#"{"user_id":"u","event_type":"click"}"#.to_vec(), "invalid"); // missing field
    push(
        br#"{"user_id":"","event_type":"click","event_time_ms":1}"#.to_vec(),
        "invalid",
    ); // empty key
    push(
        br#"{"user_id":"u","event_type":"click","event_time_ms":1.5}"#.to_vec(),
        "invalid",
    ); // float time
    push(
        br#"{"user_id":"u","event_type":"click","event_time_ms":1,"amount":"12"}"#.to_vec(),
        "invalid",
    );
    push(br#""just a string""#.to_vec(), "invalid");
    push(
        format!(
            r#"{{"user_id":"u","event_type":"{}","event_time_ms":1}}"#,
            "x".repeat(5000)
        )
        .into_bytes(),
        "framing",
    ); // too large
    for i in 1..50 {
        push(good(i).into_bytes(), "ok");
    }
    // Records the faulty guest misbehaves on.
    push(
        br#"{"user_id":"@@TRAP@@","event_type":"click","event_time_ms":1}"#.to_vec(),
        "trap",
    );
    push(
        br#"{"user_id":"@@LOOP@@","event_type":"click","event_time_ms":1}"#.to_vec(),
        "timeout",
    );
    push(
        br#"{"user_id":"@@OOM@@","event_type":"click","event_time_ms":1}"#.to_vec(),
        "memory",
    );
    for i in 50..100 {
        push(good(i).into_bytes(), "ok");
    }
    let input = s.path("in.jsonl");
    std::fs::write(&input, &text).unwrap();
    let job = s.job(
        "job.yaml",
        r#"
name: corrupt
parallelism: 2
batch_size: 16
limits: { call_timeout: 300ms, memory: 32MiB }
components: { faulty: "@COMPONENTS@/faulty.wasm" }
formats: { json: { framing: lines, deserializer: faulty } }
sources:
  events:
    file: { path: in.jsonl, max_record: 4KiB }
    format: json
sink: { file: { dir: out } }
"#,
    );
    let run = s.run_ok(&job, &[]);
    let out = s.output("out", "events");
    let dlq = s.output("out", "dlq");
    assert_eq!(
        out.len(),
        expect.iter().filter(|r| **r == "ok").count(),
        "every good record gets through"
    );
    assert_eq!(
        expect.len(),
        out.len() + dlq.len(),
        "count in = count out + dead letters"
    );
    let mut got: Vec<&str> = dlq.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = expect.iter().copied().filter(|r| *r != "ok").collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&run.stderr));
    let trap = dlq.iter().find(|d| d["reason"] == "trap").unwrap();
    assert!(
        trap["error"].as_str().unwrap().contains("trap marker found"),
        "the panic message is kept: {trap}"
    );
}

#[test]
fn corrupt_length_delimited_input_is_dead_lettered_without_losing_bytes() {
    let s = Scratch::new();
    let base = s.generate_interactions(
        "events",
        &["--events", "200", "--corrupt", "0", "--format", "protobuf"],
    );
    let mut bytes = std::fs::read(base.with_extension("pb")).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&[0x40, 1, 2, 3]); // claims 64 bytes, the file ends after 3
    let input = s.path("in.pb");
    std::fs::write(&input, &bytes).unwrap();
    run_format(&s, &input, "protobuf", "2", "[]", "out");
    assert_eq!(s.output("out", "events").len(), 200);
    let dlq = s.output("out", "dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["reason"], "framing");
    assert_eq!(dlq[0]["offset"], good_len);
    assert!(
        dlq[0]["error"].as_str().unwrap().contains("needs 64 bytes"),
        "{}",
        dlq[0]
    );
}

#[test]
fn mistakes_are_rejected_before_any_record_is_read() {
    let s = Scratch::new();
    std::fs::write(s.path("in.jsonl"), "{}\n").unwrap();
    std::fs::write(s.path("junk.wasm"), b"\0asm but not really").unwrap();
    let base = job("[]").replace("${INPUT}", "in.jsonl").replace("${OUT}", "out");
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace("    format:", "    fromat:"),
            "unknown field `fromat`",
        ),
        (base.replace("    format:", "    fromat:"), "at line 18"),
        (
            base.replace("interaction-json.wasm", "missing.wasm"),
            "cannot read",
        ),
        (
            base.replace("@COMPONENTS@/interaction-json.wasm", "junk.wasm"),
            "is not a valid WebAssembly component",
        ),
        (
            base.replace("interaction-json.wasm", "filter-example.wasm"),
            "does not implement the `deserializer` world of wafer:udf@0.1.0: it does not export `wafer:udf/deserialize@0.1.0` (it exports: wafer:udf/filter-rows@0.1.0); it implements the `filter` world instead",
        ),
        (
            base.replace(
                "filters: []",
                "filters: [{ include: { field: colour, values: [red] } }]",
            ),
            "no field `colour`",
        ),
        (
            base.replace(
                "filters: []",
                "filters: [{ component: { name: bots, config: { prefix: x } } }]",
            ),
            "unknown field `prefix`",
        ),
        (base.replace("in.jsonl", "nothing-here.jsonl"), "input `"),
    ];
    for (i, (yaml, message)) in cases.iter().enumerate() {
        let job = s.job(&format!("bad-{i}.yaml"), yaml);
        let out = s.run(&job, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "case {i} should be rejected: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "case {i}: expected `{message}` in:\n{stderr}"
        );
        assert!(!s.path("out").exists(), "case {i}: no output may be written");
    }
}

#[test]
fn metrics_count_records_dead_letters_sizes_ages_and_component_time() {
    let s = Scratch::new();
    let base = s.generate_interactions(
        "events",
        &["--events", "5000", "--corrupt", "0.02", "--seed", "4"],
    );
    let input = base.with_extension("jsonl");
    run_format(
        &s,
        &input,
        "json",
        "2",
        "[{ exclude: { field: event_type, values: [view] } }, { component: { name: bots } }]",
        "out",
    );
    let m = s.metrics();
    let out = s.output("out", "events").len() as f64;
    let dlq = s.output("out", "dlq");
    let lines = input_lines(&input).len() as f64;
    assert_eq!(
        metric(&m, "wafer_records_in_total{stage=\"deserialize:events\"}"),
        Some(lines)
    );
    assert_eq!(
        metric(&m, "wafer_records_out_total{stage=\"deserialize:events\"}"),
        Some(out)
    );
    assert_eq!(
        metric(&m, "wafer_payload_bytes_count{source=\"events\"}"),
        Some(lines)
    );
    assert_eq!(
        metric(&m, "wafer_event_age_seconds_count{source=\"events\"}"),
        Some(lines - dlq.len() as f64)
    );
    let decode = dlq.iter().filter(|d| d["reason"] == "decode").count() as f64;
    let invalid = dlq.iter().filter(|d| d["reason"] == "invalid").count() as f64;
    assert_eq!(
        metric(&m, "wafer_dead_letters_total{reason=\"decode\"}"),
        Some(decode)
    );
    assert_eq!(
        metric(&m, "wafer_dead_letters_total{reason=\"invalid\"}"),
        Some(invalid)
    );
    assert!(
        metric(
            &m,
            "wafer_component_seconds_total{component=\"json\",stage=\"deserialize:events\"}"
        )
        .unwrap()
            > 0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "wafer_component_calls_total{component=\"bots\",stage=\"filter:events:bots\"}"
        )
        .unwrap()
            > 0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "wafer_records_filtered_total{stage=\"filter:events:0:exclude\"}"
        )
        .unwrap()
            > 0.0,
        "{m}"
    );
}

#[test]
fn the_example_job_runs_on_its_sample() {
    let s = Scratch::new();
    let out = s.path("out");
    let job = common::repo().join("examples/clean-events/job.yaml");
    s.run_ok(&job, &[("OUTPUT_DIR", out.to_str().unwrap())]);
    let events = read_jsonl(&out.join("events.jsonl"));
    let dlq = read_jsonl(&out.join("dlq.jsonl"));
    let input = input_lines(&common::repo().join("examples/clean-events/data/events.jsonl"));
    let valid: Vec<Value> = input.iter().filter_map(|l| oracle(l)).collect();
    assert_eq!(input.len() - valid.len(), dlq.len());
    let expected: Vec<Value> = valid
        .into_iter()
        .filter(|v| v["event_type"] != "view" && !v["user_id"].as_str().unwrap().starts_with("bot-"))
        .collect();
    assert_same_rows(&events, &expected);
}

/// A second start reads the compiled components from the compile cache
/// instead of compiling them; an entry that no longer loads (damaged) is
/// compiled again; `--no-compile-cache` always compiles. The output is the
/// same each time.
#[test]
fn compiled_components_are_reused_at_the_next_start() {
    let s = Scratch::new();
    let job = common::repo().join("examples/clean-events/job.yaml");
    let cache = s.path("compiled");
    let run = |out: &str, args: &[&str]| -> (Vec<String>, Vec<String>) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
            .arg("run")
            .arg(&job)
            .args(args)
            .env("WAFER_COMPONENTS", common::components())
            .env("OUTPUT_DIR", s.path(out))
            .output()
            .expect("run wafer");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "wafer failed:\n{stderr}");
        let compiled = stderr
            .lines()
            .filter(|l| l.contains("loaded component"))
            .map(|l| l.split("compiled=").nth(1).unwrap_or("?").to_string())
            .collect();
        // In any order: the deserializers run in parallel.
        let mut lines: Vec<String> = std::fs::read_to_string(s.path(out).join("events.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        (lines, compiled)
    };
    let with_cache = ["--compile-cache", cache.to_str().unwrap()];
    let files_in = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_none() && !e.file_name().to_string_lossy().starts_with('.') {
                    // (Not wasmtime's usage statistics, `<entry>.stats`.)
                    files.push(p);
                }
            }
        }
        files
    };

    let (first, compiled) = run("out1", &with_cache);
    assert!(first.len() > 100, "{} lines", first.len());
    assert_eq!(compiled.len(), 2, "the deserializer and the filter: {compiled:?}");
    assert!(compiled.iter().all(|c| c == "\"now\""), "{compiled:?}");
    let entries = files_in(&cache);
    assert_eq!(entries.len(), 2, "one entry per component: {entries:?}");

    let (second, compiled) = run("out2", &with_cache);
    assert!(compiled.iter().all(|c| c == "\"from cache\""), "{compiled:?}");
    assert!(second == first, "second run: other output");

    for e in &entries {
        std::fs::write(e, b"not machine code").unwrap();
    }
    let (third, compiled) = run("out3", &with_cache);
    assert!(
        compiled.iter().all(|c| c == "\"now\""),
        "damaged entries are compiled again: {compiled:?}"
    );
    assert!(third == first, "third run: other output");

    let (fourth, compiled) = run("out4", &["--no-compile-cache"]);
    assert!(compiled.iter().all(|c| c == "\"now\""), "{compiled:?}");
    assert!(fourth == first, "fourth run: other output");
}
