//! Where a deserialization worker sends the rows that survived its filters:
//! straight to an output as JSON lines, to the keyed stage, or both.

use std::sync::Arc;

use wafer_connectors::OutputWriter;
use wafer_core::json::RowJson;
use wafer_row::{Batch, Row, Schema};

use crate::batch::RawBatch;
use crate::dead_letters::DeadLetters;
use crate::keyed::KeyedRouter;

/// The next stages after deserialization and filters.
pub(crate) struct Downstream {
    /// Straight to an output, rendered as JSON lines.
    pub output: Option<(OutputWriter, RowJson)>,
    /// To the keyed stage.
    pub keyed: Option<KeyedRouter>,
}

impl Downstream {
    /// Sends rows `survivors` (indexes into `rows`) on, with the worker's
    /// watermark before each row and after this batch.
    pub(crate) fn send(
        &mut self,
        schema: &Schema,
        rows: &Batch<'_>,
        survivors: &[u32],
        raw: &RawBatch,
        row_watermarks: &[i64],
        watermark: i64,
        dead: &mut DeadLetters,
        source: &Arc<str>,
    ) {
        if let Some((writer, json)) = &self.output
            && !survivors.is_empty()
        {
            let mut buf = Vec::with_capacity(survivors.len() * 160);
            for &i in survivors {
                let row = Row::new(rows.get(i as usize).unwrap_or_default(), schema.len());
                json.write(&row, &mut buf);
                buf.push(b'\n');
            }
            writer.write(buf);
        }
        if let Some(router) = &mut self.keyed {
            router.send(
                schema,
                rows,
                survivors,
                raw,
                row_watermarks,
                watermark,
                dead,
                source,
            );
        }
    }

    /// Passes checkpoint barrier `id` (chunk `chunk` of the source) on,
    /// with the worker's watermark.
    pub(crate) fn barrier(&mut self, id: u64, chunk: u64, watermark: i64) {
        if let Some((writer, _)) = &self.output {
            writer.barrier(id);
        }
        if let Some(router) = &mut self.keyed {
            router.barrier(id, chunk, watermark);
        }
    }

    /// No more rows will come.
    pub(crate) fn finish(self) {
        if let Some(router) = &self.keyed {
            router.finish();
        }
    }
}
