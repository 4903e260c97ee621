//! The wafer row format: how records cross the host↔guest boundary and move
//! between the host's stages.
//!
//! A row is a flat byte string described by a [`Schema`] that travels out of
//! band (a deserializer declares it once). For a schema of `n` fields a row is:
//!
//! ```text
//! validity  ceil(n/8) bytes    bit i (LSB first) set = field i is present
//! slots     n × 8 bytes        little endian:
//!                                int   → i64
//!                                float → f64 bits
//!                                bool  → 0 or 1
//!                                str, bytes → u32 offset from row start, u32 length
//!                              an absent field's slot is all zeroes
//! data      variable           the bytes of str and bytes fields, in field order
//! ```
//!
//! Any field is reached in O(1) without parsing the others, which is what lets
//! the host read a record's key and event time without calling the guest, and
//! a batch of rows is one buffer plus end offsets (one copy per batch at the
//! boundary). Rows written by [`RowWriter`] in field order are canonical: two
//! rows with equal values have equal bytes, so a row of the key fields serves
//! as the key itself.
//!
//! Rows from a guest are untrusted: [`validate`] checks one against its schema
//! once (bounds, UTF-8, required fields), after which [`Row`] reads are cheap.
//! `FORMAT.md` next to this crate restates the layout for SDK authors in other
//! languages.

use std::fmt;

mod utf8;
pub use utf8::{is_ascii, str_from_utf8};

/// The type of one field of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// UTF-8 text.
    Str,
    /// Signed 64-bit integer.
    Int,
    /// 64-bit IEEE float.
    Float,
    /// Boolean.
    Bool,
    /// Opaque bytes.
    Bytes,
}

impl FieldType {
    /// The name used in job files and messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "str",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Bytes => "bytes",
        }
    }

    /// Whether values of this type live in the row's data section.
    pub fn is_variable(self) -> bool {
        matches!(self, FieldType::Str | FieldType::Bytes)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One field of a schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// The field's type.
    pub ty: FieldType,
    /// Whether the field may be absent.
    pub nullable: bool,
}

impl Field {
    /// A field that must be present.
    pub fn required(name: impl Into<String>, ty: FieldType) -> Self {
        Field {
            name: name.into(),
            ty,
            nullable: false,
        }
    }

    /// A field that may be absent.
    pub fn optional(name: impl Into<String>, ty: FieldType) -> Self {
        Field {
            name: name.into(),
            ty,
            nullable: true,
        }
    }
}

/// The shape of a stream of rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schema {
    fields: Vec<Field>,
    event_time: Option<usize>,
}

/// A schema that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// Two fields share a name.
    DuplicateField(String),
    /// The event-time field is not in the schema.
    UnknownEventTime(String),
    /// The event-time field is not an `int`.
    EventTimeNotInt(String, FieldType),
    /// A field has an empty name.
    EmptyName,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::DuplicateField(n) => write!(f, "field `{n}` is declared twice"),
            SchemaError::UnknownEventTime(n) => {
                write!(f, "event-time field `{n}` is not a field of the schema")
            }
            SchemaError::EventTimeNotInt(n, t) => {
                write!(f, "event-time field `{n}` must be an int, not {t}")
            }
            SchemaError::EmptyName => write!(f, "a field has an empty name"),
        }
    }
}

impl std::error::Error for SchemaError {}

impl Schema {
    /// Builds a schema; `event_time` names the int field holding event time.
    pub fn new(fields: Vec<Field>, event_time: Option<&str>) -> Result<Self, SchemaError> {
        for (i, f) in fields.iter().enumerate() {
            if f.name.is_empty() {
                return Err(SchemaError::EmptyName);
            }
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(SchemaError::DuplicateField(f.name.clone()));
            }
        }
        let event_time = match event_time {
            None => None,
            Some(name) => {
                let idx = fields
                    .iter()
                    .position(|f| f.name == name)
                    .ok_or_else(|| SchemaError::UnknownEventTime(name.to_string()))?;
                if fields[idx].ty != FieldType::Int {
                    return Err(SchemaError::EventTimeNotInt(name.to_string(), fields[idx].ty));
                }
                Some(idx)
            }
        };
        Ok(Schema { fields, event_time })
    }

    /// The fields, in slot order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the schema has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Index of the event-time field, if the schema has one.
    pub fn event_time(&self) -> Option<usize> {
        self.event_time
    }

    /// Index of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field at `idx`.
    pub fn field(&self, idx: usize) -> &Field {
        &self.fields[idx]
    }

    /// Size of the fixed part of a row (validity bitmap and slots).
    pub fn fixed_len(&self) -> usize {
        fixed_len(self.fields.len())
    }
}

/// Size of the fixed part (validity bitmap and slots) of a row of `n` fields.
pub const fn fixed_len(n: usize) -> usize {
    n.div_ceil(8) + n * 8
}

/// Writes one row into a buffer that may already hold other rows.
///
/// Fields start absent; set each present one. String and byte fields should be
/// set in field order for the row to be canonical.
pub struct RowWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    n: usize,
}

impl<'a> RowWriter<'a> {
    /// Starts a row of `n` fields at the end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>, n: usize) -> Self {
        let start = buf.len();
        // Zeroed in fixed 64-byte blocks, then cut back: a block is a few
        // plain stores, while in a Wasm guest a `resize` becomes a
        // `memory.fill` that the runtime runs out of line, once per row.
        let fixed = fixed_len(n);
        // One block without a loop for up to 7 fields: in a guest every
        // loop header is also an epoch-deadline check.
        buf.extend_from_slice(&[0u8; 64]);
        while buf.len() < start + fixed {
            buf.extend_from_slice(&[0u8; 64]);
        }
        buf.truncate(start + fixed);
        RowWriter { buf, start, n }
    }

    #[inline]
    fn mark(&mut self, i: usize) {
        debug_assert!(i < self.n, "field index out of range");
        self.buf[self.start + i / 8] |= 1 << (i % 8);
    }

    #[inline]
    fn slot(&mut self, i: usize, v: [u8; 8]) {
        let at = self.start + self.n.div_ceil(8) + i * 8;
        self.buf[at..at + 8].copy_from_slice(&v);
        self.mark(i);
    }

    /// Sets an int field.
    #[inline]
    pub fn int(&mut self, i: usize, v: i64) -> &mut Self {
        self.slot(i, v.to_le_bytes());
        self
    }

    /// Sets a float field.
    #[inline]
    pub fn float(&mut self, i: usize, v: f64) -> &mut Self {
        self.slot(i, v.to_bits().to_le_bytes());
        self
    }

    /// Sets a bool field.
    #[inline]
    pub fn bool(&mut self, i: usize, v: bool) -> &mut Self {
        self.slot(i, u64::from(v).to_le_bytes());
        self
    }

    /// Sets a str field.
    #[inline]
    pub fn str(&mut self, i: usize, v: &str) -> &mut Self {
        self.bytes(i, v.as_bytes())
    }

    /// Sets a bytes field (or a str field from bytes known to be UTF-8).
    #[inline]
    pub fn bytes(&mut self, i: usize, v: &[u8]) -> &mut Self {
        let off = (self.buf.len() - self.start) as u32;
        self.buf.extend_from_slice(v);
        let mut slot = [0u8; 8];
        slot[..4].copy_from_slice(&off.to_le_bytes());
        slot[4..].copy_from_slice(&(v.len() as u32).to_le_bytes());
        self.slot(i, slot);
        self
    }

    /// Copies field `src_idx` of `src` into field `i`, keeping it absent if it
    /// is absent there. Both fields must have the same type.
    pub fn copy_from(&mut self, i: usize, src: &Row<'_>, src_idx: usize, ty: FieldType) -> &mut Self {
        if src.is_present(src_idx) {
            if ty.is_variable() {
                let v = src.raw_bytes(src_idx).unwrap_or_default();
                self.bytes(i, v);
            } else {
                self.slot(i, src.slot(src_idx));
            }
        }
        self
    }

    /// Length of the row written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether nothing has been written (never true: the fixed part is there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the row and returns the buffer's new length (the row's end offset).
    pub fn finish(self) -> usize {
        self.buf.len()
    }
}

/// A read-only view of one row of `n` fields.
///
/// Reads of a row that [`validate`] accepted never fail for a present field of
/// the right type; on other bytes they return `None` rather than panic.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    bytes: &'a [u8],
    n: usize,
}

impl<'a> Row<'a> {
    /// Views `bytes` as a row of `n` fields.
    #[inline]
    pub fn new(bytes: &'a [u8], n: usize) -> Self {
        Row { bytes, n }
    }

    /// The row's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of fields.
    pub fn field_count(&self) -> usize {
        self.n
    }

    /// Whether field `i` is present.
    #[inline]
    pub fn is_present(&self, i: usize) -> bool {
        i < self.n && self.bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    #[inline]
    fn slot(&self, i: usize) -> [u8; 8] {
        let at = self.n.div_ceil(8) + i * 8;
        match self.bytes.get(at..at + 8) {
            Some(s) => {
                let mut out = [0u8; 8];
                out.copy_from_slice(s);
                out
            }
            None => [0u8; 8],
        }
    }

    /// Field `i` as an int.
    #[inline]
    pub fn int(&self, i: usize) -> Option<i64> {
        self.is_present(i).then(|| i64::from_le_bytes(self.slot(i)))
    }

    /// Field `i` as a float.
    #[inline]
    pub fn float(&self, i: usize) -> Option<f64> {
        self.is_present(i)
            .then(|| f64::from_bits(u64::from_le_bytes(self.slot(i))))
    }

    /// Field `i` as a bool.
    #[inline]
    pub fn bool(&self, i: usize) -> Option<bool> {
        self.is_present(i).then(|| u64::from_le_bytes(self.slot(i)) != 0)
    }

    /// Field `i` as bytes (a str or bytes field).
    #[inline]
    pub fn raw_bytes(&self, i: usize) -> Option<&'a [u8]> {
        if !self.is_present(i) {
            return None;
        }
        let s = self.slot(i);
        let off = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
        let len = u32::from_le_bytes([s[4], s[5], s[6], s[7]]) as usize;
        self.bytes.get(off..off.checked_add(len)?)
    }

    /// Field `i` as a str.
    #[inline]
    pub fn str(&self, i: usize) -> Option<&'a str> {
        str_from_utf8(self.raw_bytes(i)?).ok()
    }

    /// The raw 8-byte slot of field `i` (for fixed-width fields).
    #[inline]
    pub fn raw_slot(&self, i: usize) -> [u8; 8] {
        self.slot(i)
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("fields", &self.n)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Why a row does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// Shorter than its fixed part.
    TooShort {
        /// actual length
        len: usize,
        /// required length
        need: usize,
    },
    /// A required field is absent.
    MissingField(String),
    /// A str or bytes field points outside the row.
    OutOfBounds(String),
    /// A str field is not UTF-8.
    NotUtf8(String),
    /// A bool slot holds something other than 0 or 1.
    BadBool(String),
    /// Bits set in the validity bitmap beyond the last field.
    StrayBits,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::TooShort { len, need } => {
                write!(
                    f,
                    "row of {len} bytes is shorter than its fixed part of {need} bytes"
                )
            }
            RowError::MissingField(n) => write!(f, "required field `{n}` is missing"),
            RowError::OutOfBounds(n) => write!(f, "field `{n}` points outside the row"),
            RowError::NotUtf8(n) => write!(f, "field `{n}` is not valid UTF-8"),
            RowError::BadBool(n) => write!(f, "bool field `{n}` is neither 0 nor 1"),
            RowError::StrayBits => write!(f, "validity bits set beyond the last field"),
        }
    }
}

impl std::error::Error for RowError {}

/// Checks that `bytes` is a well-formed row of `schema`.
pub fn validate(bytes: &[u8], schema: &Schema) -> Result<(), RowError> {
    let n = schema.len();
    let need = fixed_len(n);
    if bytes.len() < need {
        return Err(RowError::TooShort {
            len: bytes.len(),
            need,
        });
    }
    if !n.is_multiple_of(8) {
        let last = bytes[n / 8];
        if last >> (n % 8) != 0 {
            return Err(RowError::StrayBits);
        }
    }
    let row = Row::new(bytes, n);
    for (i, field) in schema.fields().iter().enumerate() {
        if !row.is_present(i) {
            if !field.nullable {
                return Err(RowError::MissingField(field.name.clone()));
            }
            continue;
        }
        match field.ty {
            FieldType::Str | FieldType::Bytes => {
                let v = row
                    .raw_bytes(i)
                    .ok_or_else(|| RowError::OutOfBounds(field.name.clone()))?;
                if field.ty == FieldType::Str && str_from_utf8(v).is_err() {
                    return Err(RowError::NotUtf8(field.name.clone()));
                }
            }
            FieldType::Bool => {
                if u64::from_le_bytes(row.slot(i)) > 1 {
                    return Err(RowError::BadBool(field.name.clone()));
                }
            }
            FieldType::Int | FieldType::Float => {}
        }
    }
    Ok(())
}

/// [`validate`] compiled for one schema: the checks a row needs, found once
/// instead of per row, with the bitmap of required fields compared bytewise
/// and the str fields of an ASCII row accepted without decoding them. It
/// accepts exactly the rows `validate` accepts; for a bad row it runs
/// `validate` to name the problem, so the errors are the same too.
#[derive(Debug, Clone)]
pub struct Validator {
    schema: Schema,
    fixed: usize,
    /// Bits of the fields that must be present, per bitmap byte.
    required: Vec<u8>,
    /// Bits allowed in the last bitmap byte.
    last_mask: u8,
    /// For 1 to 64 fields, the bitmap as the low bytes of the row's first
    /// word: (bits of the bitmap bytes, required fields, existing fields).
    word: Option<(u64, u64, u64)>,
    /// Variable-length fields: index and whether it is a str.
    var: Vec<(usize, bool)>,
    bools: Vec<usize>,
}

impl Validator {
    /// Compiles the checks of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let n = schema.len();
        let mut required = vec![0u8; n.div_ceil(8)];
        let mut var = Vec::new();
        let mut bools = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if !f.nullable {
                required[i / 8] |= 1 << (i % 8);
            }
            match f.ty {
                FieldType::Str => var.push((i, true)),
                FieldType::Bytes => var.push((i, false)),
                FieldType::Bool => bools.push(i),
                FieldType::Int | FieldType::Float => {}
            }
        }
        let word = (1..=64).contains(&n).then(|| {
            let nb = n.div_ceil(8);
            let bits = if nb == 8 { u64::MAX } else { (1u64 << (nb * 8)) - 1 };
            let allowed = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            let mut req = [0u8; 8];
            req[..nb].copy_from_slice(&required);
            (bits, u64::from_le_bytes(req), allowed)
        });
        Validator {
            word,
            schema: schema.clone(),
            fixed: fixed_len(n),
            required,
            last_mask: if n.is_multiple_of(8) {
                0xff
            } else {
                (1u8 << (n % 8)) - 1
            },
            var,
            bools,
        }
    }

    /// Checks that `bytes` is a well-formed row of the schema.
    #[inline]
    pub fn check(&self, bytes: &[u8]) -> Result<(), RowError> {
        if self.is_valid(bytes) {
            Ok(())
        } else {
            validate(bytes, &self.schema)
        }
    }

    /// Checks a batch of rows in one pass: `ends` must rise and stay
    /// within `data` (else the error names the first bad offset), and the
    /// index of every row that is not a well-formed row of the schema is
    /// added to `invalid`.
    pub fn check_batch(&self, data: &[u8], ends: &[u32], invalid: &mut Vec<usize>) -> Result<(), String> {
        let mut start = 0usize;
        for (i, &end) in ends.iter().enumerate() {
            let end = end as usize;
            if end < start || end > data.len() {
                return Err(bad_offsets(i, start, end, data.len()));
            }
            if !self.is_valid(&data[start..end]) {
                invalid.push(i);
            }
            start = end;
        }
        Ok(())
    }

    /// Whether `bytes` is a well-formed row of the schema (`check` says
    /// what is wrong with one that is not).
    #[inline(always)]
    pub fn is_valid(&self, bytes: &[u8]) -> bool {
        if bytes.len() < self.fixed {
            return false;
        }
        match self.word {
            // Up to 64 fields: the bitmap is in the row's first word (a row
            // of n >= 1 fields is at least 9 bytes long).
            Some((bits, required, allowed)) => {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[..8]);
                let map = u64::from_le_bytes(w) & bits;
                if map & required != required || map & !allowed != 0 {
                    return false;
                }
            }
            None => {
                let bitmap = &bytes[..self.required.len()];
                if let Some(&last) = bitmap.last()
                    && last & !self.last_mask != 0
                {
                    return false;
                }
                if bitmap.iter().zip(&self.required).any(|(&b, &r)| b & r != r) {
                    return false;
                }
            }
        }
        (self.var.is_empty() || self.var_ok(bytes)) && (self.bools.is_empty() || self.bools_ok(bytes))
    }

    /// Slot `i` of a row at least `fixed` bytes long.
    #[inline(always)]
    fn slot(&self, bytes: &[u8], i: usize) -> u64 {
        let at = self.required.len() + i * 8;
        let mut s = [0u8; 8];
        s.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(s)
    }

    #[inline(always)]
    fn present(&self, bytes: &[u8], i: usize) -> bool {
        bytes[i / 8] & (1 << (i % 8)) != 0
    }

    // Kept out of line so that rows without str or bytes fields skip it at
    // the cost of one branch.
    #[inline(never)]
    fn var_ok(&self, bytes: &[u8]) -> bool {
        // Any slice of an ASCII region is valid UTF-8; decided once per row.
        let mut ascii_tail: Option<bool> = None;
        for &(i, is_str) in &self.var {
            if !self.present(bytes, i) {
                continue;
            }
            let s = self.slot(bytes, i);
            let (off, len) = ((s & 0xffff_ffff) as usize, (s >> 32) as usize);
            let Some(v) = off.checked_add(len).and_then(|end| bytes.get(off..end)) else {
                return false;
            };
            if is_str {
                let in_tail =
                    off >= self.fixed && *ascii_tail.get_or_insert_with(|| bytes[self.fixed..].is_ascii());
                if !in_tail && std::str::from_utf8(v).is_err() {
                    return false;
                }
            }
        }
        true
    }

    #[inline(never)]
    fn bools_ok(&self, bytes: &[u8]) -> bool {
        self.bools
            .iter()
            .all(|&i| !self.present(bytes, i) || self.slot(bytes, i) <= 1)
    }
}

#[cold]
fn bad_offsets(i: usize, start: usize, end: usize, len: usize) -> String {
    format!("row {i} ends at {end}, before its start {start} or past the {len} bytes")
}

/// Rows packed in one buffer with end offsets, as they cross the boundary.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    data: &'a [u8],
    ends: &'a [u32],
}

impl<'a> Batch<'a> {
    /// Views a flat buffer and its end offsets.
    pub fn new(data: &'a [u8], ends: &'a [u32]) -> Self {
        Batch { data, ends }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all records.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Record `i`, or `None` if `i` is out of range or its offsets are
    /// inconsistent.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.data.get(start..end)
    }

    /// Iterates over the records.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

/// Values of a piece of state, one per key of a call: like a [`BatchBuf`],
/// with a presence flag each. Value `i` is `data[ends[i-1]..ends[i]]` when
/// `present[i]` is 1, and absent when it is 0 (`state.values` in WIT; the
/// host and the SDKs share it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueBatch {
    /// Values, back to back.
    pub data: Vec<u8>,
    /// End of each value.
    pub ends: Vec<u32>,
    /// 1 where the key has a value, 0 where it has none.
    pub present: Vec<u8>,
}

impl ValueBatch {
    /// Appends a value written by `encode` (`None`: absent); returns its
    /// index.
    pub fn push_with(&mut self, encode: Option<impl FnOnce(&mut Vec<u8>)>) -> u32 {
        let present = encode.is_some();
        if let Some(encode) = encode {
            encode(&mut self.data);
        }
        self.ends.push(self.data.len() as u32);
        self.present.push(u8::from(present));
        (self.ends.len() - 1) as u32
    }

    /// Appends a value (`None`: absent); returns its index.
    pub fn push(&mut self, value: Option<&[u8]>) -> u32 {
        self.push_with(value.map(|v| move |out: &mut Vec<u8>| out.extend_from_slice(v)))
    }

    /// Value `i`: `None` if out of range, absent, or its offsets are
    /// inconsistent.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if *self.present.get(i)? == 0 {
            return None;
        }
        Batch::new(&self.data, &self.ends).get(i)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// A growable batch of records in one buffer, the owning side of [`Batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchBuf {
    /// All records, back to back.
    pub data: Vec<u8>,
    /// End offset of each record in `data`.
    pub ends: Vec<u32>,
}

impl BatchBuf {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        BatchBuf {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// Appends one record.
    #[inline]
    pub fn push(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len() as u32);
    }

    /// Marks the end of a record written directly into `data`.
    #[inline]
    pub fn end_record(&mut self) {
        self.ends.push(self.data.len() as u32);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Removes every record, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// A borrowed view.
    pub fn as_batch(&self) -> Batch<'_> {
        Batch::new(&self.data, &self.ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(
            vec![
                Field::required("user", FieldType::Str),
                Field::required("t", FieldType::Int),
                Field::optional("amount", FieldType::Float),
                Field::optional("flag", FieldType::Bool),
                Field::optional("blob", FieldType::Bytes),
            ],
            Some("t"),
        )
        .unwrap()
    }

    #[test]
    fn round_trips_every_type() {
        let s = schema();
        let mut buf = vec![9, 9]; // rows may follow other bytes
        let mut w = RowWriter::new(&mut buf, s.len());
        w.str(0, "ünïcode")
            .int(1, -42)
            .float(2, 1.5)
            .bool(3, true)
            .bytes(4, &[0, 255]);
        let end = w.finish();
        let row = Row::new(&buf[2..end], s.len());
        assert!(validate(row.as_bytes(), &s).is_ok());
        assert_eq!(row.str(0), Some("ünïcode"));
        assert_eq!(row.int(1), Some(-42));
        assert_eq!(row.float(2), Some(1.5));
        assert_eq!(row.bool(3), Some(true));
        assert_eq!(row.raw_bytes(4), Some(&[0u8, 255][..]));
    }

    #[test]
    fn absent_fields_read_as_none_and_required_ones_fail_validation() {
        let s = schema();
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, s.len());
        w.str(0, "u");
        w.finish();
        let row = Row::new(&buf, s.len());
        assert_eq!(row.int(1), None);
        assert_eq!(row.float(2), None);
        assert_eq!(validate(&buf, &s), Err(RowError::MissingField("t".into())));
    }

    #[test]
    fn hostile_rows_are_rejected_not_panicking() {
        let s = schema();
        assert!(matches!(validate(&[1, 2, 3], &s), Err(RowError::TooShort { .. })));
        // A str slot pointing far outside the row.
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, s.len());
        w.str(0, "abc").int(1, 1);
        w.finish();
        let slot0 = 1;
        buf[slot0..slot0 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(validate(&buf, &s), Err(RowError::OutOfBounds("user".into())));
        assert_eq!(Row::new(&buf, s.len()).str(0), None);
        // Invalid UTF-8 in a str field.
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, s.len());
        w.bytes(0, &[0xff, 0xfe]).int(1, 1);
        w.finish();
        assert_eq!(validate(&buf, &s), Err(RowError::NotUtf8("user".into())));
        // Reads past the end of a truncated row do not panic.
        let r = Row::new(&buf[..3], s.len());
        let _ = (r.int(1), r.str(0), r.float(2));
    }

    /// The compiled validator against `validate` (the reference): rows of
    /// random fields, then random bytes overwritten, truncated or appended;
    /// both must give the same verdict and error every time.
    #[test]
    fn validator_agrees_with_validate_on_mangled_rows() {
        let nullable = |name: &str, ty| Field {
            name: name.into(),
            ty,
            nullable: true,
        };
        let mut fields = vec![
            Field::required("user", FieldType::Str),
            nullable("note", FieldType::Str),
            Field::required("t", FieldType::Int),
            nullable("ok", FieldType::Bool),
            nullable("raw", FieldType::Bytes),
            Field::required("x", FieldType::Float),
        ];
        for i in 0..4 {
            fields.push(nullable(&format!("s{i}"), FieldType::Str));
        }
        // Up to 64 fields the bitmap is checked as one word, beyond bytewise.
        let mut wide = fields.clone();
        for i in 0..60 {
            wide.push(if i % 7 == 0 {
                Field::required(format!("w{i}"), FieldType::Int)
            } else {
                nullable(&format!("w{i}"), FieldType::Int)
            });
        }
        for fields in [fields, wide] {
            agree_on_mangled_rows(&Schema::new(fields, None).unwrap());
        }
    }

    fn agree_on_mangled_rows(s: &Schema) {
        let v = Validator::new(s);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let texts = ["", "ascii", "ünïcode", "日本", "a\u{1F600}b"];
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            let mut w = RowWriter::new(&mut buf, s.len());
            for i in 0..s.len() {
                // Nullable fields are often absent, required ones rarely.
                if rnd(if s.fields()[i].nullable { 5 } else { 100 }) == 0 {
                    continue;
                }
                match s.fields()[i].ty {
                    FieldType::Str => w.str(i, texts[rnd(texts.len() as u64) as usize]),
                    FieldType::Bytes => w.bytes(i, &[0xff, rnd(256) as u8]),
                    FieldType::Int => w.int(i, rnd(1000) as i64),
                    FieldType::Float => w.float(i, 0.5),
                    FieldType::Bool => w.bool(i, rnd(2) == 0),
                };
            }
            w.finish();
            for _ in 0..rnd(4) {
                match rnd(4) {
                    0 => buf.truncate(rnd(buf.len() as u64 + 1) as usize),
                    1 => buf.push(rnd(256) as u8),
                    _ if !buf.is_empty() => {
                        let at = rnd(buf.len() as u64) as usize;
                        buf[at] = match rnd(3) {
                            0 => 0xc3,
                            1 => 0x80,
                            _ => rnd(256) as u8,
                        };
                    }
                    _ => {}
                }
            }
            let want = validate(&buf, s);
            assert_eq!(v.check(&buf), want, "row {buf:?}");
            if want.is_ok() {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(
            accepted > 1000 && rejected > 1000,
            "{accepted} accepted, {rejected} rejected"
        );
    }

    #[test]
    fn equal_values_give_equal_bytes() {
        let write = |u: &str, t: i64| {
            let mut b = Vec::new();
            let mut w = RowWriter::new(&mut b, 2);
            w.str(0, u).int(1, t);
            w.finish();
            b
        };
        assert_eq!(write("a", 1), write("a", 1));
        assert_ne!(write("a", 1), write("b", 1));
    }

    #[test]
    fn schema_rejects_nonsense() {
        let dup = Schema::new(
            vec![
                Field::required("a", FieldType::Int),
                Field::required("a", FieldType::Str),
            ],
            None,
        );
        assert_eq!(dup, Err(SchemaError::DuplicateField("a".into())));
        let t = Schema::new(vec![Field::required("a", FieldType::Str)], Some("a"));
        assert!(matches!(t, Err(SchemaError::EventTimeNotInt(..))));
    }

    #[test]
    fn batch_views_records() {
        let mut b = BatchBuf::new();
        b.push(b"one");
        b.push(b"");
        b.push(b"three");
        let v = b.as_batch();
        assert_eq!(v.len(), 3);
        assert_eq!(v.get(0), Some(&b"one"[..]));
        assert_eq!(v.get(1), Some(&b""[..]));
        assert_eq!(v.get(2), Some(&b"three"[..]));
        assert_eq!(v.get(3), None);
        let bad = Batch::new(b"ab", &[5]);
        assert_eq!(bad.get(0), None);
    }
}
