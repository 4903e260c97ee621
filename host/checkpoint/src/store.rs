//! [`CheckpointStore`]: checkpoints and savepoints on top of a [`Storage`].
//!
//! Layout under the storage root:
//!
//! ```text
//! shared/<sst-name>-<crc32 as 8 hex>-<size>  immutable RocksDB *.sst files, shared by checkpoints
//! chk-<id as 10 digits>/files/<name>         files private to a checkpoint (every non-.sst file)
//! chk-<id as 10 digits>/_MANIFEST            written last, atomically: marks the checkpoint complete
//! savepoints/<name>/files/<name>             savepoints are self-contained (no shared/)
//! savepoints/<name>/_MANIFEST
//! ```
//!
//! A checkpoint is incremental: an `.sst` file already in `shared/` (RocksDB
//! never rewrites one) is referenced again instead of being copied. The
//! manifest is written only after every file it lists, so a crash leaves an
//! incomplete checkpoint directory, never a manifest pointing at missing
//! files. Reading back, every file's size and CRC-32 is checked, and a
//! checkpoint that does not check out is skipped for the one before it.
//! Retention keeps the newest K complete checkpoints and then deletes the
//! shared files no remaining checkpoint refers to.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::CheckpointError;
use crate::manifest::{FORMAT_VERSION, Kind, Manifest, StateFile};
use crate::storage::{LocalStorage, Storage, check_key, crc32_file, io_err};

/// Name of the manifest object in a checkpoint or savepoint directory.
const MANIFEST: &str = "_MANIFEST";
/// Directory of the `.sst` files shared by checkpoints.
const SHARED: &str = "shared";
/// Directory of the savepoints.
const SAVEPOINTS: &str = "savepoints";

/// Checkpoints and savepoints of one job in a [`Storage`].
///
/// One writer at a time: retention and garbage collection assume no other
/// process is writing a checkpoint into the same storage.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    storage: Arc<dyn Storage>,
    retain: usize,
}

/// What writing a checkpoint cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// State files in the checkpoint.
    pub files: usize,
    /// Files actually stored (the others were already there).
    pub files_uploaded: usize,
    /// Bytes of the files actually stored.
    pub bytes_uploaded: u64,
    /// Bytes of all the checkpoint's files.
    pub bytes_total: u64,
}

/// A checkpoint [`CheckpointStore::latest`] passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The checkpoint's id.
    pub id: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl CheckpointStore {
    /// A store keeping the newest `retain` checkpoints (at least one).
    pub fn new(storage: Arc<dyn Storage>, retain: usize) -> Self {
        CheckpointStore {
            storage,
            retain: retain.max(1),
        }
    }

    /// A store in the local directory `dir` (created if missing).
    pub fn local(dir: &Path, retain: usize) -> Result<Self, CheckpointError> {
        Ok(Self::new(Arc::new(LocalStorage::new(dir)?), retain))
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// How many complete checkpoints retention keeps.
    pub fn retain(&self) -> usize {
        self.retain
    }

    /// The storage key of checkpoint `id`'s directory: `chk-<id as 10 digits>`.
    pub fn checkpoint_key(id: u64) -> String {
        format!("chk-{id:010}")
    }

    /// The storage key of savepoint `name`'s directory: `savepoints/<name>`.
    pub fn savepoint_key(name: &str) -> String {
        format!("{SAVEPOINTS}/{name}")
    }

    /// Highest checkpoint id present (complete or not), so that a new run
    /// continues numbering after it; 0 if there is none.
    pub fn last_id(&self) -> Result<u64, CheckpointError> {
        Ok(self.checkpoint_ids()?.last().copied().unwrap_or(0))
    }

    /// Writes checkpoint `manifest.id`: stores the files of `state_dir` (a
    /// RocksDB checkpoint directory, walked recursively; `None` for a
    /// stateless job), filling `manifest.files`, then writes the manifest,
    /// then applies retention.
    ///
    /// Incremental: an `.sst` file whose name and size equal an entry of
    /// `previous` that is still in `shared/` reuses that entry (no read, no
    /// copy); other `.sst` files get their CRC computed and go to `shared/`
    /// (skipped if that shared key already exists with that size); every
    /// other file goes to `chk-<id>/files/`. Sets `kind` to
    /// [`Kind::Checkpoint`] and `format_version` to [`FORMAT_VERSION`].
    ///
    /// The files in `state_dir` must not change while this runs (they may
    /// be hard-linked into the storage). A failure of retention after the
    /// manifest is written is logged, not returned: the checkpoint itself is
    /// complete.
    pub fn write_checkpoint(
        &self,
        mut manifest: Manifest,
        state_dir: Option<&Path>,
        previous: Option<&Manifest>,
    ) -> Result<(Manifest, WriteStats), CheckpointError> {
        let id = manifest.id;
        let dir = Self::checkpoint_key(id);
        let manifest_key = format!("{dir}/{MANIFEST}");
        if self.storage.size(&manifest_key)?.is_some() {
            return Err(CheckpointError::AlreadyExists(format!("checkpoint {id} ({dir})")));
        }
        // Leftovers of an attempt at the same id that crashed before its
        // manifest: start clean so that no stray file survives into it.
        self.storage.delete(&dir)?;

        // Only entries in shared/ are reused: one restored from a savepoint
        // lives in that savepoint, which may be deleted at any time.
        let reusable: HashMap<&str, &StateFile> = previous
            .map(|p| {
                p.files
                    .iter()
                    .filter(|f| is_sst(&f.name) && f.key.starts_with(&format!("{SHARED}/")))
                    .map(|f| (f.name.as_str(), f))
                    .collect()
            })
            .unwrap_or_default();

        let mut stats = WriteStats::default();
        let mut files = Vec::new();
        for local in local_files(state_dir)? {
            stats.files += 1;
            stats.bytes_total += local.size;
            if is_sst(&local.name) {
                if let Some(entry) = reusable.get(local.name.as_str())
                    && entry.size == local.size
                    // A stat, not a read: guards against a `previous` whose
                    // files retention has since collected.
                    && self.storage.size(&entry.key)? == Some(entry.size)
                {
                    files.push((*entry).clone());
                    continue;
                }
                let crc = crc32_file(&local.path).map_err(io_err(&local.path))?;
                let key = format!("{SHARED}/{}-{crc:08x}-{}", base_name(&local.name), local.size);
                // The key names the content (name, CRC, size): an object
                // already there is this file, from an earlier checkpoint.
                if self.storage.size(&key)? != Some(local.size) {
                    self.storage.put_file(&key, &local.path)?;
                    stats.files_uploaded += 1;
                    stats.bytes_uploaded += local.size;
                }
                files.push(StateFile {
                    name: local.name,
                    key,
                    size: local.size,
                    crc32: crc,
                });
            } else {
                stats.files_uploaded += 1;
                stats.bytes_uploaded += local.size;
                files.push(self.put_private(&dir, local)?);
            }
        }
        manifest.files = files;
        manifest.kind = Kind::Checkpoint as i32;
        manifest.format_version = FORMAT_VERSION;
        self.storage.put_bytes(&manifest_key, &manifest.to_bytes())?;
        tracing::debug!(
            id,
            files = stats.files,
            files_uploaded = stats.files_uploaded,
            bytes_uploaded = stats.bytes_uploaded,
            bytes_total = stats.bytes_total,
            "checkpoint written"
        );
        if let Err(e) = self.apply_retention() {
            tracing::warn!(id, error = %e, "checkpoint retention failed; old checkpoints are kept for now");
        }
        Ok((manifest, stats))
    }

    /// Writes a savepoint named `name`: self-contained (every file copied or
    /// linked into `savepoints/<name>/files`, CRC computed for all),
    /// manifest last. An error if a complete savepoint of that name exists;
    /// the leftovers of an incomplete one are replaced. Sets `kind` to
    /// [`Kind::Savepoint`], `name` and `format_version`; the savepoint's
    /// directory is [`CheckpointStore::savepoint_key`]`(name)`.
    pub fn write_savepoint(
        &self,
        name: &str,
        mut manifest: Manifest,
        state_dir: Option<&Path>,
    ) -> Result<Manifest, CheckpointError> {
        check_savepoint_name(name)?;
        let dir = Self::savepoint_key(name);
        let manifest_key = format!("{dir}/{MANIFEST}");
        if self.storage.size(&manifest_key)?.is_some() {
            return Err(CheckpointError::AlreadyExists(format!(
                "savepoint {name:?} ({dir})"
            )));
        }
        self.storage.delete(&dir)?;
        manifest.files = local_files(state_dir)?
            .into_iter()
            .map(|local| self.put_private(&dir, local))
            .collect::<Result<_, _>>()?;
        manifest.kind = Kind::Savepoint as i32;
        manifest.format_version = FORMAT_VERSION;
        manifest.name = name.to_string();
        self.storage.put_bytes(&manifest_key, &manifest.to_bytes())?;
        tracing::info!(name, files = manifest.files.len(), "savepoint written");
        Ok(manifest)
    }

    /// The latest complete checkpoint whose manifest decodes and whose every
    /// file exists with the recorded size and CRC. Checkpoints passed over
    /// on the way (newest first) are returned as [`Skipped`]: corrupt or
    /// torn ones with what is wrong, incomplete ones (no manifest: a crash
    /// while writing) with "incomplete (no manifest)".
    ///
    /// An I/O error (as opposed to a mismatch) is returned rather than
    /// skipped: falling back to older state because a disk was briefly
    /// unreadable would silently lose progress.
    pub fn latest(&self) -> Result<(Option<Manifest>, Vec<Skipped>), CheckpointError> {
        let mut skipped = Vec::new();
        for id in self.checkpoint_ids()?.into_iter().rev() {
            match self.load_checkpoint(id) {
                Ok(Some(manifest)) => return Ok((Some(manifest), skipped)),
                Ok(None) => {
                    tracing::debug!(id, "skipping incomplete checkpoint");
                    skipped.push(Skipped {
                        id,
                        reason: "incomplete (no manifest)".to_string(),
                    });
                }
                Err(e @ CheckpointError::Corrupt { .. }) => {
                    tracing::warn!(id, error = %e, "skipping corrupt checkpoint");
                    skipped.push(Skipped {
                        id,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((None, skipped))
    }

    /// Reads and verifies (every file's size and CRC) the savepoint named
    /// `name`.
    pub fn savepoint(&self, name: &str) -> Result<Manifest, CheckpointError> {
        check_savepoint_name(name)?;
        let dir = Self::savepoint_key(name);
        let manifest_key = format!("{dir}/{MANIFEST}");
        let Some(bytes) = self.storage.get_bytes(&manifest_key)? else {
            return Err(CheckpointError::NoSavepoint(PathBuf::from(dir)));
        };
        let manifest = Manifest::from_bytes(&bytes, &manifest_key)?;
        if manifest.kind != Kind::Savepoint as i32 {
            return Err(CheckpointError::Corrupt {
                what: manifest_key,
                reason: format!("kind is {}, not a savepoint", manifest.kind),
            });
        }
        self.verify_files(&manifest, &dir)?;
        Ok(manifest)
    }

    /// Names of the complete savepoints (those with a manifest), sorted.
    pub fn savepoints(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = Vec::new();
        for name in self.storage.list(&format!("{SAVEPOINTS}/"))? {
            if check_savepoint_name(&name).is_err() {
                continue;
            }
            let key = format!("{}/{MANIFEST}", Self::savepoint_key(&name));
            if self.storage.size(&key)?.is_some() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Deletes the savepoint named `name` (complete or not); an error if
    /// there is none.
    pub fn delete_savepoint(&self, name: &str) -> Result<(), CheckpointError> {
        check_savepoint_name(name)?;
        let dir = Self::savepoint_key(name);
        if !self
            .storage
            .list(&format!("{SAVEPOINTS}/"))?
            .iter()
            .any(|n| n == name)
        {
            return Err(CheckpointError::NoSavepoint(PathBuf::from(dir)));
        }
        // Manifest first: a crash halfway leaves an incomplete savepoint,
        // not a complete-looking one with files missing.
        self.storage.delete(&format!("{dir}/{MANIFEST}"))?;
        self.storage.delete(&dir)?;
        tracing::info!(name, "savepoint deleted");
        Ok(())
    }

    /// Materialises the state files of `manifest` (a checkpoint's or a
    /// savepoint's: file keys are full storage keys) into the directory
    /// `into`, which must be empty or missing (it is created). `.sst` files
    /// may be hard links (RocksDB never modifies an SST); every other file
    /// is copied (RocksDB appends to `MANIFEST-*`).
    pub fn restore_files(&self, manifest: &Manifest, into: &Path) -> Result<(), CheckpointError> {
        match fs::read_dir(into) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(CheckpointError::NotEmpty(into.to_path_buf()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(into).map_err(io_err(into))?;
            }
            Err(e) => return Err(io_err(into)(e)),
        }
        for file in &manifest.files {
            // A manifest is data read from storage: its names must not
            // escape `into`.
            check_key(&file.name).map_err(|e| CheckpointError::Corrupt {
                what: format!("manifest of checkpoint {}", manifest.id),
                reason: format!("bad file name: {e}"),
            })?;
            let mut to = into.to_path_buf();
            to.extend(file.name.split('/'));
            self.storage.get_file(&file.key, &to, is_sst(&file.name))?;
        }
        tracing::info!(id = manifest.id, files = manifest.files.len(), into = %into.display(), "state files restored");
        Ok(())
    }

    /// Removes every checkpoint newer than `id` (used after restoring `id`
    /// when newer ones were corrupt: their shared files could otherwise
    /// clash with the ones the resumed job writes), then deletes the shared
    /// files no remaining checkpoint refers to.
    pub fn discard_after(&self, id: u64) -> Result<(), CheckpointError> {
        for newer in self.checkpoint_ids()?.into_iter().filter(|&c| c > id) {
            tracing::info!(id = newer, "discarding checkpoint newer than the restored one");
            self.delete_checkpoint(newer)?;
        }
        self.collect_garbage()
    }

    /// Checkpoint `id`'s manifest, verified; `None` if it has none (it is
    /// incomplete or gone).
    pub fn checkpoint(&self, id: u64) -> Result<Option<Manifest>, CheckpointError> {
        if !self.checkpoint_ids()?.contains(&id) {
            return Ok(None);
        }
        self.load_checkpoint(id)
    }

    /// Ids of the `chk-*` directories, ascending.
    fn checkpoint_ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids: Vec<u64> = self
            .storage
            .list("")?
            .iter()
            .filter_map(|name| parse_checkpoint_dir(name))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn manifest_key(id: u64) -> String {
        format!("{}/{MANIFEST}", Self::checkpoint_key(id))
    }

    /// Checkpoint `id`'s manifest, verified; `None` if it has none yet.
    fn load_checkpoint(&self, id: u64) -> Result<Option<Manifest>, CheckpointError> {
        let manifest_key = Self::manifest_key(id);
        let Some(bytes) = self.storage.get_bytes(&manifest_key)? else {
            return Ok(None);
        };
        let manifest = Manifest::from_bytes(&bytes, &manifest_key)?;
        let corrupt = |reason: String| CheckpointError::Corrupt {
            what: manifest_key.clone(),
            reason,
        };
        if manifest.id != id {
            return Err(corrupt(format!(
                "it is the manifest of checkpoint {}",
                manifest.id
            )));
        }
        if manifest.kind != Kind::Checkpoint as i32 {
            return Err(corrupt(format!("kind is {}, not a checkpoint", manifest.kind)));
        }
        self.verify_files(&manifest, &Self::checkpoint_key(id))?;
        Ok(Some(manifest))
    }

    /// Checks that every file of `manifest` exists with its recorded size
    /// and CRC; `what` names the checkpoint or savepoint in errors. Sizes
    /// first, all of them, as they cost a stat each: a torn checkpoint is
    /// found before reading gigabytes of a good-looking one.
    fn verify_files(&self, manifest: &Manifest, what: &str) -> Result<(), CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            what: what.to_string(),
            reason,
        };
        // A bad key is a corrupt manifest, not a failure of the storage.
        let bad_key = |file: &StateFile, e: CheckpointError| match e {
            CheckpointError::InvalidKey { .. } => corrupt(format!("file {}: {e}", file.name)),
            e => e,
        };
        for file in &manifest.files {
            check_key(&file.name).map_err(|e| bad_key(file, e))?;
            match self.storage.size(&file.key).map_err(|e| bad_key(file, e))? {
                None => return Err(corrupt(format!("file {} ({}) is missing", file.name, file.key))),
                Some(size) if size != file.size => {
                    return Err(corrupt(format!(
                        "file {} ({}) has {size} bytes, the manifest says {}",
                        file.name, file.key, file.size
                    )));
                }
                Some(_) => {}
            }
        }
        for file in &manifest.files {
            match self.storage.crc32(&file.key)? {
                None => return Err(corrupt(format!("file {} ({}) is missing", file.name, file.key))),
                Some(crc) if crc != file.crc32 => {
                    return Err(corrupt(format!(
                        "file {} ({}) has CRC-32 {crc:08x}, the manifest says {:08x}",
                        file.name, file.key, file.crc32
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Keeps the newest `retain` complete checkpoints, deletes older ones
    /// and incomplete ones older than the newest complete one, then
    /// collects unreferenced shared files.
    fn apply_retention(&self) -> Result<(), CheckpointError> {
        let mut complete = Vec::new();
        let mut incomplete = Vec::new();
        for id in self.checkpoint_ids()? {
            if self.storage.size(&Self::manifest_key(id))?.is_some() {
                complete.push(id);
            } else {
                incomplete.push(id);
            }
        }
        let expired = complete.len().saturating_sub(self.retain);
        for &id in &complete[..expired] {
            tracing::debug!(id, "retention: deleting checkpoint");
            self.delete_checkpoint(id)?;
        }
        // An incomplete checkpoint newer than every complete one is left
        // alone: with one writer it cannot be in progress, but it is not
        // this round's business either.
        if let Some(&newest) = complete.last() {
            for id in incomplete.into_iter().filter(|&id| id < newest) {
                tracing::debug!(id, "retention: deleting incomplete checkpoint");
                self.delete_checkpoint(id)?;
            }
        }
        self.collect_garbage()
    }

    /// Deletes the files in `shared/` that no complete checkpoint's
    /// manifest refers to. If a manifest does not decode, nothing is
    /// deleted: what it refers to is unknown.
    fn collect_garbage(&self) -> Result<(), CheckpointError> {
        let mut referenced = HashSet::new();
        for id in self.checkpoint_ids()? {
            let key = Self::manifest_key(id);
            let Some(bytes) = self.storage.get_bytes(&key)? else {
                continue;
            };
            match Manifest::from_bytes(&bytes, &key) {
                Ok(manifest) => referenced.extend(manifest.files.into_iter().map(|f| f.key)),
                Err(e) => {
                    tracing::warn!(id, error = %e, "not deleting unreferenced shared files this time");
                    return Ok(());
                }
            }
        }
        for name in self.storage.list(&format!("{SHARED}/"))? {
            let key = format!("{SHARED}/{name}");
            if !referenced.contains(&key) {
                tracing::debug!(key, "deleting unreferenced shared file");
                self.storage.delete(&key)?;
            }
        }
        Ok(())
    }

    /// Deletes checkpoint `id`, manifest first: a crash halfway leaves an
    /// incomplete checkpoint, not a complete-looking one with files missing.
    fn delete_checkpoint(&self, id: u64) -> Result<(), CheckpointError> {
        self.storage.delete(&Self::manifest_key(id))?;
        self.storage.delete(&Self::checkpoint_key(id))
    }
}

/// A file of a state directory.
impl CheckpointStore {
    /// Stores a file under `<dir>/files/<name>`, private to one checkpoint
    /// or savepoint, with its CRC.
    fn put_private(&self, dir: &str, local: LocalFile) -> Result<StateFile, CheckpointError> {
        let crc = crc32_file(&local.path).map_err(io_err(&local.path))?;
        let key = format!("{dir}/files/{}", local.name);
        self.storage.put_file(&key, &local.path)?;
        Ok(StateFile {
            name: local.name,
            key,
            size: local.size,
            crc32: crc,
        })
    }
}

struct LocalFile {
    /// Relative to the state directory, '/'-separated.
    name: String,
    path: PathBuf,
    size: u64,
}

/// The files under `dir`, recursively, sorted by name; none for `None`.
fn local_files(dir: Option<&Path>) -> Result<Vec<LocalFile>, CheckpointError> {
    let mut files = Vec::new();
    if let Some(dir) = dir {
        walk(dir, "", &mut files)?;
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, files: &mut Vec<LocalFile>) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            return Err(io_err(&path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "file name is not UTF-8, so it cannot be a storage key",
            )));
        };
        let name = format!("{prefix}{name}");
        // Follows symlinks: what counts is the file the state refers to.
        let meta = fs::metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            walk(&path, &format!("{name}/"), files)?;
        } else {
            files.push(LocalFile {
                name,
                path,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Whether a state file is an SST: immutable once written, so it can be
/// shared between checkpoints and hard-linked on restore.
fn is_sst(name: &str) -> bool {
    name.ends_with(".sst")
}

/// The last component of a '/'-separated name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The id of a `chk-<digits>` directory name.
fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Savepoint names are one path component of letters, digits, '-', '_'
/// and '.', not starting with '.': safe as a directory or object-store
/// prefix anywhere.
fn check_savepoint_name(name: &str) -> Result<(), CheckpointError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::InvalidSavepointName(name.to_string()))
    }
}
