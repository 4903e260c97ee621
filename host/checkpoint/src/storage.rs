//! Where checkpoint bytes live: the [`Storage`] trait, a flat store of named
//! objects under '/'-separated keys, and [`LocalStorage`], its implementation
//! on a local directory.
//!
//! The checkpoint store only ever needs whole-object operations (put, get,
//! list one level, delete, size, checksum), so an object store can implement
//! the same trait later. What the checkpoint logic relies on for crash
//! safety is spelled out per method: [`Storage::put_bytes`] is atomic and
//! durable, and [`Storage::put_file`] is durable once it returns.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::CheckpointError;

/// A flat store of named objects; keys are '/'-separated relative paths.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Stores the file at `from` under `key` (a local store may hard-link
    /// it, falling back to a copy; the source file is immutable). Replaces
    /// an existing object; durable once it returns.
    fn put_file(&self, key: &str, from: &Path) -> Result<(), CheckpointError>;
    /// Writes `key`'s object to the local file `to` (creating parent dirs).
    /// `link_ok`: the caller will never modify the file, so a hard link is
    /// fine; otherwise copy.
    fn get_file(&self, key: &str, to: &Path, link_ok: bool) -> Result<(), CheckpointError>;
    /// Stores bytes atomically: readers see either nothing (or the previous
    /// object) or all of them.
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<(), CheckpointError>;
    /// Reads an object (`Ok(None)` if absent).
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, CheckpointError>;
    /// Size of an object, `None` if absent.
    fn size(&self, key: &str) -> Result<Option<u64>, CheckpointError>;
    /// Names directly under a prefix `"dir/"` (one level: immediate
    /// children, objects or "directories"), sorted; `""` lists the top
    /// level. An absent prefix lists nothing.
    fn list(&self, prefix: &str) -> Result<Vec<String>, CheckpointError>;
    /// Deletes an object or a whole "directory" prefix (recursively);
    /// absent is fine.
    fn delete(&self, key: &str) -> Result<(), CheckpointError>;
    /// Computes an object's CRC-32 (as [`crc32fast`] does) streaming,
    /// without loading it whole; `None` if absent.
    fn crc32(&self, key: &str) -> Result<Option<u32>, CheckpointError>;
}

/// A [`Storage`] in a directory on local disk: a key is a path relative to
/// the root.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

/// Makes temporary names unique among the threads of this process; the
/// process id separates processes sharing a directory.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStorage {
    /// A storage rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(LocalStorage { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `key`. Keys are checked so that no key can reach
    /// outside the root (a manifest read back from disk is not trusted).
    pub fn path(&self, key: &str) -> Result<PathBuf, CheckpointError> {
        let mut path = self.root.clone();
        for part in key_parts(key)? {
            path.push(part);
        }
        Ok(path)
    }

    /// Creates `dir` and its missing ancestors, syncing each new
    /// directory's parent so that the new entry survives a crash.
    fn ensure_dir(&self, dir: &Path) -> Result<(), CheckpointError> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.is_dir() {
                break;
            }
            missing.push(d);
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => {}
                // Another writer (or thread) won the race: same result.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(d)(e)),
            }
            if let Some(parent) = d.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Creates the parent directory of `path`.
    fn ensure_parent(&self, path: &Path) -> Result<(), CheckpointError> {
        match path.parent() {
            Some(parent) => self.ensure_dir(parent),
            None => Ok(()),
        }
    }
}

impl Storage for LocalStorage {
    fn put_file(&self, key: &str, from: &Path) -> Result<(), CheckpointError> {
        let dest = self.path(key)?;
        self.ensure_parent(&dest)?;
        let tmp = tmp_path(&dest);
        // Link or copy under a temporary name and rename, so that a crash
        // never leaves a partial object under its final key.
        match fs::hard_link(from, &tmp) {
            // A link shares the source's (already written) data: only the
            // new directory entry needs syncing, which the rename's
            // directory sync below covers.
            Ok(()) => {}
            Err(e) => {
                // Another filesystem, or one without hard links: copy.
                tracing::debug!(from = %from.display(), error = %e, "hard link failed, copying");
                if let Err(e) = copy_synced(from, &tmp) {
                    // Best effort: the temporary file is garbage either way.
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        // If `dest` already was a link to the same inode, rename(2) does
        // nothing and leaves `tmp` behind.
        remove_if_exists(&tmp)?;
        sync_parent(&dest)
    }

    fn get_file(&self, key: &str, to: &Path, link_ok: bool) -> Result<(), CheckpointError> {
        let src = self.path(key)?;
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        remove_if_exists(to)?;
        if link_ok && fs::hard_link(&src, to).is_ok() {
            return Ok(());
        }
        // Not synced: a restored directory is rebuilt from the checkpoint
        // after a crash anyway. Copied by hand rather than `fs::copy` so the
        // new file gets default permissions (writable) whatever the stored
        // object's are: RocksDB appends to a restored MANIFEST.
        let mut input = File::open(&src).map_err(io_err(&src))?;
        let mut output = File::create(to).map_err(io_err(to))?;
        io::copy(&mut input, &mut output).map_err(io_err(to))?;
        Ok(())
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<(), CheckpointError> {
        let dest = self.path(key)?;
        self.ensure_parent(&dest)?;
        // Written and synced under a temporary name, then renamed over the
        // key and the directory synced: a crash leaves the old object or the
        // whole new one, never a torn one (the manifest relies on this).
        let tmp = tmp_path(&dest);
        let written = (|| -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            io::Write::write_all(&mut file, data)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        sync_parent(&dest)
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>, CheckpointError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, CheckpointError> {
        let dir = if prefix.trim_end_matches('/').is_empty() {
            self.root.clone()
        } else {
            self.path(prefix)?
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            // A name that is not UTF-8 cannot be a key, so no caller can
            // have written it or ask for it.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete(&self, key: &str) -> Result<(), CheckpointError> {
        let path = self.path(key)?;
        let result = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => sync_parent(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn crc32(&self, key: &str) -> Result<Option<u32>, CheckpointError> {
        let path = self.path(key)?;
        match crc32_file(&path) {
            Ok(crc) => Ok(Some(crc)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// The parts of a key, checked: relative, no empty, `.` or `..` part, no
/// backslash (a separator on Windows). A trailing '/' is allowed (a
/// "directory" prefix).
fn key_parts(key: &str) -> Result<Vec<&str>, CheckpointError> {
    let invalid = |reason: &str| CheckpointError::InvalidKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = key.strip_suffix('/').unwrap_or(key);
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.contains('\\') {
        return Err(invalid("contains a backslash"));
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(invalid("empty path component (absolute, or '//')")),
            "." | ".." => return Err(invalid("'.' or '..' component")),
            _ => {}
        }
    }
    Ok(parts)
}

/// Checks that `key` is a valid key (see [`LocalStorage::path`]); also used
/// for the relative file names in a manifest, which become local paths.
pub(crate) fn check_key(key: &str) -> Result<(), CheckpointError> {
    key_parts(key).map(|_| ())
}

/// A fresh temporary name next to `dest` (same directory, so the rename is
/// atomic). A crash may leave one behind; being unreferenced, it is
/// collected like any other unreferenced object.
fn tmp_path(dest: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

/// Copies `from` to a new file `to` and syncs its data.
fn copy_synced(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    let mut input = File::open(from).map_err(io_err(from))?;
    let mut output = File::create(to).map_err(io_err(to))?;
    io::copy(&mut input, &mut output).map_err(io_err(to))?;
    output.sync_all().map_err(io_err(to))
}

/// CRC-32 of a local file, read in chunks.
pub(crate) fn crc32_file(path: &Path) -> io::Result<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), CheckpointError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Syncs the directory holding `path`, making a new, renamed or removed
/// entry in it durable.
fn sync_parent(path: &Path) -> Result<(), CheckpointError> {
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Outside Unix a directory cannot be opened to sync it; there is no
/// portable equivalent, so the rename is the best this can do.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), CheckpointError> {
    Ok(())
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}
