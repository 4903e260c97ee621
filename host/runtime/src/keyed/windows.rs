//! Windows run natively by a keyed worker: accumulators in keyed state,
//! a firing timer at each window's last timestamp and a clean-up timer once
//! its allowed lateness has passed. A record that reaches a window that
//! already fired (but is still within its lateness) updates the accumulator
//! and the window fires again with the new result: outputs are upserts keyed
//! by (key, window start).

use wafer_core::filter::Filter;
use wafer_core::json::RowJson;
use wafer_core::window::{Aggregates, WindowKind, window_expired};
use wafer_row::{Row, RowWriter, Schema};
use wafer_state::{Domain, Fired, SmallKey};

use super::core::state_error;
use super::{Core, OutputBuf};
use crate::RuntimeError;

/// One window operator in one keyed worker.
pub(crate) struct WindowOp {
    /// Operator id of the accumulators and firing timers.
    pub fire_op: u16,
    /// Operator id of the clean-up timers.
    pub cleanup_op: u16,
    pub source: usize,
    pub kind: WindowKind,
    pub filter: Vec<Filter>,
    pub aggs: Aggregates,
    /// Index of its output among the worker's outputs.
    pub output: usize,
    pub schema: Schema,
    pub json: RowJson,
    pub key_schema: Schema,
}

/// Bytes of a session in a key's list of sessions: start, end, accumulator.
fn session_len(acc: usize) -> usize {
    16 + acc
}

fn read_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

impl WindowOp {
    pub(crate) fn owns(&self, op: u16) -> bool {
        op == self.fire_op || op == self.cleanup_op
    }

    /// Whether a row of `source` goes into this window.
    pub(crate) fn accepts(&self, source: usize, row: &Row<'_>) -> bool {
        source == self.source && self.filter.iter().all(|f| f.keep(row, row.as_bytes()))
    }

    /// Whether some window of a record at `t` still takes records.
    pub(crate) fn open_for(&self, t: i64, lateness: i64, wm: i64) -> bool {
        match self.kind {
            WindowKind::Session { gap_ms } => !window_expired(t.saturating_add(gap_ms), lateness, wm),
            _ => self
                .kind
                .assign(t)
                .iter()
                .any(|(_, end)| !window_expired(*end, lateness, wm)),
        }
    }

    fn timers(&self, core: &mut Core, key: &[u8], end: i64, lateness: i64) {
        core.timers
            .register(self.fire_op, key, Domain::EventTime, end - 1);
        if lateness > 0 {
            core.timers.register(
                self.cleanup_op,
                key,
                Domain::EventTime,
                (end - 1).saturating_add(lateness),
            );
        }
    }

    /// Adds a row at event time `t` of key `key`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        core: &mut Core,
        key: &[u8],
        row: &Row<'_>,
        t: i64,
        wm: i64,
        lateness: i64,
        _outputs: &mut [OutputBuf],
    ) -> Result<(), RuntimeError> {
        if let WindowKind::Session { gap_ms } = self.kind {
            return self.add_session(core, key, row, t, gap_ms, lateness);
        }
        for (start, end) in self.kind.assign(t) {
            if window_expired(end, lateness, wm) {
                continue;
            }
            let sub = start.to_be_bytes();
            let aggs = &self.aggs;
            let fresh = core
                .state
                .sub_update(self.fire_op, 0, key, &sub, |v| {
                    let (mut acc, fresh) = match v.take() {
                        Some(a) if aggs.fits(&a) => (a, false),
                        _ => (SmallKey::zeroed(aggs.size()), true),
                    };
                    aggs.add(acc.as_mut_slice(), row);
                    *v = Some(acc);
                    fresh
                })
                .map_err(state_error)?;
            // A new window needs its timers; a window that already fired
            // fires again (with the updated result) at the next watermark.
            if fresh || end - 1 <= wm {
                self.timers(core, key, end, lateness);
            }
        }
        Ok(())
    }

    fn sessions(&self, core: &mut Core, key: &[u8]) -> Result<Vec<(i64, i64, Vec<u8>)>, RuntimeError> {
        let raw = core
            .state
            .sub_get(self.fire_op, 0, key, &[])
            .map_err(state_error)?;
        let acc = self.aggs.size();
        let mut out = Vec::new();
        if let Some(raw) = raw {
            for chunk in raw.chunks_exact(session_len(acc)) {
                out.push((
                    read_i64(&chunk[..8]),
                    read_i64(&chunk[8..16]),
                    chunk[16..].to_vec(),
                ));
            }
        }
        Ok(out)
    }

    fn store_sessions(
        &self,
        core: &mut Core,
        key: &[u8],
        sessions: &[(i64, i64, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        if sessions.is_empty() {
            return core
                .state
                .sub_clear(self.fire_op, 0, key, &[])
                .map_err(state_error);
        }
        let mut raw = Vec::new();
        for (s, e, acc) in sessions {
            raw.extend_from_slice(&s.to_le_bytes());
            raw.extend_from_slice(&e.to_le_bytes());
            raw.extend_from_slice(acc);
        }
        core.state
            .sub_set(self.fire_op, 0, key, &[], raw)
            .map_err(state_error)
    }

    fn add_session(
        &mut self,
        core: &mut Core,
        key: &[u8],
        row: &Row<'_>,
        t: i64,
        gap: i64,
        lateness: i64,
    ) -> Result<(), RuntimeError> {
        let mut sessions = self.sessions(core, key)?;
        let (mut start, mut end) = (t, t.saturating_add(gap));
        let mut acc = self.aggs.empty();
        self.aggs.add(&mut acc, row);
        // Merge every session the new one overlaps.
        let mut kept = Vec::with_capacity(sessions.len());
        for (s, e, a) in sessions.drain(..) {
            if s < end && start < e {
                start = start.min(s);
                end = end.max(e);
                self.aggs.merge(&mut acc, &a);
                core.timers.delete(self.fire_op, key, Domain::EventTime, e - 1);
                if lateness > 0 {
                    core.timers.delete(
                        self.cleanup_op,
                        key,
                        Domain::EventTime,
                        (e - 1).saturating_add(lateness),
                    );
                }
            } else {
                kept.push((s, e, a));
            }
        }
        kept.push((start, end, acc));
        kept.sort_by_key(|(s, _, _)| *s);
        self.timers(core, key, end, lateness);
        self.store_sessions(core, key, &kept)
    }

    /// Handles a firing or clean-up timer.
    pub(crate) fn on_timer(
        &mut self,
        core: &mut Core,
        op: u16,
        fired: &Fired,
        lateness: i64,
        _wm: i64,
        outputs: &mut [OutputBuf],
    ) -> Result<(), RuntimeError> {
        let key = fired.key.as_slice();
        match self.kind {
            WindowKind::Session { .. } => {
                let mut sessions = self.sessions(core, key)?;
                if op == self.fire_op {
                    if let Some((s, e, acc)) = sessions.iter().find(|(_, e, _)| e - 1 == fired.time) {
                        self.emit(key, *s, *e, acc, outputs);
                    }
                    if lateness == 0 {
                        sessions.retain(|(_, e, _)| e - 1 != fired.time);
                        self.store_sessions(core, key, &sessions)?;
                    }
                } else {
                    sessions.retain(|(_, e, _)| (e - 1).saturating_add(lateness) != fired.time);
                    self.store_sessions(core, key, &sessions)?;
                }
            }
            WindowKind::Tumbling { size_ms } | WindowKind::Sliding { size_ms, .. } => {
                let end = if op == self.fire_op {
                    fired.time + 1
                } else {
                    fired.time - lateness + 1
                };
                let start = end - size_ms;
                let sub = start.to_be_bytes();
                if op == self.fire_op {
                    if let Some(acc) = core
                        .state
                        .sub_get(self.fire_op, 0, key, &sub)
                        .map_err(state_error)?
                        && self.aggs.fits(&acc)
                    {
                        self.emit(key, start, end, &acc, outputs);
                    }
                    if lateness == 0 {
                        core.state
                            .sub_clear(self.fire_op, 0, key, &sub)
                            .map_err(state_error)?;
                    }
                } else {
                    core.state
                        .sub_clear(self.fire_op, 0, key, &sub)
                        .map_err(state_error)?;
                }
            }
        }
        Ok(())
    }

    /// Writes one result row: key fields, start, end, aggregates.
    fn emit(&self, key: &[u8], start: i64, end: i64, acc: &[u8], outputs: &mut [OutputBuf]) {
        let k = self.key_schema.len();
        let key_row = Row::new(key, k);
        let mut buf = Vec::with_capacity(128);
        let mut w = RowWriter::new(&mut buf, self.schema.len());
        for i in 0..k {
            w.copy_from(i, &key_row, i, self.key_schema.field(i).ty);
        }
        w.int(k, start).int(k + 1, end);
        self.aggs.write(acc, &mut w, k + 2);
        w.finish();
        if let Some(out) = outputs.get_mut(self.output) {
            self.json.write(&Row::new(&buf, self.schema.len()), &mut out.buf);
            out.buf.push(b'\n');
        }
    }
}
