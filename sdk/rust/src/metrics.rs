//! Metrics exported by the host next to its own (Prometheus format, prefixed
//! `wafer_guest_` and labelled with the stage).

use crate::__private::host;

/// Kinds of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution of observations.
    Histogram,
}

/// A declared metric. Declare it once (in `new`), use it per record.
#[derive(Debug, Clone, Copy)]
pub struct Metric(Option<u32>);

impl Metric {
    /// Declares a metric; outside a host (unit tests) it is inert.
    pub fn declare(name: &str, kind: Kind, help: &str) -> Result<Self, String> {
        match host() {
            Some(h) => (h.declare)(name, kind, help).map(|id| Metric(Some(id))),
            None => Ok(Metric(None)),
        }
    }

    /// Adds to a counter.
    pub fn add(&self, value: u64) {
        if let (Some(id), Some(h)) = (self.0, host()) {
            (h.counter_add)(id, value);
        }
    }

    /// Sets a gauge.
    pub fn set(&self, value: f64) {
        if let (Some(id), Some(h)) = (self.0, host()) {
            (h.gauge_set)(id, value);
        }
    }

    /// Records an observation in a histogram.
    pub fn observe(&self, value: f64) {
        if let (Some(id), Some(h)) = (self.0, host()) {
            (h.histogram_observe)(id, value);
        }
    }
}
