//! Keys: the fields a job keys by, copied out of a row into a row of their
//! own (canonical, so equal keys have equal bytes), and the key group and
//! worker a key belongs to.
//!
//! Keys hash into a fixed number of key groups; key groups map onto
//! workers by range. State is stored by key group, so a job restored with
//! another number of workers hands whole groups to each worker.

use std::fmt;

use wafer_row::{Field, Row, RowWriter, Schema};

use crate::hash::{hash, partition};

/// Key groups a job's keys hash into; the most keyed workers a job can have.
pub const KEY_GROUPS: u16 = 256;

/// A key field that is not in the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// How to take the key out of rows of one schema.
#[derive(Debug, Clone)]
pub struct KeySpec {
    fields: Vec<usize>,
    schema: Schema,
    input_len: usize,
}

impl KeySpec {
    /// The key made of `names`, in rows of `schema`.
    pub fn compile(names: &[String], schema: &Schema) -> Result<Self, KeyError> {
        if names.is_empty() {
            return Err(KeyError("a key needs at least one field".into()));
        }
        let mut fields = Vec::new();
        let mut key_fields = Vec::new();
        for n in names {
            let i = schema.index_of(n).ok_or_else(|| {
                let known: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
                KeyError(format!(
                    "key field `{n}` is not a field of the records ({})",
                    known.join(", ")
                ))
            })?;
            if schema.field(i).ty == wafer_row::FieldType::Float {
                return Err(KeyError(format!(
                    "key field `{n}` is a float; floats make poor keys"
                )));
            }
            fields.push(i);
            key_fields.push(Field::required(n.clone(), schema.field(i).ty));
        }
        let schema_out = Schema::new(key_fields, None).map_err(|e| KeyError(e.to_string()))?;
        Ok(KeySpec {
            fields,
            schema: schema_out,
            input_len: schema.len(),
        })
    }

    /// The schema of key rows.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Appends the key of `row` (a row of the input schema) to `out`, or
    /// returns the name of a key field the row lacks.
    pub fn extract<'s>(&'s self, row: &Row<'_>, out: &mut Vec<u8>) -> Result<(), &'s str> {
        let start = out.len();
        let mut w = RowWriter::new(out, self.fields.len());
        for (k, &i) in self.fields.iter().enumerate() {
            if !row.is_present(i) {
                out.truncate(start);
                return Err(&self.schema.field(k).name);
            }
            w.copy_from(k, row, i, self.schema.field(k).ty);
        }
        w.finish();
        Ok(())
    }

    /// Number of fields of the input rows.
    pub fn input_len(&self) -> usize {
        self.input_len
    }
}

/// The key group of a key.
#[inline]
pub fn key_group(key: &[u8]) -> u16 {
    partition(hash(key), KEY_GROUPS as usize) as u16
}

/// The worker (of `workers`) that owns key group `group`.
#[inline]
pub fn worker_of(group: u16, workers: usize) -> usize {
    group as usize * workers / KEY_GROUPS as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_row::FieldType;

    #[test]
    fn keys_are_canonical_rows_of_the_key_fields() {
        let schema = Schema::new(
            vec![
                Field::required("user_id", FieldType::Str),
                Field::optional("item_id", FieldType::Str),
                Field::required("t", FieldType::Int),
            ],
            None,
        )
        .unwrap();
        let spec = KeySpec::compile(&["user_id".into(), "item_id".into()], &schema).unwrap();
        let row = |u: &str, i: Option<&str>, t: i64| {
            let mut b = Vec::new();
            let mut w = RowWriter::new(&mut b, 3);
            w.str(0, u);
            if let Some(i) = i {
                w.str(1, i);
            }
            w.int(2, t);
            w.finish();
            b
        };
        let (a, b) = (row("ü", Some("i1"), 1), row("ü", Some("i1"), 99));
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        spec.extract(&Row::new(&a, 3), &mut ka).unwrap();
        spec.extract(&Row::new(&b, 3), &mut kb).unwrap();
        assert_eq!(ka, kb, "same key fields, same key bytes");
        let k = Row::new(&ka, 2);
        assert_eq!((k.str(0), k.str(1)), (Some("ü"), Some("i1")));
        let c = row("ü", None, 1);
        let mut kc = vec![7];
        assert_eq!(spec.extract(&Row::new(&c, 3), &mut kc), Err("item_id"));
        assert_eq!(kc, vec![7], "nothing appended on error");
        assert!(KeySpec::compile(&["nope".into()], &schema).is_err());
    }

    #[test]
    fn key_groups_map_onto_workers_by_range() {
        for workers in 1..=7 {
            let mut seen = vec![false; workers];
            for g in 0..KEY_GROUPS {
                let w = worker_of(g, workers);
                assert!(w < workers);
                seen[w] = true;
            }
            assert!(seen.iter().all(|s| *s));
        }
    }
}
