//! Schema resolution: how data written with one schema (the writer's) is read
//! as another (the reader's), following the specification's "Schema
//! Resolution" section.
//!
//! Each (writer, reader) pair is resolved once, when the deserializer is
//! created, into a [`Resolution`]: a small program of [`Plan`]s that the
//! decoder runs per record without looking at either schema's names again.
//! Everything that can be decided from the schemas alone is decided here, so
//! an incompatible writer schema fails the job before any record is read.
//!
//! The rules:
//! - records match by unqualified name (or a reader alias); fields match by
//!   name (or a reader field's alias); writer fields the reader lacks are
//!   skipped; reader fields the writer lacks take their default, and without
//!   one the schemas are incompatible;
//! - int → long, float, double; long → float, double; float → double;
//!   string ↔ bytes;
//! - enums and fixed types match by name (fixed also by size); a writer
//!   symbol the reader lacks becomes the reader's default symbol;
//! - a writer union is resolved branch by branch. The branch is only known
//!   per datum, so a branch the reader cannot take (typically `null` for a
//!   required field) is a per-record error, and the schemas are incompatible
//!   only when no branch can be read;
//! - a writer type read as a reader union goes to the first branch of the
//!   same kind, else the first branch it can be promoted to.

use std::collections::HashMap;
use std::fmt;

use crate::schema::{Enum, Fixed, Record, Schema, Type, TypeId};
use crate::value::{Value, from_default};

/// A plan's index in its [`Resolution`].
pub type PlanId = usize;

/// How to read one writer type as one reader type.
#[derive(Debug, Clone)]
pub enum Plan {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    IntAsLong,
    IntAsFloat,
    IntAsDouble,
    LongAsFloat,
    LongAsDouble,
    FloatAsDouble,
    StringAsBytes,
    BytesAsString,
    Fixed(usize),
    /// Per writer symbol: the reader's symbol, or why there is none.
    Enum(Vec<Result<u32, String>>),
    Array(PlanId),
    Map(PlanId),
    Record(RecordPlan),
    /// Per writer branch: its plan, or why the reader cannot take it.
    WriterUnion(Vec<Result<PlanId, String>>),
}

/// How to read a writer record as a reader record.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    /// One step per writer field, in the writer's order (the order of the
    /// bytes).
    pub steps: Vec<Step>,
    /// The reader's fields before the writer's are read: the defaults of the
    /// fields the writer lacks, `Null` where the writer's value will go.
    pub template: Vec<Value<'static>>,
}

/// What to do with one writer field.
#[derive(Debug, Clone)]
pub enum Step {
    /// Read it into the reader's field `field`.
    Read {
        field: usize,
        plan: PlanId,
        name: String,
    },
    /// The reader has no such field: skip its bytes (`ty` is the writer's type).
    Skip { ty: TypeId, name: String },
}

/// A writer schema resolved against a reader schema.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The writer's schema, for skipping fields the reader does not have.
    pub writer: Schema,
    pub plans: Vec<Plan>,
    pub root: PlanId,
}

/// Resolves `writer` against `reader`; the error says where they disagree.
pub fn resolve(writer: Schema, reader: &Schema) -> Result<Resolution, String> {
    let mut r = Resolver {
        w: &writer,
        r: reader,
        plans: Vec::new(),
        memo: HashMap::new(),
        log: Vec::new(),
    };
    let root = r
        .resolve(writer.root(), reader.root())
        .map_err(|e| e.to_string())?;
    let plans = r.plans;
    Ok(Resolution { writer, plans, root })
}

/// Why a writer type cannot be read as a reader type, and where.
struct Mismatch {
    /// Innermost first: ``field `x` ``, `array items`, ...
    path: Vec<String>,
    message: String,
}

impl Mismatch {
    fn new(message: impl Into<String>) -> Self {
        Mismatch {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in self.path.iter().rev() {
            write!(f, "{segment}: ")?;
        }
        f.write_str(&self.message)
    }
}

struct Resolver<'s> {
    w: &'s Schema,
    r: &'s Schema,
    plans: Vec<Plan>,
    /// Record pairs resolved or being resolved, so that recursive records
    /// refer to their own plan instead of recursing forever.
    memo: HashMap<(TypeId, TypeId), PlanId>,
    /// The order `memo` was filled in, to undo a failed attempt.
    log: Vec<(TypeId, TypeId)>,
}

impl<'s> Resolver<'s> {
    fn push(&mut self, plan: Plan) -> PlanId {
        self.plans.push(plan);
        self.plans.len() - 1
    }

    fn mismatch(&self, w: TypeId, r: TypeId) -> Mismatch {
        Mismatch::new(format!(
            "the writer's {} cannot be read as {}",
            self.w.describe(w),
            self.r.describe(r)
        ))
    }

    /// Resolves a pair whose failure the caller may recover from (a union
    /// branch): on failure, forgets the record pairs it assumed resolvable.
    fn attempt(&mut self, w: TypeId, r: TypeId) -> Result<PlanId, Mismatch> {
        let mark = self.log.len();
        let out = self.resolve(w, r);
        if out.is_err() {
            for key in self.log.drain(mark..) {
                self.memo.remove(&key);
            }
        }
        out
    }

    fn resolve(&mut self, w: TypeId, r: TypeId) -> Result<PlanId, Mismatch> {
        // Copies of the schema references, so that matching on their types
        // does not borrow `self`.
        let (ws, rs) = (self.w, self.r);
        if let Type::Union(branches) = ws.get(w) {
            return self.writer_union(branches, w, r);
        }
        if let Type::Union(branches) = rs.get(r) {
            return self.reader_union(w, branches, r);
        }
        let plan = match (ws.get(w), rs.get(r)) {
            (Type::Null, Type::Null) => Plan::Null,
            (Type::Boolean, Type::Boolean) => Plan::Boolean,
            (Type::Int, Type::Int) => Plan::Int,
            (Type::Long, Type::Long) => Plan::Long,
            (Type::Float, Type::Float) => Plan::Float,
            (Type::Double, Type::Double) => Plan::Double,
            (Type::Bytes, Type::Bytes) => Plan::Bytes,
            (Type::String, Type::String) => Plan::String,
            (Type::Int, Type::Long) => Plan::IntAsLong,
            (Type::Int, Type::Float) => Plan::IntAsFloat,
            (Type::Int, Type::Double) => Plan::IntAsDouble,
            (Type::Long, Type::Float) => Plan::LongAsFloat,
            (Type::Long, Type::Double) => Plan::LongAsDouble,
            (Type::Float, Type::Double) => Plan::FloatAsDouble,
            (Type::String, Type::Bytes) => Plan::StringAsBytes,
            (Type::Bytes, Type::String) => Plan::BytesAsString,
            (Type::Fixed(a), Type::Fixed(b)) if b.name.accepts(&a.name) => fixed(a, b)?,
            (Type::Enum(a), Type::Enum(b)) if b.name.accepts(&a.name) => enumeration(a, b),
            (Type::Array(a), Type::Array(b)) => {
                Plan::Array(self.resolve(*a, *b).map_err(|e| e.at("array items"))?)
            }
            (Type::Map(a), Type::Map(b)) => Plan::Map(self.resolve(*a, *b).map_err(|e| e.at("map values"))?),
            (Type::Record(a), Type::Record(b)) if b.name.accepts(&a.name) => return self.record(w, r, a, b),
            (
                Type::Record(_) | Type::Enum(_) | Type::Fixed(_),
                Type::Record(_) | Type::Enum(_) | Type::Fixed(_),
            ) => {
                let mut m = self.mismatch(w, r);
                m.message.push_str(" (the names differ)");
                return Err(m);
            }
            _ => return Err(self.mismatch(w, r)),
        };
        Ok(self.push(plan))
    }

    fn writer_union(&mut self, branches: &[TypeId], w: TypeId, r: TypeId) -> Result<PlanId, Mismatch> {
        let mut plans = Vec::with_capacity(branches.len());
        let mut first_error = None;
        for &b in branches {
            match self.attempt(b, r) {
                Ok(p) => plans.push(Ok(p)),
                Err(e) => {
                    let why = if matches!(self.w.get(b), Type::Null) {
                        format!(
                            "the value is null, which the reader's {} does not allow",
                            self.r.describe(r)
                        )
                    } else {
                        e.to_string()
                    };
                    plans.push(Err(why));
                    first_error.get_or_insert(e);
                }
            }
        }
        if plans.iter().all(Result::is_err) {
            let detail = first_error.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(Mismatch::new(format!(
                "no branch of the writer's {} can be read as {}{detail}",
                self.w.describe(w),
                self.r.describe(r)
            )));
        }
        Ok(self.push(Plan::WriterUnion(plans)))
    }

    fn reader_union(&mut self, w: TypeId, branches: &[TypeId], r: TypeId) -> Result<PlanId, Mismatch> {
        // The branch of the writer's own kind first (a writer `long` goes to
        // `long`, not to an earlier `double`), then any it can be promoted to.
        for &b in branches {
            if self.same_kind(w, b)
                && let Ok(p) = self.attempt(w, b)
            {
                return Ok(p);
            }
        }
        for &b in branches {
            if let Ok(p) = self.attempt(w, b) {
                return Ok(p);
            }
        }
        Err(Mismatch::new(format!(
            "the writer's {} matches no branch of the reader's {}",
            self.w.describe(w),
            self.r.describe(r)
        )))
    }

    fn same_kind(&self, w: TypeId, r: TypeId) -> bool {
        match (self.w.get(w), self.r.get(r)) {
            (Type::Record(a), Type::Record(b)) => b.name.accepts(&a.name),
            (Type::Enum(a), Type::Enum(b)) => b.name.accepts(&a.name),
            (Type::Fixed(a), Type::Fixed(b)) => b.name.accepts(&a.name),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    fn record(&mut self, w: TypeId, r: TypeId, wrec: &Record, rrec: &Record) -> Result<PlanId, Mismatch> {
        if let Some(&p) = self.memo.get(&(w, r)) {
            return Ok(p);
        }
        // Reserve the plan's slot first: fields that refer back to this
        // record (recursion) resolve to it.
        let id = self.push(Plan::Null);
        self.memo.insert((w, r), id);
        self.log.push((w, r));

        // The writer field feeding each reader field: same name, else one of
        // the reader field's aliases (a renamed field).
        let mut source: Vec<Option<usize>> = rrec
            .fields
            .iter()
            .map(|rf| wrec.fields.iter().position(|wf| wf.name == rf.name))
            .collect();
        for (i, rf) in rrec.fields.iter().enumerate() {
            if source.get(i).is_some_and(Option::is_none) {
                let by_alias = wrec
                    .fields
                    .iter()
                    .enumerate()
                    .find(|(j, wf)| rf.aliases.contains(&wf.name) && !source.contains(&Some(*j)))
                    .map(|(j, _)| j);
                source[i] = by_alias;
            }
        }

        let mut template = Vec::with_capacity(rrec.fields.len());
        for (rf, src) in rrec.fields.iter().zip(&source) {
            let at = || format!("field `{}`", rf.name);
            template.push(match (src, &rf.default) {
                (Some(_), _) => Value::Null,
                (None, Some(default)) => from_default(self.r, rf.ty, default)
                    .map_err(|e| Mismatch::new(format!("the reader's default is invalid: {e}")).at(at()))?,
                (None, None) => {
                    return Err(Mismatch::new(format!(
                        "the writer's record {} has no such field and the reader's has no default for it",
                        wrec.name.full
                    ))
                    .at(at()));
                }
            });
        }

        let mut steps = Vec::with_capacity(wrec.fields.len());
        for (j, wf) in wrec.fields.iter().enumerate() {
            let target = source.iter().position(|s| *s == Some(j));
            steps.push(match target.and_then(|i| Some((i, rrec.fields.get(i)?))) {
                Some((i, rf)) => Step::Read {
                    field: i,
                    plan: self
                        .resolve(wf.ty, rf.ty)
                        .map_err(|e| e.at(format!("field `{}`", rf.name)))?,
                    name: rf.name.clone(),
                },
                None => Step::Skip {
                    ty: wf.ty,
                    name: wf.name.clone(),
                },
            });
        }
        if let Some(slot) = self.plans.get_mut(id) {
            *slot = Plan::Record(RecordPlan { steps, template });
        }
        Ok(id)
    }
}

fn fixed(a: &Fixed, b: &Fixed) -> Result<Plan, Mismatch> {
    if a.size == b.size {
        Ok(Plan::Fixed(a.size))
    } else {
        Err(Mismatch::new(format!(
            "the writer's fixed {} has {} bytes, the reader's {}",
            a.name.full, a.size, b.size
        )))
    }
}

fn enumeration(a: &Enum, b: &Enum) -> Plan {
    Plan::Enum(
        a.symbols
            .iter()
            .map(|s| {
                b.symbols
                    .iter()
                    .position(|t| t == s)
                    .and_then(|i| u32::try_from(i).ok())
                    .or(b.default)
                    .ok_or_else(|| {
                        format!(
                            "symbol `{s}` is not in the reader's enum {}, which has no default",
                            b.name.full
                        )
                    })
            })
            .collect(),
    )
}
