//! Where a deserialization worker sends the rows that survived its filters.

use wafer_connectors::file_sink::OutputWriter;
use wafer_core::json::RowJson;
use wafer_row::{Batch, Row, Schema};

/// The next stage after deserialization and filters.
pub(crate) enum Downstream {
    /// Straight to an output, rendered as JSON lines.
    Output {
        /// the output's writer
        writer: OutputWriter,
        /// renderer for the source's schema
        json: RowJson,
    },
}

impl Downstream {
    /// Sends rows `survivors` (indexes into `rows`) on.
    pub(crate) fn send(&mut self, schema: &Schema, rows: &Batch<'_>, survivors: &[u32]) {
        match self {
            Downstream::Output { writer, json } => {
                if survivors.is_empty() {
                    return;
                }
                let mut buf = Vec::with_capacity(survivors.len() * 160);
                for &i in survivors {
                    let row = Row::new(rows.get(i as usize).unwrap_or_default(), schema.len());
                    json.write(&row, &mut buf);
                    buf.push(b'\n');
                }
                writer.write(buf);
            }
        }
    }

    /// No more rows will come.
    pub(crate) fn finish(self) {}
}
