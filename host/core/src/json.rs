//! Rendering rows as JSON objects (one per line in the file sink).
//!
//! Rows reaching a sink were validated when they entered the host, so their
//! str fields are UTF-8 and only need escaping. Field names are escaped once
//! per schema, not once per row.

use base64::Engine as _;
use wafer_row::{FieldType, Row, Schema};

/// Escapes `s` as the inside of a JSON string and appends it to `out`.
pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// Appends an int.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends a float; NaN and infinities (which JSON lacks) become `null`.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends bytes as a base64 JSON string.
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
    out.push(b'"');
}

/// Renders rows of one schema as JSON objects. Absent fields are left out.
#[derive(Debug, Clone)]
pub struct RowJson {
    /// `"name":` for each field, escaped.
    keys: Vec<Vec<u8>>,
    types: Vec<FieldType>,
}

impl RowJson {
    /// A renderer for rows of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let keys = schema
            .fields()
            .iter()
            .map(|f| {
                let mut k = Vec::with_capacity(f.name.len() + 3);
                write_str(&mut k, f.name.as_bytes());
                k.push(b':');
                k
            })
            .collect();
        RowJson {
            keys,
            types: schema.fields().iter().map(|f| f.ty).collect(),
        }
    }

    /// Appends `row` as one JSON object (no newline).
    pub fn write(&self, row: &Row<'_>, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (i, (key, ty)) in self.keys.iter().zip(&self.types).enumerate() {
            if !row.is_present(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            match ty {
                FieldType::Str => write_str(out, row.raw_bytes(i).unwrap_or_default()),
                FieldType::Bytes => write_base64(out, row.raw_bytes(i).unwrap_or_default()),
                FieldType::Int => write_int(out, row.int(i).unwrap_or_default()),
                FieldType::Float => write_float(out, row.float(i).unwrap_or_default()),
                FieldType::Bool => out.extend_from_slice(if row.bool(i).unwrap_or_default() {
                    b"true"
                } else {
                    b"false"
                }),
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_row::{Field, RowWriter};

    #[test]
    fn renders_rows_that_a_json_parser_reads_back() {
        let schema = Schema::new(
            vec![
                Field::required("s", FieldType::Str),
                Field::required("i", FieldType::Int),
                Field::optional("f", FieldType::Float),
                Field::optional("b", FieldType::Bool),
                Field::optional("raw", FieldType::Bytes),
                Field::optional("absent", FieldType::Int),
                Field::optional("nan", FieldType::Float),
            ],
            None,
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = RowWriter::new(&mut buf, schema.len());
        w.str(0, "quote\" back\\ nl\n ctl\u{1} ü")
            .int(1, i64::MIN)
            .float(2, 0.1)
            .bool(3, false)
            .bytes(4, b"\x00\xff")
            .float(6, f64::NAN);
        w.finish();
        let mut out = Vec::new();
        RowJson::new(&schema).write(&Row::new(&buf, schema.len()), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["s"], "quote\" back\\ nl\n ctl\u{1} ü");
        assert_eq!(v["i"], i64::MIN);
        assert_eq!(v["f"], 0.1);
        assert_eq!(v["b"], false);
        assert_eq!(v["raw"], "AP8=");
        assert!(v.get("absent").is_none());
        assert!(v["nan"].is_null());
    }
}
