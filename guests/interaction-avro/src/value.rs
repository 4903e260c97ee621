//! Decoded Avro values, shaped by the reader's schema, and reader defaults.
//!
//! Strings and bytes borrow from the payload, so a decoded record costs no
//! copies of its text. A union's value is the value of its branch: what
//! reads it (the interaction binding) tells branches apart by their values.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value as Json;

use crate::schema::{Schema, Type, TypeId};

/// One value, of the reader's schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value<'a> {
    #[default]
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(Cow<'a, [u8]>),
    String(Cow<'a, str>),
    /// The index of a symbol of the reader's enum.
    Enum(u32),
    Fixed(Cow<'a, [u8]>),
    Array(Vec<Value<'a>>),
    Map(Vec<(Cow<'a, str>, Value<'a>)>),
    /// The reader's fields, in the reader's order.
    Record(Vec<Value<'a>>),
}

/// JSON-like, for error messages.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Long(l) => write!(f, "{l}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Double(x) => write!(f, "{x}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bytes(b) | Value::Fixed(b) => write!(f, "{} bytes", b.len()),
            Value::Enum(i) => write!(f, "enum symbol #{i}"),
            Value::Array(items) => write!(f, "array of {}", items.len()),
            Value::Map(entries) => write!(f, "map of {}", entries.len()),
            Value::Record(fields) => {
                f.write_str("{")?;
                for (i, v) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Converts a field's JSON default to a value of its type `ty` (of the
/// reader's `schema`), as the specification defines defaults: bytes and
/// fixed as strings of code points 0–255, enums as symbols, records as
/// objects (missing fields take their own defaults). A union's default may
/// be of any of its branches; the first one it fits is taken (the 1.11
/// specification asks for the first branch, 1.12 relaxed that).
pub fn from_default(schema: &Schema, ty: TypeId, json: &Json) -> Result<Value<'static>, String> {
    from_default_at(schema, ty, json, 0)
}

/// Defaults nest as deep as their JSON, which serde_json caps; a recursive
/// record whose default recurses without end is cut here.
const MAX_DEFAULT_DEPTH: usize = 64;

fn from_default_at(schema: &Schema, ty: TypeId, json: &Json, depth: usize) -> Result<Value<'static>, String> {
    if depth > MAX_DEFAULT_DEPTH {
        return Err("the default nests too deeply".into());
    }
    let mismatch = || format!("the default {json} is not a {}", schema.describe(ty));
    let latin1 =
        |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect() };
    Ok(match (schema.get(ty), json) {
        (Type::Null, Json::Null) => Value::Null,
        (Type::Boolean, Json::Bool(b)) => Value::Boolean(*b),
        (Type::Int, Json::Number(n)) => Value::Int(
            n.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(mismatch)?,
        ),
        (Type::Long, Json::Number(n)) => Value::Long(n.as_i64().ok_or_else(mismatch)?),
        // Rounding to f32 is what a float default means.
        (Type::Float, Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(mismatch)? as f32),
        (Type::Double, Json::Number(n)) => Value::Double(n.as_f64().ok_or_else(mismatch)?),
        (Type::Bytes, Json::String(s)) => Value::Bytes(Cow::Owned(latin1(s).ok_or_else(mismatch)?)),
        (Type::String, Json::String(s)) => Value::String(Cow::Owned(s.clone())),
        (Type::Fixed(fx), Json::String(s)) => {
            let bytes = latin1(s).filter(|b| b.len() == fx.size).ok_or_else(mismatch)?;
            Value::Fixed(Cow::Owned(bytes))
        }
        (Type::Enum(e), Json::String(s)) => {
            let i = e.symbols.iter().position(|sym| sym == s).ok_or_else(mismatch)?;
            Value::Enum(u32::try_from(i).map_err(|_| mismatch())?)
        }
        (Type::Array(items), Json::Array(list)) => Value::Array(
            list.iter()
                .map(|v| from_default_at(schema, *items, v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Map(values), Json::Object(obj)) => Value::Map(
            obj.iter()
                .map(|(k, v)| {
                    Ok((
                        Cow::Owned(k.clone()),
                        from_default_at(schema, *values, v, depth + 1)?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        (Type::Record(r), Json::Object(obj)) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for field in &r.fields {
                let v = match obj.get(&field.name).or(field.default.as_ref()) {
                    Some(v) => from_default_at(schema, field.ty, v, depth + 1)
                        .map_err(|e| format!("field `{}`: {e}", field.name))?,
                    None => return Err(format!("the default {json} lacks field `{}`", field.name)),
                };
                fields.push(v);
            }
            Value::Record(fields)
        }
        (Type::Union(branches), _) => branches
            .iter()
            .find_map(|b| from_default_at(schema, *b, json, depth + 1).ok())
            .ok_or_else(mismatch)?,
        _ => return Err(mismatch()),
    })
}
