//! The file source: raw records out of a file, a directory or a glob.
//!
//! Files are read in path order, each from start to end in large chunks; a
//! [`Framer`] cuts the chunks into records. The reader's progress is a
//! [`FilePosition`] (the current file and the offset of the next unread
//! record in it); a reader opened at a position resumes exactly there, which
//! is what checkpoints record.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wafer_core::framing::{FrameError, Framer, Framing, Step};

use crate::SourceError;

/// Where a file source is: files before `file` (in path order) are done,
/// and `file` is read up to `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// The file being read.
    pub file: PathBuf,
    /// Offset of the next unread byte in it.
    pub offset: u64,
}

/// What the reader found next.
#[derive(Debug)]
pub enum FileEvent<'a> {
    /// A record.
    Record {
        /// the file
        file: &'a Arc<str>,
        /// offset of the record's first byte
        offset: u64,
        /// its payload
        payload: &'a [u8],
    },
    /// Bytes that could not be framed.
    Corrupt {
        /// the file
        file: &'a Arc<str>,
        /// offset of the first corrupt byte
        offset: u64,
        /// the corrupt bytes
        payload: &'a [u8],
        /// what is wrong
        error: FrameError,
    },
}

/// Lists the files a source reads: a file, every file under a directory
/// (recursively, hidden names skipped) or the matches of a glob, in path
/// order.
pub fn list_files(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let path = Path::new(pattern);
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    } else if path.is_dir() {
        walk(path, &mut files).map_err(|e| SourceError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    } else if pattern.contains(['*', '?', '[']) {
        let paths = glob::glob(pattern).map_err(|e| SourceError::Pattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?;
        for p in paths {
            let p = p.map_err(|e| SourceError::Io {
                path: e.path().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
            if p.is_file() {
                files.push(p);
            }
        }
    } else {
        return Err(SourceError::NotFound {
            pattern: pattern.to_string(),
        });
    }
    if files.is_empty() {
        return Err(SourceError::NoFiles {
            pattern: pattern.to_string(),
        });
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads records from a list of files.
pub struct FileReader {
    files: Vec<PathBuf>,
    /// Index of the file being read (== files.len() when done).
    idx: usize,
    current: Option<Open>,
    framing: Framing,
    max_record: usize,
    chunk: usize,
}

struct Open {
    name: Arc<str>,
    file: File,
    framer: Framer,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl FileReader {
    /// A reader over `files`, starting at `start` (or the beginning).
    pub fn new(
        files: Vec<PathBuf>,
        framing: Framing,
        max_record: usize,
        start: Option<&FilePosition>,
    ) -> Result<Self, SourceError> {
        let mut reader = FileReader {
            files,
            idx: 0,
            current: None,
            framing,
            max_record,
            chunk: 1 << 20,
        };
        if let Some(pos) = start {
            // Files sorting before the position's file are done.
            reader.idx = reader.files.partition_point(|f| f < &pos.file);
            if reader.files.get(reader.idx) == Some(&pos.file) {
                reader.open(pos.offset)?;
            }
        }
        Ok(reader)
    }

    /// The read size (for tests of chunk boundaries).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The files this reader covers.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Where the reader is: the next unread record.
    pub fn position(&self) -> Option<FilePosition> {
        match &self.current {
            Some(o) => Some(FilePosition {
                file: self.files[self.idx].clone(),
                offset: o.base + o.pos as u64,
            }),
            None => self.files.get(self.idx).map(|f| FilePosition {
                file: f.clone(),
                offset: 0,
            }),
        }
    }

    fn open(&mut self, offset: u64) -> Result<(), SourceError> {
        let path = &self.files[self.idx];
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
        }
        self.current = Some(Open {
            name: path.to_string_lossy().into_owned().into(),
            file,
            framer: Framer::new(self.framing, self.max_record),
            buf: Vec::with_capacity(self.chunk),
            pos: 0,
            base: offset,
            eof: false,
        });
        Ok(())
    }

    /// Reads up to about `max` records (or corrupt stretches), handing each to
    /// `f`. Returns `false` once every file is exhausted.
    pub fn read<F: FnMut(FileEvent<'_>)>(&mut self, max: usize, mut f: F) -> Result<bool, SourceError> {
        let mut n = 0;
        while n < max {
            if self.current.is_none() {
                if self.idx >= self.files.len() {
                    return Ok(false);
                }
                self.open(0)?;
            }
            let chunk = self.chunk;
            let Some(o) = self.current.as_mut() else {
                continue;
            };
            match o.framer.next(&o.buf[o.pos..], o.eof) {
                Step::Record { payload, consumed } => {
                    let at = o.pos;
                    f(FileEvent::Record {
                        file: &o.name,
                        offset: o.base + at as u64,
                        payload: &o.buf[at + payload.start..at + payload.end],
                    });
                    o.pos += consumed;
                    n += 1;
                }
                Step::Corrupt {
                    payload,
                    consumed,
                    error,
                } => {
                    let at = o.pos;
                    f(FileEvent::Corrupt {
                        file: &o.name,
                        offset: o.base + at as u64,
                        payload: &o.buf[at + payload.start..at + payload.end],
                        error,
                    });
                    o.pos += consumed;
                    n += 1;
                }
                Step::Skip { consumed } => o.pos += consumed,
                Step::NeedMore { at_least } => {
                    // Drop consumed bytes, then read at least a chunk (more if
                    // a record needs it, up to the largest record allowed).
                    if o.pos > 0 {
                        o.buf.drain(..o.pos);
                        o.base += o.pos as u64;
                        o.pos = 0;
                    }
                    let target = at_least.unwrap_or(0).max(o.buf.len() + chunk);
                    let mut filled = o.buf.len();
                    o.buf.resize(target, 0);
                    while filled < target {
                        let got = o
                            .file
                            .read(&mut o.buf[filled..])
                            .map_err(|source| SourceError::Io {
                                path: PathBuf::from(&*o.name),
                                source,
                            })?;
                        if got == 0 {
                            o.eof = true;
                            break;
                        }
                        filled += got;
                    }
                    o.buf.truncate(filled);
                }
                Step::End => {
                    self.current = None;
                    self.idx += 1;
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use wafer_core::framing::write_varint;

    fn collect(reader: &mut FileReader) -> Vec<(String, u64, Result<Vec<u8>, FrameError>)> {
        let mut out = Vec::new();
        while reader
            .read(3, |ev| match ev {
                FileEvent::Record {
                    file,
                    offset,
                    payload,
                } => out.push((file.to_string(), offset, Ok(payload.to_vec()))),
                FileEvent::Corrupt {
                    file, offset, error, ..
                } => out.push((file.to_string(), offset, Err(error))),
            })
            .unwrap()
        {}
        out
    }

    #[test]
    fn reads_a_directory_in_order_across_tiny_chunks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "b1\nb2\n").unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "a1\n\na2").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x\n").unwrap();
        let files = list_files(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(files.len(), 2);
        let mut r = FileReader::new(files, Framing::Lines, 100, None)
            .unwrap()
            .with_chunk(2);
        let got: Vec<(u64, Vec<u8>)> = collect(&mut r)
            .into_iter()
            .map(|(_, o, p)| (o, p.unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, b"a1".to_vec()),
                (4, b"a2".to_vec()),
                (0, b"b1".to_vec()),
                (3, b"b2".to_vec())
            ]
        );
        assert_eq!(r.position(), None);
    }

    #[test]
    fn resumes_from_a_position_without_repeating_or_skipping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.bin");
        let mut f = File::create(&path).unwrap();
        let mut bytes = Vec::new();
        for i in 0..50u32 {
            let msg = format!("record-{i}").repeat(i as usize % 7 + 1);
            write_varint(&mut bytes, msg.len() as u64);
            bytes.extend_from_slice(msg.as_bytes());
        }
        f.write_all(&bytes).unwrap();
        drop(f);
        let files = vec![path.clone()];
        let all = collect(
            &mut FileReader::new(files.clone(), Framing::LengthDelimited, 1000, None)
                .unwrap()
                .with_chunk(5),
        );
        assert_eq!(all.len(), 50);
        // Stop after 20 records, then resume from the reported position.
        let mut r = FileReader::new(files.clone(), Framing::LengthDelimited, 1000, None)
            .unwrap()
            .with_chunk(7);
        let mut first = Vec::new();
        while first.len() < 20 {
            r.read(1, |ev| {
                if let FileEvent::Record { payload, .. } = ev {
                    first.push(payload.to_vec())
                }
            })
            .unwrap();
        }
        let pos = r.position().unwrap();
        let mut rest = FileReader::new(files, Framing::LengthDelimited, 1000, Some(&pos))
            .unwrap()
            .with_chunk(3);
        let second: Vec<Vec<u8>> = collect(&mut rest)
            .into_iter()
            .map(|(_, _, p)| p.unwrap())
            .collect();
        let joined: Vec<Vec<u8>> = first.into_iter().chain(second).collect();
        let expected: Vec<Vec<u8>> = all.into_iter().map(|(_, _, p)| p.unwrap()).collect();
        assert_eq!(joined, expected);
    }

    #[test]
    fn missing_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.jsonl");
        let err = list_files(missing.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let glob = format!("{}/*.jsonl", dir.path().display());
        let err = list_files(&glob).unwrap_err().to_string();
        assert!(err.contains("no files match"), "{err}");
    }

    #[test]
    fn a_record_larger_than_the_chunk_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let line = "x".repeat(5000);
        std::fs::write(&path, format!("{line}\nshort\n")).unwrap();
        let mut r = FileReader::new(vec![path], Framing::Lines, 10_000, None)
            .unwrap()
            .with_chunk(64);
        let got: Vec<Vec<u8>> = collect(&mut r).into_iter().map(|(_, _, p)| p.unwrap()).collect();
        assert_eq!(got, vec![line.into_bytes(), b"short".to_vec()]);
    }
}
