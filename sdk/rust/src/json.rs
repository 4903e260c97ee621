//! A fast reader of the top-level members of one JSON object, for
//! deserializers of records written as flat JSON objects.
//!
//! `serde_json` with a derived struct is the easy way to read such records,
//! but in Wasm its string handling (UTF-8 validation of every string, byte
//! loops, the visitor machinery) dominates a deserializer's time, and every
//! loop iteration also pays the runtime's interruption check. This reader
//! does less work per byte:
//!
//! - the whole payload is validated as UTF-8 once, up front, so strings need
//!   no validation of their own;
//! - strings are scanned for `"`, `\` and control characters eight bytes at a
//!   time, and digits checked and converted eight at a time; the first
//!   sixteen bytes of each without a loop, as in Wasm every loop iteration
//!   costs an interruption check;
//! - nothing is allocated for an accepted record unless a string contains
//!   escapes (or an ignored value nests more than 64 levels deep);
//! - ignored members are skipped but still fully checked as JSON, so corrupt
//!   input is rejected wherever it is.
//!
//! It is a pull reader: [`Object::next_key`] gives each key, then the caller
//! reads the value ([`Object::field`], [`Object::value`]) or skips it
//! ([`Object::skip_value`]), and [`Object::finish`] checks what follows the
//! object. Errors therefore surface in document order, as with `serde_json`:
//! a duplicate key is reported before its value is read, a mistyped value
//! before anything after it. A reader written as below gives the same
//! verdict as `serde_json::from_slice` on the equivalent
//! `#[derive(Deserialize)]` struct — [`ErrorKind::Decode`] for malformed
//! JSON, [`ErrorKind::Invalid`] for well-formed JSON with missing, null,
//! mistyped or duplicate fields (the guests' `json-diff` tests check this
//! on many thousands of inputs):
//!
//! ```
//! use std::borrow::Cow;
//! use wafer_sdk::json::{self, Value};
//! use wafer_sdk::Error;
//!
//! #[derive(Debug)]
//! struct Click<'a> {
//!     user_id: Cow<'a, str>,
//!     item_id: Option<Cow<'a, str>>,
//!     event_time_ms: i64,
//! }
//!
//! fn click(payload: &[u8]) -> Result<Click<'_>, Error> {
//!     let mut obj = json::Object::parse(payload)?;
//!     let (mut user_id, mut item_id, mut event_time_ms) = (None, None, None);
//!     while let Some(key) = obj.next_key()? {
//!         match &*key {
//!             "user_id" => obj.field(&mut user_id, Value::str)?,
//!             "item_id" => obj.field(&mut item_id, Value::opt_str)?,
//!             "event_time_ms" => obj.field(&mut event_time_ms, Value::i64)?,
//!             _ => obj.skip_value()?,
//!         }
//!     }
//!     // Missing fields are checked before what follows the object, as
//!     // serde_json does.
//!     let click = Click {
//!         user_id: json::required(user_id, "user_id")?,
//!         item_id: item_id.flatten(),
//!         event_time_ms: json::required(event_time_ms, "event_time_ms")?,
//!     };
//!     obj.finish()?;
//!     Ok(click)
//! }
//!
//! let c = click(br#"{"user_id":"u1","event_time_ms":17,"extra":[1,{"a":null}]}"#).unwrap();
//! assert_eq!((&*c.user_id, c.item_id, c.event_time_ms), ("u1", None, 17));
//! assert_eq!(click(br#"{"user_id":"u1"}"#).unwrap_err().message, "missing field `event_time_ms`");
//! ```
//!
//! Where it deliberately differs from `serde_json`:
//!
//! - A payload that is not UTF-8 is a decode error, wherever the bad bytes
//!   are. `serde_json` skips the value of an ignored member without checking
//!   its UTF-8, so it accepts such payloads; RFC 8259 requires JSON exchanged
//!   between systems to be UTF-8, and checking the whole payload at once is
//!   what makes string reading cheap.
//! - The top level must be an object. `serde_json` also reads a struct from
//!   an array of its field values in declaration order
//!   (`["u1", null, 17]`); here an array is an invalid record.
//! - Numbers are converted to `f64` with correct rounding (as `serde_json`
//!   does with its `float_roundtrip` feature; without it, numbers with more
//!   than about 15 significant digits or large exponents can come out one
//!   unit in the last place off, and the out-of-range limit near `f64::MAX`
//!   is inexact).

use std::borrow::Cow;
use std::fmt;

use crate::Error;
#[cfg(doc)]
use crate::ErrorKind;

/// Reads the members of one JSON object, in order. See the [module
/// documentation](self) for the protocol.
#[derive(Debug)]
pub struct Object<'a> {
    /// The whole payload, checked as UTF-8.
    text: &'a str,
    /// The next byte to read.
    pos: usize,
    state: State,
    /// The last key read, as written between its quotes (escapes undecoded):
    /// named in error messages.
    key: &'a str,
}

/// Where an [`Object`] is in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After `{`: a key or `}` comes next.
    First,
    /// A key was read; its `:` and value come next.
    Key,
    /// The value just returned is an array or object, not yet read past:
    /// `pos` is at its opening bracket.
    Container,
    /// After a member: `,` or `}` comes next.
    Member,
    /// The closing `}` was read.
    End,
}

/// A string as written between its quotes.
#[derive(Debug, Clone, Copy)]
struct RawStr<'a> {
    raw: &'a str,
    /// Whether `raw` contains escapes (`\`), so needs decoding.
    escaped: bool,
    /// Offset of `raw` in the payload, for error messages.
    at: usize,
}

impl<'a> RawStr<'a> {
    #[inline]
    fn decode(self) -> Result<Cow<'a, str>, Error> {
        if self.escaped {
            unescape(self.raw, self.at).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(self.raw))
        }
    }
}

/// The kind of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        })
    }
}

/// One member's value, checked as JSON syntax, with typed accessors. A
/// mistyped value is an [`ErrorKind::Invalid`]
/// error naming the member.
///
/// Arrays and objects are not read by the accessors (none accepts them);
/// the [`Object`] checks and skips them when it moves on.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    kind: Kind,
    /// Strings: the text between the quotes; numbers and literals: their
    /// text; arrays and objects: the opening bracket.
    text: RawStr<'a>,
    /// Whether this is a number without fraction or exponent and of at most
    /// 19 digits (so it fits a `u64`); `int` is then its magnitude, computed
    /// while scanning it. (Not an `Option`: a smaller `Value` stays in
    /// registers.)
    integer: bool,
    int: u64,
    /// The member's key as written, for error messages.
    key: &'a str,
}

impl<'a> Value<'a> {
    /// The kind of the value.
    #[inline]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the value is `null`.
    #[inline]
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }

    /// A string, borrowed from the payload unless it contains escapes.
    /// `\uXXXX` escapes are decoded, surrogate pairs included; a lone
    /// surrogate is a decode error.
    #[inline]
    pub fn str(self) -> Result<Cow<'a, str>, Error> {
        match self.kind {
            Kind::String => self.text.decode(),
            _ => Err(self.type_error("a string")),
        }
    }

    /// A string or `null`.
    #[inline]
    pub fn opt_str(self) -> Result<Option<Cow<'a, str>>, Error> {
        self.or_null(Self::str)
    }

    /// An integer within the range of `i64`. Numbers with a fraction or an
    /// exponent (`1.0`, `1e3`) and `-0` are not integers, as with
    /// `serde_json`.
    #[inline]
    pub fn i64(self) -> Result<i64, Error> {
        if self.kind != Kind::Number {
            return Err(self.type_error("an integer"));
        }
        let magnitude = self.int;
        if !self.integer {
            return Err(if self.text.raw.contains(['.', 'e', 'E']) {
                self.not_an_integer()
            } else {
                // More than 19 digits: beyond even u64.
                self.out_of_range()
            });
        }
        if !self.text.raw.starts_with('-') {
            return i64::try_from(magnitude).map_err(|_| self.out_of_range());
        }
        if magnitude == 0 {
            // serde_json reads `-0` as the float -0.0, which no integer
            // field accepts; keep that verdict.
            return Err(self.not_an_integer());
        }
        0i64.checked_sub_unsigned(magnitude)
            .ok_or_else(|| self.out_of_range())
    }

    /// An integer or `null`.
    #[inline]
    pub fn opt_i64(self) -> Result<Option<i64>, Error> {
        self.or_null(Self::i64)
    }

    /// Any number, converted with correct rounding. A number too large for
    /// `f64` is a decode error, as with `serde_json`.
    #[inline]
    pub fn f64(self) -> Result<f64, Error> {
        if self.kind != Kind::Number {
            return Err(self.type_error("a number"));
        }
        self.number()
    }

    /// A number or `null`.
    #[inline]
    pub fn opt_f64(self) -> Result<Option<f64>, Error> {
        self.or_null(Self::f64)
    }

    /// `true` or `false`.
    #[inline]
    pub fn bool(self) -> Result<bool, Error> {
        match self.kind {
            Kind::Bool => Ok(self.text.raw == "true"),
            _ => Err(self.type_error("a boolean")),
        }
    }

    /// A boolean or `null`.
    #[inline]
    pub fn opt_bool(self) -> Result<Option<bool>, Error> {
        self.or_null(Self::bool)
    }

    /// `None` for `null`, else what `read` makes of the value.
    #[inline(always)]
    fn or_null<T>(self, read: impl FnOnce(Self) -> Result<T, Error>) -> Result<Option<T>, Error> {
        if self.is_null() {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// The number as `f64`, or a decode error if it is out of range.
    fn number(&self) -> Result<f64, Error> {
        match self.text.raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(syntax(self.text.at, "number out of range")),
        }
    }

    /// Checks what `serde_json` checks of a value before it reports the
    /// value's type as wrong: a string's escapes decode, a number fits an
    /// `f64`. Failing those is a decode error, which takes precedence.
    fn check_scalar(&self) -> Result<(), Error> {
        match self.kind {
            Kind::String => self.text.decode().map(drop),
            Kind::Number => self.number().map(drop),
            _ => Ok(()),
        }
    }

    /// An invalid-record error with `message`, unless the value fails
    /// [`Self::check_scalar`]: that decode error is reported instead.
    #[cold]
    fn invalid(&self, message: impl FnOnce() -> String) -> Error {
        match self.check_scalar() {
            Err(e) => e,
            Ok(()) => Error::invalid(message()),
        }
    }

    #[cold]
    fn type_error(&self, expected: &str) -> Error {
        self.invalid(|| {
            format!(
                "invalid type for `{}`: expected {expected}, found {}",
                key_name(self.key),
                self.kind
            )
        })
    }

    #[cold]
    fn not_an_integer(&self) -> Error {
        self.invalid(|| {
            format!(
                "invalid type for `{}`: expected an integer, found {}",
                key_name(self.key),
                excerpt(self.text.raw)
            )
        })
    }

    #[cold]
    fn out_of_range(&self) -> Error {
        self.invalid(|| {
            format!(
                "invalid value for `{}`: {} is out of the range of a 64-bit integer",
                key_name(self.key),
                excerpt(self.text.raw)
            )
        })
    }
}

/// A key as written, for an error message: decoded if possible.
#[cold]
fn key_name(raw: &str) -> Cow<'_, str> {
    match unescape(raw, 0) {
        Ok(name) => Cow::Owned(name),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// A number's text for an error message, cut short if it is long (a
/// payload can hold a megabyte of digits).
fn excerpt(number: &str) -> Cow<'_, str> {
    match number.get(..40) {
        Some(head) if number.len() > 40 => Cow::Owned(format!("{head}…")),
        _ => Cow::Borrowed(number),
    }
}

/// `slot`'s value, or an [`ErrorKind::Invalid`]
/// "missing field" error naming `name`.
#[inline]
pub fn required<T>(slot: Option<T>, name: &str) -> Result<T, Error> {
    slot.ok_or_else(|| Error::invalid(format!("missing field `{name}`")))
}

impl<'a> Object<'a> {
    /// Starts reading `payload`, which must be one JSON object with nothing
    /// but whitespace around it. Fails with a decode error if the payload is
    /// not UTF-8 or not JSON, and with an invalid-record error if it is a
    /// JSON value other than an object.
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let text = match wafer_row::str_from_utf8(payload) {
            Ok(t) => t,
            Err(e) => return Err(syntax(e.valid_up_to(), "not UTF-8")),
        };
        let mut obj = Object {
            text,
            pos: 0,
            state: State::First,
            key: "",
        };
        obj.skip_ws();
        if obj.peek() == Some(b'{') {
            obj.pos += 1;
            return Ok(obj);
        }
        let value = obj.scan_value()?;
        value.check_scalar()?;
        Err(Error::invalid(format!(
            "invalid type: expected a JSON object, found {}",
            value.kind
        )))
    }

    /// The next member's key, or `None` after the closing `}`. If the
    /// previous member's value was not read, it is skipped (and checked).
    /// Keys are borrowed from the payload unless they contain escapes.
    #[inline]
    pub fn next_key(&mut self) -> Result<Option<Cow<'a, str>>, Error> {
        match self.state {
            State::Key => self.skip_value()?,
            State::Container => {
                self.pos = skip_any(self.bytes(), self.pos)?;
                self.state = State::Member;
            }
            State::End => return Ok(None),
            State::First | State::Member => {}
        }
        self.skip_ws();
        let first = self.state == State::First;
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.state = State::End;
                return Ok(None);
            }
            Some(b'"') if first => {}
            Some(b',') if !first => {
                self.pos += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b'"') => {}
                    Some(b'}') => return Err(syntax(self.pos, "trailing comma")),
                    Some(_) => return Err(syntax(self.pos, "expected a string key")),
                    None => return Err(eof(self.pos)),
                }
            }
            Some(_) if first => return Err(syntax(self.pos, "expected a string key")),
            Some(_) => return Err(syntax(self.pos, "expected `,` or `}`")),
            None => return Err(eof(self.pos)),
        }
        let key = self.scan_string()?;
        self.key = key.raw;
        self.state = State::Key;
        key.decode().map(Some)
    }

    /// The value of the member whose key was just read. Reading a value
    /// without a key just read is a mistake of the caller's: an
    /// [`ErrorKind::Failed`] error.
    #[inline(always)]
    pub fn value(&mut self) -> Result<Value<'a>, Error> {
        self.colon()?;
        let value = self.scan_value()?;
        self.state = match value.kind {
            Kind::Array | Kind::Object => State::Container,
            _ => State::Member,
        };
        Ok(value)
    }

    /// Reads the value of the member whose key was just read into `slot`
    /// with `read` (e.g. [`Value::str`]). If `slot` is already set the key
    /// is a duplicate: an invalid-record error, reported before the value
    /// is read, as `serde_json` does.
    #[inline(always)]
    pub fn field<T>(
        &mut self,
        slot: &mut Option<T>,
        read: impl FnOnce(Value<'a>) -> Result<T, Error>,
    ) -> Result<(), Error> {
        if slot.is_some() {
            return Err(Error::invalid(format!(
                "duplicate field `{}`",
                key_name(self.key)
            )));
        }
        let value = self.value()?;
        *slot = Some(read(value)?);
        Ok(())
    }

    /// Skips the value of the member whose key was just read, checking that
    /// it is valid JSON.
    pub fn skip_value(&mut self) -> Result<(), Error> {
        self.colon()?;
        self.pos = skip_any(self.bytes(), self.pos)?;
        self.state = State::Member;
        Ok(())
    }

    /// Reads (and checks) any members left, then checks that only
    /// whitespace follows the object. Call it after checking for missing
    /// fields: `serde_json` reports those before trailing characters.
    pub fn finish(mut self) -> Result<(), Error> {
        while self.next_key()?.is_some() {}
        self.skip_ws();
        if self.pos < self.text.len() {
            return Err(syntax(self.pos, "trailing characters after the object"));
        }
        Ok(())
    }

    #[inline(always)]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// Skips whitespace. Compact JSON has none and most other JSON one
    /// space (`json.dumps`' `": "` and `", "`), so those cases are tested
    /// before any loop: in Wasm every loop costs an interruption check.
    #[inline(always)]
    fn skip_ws(&mut self) {
        // Through a local, not `&mut self.pos`: an `Object` whose address
        // is never taken can live in registers (Wasm locals).
        let mut pos = self.pos;
        ws_peek(self.bytes(), &mut pos);
        self.pos = pos;
    }

    /// `text[from..to]`; positions are always at ASCII delimiters, so
    /// char boundaries, but a slip must not panic.
    #[inline(always)]
    fn slice(&self, from: usize, to: usize) -> Result<&'a str, Error> {
        // Two one-sided slices: each checks one boundary, and they inline
        // where `get(from..to)` stays a call.
        match self.text.get(from..).and_then(|t| t.get(..to.wrapping_sub(from))) {
            Some(s) => Ok(s),
            None => Err(syntax(from, "internal error: not at a character boundary")),
        }
    }

    /// Reads the `:` after a key.
    #[inline(always)]
    fn colon(&mut self) -> Result<(), Error> {
        if self.state != State::Key {
            return Err(Error::failed(
                "json::Object: a value was read without reading its key first",
            ));
        }
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(syntax(self.pos, "expected `:`")),
            None => Err(eof(self.pos)),
        }
    }

    /// Reads a string whose opening quote is at `pos`.
    #[inline(always)]
    fn scan_string(&mut self) -> Result<RawStr<'a>, Error> {
        let start = self.pos + 1;
        let (end, escaped) = scan_string(self.bytes(), start)?;
        self.pos = end + 1;
        Ok(RawStr {
            raw: self.slice(start, end)?,
            escaped,
            at: start,
        })
    }

    /// Reads the value at `pos` (after whitespace), except that an array or
    /// object is only recognised: `pos` stays at its bracket.
    #[inline(always)]
    fn scan_value(&mut self) -> Result<Value<'a>, Error> {
        self.skip_ws();
        let bytes = self.bytes();
        let at = self.pos;
        let (kind, end) = match bytes.get(at) {
            Some(b'"') => {
                let text = self.scan_string()?;
                return Ok(Value {
                    kind: Kind::String,
                    text,
                    integer: false,
                    int: 0,
                    key: self.key,
                });
            }
            Some(b'-' | b'0'..=b'9') => {
                let (end, int) = scan_number(bytes, at)?;
                self.pos = end;
                return Ok(Value {
                    kind: Kind::Number,
                    text: RawStr {
                        raw: self.slice(at, end)?,
                        escaped: false,
                        at,
                    },
                    integer: int.is_some(),
                    int: int.unwrap_or_default(),
                    key: self.key,
                });
            }
            Some(b't') => (Kind::Bool, scan_literal(bytes, at, b"true")?),
            Some(b'f') => (Kind::Bool, scan_literal(bytes, at, b"false")?),
            Some(b'n') => (Kind::Null, scan_literal(bytes, at, b"null")?),
            Some(b'[') => (Kind::Array, at),
            Some(b'{') => (Kind::Object, at),
            Some(_) => return Err(syntax(at, "expected a value")),
            None => return Err(eof(at)),
        };
        self.pos = end;
        Ok(Value {
            kind,
            text: RawStr {
                raw: self.slice(at, end.max(at + 1))?,
                escaped: false,
                at,
            },
            integer: false,
            int: 0,
            key: self.key,
        })
    }
}

/// The end of the whitespace in `bytes` at `pos`.
#[inline(never)]
fn ws_end(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// The whitespace at `pos` skipped, then the byte there (if any).
#[inline(always)]
fn ws_peek(bytes: &[u8], pos: &mut usize) -> Option<u8> {
    match bytes.get(*pos) {
        Some(&b) if b > b' ' => return Some(b),
        Some(b' ') => {
            if let Some(&b) = bytes.get(*pos + 1).filter(|&&b| b > b' ') {
                *pos += 1;
                return Some(b);
            }
        }
        _ => {}
    }
    *pos = ws_end(bytes, *pos);
    bytes.get(*pos).copied()
}

/// Skips one value of any kind at `pos` (after whitespace), checking it;
/// returns its end. Nesting is followed with a stack of open brackets
/// rather than recursion, so deep nesting cannot overflow the stack
/// (`serde_json` sets no depth limit on values it skips either).
#[inline(never)]
fn skip_any(bytes: &[u8], mut pos: usize) -> Result<usize, Error> {
    let mut open = Brackets::default();
    loop {
        // A value.
        match ws_peek(bytes, &mut pos) {
            Some(b'"') => pos = scan_string(bytes, pos + 1)?.0 + 1,
            Some(b'-' | b'0'..=b'9') => pos = scan_number(bytes, pos)?.0,
            Some(b't') => pos = scan_literal(bytes, pos, b"true")?,
            Some(b'f') => pos = scan_literal(bytes, pos, b"false")?,
            Some(b'n') => pos = scan_literal(bytes, pos, b"null")?,
            Some(b'[') => {
                pos += 1;
                if ws_peek(bytes, &mut pos) == Some(b']') {
                    pos += 1;
                } else {
                    open.push(false);
                    continue;
                }
            }
            Some(b'{') => {
                pos += 1;
                if ws_peek(bytes, &mut pos) == Some(b'}') {
                    pos += 1;
                } else {
                    open.push(true);
                    pos = skip_member_key(bytes, pos)?;
                    continue;
                }
            }
            Some(_) => return Err(syntax(pos, "expected a value")),
            None => return Err(eof(pos)),
        }
        // After a value: close brackets until a `,` starts the next one.
        loop {
            let Some(in_object) = open.top() else {
                return Ok(pos);
            };
            match ws_peek(bytes, &mut pos) {
                Some(b',') => {
                    pos += 1;
                    if in_object {
                        ws_peek(bytes, &mut pos);
                        pos = skip_member_key(bytes, pos)?;
                    }
                    break;
                }
                Some(b']') if !in_object => {
                    pos += 1;
                    open.pop();
                }
                Some(b'}') if in_object => {
                    pos += 1;
                    open.pop();
                }
                Some(_) if in_object => return Err(syntax(pos, "expected `,` or `}`")),
                Some(_) => return Err(syntax(pos, "expected `,` or `]`")),
                None => return Err(eof(pos)),
            }
        }
    }
}

/// Skips `"key":` inside a skipped object, at `pos`; returns its end.
fn skip_member_key(bytes: &[u8], mut pos: usize) -> Result<usize, Error> {
    match bytes.get(pos) {
        Some(b'"') => {}
        Some(_) => return Err(syntax(pos, "expected a string key")),
        None => return Err(eof(pos)),
    }
    pos = scan_string(bytes, pos + 1)?.0 + 1;
    match ws_peek(bytes, &mut pos) {
        Some(b':') => Ok(pos + 1),
        Some(_) => Err(syntax(pos, "expected `:`")),
        None => Err(eof(pos)),
    }
}

/// The open brackets of a value being skipped: a stack of bits, true for
/// `{`. The first 64 levels live inline; deeper ones (rare) on the heap.
#[derive(Default)]
struct Brackets {
    depth: usize,
    inline: u64,
    deeper: Vec<u64>,
}

impl Brackets {
    fn push(&mut self, object: bool) {
        let bit = self.depth % 64;
        let word = match self.depth / 64 {
            0 => &mut self.inline,
            n => {
                if self.deeper.len() < n {
                    self.deeper.push(0);
                }
                // Depth grows one level at a time, so word `n - 1` exists
                // now; were it missing, the level would not be pushed and
                // its closing bracket would be an error.
                match self.deeper.get_mut(n - 1) {
                    Some(w) => w,
                    None => return,
                }
            }
        };
        *word = (*word & !(1 << bit)) | (u64::from(object) << bit);
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        let word = match top / 64 {
            0 => self.inline,
            n => *self.deeper.get(n - 1)?,
        };
        Some((word >> (top % 64)) & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// A decode error at byte `at` of the payload.
#[cold]
fn syntax(at: usize, what: &str) -> Error {
    Error::decode(format!("invalid JSON at byte {at}: {what}"))
}

#[cold]
fn eof(at: usize) -> Error {
    syntax(at, "unexpected end of input")
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = ONES << 7;

/// The eight bytes of `bytes` from `i` (`i <= bytes.len()`) as a
/// little-endian word; past the end, bytes read as `pad`. Near the end
/// this shifts the input's last word rather than looping over the few
/// bytes left: no loop, so no interruption check in Wasm.
#[inline(always)]
fn load(bytes: &[u8], i: usize, pad: u8) -> u64 {
    if let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        return u64::from_le_bytes(*chunk);
    }
    let len = bytes.len();
    let pads = ONES * u64::from(pad);
    match len
        .checked_sub(8)
        .and_then(|last| bytes.get(last..)?.first_chunk::<8>())
    {
        // `skip` (1..=8) bytes of the last word come before `i`.
        Some(last) if i <= len => {
            let skip = 8 - (len - i);
            let tail = if skip < 8 {
                u64::from_le_bytes(*last) >> (8 * skip)
            } else {
                0
            };
            tail | (pads << (64 - 8 * skip))
        }
        // Inputs of less than eight bytes.
        _ => {
            let mut word = [pad; 8];
            for (w, b) in word.iter_mut().zip(bytes.get(i..).unwrap_or_default()) {
                *w = *b;
            }
            u64::from_le_bytes(word)
        }
    }
}

/// The high bit of each byte of `w` that is `"`, `\` or a control
/// character. A byte of `x` is zero iff its byte of `x - ONES & !x` has the
/// high bit set, exactly for the lowest such byte (a borrow can only mark
/// bytes above a real match); likewise `w - SPACES & !w` marks bytes below
/// 0x20 (`!w` excludes bytes >= 0x80).
#[inline(always)]
fn specials(w: u64) -> u64 {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    let quote = w ^ QUOTES;
    let backslash = w ^ BACKSLASHES;
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (w.wrapping_sub(SPACES) & !w))
        & HIGH
}

/// The index of the first `"`, `\` or control character in `bytes` at or
/// after `i`, or `bytes.len()`. Looks at eight bytes per step (SWAR), the
/// first sixteen without a loop: in Wasm every loop iteration costs an
/// interruption check besides its work, and most keys and many values are
/// shorter than that.
#[inline(always)]
fn find_special(bytes: &[u8], i: usize) -> usize {
    // Past the end the padding (NUL) is a control character, so a hit is
    // always found; callers see an index at the end as end of input.
    let first = specials(load(bytes, i, 0));
    if first != 0 {
        return i + (first.trailing_zeros() / 8) as usize;
    }
    let second = specials(load(bytes, i + 8, 0));
    if second != 0 {
        return i + 8 + (second.trailing_zeros() / 8) as usize;
    }
    find_special_loop(bytes, i + 16)
}

/// [`find_special`] past the first sixteen bytes, for long strings.
#[inline(never)]
fn find_special_loop(bytes: &[u8], mut i: usize) -> usize {
    loop {
        // Little-endian loads: the lowest byte is the first one.
        let a = specials(load(bytes, i, 0));
        if a != 0 {
            return (i + (a.trailing_zeros() / 8) as usize).min(bytes.len());
        }
        let b = specials(load(bytes, i + 8, 0));
        if b != 0 {
            return (i + 8 + (b.trailing_zeros() / 8) as usize).min(bytes.len());
        }
        i += 16;
    }
}

/// Scans the body of a string starting at `i` (after the opening quote);
/// returns the index of the closing quote and whether there were escapes.
/// Checks escapes' syntax; whether `\u` escapes pair up is checked when the
/// string is decoded, as `serde_json` checks it only for strings it keeps.
#[inline(always)]
fn scan_string(bytes: &[u8], i: usize) -> Result<(usize, bool), Error> {
    let end = find_special(bytes, i);
    if bytes.get(end) == Some(&b'"') {
        return Ok((end, false));
    }
    scan_escaped_string(bytes, end)
}

/// [`scan_string`] from its first escape (or error) at `i`: rare, so out
/// of line, keeping the common path small enough to inline.
#[inline(never)]
fn scan_escaped_string(bytes: &[u8], mut i: usize) -> Result<(usize, bool), Error> {
    loop {
        match bytes.get(i) {
            Some(b'"') => return Ok((i, true)),
            Some(b'\\') => {
                i = match bytes.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i + 2,
                    Some(b'u') => match hex4(bytes, i + 2) {
                        Some(_) => i + 6,
                        None => return Err(bad_hex(bytes, i + 2)),
                    },
                    Some(_) => return Err(syntax(i, "invalid escape")),
                    None => return Err(eof(i + 1)),
                };
            }
            Some(_) => return Err(syntax(i, "control character in a string")),
            None => return Err(eof(i)),
        }
        i = find_special(bytes, i);
    }
}

/// The value of the four hex digits at `i`, if there are four.
fn hex4(bytes: &[u8], i: usize) -> Option<u16> {
    let digits = bytes.get(i..)?.first_chunk::<4>()?;
    let mut n = 0u16;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        n = n << 4 | u16::from(v);
    }
    Some(n)
}

#[cold]
fn bad_hex(bytes: &[u8], i: usize) -> Error {
    if bytes.len() < i + 4 {
        eof(bytes.len())
    } else {
        syntax(i, "invalid \\u escape")
    }
}

/// Decodes the escapes of a string body `raw` (already scanned) found at
/// byte `at` of the payload.
#[cold]
fn unescape(raw: &str, at: usize) -> Result<String, Error> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(n) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        let slash = i + n;
        match raw.get(i..slash) {
            Some(s) => out.push_str(s),
            None => return Err(syntax(at + i, "internal error: not at a character boundary")),
        }
        let c = match bytes.get(slash + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let (c, len) = unicode_escape(bytes, slash, at)?;
                out.push(c);
                i = slash + len;
                continue;
            }
            _ => return Err(syntax(at + slash, "invalid escape")),
        };
        out.push(c);
        i = slash + 2;
    }
    match raw.get(i..) {
        Some(s) => out.push_str(s),
        None => return Err(syntax(at + i, "internal error: not at a character boundary")),
    }
    Ok(out)
}

/// Decodes the `\u` escape at `slash` (and the low surrogate's escape after
/// it, for a pair); returns the character and the escapes' length.
fn unicode_escape(bytes: &[u8], slash: usize, at: usize) -> Result<(char, usize), Error> {
    let lone = || syntax(at + slash, "lone surrogate in a \\u escape");
    let Some(high) = hex4(bytes, slash + 2) else {
        return Err(bad_hex(bytes, slash + 2));
    };
    let (code, len) = match high {
        0xDC00..=0xDFFF => return Err(lone()),
        0xD800..=0xDBFF => {
            if bytes.get(slash + 6..slash + 8) != Some(b"\\u") {
                return Err(lone());
            }
            match hex4(bytes, slash + 8) {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let code = 0x1_0000 + ((u32::from(high) - 0xD800) << 10 | (u32::from(low) - 0xDC00));
                    (code, 12)
                }
                Some(_) => return Err(lone()),
                None => return Err(bad_hex(bytes, slash + 8)),
            }
        }
        _ => (u32::from(high), 6),
    };
    match char::from_u32(code) {
        Some(c) => Ok((c, len)),
        None => Err(lone()),
    }
}

/// Scans a number at `i` per JSON's grammar (`-`? int frac? exp?, no
/// leading zeros); returns its end and, for an integer of at most 19
/// digits, its magnitude.
#[inline]
fn scan_number(bytes: &[u8], mut i: usize) -> Result<(usize, Option<u64>), Error> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let (end, magnitude) = digits(bytes, i);
    let int_digits = end - i;
    match bytes.get(i) {
        // `serde_json` rejects the digit after a leading zero as part of
        // the number (not as the next token): same error kind wherever the
        // number is.
        Some(b'0') if int_digits > 1 => return Err(syntax(i + 1, "invalid number: leading zero")),
        Some(b'0'..=b'9') => i = end,
        Some(_) => return Err(syntax(i, "invalid number")),
        None => return Err(eof(i)),
    }
    if let Some(b'.' | b'e' | b'E') = bytes.get(i) {
        return Ok((scan_fraction_exponent(bytes, i)?, None));
    }
    Ok((i, (int_digits <= 19).then_some(magnitude)))
}

/// The end of a number's fraction and exponent, either optional, at `i`.
#[inline(never)]
fn scan_fraction_exponent(bytes: &[u8], mut i: usize) -> Result<usize, Error> {
    if bytes.get(i) == Some(&b'.') {
        let (end, _) = digits(bytes, i + 1);
        if end == i + 1 {
            return Err(number_needs_digit(bytes, end));
        }
        i = end;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        let (end, _) = digits(bytes, i);
        if end == i {
            return Err(number_needs_digit(bytes, end));
        }
        i = end;
    }
    Ok(i)
}

/// The end of the run of ASCII digits at `i` (`i <= bytes.len()`), and
/// their value (wrapped modulo 2^64 if there are more than 19). Eight
/// digits per step, both to check and to convert, the first sixteen without
/// a loop: a timestamp takes two steps instead of thirteen iterations.
#[inline(always)]
fn digits(bytes: &[u8], i: usize) -> (usize, u64) {
    let (n, high) = digit_word(bytes, i);
    if n < 8 {
        return (i + n, high);
    }
    let (m, low) = digit_word(bytes, i + 8);
    let value = high.wrapping_mul(POW10[m]).wrapping_add(low);
    if m < 8 {
        return (i + 8 + m, value);
    }
    digits_loop(bytes, i + 16, value)
}

/// [`digits`] past the first sixteen: `value` is theirs.
#[inline(never)]
fn digits_loop(bytes: &[u8], mut i: usize, mut value: u64) -> (usize, u64) {
    loop {
        let (n, low) = digit_word(bytes, i);
        value = value.wrapping_mul(POW10[n]).wrapping_add(low);
        i += n;
        if n < 8 {
            return (i, value);
        }
    }
}

/// How many of the eight bytes at `i` are digits before the first one that
/// is not (0..=8), and the value of those digits.
#[inline(always)]
fn digit_word(bytes: &[u8], i: usize) -> (usize, u64) {
    // Digits become bytes 0..=9; anything else (the padding past the end
    // included) a byte of 10 or more.
    let t = load(bytes, i, b'x') ^ (ONES * u64::from(b'0'));
    // The high bit of each byte of `t` that is not below 10 (adding 0x76 to
    // the low seven bits cannot carry into the next byte).
    let not_digits = (((t & !HIGH).wrapping_add(ONES * 0x76)) | t) & HIGH;
    // Little-endian load: the first bytes are the low ones.
    let n = (not_digits.trailing_zeros() / 8) as usize;
    // The `n` digits moved to the top, as if after leading zeros (none
    // left when `n` is 0).
    let top = t.checked_shl(64 - 8 * n as u32).unwrap_or(0);
    (n, eight_digits(top))
}

/// 10^n for n in 0..=8.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The number written by eight digit values 0..=9 in the bytes of `t`, the
/// first (most significant) in the lowest byte: adjacent digits are paired,
/// then pairs combined by two multiplications.
#[inline]
fn eight_digits(t: u64) -> u64 {
    const LOW: u64 = 0x0000_00ff_0000_00ff;
    // Byte 2k of `pairs` is 10 * digit(2k) + digit(2k + 1), at most 99.
    let pairs = t.wrapping_mul(10).wrapping_add(t >> 8);
    // Bytes 0 and 4 hold pairs 0 and 2, bytes 2 and 6 pairs 1 and 3; each
    // multiplication puts its two pairs' weighted sum in the high half.
    let first = (pairs & LOW).wrapping_mul(100 + (1_000_000 << 32));
    let second = ((pairs >> 16) & LOW).wrapping_mul(1 + (10_000 << 32));
    first.wrapping_add(second) >> 32
}

#[cold]
fn number_needs_digit(bytes: &[u8], i: usize) -> Error {
    if i < bytes.len() {
        syntax(i, "invalid number: expected a digit")
    } else {
        eof(i)
    }
}

/// Checks the literal `lit` at `i`; returns its end.
#[inline]
fn scan_literal(bytes: &[u8], i: usize, lit: &[u8]) -> Result<usize, Error> {
    // `true`, `null` and `false`: the first four bytes compared as one
    // word (a slice comparison would be a byte loop in Wasm).
    let head = |b: &[u8]| b.first_chunk::<4>().map(|h| u32::from_le_bytes(*h));
    let matches = bytes
        .get(i..)
        .and_then(head)
        .is_some_and(|h| Some(h) == head(lit))
        && match lit.get(4) {
            Some(last) => bytes.get(i + 4) == Some(last),
            None => true,
        };
    if matches {
        return Ok(i + lit.len());
    }
    if bytes.len() < i + lit.len() && bytes.get(i..).is_some_and(|rest| lit.starts_with(rest)) {
        Err(eof(bytes.len()))
    } else {
        Err(syntax(i, "invalid literal"))
    }
}

#[cfg(test)]
mod tests;
