//! What a guest's store holds and the host functions every world imports:
//! WASI granting nothing, a memory limiter that remembers when it said no,
//! a bounded capture of the guest's stderr (so a panic message can be attached
//! to the dead letter), logging and metrics.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{log, metrics};

/// Where guest logs and metrics go. The runtime implements it over its
/// metrics registry; [`NoTelemetry`] drops metrics.
pub trait GuestTelemetry: Send + Sync {
    /// Declares a metric of component `component`; returns its id.
    fn declare(
        &self,
        component: &str,
        name: &str,
        kind: metrics::MetricKind,
        help: &str,
    ) -> Result<u32, String>;
    /// Adds to a counter.
    fn counter_add(&self, id: u32, value: u64);
    /// Sets a gauge.
    fn gauge_set(&self, id: u32, value: f64);
    /// Observes a histogram value.
    fn histogram_observe(&self, id: u32, value: f64);
}

/// Telemetry that accepts declarations and drops values.
#[derive(Debug, Default)]
pub struct NoTelemetry;

impl GuestTelemetry for NoTelemetry {
    fn declare(&self, _: &str, _: &str, _: metrics::MetricKind, _: &str) -> Result<u32, String> {
        Ok(0)
    }
    fn counter_add(&self, _: u32, _: u64) {}
    fn gauge_set(&self, _: u32, _: f64) {}
    fn histogram_observe(&self, _: u32, _: f64) {}
}

/// Limits linear memory growth and remembers whether it refused one, so that
/// a trap can be reported as "memory limit" rather than a generic trap.
pub(crate) struct Limiter {
    pub(crate) max_memory: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real
        // component and stops a runaway one.
        Ok(desired <= 1_000_000)
    }
}

/// Keeps the last few KiB a guest wrote to stderr. Never fails a write, so a
/// chatty guest cannot trap itself by logging.
#[derive(Clone, Default)]
pub(crate) struct TailPipe(Arc<Mutex<VecDeque<u8>>>);

const TAIL: usize = 4096;

impl TailPipe {
    fn push(&self, bytes: &[u8]) {
        if let Ok(mut q) = self.0.lock() {
            let bytes = &bytes[bytes.len().saturating_sub(TAIL)..];
            let overflow = (q.len() + bytes.len()).saturating_sub(TAIL);
            let drop = overflow.min(q.len());
            q.drain(..drop);
            q.extend(bytes);
        }
    }

    /// Takes what was captured, as text.
    pub(crate) fn take(&self) -> String {
        match self.0.lock() {
            Ok(mut q) => {
                let bytes: Vec<u8> = q.drain(..).collect();
                String::from_utf8_lossy(&bytes).trim().to_string()
            }
            Err(_) => String::new(),
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A wall clock frozen at the epoch and a monotonic clock frozen at zero:
/// what a guest sees unless the job grants it the real clock. Processors get
/// time from the host (`timers.processing-time`) instead.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// What a guest may reach beyond the wafer imports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// The real wall and monotonic clocks (otherwise frozen).
    pub clock: bool,
}

/// The data of one guest instance's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) stderr: TailPipe,
    component: Arc<str>,
    telemetry: Arc<dyn GuestTelemetry>,
    /// Keyed state and timers, lent by the runtime for the duration of a
    /// processor call.
    pub(crate) keyed: Option<Box<dyn crate::processor::KeyedBackend>>,
}

impl HostState {
    pub(crate) fn new(
        component: Arc<str>,
        max_memory: usize,
        grants: Grants,
        telemetry: Arc<dyn GuestTelemetry>,
    ) -> Self {
        let stderr = TailPipe::default();
        let mut b = WasiCtx::builder();
        // No preopened directories, no environment, no arguments, no network:
        // nothing is granted unless listed here.
        b.stderr(stderr.clone())
            .stdout(stderr.clone())
            .allow_ip_name_lookup(false);
        if !grants.clock {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory,
                hit: false,
            },
            stderr,
            component,
            telemetry,
            keyed: None,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let c = &*self.component;
        match level {
            log::Level::Trace => tracing::trace!(component = c, "{message}"),
            log::Level::Debug => tracing::debug!(component = c, "{message}"),
            log::Level::Info => tracing::info!(component = c, "{message}"),
            log::Level::Warn => tracing::warn!(component = c, "{message}"),
            log::Level::Error => tracing::error!(component = c, "{message}"),
        }
    }
}

impl metrics::Host for HostState {
    fn declare(&mut self, name: String, kind: metrics::MetricKind, help: String) -> Result<u32, String> {
        self.telemetry.declare(&self.component, &name, kind, &help)
    }

    fn counter_add(&mut self, id: u32, value: u64) {
        self.telemetry.counter_add(id, value);
    }

    fn gauge_set(&mut self, id: u32, value: f64) {
        self.telemetry.gauge_set(id, value);
    }

    fn histogram_observe(&mut self, id: u32, value: f64) {
        self.telemetry.histogram_observe(id, value);
    }
}

impl crate::bindings::types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_pipe_keeps_only_the_tail() {
        let p = TailPipe::default();
        p.push(&vec![b'a'; TAIL]);
        p.push(b"end");
        let s = p.take();
        assert_eq!(s.len(), TAIL);
        assert!(s.ends_with("aend"));
        assert_eq!(p.take(), "");
    }
}
