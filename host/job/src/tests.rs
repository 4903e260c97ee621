//! Scenarios for job files: a good one, and one per kind of mistake, each
//! checked for the message a user would see.

use super::*;
use wafer_core::window::WindowKind;

const GOOD: &str = r#"
name: demo
parallelism: ${PAR:-2}
limits:
  call_timeout: 250ms
  memory: 64MiB
components:
  json: ${COMPONENTS:-../components}/interaction-json.wasm
  bots: bots.wasm
formats:
  json:
    framing: lines
    deserializer: json
sources:
  events:
    file:
      path: ${INPUT:-data/events.jsonl}
    format: json
    filters:
      - event_time: { from: "2024-01-01T00:00:00Z" }
      - include: { field: event_type, values: [click, 7] }
      - sample_by: { field: user_id, fraction: 0.5 }
      - component: { name: bots, config: { prefixes: [bot-] } }
sink:
  file:
    dir: ${OUTPUT_DIR:-out}
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Job, JobError> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Job::parse(Path::new("/jobs/demo/job.yaml"), text, |n| {
        env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    })
}

#[test]
fn good_job_resolves_paths_defaults_and_filters() {
    let job = parse(GOOD, &[("INPUT", "/data/in.jsonl")]).unwrap();
    assert_eq!(job.parallelism, 2);
    assert_eq!(job.limits.call_timeout, Duration::from_millis(250));
    assert_eq!(job.limits.max_memory, 64 << 20);
    assert_eq!(
        job.components["json"],
        Path::new("/jobs/demo/../components/interaction-json.wasm")
    );
    let src = &job.sources[0];
    assert_eq!(
        src.kind,
        SourceKind::File {
            path: "/data/in.jsonl".into(),
            max_record: 16 << 20
        }
    );
    assert_eq!(src.framing, Framing::Lines);
    assert_eq!(src.output.as_deref(), Some("events"));
    assert_eq!(src.filters.len(), 4);
    assert_eq!(
        src.filters[1],
        FilterStep::Builtin(FilterSpec::Include {
            field: "event_type".into(),
            values: vec!["click".into(), "7".into()]
        })
    );
    assert_eq!(
        src.filters[3],
        FilterStep::Component(ComponentUse {
            component: "bots".into(),
            config: r#"{"prefixes":["bot-"]}"#.into()
        })
    );
    assert_eq!(
        job.sink,
        Sink {
            files: Some(PathBuf::from("/jobs/demo/out")),
            kafka: None
        }
    );
    assert_eq!(
        job.outputs().into_iter().collect::<Vec<_>>(),
        vec!["dlq", "events"]
    );
}

#[test]
fn a_source_rate_limit_is_read_and_zero_is_refused() {
    assert_eq!(parse(GOOD, &[]).unwrap().sources[0].max_records_per_second, None);
    let limited = GOOD.replace(
        "    format: json\n",
        "    format: json\n    max_records_per_second: ${RATE:-}\n",
    );
    assert_eq!(
        parse(&limited, &[]).unwrap().sources[0].max_records_per_second,
        None
    );
    let job = parse(&limited, &[("RATE", "25000")]).unwrap();
    assert_eq!(job.sources[0].max_records_per_second, Some(25_000));
    let err = parse(&limited, &[("RATE", "0")]).unwrap_err().to_string();
    assert!(
        err.contains("sources.events.max_records_per_second: must be at least 1"),
        "{err}"
    );
    let err = parse(&limited, &[("RATE", "fast")]).unwrap_err().to_string();
    assert!(err.contains("max_records_per_second"), "{err}");
}

#[test]
fn a_typo_is_rejected_with_its_line() {
    let text = GOOD.replace("    format: json\n", "    fromat: json\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("unknown field `fromat`"), "{err}");
    assert!(err.contains("line 18"), "{err}");
}

#[test]
fn unknown_references_name_what_exists() {
    let err = parse(&GOOD.replace("    format: json\n", "    format: xml\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.events.format: unknown format `xml` (formats: json)"),
        "{err}"
    );
    let err = parse(&GOOD.replace("name: bots,", "name: robots,"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.events.filters[3]: unknown component `robots` (components: bots, json)"),
        "{err}"
    );
}

#[test]
fn bad_values_are_explained() {
    let err = parse(&GOOD.replace("250ms", "soon"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`soon` is not a duration"), "{err}");
    let err = parse(GOOD, &[("PAR", "zero")]).unwrap_err().to_string();
    assert!(
        err.contains("parallelism must be `auto` or a positive number"),
        "{err}"
    );
    let err = parse(&GOOD.replace("fraction: 0.5", "fraction: 5"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fraction 5 is not between 0 and 1"), "{err}");
    let err = parse(&GOOD.replace("${OUTPUT_DIR:-out}", "${OUTPUT_DIR}"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 26") && err.contains("`OUTPUT_DIR` is not set"),
        "{err}"
    );
    let with_checkpoints = |extra: &str| format!("{GOOD}checkpoints:\n  dir: /ckpt\n{extra}");
    let job = parse(&with_checkpoints("  max_dirty_entries: 64\n"), &[]).unwrap();
    let c = job.checkpoints.unwrap();
    assert_eq!((c.max_dirty_entries, c.freeze_slice), (Some(64), 4096));
    let err = parse(&with_checkpoints("  freeze_slice: 0\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("checkpoints.freeze_slice"), "{err}");
}

#[test]
fn dlq_is_reserved() {
    let text = GOOD.replace("    format: json\n", "    format: json\n    output: dlq\n");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("`dlq` is reserved"), "{err}");
}

#[test]
fn a_typo_deep_in_a_mapping_names_its_own_line() {
    // serde reports the mapping's first line (17); the typo is on line 18.
    let text = GOOD.replace(
        "      path: ${INPUT:-data/events.jsonl}\n",
        "      path: ${INPUT:-data/events.jsonl}\n      max_recrod: 1MiB\n",
    );
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("unknown field `max_recrod`"), "{err}");
    assert!(err.ends_with("at line 18"), "{err}");
}

const KEYED: &str = r#"
name: keyed
components: { json: a.wasm, sessions: s.wasm }
formats: { json: { framing: lines, deserializer: json } }
sources:
  events: { file: { path: in.jsonl }, format: json }
key_by: [user_id]
allowed_lateness: 60s
late_output: late
windows:
  purchases_5m:
    tumbling: 5m
    where: [ { include: { field: event_type, values: [purchase] } } ]
    aggregates:
      purchase_total: { sum: amount }
      purchase_count: count
processors:
  sessions: { component: sessions, config: { gap_ms: 900000 } }
sink: { file: { dir: out } }
"#;

#[test]
fn keyed_jobs_resolve_windows_processors_and_outputs() {
    let job = parse(KEYED, &[]).unwrap();
    let k = job.keyed.as_ref().unwrap();
    assert_eq!(k.allowed_lateness_ms, 60_000);
    assert_eq!(k.windows[0].kind, WindowKind::Tumbling { size_ms: 300_000 });
    assert_eq!(k.windows[0].aggregates.len(), 2);
    assert_eq!(k.processors[0].inputs, vec![0]);
    assert_eq!(
        job.sources[0].output, None,
        "records go to the keyed stage, not straight out"
    );
    assert_eq!(
        job.sources[0].key_by.as_deref(),
        Some(&["user_id".to_string()][..])
    );
    let outputs: Vec<String> = job.outputs().into_iter().collect();
    assert_eq!(outputs, vec!["dlq", "late", "purchases_5m"]);
}

#[test]
fn keyed_mistakes_are_named() {
    let err = parse(&KEYED.replace("key_by: [user_id]\n", ""), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.events: its records reach windows or processors, so it needs `key_by`"),
        "{err}"
    );
    let err = parse(
        &KEYED.replace("tumbling: 5m", "tumbling: 5m\n    session: { gap: 1m }"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("exactly one of `tumbling`, `sliding` or `session`"),
        "{err}"
    );
    let err = parse(&KEYED.replace("{ sum: amount }", "{ median: amount }"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `median`"), "{err}");
    let err = parse(
        &KEYED.replace("component: sessions,", "component: sessionz,"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown component `sessionz`"), "{err}");
}

#[test]
fn kafka_source_and_sink() {
    let text = r#"
name: k
components: { d: d.wasm }
formats: { json: { framing: lines, deserializer: d } }
sources:
  events:
    kafka:
      brokers: "127.0.0.1:9092"
      topics: "b, a"
      start: earliest
      bounded: "${BOUNDED:-true}"
      properties: { fetch.min.bytes: 1 }
    format: json
key_by: [user_id]
sink:
  file: { dir: out }
  kafka: { brokers: "127.0.0.1:9092", outputs: [events], compression: zstd, delivery: exactly-once }
"#;
    let job = Job::parse(Path::new("/j/job.yaml"), text, |_| None).unwrap();
    let SourceKind::Kafka(k) = &job.sources[0].kind else {
        panic!("not kafka: {:?}", job.sources[0].kind)
    };
    assert_eq!(k.topics, vec!["a", "b"]);
    assert_eq!(k.group, "wafer-k");
    assert_eq!(k.id, "kafka:a,b@wafer-k");
    assert_eq!(k.start, KafkaStart::Earliest);
    assert!(k.bounded);
    assert_eq!(
        k.properties,
        vec![("fetch.min.bytes".to_string(), "1".to_string())]
    );
    let sink = job.sink.kafka.as_ref().unwrap();
    assert!(sink.exactly_once);
    assert_eq!(sink.key_by, vec!["user_id"]);
    assert_eq!(sink.topic("events"), "events");
    assert!(job.sink.to_kafka("events"));
    assert!(!job.sink.to_kafka("dlq"));

    for (from, bad, needle) in [
        ("start: earliest", "start: soon", "sources.events.kafka.start"),
        (
            "bounded: \"${BOUNDED:-true}\"",
            "bounded: maybe",
            "sources.events.kafka.bounded",
        ),
        (
            "properties: { fetch.min.bytes: 1 }",
            "properties: { enable.auto.commit: true }",
            "enable.auto.commit",
        ),
        (
            "properties: { fetch.min.bytes: 1 }",
            "properties: { wafer.fetch: rdkafka }",
            "sources.events.kafka.properties.wafer.fetch",
        ),
    ] {
        let t = text.replace(from, bad);
        let err = Job::parse(Path::new("/j/job.yaml"), &t, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
    // With a file too, a source reads Kafka only when brokers are given.
    let both = text.replace(
        "    kafka:\n      brokers: \"127.0.0.1:9092\"",
        "    file: { path: in.jsonl }\n    kafka:\n      brokers: \"${KAFKA_BROKERS:-}\"",
    );
    let job = Job::parse(Path::new("/j/job.yaml"), &both, |_| None).unwrap();
    assert!(matches!(job.sources[0].kind, SourceKind::File { .. }));
    let job = Job::parse(Path::new("/j/job.yaml"), &both, |v| {
        (v == "KAFKA_BROKERS").then(|| "h:1".into())
    })
    .unwrap();
    assert!(matches!(job.sources[0].kind, SourceKind::Kafka(_)));

    let t = text.replace("compression: zstd", "compression: brotli");
    let err = Job::parse(Path::new("/j/job.yaml"), &t, |_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sink.kafka.compression"), "{err}");
}
