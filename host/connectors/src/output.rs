//! What every sink is made of: one thread per output, fed complete JSON
//! lines through a bounded channel by [`OutputWriter`]s that stages clone
//! freely. A sink decides only what its threads do with the lines.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::SinkError;

/// A handle to send complete JSON lines to one output.
#[derive(Clone)]
pub struct OutputWriter {
    tx: Sender<Vec<u8>>,
}

impl OutputWriter {
    /// Appends a buffer of complete lines. Blocks when the output is behind.
    /// Returns `false` if the output's thread has stopped (its error is
    /// reported when the sink finishes).
    pub fn write(&self, lines: Vec<u8>) -> bool {
        lines.is_empty() || self.tx.send(lines).is_ok()
    }
}

/// An output's thread; it returns how much it wrote (bytes or messages).
type OutputThread = JoinHandle<Result<u64, SinkError>>;

/// The threads of a sink's outputs and their writers.
#[derive(Default)]
pub(crate) struct OutputThreads {
    outputs: Vec<(String, OutputWriter, OutputThread)>,
}

impl OutputThreads {
    /// Starts thread `thread` for output `name`, running `body` on the
    /// receiving end of a channel of `capacity` buffers.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        thread: String,
        capacity: usize,
        body: impl FnOnce(Receiver<Vec<u8>>) -> Result<u64, SinkError> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = bounded::<Vec<u8>>(capacity.max(1));
        let handle = std::thread::Builder::new().name(thread).spawn(move || body(rx))?;
        self.outputs.push((name.to_string(), OutputWriter { tx }, handle));
        Ok(())
    }

    /// The writer of output `name`.
    pub(crate) fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.outputs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, w, _)| w.clone())
    }

    /// Closes every output and waits for its thread; call after dropping
    /// all writer clones. Returns what each output wrote, or the first
    /// output's error once all threads are done.
    pub(crate) fn finish(self) -> Result<Vec<(String, u64)>, SinkError> {
        let mut handles = Vec::new();
        for (name, w, h) in self.outputs {
            drop(w);
            handles.push((name, h));
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
