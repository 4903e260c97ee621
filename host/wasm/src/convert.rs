//! Conversions between the generated WIT types and the host's own.

use wafer_row::{Field, FieldType, Schema};

use crate::bindings::types as t;
use crate::{FailKind, Failure};

/// A schema declared by a guest, checked.
pub(crate) fn schema_from_wit(s: t::Schema) -> Result<Schema, String> {
    let fields = s
        .fields
        .into_iter()
        .map(|f| Field {
            name: f.name,
            ty: match f.ty {
                t::FieldType::Str => FieldType::Str,
                t::FieldType::Int => FieldType::Int,
                t::FieldType::Float => FieldType::Float,
                t::FieldType::Boolean => FieldType::Bool,
                t::FieldType::Bytes => FieldType::Bytes,
            },
            nullable: f.nullable,
        })
        .collect();
    Schema::new(fields, s.event_time.as_deref()).map_err(|e| format!("it declared an invalid schema: {e}"))
}

/// A host schema in WIT form (handed to filters and processors).
pub(crate) fn schema_to_wit(s: &Schema) -> t::Schema {
    t::Schema {
        fields: s
            .fields()
            .iter()
            .map(|f| t::Field {
                name: f.name.clone(),
                ty: match f.ty {
                    FieldType::Str => t::FieldType::Str,
                    FieldType::Int => t::FieldType::Int,
                    FieldType::Float => t::FieldType::Float,
                    FieldType::Bool => t::FieldType::Boolean,
                    FieldType::Bytes => t::FieldType::Bytes,
                },
                nullable: f.nullable,
            })
            .collect(),
        event_time: s.event_time().map(|i| s.field(i).name.clone()),
    }
}

/// A per-record error reported by a guest.
pub(crate) fn failure_from_wit(e: t::RecordError) -> Failure {
    Failure {
        index: e.index,
        kind: match e.kind {
            t::ErrorKind::Decode => FailKind::Decode,
            t::ErrorKind::Invalid => FailKind::Invalid,
            t::ErrorKind::Failed => FailKind::Failed,
        },
        message: e.message,
    }
}
