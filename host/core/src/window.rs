//! Event-time windows run natively by the host: assigning records to
//! tumbling, sliding and session windows, aggregate accumulators (count, sum,
//! min, max, avg over a field) and their compact encoding in keyed state, and
//! the lateness rule of a window.
//!
//! Tumbling and sliding windows are aligned to the epoch: a window of size `s`
//! and slide `d` starts at every multiple of `d`; a record at `t` belongs to
//! every window with `start <= t < start + s`. A window's last timestamp is
//! `end - 1`; it fires when the watermark reaches it, and stays open for late
//! records until the watermark reaches `end - 1 + allowed lateness`.

use std::fmt;

use wafer_row::{FieldType, Row, Schema};

/// The shape of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size_ms`.
    Tumbling {
        /// length
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms`.
    Sliding {
        /// length
        size_ms: i64,
        /// distance between starts
        slide_ms: i64,
    },
    /// Per-key windows that close after `gap_ms` without records.
    Session {
        /// inactivity gap
        gap_ms: i64,
    },
}

impl WindowKind {
    /// The windows `[start, end)` containing `t`, oldest first (sessions: the
    /// record's own window `[t, t + gap)`, to be merged by the caller).
    pub fn assign(&self, t: i64) -> Vec<(i64, i64)> {
        match *self {
            WindowKind::Tumbling { size_ms } => {
                let start = t - t.rem_euclid(size_ms);
                vec![(start, start.saturating_add(size_ms))]
            }
            WindowKind::Sliding { size_ms, slide_ms } => {
                let last_start = t - t.rem_euclid(slide_ms);
                let mut out = Vec::new();
                let mut start = last_start;
                while start > t - size_ms {
                    out.push((start, start.saturating_add(size_ms)));
                    start -= slide_ms;
                }
                out.reverse();
                out
            }
            WindowKind::Session { gap_ms } => vec![(t, t.saturating_add(gap_ms))],
        }
    }
}

/// Whether window `[_, end)` no longer accepts records at watermark `wm`:
/// `end - 1 + allowed_lateness <= wm`.
#[inline]
pub fn window_expired(end: i64, allowed_lateness_ms: i64, wm: i64) -> bool {
    end.saturating_sub(1).saturating_add(allowed_lateness_ms) <= wm
}

/// Whether a record at `t` that feeds no window is late at watermark `wm`:
/// its event time is older than the watermark minus the allowed lateness.
#[inline]
pub fn record_late(t: i64, allowed_lateness_ms: i64, wm: i64) -> bool {
    t < wm.saturating_sub(allowed_lateness_ms)
}

/// An aggregate function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggFn {
    /// Number of records.
    Count,
    /// Sum of a field (absent values skipped; 0 when there are none).
    Sum(String),
    /// Smallest value of a field (absent when there are none).
    Min(String),
    /// Largest value of a field.
    Max(String),
    /// Mean of a field (absent when there are none).
    Avg(String),
}

/// A named aggregate of a window's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    /// Output field name.
    pub name: String,
    /// Function.
    pub func: AggFn,
}

/// A window's aggregate that does not fit the input schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggError(pub String);

impl fmt::Display for AggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AggError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone, Copy)]
struct Compiled {
    op: Op,
    field: usize,
    /// The input field is an int (else a float).
    int: bool,
}

/// Aggregates compiled against an input schema: updates accumulators from
/// rows, merges them, and writes results.
#[derive(Debug, Clone)]
pub struct Aggregates {
    aggs: Vec<Compiled>,
    names: Vec<String>,
}

/// Bytes of one accumulator in state: a count and an 8-byte value.
const ACC: usize = 16;

impl Aggregates {
    /// Checks each aggregate's field against `schema` (it must exist and be
    /// an int or a float).
    pub fn compile(specs: &[AggSpec], schema: &Schema) -> Result<Self, AggError> {
        let mut aggs = Vec::new();
        for s in specs {
            let (op, field) = match &s.func {
                AggFn::Count => (Op::Count, None),
                AggFn::Sum(f) => (Op::Sum, Some(f)),
                AggFn::Min(f) => (Op::Min, Some(f)),
                AggFn::Max(f) => (Op::Max, Some(f)),
                AggFn::Avg(f) => (Op::Avg, Some(f)),
            };
            let (field, int) = match field {
                None => (0, true),
                Some(f) => {
                    let i = schema.index_of(f).ok_or_else(|| {
                        AggError(format!("aggregate `{}`: the records have no field `{f}`", s.name))
                    })?;
                    match schema.field(i).ty {
                        FieldType::Int => (i, true),
                        FieldType::Float => (i, false),
                        other => {
                            return Err(AggError(format!(
                                "aggregate `{}`: field `{f}` is {other}, not a number",
                                s.name
                            )));
                        }
                    }
                }
            };
            aggs.push(Compiled { op, field, int });
        }
        Ok(Aggregates {
            aggs,
            names: specs.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// Output fields: name and type of each aggregate.
    pub fn output_fields(&self) -> Vec<wafer_row::Field> {
        self.aggs
            .iter()
            .zip(&self.names)
            .map(|(a, n)| match a.op {
                Op::Count => wafer_row::Field::required(n.clone(), FieldType::Int),
                Op::Sum => wafer_row::Field::required(
                    n.clone(),
                    if a.int { FieldType::Int } else { FieldType::Float },
                ),
                Op::Min | Op::Max => wafer_row::Field::optional(
                    n.clone(),
                    if a.int { FieldType::Int } else { FieldType::Float },
                ),
                Op::Avg => wafer_row::Field::optional(n.clone(), FieldType::Float),
            })
            .collect()
    }

    /// An empty accumulator.
    pub fn empty(&self) -> Vec<u8> {
        vec![0u8; self.size()]
    }

    /// Bytes of an accumulator (an empty one is all zeroes).
    pub fn size(&self) -> usize {
        self.aggs.len() * ACC
    }

    /// Whether `acc` has the right size for these aggregates.
    pub fn fits(&self, acc: &[u8]) -> bool {
        acc.len() == self.size()
    }

    /// Adds one row to `acc`.
    pub fn add(&self, acc: &mut [u8], row: &Row<'_>) {
        for (k, a) in self.aggs.iter().enumerate() {
            let slot = &mut acc[k * ACC..(k + 1) * ACC];
            if a.op == Op::Count {
                let n = read_i64(&slot[..8]) + 1;
                slot[..8].copy_from_slice(&n.to_le_bytes());
                continue;
            }
            let value = if a.int {
                row.int(a.field).map(Value::Int)
            } else {
                row.float(a.field).map(Value::Float)
            };
            if let Some(v) = value {
                combine(a.op, slot, 1, v);
            }
        }
    }

    /// Merges accumulator `other` into `acc` (session windows merging).
    pub fn merge(&self, acc: &mut [u8], other: &[u8]) {
        for (k, a) in self.aggs.iter().enumerate() {
            let (s, o) = (&mut acc[k * ACC..(k + 1) * ACC], &other[k * ACC..(k + 1) * ACC]);
            let n = read_i64(&o[..8]);
            if a.op == Op::Count {
                let total = read_i64(&s[..8]) + n;
                s[..8].copy_from_slice(&total.to_le_bytes());
                continue;
            }
            if n == 0 {
                continue;
            }
            let v = if a.int {
                Value::Int(read_i64(&o[8..]))
            } else {
                Value::Float(read_f64(&o[8..]))
            };
            combine(a.op, s, n, v);
        }
    }

    /// Writes the results of `acc` into fields `first..` of `w`.
    pub fn write(&self, acc: &[u8], w: &mut wafer_row::RowWriter<'_>, first: usize) {
        for (k, a) in self.aggs.iter().enumerate() {
            let slot = &acc[k * ACC..(k + 1) * ACC];
            let n = read_i64(&slot[..8]);
            let i = first + k;
            match a.op {
                Op::Count => {
                    w.int(i, n);
                }
                Op::Sum if a.int => {
                    w.int(i, read_i64(&slot[8..]));
                }
                Op::Sum => {
                    w.float(i, read_f64(&slot[8..]));
                }
                Op::Min | Op::Max if n > 0 => {
                    if a.int {
                        w.int(i, read_i64(&slot[8..]));
                    } else {
                        w.float(i, read_f64(&slot[8..]));
                    }
                }
                Op::Avg if n > 0 => {
                    let sum = if a.int {
                        read_i64(&slot[8..]) as f64
                    } else {
                        read_f64(&slot[8..])
                    };
                    w.float(i, sum / n as f64);
                }
                Op::Min | Op::Max | Op::Avg => {}
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

fn read_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

fn read_f64(b: &[u8]) -> f64 {
    f64::from_bits(read_i64(b) as u64)
}

/// Folds `n` values summarised by `v` into an accumulator slot.
fn combine(op: Op, slot: &mut [u8], n: i64, v: Value) {
    let had = read_i64(&slot[..8]);
    let new = match (op, v) {
        (Op::Sum | Op::Avg, Value::Int(x)) => Value::Int(read_i64(&slot[8..]).wrapping_add(x)),
        (Op::Sum | Op::Avg, Value::Float(x)) => Value::Float(read_f64(&slot[8..]) + x),
        (Op::Min, Value::Int(x)) => Value::Int(if had == 0 { x } else { read_i64(&slot[8..]).min(x) }),
        (Op::Min, Value::Float(x)) => Value::Float(if had == 0 { x } else { read_f64(&slot[8..]).min(x) }),
        (Op::Max, Value::Int(x)) => Value::Int(if had == 0 { x } else { read_i64(&slot[8..]).max(x) }),
        (Op::Max, Value::Float(x)) => Value::Float(if had == 0 { x } else { read_f64(&slot[8..]).max(x) }),
        (Op::Count, _) => return,
    };
    slot[..8].copy_from_slice(&(had + n).to_le_bytes());
    match new {
        Value::Int(x) => slot[8..].copy_from_slice(&x.to_le_bytes()),
        Value::Float(x) => slot[8..].copy_from_slice(&x.to_bits().to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_row::{Field, RowWriter};

    #[test]
    fn tumbling_windows_align_to_the_epoch_even_before_it() {
        let w = WindowKind::Tumbling { size_ms: 300_000 };
        assert_eq!(
            w.assign(1_700_000_123_456),
            vec![(1_700_000_100_000, 1_700_000_400_000)]
        );
        assert_eq!(w.assign(0), vec![(0, 300_000)]);
        assert_eq!(w.assign(299_999), vec![(0, 300_000)]);
        assert_eq!(w.assign(-1), vec![(-300_000, 0)]);
    }

    #[test]
    fn sliding_windows_cover_the_record() {
        let w = WindowKind::Sliding {
            size_ms: 10,
            slide_ms: 5,
        };
        assert_eq!(w.assign(12), vec![(5, 15), (10, 20)]);
        assert_eq!(w.assign(10), vec![(5, 15), (10, 20)]);
        assert_eq!(w.assign(9), vec![(0, 10), (5, 15)]);
    }

    #[test]
    fn lateness_rules() {
        // A window [0, 300000) with 60 s lateness takes records until the
        // watermark reaches 299999 + 60000.
        assert!(!window_expired(300_000, 60_000, 359_998));
        assert!(window_expired(300_000, 60_000, 359_999));
        assert!(!record_late(100, 60_000, 60_100));
        assert!(record_late(99, 60_000, 60_100));
    }

    #[test]
    fn aggregates_add_merge_and_write() {
        let schema = Schema::new(
            vec![
                Field::required("n", FieldType::Int),
                Field::optional("x", FieldType::Float),
                Field::required("s", FieldType::Str),
            ],
            None,
        )
        .unwrap();
        let specs = vec![
            AggSpec {
                name: "count".into(),
                func: AggFn::Count,
            },
            AggSpec {
                name: "sum_x".into(),
                func: AggFn::Sum("x".into()),
            },
            AggSpec {
                name: "min_n".into(),
                func: AggFn::Min("n".into()),
            },
            AggSpec {
                name: "max_x".into(),
                func: AggFn::Max("x".into()),
            },
            AggSpec {
                name: "avg_x".into(),
                func: AggFn::Avg("x".into()),
            },
        ];
        let aggs = Aggregates::compile(&specs, &schema).unwrap();
        let row = |n: i64, x: Option<f64>| {
            let mut b = Vec::new();
            let mut w = RowWriter::new(&mut b, 3);
            w.int(0, n).str(2, "s");
            if let Some(x) = x {
                w.float(1, x);
            }
            w.finish();
            b
        };
        let mut a = aggs.empty();
        for (n, x) in [(5, Some(1.5)), (3, None), (9, Some(-2.0))] {
            let r = row(n, x);
            aggs.add(&mut a, &Row::new(&r, 3));
        }
        let mut b = aggs.empty();
        let r = row(1, Some(10.0));
        aggs.add(&mut b, &Row::new(&r, 3));
        aggs.merge(&mut a, &b);
        let out_schema = Schema::new(aggs.output_fields(), None).unwrap();
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, out_schema.len());
        aggs.write(&a, &mut w, 0);
        w.finish();
        let out = Row::new(&buf, out_schema.len());
        assert_eq!(out.int(0), Some(4));
        assert_eq!(out.float(1), Some(9.5));
        assert_eq!(out.int(2), Some(1));
        assert_eq!(out.float(3), Some(10.0));
        assert_eq!(out.float(4), Some(9.5 / 3.0));
        // No values: min/max/avg absent, sum 0.
        let empty = aggs.empty();
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, out_schema.len());
        aggs.write(&empty, &mut w, 0);
        w.finish();
        let out = Row::new(&buf, out_schema.len());
        assert_eq!(
            (out.int(0), out.float(1), out.int(2), out.float(4)),
            (Some(0), Some(0.0), None, None)
        );
        assert!(
            Aggregates::compile(
                &[AggSpec {
                    name: "bad".into(),
                    func: AggFn::Sum("s".into())
                }],
                &schema
            )
            .is_err()
        );
    }
}
