//! Guest metrics routed into the process's registry.

use std::sync::Arc;

use wafer_metrics::{GuestKind, Metrics};
use wafer_wasm::GuestTelemetry;
use wafer_wasm::bindings::metrics::MetricKind;

/// [`GuestTelemetry`] over the process's [`Metrics`].
pub(crate) struct MetricsTelemetry(Arc<Metrics>);

impl MetricsTelemetry {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        MetricsTelemetry(metrics)
    }
}

impl GuestTelemetry for MetricsTelemetry {
    fn declare(&self, component: &str, name: &str, kind: MetricKind, help: &str) -> Result<u32, String> {
        let kind = match kind {
            MetricKind::Counter => GuestKind::Counter,
            MetricKind::Gauge => GuestKind::Gauge,
            MetricKind::Histogram => GuestKind::Histogram,
        };
        self.0
            .guest_declare(component, name, kind, help)
            .map_err(|e| e.to_string())
    }

    fn counter_add(&self, id: u32, value: u64) {
        self.0.guest_counter_add(id, value);
    }

    fn gauge_set(&self, id: u32, value: f64) {
        self.0.guest_gauge_set(id, value);
    }

    fn histogram_observe(&self, id: u32, value: f64) {
        self.0.guest_observe(id, value);
    }
}
