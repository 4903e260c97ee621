//! The Avro binary encoding, read through a [`Resolution`].
//!
//! The payload is untrusted: every length, count, index and nesting level is
//! checked before it is used, so that a corrupt datum is an error for its
//! record and never a panic, an allocation of a claimed size or an endless
//! loop.

use std::borrow::Cow;
use std::fmt;

use crate::resolve::{Plan, PlanId, Resolution, Step};
use crate::schema::{Schema, Type, TypeId};
use crate::value::Value;

/// How deep values may nest (records in records, arrays of arrays...); only
/// recursive schemas can nest deeper than their own definition, and data
/// that deep is corrupt or hostile rather than an interaction event.
const MAX_DEPTH: usize = 64;

/// Array and map items a datum may hold beyond one per byte of payload.
/// Every item takes at least one byte except items of zero-size types
/// (`null`, empty records), whose count is otherwise unbounded by the bytes.
const EXTRA_ITEMS: usize = 1024;

/// What is wrong with a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The bytes are not a valid encoding under the writer's schema.
    Malformed,
    /// The datum is well formed but the reader cannot take one of its
    /// values (a union branch or enum symbol it has no place for).
    Unreadable,
}

/// A datum that could not be read, with the field path to the culprit.
#[derive(Debug, Clone)]
pub struct DatumError {
    pub kind: Kind,
    /// Innermost first.
    path: Vec<String>,
    message: String,
}

impl DatumError {
    fn malformed(message: impl Into<String>) -> Self {
        DatumError {
            kind: Kind::Malformed,
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn unreadable(message: impl Into<String>) -> Self {
        DatumError {
            kind: Kind::Unreadable,
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, field: &str) -> Self {
        self.path.push(field.to_string());
        self
    }
}

impl fmt::Display for DatumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            f.write_str("field `")?;
            for (i, segment) in self.path.iter().rev().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                f.write_str(segment)?;
            }
            f.write_str("`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Decodes one datum that must fill `data` exactly.
pub fn decode<'a>(res: &Resolution, data: &'a [u8]) -> Result<Value<'a>> {
    let mut d = Decoder {
        data,
        pos: 0,
        plans: &res.plans,
        writer: &res.writer,
        items_left: data.len().saturating_add(EXTRA_ITEMS),
    };
    let value = d.read(res.root, 0)?;
    let rest = data.len() - d.pos;
    if rest > 0 {
        let bytes = if rest == 1 { "byte" } else { "bytes" };
        return Err(DatumError::malformed(format!(
            "{rest} {bytes} left after the datum (written with another schema?)"
        )));
    }
    Ok(value)
}

type Result<T> = std::result::Result<T, DatumError>;

struct Decoder<'a, 'r> {
    data: &'a [u8],
    /// Bytes consumed; never more than `data.len()`.
    pos: usize,
    plans: &'r [Plan],
    writer: &'r Schema,
    /// The budget of array and map items left (see [`EXTRA_ITEMS`]).
    items_left: usize,
}

impl<'a> Decoder<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        if n > rest.len() {
            return Err(DatumError::malformed(format!(
                "the datum is truncated at byte {}: {n} more needed, {} left",
                self.pos,
                rest.len()
            )));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    /// A base-128 varint of at most 64 bits, zigzag-decoded.
    fn long(&mut self) -> Result<i64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let [b] = self.take(1)? else {
                return Err(DatumError::malformed("the datum is truncated"));
            };
            let b = *b;
            // The tenth byte holds the 64th bit only.
            if shift == 63 && b > 1 {
                return Err(DatumError::malformed("a varint overflows 64 bits"));
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(DatumError::malformed("a varint is longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32> {
        let n = self.long()?;
        i32::try_from(n).map_err(|_| DatumError::malformed(format!("{n} is out of range for an int")))
    }

    /// A length or count that must be ≥ 0; `what` names it for errors.
    fn size(&mut self, what: &str) -> Result<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| DatumError::malformed(format!("negative {what} {n}")))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.size("length")?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|e| DatumError::malformed(format!("a string is not UTF-8: {e}")))
    }

    fn boolean(&mut self) -> Result<bool> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(DatumError::malformed(format!(
                "a boolean byte is {other:02x?}, not 0 or 1"
            ))),
        }
    }

    fn float(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn double(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        Ok(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn index(&mut self, what: &str, len: usize) -> Result<usize> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| DatumError::malformed(format!("{what} index {i} is out of range (0..{len})")))
    }

    /// Array and map items come in blocks: a count, then that many items;
    /// a negative count is followed by the block's byte size; 0 ends.
    /// Calls `item` once per item.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.size("block size")?;
            }
            for _ in 0..count.unsigned_abs() {
                self.items_left = self.items_left.checked_sub(1).ok_or_else(|| {
                    DatumError::malformed("arrays and maps claim more items than the payload can hold")
                })?;
                item(self)?;
            }
        }
    }

    fn read(&mut self, plan: PlanId, depth: usize) -> Result<Value<'a>> {
        if depth > MAX_DEPTH {
            return Err(DatumError::malformed(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        // Copied out so that the plan does not borrow `self`.
        let plans = self.plans;
        let Some(p) = plans.get(plan) else {
            return Err(DatumError::unreadable(
                "no plan for a value (a bug in the resolver)",
            ));
        };
        Ok(match p {
            Plan::Null => Value::Null,
            Plan::Boolean => Value::Boolean(self.boolean()?),
            Plan::Int => Value::Int(self.int()?),
            Plan::Long => Value::Long(self.long()?),
            Plan::Float => Value::Float(self.float()?),
            Plan::Double => Value::Double(self.double()?),
            Plan::Bytes | Plan::StringAsBytes => Value::Bytes(Cow::Borrowed(self.bytes()?)),
            Plan::String | Plan::BytesAsString => Value::String(Cow::Borrowed(self.string()?)),
            Plan::IntAsLong => Value::Long(i64::from(self.int()?)),
            // Promotions to floating point round as the specification
            // implies (Java's widening conversions).
            Plan::IntAsFloat => Value::Float(self.int()? as f32),
            Plan::IntAsDouble => Value::Double(f64::from(self.int()?)),
            Plan::LongAsFloat => Value::Float(self.long()? as f32),
            Plan::LongAsDouble => Value::Double(self.long()? as f64),
            Plan::FloatAsDouble => Value::Double(f64::from(self.float()?)),
            Plan::Fixed(n) => Value::Fixed(Cow::Borrowed(self.take(*n)?)),
            Plan::Enum(symbols) => {
                let i = self.index("enum symbol", symbols.len())?;
                match symbols.get(i) {
                    Some(Ok(s)) => Value::Enum(*s),
                    Some(Err(why)) => return Err(DatumError::unreadable(why.clone())),
                    None => return Err(DatumError::malformed("enum symbol out of range")),
                }
            }
            Plan::Array(items) => {
                let mut out = Vec::new();
                self.blocks(|d| {
                    out.push(d.read(*items, depth + 1)?);
                    Ok(())
                })?;
                Value::Array(out)
            }
            Plan::Map(values) => {
                let mut out = Vec::new();
                self.blocks(|d| {
                    let key = d.string()?;
                    let value = d.read(*values, depth + 1).map_err(|e| e.at(key))?;
                    out.push((Cow::Borrowed(key), value));
                    Ok(())
                })?;
                Value::Map(out)
            }
            Plan::Record(rp) => {
                let mut fields: Vec<Value<'a>> = rp.template.clone();
                for step in &rp.steps {
                    match step {
                        Step::Read { field, plan, name } => {
                            let v = self.read(*plan, depth + 1).map_err(|e| e.at(name))?;
                            if let Some(slot) = fields.get_mut(*field) {
                                *slot = v;
                            }
                        }
                        Step::Skip { ty, name } => self.skip(*ty, depth + 1).map_err(|e| e.at(name))?,
                    }
                }
                Value::Record(fields)
            }
            Plan::WriterUnion(branches) => {
                let i = self.index("union branch", branches.len())?;
                match branches.get(i) {
                    Some(Ok(p)) => self.read(*p, depth + 1)?,
                    Some(Err(why)) => return Err(DatumError::unreadable(why.clone())),
                    None => return Err(DatumError::malformed("union branch out of range")),
                }
            }
        })
    }

    /// Skips a value of the writer's type `ty`, checking only what is
    /// needed to find its end (and the nesting and item limits).
    fn skip(&mut self, ty: TypeId, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(DatumError::malformed(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let writer = self.writer;
        match writer.get(ty) {
            Type::Null => {}
            Type::Boolean => {
                self.boolean()?;
            }
            Type::Int | Type::Long | Type::Enum(_) => {
                self.long()?;
            }
            Type::Float => {
                self.take(4)?;
            }
            Type::Double => {
                self.take(8)?;
            }
            Type::Bytes | Type::String => {
                self.bytes()?;
            }
            Type::Fixed(f) => {
                self.take(f.size)?;
            }
            Type::Array(items) => self.skip_blocks(|d| d.skip(*items, depth + 1))?,
            Type::Map(values) => self.skip_blocks(|d| {
                d.bytes()?;
                d.skip(*values, depth + 1)
            })?,
            Type::Record(r) => {
                for f in &r.fields {
                    self.skip(f.ty, depth + 1).map_err(|e| e.at(&f.name))?;
                }
            }
            Type::Union(branches) => {
                let i = self.index("union branch", branches.len())?;
                if let Some(b) = branches.get(i) {
                    self.skip(*b, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// Like [`Self::blocks`], but a block with a byte size is jumped over
    /// whole: that is what the size is for.
    fn skip_blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                let size = self.size("block size")?;
                self.take(size)?;
                continue;
            }
            for _ in 0..count {
                self.items_left = self.items_left.checked_sub(1).ok_or_else(|| {
                    DatumError::malformed("arrays and maps claim more items than the payload can hold")
                })?;
                item(self)?;
            }
        }
    }
}
