//! Batched reads from librdkafka: the host's one `unsafe` module.
//!
//! rust-rdkafka's `BaseConsumer::poll` hands out one message per call, and
//! each call reads the clock, takes the queue's lock, wraps an event and
//! allocates an `Arc` for it. At ~500k messages/s that was ~5% of the CPU of
//! a two-core machine running a whole job (BENCHMARKS.md, Kafka source).
//! librdkafka's `rd_kafka_consume_batch_queue` pops up to N messages under
//! one lock, but rust-rdkafka does not expose it. So the reader keeps the
//! messages of each of its partitions on that partition's own queue (not
//! forwarded to the consumer's) and reads those in batches, here, which
//! also lets it take from each partition in turn; rebalances, client
//! errors and anything not routed still come through `poll`. A partition
//! is routed before it is assigned, so no message of it can sit on both
//! queues and reach the job out of order. When every partition queue is
//! empty the reader sleeps until librdkafka's queue event callback says
//! one got something.
//!
//! Safety rests on four rules, each kept by the types below:
//! - the queues are used only while their consumer lives: [`MessageQueue`]
//!   and [`Batch`] are fields of the reader declared before the consumer,
//!   so they are dropped first;
//! - the wake-up flag the event callback writes lives until the callback
//!   is disabled on every queue (in [`MessageQueue`]'s drop);
//! - every message popped is destroyed exactly once: a [`Batch`] owns the
//!   pointers it holds and destroys them when cleared or dropped, and a
//!   [`Msg`] borrows from its batch;
//! - librdkafka's queue and handle functions are thread-safe, so the queue
//!   may be shared with the rebalance callback.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;

/// The reader's partitions' own queues, read one by one so that the
/// reader can take from each in turn.
///
/// librdkafka forwards every partition's queue to the consumer's by
/// default, in the order its fetches came in. Behind a backlog that order
/// is a whole fetch response (or the whole rest of the topic) of one
/// partition before the next: one partition ran 370,000 messages ahead of
/// the other in a million-message backfill, and the job, whose watermark
/// is the slowest partition's, held that much more open state. With a
/// queue per partition the reader merges them (see `KafkaReader`).
pub(crate) struct MessageQueue {
    rk: *mut rd::rd_kafka_t,
    /// Routed partitions and their queue handles, in order of routing
    /// (indices never change; handles live until drop).
    parts: Mutex<Vec<((String, i32), *mut rd::rd_kafka_queue_t)>>,
    /// Set by librdkafka when an empty partition queue gets an op.
    wake: Arc<Wake>,
}

/// A wake-up flag librdkafka's threads raise.
#[derive(Default)]
struct Wake {
    raised: Mutex<bool>,
    cond: Condvar,
}

/// librdkafka's queue event callback: an empty queue got an op. Called on
/// librdkafka's threads, under that queue's lock.
unsafe extern "C" fn on_queue_event(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Wake` of a live `MessageQueue`: the callback
    // is disabled on every queue before the `Wake` can be freed.
    let wake = unsafe { &*opaque.cast::<Wake>() };
    *wake.raised.lock().unwrap_or_else(PoisonError::into_inner) = true;
    wake.cond.notify_one();
}

// SAFETY: librdkafka's handle and queue functions may be called from any
// thread; the pointers stay valid while the consumer lives (see the module
// documentation).
unsafe impl Send for MessageQueue {}
// SAFETY: as above; the only Rust-side state is behind mutexes.
unsafe impl Sync for MessageQueue {}

impl MessageQueue {
    /// No partitions yet, for `consumer`'s client.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        MessageQueue {
            rk: consumer.client().native_ptr(),
            parts: Mutex::new(Vec::new()),
            wake: Arc::new(Wake::default()),
        }
    }

    /// Keeps the messages (and errors) of a partition on its own queue,
    /// for [`MessageQueue::pop`]. Returns `false` if librdkafka has no such
    /// partition queue.
    pub(crate) fn route(&self, topic: &str, partition: i32) -> bool {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if parts.iter().any(|(k, _)| k.0 == topic && k.1 == partition) {
            return true;
        }
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `rk` is live; `name` outlives the call.
        let pq = unsafe { rd::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition) };
        if pq.is_null() {
            return false;
        }
        // SAFETY: `pq` is live. Forwarding to nothing marks it as the
        // application's, so librdkafka does not forward it to the
        // consumer's queue when fetching starts; the wake-up pointer
        // outlives the queue's use (disabled in drop).
        unsafe {
            rd::rd_kafka_queue_forward(pq, std::ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(
                pq,
                Some(on_queue_event),
                Arc::as_ptr(&self.wake).cast_mut().cast(),
            );
        }
        parts.push(((topic.to_string(), partition), pq));
        true
    }

    /// How many partitions are routed (their indices are `0..len`).
    pub(crate) fn len(&self) -> usize {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Appends up to `max` messages of partition `part` to `batch` without
    /// waiting. Returns how many came.
    pub(crate) fn pop(&self, part: usize, batch: &mut Batch, max: usize) -> usize {
        let Some(pq) = self
            .parts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(part)
            .map(|&(_, q)| q)
        else {
            return 0;
        };
        batch.msgs.reserve(max);
        let have = batch.msgs.len();
        if max == 0 || batch.msgs.capacity() - have < max {
            return 0;
        }
        // SAFETY: `pq` is live until drop; librdkafka writes at most `max`
        // pointers into the spare capacity checked above, and `set_len`
        // covers exactly those it reports.
        unsafe {
            let n = rd::rd_kafka_consume_batch_queue(pq, 0, batch.msgs.as_mut_ptr().add(have), max);
            let n = usize::try_from(n).unwrap_or(0).min(max);
            batch.msgs.set_len(have + n);
            n
        }
    }

    /// Forgets earlier wake-ups: call before looking at the queues, then
    /// [`MessageQueue::wait`] if they were all empty.
    pub(crate) fn arm(&self) {
        *self.wake.raised.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Waits until an empty partition queue gets something after the last
    /// [`MessageQueue::arm`], or until `until`.
    pub(crate) fn wait(&self, until: Instant) {
        let mut raised = self.wake.raised.lock().unwrap_or_else(PoisonError::into_inner);
        while !*raised {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            raised = match self.wake.cond.wait_timeout(raised, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        let parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(PoisonError::into_inner));
        for (_, pq) in parts {
            // SAFETY: `rk` and `pq` are live (the consumer is dropped after
            // this); once the callback is disabled (under the queue's lock)
            // librdkafka no longer uses the wake-up pointer; messages still
            // queued stay with the partition, whose handle is released once.
            unsafe {
                rd::rd_kafka_queue_cb_event_enable(pq, None, std::ptr::null_mut());
                rd::rd_kafka_queue_destroy(pq);
            }
        }
    }
}

/// Messages popped from a [`MessageQueue`], owned until cleared.
#[derive(Default)]
pub(crate) struct Batch {
    msgs: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: messages may be destroyed from any thread.
unsafe impl Send for Batch {}

impl Batch {
    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Message `i`.
    ///
    /// Each message was written by librdkafka's broker thread, on another
    /// core: the first read of one waited for its cache line to move over,
    /// most of the reader's own time per message. So the message a few
    /// places ahead is prefetched while this one is handed over.
    pub(crate) fn get(&self, i: usize) -> Option<Msg<'_>> {
        const AHEAD: usize = 8;
        if let Some(&next) = self.msgs.get(i + AHEAD) {
            prefetch(next);
        }
        // SAFETY: non-null pointers in `msgs` are live messages owned by
        // this batch; the view borrows the batch.
        let m = unsafe { self.msgs.get(i)?.as_ref() }?;
        Some(Msg { m })
    }

    /// Destroys the messages.
    pub(crate) fn clear(&mut self) {
        for m in self.msgs.drain(..) {
            if !m.is_null() {
                // SAFETY: each popped message is destroyed once, here.
                unsafe { rd::rd_kafka_message_destroy(m) };
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: it never
/// faults, whatever `p` is).
#[inline(always)]
fn prefetch(p: *const rd::rd_kafka_message_t) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One message of a batch.
pub(crate) struct Msg<'a> {
    m: &'a rd::rd_kafka_message_t,
}

impl<'a> Msg<'a> {
    /// The error it carries (`RD_KAFKA_RESP_ERR_NO_ERROR` for a message).
    pub(crate) fn err(&self) -> RDKafkaRespErr {
        self.m.err
    }

    pub(crate) fn partition(&self) -> i32 {
        self.m.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.m.offset
    }

    /// The value's bytes (empty for a null value).
    pub(crate) fn payload(&self) -> &'a [u8] {
        if self.m.payload.is_null() || self.m.len == 0 {
            return &[];
        }
        // SAFETY: librdkafka guarantees `len` bytes at `payload`, alive as
        // long as the message.
        unsafe { std::slice::from_raw_parts(self.m.payload as *const u8, self.m.len) }
    }

    /// The topic's name, if the message has one that is UTF-8.
    pub(crate) fn topic(&self) -> Option<&'a str> {
        if self.m.rkt.is_null() {
            return None;
        }
        // SAFETY: a message's topic handle and its name live as long as it.
        let name = unsafe { rd::rd_kafka_topic_name(self.m.rkt) };
        if name.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string owned by the topic handle.
        unsafe { CStr::from_ptr(name) }.to_str().ok()
    }

    /// When it was produced (or appended), epoch ms, if known.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message and a local out-parameter.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.m, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0).then_some(ts)
    }
}
