//! Tests of the JSON reader: each accessor and rule on hand-written inputs,
//! the word-at-a-time string scan against a byte loop, and value skipping
//! against `serde_json`'s own skipping of ignored values.

use std::borrow::Cow;

use super::*;
use crate::ErrorKind;

/// The members of `payload` as (key, value) pairs, values read with `read`.
fn members<'a, T>(
    payload: &'a [u8],
    mut read: impl FnMut(Value<'a>) -> Result<T, Error>,
) -> Result<Vec<(Cow<'a, str>, T)>, Error> {
    let mut obj = Object::parse(payload)?;
    let mut out = Vec::new();
    while let Some(key) = obj.next_key()? {
        let v = read(obj.value()?)?;
        out.push((key, v));
    }
    obj.finish()?;
    Ok(out)
}

/// The one member `"v"` of `{"v":<json>}`, read with `read`.
fn one<T>(json: &str, read: impl FnOnce(Value<'_>) -> Result<T, Error>) -> Result<T, Error> {
    let payload = format!(r#"{{"v":{json}}}"#);
    let mut obj = Object::parse(payload.as_bytes())?;
    let (mut slot, mut read) = (None, Some(read));
    while let Some(key) = obj.next_key()? {
        assert_eq!(key, "v");
        match read.take() {
            Some(read) => obj.field(&mut slot, read)?,
            None => panic!("a second member"),
        }
    }
    obj.finish()?;
    required(slot, "v")
}

/// A string value, owned so that it outlives its payload.
fn string(v: Value<'_>) -> Result<String, Error> {
    v.str().map(Cow::into_owned)
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind,
    }
}

/// Whether the whole payload is a valid object for the reader, skipping
/// every value.
fn skips(payload: &[u8]) -> Result<(), Error> {
    let mut obj = Object::parse(payload)?;
    while obj.next_key()?.is_some() {
        obj.skip_value()?;
    }
    obj.finish()
}

#[test]
fn reads_every_kind_of_value() {
    let m = members(
        br#" { "s" : "x" , "n" : -12.5e1 , "i" : 7 , "t" : true , "f" : false , "z" : null } "#,
        |v| Ok((v.kind(), v)),
    )
    .unwrap();
    let kinds: Vec<_> = m.iter().map(|(k, (kind, _))| (k.as_ref(), *kind)).collect();
    assert_eq!(
        kinds,
        [
            ("s", Kind::String),
            ("n", Kind::Number),
            ("i", Kind::Number),
            ("t", Kind::Bool),
            ("f", Kind::Bool),
            ("z", Kind::Null),
        ]
    );
    assert_eq!(m[0].1.1.str().unwrap(), "x");
    assert_eq!(m[1].1.1.f64().unwrap(), -125.0);
    assert_eq!(m[2].1.1.i64().unwrap(), 7);
    assert_eq!(m[2].1.1.f64().unwrap(), 7.0);
    assert!(m[3].1.1.bool().unwrap());
    assert!(!m[4].1.1.bool().unwrap());
    assert!(m[5].1.1.is_null());
    assert_eq!(m[5].1.1.opt_str().unwrap(), None);
    assert_eq!(m[5].1.1.opt_f64().unwrap(), None);
    assert_eq!(m[5].1.1.opt_i64().unwrap(), None);
    assert_eq!(m[5].1.1.opt_bool().unwrap(), None);
    assert_eq!(m[0].1.1.opt_str().unwrap().as_deref(), Some("x"));
}

#[test]
fn strings_borrow_unless_escaped() {
    let borrowed = |v: Value<'_>| v.str().map(|s| (matches!(s, Cow::Borrowed(_)), s.into_owned()));
    assert_eq!(
        one(r#""plain ünïcode""#, borrowed).unwrap(),
        (true, "plain ünïcode".into())
    );
    assert_eq!(one(r#""a\"b""#, borrowed).unwrap(), (false, "a\"b".into()));
}

#[test]
fn decodes_escapes() {
    let cases = [
        (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
        (r#""\u0041\u00e9\u20AC""#, "Aé€"),
        (r#""x\ud83d\ude00y""#, "x😀y"),
        (r#""\uD834\uDD1E""#, "𝄞"),
        (r#""\u0000""#, "\0"),
        (r#""\uffff""#, "\u{ffff}"),
        (r#""é\n€""#, "é\n€"),
        (r#""""#, ""),
    ];
    for (json, want) in cases {
        assert_eq!(one(json, string).unwrap(), want, "{json}");
    }
}

#[test]
fn lone_surrogates_are_decode_errors_only_when_read() {
    for json in [
        r#""\ud800""#,
        r#""\ud800x""#,
        r#""\ud800\n""#,
        r#""\ud800\u0041""#,
        r#""\ud800\ud800""#,
        r#""\udc00""#,
        r#""a\udfff""#,
    ] {
        assert_eq!(kind(one(json, string)), ErrorKind::Decode, "{json}");
        // serde_json checks the string before reporting a wrong type.
        assert_eq!(kind(one(json, |v| v.i64())), ErrorKind::Decode, "{json}");
        // Skipped, only the escape syntax is checked (as serde_json does).
        let payload = format!(r#"{{"v":{json}}}"#);
        assert!(skips(payload.as_bytes()).is_ok(), "{json}");
    }
}

#[test]
fn bad_string_syntax_is_a_decode_error() {
    for json in [
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\""#,
        "\"a\u{1}b\"",
        "\"tab\there\"",
        "\"new\nline\"",
        r#""\ud800\u12""#,
    ] {
        assert_eq!(kind(one(json, string)), ErrorKind::Decode, "{json}");
        let payload = format!(r#"{{"v":{json}}}"#);
        assert_eq!(kind(skips(payload.as_bytes())), ErrorKind::Decode, "{json}");
    }
    for payload in [
        &br#"{"v":"abc"#[..],
        br#"{"v":"abc\"#,
        br#"{"v":"\u00"#,
        br#"{"v":"\ud800\"#,
    ] {
        assert_eq!(kind(skips(payload)), ErrorKind::Decode);
    }
}

#[test]
fn keys_are_decoded_and_matched() {
    let m = members(
        r#"{"ключ":1,"a\u005fb":2,"\ud83d\ude00":3}"#.as_bytes(),
        |v| v.i64(),
    )
    .unwrap();
    let keys: Vec<_> = m.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, ["ключ", "a_b", "😀"]);
    assert!(matches!(m[0].0, Cow::Borrowed(_)));
    assert_eq!(kind(members(br#"{"\ud800":1}"#, |v| v.i64())), ErrorKind::Decode);
}

#[test]
fn integers() {
    let ok = [
        ("0", 0),
        ("-1", -1),
        ("1700000000000", 1_700_000_000_000),
        ("9223372036854775807", i64::MAX),
        ("-9223372036854775808", i64::MIN),
    ];
    for (json, want) in ok {
        assert_eq!(one(json, |v| v.i64()).unwrap(), want, "{json}");
    }
    // Out of range or not integers: invalid, as with serde_json.
    for json in [
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "-18446744073709551616",
        "123456789012345678901234567890",
        "1.0",
        "1.5",
        "1e3",
        "1E+3",
        "0e0",
        "-0",
        "-0.0",
        "1e-400",
    ] {
        let e = one(json, |v| v.i64()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{json}: {e}");
        assert!(e.message.contains("`v`"), "{e}");
    }
    // Beyond f64's range: serde_json fails to parse the number at all.
    for json in [
        "1e400",
        "-1e400",
        &"9".repeat(400),
        "1.5e309",
        "1e99999999999999999999",
    ] {
        assert_eq!(kind(one(json, |v| v.i64())), ErrorKind::Decode, "{json}");
    }
    // Zero or underflow with a huge exponent is a float, not out of range.
    for json in ["0e99999999999999999999", "1e-99999999999999999999"] {
        assert_eq!(kind(one(json, |v| v.i64())), ErrorKind::Invalid, "{json}");
    }
}

#[test]
fn floats() {
    let ok = [
        ("0", 0.0),
        ("-0", -0.0),
        ("12", 12.0),
        ("-1.5", -1.5),
        ("19.99", 19.99),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("2.5e+2", 250.0),
        ("1e-400", 0.0),
        ("18446744073709551616", 18446744073709551616.0),
        ("1.7976931348623157e308", f64::MAX),
        ("0.1000000000000000055511151231257827", 0.1),
        ("4.9e-324", 4.9e-324),
        ("0e99999999999999999999", 0.0),
        ("-1e-99999999999999999999", -0.0),
    ];
    for (json, want) in ok {
        let got = one(json, |v| v.f64()).unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{json}");
    }
    for json in [
        "1e309",
        "-1e309",
        "1.8e308",
        &"9".repeat(310),
        "1e99999999999999999999",
    ] {
        assert_eq!(kind(one(json, |v| v.f64())), ErrorKind::Decode, "{json}");
    }
}

#[test]
fn number_grammar() {
    for json in [
        "0", "-0", "1", "-1", "10", "0.5", "-0.5", "1e5", "1E5", "1e+5", "1e-5", "1.5e5", "0e0",
    ] {
        assert!(one(json, |v| v.f64()).is_ok(), "{json}");
        let payload = format!(r#"{{"v":{json}}}"#);
        assert!(skips(payload.as_bytes()).is_ok(), "{json}");
    }
    for json in [
        "01",
        "-01",
        "00",
        "+1",
        "-",
        "--1",
        "1.",
        "1.e5",
        ".5",
        "1e",
        "1e+",
        "1e-",
        "1ee5",
        "0x10",
        "1_000",
        "NaN",
        "Infinity",
        "-Infinity",
        "1.5.3",
        "1e5.5",
        "- 1",
    ] {
        assert_eq!(kind(one(json, |v| v.f64())), ErrorKind::Decode, "{json}");
        let payload = format!(r#"{{"v":{json}}}"#);
        assert_eq!(kind(skips(payload.as_bytes())), ErrorKind::Decode, "{json}");
    }
}

#[test]
fn literals() {
    for json in ["nul", "nulll", "tru", "True", "fals", "falsey", "NULL", "n"] {
        let payload = format!(r#"{{"v":{json}}}"#);
        assert_eq!(kind(skips(payload.as_bytes())), ErrorKind::Decode, "{json}");
    }
    for payload in [&br#"{"v":nu"#[..], br#"{"v":t"#, br#"{"v":fals"#] {
        assert_eq!(kind(skips(payload)), ErrorKind::Decode);
    }
}

#[test]
fn type_errors_name_the_field() {
    let e = one(r#""x""#, |v| v.i64()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(
        e.message,
        "invalid type for `v`: expected an integer, found a string"
    );
    let e = one("null", string).unwrap_err();
    assert_eq!(e.message, "invalid type for `v`: expected a string, found null");
    let e = one("1.5", |v| v.i64()).unwrap_err();
    assert_eq!(e.message, "invalid type for `v`: expected an integer, found 1.5");
    let e = one("9223372036854775808", |v| v.i64()).unwrap_err();
    assert_eq!(
        e.message,
        "invalid value for `v`: 9223372036854775808 is out of the range of a 64-bit integer"
    );
    for (json, found) in [
        ("true", "a boolean"),
        ("12", "a number"),
        ("[1]", "an array"),
        ("{}", "an object"),
    ] {
        let e = one(json, string).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{json}");
        assert!(e.message.ends_with(found), "{e}");
    }
    assert_eq!(kind(one(r#""1""#, |v| v.f64())), ErrorKind::Invalid);
    assert_eq!(kind(one(r#""true""#, |v| v.bool())), ErrorKind::Invalid);
    // A number beyond f64 where a string is expected: serde_json's number
    // parse fails first.
    assert_eq!(kind(one("1e999", string)), ErrorKind::Decode);
    // The key is named decoded.
    let e = Object::parse(br#"{"a\u0062":"x"}"#)
        .and_then(|mut o| {
            o.next_key()?;
            o.value()?.i64()
        })
        .unwrap_err();
    assert_eq!(
        e.message,
        "invalid type for `ab`: expected an integer, found a string"
    );
}

#[test]
fn mistyped_containers_are_invalid_before_they_are_read() {
    // serde_json reports an array or object where a scalar belongs without
    // reading it, so what follows it does not matter.
    for payload in [&br#"{"v":[1,2"#[..], br#"{"v":{"a":"#, br#"{"v":[}"#] {
        let mut obj = Object::parse(payload).unwrap();
        obj.next_key().unwrap();
        let mut slot = None;
        assert_eq!(kind(obj.field(&mut slot, string)), ErrorKind::Invalid);
    }
    // Read past, they are checked.
    assert_eq!(kind(members(br#"{"v":[1,2}"#, |_| Ok(()))), ErrorKind::Decode);
    assert!(members(br#"{"v":[1,{"a":[]}],"w":{}}"#, |_| Ok(())).is_ok());
}

#[test]
fn duplicates_missing_and_null() {
    let read = |payload: &[u8]| -> Result<(String, Option<i64>), Error> {
        let mut obj = Object::parse(payload)?;
        let (mut a, mut b) = (None, None);
        while let Some(key) = obj.next_key()? {
            match &*key {
                "a" => obj.field(&mut a, string)?,
                "b" => obj.field(&mut b, |v| v.opt_i64())?,
                _ => obj.skip_value()?,
            }
        }
        let a = required(a, "a")?;
        obj.finish()?;
        Ok((a, b.flatten()))
    };
    assert_eq!(read(br#"{"a":"x"}"#).unwrap(), ("x".into(), None));
    assert_eq!(read(br#"{"b":null,"a":"x"}"#).unwrap(), ("x".into(), None));
    assert_eq!(
        read(br#"{"b":3,"a":"x","c":1,"c":2}"#).unwrap(),
        ("x".into(), Some(3))
    );
    let e = read(br#"{"a":"x","a":"y"}"#).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Invalid, "duplicate field `a`")
    );
    // A null still counts as present.
    assert_eq!(kind(read(br#"{"a":"x","b":null,"b":1}"#)), ErrorKind::Invalid);
    // The duplicate is reported before its value is read.
    assert_eq!(kind(read(br#"{"a":"x","a""#)), ErrorKind::Invalid);
    let e = read(br#"{"b":1}"#).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Invalid, "missing field `a`")
    );
    assert_eq!(kind(read(br#"{"a":null}"#)), ErrorKind::Invalid);
    // A missing field is reported before trailing characters.
    assert_eq!(kind(read(br#"{"b":1} x"#)), ErrorKind::Invalid);
    assert_eq!(kind(read(br#"{"a":"x"} x"#)), ErrorKind::Decode);
}

#[test]
fn object_syntax() {
    let ok: [&[u8]; 7] = [
        b"{}",
        b" \t\r\n{ } \n",
        br#"{"a":1}"#,
        br#"{ "a" : 1 , "b" : [ ] , "c" : { } }"#,
        br#"{"a":[1,"x",null,true,false,-0.5e1,[[]],{"b":{"c":[{}]}}]}"#,
        br#"{"":""}"#,
        br#"{"a":1,"a":2}"#,
    ];
    for payload in ok {
        assert!(skips(payload).is_ok(), "{}", String::from_utf8_lossy(payload));
    }
    let bad: [&[u8]; 27] = [
        b"",
        b"   ",
        b"{",
        b"{ ",
        br#"{"a""#,
        br#"{"a":"#,
        br#"{"a":1"#,
        br#"{"a":1,"#,
        br#"{"a":1,}"#,
        br#"{,"a":1}"#,
        br#"{"a" 1}"#,
        br#"{"a":1 "b":2}"#,
        br#"{a:1}"#,
        br#"{'a':1}"#,
        br#"{"a":1}}"#,
        br#"{"a":1} {}"#,
        br#"{"a":1}x"#,
        br#"{"a":[1,]}"#,
        br#"{"a":[,1]}"#,
        br#"{"a":[1 2]}"#,
        br#"{"a":{"b"}}"#,
        br#"{"a":{"b":1,}}"#,
        br#"{"a":{1:2}}"#,
        br#"{"a":[}"#,
        br#"{"a":{]}"#,
        br#"{"a":[1}"#,
        br#"{"a":}"#,
    ];
    for payload in bad {
        assert_eq!(
            kind(skips(payload)),
            ErrorKind::Decode,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn top_level_must_be_an_object() {
    for payload in [
        "[]",
        "[1,2]",
        "[",
        "\"x\"",
        "1",
        "null",
        "true",
        " 12 ",
        "truex",
        "\"a\" junk",
    ] {
        let e = Object::parse(payload.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{payload}");
        assert!(e.message.contains("expected a JSON object"), "{e}");
    }
    for payload in ["", " ", "x", "01", "\"abc", "nul", "\"\\ud800\"", "1e400", "}"] {
        assert_eq!(
            kind(Object::parse(payload.as_bytes())),
            ErrorKind::Decode,
            "{payload}"
        );
    }
}

#[test]
fn invalid_utf8_is_a_decode_error_anywhere() {
    for payload in [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"ignored\":\"\xc3\"}",
        b"\xef\xbb",
        b"{} \x80",
    ] {
        let e = Object::parse(payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        assert!(e.message.contains("not UTF-8"), "{e}");
    }
}

#[test]
fn unread_values_are_skipped_and_checked() {
    // next_key and finish skip what the caller did not read.
    let mut obj = Object::parse(br#"{"a":[1,{"x":2}],"b":"s","c":3}"#).unwrap();
    assert_eq!(obj.next_key().unwrap().unwrap(), "a");
    assert_eq!(obj.value().unwrap().kind(), Kind::Array);
    assert_eq!(obj.next_key().unwrap().unwrap(), "b");
    assert_eq!(obj.next_key().unwrap().unwrap(), "c");
    obj.finish().unwrap();
    let mut obj = Object::parse(br#"{"a":1,"b":[1 2]}"#).unwrap();
    obj.next_key().unwrap();
    assert_eq!(kind(obj.finish()), ErrorKind::Decode);
    // Reading a value without its key is a caller's mistake.
    let mut obj = Object::parse(br#"{"a":1}"#).unwrap();
    assert_eq!(kind(obj.value()), ErrorKind::Failed);
}

#[test]
fn deep_nesting_in_skipped_values() {
    for depth in [1, 63, 64, 65, 128, 129, 1000, 10_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let payload = format!(r#"{{"a":{nested}}}"#);
        assert!(skips(payload.as_bytes()).is_ok(), "{depth}");
        let objects = format!("{}1{}", r#"{"k":"#.repeat(depth), "}".repeat(depth));
        let payload = format!(r#"{{"a":{objects}}}"#);
        assert!(skips(payload.as_bytes()).is_ok(), "{depth}");
        // One bracket of the wrong kind deep inside.
        let mixed = format!("{}{}}}{}", "[{\"k\":".repeat(depth), "[", "}]".repeat(depth));
        let payload = format!(r#"{{"a":{mixed}}}"#);
        assert_eq!(kind(skips(payload.as_bytes())), ErrorKind::Decode, "{depth}");
    }
}

/// `find_special` against a byte loop, with the special byte at every
/// position of chunks and tails, among fillers that are near misses for the
/// bit tricks.
#[test]
fn word_scan_matches_byte_scan() {
    let naive = |b: &[u8], i: usize| {
        b.iter()
            .skip(i)
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .map_or(b.len(), |p| p + i)
    };
    let fillers = [
        b'a',
        b' ',
        b'!',
        b'#',
        b'[',
        b']',
        0x7f,
        0x80,
        0xa2,
        0xdc,
        0xff,
        0x21,
        0x1f + 0x80,
    ];
    let specials = [b'"', b'\\', 0, 0x1f, b'\n', 0x10];
    for len in 0..40 {
        for &fill in &fillers {
            let base = vec![fill; len];
            for start in 0..=len.min(9) {
                assert_eq!(find_special(&base, start), naive(&base, start));
            }
            for pos in 0..len {
                for &special in &specials {
                    let mut b = base.clone();
                    b[pos] = special;
                    // A second special later must not hide the first.
                    if pos + 3 < len {
                        b[pos + 3] = b'"';
                    }
                    for start in 0..=pos.min(9) {
                        assert_eq!(find_special(&b, start), naive(&b, start), "{b:?} from {start}");
                    }
                }
            }
        }
    }
    // Pseudo-random bytes.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..20_000 {
        let mut b = Vec::new();
        for _ in 0..(x % 40) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly harmless bytes, sometimes a special one.
            let byte = (x >> 24) as u8;
            b.push(if byte < 0x30 && !x.is_multiple_of(5) {
                byte | 0x40
            } else {
                byte
            });
        }
        assert_eq!(find_special(&b, 0), naive(&b, 0), "{b:?}");
    }
}

/// Skipping a value accepts exactly what `serde_json` accepts when it skips
/// an ignored value (`IgnoredAny`), on valid UTF-8.
#[test]
fn skipping_matches_serde_json() {
    let pieces = [
        "null",
        "true",
        "false",
        "nul",
        "tru",
        "0",
        "-0",
        "01",
        "1.5",
        "1.",
        "-",
        "1e5",
        "1e",
        "\"s\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\q\"",
        "\"a",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " ",
        "\"k\":",
        "[]",
        "{}",
        "\"é\"",
        "\t",
        "x",
        "\"\\\"\"",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // The reader's skip over a whole text, then only whitespace, as
    // `serde_json::from_str` wants.
    let skip_whole = |text: &str| {
        let bytes = text.as_bytes();
        skip_any(bytes, 0).is_ok_and(|end| ws_end(bytes, end) == bytes.len())
    };
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..50_000 {
        let mut value = String::new();
        for _ in 0..(1 + next() % 8) {
            value.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let serde = serde_json::from_str::<serde::de::IgnoredAny>(&value).is_ok();
        assert_eq!(skip_whole(&value), serde, "{value}");
        if serde {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    assert!(ok > 1000 && bad > 1000, "{ok} valid, {bad} invalid");
}

/// `digits` (eight at a time) against a byte loop, for runs of every length
/// at every alignment, followed by every kind of byte.
#[test]
fn digit_runs_match_byte_loop() {
    let naive = |b: &[u8], i: usize| {
        let end = b[i..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| p + i);
        let value = b[i..end]
            .iter()
            .fold(0u64, |v, &d| v.wrapping_mul(10).wrapping_add(u64::from(d - b'0')));
        (end, value)
    };
    let mut x = 0x1234_5678_9abc_def1_u64;
    for len in 0..30 {
        for start in 0..9 {
            for &after in &[
                b'.',
                b'e',
                b'"',
                b',',
                b'}',
                b'/',
                b':',
                b' ',
                0x80,
                0xff,
                b'0' - 1,
                b'9' + 1,
            ] {
                let mut b = vec![b'x'; start];
                for _ in 0..len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.push(b'0' + (x % 10) as u8);
                }
                assert_eq!(digits(&b, start), naive(&b, start), "{b:?}");
                b.push(after);
                b.extend_from_slice(b"123");
                assert_eq!(digits(&b, start), naive(&b, start), "{b:?}");
            }
        }
    }
    assert_eq!(
        digits(b"99999999999999999999", 0).1,
        99_999_999_999_999_999_999_u128 as u64
    );
}

#[test]
fn long_numbers_are_cut_short_in_messages() {
    let digits = "1".repeat(100);
    let e = one(&digits, |v| v.i64()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.len() < 120, "{e}");
    assert!(e.message.contains(&format!("{}…", "1".repeat(40))), "{e}");
}
