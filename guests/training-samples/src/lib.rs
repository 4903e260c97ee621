//! The training-samples reference job's join (REFERENCE_JOBS.md, job 2).
//!
//! Views (first input) and engagements (second input) of one
//! `(user_id, item_id)` key meet here, in either order. Each view sets an
//! event-time timer at `view_time + interval` (10 minutes); when the
//! watermark passes it, the view's training sample is emitted with label
//! `k` = 1 when an engagement of kind `k` has an event time in
//! `[view_time, view_time + interval]`.
//!
//! Allowed lateness: an engagement may still arrive after the sample was
//! emitted without being late (its event time is within the allowed
//! lateness of the watermark). So an emitted view stays in state, with the
//! labels it was emitted with, until the watermark passes
//! `view_time + interval + lateness`; such an engagement re-emits the
//! sample with the new label (outputs are upserts by `view_id`). After that
//! no engagement of its interval can arrive on time, and the view is
//! removed.
//!
//! Engagements are kept while a view could still use them: one that is
//! older than every waiting view and than `watermark - lateness` (older
//! than any view that is not late) is dropped when a timer of its key
//! fires. Engagements whose view never comes are removed by their TTL.
//! So the state of a key is empty once its samples are final and its
//! engagements can no longer matter.
//!
//! Config (all optional): `{"interval_ms": 600000, "lateness_ms": 60000,
//! "engagement_ttl_ms": 660000, "user_field": "user_id",
//! "item_field": "item_id"}`.

use serde::Deserialize;
use wafer_sdk::{CoProcessor, Config, Context, Error, ListState, MapState, Output, Record, Setup, Timer};

/// The fields read from a view.
#[derive(Record)]
struct View<'a> {
    view_id: &'a str,
    event_time_ms: i64,
}

/// The fields read from an engagement.
#[derive(Record)]
struct Engagement<'a> {
    kind: &'a str,
    event_time_ms: i64,
}

/// One training sample.
#[derive(Record)]
struct Sample {
    view_id: String,
    user_id: String,
    item_id: String,
    view_time_ms: i64,
    like: i64,
    share: i64,
    comment: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_interval")]
    interval_ms: i64,
    #[serde(default = "default_lateness")]
    lateness_ms: i64,
    #[serde(default)]
    engagement_ttl_ms: Option<i64>,
    #[serde(default = "default_user")]
    user_field: String,
    #[serde(default = "default_item")]
    item_field: String,
}

fn default_interval() -> i64 {
    600_000
}

fn default_lateness() -> i64 {
    60_000
}

fn default_user() -> String {
    "user_id".into()
}

fn default_item() -> String {
    "item_id".into()
}

/// The label kinds, in bit order.
const KINDS: [&str; 3] = ["like", "share", "comment"];
/// Set in a view's flags once its sample was emitted.
const EMITTED: i64 = 1 << 8;

/// A waiting or emitted view: its time and flags (label bits, `EMITTED`).
type ViewState = (i64, i64);
/// An engagement: its time and kind (an index into `KINDS`).
type EngagementState = (i64, i64);

struct TrainingSamples {
    interval: i64,
    lateness: i64,
    user_field: String,
    item_field: String,
    views: MapState<String, ViewState>,
    engagements: ListState<EngagementState>,
    out: Output<Sample>,
}

impl TrainingSamples {
    fn labels(&self, engagements: &[EngagementState], view_time: i64) -> i64 {
        engagements
            .iter()
            .filter(|(t, _)| view_time <= *t && *t <= view_time.saturating_add(self.interval))
            .fold(0, |bits, (_, kind)| bits | (1 << kind))
    }

    fn emit(&self, ctx: &mut Context<'_>, view_id: &str, view_time: i64, labels: i64) {
        let key = ctx.key();
        let sample = Sample {
            view_id: view_id.to_string(),
            user_id: key.str(&self.user_field).unwrap_or_default().to_string(),
            item_id: key.str(&self.item_field).unwrap_or_default().to_string(),
            view_time_ms: view_time,
            like: labels & 1,
            share: (labels >> 1) & 1,
            comment: (labels >> 2) & 1,
        };
        ctx.emit(&self.out, &sample);
    }

    /// When a view's sample becomes final: no engagement of its interval
    /// can arrive on time once the watermark is past this.
    fn final_at(&self, view_time: i64) -> i64 {
        view_time
            .saturating_add(self.interval)
            .saturating_add(self.lateness)
            .saturating_add(1)
    }
}

impl CoProcessor for TrainingSamples {
    type Left<'a> = View<'a>;
    type Right<'a> = Engagement<'a>;

    fn new(config: &Config, setup: &mut Setup) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if s.interval_ms <= 0 || s.lateness_ms < 0 {
            return Err("interval_ms must be positive and lateness_ms not negative".into());
        }
        // An engagement must outlive every view that can still use it: a
        // view at most `interval` older that fires at `view + interval`.
        let ttl = s
            .engagement_ttl_ms
            .unwrap_or(s.interval_ms.saturating_add(s.lateness_ms));
        if ttl < s.interval_ms {
            return Err("engagement_ttl_ms must be at least interval_ms".into());
        }
        Ok(TrainingSamples {
            interval: s.interval_ms,
            lateness: s.lateness_ms,
            views: setup.map("views", None),
            engagements: setup.list("engagements", Some(ttl as u64)),
            out: setup.output("samples", &["view_id"])?,
            user_field: s.user_field,
            item_field: s.item_field,
        })
    }

    fn process_left(&mut self, ctx: &mut Context<'_>, view: View<'_>) -> Result<(), Error> {
        let t = view.event_time_ms;
        // A repeated view id replaces the earlier view (samples are upserts
        // by view id); the earlier view's timer then finds nothing to do.
        self.views.put(ctx, &view.view_id.to_string(), &(t, 0));
        ctx.set_timer(t.saturating_add(self.interval));
        Ok(())
    }

    fn process_right(&mut self, ctx: &mut Context<'_>, e: Engagement<'_>) -> Result<(), Error> {
        let Some(kind) = KINDS.iter().position(|k| *k == e.kind) else {
            return Ok(());
        };
        let (t, bit) = (e.event_time_ms, 1i64 << kind);
        self.engagements.push(ctx, &(t, kind as i64));
        // Samples already emitted whose interval holds this engagement are
        // emitted again with the new label.
        for (id, (view_time, flags)) in self.views.entries(ctx) {
            let in_interval = view_time <= t && t <= view_time.saturating_add(self.interval);
            if flags & EMITTED != 0 && in_interval && flags & bit == 0 {
                let flags = flags | bit;
                self.views.put(ctx, &id, &(view_time, flags));
                self.emit(ctx, &id, view_time, flags & !EMITTED);
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let views = self.views.entries(ctx);
        let engagements = self.engagements.get(ctx);
        let mut oldest_waiting = i64::MAX;
        for (id, (view_time, flags)) in views {
            if flags & EMITTED == 0 {
                if view_time.saturating_add(self.interval) > timer.time {
                    oldest_waiting = oldest_waiting.min(view_time);
                    continue;
                }
                let labels = self.labels(&engagements, view_time);
                self.emit(ctx, &id, view_time, labels);
                if self.lateness == 0 {
                    self.views.remove(ctx, &id);
                } else {
                    self.views.put(ctx, &id, &(view_time, labels | EMITTED));
                    ctx.set_timer(self.final_at(view_time));
                }
            } else if self.final_at(view_time) <= timer.time {
                self.views.remove(ctx, &id);
            }
        }
        // Engagements older than every waiting view and than any view that
        // is not late can no longer change a sample.
        let horizon = oldest_waiting.min(ctx.watermark().max(timer.time).saturating_sub(self.lateness));
        let kept: Vec<EngagementState> = engagements
            .iter()
            .copied()
            .filter(|(t, _)| *t >= horizon)
            .collect();
        if kept.is_empty() {
            if !engagements.is_empty() {
                self.engagements.clear(ctx);
            }
        } else if kept.len() != engagements.len() {
            self.engagements.set(ctx, &kept);
        }
        Ok(())
    }
}

wafer_sdk::co_processor!(TrainingSamples);
