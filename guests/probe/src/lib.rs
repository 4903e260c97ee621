//! A processor for the host's tests of keyed state.
//!
//! For each record it emits how many records of the same key it has counted
//! before (`prev_count`), then counts it. The count lives in value state with
//! a TTL (config `ttl_ms`), so a key that goes quiet for longer starts again
//! from zero; a second piece of state (`seen`) has no TTL. A list (`trail`,
//! no TTL) gets the event time of every record, and `trail_len` says how
//! long it was before. A record whose `event_type` is `@@TRAP@@` makes it
//! panic *after* updating state: the host must roll that update back, so the
//! record is never counted. (Value writes are buffered by the SDK until the
//! call ends, list appends reach the host at once: the trap tests both.)

use serde::Deserialize;
use wafer_sdk::{Config, Context, Error, ListState, Output, Processor, Record, Setup, ValueState};

#[derive(Record)]
struct Event<'a> {
    user_id: &'a str,
    event_type: &'a str,
    event_time_ms: i64,
}

#[derive(Record)]
struct Probe {
    user_id: String,
    event_time_ms: i64,
    prev_count: i64,
    trail_len: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    ttl_ms: Option<u64>,
}

struct ProbeProc {
    count: ValueState<i64>,
    seen: ValueState<bool>,
    trail: ListState<i64>,
    out: Output<Probe>,
}

impl Processor for ProbeProc {
    type Input<'a> = Event<'a>;

    fn new(config: &Config, setup: &mut Setup) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        Ok(ProbeProc {
            count: setup.value("count", s.ttl_ms),
            seen: setup.value("seen", None),
            trail: setup.list("trail", None),
            out: setup.output("probe", &["user_id", "event_time_ms"])?,
        })
    }

    fn process(&mut self, ctx: &mut Context<'_>, ev: Event<'_>) -> Result<(), Error> {
        let prev = self.count.get(ctx).unwrap_or(0);
        self.count.set(ctx, &(prev + 1));
        self.seen.set(ctx, &true);
        let trail_len = self.trail.get(ctx).len() as i64;
        self.trail.push(ctx, &ev.event_time_ms);
        if ev.event_type == "@@TRAP@@" {
            panic!("probe: trap marker for {}", ev.user_id);
        }
        ctx.emit(
            &self.out,
            &Probe {
                user_id: ev.user_id.to_string(),
                event_time_ms: ev.event_time_ms,
                prev_count: prev,
                trail_len,
            },
        );
        Ok(())
    }
}

wafer_sdk::processor!(ProbeProc);
