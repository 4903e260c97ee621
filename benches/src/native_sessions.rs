//! The `sessions` processor of `guests/sessions`, compiled natively: the
//! same state layout, lazy timer and emission rules, reaching keyed state
//! through the same backend the Wasm instance uses. Benchmarks compare the
//! two to measure the Wasm tax of a stateful processor.

use wafer_row::{BatchBuf, Field, FieldType, Row, RowWriter, Schema};
use wafer_runtime::{
    CallError, KeyedBackend, OutputSpec, ProcInputs, ProcOutput, Process, ProcessorSpec, StateKind,
    StateSpec, TimeDomain, TimerBatch,
};

const GAP: i64 = 900_000;

/// Native sessions.
pub struct NativeSessions {
    spec: ProcessorSpec,
    input_fields: usize,
    event_type: usize,
    event_time: usize,
    key: Schema,
    key_field: usize,
}

impl NativeSessions {
    /// Binds to the processor's input like the guest does.
    pub fn new(inputs: &ProcInputs) -> Result<Self, String> {
        let (_, schema) = inputs.inputs.first().ok_or("no input")?;
        let out = Schema::new(
            vec![
                Field::required("user_id", FieldType::Str),
                Field::required("session_start_ms", FieldType::Int),
                Field::required("session_end_ms", FieldType::Int),
                Field::required("event_count", FieldType::Int),
                Field::required("click_count", FieldType::Int),
            ],
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(NativeSessions {
            spec: ProcessorSpec {
                states: vec![StateSpec {
                    name: "session".into(),
                    kind: StateKind::Value,
                    ttl_ms: None,
                }],
                outputs: vec![OutputSpec {
                    name: "sessions".into(),
                    schema: out,
                    key: vec!["user_id".into(), "session_start_ms".into()],
                }],
            },
            input_fields: schema.len(),
            event_type: schema.index_of("event_type").ok_or("no event_type")?,
            event_time: schema.index_of("event_time_ms").ok_or("no event_time_ms")?,
            key_field: inputs.key.index_of("user_id").ok_or("no user_id key")?,
            key: inputs.key.clone(),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
struct Session {
    start: i64,
    last: i64,
    events: i64,
    clicks: i64,
    timer: i64,
}

fn decode(b: &[u8]) -> Option<Session> {
    let v: Vec<i64> = b
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    match v[..] {
        [start, last, events, clicks, timer] => Some(Session {
            start,
            last,
            events,
            clicks,
            timer,
        }),
        _ => None,
    }
}

fn encode(s: &Session) -> Vec<u8> {
    [s.start, s.last, s.events, s.clicks, s.timer]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn failed(e: String) -> CallError {
    CallError::Trap(e)
}

impl NativeSessions {
    fn emit(&self, out: &mut ProcOutput, key: &[u8], s: &Session) {
        let user = Row::new(key, self.key.len())
            .str(self.key_field)
            .unwrap_or_default();
        let mut w = RowWriter::new(&mut out.rows.data, 5);
        w.str(0, user)
            .int(1, s.start)
            .int(2, s.last)
            .int(3, s.events)
            .int(4, s.clicks);
        w.finish();
        out.rows.end_record();
        out.outputs.push(0);
    }
}

impl Process for NativeSessions {
    fn spec(&self) -> &ProcessorSpec {
        &self.spec
    }

    fn process(
        &mut self,
        _input: u32,
        batch: wafer_wasm::KeyedBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        let b = keyed.as_mut().ok_or_else(|| failed("no backend".into()))?;
        let rows = wafer_row::Batch::new(batch.rows, batch.row_ends);
        let keys = wafer_row::Batch::new(batch.keys, batch.key_ends);
        let mut out = ProcOutput {
            rows: BatchBuf::new(),
            ..ProcOutput::default()
        };
        let mut start = 0usize;
        for (g, &end) in batch.group_ends.iter().enumerate() {
            let key = keys.get(g).unwrap_or_default();
            let loaded = b.value_get(0, g as u32).map_err(failed)?.and_then(|v| decode(&v));
            let mut current = loaded;
            for i in start..end as usize {
                let row = Row::new(rows.get(i).unwrap_or_default(), self.input_fields);
                let t = row.int(self.event_time).unwrap_or_default();
                let click = i64::from(row.str(self.event_type) == Some("click"));
                current = Some(match current {
                    Some(mut s) if t - s.last < GAP => {
                        s.start = s.start.min(t);
                        s.last = s.last.max(t);
                        s.events += 1;
                        s.clicks += click;
                        s
                    }
                    Some(s) => {
                        self.emit(&mut out, key, &s);
                        Session {
                            start: t,
                            last: t,
                            events: 1,
                            clicks: click,
                            timer: s.timer,
                        }
                    }
                    None => Session {
                        start: t,
                        last: t,
                        events: 1,
                        clicks: click,
                        timer: 0,
                    },
                });
            }
            if let Some(mut s) = current {
                if s.timer == 0 {
                    s.timer = s.last + GAP;
                    b.timer_register(g as u32, TimeDomain::EventTime, s.timer)
                        .map_err(failed)?;
                }
                if Some(s) != loaded {
                    b.value_set(0, g as u32, encode(&s)).map_err(failed)?;
                }
            }
            start = end as usize;
        }
        Ok(out)
    }

    fn on_timer(
        &mut self,
        fired: TimerBatch<'_>,
        keyed: &mut Option<Box<dyn KeyedBackend>>,
    ) -> Result<ProcOutput, CallError> {
        let b = keyed.as_mut().ok_or_else(|| failed("no backend".into()))?;
        let keys = wafer_row::Batch::new(fired.keys, fired.key_ends);
        let mut out = ProcOutput::default();
        for (i, &time) in fired.times.iter().enumerate() {
            let Some(mut s) = b.value_get(0, i as u32).map_err(failed)?.and_then(|v| decode(&v)) else {
                continue;
            };
            if s.last + GAP > time {
                s.timer = s.last + GAP;
                b.timer_register(i as u32, TimeDomain::EventTime, s.timer)
                    .map_err(failed)?;
                b.value_set(0, i as u32, encode(&s)).map_err(failed)?;
                continue;
            }
            self.emit(&mut out, keys.get(i).unwrap_or_default(), &s);
            b.clear(0, i as u32).map_err(failed)?;
        }
        Ok(out)
    }
}
