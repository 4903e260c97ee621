//! Built-in filters, run natively by the host right after deserialization.
//!
//! A [`FilterSpec`] is what the job file says; [`FilterSpec::compile`] checks
//! it against the deserializer's schema (the field exists and has a usable
//! type) before any record is read, and yields a [`Filter`] that decides per
//! row without allocating.
//!
//! Sampling is deterministic: "random" sampling hashes the raw payload with a
//! seed, so a record is kept or dropped the same way whatever the parallelism
//! or the order of arrival, and re-running a job gives the same output.

use std::fmt;

use wafer_row::{FieldType, Row, Schema};

use crate::hash::{hash_seeded, keep_fraction};

/// A built-in filter as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterSpec {
    /// Keeps records with `from <= event time < until`.
    EventTime {
        /// inclusive lower bound, epoch ms
        from: Option<i64>,
        /// exclusive upper bound, epoch ms
        until: Option<i64>,
    },
    /// Keeps a pseudo-random `fraction` of records (by payload hash).
    Sample {
        /// fraction kept, 0..=1
        fraction: f64,
        /// seed of the hash
        seed: u64,
    },
    /// Keeps every record of a stable `fraction` of the values of `field`
    /// (entity-aware sampling: all or nothing per user, say).
    SampleBy {
        /// the field identifying the entity
        field: String,
        /// fraction of entities kept, 0..=1
        fraction: f64,
        /// seed of the hash
        seed: u64,
    },
    /// Keeps records whose `field` is one of `values`.
    Include {
        /// the field tested
        field: String,
        /// accepted values
        values: Vec<String>,
    },
    /// Drops records whose `field` is one of `values`.
    Exclude {
        /// the field tested
        field: String,
        /// rejected values
        values: Vec<String>,
    },
}

/// A filter that does not fit the schema it would run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

impl FilterSpec {
    /// The filter's kind, for messages and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterSpec::EventTime { .. } => "event_time",
            FilterSpec::Sample { .. } => "sample",
            FilterSpec::SampleBy { .. } => "sample_by",
            FilterSpec::Include { .. } => "include",
            FilterSpec::Exclude { .. } => "exclude",
        }
    }

    /// Checks the filter against `schema` and prepares it.
    pub fn compile(&self, schema: &Schema) -> Result<Filter, FilterError> {
        let field = |name: &str| -> Result<(usize, FieldType), FilterError> {
            let idx = schema.index_of(name).ok_or_else(|| {
                let known: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
                FilterError(format!(
                    "{} filter: the records have no field `{name}` (fields: {})",
                    self.kind(),
                    known.join(", ")
                ))
            })?;
            Ok((idx, schema.field(idx).ty))
        };
        let check_fraction = |f: f64| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                Err(FilterError(format!(
                    "{} filter: fraction {f} is not between 0 and 1",
                    self.kind()
                )))
            }
        };
        Ok(match self {
            FilterSpec::EventTime { from, until } => {
                let idx = schema.event_time().ok_or_else(|| {
                    FilterError(
                        "event_time filter: the deserializer's schema declares no event-time field".into(),
                    )
                })?;
                Filter::EventTime {
                    idx,
                    from: from.unwrap_or(i64::MIN),
                    until: until.unwrap_or(i64::MAX),
                }
            }
            FilterSpec::Sample { fraction, seed } => {
                check_fraction(*fraction)?;
                Filter::Sample {
                    fraction: *fraction,
                    seed: *seed,
                }
            }
            FilterSpec::SampleBy {
                field: name,
                fraction,
                seed,
            } => {
                check_fraction(*fraction)?;
                let (idx, ty) = field(name)?;
                Filter::SampleBy {
                    idx,
                    variable: ty.is_variable(),
                    fraction: *fraction,
                    seed: *seed,
                }
            }
            FilterSpec::Include { field: name, values } | FilterSpec::Exclude { field: name, values } => {
                let (idx, ty) = field(name)?;
                let encoded = values
                    .iter()
                    .map(|v| encode_value(v, ty))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| FilterError(format!("{} filter on `{name}`: {e}", self.kind())))?;
                Filter::Match {
                    idx,
                    variable: ty.is_variable(),
                    values: encoded,
                    include: matches!(self, FilterSpec::Include { .. }),
                }
            }
        })
    }
}

/// Encodes a job-file value the way the field's bytes look in a row.
fn encode_value(v: &str, ty: FieldType) -> Result<Vec<u8>, String> {
    Ok(match ty {
        FieldType::Str | FieldType::Bytes => v.as_bytes().to_vec(),
        FieldType::Int => v
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("`{v}` is not an int"))?
            .to_le_bytes()
            .to_vec(),
        FieldType::Bool => match v.trim() {
            "true" => 1u64.to_le_bytes().to_vec(),
            "false" => 0u64.to_le_bytes().to_vec(),
            _ => return Err(format!("`{v}` is not a bool")),
        },
        FieldType::Float => return Err("matching on float fields is not supported".into()),
    })
}

/// A compiled built-in filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// See [`FilterSpec::EventTime`].
    EventTime {
        /// event-time field
        idx: usize,
        /// inclusive
        from: i64,
        /// exclusive
        until: i64,
    },
    /// See [`FilterSpec::Sample`].
    Sample {
        /// kept fraction
        fraction: f64,
        /// hash seed
        seed: u64,
    },
    /// See [`FilterSpec::SampleBy`].
    SampleBy {
        /// entity field
        idx: usize,
        /// whether the field is str/bytes
        variable: bool,
        /// kept fraction
        fraction: f64,
        /// hash seed
        seed: u64,
    },
    /// See [`FilterSpec::Include`] and [`FilterSpec::Exclude`].
    Match {
        /// tested field
        idx: usize,
        /// whether the field is str/bytes
        variable: bool,
        /// encoded values
        values: Vec<Vec<u8>>,
        /// include (true) or exclude (false)
        include: bool,
    },
}

fn field_bytes<'a>(row: &Row<'a>, idx: usize, variable: bool, slot: &'a mut [u8; 8]) -> Option<&'a [u8]> {
    if !row.is_present(idx) {
        return None;
    }
    if variable {
        row.raw_bytes(idx)
    } else {
        *slot = row.raw_slot(idx);
        Some(&slot[..])
    }
}

impl Filter {
    /// Whether to keep a row; `payload` is the raw record it was decoded from.
    #[inline]
    pub fn keep(&self, row: &Row<'_>, payload: &[u8]) -> bool {
        match self {
            Filter::EventTime { idx, from, until } => match row.int(*idx) {
                Some(t) => *from <= t && t < *until,
                None => false,
            },
            Filter::Sample { fraction, seed } => keep_fraction(hash_seeded(payload, *seed), *fraction),
            Filter::SampleBy {
                idx,
                variable,
                fraction,
                seed,
            } => {
                let mut slot = [0u8; 8];
                let v = field_bytes(row, *idx, *variable, &mut slot).unwrap_or_default();
                keep_fraction(hash_seeded(v, *seed), *fraction)
            }
            Filter::Match {
                idx,
                variable,
                values,
                include,
            } => {
                let mut slot = [0u8; 8];
                let hit = match field_bytes(row, *idx, *variable, &mut slot) {
                    Some(v) => values.iter().any(|x| x.as_slice() == v),
                    None => false,
                };
                hit == *include
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_row::{Field, RowWriter};

    fn schema() -> Schema {
        Schema::new(
            vec![
                Field::required("user_id", FieldType::Str),
                Field::required("event_type", FieldType::Str),
                Field::required("t", FieldType::Int),
            ],
            Some("t"),
        )
        .unwrap()
    }

    fn row(user: &str, kind: &str, t: i64) -> Vec<u8> {
        let mut b = Vec::new();
        let mut w = RowWriter::new(&mut b, 3);
        w.str(0, user).str(1, kind).int(2, t);
        w.finish();
        b
    }

    fn keeps(spec: FilterSpec, r: &[u8]) -> bool {
        spec.compile(&schema()).unwrap().keep(&Row::new(r, 3), r)
    }

    #[test]
    fn event_time_bounds_are_half_open() {
        let spec = FilterSpec::EventTime {
            from: Some(10),
            until: Some(20),
        };
        assert!(!keeps(spec.clone(), &row("u", "click", 9)));
        assert!(keeps(spec.clone(), &row("u", "click", 10)));
        assert!(keeps(spec.clone(), &row("u", "click", 19)));
        assert!(!keeps(spec, &row("u", "click", 20)));
    }

    #[test]
    fn include_and_exclude() {
        let inc = FilterSpec::Include {
            field: "event_type".into(),
            values: vec!["purchase".into(), "click".into()],
        };
        assert!(keeps(inc.clone(), &row("u", "click", 1)));
        assert!(!keeps(inc, &row("u", "view", 1)));
        let exc = FilterSpec::Exclude {
            field: "event_type".into(),
            values: vec!["view".into()],
        };
        assert!(!keeps(exc.clone(), &row("u", "view", 1)));
        assert!(keeps(exc, &row("u", "click", 1)));
    }

    #[test]
    fn entity_sampling_is_all_or_nothing_per_entity() {
        let spec = FilterSpec::SampleBy {
            field: "user_id".into(),
            fraction: 0.5,
            seed: 3,
        };
        let f = spec.compile(&schema()).unwrap();
        let mut kept_users = 0;
        for u in 0..1000 {
            let user = format!("user-{u}");
            let decisions: Vec<bool> = (0..5)
                .map(|t| {
                    let r = row(&user, "click", t);
                    f.keep(&Row::new(&r, 3), &r)
                })
                .collect();
            assert!(
                decisions.iter().all(|d| *d == decisions[0]),
                "split entity {user}"
            );
            kept_users += usize::from(decisions[0]);
        }
        assert!((400..600).contains(&kept_users), "kept {kept_users}");
    }

    #[test]
    fn unknown_fields_and_bad_fractions_are_rejected_up_front() {
        let err = FilterSpec::Include {
            field: "nope".into(),
            values: vec![],
        }
        .compile(&schema())
        .unwrap_err();
        assert!(err.to_string().contains("no field `nope`"), "{err}");
        assert!(
            FilterSpec::Sample {
                fraction: 1.5,
                seed: 0
            }
            .compile(&schema())
            .is_err()
        );
    }
}
