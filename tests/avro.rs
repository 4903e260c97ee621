//! End-to-end tests of the `interaction-avro` deserializer through the real
//! `wafer` binary: a length-delimited file of Avro records in the Confluent
//! wire format (magic byte, big-endian schema id, datum), written under
//! three writer schemas that differ from the reader schema the way
//! producers drift (fields reordered, added, dropped, made nullable,
//! narrowed to float), with corrupt records among them.
//!
//! The records are encoded by the small Avro encoder below, written for
//! this test from the specification (zigzag varints, length-prefixed
//! strings, union branch indexes, array and map blocks); it shares no code
//! with the guest's decoder. Expected rows are computed from the generator's
//! own events as `serde_json::Value`s.

mod common;

use std::collections::BTreeMap;

use common::{Scratch, assert_same_rows, dead_letter_payload};
use serde_json::{Map, Value};

/// Writer schema 1: the reader's fields, in the reader's order.
const SCHEMA_1: &str = r#"
    {"type": "record", "name": "Interaction", "namespace": "reference.v1", "fields": [
      {"name": "event_id", "type": ["null", "string"], "default": null},
      {"name": "user_id", "type": "string"},
      {"name": "event_type", "type": "string"},
      {"name": "item_id", "type": ["null", "string"], "default": null},
      {"name": "amount", "type": ["null", "double"], "default": null},
      {"name": "event_time_ms", "type": "long"}]}"#;

/// Writer schema 2: another namespace, fields reordered, `item_id` dropped
/// (the reader defaults it to null), an `experiment` record the reader does
/// not know (with an enum, an array, a map and a fixed inside, all skipped).
const SCHEMA_2: &str = r#"
    {"type": "record", "name": "Interaction", "namespace": "com.example.tracking", "fields": [
      {"name": "event_time_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
      {"name": "event_type", "type": "string"},
      {"name": "experiment", "type": {"type": "record", "name": "Experiment", "fields": [
        {"name": "name", "type": "string"},
        {"name": "arm", "type": {"type": "enum", "name": "Arm", "symbols": ["control", "treatment"]}},
        {"name": "weights", "type": {"type": "array", "items": "double"}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}}]}},
      {"name": "user_id", "type": "string"},
      {"name": "amount", "type": ["null", "double"], "default": null},
      {"name": "event_id", "type": ["null", "string"], "default": null}]}"#;

/// Writer schema 3, given inline in the job's YAML rather than as JSON
/// text: a non-union `event_id` (read into the reader's union), a nullable
/// `user_id` (null records are invalid), `amount` as float (promoted to
/// double), and an extra `session`.
const SCHEMA_3: &str = r#"
    {"type": "record", "name": "Interaction", "fields": [
      {"name": "event_id", "type": "string"},
      {"name": "user_id", "type": ["null", "string"]},
      {"name": "event_type", "type": "string"},
      {"name": "item_id", "type": ["null", "string"], "default": null},
      {"name": "amount", "type": ["null", "float"], "default": null},
      {"name": "event_time_ms", "type": "long"},
      {"name": "session", "type": ["null", "long"], "default": null}]}"#;

/// A schema on one line, for YAML.
fn compact(schema: &str) -> String {
    schema.lines().map(str::trim).collect()
}

/// The job: `writer_schemas` entries (YAML lines, already indented) and an
/// optional `reader_schema` line.
fn job(writer_schemas: &str, reader: &str) -> String {
    format!(
        r#"
name: avro
parallelism: ${{PARALLELISM:-2}}
batch_size: 64
components:
  avro: "@COMPONENTS@/interaction-avro.wasm"
formats:
  avro:
    framing: length-delimited
    deserializer: avro
    config:
      writer_schemas:
{writer_schemas}
{reader}
sources:
  events:
    file: {{ path: "${{INPUT}}" }}
    format: avro
sink:
  file: {{ dir: "${{OUT}}" }}
"#
    )
}

/// The three writer schemas as the good job declares them.
fn good_writer_schemas() -> String {
    format!(
        "        1: '{}'\n        2: '{}'\n        3: {}",
        compact(SCHEMA_1),
        compact(SCHEMA_2),
        compact(SCHEMA_3)
    )
}

// ---------------------------------------------------------------------------
// A minimal Avro binary encoder (specification, "Binary Encoding").

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    /// int and long: zigzag, then base-128 varint, low groups first.
    fn long(&mut self, v: i64) -> &mut Self {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        while n >= 0x80 {
            self.0.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.long(b.len() as i64);
        self.0.extend_from_slice(b);
        self
    }

    fn string(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn double(&mut self, x: f64) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    fn float(&mut self, x: f32) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A union's branch index; the branch's value follows.
    fn branch(&mut self, i: i64) -> &mut Self {
        self.long(i)
    }

    /// `["null", "string"]`.
    fn opt_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.branch(0),
            Some(s) => self.branch(1).string(s),
        }
    }
}

/// Confluent wire format: magic byte 0, schema id big-endian, datum.
fn confluent(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

// ---------------------------------------------------------------------------
// Deterministic events.

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const USER_PREFIXES: [&str; 5] = ["u-", "ユーザー", "usér-", "👤", "Ωμέγα-"];
const EVENT_TYPES: [&str; 5] = ["view", "click", "like", "share", "purchase"];

struct Event {
    schema: u32,
    event_id: Option<String>,
    user_id: String,
    event_type: &'static str,
    item_id: Option<String>,
    amount: Option<f64>,
    event_time_ms: i64,
}

fn generate(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let schema = match rng.below(10) {
                0..4 => 1,
                4..8 => 2,
                _ => 3,
            };
            let user = rng.below(60);
            let event_type = EVENT_TYPES[rng.below(5) as usize];
            Event {
                schema,
                // Schema 3's event_id is a plain string: always there.
                event_id: (schema == 3 || rng.chance(90)).then(|| format!("e{i}")),
                user_id: format!("{}{user}", USER_PREFIXES[(user % 5) as usize]),
                event_type,
                // Schema 2 has no item_id.
                item_id: (schema != 2 && rng.chance(80)).then(|| format!("item-{}", rng.below(500))),
                amount: (event_type == "purchase").then(|| rng.below(100_000) as f64 / 100.0),
                event_time_ms: 1_700_000_000_000 + i as i64 * 250 + rng.below(5_000) as i64,
            }
        })
        .collect()
}

/// The event's datum under its writer schema.
fn encode(e: &Event, rng: &mut Rng) -> Vec<u8> {
    let mut enc = Enc::default();
    match e.schema {
        1 => {
            enc.opt_string(e.event_id.as_deref())
                .string(&e.user_id)
                .string(e.event_type)
                .opt_string(e.item_id.as_deref());
            match e.amount {
                None => enc.branch(0),
                Some(a) => enc.branch(1).double(a),
            };
            enc.long(e.event_time_ms);
        }
        2 => {
            enc.long(e.event_time_ms).string(e.event_type);
            experiment(&mut enc, rng);
            enc.string(&e.user_id);
            match e.amount {
                None => enc.branch(0),
                Some(a) => enc.branch(1).double(a),
            };
            enc.opt_string(e.event_id.as_deref());
        }
        _ => {
            enc.string(e.event_id.as_deref().unwrap_or_default())
                .branch(1)
                .string(&e.user_id)
                .string(e.event_type)
                .opt_string(e.item_id.as_deref());
            match e.amount {
                None => enc.branch(0),
                Some(a) => enc.branch(1).float(a as f32),
            };
            enc.long(e.event_time_ms);
            if rng.chance(50) {
                enc.branch(1).long(rng.below(1000) as i64);
            } else {
                enc.branch(0);
            }
        }
    }
    enc.0
}

/// Schema 2's `experiment`, the field the reader skips. Arrays and maps
/// use every block form: empty, one counted block, several blocks, and a
/// negative count followed by the block's byte size.
fn experiment(enc: &mut Enc, rng: &mut Rng) {
    enc.string(&format!("exp-{}", rng.below(7)));
    enc.long(rng.below(2) as i64); // arm
    let weights: Vec<f64> = (0..rng.below(4)).map(|k| k as f64 * 0.5).collect();
    match (weights.len(), rng.below(3)) {
        (0, _) => {}
        (n, 0) => {
            enc.long(n as i64);
            weights.iter().for_each(|w| {
                enc.double(*w);
            });
        }
        (n, 1) => {
            enc.long(-(n as i64)).long(n as i64 * 8);
            weights.iter().for_each(|w| {
                enc.double(*w);
            });
        }
        (_, _) => {
            for w in &weights {
                enc.long(1).double(*w);
            }
        }
    }
    enc.long(0);
    let tags = rng.below(3);
    if tags > 0 {
        enc.long(tags as i64);
        for t in 0..tags {
            enc.string(&format!("k{t}")).string("värde");
        }
    }
    enc.long(0);
    enc.0.extend_from_slice(&(rng.next() as u32).to_le_bytes()); // hash: fixed(4)
}

/// The row the host must write for a good event.
fn expected(e: &Event) -> Value {
    let mut m = Map::new();
    if let Some(id) = &e.event_id {
        m.insert("event_id".into(), id.as_str().into());
    }
    m.insert("user_id".into(), e.user_id.as_str().into());
    m.insert("event_type".into(), e.event_type.into());
    if let Some(item) = &e.item_id {
        m.insert("item_id".into(), item.as_str().into());
    }
    if let Some(a) = e.amount {
        // Schema 3 wrote a float; the reader's double is that float, widened.
        let a = if e.schema == 3 { f64::from(a as f32) } else { a };
        m.insert("amount".into(), a.into());
    }
    m.insert("event_time_ms".into(), e.event_time_ms.into());
    // Through JSON text and back, as the output rows come: serde_json's
    // default float parser may land one ulp off the shortest representation
    // the host writes (it does for many widened floats), the same way on
    // both sides.
    serde_json::from_str(&Value::Object(m).to_string()).expect("JSON round trip")
}

/// A record that must be dead-lettered: its payload, the reason and a piece
/// of the error message.
struct Corrupt {
    payload: Vec<u8>,
    reason: &'static str,
    error: &'static str,
}

fn corrupt_records() -> Vec<Corrupt> {
    let good = |user: &str| {
        let mut enc = Enc::default();
        enc.opt_string(Some("bad"))
            .string(user)
            .string("click")
            .opt_string(None)
            .branch(0)
            .long(1_700_000_000_000);
        enc.0
    };
    let valid = good("someone");
    let mut trailing = valid.clone();
    trailing.push(0x02);
    let mut bad_branch = Enc::default();
    bad_branch.branch(7).string("x");
    let mut not_utf8 = Enc::default();
    not_utf8
        .opt_string(None)
        .bytes(&[0xff, 0xfe, 0x41])
        .string("click");
    not_utf8.opt_string(None).branch(0).long(1);
    let mut null_user = Enc::default();
    null_user
        .string("e-null")
        .branch(0) // user_id: null
        .string("click")
        .opt_string(None)
        .branch(0)
        .long(1_700_000_000_000)
        .branch(0);
    let mut wrong_magic = confluent(1, &valid);
    wrong_magic[0] = 0x01;
    vec![
        Corrupt {
            payload: vec![0, 0, 0],
            reason: "decode",
            error: "too few for the Confluent wire format",
        },
        Corrupt {
            payload: wrong_magic,
            reason: "decode",
            error: "magic byte 0x01",
        },
        Corrupt {
            payload: confluent(99, &valid),
            reason: "decode",
            error: "unknown schema id 99",
        },
        Corrupt {
            payload: confluent(1, &valid[..valid.len() / 2]),
            reason: "decode",
            error: "truncated",
        },
        Corrupt {
            payload: confluent(1, &trailing),
            reason: "decode",
            error: "1 byte left after the datum",
        },
        Corrupt {
            payload: confluent(1, &bad_branch.0),
            reason: "decode",
            error: "union branch index 7 is out of range",
        },
        Corrupt {
            payload: confluent(1, &not_utf8.0),
            reason: "decode",
            error: "not UTF-8",
        },
        Corrupt {
            payload: confluent(3, &null_user.0),
            reason: "invalid",
            error: "field `user_id`: the value is null",
        },
        Corrupt {
            payload: confluent(1, &good("")),
            reason: "invalid",
            error: "user_id must be a non-empty string",
        },
    ]
}

/// Appends a length-delimited record (varint length, then the bytes) and
/// returns its offset: where its length prefix starts.
fn append_delimited(file: &mut Vec<u8>, payload: &[u8]) -> u64 {
    let offset = file.len() as u64;
    let mut n = payload.len() as u64;
    while n >= 0x80 {
        file.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    file.push(n as u8);
    file.extend_from_slice(payload);
    offset
}

#[test]
fn avro_records_under_drifting_writer_schemas_match_the_oracle() {
    let s = Scratch::new();
    let events = generate(4000, 42);
    let corrupt = corrupt_records();
    let mut rng = Rng(7);
    let mut file = Vec::new();
    // Offset of each corrupt record's length prefix -> its index.
    let mut corrupt_at: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let k = i / 400;
        if i % 400 == 17 && k < corrupt.len() {
            corrupt_at.insert(append_delimited(&mut file, &corrupt[k].payload), k);
        }
        append_delimited(&mut file, &confluent(e.schema, &encode(e, &mut rng)));
    }
    assert_eq!(
        corrupt_at.len(),
        corrupt.len(),
        "every corrupt record is in the file"
    );
    let input = s.path("in.avro");
    std::fs::write(&input, &file).unwrap();
    let want: Vec<Value> = events.iter().map(expected).collect();
    for schema in [1, 2, 3] {
        assert!(events.iter().filter(|e| e.schema == schema).count() > 500);
    }

    let job = s.job("job.yaml", &job(&good_writer_schemas(), ""));
    for par in ["1", "3"] {
        let out = format!("out-{par}");
        s.run_ok(
            &job,
            &[
                ("INPUT", input.to_str().unwrap()),
                ("PARALLELISM", par),
                ("OUT", s.path(&out).to_str().unwrap()),
            ],
        );
        let rows = s.output(&out, "events");
        assert_same_rows(&rows, &want);

        let dlq = s.output(&out, "dlq");
        assert_eq!(
            dlq.len(),
            corrupt.len(),
            "exactly the corrupt records are dead-lettered: {dlq:#?}"
        );
        for d in &dlq {
            let offset = d["offset"].as_u64().expect("offset");
            let Some(&k) = corrupt_at.get(&offset) else {
                panic!("a dead letter at offset {offset} where no corrupt record is: {d}");
            };
            let c = &corrupt[k];
            assert_eq!(d["source"], "events");
            assert!(d["file"].as_str().unwrap().ends_with("in.avro"), "{d}");
            assert_eq!(d["reason"], c.reason, "{d}");
            let error = d["error"].as_str().unwrap();
            assert!(
                error.contains(c.error),
                "expected `{}` in the error: {d}",
                c.error
            );
            let payload = dead_letter_payload(d);
            assert_eq!(payload, c.payload, "the dead letter keeps the payload: {d}");
        }
    }
}

#[test]
fn unusable_schemas_are_rejected_before_any_record_is_read() {
    let s = Scratch::new();
    std::fs::write(s.path("in.avro"), [0u8]).unwrap();
    let one = format!("        1: '{}'", compact(SCHEMA_1));
    let time_as_string = compact(SCHEMA_1).replace(
        r#"{"name": "event_time_ms", "type": "long"}"#,
        r#"{"name": "event_time_ms", "type": "string"}"#,
    );
    let no_event_type = compact(SCHEMA_1).replace(r#"{"name": "event_type", "type": "string"},"#, "");
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            format!("{one}\n        7: '{{\"type\": \"record\", \"name\": '"),
            String::new(),
            vec!["writer schema 7", "not valid JSON"],
        ),
        (
            format!(
                "{one}\n        7: '{}'",
                compact(SCHEMA_1).replace(r#""type": "long""#, r#""type": "lnog""#)
            ),
            String::new(),
            vec!["writer schema 7", "unknown type `lnog`"],
        ),
        (
            format!("{one}\n        7: '{time_as_string}'"),
            String::new(),
            vec![
                "writer schema 7 cannot be read with the reader schema",
                "field `event_time_ms`: the writer's string cannot be read as long",
            ],
        ),
        (
            format!("{one}\n        7: '{no_event_type}'"),
            String::new(),
            vec!["writer schema 7", "field `event_type`", "no default"],
        ),
        (
            format!(
                "{one}\n        7: '{}'",
                compact(SCHEMA_1).replace(r#""name": "Interaction""#, r#""name": "Click""#)
            ),
            String::new(),
            vec!["writer schema 7", "the names differ"],
        ),
        (
            one.clone(),
            "      reader_schema: '{\"type\": \"record\"'".into(),
            vec!["reader_schema", "not valid JSON"],
        ),
        (
            one.clone(),
            format!(
                "      reader_schema: '{}'",
                compact(SCHEMA_1).replace(r#"{"name": "user_id", "type": "string"},"#, "")
            ),
            vec!["reader_schema", "no field `user_id`"],
        ),
        (
            "        one: '{}'".into(),
            String::new(),
            vec!["`one` is not a schema id"],
        ),
    ];
    for (i, (writers, reader, messages)) in cases.iter().enumerate() {
        let job = s.job(&format!("bad-{i}.yaml"), &job(writers, reader));
        let out = s.run(&job, &[("INPUT", "in.avro"), ("OUT", "out")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "case {i} should be rejected: {stderr}"
        );
        for m in messages {
            assert!(stderr.contains(m), "case {i}: expected `{m}` in:\n{stderr}");
        }
        assert!(!s.path("out").exists(), "case {i}: no output may be written");
    }
}
