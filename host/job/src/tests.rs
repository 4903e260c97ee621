//! Scenarios for job files: a good one, and one per kind of mistake, each
//! checked for the message a user would see.

use super::*;

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
    assert_eq!(src.output, "events");
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
        Sink::Files {
            dir: PathBuf::from("/jobs/demo/out")
        }
    );
    assert_eq!(
        job.outputs().into_iter().collect::<Vec<_>>(),
        vec!["dlq", "events"]
    );
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
