//! The file sink: one JSON-lines file per named output in a directory.
//!
//! Workers render rows to JSON themselves (in parallel) and hand the sink
//! whole buffers of complete lines; a writer thread per output appends them.
//! Bounded channels make a slow disk slow the pipeline down instead of
//! filling memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crossbeam_channel::RecvTimeoutError;

use crate::SinkError;
use crate::output::OutputThreads;
use crate::output::OutputWriter;

/// How long an output stays quiet before its buffered lines are flushed.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(200);

/// Writer threads for every output of a job.
pub struct FileSink {
    dir: PathBuf,
    threads: OutputThreads,
}

impl FileSink {
    /// Creates (truncating) `<dir>/<name>.jsonl` for each output and starts
    /// their writer threads.
    pub fn create<'a>(
        dir: &Path,
        outputs: impl IntoIterator<Item = &'a str>,
        capacity: usize,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut threads = OutputThreads::default();
        for name in outputs {
            let path = dir.join(format!("{name}.jsonl"));
            let file = File::create(&path).map_err(|source| SinkError::Io {
                path: path.clone(),
                source,
            })?;
            threads
                .spawn(name, format!("sink-{name}"), capacity, move |rx| {
                    let mut w = BufWriter::with_capacity(1 << 20, file);
                    let mut bytes = 0u64;
                    let io = |source| SinkError::Io {
                        path: path.clone(),
                        source,
                    };
                    // Flush whenever the output falls quiet, so that an
                    // unbounded job's results reach the file promptly.
                    loop {
                        match rx.recv_timeout(IDLE_FLUSH) {
                            Ok(buf) => {
                                w.write_all(&buf).map_err(io)?;
                                bytes += buf.len() as u64;
                            }
                            Err(RecvTimeoutError::Timeout) => w.flush().map_err(io)?,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    w.flush().map_err(io)?;
                    w.get_ref().sync_data().map_err(io)?;
                    Ok(bytes)
                })
                .map_err(|source| SinkError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        Ok(FileSink {
            dir: dir.to_path_buf(),
            threads,
        })
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writer of output `name`.
    pub fn writer(&self, name: &str) -> Option<OutputWriter> {
        self.threads.writer(name)
    }

    /// Waits for every writer to drain and sync; call after dropping all
    /// [`OutputWriter`] clones. Returns bytes written per output.
    pub fn finish(self) -> Result<Vec<(String, u64)>, SinkError> {
        self.threads.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_output_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::create(dir.path(), ["a", "dlq"], 2).unwrap();
        let a = sink.writer("a").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        assert!(a.write(format!("{{\"t\":{t},\"i\":{i}}}\n").into_bytes()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(a);
        let stats = sink.finish().unwrap();
        assert_eq!(stats.len(), 2);
        let text = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 400);
        assert_eq!(std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap(), "");
    }
}
