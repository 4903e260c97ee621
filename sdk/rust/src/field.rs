//! How Rust field types map onto row fields: [`FieldValue`] (type and
//! writing), [`ReadField`] (reading, possibly borrowing from the row) and
//! [`FieldMap`] (where each struct field sits in a given schema).

use std::borrow::Cow;

use wafer_row::{FieldType, Row, RowWriter, Schema};

/// A Rust type that can be a field of a [`Record`](crate::Record).
pub trait FieldValue {
    /// The row type of the field.
    const TYPE: FieldType;
    /// Whether the field may be absent (`Option<T>`).
    const NULLABLE: bool = false;
    /// Writes the value as field `i`.
    fn write(&self, row: &mut RowWriter<'_>, i: usize);
}

/// A Rust type that can be read from a row field; `'a` is the row's lifetime,
/// so `&'a str` borrows without copying.
pub trait ReadField<'a>: FieldValue + Sized {
    /// Reads field `idx` (`None`: the schema has no such field).
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String>;
}

fn missing(name: &str) -> String {
    format!("field `{name}` is missing")
}

macro_rules! fixed {
    ($t:ty, $ft:expr, $get:ident, $set:ident, $conv_in:expr, $conv_out:expr) => {
        impl FieldValue for $t {
            const TYPE: FieldType = $ft;
            fn write(&self, row: &mut RowWriter<'_>, i: usize) {
                row.$set(i, $conv_in(*self));
            }
        }
        impl<'a> ReadField<'a> for $t {
            fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
                let v = idx.and_then(|i| row.$get(i)).ok_or_else(|| missing(name))?;
                $conv_out(v).map_err(|_| format!("field `{name}` is out of range for {}", stringify!($t)))
            }
        }
    };
}

fixed!(i64, FieldType::Int, int, int, |v| v, Ok::<i64, ()>);
fixed!(i32, FieldType::Int, int, int, i64::from, i32::try_from);
fixed!(u32, FieldType::Int, int, int, i64::from, u32::try_from);
fixed!(f64, FieldType::Float, float, float, |v| v, Ok::<f64, ()>);
fixed!(bool, FieldType::Bool, bool, bool, |v| v, Ok::<bool, ()>);

impl FieldValue for String {
    const TYPE: FieldType = FieldType::Str;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        row.str(i, self);
    }
}

impl<'a> ReadField<'a> for String {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        <&str>::read(row, idx, name).map(str::to_owned)
    }
}

impl FieldValue for &str {
    const TYPE: FieldType = FieldType::Str;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        row.str(i, self);
    }
}

impl<'a> ReadField<'a> for &'a str {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        idx.and_then(|i| row.str(i)).ok_or_else(|| missing(name))
    }
}

impl FieldValue for Cow<'_, str> {
    const TYPE: FieldType = FieldType::Str;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        row.str(i, self);
    }
}

impl<'a> ReadField<'a> for Cow<'a, str> {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        <&str>::read(row, idx, name).map(Cow::Borrowed)
    }
}

impl FieldValue for Vec<u8> {
    const TYPE: FieldType = FieldType::Bytes;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        row.bytes(i, self);
    }
}

impl<'a> ReadField<'a> for Vec<u8> {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        <&[u8]>::read(row, idx, name).map(<[u8]>::to_vec)
    }
}

impl FieldValue for &[u8] {
    const TYPE: FieldType = FieldType::Bytes;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        row.bytes(i, self);
    }
}

impl<'a> ReadField<'a> for &'a [u8] {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        idx.and_then(|i| row.raw_bytes(i)).ok_or_else(|| missing(name))
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    const TYPE: FieldType = T::TYPE;
    const NULLABLE: bool = true;
    fn write(&self, row: &mut RowWriter<'_>, i: usize) {
        if let Some(v) = self {
            v.write(row, i);
        }
    }
}

impl<'a, T: ReadField<'a>> ReadField<'a> for Option<T> {
    fn read(row: &Row<'a>, idx: Option<usize>, name: &str) -> Result<Self, String> {
        match idx {
            Some(i) if row.is_present(i) => T::read(row, Some(i), name).map(Some),
            _ => Ok(None),
        }
    }
}

/// Where each field of a struct sits in the schema of the rows it reads.
#[derive(Debug, Clone, Default)]
pub struct FieldMap(Vec<Option<usize>>);

impl FieldMap {
    /// An empty map for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        FieldMap(Vec::with_capacity(n))
    }

    /// Finds the next struct field, of Rust type `T`, by `name` in `schema`.
    ///
    /// Fails when a required field is missing from the schema, has another
    /// type, or may be absent while `T` is not an `Option`.
    pub fn bind<T: FieldValue>(&mut self, schema: &Schema, name: &str) -> Result<(), String> {
        match schema.index_of(name) {
            Some(i) => {
                let f = schema.field(i);
                if f.ty != T::TYPE {
                    return Err(format!(
                        "field `{name}` is {} in the input but {} in the record type",
                        f.ty,
                        T::TYPE
                    ));
                }
                if f.nullable && !T::NULLABLE {
                    return Err(format!(
                        "field `{name}` may be absent in the input; read it as an Option"
                    ));
                }
                self.0.push(Some(i));
            }
            None if T::NULLABLE => self.0.push(None),
            None => return Err(format!("the input has no field `{name}`")),
        }
        Ok(())
    }

    /// The schema index of struct field `i`.
    pub fn get(&self, i: usize) -> Option<usize> {
        self.0.get(i).copied().flatten()
    }
}
