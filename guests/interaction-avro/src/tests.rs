//! Unit tests of the schema parser, the resolver and the decoder on the parts
//! of Avro the end-to-end test (`tests/avro.rs` in the repository root) does
//! not reach: promotions, enums, arrays and maps, recursion, aliases,
//! defaults and hostile data. They run natively (the guests workspace
//! defaults to wasm32-wasip2), from `guests/`:
//! `cargo test -p interaction-avro --target x86_64-unknown-linux-gnu`.

use std::borrow::Cow;

use crate::decode::{Kind, decode};
use crate::resolve::{Resolution, resolve};
use crate::schema::Schema;
use crate::value::Value;

/// Zigzag varint.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn resolved(writer: &str, reader: &str) -> Resolution {
    let w = Schema::parse(writer).unwrap_or_else(|e| panic!("writer: {e}"));
    let r = Schema::parse(reader).unwrap_or_else(|e| panic!("reader: {e}"));
    resolve(w, &r).unwrap_or_else(|e| panic!("resolve: {e}"))
}

fn incompatible(writer: &str, reader: &str) -> String {
    let w = Schema::parse(writer).unwrap_or_else(|e| panic!("writer: {e}"));
    let r = Schema::parse(reader).unwrap_or_else(|e| panic!("reader: {e}"));
    match resolve(w, &r) {
        Ok(_) => panic!("expected {writer} and {reader} to be incompatible"),
        Err(e) => e,
    }
}

fn s(v: &str) -> Value<'static> {
    Value::String(Cow::Owned(v.to_string()))
}

#[test]
fn promotions_follow_the_specification() {
    let res = resolved(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"int"},{"name":"b","type":"long"},{"name":"c","type":"float"},
            {"name":"d","type":"string"},{"name":"e","type":"bytes"},{"name":"f","type":"int"}]}"#,
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"long"},{"name":"b","type":"double"},{"name":"c","type":"double"},
            {"name":"d","type":"bytes"},{"name":"e","type":"string"},{"name":"f","type":"float"}]}"#,
    );
    let mut data = Vec::new();
    long(&mut data, -5);
    long(&mut data, 1 << 40);
    data.extend_from_slice(&1.5f32.to_le_bytes());
    string(&mut data, "ab");
    string(&mut data, "é");
    long(&mut data, 3);
    assert_eq!(
        decode(&res, &data).unwrap(),
        Value::Record(vec![
            Value::Long(-5),
            Value::Double((1u64 << 40) as f64),
            Value::Double(1.5),
            Value::Bytes(Cow::Borrowed(b"ab")),
            s("é"),
            Value::Float(3.0),
        ])
    );
    assert!(incompatible(r#""long""#, r#""int""#).contains("the writer's long cannot be read as int"));
    assert!(incompatible(r#""double""#, r#""float""#).contains("cannot be read as float"));
}

#[test]
fn enums_map_symbols_by_name_and_fall_back_to_the_default() {
    let writer = r#"{"type":"enum","name":"Kind","symbols":["A","B","C"]}"#;
    let with_default = resolved(
        writer,
        r#"{"type":"enum","name":"Kind","symbols":["C","A","X"],"default":"X"}"#,
    );
    let without = resolved(writer, r#"{"type":"enum","name":"Kind","symbols":["C","A"]}"#);
    for (symbol, want) in [(0, 1), (1, 2), (2, 0)] {
        let mut data = Vec::new();
        long(&mut data, symbol);
        assert_eq!(decode(&with_default, &data).unwrap(), Value::Enum(want));
    }
    let mut data = Vec::new();
    long(&mut data, 1); // B: not in the reader's enum, no default
    let err = decode(&without, &data).unwrap_err();
    assert_eq!(err.kind, Kind::Unreadable);
    assert!(
        err.to_string()
            .contains("symbol `B` is not in the reader's enum Kind"),
        "{err}"
    );
    let mut data = Vec::new();
    long(&mut data, 3); // out of range
    assert_eq!(decode(&without, &data).unwrap_err().kind, Kind::Malformed);
}

#[test]
fn arrays_and_maps_read_every_block_form() {
    let res = resolved(
        r#"{"type":"record","name":"R","fields":[
            {"name":"xs","type":{"type":"array","items":"int"}},
            {"name":"m","type":{"type":"map","values":"int"}}]}"#,
        r#"{"type":"record","name":"R","fields":[
            {"name":"xs","type":{"type":"array","items":"long"}},
            {"name":"m","type":{"type":"map","values":"double"}}]}"#,
    );
    let mut data = Vec::new();
    long(&mut data, 2); // a counted block
    long(&mut data, 1);
    long(&mut data, 2);
    long(&mut data, -1); // a block with its byte size
    long(&mut data, 1);
    long(&mut data, 3);
    long(&mut data, 0);
    long(&mut data, 1);
    string(&mut data, "k");
    long(&mut data, 7);
    long(&mut data, 0);
    assert_eq!(
        decode(&res, &data).unwrap(),
        Value::Record(vec![
            Value::Array(vec![Value::Long(1), Value::Long(2), Value::Long(3)]),
            Value::Map(vec![(Cow::Borrowed("k"), Value::Double(7.0))]),
        ])
    );
}

#[test]
fn skipped_fields_of_every_type_are_stepped_over() {
    let res = resolved(
        r#"{"type":"record","name":"R","fields":[
            {"name":"gone","type":{"type":"record","name":"G","fields":[
                {"name":"a","type":{"type":"array","items":"string"}},
                {"name":"m","type":{"type":"map","values":["null","double"]}},
                {"name":"f","type":{"type":"fixed","name":"F","size":3}},
                {"name":"b","type":"boolean"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["x"]}}]}},
            {"name":"keep","type":"string"}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"keep","type":"string"}]}"#,
    );
    let mut data = Vec::new();
    long(&mut data, -2); // a sized block: jumped over whole
    let mut block = Vec::new();
    string(&mut block, "one");
    string(&mut block, "two");
    long(&mut data, block.len() as i64);
    data.extend_from_slice(&block);
    long(&mut data, 1);
    string(&mut data, "three");
    long(&mut data, 0);
    long(&mut data, 1);
    string(&mut data, "k");
    long(&mut data, 1);
    data.extend_from_slice(&2.5f64.to_le_bytes());
    long(&mut data, 0);
    data.extend_from_slice(b"xyz");
    data.push(1);
    long(&mut data, 0);
    string(&mut data, "kept");
    assert_eq!(decode(&res, &data).unwrap(), Value::Record(vec![s("kept")]));
}

#[test]
fn recursive_records_resolve_and_decode() {
    let res = resolved(
        r#"{"type":"record","name":"Node","fields":[
            {"name":"value","type":"int"},{"name":"next","type":["null","Node"]}]}"#,
        r#"{"type":"record","name":"Node","fields":[
            {"name":"value","type":"long"},{"name":"next","type":["null","Node"],"default":null},
            {"name":"label","type":"string","default":"none"}]}"#,
    );
    let mut data = Vec::new();
    for v in [1, 2] {
        long(&mut data, v);
        long(&mut data, 1); // next: Node
    }
    long(&mut data, 3);
    long(&mut data, 0); // next: null
    let node = |v: i64, next: Value<'static>| Value::Record(vec![Value::Long(v), next, s("none")]);
    assert_eq!(
        decode(&res, &data).unwrap(),
        node(1, node(2, node(3, Value::Null)))
    );

    // Endless nesting is cut off, not followed until the stack overflows.
    let deep: Vec<u8> = std::iter::repeat_n([2u8, 2u8], 10_000).flatten().collect();
    let err = decode(&res, &deep).unwrap_err();
    assert!(err.to_string().contains("nest deeper"), "{err}");
}

#[test]
fn unions_resolve_branch_by_branch() {
    // A writer type goes to the reader branch of its own kind first.
    let res = resolved(r#""long""#, r#"["null","double","long"]"#);
    let mut data = Vec::new();
    long(&mut data, 9);
    assert_eq!(decode(&res, &data).unwrap(), Value::Long(9));
    // ... else to one it can be promoted to.
    let res = resolved(r#""int""#, r#"["null","double"]"#);
    assert_eq!(decode(&res, &data).unwrap(), Value::Double(9.0));

    // A writer branch the reader cannot take fails its records only.
    let res = resolved(r#"["null","string","boolean"]"#, r#""string""#);
    let mut data = Vec::new();
    long(&mut data, 1);
    string(&mut data, "x");
    assert_eq!(decode(&res, &data).unwrap(), s("x"));
    let err = decode(&res, &[0]).unwrap_err();
    assert_eq!(err.kind, Kind::Unreadable);
    assert!(err.to_string().contains("the value is null"), "{err}");
    let err = decode(&res, &[4, 1]).unwrap_err();
    assert!(
        err.to_string().contains("boolean cannot be read as string"),
        "{err}"
    );
    assert!(
        incompatible(r#"["null","boolean"]"#, r#""string""#)
            .contains("no branch of the writer's union [null, boolean]")
    );
}

#[test]
fn fields_match_by_alias_and_missing_ones_take_defaults() {
    let res = resolved(
        r#"{"type":"record","name":"a.Old","fields":[{"name":"uid","type":"string"}]}"#,
        r#"{"type":"record","name":"New","aliases":["Old"],"fields":[
            {"name":"user","type":"string","aliases":["uid"]},
            {"name":"tags","type":{"type":"array","items":"string"},"default":["t"]},
            {"name":"pos","type":{"type":"record","name":"P","fields":[
                {"name":"x","type":"int"},{"name":"y","type":"int","default":2}]},"default":{"x":1}},
            {"name":"raw","type":"bytes","default":"\u00ff"},
            {"name":"n","type":["null","long"],"default":null}]}"#,
    );
    let mut data = Vec::new();
    string(&mut data, "me");
    assert_eq!(
        decode(&res, &data).unwrap(),
        Value::Record(vec![
            s("me"),
            Value::Array(vec![s("t")]),
            Value::Record(vec![Value::Int(1), Value::Int(2)]),
            Value::Bytes(Cow::Owned(vec![0xff])),
            Value::Null,
        ])
    );
    let err = incompatible(
        r#"{"type":"record","name":"R","fields":[]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"n","type":"int","default":"x"}]}"#,
    );
    assert!(
        err.contains("field `n`: the reader's default is invalid"),
        "{err}"
    );
    let err = incompatible(
        r#"{"type":"record","name":"R","fields":[]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"n","type":"int"}]}"#,
    );
    assert!(
        err.contains("field `n`: the writer's record R has no such field"),
        "{err}"
    );
    let err = incompatible(
        r#"{"type":"fixed","name":"F","size":4}"#,
        r#"{"type":"fixed","name":"F","size":8}"#,
    );
    assert!(err.contains("has 4 bytes, the reader's 8"), "{err}");
}

#[test]
fn corrupt_data_is_an_error_not_a_panic() {
    let res = resolved(
        r#"{"type":"record","name":"R","fields":[
            {"name":"s","type":"string"},{"name":"xs","type":{"type":"array","items":"null"}}]}"#,
        r#"{"type":"record","name":"R","fields":[
            {"name":"s","type":"string"},{"name":"xs","type":{"type":"array","items":"null"}}]}"#,
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0xff; 11], "overflows 64 bits"),
        (vec![0x01], "negative length -1"),
        (vec![0x80], "truncated"),
        (vec![0x10, b'a'], "truncated at byte 1: 8 more needed, 1 left"),
        // A claim of 2^62 items of a zero-size type.
        (
            {
                let mut d = vec![0x00];
                long(&mut d, 1 << 62);
                d
            },
            "more items than the payload can hold",
        ),
        (vec![0x00, 0x00, 0x00], "1 byte left after the datum"),
    ];
    for (data, want) in cases {
        let err = decode(&res, &data).unwrap_err();
        assert_eq!(err.kind, Kind::Malformed);
        assert!(
            err.to_string().contains(want),
            "{data:?}: expected `{want}` in `{err}`"
        );
    }
}

#[test]
fn bad_schemas_are_rejected_with_where_and_why() {
    let cases = [
        ("{", "not valid JSON"),
        (r#""strin""#, "unknown type `strin`"),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}"#,
            "field `a` is defined twice",
        ),
        (r#"["null",["int"]]"#, "a union may not contain a union"),
        (r#"["int","string","int"]"#, "two `int` branches"),
        (
            r#"{"type":"record","name":"1R","fields":[]}"#,
            "`1R` is not a valid Avro name",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"x","type":{"type":"record","name":"R","fields":[]}}]}"#,
            "`R` is defined twice",
        ),
        (
            r#"{"type":"enum","name":"E","symbols":["a","a"]}"#,
            "symbol `a` appears twice",
        ),
        (
            r#"{"type":"fixed","name":"F"}"#,
            "needs a non-negative integer `size`",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"x","type":{"type":"array"}}]}"#,
            "record `R`, field `x`, an array needs `items`",
        ),
        (
            r#"{"type":"record","name":"int","fields":[]}"#,
            "cannot be redefined",
        ),
    ];
    for (schema, want) in cases {
        let err = Schema::parse(schema).unwrap_err();
        assert!(err.contains(want), "{schema}: expected `{want}` in `{err}`");
    }
    // Names resolve in the enclosing namespace, and recursive references
    // inside a union are not mistaken for duplicates.
    Schema::parse(
        r#"{"type":"record","name":"T","namespace":"n","fields":[
            {"name":"l","type":["null","T","n.U"],"default":null}]}"#,
    )
    .unwrap_err();
    Schema::parse(
        r#"{"type":"record","name":"T","namespace":"n","fields":[
            {"name":"u","type":{"type":"fixed","name":"U","size":1}},
            {"name":"l","type":["null","T","n.U"]}]}"#,
    )
    .unwrap();
}
