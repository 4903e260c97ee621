//! What every sink is made of: one thread per output, fed complete JSON
//! lines through a bounded channel by [`OutputWriter`]s, one per producing
//! stage. A sink decides only what its threads do with the lines.
//!
//! **Epochs.** Checkpoint barriers reach sinks as [`OutputWriter::barrier`]
//! calls: a stage that passes barrier `n` says so on every writer it holds.
//! An output's thread sees lines through an [`EpochGate`] that puts them in
//! checkpoint order: lines a producer wrote after passing barrier `n` are
//! held back until every producer has passed `n`; then the gate reports
//! [`Event::EpochEnd`]`(n)`, before which exactly the lines of the cut were
//! delivered. So a file's length at `EpochEnd(n)` is the output as of
//! checkpoint `n` (a restore truncates to it), and a Kafka transaction
//! committed there holds exactly the records of the epoch. Without
//! checkpoints no barrier is ever sent and the gate only passes lines on.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use crate::SinkError;

/// What a producer sends an output's thread.
enum Msg {
    Lines(u32, Vec<u8>),
    Barrier(u32, u64),
    Leave(u32),
}

/// The producers of one output.
#[derive(Default)]
struct Registry {
    next: AtomicU32,
    live: Mutex<BTreeSet<u32>>,
}

impl Registry {
    fn join(&self) -> u32 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        id
    }
}

/// A producer's handle to send complete JSON lines to one output. Each
/// clone is a producer of its own: it takes part in checkpoint epochs and
/// leaves them when dropped.
pub struct OutputWriter {
    tx: Sender<Msg>,
    id: u32,
    registry: Arc<Registry>,
}

impl Clone for OutputWriter {
    fn clone(&self) -> Self {
        OutputWriter {
            tx: self.tx.clone(),
            id: self.registry.join(),
            registry: self.registry.clone(),
        }
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Leave(self.id));
    }
}

impl OutputWriter {
    /// Appends a buffer of complete lines. Blocks when the output is behind.
    /// Returns `false` if the output's thread has stopped (its error is
    /// reported when the sink finishes).
    pub fn write(&self, lines: Vec<u8>) -> bool {
        lines.is_empty() || self.tx.send(Msg::Lines(self.id, lines)).is_ok()
    }

    /// Says that this producer passed checkpoint barrier `n`: what it
    /// writes from now on belongs after checkpoint `n`.
    pub fn barrier(&self, n: u64) -> bool {
        self.tx.send(Msg::Barrier(self.id, n)).is_ok()
    }
}

/// What an output's thread receives through its gate.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Complete lines.
    Lines(Vec<u8>),
    /// Every line of checkpoint `n`'s cut has been delivered, and none after.
    EpochEnd(u64),
}

/// Orders an output's incoming lines by checkpoint epoch (see the module
/// docs).
pub struct EpochGate {
    rx: Receiver<Msg>,
    registry: Arc<Registry>,
    /// The last barrier each producer passed.
    passed: HashMap<u32, u64>,
    left: BTreeSet<u32>,
    /// Barriers some producer passed that are not closed yet.
    open: BTreeSet<u64>,
    /// The last closed barrier.
    closed: u64,
    /// Lines written after a barrier that is not closed: (barrier, lines).
    held: VecDeque<(u64, Vec<u8>)>,
    ready: VecDeque<Event>,
    disconnected: bool,
}

impl EpochGate {
    fn new(rx: Receiver<Msg>, registry: Arc<Registry>) -> Self {
        EpochGate {
            rx,
            registry,
            passed: HashMap::new(),
            left: BTreeSet::new(),
            open: BTreeSet::new(),
            closed: 0,
            held: VecDeque::new(),
            ready: VecDeque::new(),
            disconnected: false,
        }
    }

    /// The next event, waiting at most `timeout`. `Err(Disconnected)` once
    /// every producer is gone and everything was delivered.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(e);
            }
            if self.disconnected {
                return Err(RecvTimeoutError::Disconnected);
            }
            match self.rx.recv_timeout(timeout) {
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => return Err(RecvTimeoutError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    // Every producer is gone: whatever is open closes.
                    self.disconnected = true;
                    self.close_ready(true);
                    for (_, lines) in self.held.drain(..) {
                        self.ready.push_back(Event::Lines(lines));
                    }
                }
            }
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Lines(p, lines) => {
                let b = self.passed.get(&p).copied().unwrap_or(0);
                if b > self.closed {
                    self.held.push_back((b, lines));
                } else {
                    self.ready.push_back(Event::Lines(lines));
                }
            }
            Msg::Barrier(p, n) => {
                self.passed.insert(p, n);
                if n > self.closed {
                    self.open.insert(n);
                }
                self.close_ready(false);
            }
            Msg::Leave(p) => {
                self.left.insert(p);
                self.close_ready(false);
            }
        }
    }

    /// Closes every open barrier all live producers have passed (all of
    /// them if `all`), releasing the lines held behind it.
    fn close_ready(&mut self, all: bool) {
        while let Some(&n) = self.open.first() {
            if !all {
                let live = self.registry.live.lock().unwrap_or_else(PoisonError::into_inner);
                let behind = live
                    .iter()
                    .filter(|p| !self.left.contains(p))
                    .any(|p| self.passed.get(p).copied().unwrap_or(0) < n);
                if behind {
                    return;
                }
            }
            self.open.pop_first();
            self.closed = n;
            self.ready.push_back(Event::EpochEnd(n));
            let mut keep = VecDeque::with_capacity(self.held.len());
            for (b, lines) in self.held.drain(..) {
                if b <= n {
                    self.ready.push_back(Event::Lines(lines));
                } else {
                    keep.push_back((b, lines));
                }
            }
            self.held = keep;
        }
    }
}

/// An output's thread; it returns how much it wrote (bytes or messages).
type OutputThread = JoinHandle<Result<u64, SinkError>>;

struct Output {
    name: String,
    tx: Sender<Msg>,
    registry: Arc<Registry>,
    thread: OutputThread,
}

/// The threads of a sink's outputs and their writers.
#[derive(Default)]
pub(crate) struct OutputThreads {
    outputs: Vec<Output>,
}

impl OutputThreads {
    /// Starts thread `thread` for output `name`, running `body` on the
    /// receiving end of a channel of `capacity` buffers.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        thread: String,
        capacity: usize,
        body: impl FnOnce(EpochGate) -> Result<u64, SinkError> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = bounded::<Msg>(capacity.max(1));
        let registry = Arc::new(Registry::default());
        let gate = EpochGate::new(rx, registry.clone());
        let handle = std::thread::Builder::new()
            .name(thread)
            .spawn(move || body(gate))?;
        self.outputs.push(Output {
            name: name.to_string(),
            tx,
            registry,
            thread: handle,
        });
        Ok(())
    }

    /// A new producer's writer of output `name`.
    pub(crate) fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| OutputWriter {
                tx: o.tx.clone(),
                id: o.registry.join(),
                registry: o.registry.clone(),
            })
    }

    /// Closes every output and waits for its thread; call after dropping
    /// all writers. Returns what each output wrote, or the first output's
    /// error once all threads are done.
    pub(crate) fn finish(self) -> Result<Vec<(String, u64)>, SinkError> {
        let mut handles = Vec::new();
        for o in self.outputs {
            drop(o.tx);
            handles.push((o.name, o.thread));
        }
        let mut out = Vec::new();
        let mut first_err = None;
        for (name, h) in handles {
            match h.join() {
                Ok(Ok(n)) => out.push((name, n)),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(SinkError::Panicked(name));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (OutputThreadsForTest, EpochGate) {
        let (tx, rx) = bounded::<Msg>(64);
        let registry = Arc::new(Registry::default());
        (
            OutputThreadsForTest {
                tx,
                registry: registry.clone(),
            },
            EpochGate::new(rx, registry),
        )
    }

    struct OutputThreadsForTest {
        tx: Sender<Msg>,
        registry: Arc<Registry>,
    }

    impl OutputThreadsForTest {
        fn writer(&self) -> OutputWriter {
            OutputWriter {
                tx: self.tx.clone(),
                id: self.registry.join(),
                registry: self.registry.clone(),
            }
        }
    }

    fn drain(g: &mut EpochGate) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = g.recv_timeout(Duration::from_millis(1)) {
            out.push(match e {
                Event::Lines(l) => String::from_utf8(l).unwrap(),
                Event::EpochEnd(n) => format!("|{n}"),
            });
        }
        out
    }

    #[test]
    fn lines_after_a_barrier_wait_until_every_producer_passed_it() {
        let (t, mut g) = gate();
        let (a, b) = (t.writer(), t.writer());
        a.write(b"a1".to_vec());
        a.barrier(7);
        a.write(b"a2".to_vec());
        b.write(b"b1".to_vec());
        assert_eq!(drain(&mut g), ["a1", "b1"]);
        b.barrier(7);
        b.write(b"b2".to_vec());
        assert_eq!(drain(&mut g), ["|7", "a2", "b2"]);
    }

    #[test]
    fn a_producer_that_leaves_no_longer_holds_epochs_back() {
        let (t, mut g) = gate();
        let (a, b) = (t.writer(), t.writer());
        a.barrier(1);
        a.write(b"a".to_vec());
        a.barrier(2);
        a.write(b"c".to_vec());
        assert_eq!(drain(&mut g), Vec::<String>::new());
        drop(b);
        assert_eq!(drain(&mut g), ["|1", "a", "|2", "c"]);
        drop(a);
        drop(t);
        assert!(matches!(
            g.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        ));
    }
}
