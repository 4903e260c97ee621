//! wafer's metrics: one registry per process, the host's own metrics, the
//! metrics guests declare, and a tiny HTTP endpoint serving them in
//! Prometheus text format.
//!
//! Hot paths never look a label up per record: workers take the labelled
//! children once ([`StageMetrics`]) and add per batch; per-record histograms
//! go through thread-local buffers flushed per batch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus::core::Collector;
use prometheus::local::LocalHistogram;
pub use prometheus::{Counter, Gauge, Histogram, IntCounter};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A metric that could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("metric {name}: {message}")]
pub struct MetricError {
    name: String,
    message: String,
}

/// Kinds of guest metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// counter
    Counter,
    /// gauge
    Gauge,
    /// histogram
    Histogram,
}

enum GuestMetric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Default)]
struct GuestRegistry {
    by_name: HashMap<(String, String), u32>,
    families: HashMap<String, (GuestKind, String)>,
    metrics: Vec<GuestMetric>,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    filtered: IntCounterVec,
    dead_letters: IntCounterVec,
    payload_bytes: HistogramVec,
    event_age: HistogramVec,
    component_seconds: CounterVec,
    component_calls: IntCounterVec,
    watermark: GaugeVec,
    watermark_lag: GaugeVec,
    source_lag: GaugeVec,
    state_size: GaugeVec,
    peak_rss: prometheus::Gauge,
    checkpoints: IntCounterVec,
    checkpoint_seconds: HistogramVec,
    checkpoint_gauges: GaugeVec,
    guests: RwLock<GuestRegistry>,
}

/// Handles on the checkpoint metrics (see [`Metrics::checkpoint`]).
#[derive(Clone)]
pub struct CheckpointMetrics {
    /// Completed checkpoints and savepoints.
    pub completed: IntCounter,
    /// Failed ones.
    pub failed: IntCounter,
    /// Trigger to manifest.
    pub total: Histogram,
    /// How long keyed workers waited for the state snapshot.
    pub pause: Histogram,
    /// How long committing a cut's Kafka transactions took (exactly-once
    /// Kafka output only).
    pub kafka_commit: Histogram,
    /// Id of the last completed one.
    pub id: Gauge,
    /// Its state size.
    pub bytes: Gauge,
    /// Bytes it uploaded (new state files).
    pub uploaded: Gauge,
    /// Its number of state files.
    pub files: Gauge,
    /// When it completed (epoch seconds).
    pub completed_at: Gauge,
}

/// Peak resident set size of this process (Linux), in bytes.
fn peak_rss() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Names are static and unique; registration can only fail on a
    // programming error, which the unit test below catches.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    /// A registry with the host's metrics.
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        let hist = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            reg(
                &r,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
        let byte_buckets = exponential_buckets(16.0, 4.0, 10).unwrap_or_default();
        let age_buckets = exponential_buckets(0.001, 4.0, 14).unwrap_or_default();
        Arc::new(Metrics {
            records_in: counter("wafer_records_in_total", "Records entering a stage.", &["stage"]),
            records_out: counter("wafer_records_out_total", "Records leaving a stage.", &["stage"]),
            filtered: counter(
                "wafer_records_filtered_total",
                "Records a filter dropped.",
                &["stage"],
            ),
            dead_letters: counter(
                "wafer_dead_letters_total",
                "Records sent to the dead-letter output, by reason.",
                &["reason"],
            ),
            payload_bytes: hist(
                "wafer_payload_bytes",
                "Size of raw records read from a source.",
                &["source"],
                byte_buckets,
            ),
            event_age: hist(
                "wafer_event_age_seconds",
                "Wall-clock time minus event time of deserialized records.",
                &["source"],
                age_buckets,
            ),
            component_seconds: reg(
                &r,
                CounterVec::new(
                    Opts::new(
                        "wafer_component_seconds_total",
                        "Time spent inside guest components.",
                    ),
                    &["stage", "component"],
                )
                .unwrap_or_else(|e| panic!("component_seconds: {e}")),
            ),
            component_calls: counter(
                "wafer_component_calls_total",
                "Batch calls into guest components.",
                &["stage", "component"],
            ),
            watermark: gauge(
                "wafer_watermark_ms",
                "Current event-time watermark of an operator (ms since the epoch).",
                &["operator"],
            ),
            watermark_lag: gauge(
                "wafer_watermark_lag_seconds",
                "Wall-clock time minus the current watermark of an operator.",
                &["operator"],
            ),
            source_lag: gauge(
                "wafer_source_lag_messages",
                "Messages a Kafka partition's reader is behind the partition's end (last stable offset), per source and `topic/partition`.",
                &["source", "partition"],
            ),
            state_size: gauge(
                "wafer_keyed_state",
                "Keyed state of a keyed worker: live state entries (one per key and declared state, or window of a key) and pending timers, now and at their peak.",
                &["worker", "what"],
            ),
            peak_rss: reg(
                &r,
                prometheus::Gauge::new(
                    "wafer_process_peak_rss_bytes",
                    "Peak resident memory of the process.",
                )
                .unwrap_or_else(|e| panic!("peak_rss: {e}")),
            ),
            checkpoints: counter(
                "wafer_checkpoints_total",
                "Checkpoints and savepoints by outcome (completed, failed).",
                &["outcome"],
            ),
            checkpoint_seconds: hist(
                "wafer_checkpoint_seconds",
                "Time from a checkpoint's trigger to its manifest (total), the longest a keyed worker paused for it (pause), and committing its Kafka transactions (kafka_commit).",
                &["phase"],
                exponential_buckets(0.001, 2.0, 16).unwrap_or_default(),
            ),
            checkpoint_gauges: gauge(
                "wafer_checkpoint",
                "The last completed checkpoint: id, bytes of state, bytes uploaded, files, completion time (epoch seconds).",
                &["what"],
            ),
            guests: RwLock::new(GuestRegistry::default()),
            registry: r,
        })
    }

    /// Every metric in Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(rss) = peak_rss() {
            self.peak_rss.set(rss);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Handles for a stage's counters.
    pub fn stage(&self, stage: &str) -> StageMetrics {
        StageMetrics {
            records_in: self.records_in.with_label_values(&[stage]),
            records_out: self.records_out.with_label_values(&[stage]),
            filtered: self.filtered.with_label_values(&[stage]),
        }
    }

    /// The dead-letter counter of `reason`.
    pub fn dead_letters(&self, reason: &str) -> IntCounter {
        self.dead_letters.with_label_values(&[reason])
    }

    /// Payload-size histogram of a source.
    pub fn payload_bytes(&self, source: &str) -> Histogram {
        self.payload_bytes.with_label_values(&[source])
    }

    /// Event-age histogram of a source.
    pub fn event_age(&self, source: &str) -> Histogram {
        self.event_age.with_label_values(&[source])
    }

    /// Time and call counters of a component in a stage.
    pub fn component(&self, stage: &str, component: &str) -> ComponentMetrics {
        ComponentMetrics {
            seconds: self.component_seconds.with_label_values(&[stage, component]),
            calls: self.component_calls.with_label_values(&[stage, component]),
        }
    }

    /// Checkpoint metrics: (completed, failed) counters, (total, pause,
    /// kafka_commit) duration histograms, and gauges of the last completed one (id, state
    /// bytes, uploaded bytes, files, completed at). Its age is the time
    /// since "completed at".
    pub fn checkpoint(&self) -> CheckpointMetrics {
        let g = |w: &str| self.checkpoint_gauges.with_label_values(&[w]);
        CheckpointMetrics {
            completed: self.checkpoints.with_label_values(&["completed"]),
            failed: self.checkpoints.with_label_values(&["failed"]),
            total: self.checkpoint_seconds.with_label_values(&["total"]),
            pause: self.checkpoint_seconds.with_label_values(&["pause"]),
            kafka_commit: self.checkpoint_seconds.with_label_values(&["kafka_commit"]),
            id: g("id"),
            bytes: g("state_bytes"),
            uploaded: g("uploaded_bytes"),
            files: g("files"),
            completed_at: g("completed_at_seconds"),
        }
    }

    /// Watermark gauges of an operator.
    pub fn watermark(&self, operator: &str) -> (Gauge, Gauge) {
        (
            self.watermark.with_label_values(&[operator]),
            self.watermark_lag.with_label_values(&[operator]),
        )
    }

    /// How far a source's partition is behind its end.
    pub fn source_lag(&self, source: &str, partition: &str) -> Gauge {
        self.source_lag.with_label_values(&[source, partition])
    }

    /// Gauges of a keyed worker's state size: (entries, peak entries,
    /// timers, peak timers).
    pub fn state_size(&self, worker: &str) -> [Gauge; 4] {
        ["entries", "entries_peak", "timers", "timers_peak"]
            .map(|w| self.state_size.with_label_values(&[worker, w]))
    }

    /// Declares a guest metric `wafer_guest_<name>{component=...}`; the same
    /// (component, name) always gets the same id.
    pub fn guest_declare(
        &self,
        component: &str,
        name: &str,
        kind: GuestKind,
        help: &str,
    ) -> Result<u32, MetricError> {
        let err = |message: String| MetricError {
            name: name.to_string(),
            message,
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err("names use letters, digits and `_`".into()));
        }
        let mut g = self.guests.write().map_err(|_| err("registry poisoned".into()))?;
        if let Some(id) = g.by_name.get(&(component.to_string(), name.to_string())) {
            return Ok(*id);
        }
        let full = format!("wafer_guest_{name}");
        let help = if help.is_empty() { name } else { help };
        // One family per name across components: its kind is fixed by the
        // first declaration; each component is a child with its own label.
        let (fkind, help) = g
            .families
            .entry(full.clone())
            .or_insert_with(|| (kind, help.to_string()))
            .clone();
        let help = help.as_str();
        if fkind != kind {
            return Err(err(format!("already declared as a {fkind:?}")));
        }
        let metric = match kind {
            GuestKind::Counter => GuestMetric::Counter(
                Counter::with_opts(Opts::new(full, help).const_label("component", component))
                    .map_err(|e| err(e.to_string()))?,
            ),
            GuestKind::Gauge => GuestMetric::Gauge(
                Gauge::with_opts(Opts::new(full, help).const_label("component", component))
                    .map_err(|e| err(e.to_string()))?,
            ),
            GuestKind::Histogram => GuestMetric::Histogram(
                Histogram::with_opts(HistogramOpts::new(full, help).const_label("component", component))
                    .map_err(|e| err(e.to_string()))?,
            ),
        };
        let collector: Box<dyn Collector> = match &metric {
            GuestMetric::Counter(c) => Box::new(c.clone()),
            GuestMetric::Gauge(c) => Box::new(c.clone()),
            GuestMetric::Histogram(c) => Box::new(c.clone()),
        };
        self.registry
            .register(collector)
            .map_err(|e| err(e.to_string()))?;
        let id = g.metrics.len() as u32;
        g.metrics.push(metric);
        g.by_name.insert((component.to_string(), name.to_string()), id);
        Ok(id)
    }

    fn with_guest(&self, id: u32, f: impl FnOnce(&GuestMetric)) {
        if let Ok(g) = self.guests.read()
            && let Some(m) = g.metrics.get(id as usize)
        {
            f(m);
        }
    }

    /// Adds to a guest counter.
    pub fn guest_counter_add(&self, id: u32, v: u64) {
        self.with_guest(id, |m| {
            if let GuestMetric::Counter(c) = m {
                c.inc_by(v as f64);
            }
        });
    }

    /// Sets a guest gauge.
    pub fn guest_gauge_set(&self, id: u32, v: f64) {
        self.with_guest(id, |m| {
            if let GuestMetric::Gauge(g) = m {
                g.set(v);
            }
        });
    }

    /// Observes a guest histogram.
    pub fn guest_observe(&self, id: u32, v: f64) {
        self.with_guest(id, |m| {
            if let GuestMetric::Histogram(h) = m {
                h.observe(v);
            }
        });
    }
}

/// Counters of one stage, resolved once.
#[derive(Clone)]
pub struct StageMetrics {
    /// records in
    pub records_in: IntCounter,
    /// records out
    pub records_out: IntCounter,
    /// records a filter dropped
    pub filtered: IntCounter,
}

/// Time and calls of one component in one stage.
#[derive(Clone)]
pub struct ComponentMetrics {
    /// seconds inside the guest
    pub seconds: Counter,
    /// batch calls
    pub calls: IntCounter,
}

/// A histogram buffered per thread and flushed per batch.
pub struct LocalHist(LocalHistogram);

impl LocalHist {
    /// Buffers observations of `h`.
    pub fn new(h: &Histogram) -> Self {
        LocalHist(h.local())
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }

    /// Publishes buffered observations.
    pub fn flush(&self) {
        self.0.flush();
    }
}

/// Serves `GET /metrics` (and `/healthz`) on `addr` until the task is
/// dropped. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/healthz" => ("200 OK", "ok\n".to_string()),
                    _ => ("404 Not Found", "not found; try /metrics\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_guest_metrics_render() {
        let m = Metrics::new();
        m.stage("deserialize").records_in.inc_by(3);
        m.dead_letters("decode").inc();
        let id = m
            .guest_declare("bots", "dropped", GuestKind::Counter, "bots dropped")
            .unwrap();
        assert_eq!(
            m.guest_declare("bots", "dropped", GuestKind::Counter, "")
                .unwrap(),
            id
        );
        let id2 = m
            .guest_declare("other", "dropped", GuestKind::Counter, "")
            .unwrap();
        assert_ne!(id, id2);
        assert!(m.guest_declare("x", "dropped", GuestKind::Gauge, "").is_err());
        m.guest_counter_add(id, 5);
        let text = m.render();
        assert!(
            text.contains("wafer_records_in_total{stage=\"deserialize\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("wafer_dead_letters_total{reason=\"decode\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wafer_guest_dropped{component=\"bots\"} 5"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let m = Metrics::new();
        m.stage("s").records_out.inc();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), m).await.unwrap();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"));
        assert!(body.contains("wafer_records_out_total{stage=\"s\"} 1"));
        task.abort();
    }
}
