//! The file sink: one JSON-lines file per named output in a directory.
//!
//! Workers render rows to JSON themselves (in parallel) and hand the sink
//! whole buffers of complete lines; a writer thread per output appends them.
//! Bounded channels make a slow disk slow the pipeline down instead of
//! filling memory.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::output::{Event, OutputThreads, OutputWriter};
use crate::{SinkCut, SinkError};

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
        Self::resume(dir, outputs, capacity, &HashMap::new(), None)
    }

    /// Like [`create`](Self::create), but an output listed in `lengths`
    /// keeps its first `length` bytes (what a checkpoint recorded; anything
    /// written after that cut is cut off, and a file shorter than that is an
    /// error), and each checkpoint epoch's end is reported to `cuts` with
    /// the file's length, once its lines are on disk.
    pub fn resume<'a>(
        dir: &Path,
        outputs: impl IntoIterator<Item = &'a str>,
        capacity: usize,
        lengths: &HashMap<String, u64>,
        cuts: Option<Sender<SinkCut>>,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut threads = OutputThreads::default();
        for name in outputs {
            let path = dir.join(format!("{name}.jsonl"));
            let keep = lengths.get(name).copied().unwrap_or(0);
            let file = open_at(&path, keep)?;
            let cuts = cuts.clone();
            let output = name.to_string();
            threads
                .spawn(name, format!("sink-{name}"), capacity, move |mut gate| {
                    let mut w = BufWriter::with_capacity(1 << 20, file);
                    let mut bytes = 0u64;
                    let io = |source| SinkError::Io {
                        path: path.clone(),
                        source,
                    };
                    // Flush whenever the output falls quiet, so that an
                    // unbounded job's results reach the file promptly.
                    loop {
                        match gate.recv_timeout(IDLE_FLUSH) {
                            Ok(Event::Lines(buf)) => {
                                w.write_all(&buf).map_err(io)?;
                                bytes += buf.len() as u64;
                            }
                            Ok(Event::EpochEnd(n)) => {
                                // The checkpoint may only record a length
                                // that is on disk.
                                w.flush().map_err(io)?;
                                w.get_ref().sync_data().map_err(io)?;
                                if let Some(c) = &cuts {
                                    let _ = c.send(SinkCut {
                                        output: output.clone(),
                                        barrier: n,
                                        file_length: Some(keep + bytes),
                                    });
                                }
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

/// Opens `path` for appending after its first `keep` bytes (creating it
/// empty when `keep` is 0).
fn open_at(path: &Path, keep: u64) -> Result<std::fs::File, SinkError> {
    let io = |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < keep {
        return Err(io(std::io::Error::other(format!(
            "the checkpoint recorded {keep} bytes but the file has {len}: it was changed outside the job"
        ))));
    }
    file.set_len(keep).map_err(io)?;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(file)
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

    #[test]
    fn resuming_cuts_each_file_back_to_its_checkpoint_and_reports_epochs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "1\n2\ntorn").unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "x\n").unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let lengths = HashMap::from([("a".to_string(), 4u64)]);
        let sink = FileSink::resume(dir.path(), ["a", "b"], 2, &lengths, Some(tx)).unwrap();
        let a = sink.writer("a").unwrap();
        a.write(b"3\n".to_vec());
        a.barrier(9);
        a.write(b"4\n".to_vec());
        drop(a);
        sink.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap(),
            "1\n2\n3\n4\n"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("b.jsonl")).unwrap(), "");
        let cuts: Vec<SinkCut> = rx.try_iter().collect();
        assert_eq!(
            cuts,
            vec![SinkCut {
                output: "a".into(),
                barrier: 9,
                file_length: Some(6)
            }]
        );
        let short = HashMap::from([("a".to_string(), 100u64)]);
        let err = FileSink::resume(dir.path(), ["a"], 2, &short, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("changed outside the job"), "{err}");
    }
}
