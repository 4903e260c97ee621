//! Test support for the JSON deserializer guests: a differential test of a
//! record reader built on `wafer_sdk::json` against `serde_json` (the
//! reference it replaces) over many inputs, hand-written and generated.
//!
//! The two must agree on every payload: both accept it with equal records,
//! or both reject it with the same [`ErrorKind`]. The reader's documented
//! differences are the only exceptions: a payload that is not UTF-8 must be
//! a decode error for the reader (`serde_json` accepts bad UTF-8 inside an
//! ignored value), and an array at the top level must be an invalid record
//! (`serde_json` reads a struct from an array of its field values).
//!
//! Nothing here knows the record types: a test passes the records' fields
//! (as seed records) and a closure that runs both readers on a payload.

use std::fmt::Debug;

use wafer_sdk::{Error, ErrorKind};

/// Both readers' results on one payload.
#[derive(Debug)]
pub struct Pair {
    /// The reference's record (its `Debug` text) or error.
    pub reference: Result<String, Error>,
    /// The candidate's record or error.
    pub candidate: Result<String, Error>,
    /// Whether both produced records, and equal ones.
    pub equal: bool,
}

/// Compares the reference's and the candidate's results on one payload.
pub fn pair<T: PartialEq + Debug>(reference: Result<T, Error>, candidate: Result<T, Error>) -> Pair {
    let equal = matches!((&reference, &candidate), (Ok(a), Ok(b)) if a == b);
    Pair {
        reference: reference.map(|r| format!("{r:?}")),
        candidate: candidate.map(|r| format!("{r:?}")),
        equal,
    }
}

/// How many payloads got each verdict.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Accepted by both, with equal records.
    pub ok: usize,
    /// Invalid records for both.
    pub invalid: usize,
    /// Decode errors for both.
    pub decode: usize,
    /// Not UTF-8: a decode error for the candidate, anything for the reference.
    pub not_utf8: usize,
    /// Arrays at the top level: invalid for the candidate.
    pub arrays: usize,
}

impl Counts {
    /// All payloads checked.
    pub fn total(&self) -> usize {
        self.ok + self.invalid + self.decode + self.not_utf8 + self.arrays
    }
}

/// Runs both readers on payloads and panics at the first disagreement.
pub struct Checker<F> {
    run: F,
    counts: Counts,
}

impl<F: FnMut(&[u8]) -> Pair> Checker<F> {
    /// A checker running `run` (both readers) on each payload.
    pub fn new(run: F) -> Self {
        Checker {
            run,
            counts: Counts::default(),
        }
    }

    /// The verdicts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Checks one payload.
    pub fn check(&mut self, payload: &[u8]) {
        let pair = (self.run)(payload);
        let fail = |why: &str| -> ! {
            panic!(
                "{why}\npayload: {:?}\nbytes: {payload:?}\nserde_json: {:?}\nreader: {:?}",
                String::from_utf8_lossy(payload),
                pair.reference,
                pair.candidate
            )
        };
        let kind = |r: &Result<String, Error>| r.as_ref().err().map(|e| e.kind);
        if std::str::from_utf8(payload).is_err() {
            if kind(&pair.candidate) != Some(ErrorKind::Decode) {
                fail("a payload that is not UTF-8 must be a decode error");
            }
            self.counts.not_utf8 += 1;
            return;
        }
        let first = payload
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first == Some(&b'[') {
            if kind(&pair.candidate) != Some(ErrorKind::Invalid) {
                fail("an array at the top level must be an invalid record");
            }
            self.counts.arrays += 1;
            return;
        }
        match (kind(&pair.reference), kind(&pair.candidate)) {
            (None, None) if pair.equal => self.counts.ok += 1,
            (None, None) => fail("different records"),
            (Some(a), Some(b)) if a == b => match a {
                ErrorKind::Invalid => self.counts.invalid += 1,
                _ => self.counts.decode += 1,
            },
            _ => fail("different verdicts"),
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so that failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.bits() % 100 < percent
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// JSON values of every shape, valid and not, for fields and ignored
/// members.
pub const VALUES: &[&str] = &[
    // Strings: plain, unicode, escapes, surrogates, bad syntax.
    r#""""#,
    r#""x""#,
    r#""user-1""#,
    r#""ünïcödé € 😀 中文""#,
    r#""\"\\\/\b\f\n\r\t""#,
    r#""\u0041\u00e9\u20ac\uFFFF""#,
    r#""\ud83d\ude00""#,
    r#""a\uD834\uDD1Eb""#,
    r#""\u0000""#,
    r#""\ud800""#,
    r#""\udc00""#,
    r#""\udfff""#,
    r#""\ud800\u0041""#,
    r#""\ud800\ud800""#,
    r#""\ud800x""#,
    r#""\ud800\n""#,
    r#""\u12""#,
    r#""\u12G4""#,
    r#""\x""#,
    r#""\'""#,
    "\"tab\there\"",
    "\"ctl\u{1}\"",
    "\"nl\nx\"",
    "\"del\u{7f}\"",
    r#""unterminated"#,
    r#""ends in escape\""#,
    r#""a"b""#,
    "'single'",
    // Long strings: what follows the first sixteen bytes is scanned apart.
    r#""xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#,
    r#""xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\u00e9\ud83d\ude00xxxxxxxxxxxxxxxxxxxxxxxx\"""#,
    r#""xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\ud800xxxxxxxxxxxxxxxxxxxxxxx""#,
    r#""xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\qxxxxxxxxxxxxxxxxxxxxxxx""#,
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\u{1f}xxxxxxxx\"",
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    // Numbers.
    "0",
    "-0",
    "1",
    "-1",
    "7",
    "01",
    "-01",
    "00",
    "1.5",
    "-1.5",
    "19.99",
    "1.",
    ".5",
    "-.5",
    "1e3",
    "1E+3",
    "1e-3",
    "1e",
    "1e+",
    "+1",
    "-",
    "--1",
    "1.0",
    "0.0",
    "-0.0",
    "0e0",
    "1700000000000",
    "-1700000000000",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "1e309",
    "-1e309",
    "1e400",
    "1e-400",
    "1e99999999999999999999",
    "0e99999999999999999999",
    "1e-99999999999999999999",
    "-0e-0",
    "4.9e-324",
    "2.2250738585072014e-308",
    "0.30000000000000004",
    "3.14159265358979323846264338327950288419716939937510",
    "9007199254740993",
    "1.5.3",
    "1e5.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x1F",
    "1_000",
    // Literals.
    "null",
    "true",
    "false",
    "nul",
    "nulll",
    "nullx",
    "tru",
    "True",
    "fals",
    "NULL",
    // Containers, valid and not.
    "[]",
    "{}",
    "[ ]",
    "{ }",
    "[1,2,3]",
    r#"{"a":1}"#,
    r#"[{"user_id":"x"},[null,[true,{"b":[]}]]]"#,
    r#"{"a":{"b":{"c":"\ud800"}}}"#,
    r#"{"user_id":{"user_id":1}}"#,
    r#"[ 1 , { "a" : [ ] } ]"#,
    "[1,]",
    "[,]",
    "[,1]",
    "[1 2]",
    r#"{"a"}"#,
    r#"{"a":}"#,
    r#"{"a":1,}"#,
    r#"{"a" 1}"#,
    r#"{1:2}"#,
    "[",
    "{",
    "]",
    "}",
    "[}",
    "{]",
    r#"{"a":[}"#,
    r#"[{"a":1]}"#,
    // Not values.
    "",
    "x",
    ",",
    ":",
];

/// Keys for extra members: unknown names, near misses of field names,
/// escapes (one decoding to a field's name is added per field), bad syntax.
const KEYS: &[&str] = &[
    r#""extra""#,
    r#""""#,
    r#""a-rather-long-unknown-key-of-forty-bytes""#,
    r#""a-rather-long-unknown-key-with-an-escape\u0021""#,
    r#""ключ""#,
    r#""😀""#,
    r#""user_id ""#,
    r#""USER_ID""#,
    r#""a\"b""#,
    r#""\u0041""#,
    r#""\ud83d\ude00""#,
    r#""\ud800""#,
    r#""\u12""#,
    r#""\x""#,
    "\"ctl\u{1}\"",
    r#""unterminated"#,
    "unquoted",
    "'single'",
    "1",
    "null",
];

/// Bytes to write over, or insert into, payloads: structural characters,
/// number and literal characters, controls, non-ASCII.
const BYTES: &[u8] = &[
    b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b' ', b'\n', b'0', b'1', b'9', b'-', b'+', b'.', b'e',
    b'E', b'n', b't', b'u', b'x', b'/', b'\t', b'\r', 0x0b, 0x0c, 0, 0x1f, 0x7f, 0x80, 0xc3, 0xe2, 0xff,
];

/// Whitespace between tokens.
const WHITESPACE: &[&str] = &[" ", "\n", "\t", "\r\n", "  "];

/// What may follow an object.
const TRAILERS: &[&str] = &[
    "", " ", "\n", " \t\r\n", "x", " x", "}", ",", "{}", "[]", "\"", "null", "0", "\u{0}", "//", "\u{feff}",
];

type Members = Vec<(String, String)>;

/// Writes an object: `spaced` puts whitespace around every token.
fn render(members: &[(String, String)], spaced: bool) -> Vec<u8> {
    let (open, colon, comma, close) = if spaced {
        ("\r\n{ ", " :\t", " ,\n ", " }\n")
    } else {
        ("{", ":", ",", "}")
    };
    let body: Vec<String> = members.iter().map(|(k, v)| format!("{k}{colon}{v}")).collect();
    format!("{open}{}{close}", body.join(comma)).into_bytes()
}

/// Writes an object with random whitespace between tokens.
fn render_random(members: &[(String, String)], rng: &mut Rng) -> Vec<u8> {
    let ws = |rng: &mut Rng| -> &'static str {
        if rng.chance(80) {
            ""
        } else {
            WHITESPACE[rng.below(WHITESPACE.len())]
        }
    };
    let mut out = String::new();
    out.push_str(ws(rng));
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push_str(ws(rng));
            out.push(',');
        }
        out.push_str(ws(rng));
        out.push_str(k);
        out.push_str(ws(rng));
        out.push(':');
        out.push_str(ws(rng));
        out.push_str(v);
    }
    out.push_str(ws(rng));
    out.push('}');
    out.push_str(ws(rng));
    out.into_bytes()
}

/// A random JSON value, nested up to `depth`; sometimes a malformed one.
fn random_value(rng: &mut Rng, depth: u32) -> String {
    match rng.below(10) {
        0..=4 => (*rng.pick(VALUES)).to_string(),
        5 | 6 if depth > 0 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| random_value(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        7 | 8 if depth > 0 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n)
                .map(|_| format!("{}:{}", rng.pick(KEYS), random_value(rng, depth - 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => format!("\"s{}\"", rng.below(100)),
    }
}

/// `name` with its first character written as a `\u` escape.
fn escaped_key(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => format!("\"\\u{:04x}{}\"", u32::from(c), chars.as_str()),
        None => "\"\"".into(),
    }
}

/// Single-byte changes at every position of `payload`: each of [`BYTES`]
/// written over it and inserted before it, and the byte deleted.
fn byte_mutations(payload: &[u8], mut check: impl FnMut(&[u8])) {
    for i in 0..=payload.len() {
        for &b in BYTES {
            let mut inserted = payload.to_vec();
            inserted.insert(i, b);
            check(&inserted);
            if i < payload.len() && payload[i] != b {
                let mut replaced = payload.to_vec();
                replaced[i] = b;
                check(&replaced);
            }
        }
        if i < payload.len() {
            let mut deleted = payload.to_vec();
            deleted.remove(i);
            check(&deleted);
        }
    }
}

/// Runs the differential test: `run` executes both readers on a payload
/// (see [`pair`]); `seeds` are valid records as (key, JSON value) members,
/// with every field of the record type among them. Hand-written variations
/// of the seeds, every truncation and single-byte change of them, and
/// `random` generated records (a few random byte changes in half of them)
/// are checked. Returns the verdict counts.
///
/// `JSON_DIFF_RANDOM` and `JSON_DIFF_SEED` in the environment override the
/// number of generated records and the generator's seed, for longer
/// searches than the test suite's.
pub fn run(seeds: &[&[(&str, &str)]], random: usize, run: impl FnMut(&[u8]) -> Pair) -> Counts {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let random = env("JSON_DIFF_RANDOM").map_or(random, |n| n as usize);
    let seed = env("JSON_DIFF_SEED").unwrap_or(0x005e_ed0f_da7a);
    let mut checker = Checker::new(run);
    let mut check = |payload: &[u8]| checker.check(payload);
    let seeds: Vec<Members> = seeds
        .iter()
        .map(|s| {
            s.iter()
                .map(|(k, v)| (format!("\"{k}\""), (*v).to_string()))
                .collect()
        })
        .collect();
    let fields: Vec<String> = {
        let mut f: Vec<String> = seeds.iter().flatten().map(|(k, _)| k.clone()).collect();
        f.sort();
        f.dedup();
        f
    };

    for seed in &seeds {
        for spaced in [false, true] {
            let payload = render(seed, spaced);
            check(&payload);
            // Every truncation.
            for end in 0..payload.len() {
                check(&payload[..end]);
            }
            // What may follow, and leading whitespace.
            for trailer in TRAILERS {
                check(&[&payload[..], trailer.as_bytes()].concat());
                check(&[trailer.as_bytes(), &payload[..]].concat());
            }
        }
        byte_mutations(&render(seed, false), &mut check);

        for i in 0..seed.len() {
            let (key, value) = &seed[i];
            // Missing, and each value in its place.
            let mut m = seed.clone();
            m.remove(i);
            check(&render(&m, false));
            for v in VALUES {
                let mut m = seed.clone();
                m[i].1 = (*v).to_string();
                check(&render(&m, false));
                check(&render(&m, true));
            }
            // Duplicates: the same value, null, a bad value; before and after.
            for dup in [value.as_str(), "null", "\"other\"", "1", "[1,", "\"\\ud800\""] {
                for at in [0, seed.len()] {
                    let mut m = seed.clone();
                    m.insert(at, (key.clone(), dup.to_string()));
                    check(&render(&m, false));
                    // Truncated right after the duplicate key.
                    let cut = render(&m, false);
                    if let Some(p) = find_last(&cut, key.as_bytes()) {
                        check(&cut[..p + key.len()]);
                    }
                }
            }
            // The key written with an escape, alone and as a duplicate.
            let name = key.trim_matches('"');
            let mut m = seed.clone();
            m[i].0 = escaped_key(name);
            check(&render(&m, false));
            m.push((key.clone(), value.clone()));
            check(&render(&m, false));
        }

        // Extra members of every shape, at the start, middle and end.
        for v in VALUES {
            for at in [0, seed.len() / 2, seed.len()] {
                let mut m = seed.clone();
                m.insert(at, ("\"extra\"".into(), (*v).to_string()));
                check(&render(&m, false));
            }
        }
        for k in KEYS {
            let mut m = seed.clone();
            m.push(((*k).to_string(), "1".into()));
            check(&render(&m, false));
            m.push(((*k).to_string(), "2".into()));
            check(&render(&m, false));
        }
        // Deep nesting in an ignored member.
        for depth in [10, 127, 128, 129, 1000] {
            for (open, close) in [("[", "]"), ("{\"k\":[", "]}")] {
                let nested = format!("{}{}", open.repeat(depth), close.repeat(depth));
                let mut m = seed.clone();
                m.push(("\"deep\"".into(), nested.clone()));
                check(&render(&m, false));
                // And unclosed by one bracket.
                if let Some(last) = m.last_mut() {
                    last.1.pop();
                }
                check(&render(&m, false));
            }
        }
        // The seed's values as an array; the whole record nested.
        let values: Vec<&str> = seed.iter().map(|(_, v)| v.as_str()).collect();
        check(format!("[{}]", values.join(",")).as_bytes());
        let inner = String::from_utf8_lossy(&render(seed, false)).into_owned();
        check(format!("{{\"record\":{inner}}}").as_bytes());
    }

    // Any value at the top level.
    for v in VALUES {
        check(v.as_bytes());
        check(format!(" {v} ").as_bytes());
    }

    // Generated records.
    let mut rng = Rng::new(seed);
    for _ in 0..random {
        let seed = rng.pick(&seeds);
        let mut m: Members = Vec::new();
        for (k, v) in seed {
            if rng.chance(92) {
                let v = if rng.chance(75) {
                    v.clone()
                } else {
                    random_value(&mut rng, 2)
                };
                m.push((k.clone(), v));
            }
        }
        for _ in 0..rng.below(4) {
            let key = if rng.chance(70) {
                "\"extra\"".to_string()
            } else {
                (*rng.pick(KEYS)).to_string()
            };
            let at = rng.below(m.len() + 1);
            m.insert(at, (key, random_value(&mut rng, 3)));
        }
        if rng.chance(8) {
            let field = rng.pick(&fields).clone();
            let at = rng.below(m.len() + 1);
            m.insert(at, (field, random_value(&mut rng, 1)));
        }
        for _ in 0..m.len() {
            let (a, b) = (rng.below(m.len()), rng.below(m.len()));
            if rng.chance(20) {
                m.swap(a, b);
            }
        }
        let mut payload = render_random(&m, &mut rng);
        if rng.chance(50) {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(payload.len() + 1);
                let byte = if rng.chance(70) {
                    *rng.pick(BYTES)
                } else {
                    rng.bits() as u8
                };
                match rng.below(3) {
                    0 if at < payload.len() => payload[at] = byte,
                    1 if at < payload.len() => {
                        payload.remove(at);
                    }
                    _ => payload.insert(at, byte),
                }
            }
        }
        if rng.chance(5) {
            let end = rng.below(payload.len() + 1);
            payload.truncate(end);
        }
        if rng.chance(5) {
            payload.extend_from_slice(rng.pick(TRAILERS).as_bytes());
        }
        check(&payload);
    }
    checker.counts()
}

/// The start of the last occurrence of `needle` in `haystack`.
fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}
