//! Deserializer component for interaction events encoded in Avro, in the
//! Confluent wire format that Kafka producers with a schema registry write:
//!
//! ```text
//! 0x00 | schema id (4 bytes, big-endian) | one Avro binary datum
//! ```
//!
//! The component has no registry to ask (guests get no network), so the
//! writer schemas come with the job. Config:
//!
//! ```yaml
//! config:
//!   writer_schemas:            # schema id -> the writer's Avro schema
//!     1: '{"type": "record", "name": "Interaction", "fields": [...]}'
//!     2: { type: record, name: Interaction, fields: [...] }   # or inline
//!   reader_schema: '...'       # optional; default: READER_SCHEMA below
//! ```
//!
//! Each writer schema is resolved against the reader schema once, at init,
//! by the Avro specification's rules ([`resolve`]): fields match by name,
//! fields only the writer has are skipped, fields only the reader has take
//! their defaults, numbers are promoted. So producers may add fields, drop
//! optional ones or reorder them without breaking the job. An unparsable
//! schema, or a writer schema the reader cannot read, fails init and so the
//! job, before any record is read.
//!
//! The decoded reader record is bound by field name to the shared
//! [`Interaction`] record, the same rows as `interaction-json` and
//! `interaction-protobuf`. A custom `reader_schema` must be a record with
//! `user_id` and `event_type` (string or enum) and `event_time_ms` (long or
//! int); `event_id`, `item_id` (string or enum) and `amount` (double, float,
//! long or int) are optional; each may be a union of its type with null, and
//! other fields are decoded and ignored.
//!
//! Records that are not in the wire format, name an unknown schema id or
//! hold a corrupt datum are `decode` errors; records lacking a required
//! value (`null` in a union, an enum symbol the reader cannot take, an empty
//! `user_id`) are `invalid`. Both are dead-lettered.
//!
//! The decoder is written here rather than taken from the `apache-avro`
//! crate: with that crate the component was twice as large (679 KB against
//! 323 KB) and pulled in some 30 more crates (big numbers, UUIDs, digests,
//! regexes, compression, proc macros); it decodes every value into an owned
//! tree before resolving it, where this decoder resolves while reading and
//! borrows strings from the payload; and its compatibility check rejects a
//! writer union with a branch the reader cannot take, which the
//! specification makes a per-record error (a nullable `user_id` upstream
//! must dead-letter its null records, not stop the job).

mod decode;
mod resolve;
mod schema;
#[cfg(test)]
mod tests;
mod value;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use interaction::Interaction;
use serde::Deserialize;
use serde_json::Value as Json;
use wafer_sdk::{Config, Deserializer, Error};

use crate::resolve::Resolution;
use crate::schema::{Schema, Type, TypeId};
use crate::value::Value;

/// The reader schema used without `reader_schema`: the fields of
/// `interaction.proto`, the optional ones as nullable unions defaulting to
/// null. Its namespace does not matter: records match by unqualified name.
const READER_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Interaction",
  "namespace": "reference.v1",
  "fields": [
    {"name": "event_id", "type": ["null", "string"], "default": null},
    {"name": "user_id", "type": "string"},
    {"name": "event_type", "type": "string"},
    {"name": "item_id", "type": ["null", "string"], "default": null},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "event_time_ms", "type": "long"}
  ]
}"#;

/// The Confluent wire format's first byte.
const MAGIC: u8 = 0;

/// Magic byte and schema id.
const HEADER: usize = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    writer_schemas: BTreeMap<String, Json>,
    #[serde(default)]
    reader_schema: Option<Json>,
}

struct InteractionAvro {
    writers: HashMap<u32, Resolution>,
    binding: Binding,
}

/// A schema in the config: JSON text, as a registry stores it, or the
/// schema itself written inline in the job's YAML.
fn schema_from_config(v: &Json) -> Result<Schema, String> {
    match v {
        Json::String(text) => Schema::parse(text),
        Json::Object(_) | Json::Array(_) => Schema::from_json(v),
        other => Err(format!("expected the schema as JSON text or inline, not {other}")),
    }
}

impl Deserializer for InteractionAvro {
    type Record<'a> = Interaction<'a>;

    fn new(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let reader = match &settings.reader_schema {
            Some(v) => schema_from_config(v).map_err(|e| format!("reader_schema: {e}"))?,
            None => Schema::parse(READER_SCHEMA).map_err(|e| format!("built-in reader schema: {e}"))?,
        };
        let binding = Binding::new(&reader).map_err(|e| format!("reader_schema: {e}"))?;
        if settings.writer_schemas.is_empty() {
            return Err("writer_schemas is empty: no record could be decoded".into());
        }
        let mut writers = HashMap::new();
        for (key, v) in &settings.writer_schemas {
            let id: u32 = key
                .parse()
                .map_err(|_| format!("writer_schemas: `{key}` is not a schema id (an integer ≥ 0)"))?;
            let writer = schema_from_config(v).map_err(|e| format!("writer schema {id}: {e}"))?;
            let resolution = resolve::resolve(writer, &reader)
                .map_err(|e| format!("writer schema {id} cannot be read with the reader schema: {e}"))?;
            // `1` and `01` are one id.
            if writers.insert(id, resolution).is_some() {
                return Err(format!("writer_schemas: schema id {id} is given twice"));
            }
        }
        Ok(InteractionAvro { writers, binding })
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Interaction<'a>, Error> {
        let Some((header, datum)) = payload.split_at_checked(HEADER) else {
            return Err(Error::decode(format!(
                "{} bytes are too few for the Confluent wire format (magic byte and schema id take {HEADER})",
                payload.len()
            )));
        };
        let &[magic, a, b, c, d] = header else {
            return Err(Error::decode("no header"));
        };
        if magic != MAGIC {
            return Err(Error::decode(format!(
                "magic byte 0x{magic:02x}, not 0x00: not in the Confluent wire format"
            )));
        }
        let id = u32::from_be_bytes([a, b, c, d]);
        let Some(resolution) = self.writers.get(&id) else {
            return Err(Error::decode(format!(
                "unknown schema id {id} (not in writer_schemas)"
            )));
        };
        let value = decode::decode(resolution, datum).map_err(|e| match e.kind {
            decode::Kind::Malformed => Error::decode(format!("schema {id}: {e}")),
            decode::Kind::Unreadable => Error::invalid(format!("schema {id}: {e}")),
        })?;
        self.binding.bind(value)?.validate()
    }
}

/// Where each interaction field is in the reader's record, found at init.
struct Binding {
    event_id: Option<Slot>,
    user_id: Slot,
    event_type: Slot,
    item_id: Option<Slot>,
    amount: Option<Slot>,
    event_time_ms: Slot,
}

/// A reader field feeding an interaction field.
struct Slot {
    index: usize,
    name: &'static str,
    /// The reader's enum symbols, when the field is an enum (read as its
    /// symbol's name).
    symbols: Option<Vec<String>>,
}

/// The reader types an interaction field accepts.
#[derive(Clone, Copy)]
enum Want {
    Text,
    Integer,
    Number,
}

impl Binding {
    /// Checks that the reader schema is a record with the interaction's
    /// required fields, and that every interaction field it has is of a type
    /// that field can hold (or a union of such types with null). Other
    /// reader fields are decoded and ignored.
    fn new(reader: &Schema) -> Result<Self, String> {
        let Type::Record(rec) = reader.get(reader.root()) else {
            return Err(format!(
                "must be a record, not {}",
                reader.describe(reader.root())
            ));
        };
        let find = |name: &'static str, want: Want| -> Result<Option<Slot>, String> {
            let Some(index) = rec.fields.iter().position(|f| f.name == name) else {
                return Ok(None);
            };
            let ty = rec.fields.get(index).map_or(0, |f| f.ty);
            let symbols = accepts(reader, ty, want).ok_or_else(|| {
                let kinds = match want {
                    Want::Text => "a string or an enum",
                    Want::Integer => "a long or an int",
                    Want::Number => "a double, float, long or int",
                };
                format!(
                    "field `{name}` is {}; it must be {kinds}, or a union of one with null",
                    reader.describe(ty)
                )
            })?;
            Ok(Some(Slot { index, name, symbols }))
        };
        let required = |name: &'static str, want: Want| -> Result<Slot, String> {
            find(name, want)?.ok_or_else(|| format!("has no field `{name}`, which interactions require"))
        };
        Ok(Binding {
            event_id: find("event_id", Want::Text)?,
            user_id: required("user_id", Want::Text)?,
            event_type: required("event_type", Want::Text)?,
            item_id: find("item_id", Want::Text)?,
            amount: find("amount", Want::Number)?,
            event_time_ms: required("event_time_ms", Want::Integer)?,
        })
    }

    /// Turns the reader's record into an interaction (not yet validated).
    fn bind<'a>(&self, value: Value<'a>) -> Result<Interaction<'a>, Error> {
        let Value::Record(mut fields) = value else {
            return Err(Error::invalid("the datum is not a record"));
        };
        let mut take = |slot: &Slot| std::mem::take(fields.get_mut(slot.index).unwrap_or(&mut Value::Null));
        let mut optional_text = |slot: &Option<Slot>| -> Result<Option<Cow<'a, str>>, Error> {
            slot.as_ref().map_or(Ok(None), |s| text(s, take(s)))
        };
        let event_id = optional_text(&self.event_id)?;
        let item_id = optional_text(&self.item_id)?;
        let required = |slot: &Slot, v: Option<Cow<'a, str>>| {
            v.ok_or_else(|| Error::invalid(format!("{} is missing (null)", slot.name)))
        };
        let user_id = required(&self.user_id, text(&self.user_id, take(&self.user_id))?)?;
        let event_type = required(&self.event_type, text(&self.event_type, take(&self.event_type))?)?;
        let amount = match &self.amount {
            None => None,
            Some(s) => match take(s) {
                Value::Null => None,
                Value::Double(x) => Some(x),
                Value::Float(x) => Some(f64::from(x)),
                Value::Long(x) => Some(x as f64),
                Value::Int(x) => Some(f64::from(x)),
                other => return Err(mistyped(s, &other)),
            },
        };
        let event_time_ms = match take(&self.event_time_ms) {
            Value::Long(t) => t,
            Value::Int(t) => i64::from(t),
            Value::Null => return Err(Error::invalid("event_time_ms is missing (null)")),
            other => return Err(mistyped(&self.event_time_ms, &other)),
        };
        Ok(Interaction {
            event_id,
            user_id,
            event_type,
            item_id,
            amount,
            event_time_ms,
        })
    }
}

/// A text field's value: a string borrowed from the payload, an enum's
/// symbol, or `None` for null.
fn text<'a>(slot: &Slot, v: Value<'a>) -> Result<Option<Cow<'a, str>>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Enum(i) => slot
            .symbols
            .as_ref()
            .and_then(|syms| syms.get(usize::try_from(i).ok()?))
            .map(|s| Some(Cow::Owned(s.clone())))
            .ok_or_else(|| Error::invalid(format!("{}: enum symbol #{i} is unknown", slot.name))),
        other => Err(mistyped(slot, &other)),
    }
}

/// Cannot happen with a reader schema that passed [`Binding::new`]; an
/// error rather than a panic all the same.
fn mistyped(slot: &Slot, v: &Value<'_>) -> Error {
    Error::invalid(format!("{} has an unexpected value {v}", slot.name))
}

/// Whether the reader type `ty` can hold `want`: `Some(symbols)` if so
/// (the enum's symbols when it is an enum), `None` if not.
fn accepts(schema: &Schema, ty: TypeId, want: Want) -> Option<Option<Vec<String>>> {
    match (schema.get(ty), want) {
        (Type::String, Want::Text) => Some(None),
        (Type::Enum(e), Want::Text) => Some(Some(e.symbols.clone())),
        (Type::Long | Type::Int, Want::Integer) => Some(None),
        (Type::Double | Type::Float | Type::Long | Type::Int, Want::Number) => Some(None),
        (Type::Union(branches), _) => {
            // Null plus exactly one branch that holds the field.
            let mut held = None;
            for &b in branches {
                match schema.get(b) {
                    Type::Null => {}
                    _ if held.is_none() => held = Some(accepts(schema, b, want)?),
                    _ => return None,
                }
            }
            held
        }
        _ => None,
    }
}

wafer_sdk::deserializer!(InteractionAvro);
