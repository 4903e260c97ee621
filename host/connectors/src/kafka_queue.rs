//! Batched reads from librdkafka: the host's one `unsafe` module.
//!
//! rust-rdkafka's `BaseConsumer::poll` hands out one message per call, and
//! each call reads the clock, takes the queue's lock, wraps an event and
//! allocates an `Arc` for it. At ~500k messages/s that was ~5% of the CPU of
//! a two-core machine running a whole job (BENCHMARKS.md, Kafka source).
//! librdkafka's `rd_kafka_consume_batch_queue` pops up to N messages under
//! one lock, but rust-rdkafka does not expose it. So the reader routes the
//! messages of its partitions to a queue of its own and reads that in
//! batches, here; rebalances, client errors and anything not routed still
//! come through `poll`. A partition is routed before it is assigned, so no
//! message of it can sit on both queues and reach the job out of order.
//!
//! Safety rests on three rules, each kept by the types below:
//! - the queue is used only while its consumer lives: [`MessageQueue`] and
//!   [`Batch`] are fields of the reader declared before the consumer, so
//!   they are dropped first;
//! - every message popped is destroyed exactly once: a [`Batch`] owns the
//!   pointers it holds and destroys them when cleared or dropped, and a
//!   [`Msg`] borrows from its batch;
//! - librdkafka's queue and handle functions are thread-safe, so the queue
//!   may be shared with the rebalance callback.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;

/// A queue of the reader's own that its partitions' messages go to.
pub(crate) struct MessageQueue {
    rk: *mut rd::rd_kafka_t,
    q: *mut rd::rd_kafka_queue_t,
    /// Partitions routed here, un-routed on drop.
    routed: Mutex<BTreeSet<(String, i32)>>,
}

// SAFETY: librdkafka's handle and queue functions may be called from any
// thread; the pointers stay valid while the consumer lives (see the module
// documentation).
unsafe impl Send for MessageQueue {}
// SAFETY: as above; the only Rust-side state is behind a mutex.
unsafe impl Sync for MessageQueue {}

impl MessageQueue {
    /// A new, empty queue of `consumer`'s client.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is the live client handle of `consumer`.
        let q = unsafe { rd::rd_kafka_queue_new(rk) };
        (!q.is_null()).then(|| MessageQueue {
            rk,
            q,
            routed: Mutex::new(BTreeSet::new()),
        })
    }

    /// Routes the messages (and errors) of a partition to this queue.
    /// Returns `false` if librdkafka has no such partition queue.
    pub(crate) fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `rk` is live; `name` outlives the call.
        let pq = unsafe { rd::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition) };
        if pq.is_null() {
            return false;
        }
        // SAFETY: both queues are live; forwarding keeps its own reference,
        // so the partition queue's handle is released at once.
        unsafe {
            rd::rd_kafka_queue_forward(pq, self.q);
            rd::rd_kafka_queue_destroy(pq);
        }
        self.routed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_string(), partition));
        true
    }

    /// Pops up to `max` messages into `batch` (emptied first), waiting up to
    /// `timeout` for the first and then up to `fill` for the rest. Returns
    /// how many arrived.
    ///
    /// `rd_kafka_consume_batch_queue` waits out its timeout until it has
    /// *all* the messages asked for. Asked with the whole linger, it held
    /// the last messages of every bounded read (and any chunk the queue ran
    /// short of) for all of it: a tenth of a million-message run. Asked for
    /// what is there and no more, it handed over the trickle of messages
    /// librdkafka's broker thread enqueues while it parses a fetch, and the
    /// job spent more CPU on many small chunks. So: what is there; else one
    /// message within `timeout`; then the rest within `fill`, which the
    /// broker thread's pace fills in about a millisecond.
    pub(crate) fn consume(&self, timeout: Duration, fill: Duration, batch: &mut Batch, max: usize) -> usize {
        batch.clear();
        let max = max.max(1);
        batch.msgs.reserve(max);
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let mut n = self.pop(batch, 0, max);
        if n == 0 && !timeout.is_zero() {
            n = self.pop(batch, ms(timeout).max(1), 1);
        }
        if n > 0 && n < max && !fill.is_zero() {
            n += self.pop(batch, ms(fill).max(1), max - n);
        }
        n
    }

    /// Appends up to `max` messages to `batch` (which has room for them),
    /// waiting up to `ms` for all of them. Returns how many came.
    fn pop(&self, batch: &mut Batch, ms: i32, max: usize) -> usize {
        let have = batch.msgs.len();
        if max == 0 || batch.msgs.capacity() - have < max {
            return 0;
        }
        // SAFETY: the queue is live; librdkafka writes at most `max`
        // pointers into the spare capacity checked above, and `set_len`
        // covers exactly those it reports.
        unsafe {
            let n = rd::rd_kafka_consume_batch_queue(self.q, ms, batch.msgs.as_mut_ptr().add(have), max);
            let n = usize::try_from(n).unwrap_or(0).min(max);
            batch.msgs.set_len(have + n);
            n
        }
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        let routed = std::mem::take(&mut *self.routed.lock().unwrap_or_else(PoisonError::into_inner));
        for (topic, partition) in routed {
            let Ok(name) = CString::new(topic) else {
                continue;
            };
            // SAFETY: `rk` is live (the consumer is dropped after this); a
            // null destination ends the forwarding.
            unsafe {
                let pq = rd::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition);
                if !pq.is_null() {
                    rd::rd_kafka_queue_forward(pq, std::ptr::null_mut());
                    rd::rd_kafka_queue_destroy(pq);
                }
            }
        }
        // SAFETY: our handle, released once; messages still queued are
        // destroyed with it.
        unsafe { rd::rd_kafka_queue_destroy(self.q) };
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
    /// The messages, in queue order.
    ///
    /// Each message was written by librdkafka's broker thread, on another
    /// core: the first read of one waited for its cache line to move over,
    /// most of the reader's own time per message. So the message a few
    /// places ahead is prefetched while this one is handed over.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Msg<'_>> {
        const AHEAD: usize = 8;
        self.msgs.iter().enumerate().filter_map(|(i, &m)| {
            if let Some(&next) = self.msgs.get(i + AHEAD) {
                prefetch(next);
            }
            // SAFETY: non-null pointers in `msgs` are live messages owned by
            // this batch; the view borrows the batch.
            unsafe { m.as_ref() }.map(|m| Msg { m })
        })
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
