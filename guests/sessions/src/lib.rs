//! The `sessions` feature of the user-features reference job.
//!
//! Sessions per key with an inactivity gap in event time (15 minutes by
//! default): an event at `t` joins the open session when
//! `t - last_event_time < gap`, else it closes that session (which is emitted)
//! and starts a new one. A session is also emitted when the watermark passes
//! `last_event_time + gap` (an event-time timer), which at the end of input
//! happens for every open session. Events may arrive a little out of order:
//! a session's start is the earliest event time seen, its end the latest.
//!
//! Config: `{"gap_ms": 900000, "key_field": "user_id", "click_type": "click"}`.
//!
//! One timer per session is kept, set lazily: when it fires before the
//! session's real end (the session grew since), it is set again for the new
//! end. That costs one timer operation per session instead of two per event.

use serde::Deserialize;
use wafer_sdk::{Config, Context, Error, Output, Processor, Record, Setup, Timer, ValueState};

/// The fields the processor reads.
#[derive(Record)]
struct Event<'a> {
    event_type: &'a str,
    event_time_ms: i64,
}

/// One emitted session.
#[derive(Record)]
struct SessionRow {
    #[wafer(rename = "user_id")]
    key: String,
    session_start_ms: i64,
    session_end_ms: i64,
    event_count: i64,
    click_count: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_gap")]
    gap_ms: i64,
    #[serde(default = "default_key")]
    key_field: String,
    #[serde(default = "default_click")]
    click_type: String,
}

fn default_gap() -> i64 {
    900_000
}

fn default_key() -> String {
    "user_id".into()
}

fn default_click() -> String {
    "click".into()
}

/// The open session of a key: start, last event time, events, clicks, and
/// the time the key's timer is set for (0: none).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Session {
    start: i64,
    last: i64,
    events: i64,
    clicks: i64,
    timer: i64,
}

type Stored = (i64, i64, i64, i64, i64);

impl From<Stored> for Session {
    fn from((start, last, events, clicks, timer): Stored) -> Self {
        Session {
            start,
            last,
            events,
            clicks,
            timer,
        }
    }
}

impl From<Session> for Stored {
    fn from(s: Session) -> Self {
        (s.start, s.last, s.events, s.clicks, s.timer)
    }
}

struct Sessions {
    gap: i64,
    key_field: String,
    click_type: String,
    state: ValueState<Stored>,
    out: Output<SessionRow>,
    /// The current key's session while its records are handled.
    current: Option<Session>,
    loaded: Option<Session>,
}

impl Sessions {
    fn emit(&self, ctx: &mut Context<'_>, s: &Session) {
        let key = ctx.key().str(&self.key_field).unwrap_or_default().to_string();
        ctx.emit(
            &self.out,
            &SessionRow {
                key,
                session_start_ms: s.start,
                session_end_ms: s.last,
                event_count: s.events,
                click_count: s.clicks,
            },
        );
    }
}

impl Processor for Sessions {
    type Input<'a> = Event<'a>;

    fn new(config: &Config, setup: &mut Setup) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.gap_ms <= 0 {
            return Err("gap_ms must be positive".into());
        }
        Ok(Sessions {
            gap: s.gap_ms,
            state: setup.value("session", None),
            out: setup.output("sessions", &[&s.key_field, "session_start_ms"])?,
            key_field: s.key_field,
            click_type: s.click_type,
            current: None,
            loaded: None,
        })
    }

    fn begin_key(&mut self, ctx: &mut Context<'_>) {
        self.loaded = self.state.get(ctx).map(Session::from);
        self.current = self.loaded;
    }

    fn process(&mut self, ctx: &mut Context<'_>, ev: Event<'_>) -> Result<(), Error> {
        let t = ev.event_time_ms;
        let click = i64::from(ev.event_type == self.click_type);
        let next = match self.current {
            Some(mut s) if t - s.last < self.gap => {
                s.start = s.start.min(t);
                s.last = s.last.max(t);
                s.events += 1;
                s.clicks += click;
                s
            }
            Some(s) => {
                self.emit(ctx, &s);
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
        };
        self.current = Some(next);
        Ok(())
    }

    fn end_key(&mut self, ctx: &mut Context<'_>) {
        if let Some(mut s) = self.current.take() {
            if s.timer == 0 {
                s.timer = s.last + self.gap;
                ctx.set_timer(s.timer);
            }
            if Some(s) != self.loaded {
                self.state.set(ctx, &s.into());
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let Some(mut s) = self.state.get(ctx).map(Session::from) else {
            return Ok(());
        };
        if s.last + self.gap > timer.time {
            // The session grew since the timer was set: wait for its new end.
            s.timer = s.last + self.gap;
            ctx.set_timer(s.timer);
            self.state.set(ctx, &s.into());
            return Ok(());
        }
        self.emit(ctx, &s);
        self.state.clear(ctx);
        Ok(())
    }
}

wafer_sdk::processor!(Sessions);
