//! Checkpoints and savepoints written to, corrupted in and read back from
//! real temporary directories, with fake RocksDB checkpoint directories
//! (`*.sst`, `CURRENT`, `MANIFEST-*`, `OPTIONS-*`) as state.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{Component, KeyedWorker, Operator, Output, PartitionOffset, SourceState, envelope};
use super::*;

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fake RocksDB checkpoint directory: name → contents.
type State = BTreeMap<String, Vec<u8>>;

/// A state with the given SST file numbers (contents fixed per number, as
/// an SST never changes) and fresh private files for `generation`.
fn state(ssts: &[u64], generation: u64) -> State {
    let mut files = State::new();
    for &n in ssts {
        files.insert(format!("{n:06}.sst"), bytes(n, 1000 + (n as usize * 317) % 5000));
    }
    let manifest = format!("MANIFEST-{:06}", 5 + generation);
    files.insert("CURRENT".into(), format!("{manifest}\n").into_bytes());
    files.insert(manifest, bytes(1000 + generation, 300 + generation as usize));
    files.insert(
        format!("OPTIONS-{:06}", 7 + generation),
        bytes(2000 + generation, 200),
    );
    files
}

/// Writes `files` into the directory `dir`.
fn write_state(dir: &Path, files: &State) -> PathBuf {
    for (name, data) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    dir.to_path_buf()
}

/// Asserts two states hold the same files with the same bytes, printing
/// sizes and checksums rather than contents when they do not.
#[track_caller]
fn assert_same(actual: &State, expected: &State) {
    let digest = |s: &State| -> Vec<(String, usize, u32)> {
        s.iter()
            .map(|(n, d)| (n.clone(), d.len(), crc32fast::hash(d)))
            .collect()
    };
    assert_eq!(digest(actual), digest(expected));
    assert!(actual == expected);
}

/// Every file under `dir`, recursively, by '/'-separated relative name.
fn read_tree(dir: &Path) -> State {
    fn walk(dir: &Path, prefix: &str, out: &mut State) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.insert(name, fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = State::new();
    walk(dir, "", &mut out);
    out
}

/// A manifest with every kind of field filled in.
fn manifest(id: u64) -> Manifest {
    Manifest {
        id,
        created_ms: 1_700_000_000_000 + id as i64,
        job: "purchases".into(),
        components: vec![Component {
            name: "json".into(),
            version: "1.2.0".into(),
            digest: "abc123".into(),
        }],
        sources: vec![SourceState {
            id: "kafka:orders:g1".into(),
            name: "orders".into(),
            kafka: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 3,
                offset: 1000 * id as i64,
            }],
            ..Default::default()
        }],
        keyed: vec![KeyedWorker {
            index: 0,
            watermark: 55,
            stream_time: 60,
            senders: vec![50, 55],
        }],
        outputs: vec![Output {
            name: "out".into(),
            file_length: Some(4096),
        }],
        operators: vec![Operator {
            name: "window:w".into(),
            id: 1,
        }],
        parallelism: 2,
        ..Default::default()
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    store: CheckpointStore,
}

impl Fixture {
    fn new(retain: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(&tmp.path().join("checkpoints"), retain).unwrap();
        Fixture { tmp, store }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("checkpoints")
    }

    /// A new directory holding `files`, as RocksDB makes a new checkpoint
    /// directory each time (its files must not change once stored).
    fn state_dir(&self, files: &State) -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix("db-")
            .tempdir_in(self.tmp.path())
            .unwrap()
            .keep();
        write_state(&dir, files)
    }

    /// Writes checkpoint `id` from a fresh state directory holding `files`.
    fn checkpoint(&self, id: u64, files: &State, previous: Option<&Manifest>) -> (Manifest, WriteStats) {
        let dir = self.state_dir(files);
        self.store
            .write_checkpoint(manifest(id), Some(&dir), previous)
            .unwrap()
    }

    fn restore(&self, m: &Manifest, into: &str) -> State {
        let into = self.tmp.path().join(into);
        self.store.restore_files(m, &into).unwrap();
        read_tree(&into)
    }

    fn chk_dirs(&self) -> Vec<String> {
        self.store
            .storage()
            .list("")
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("chk-"))
            .collect()
    }

    fn shared(&self) -> Vec<String> {
        self.store.storage().list("shared/").unwrap()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root().join(key)
    }
}

/// The shared keys a manifest refers to, as names under `shared/`.
fn shared_of(manifests: &[&Manifest]) -> Vec<String> {
    let mut names: Vec<String> = manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .filter_map(|f| f.key.strip_prefix("shared/").map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn flip_byte(path: &Path, at: usize) {
    let mut data = fs::read(path).unwrap();
    data[at] ^= 0x40;
    fs::write(path, data).unwrap();
}

fn truncate(path: &Path, by: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - by).unwrap();
}

// ---- storage ---------------------------------------------------------------

#[test]
fn local_storage_objects_listing_and_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(tmp.path().join("root")).unwrap();
    assert!(storage.root().is_dir());

    assert_eq!(storage.get_bytes("a/b").unwrap(), None);
    assert_eq!(storage.size("a/b").unwrap(), None);
    assert_eq!(storage.crc32("a/b").unwrap(), None);
    assert!(storage.list("a/").unwrap().is_empty());

    storage.put_bytes("a/b", b"first").unwrap();
    storage.put_bytes("a/b", b"second, longer").unwrap();
    storage.put_bytes("a/c/d", b"deep").unwrap();
    assert_eq!(
        storage.get_bytes("a/b").unwrap().as_deref(),
        Some(&b"second, longer"[..])
    );
    assert_eq!(storage.size("a/b").unwrap(), Some(14));
    assert_eq!(
        storage.crc32("a/b").unwrap(),
        Some(crc32fast::hash(b"second, longer"))
    );
    // A "directory" is not an object.
    assert_eq!(storage.size("a/c").unwrap(), None);
    // One level, sorted, no temporary names left behind.
    assert_eq!(storage.list("a/").unwrap(), ["b", "c"]);
    assert_eq!(storage.list("a").unwrap(), ["b", "c"]);
    assert_eq!(storage.list("").unwrap(), ["a"]);

    let big = bytes(7, 1 << 20);
    let src = tmp.path().join("big.sst");
    fs::write(&src, &big).unwrap();
    storage.put_file("x/big.sst", &src).unwrap();
    storage.put_file("x/big.sst", &src).unwrap(); // replacing with the same inode is fine
    assert_eq!(storage.list("x/").unwrap(), ["big.sst"]);
    assert_eq!(storage.crc32("x/big.sst").unwrap(), Some(crc32fast::hash(&big)));

    // A copy for writing is independent of the stored object.
    let copy = tmp.path().join("out/deeper/copy");
    storage.get_file("x/big.sst", &copy, false).unwrap();
    fs::write(&copy, b"changed").unwrap();
    assert_eq!(storage.get_bytes("x/big.sst").unwrap().unwrap(), big);
    // Getting over an existing file replaces it.
    storage.get_file("a/b", &copy, false).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), b"second, longer");
    let linked = tmp.path().join("out/linked");
    storage.get_file("x/big.sst", &linked, true).unwrap();
    assert_eq!(fs::read(&linked).unwrap(), big);
    assert!(storage.get_file("x/absent", &linked, true).is_err());

    storage.delete("a").unwrap();
    assert!(!storage.root().join("a").exists());
    storage.delete("a").unwrap();
    storage.delete("x/big.sst").unwrap();
    assert_eq!(storage.list("x/").unwrap(), Vec::<String>::new());
}

#[test]
fn local_storage_rejects_keys_outside_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(tmp.path().join("root")).unwrap();
    for key in ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "./a", "a\\b"] {
        match storage.put_bytes(key, b"x") {
            Err(CheckpointError::InvalidKey { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key:?}: {other:?}"),
        }
    }
    assert!(!tmp.path().join("escape").exists());
}

// ---- 1. round trip -------------------------------------------------------------

#[test]
fn checkpoint_round_trip() {
    let fx = Fixture::new(3);
    assert_eq!(fx.store.latest().unwrap(), (None, vec![]));
    let mut files = state(&[12, 15, 16], 0);
    // A nested file: the state directory is walked recursively.
    files.insert("archive/000003.log".into(), bytes(3, 777));
    let (written, stats) = fx.checkpoint(1, &files, None);

    assert_eq!(written.kind, Kind::Checkpoint as i32);
    assert_eq!(written.format_version, FORMAT_VERSION);
    let names: Vec<&str> = written.files.iter().map(|f| f.name.as_str()).collect();
    let expected: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    let key = |name: &str| &written.files.iter().find(|f| f.name == name).unwrap().key;
    assert_eq!(key("CURRENT"), "chk-0000000001/files/CURRENT");
    assert_eq!(
        key("archive/000003.log"),
        "chk-0000000001/files/archive/000003.log"
    );
    let sst = &files["000012.sst"];
    assert_eq!(
        key("000012.sst"),
        &format!("shared/000012.sst-{:08x}-{}", crc32fast::hash(sst), sst.len())
    );
    let total: u64 = files.values().map(|d| d.len() as u64).sum();
    assert_eq!(
        stats,
        WriteStats {
            files: files.len(),
            files_uploaded: files.len(),
            bytes_uploaded: total,
            bytes_total: total,
        }
    );

    let (latest, skipped) = fx.store.latest().unwrap();
    assert!(skipped.is_empty());
    let latest = latest.unwrap();
    assert_eq!(latest, written);
    // Everything the caller put in the manifest survives.
    let expected = Manifest {
        files: written.files.clone(),
        kind: Kind::Checkpoint as i32,
        format_version: FORMAT_VERSION,
        ..manifest(1)
    };
    assert_eq!(latest, expected);

    assert_same(&fx.restore(&latest, "restored"), &files);

    // The restored MANIFEST is RocksDB's to append to: the checkpoint must
    // not change with it.
    let restored = fx.tmp.path().join("restored");
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(restored.join("MANIFEST-000005"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"appended").unwrap();
    drop(log);
    assert_eq!(fx.store.latest().unwrap().0.unwrap(), written);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&restored.join("000012.sst")),
            ino(&fx.path(key("000012.sst")))
        );
        assert_ne!(ino(&restored.join("CURRENT")), ino(&fx.path(key("CURRENT"))));
    }

    // Only into an empty directory.
    match fx.store.restore_files(&latest, &restored) {
        Err(CheckpointError::NotEmpty(p)) => assert_eq!(p, restored),
        other => panic!("{other:?}"),
    }
    fs::create_dir(fx.tmp.path().join("empty")).unwrap();
    assert_same(&fx.restore(&latest, "empty"), &files);

    // The same id cannot be written twice.
    let dir = fx.state_dir(&files);
    assert!(matches!(
        fx.store.write_checkpoint(manifest(1), Some(&dir), None),
        Err(CheckpointError::AlreadyExists(_))
    ));
}

#[test]
fn stateless_checkpoint_has_no_files() {
    let fx = Fixture::new(1);
    let (m, stats) = fx.store.write_checkpoint(manifest(1), None, None).unwrap();
    assert!(m.files.is_empty());
    assert_eq!(stats, WriteStats::default());
    assert_eq!(fx.store.latest().unwrap().0.unwrap(), m);
    assert!(fx.restore(&m, "restored").is_empty());
}

// ---- 2. incremental ------------------------------------------------------------

#[test]
fn incremental_checkpoint_uploads_only_new_ssts() {
    let fx = Fixture::new(3);
    let files1 = state(&[10, 11, 12, 13], 0);
    let (m1, _) = fx.checkpoint(1, &files1, None);
    let files2 = state(&[10, 11, 12, 14], 1);
    let (m2, stats) = fx.checkpoint(2, &files2, Some(&m1));

    let private: Vec<&str> = files2
        .keys()
        .filter(|n| !n.ends_with(".sst"))
        .map(String::as_str)
        .collect();
    let private_bytes: u64 = private.iter().map(|n| files2[*n].len() as u64).sum();
    assert_eq!(
        stats,
        WriteStats {
            files: files2.len(),
            files_uploaded: 1 + private.len(),
            bytes_uploaded: files2["000014.sst"].len() as u64 + private_bytes,
            bytes_total: files2.values().map(|d| d.len() as u64).sum(),
        }
    );
    // Unchanged SSTs are the same entries; private files are this
    // checkpoint's own.
    for name in ["000010.sst", "000011.sst", "000012.sst"] {
        let entry = |m: &Manifest| m.files.iter().find(|f| f.name == name).unwrap().clone();
        assert_eq!(entry(&m1), entry(&m2));
    }
    for name in &private {
        let path = fx.path(&format!("chk-0000000002/files/{name}"));
        assert_eq!(fs::read(path).unwrap(), files2[*name]);
    }

    // One shared object per distinct SST.
    assert_eq!(fx.shared(), shared_of(&[&m1, &m2]));
    assert_eq!(fx.shared().len(), 5);

    // Without `previous` (a new run), SSTs already in shared/ are still not
    // stored again.
    let (m3, stats) = fx.checkpoint(3, &state(&[10, 11, 12, 14], 2), None);
    assert_eq!(stats.files_uploaded, private.len());
    assert_eq!(fx.shared().len(), 5);

    for (m, files) in [(&m1, &files1), (&m2, &files2)] {
        assert_same(&fx.restore(m, &format!("restored-{}", m.id)), files);
    }
    assert_eq!(fx.store.latest().unwrap().0.unwrap(), m3);
}

#[test]
fn checkpoint_after_savepoint_restore_does_not_reference_the_savepoint() {
    let fx = Fixture::new(2);
    let files = state(&[20, 21], 0);
    let dir = fx.state_dir(&files);
    let sp = fx.store.write_savepoint("sp", manifest(1), Some(&dir)).unwrap();
    // Resuming from the savepoint, `previous` is its manifest: its files
    // can vanish with it, so they are copied into shared/.
    let (m, stats) = fx.checkpoint(2, &files, Some(&sp));
    assert_eq!(stats.files_uploaded, files.len());
    assert!(m.files.iter().all(|f| !f.key.starts_with("savepoints/")));
    fx.store.delete_savepoint("sp").unwrap();
    assert_eq!(fx.store.latest().unwrap().0.unwrap(), m);
}

// ---- 3. retention --------------------------------------------------------------

#[test]
fn retention_keeps_newest_and_collects_shared_files() {
    let fx = Fixture::new(2);
    let sets: [&[u64]; 4] = [&[1, 2, 3], &[2, 3, 4], &[3, 4, 5], &[5, 6]];
    let mut previous = None;
    let mut manifests = Vec::new();
    for (i, ssts) in sets.iter().enumerate() {
        let id = i as u64 + 1;
        let (m, _) = fx.checkpoint(id, &state(ssts, id), previous.as_ref());
        manifests.push(m.clone());
        previous = Some(m);
    }
    assert_eq!(fx.chk_dirs(), ["chk-0000000003", "chk-0000000004"]);
    assert_eq!(fx.shared(), shared_of(&[&manifests[2], &manifests[3]]));
    assert_eq!(fx.shared().len(), 4); // 3, 4, 5, 6
    assert_eq!(fx.store.latest().unwrap().0.unwrap(), manifests[3]);
    // The older kept one is still whole.
    assert_same(&fx.restore(&manifests[2], "restored-3"), &state(sets[2], 3));
}

#[test]
fn retention_deletes_older_incomplete_checkpoints_and_their_orphans() {
    let fx = Fixture::new(2);
    let (m1, _) = fx.checkpoint(1, &state(&[1, 2], 1), None);
    // A crash while writing checkpoint 2: files stored, no manifest.
    let storage = fx.store.storage();
    storage
        .put_bytes("chk-0000000002/files/CURRENT", b"MANIFEST-000007\n")
        .unwrap();
    storage
        .put_bytes("shared/000009.sst-deadbeef-4", b"torn")
        .unwrap();
    assert_eq!(fx.store.last_id().unwrap(), 2);
    let (m3, _) = fx.checkpoint(3, &state(&[2, 3], 3), Some(&m1));
    assert_eq!(fx.chk_dirs(), ["chk-0000000001", "chk-0000000003"]);
    assert_eq!(fx.shared(), shared_of(&[&m1, &m3]));
}

#[test]
fn garbage_collection_keeps_shared_files_when_a_kept_manifest_is_unreadable() {
    let fx = Fixture::new(2);
    let (m1, _) = fx.checkpoint(1, &state(&[1, 2], 1), None);
    let (m2, _) = fx.checkpoint(2, &state(&[2, 3], 2), Some(&m1));
    flip_byte(&fx.path("chk-0000000002/_MANIFEST"), 30);
    let (m3, _) = fx.checkpoint(3, &state(&[3, 4], 3), Some(&m2));
    // Checkpoint 1 expired, but with 2 unreadable nothing is collected:
    // 2 might refer to 1's files.
    assert_eq!(fx.chk_dirs(), ["chk-0000000002", "chk-0000000003"]);
    assert_eq!(fx.shared(), shared_of(&[&m1, &m2, &m3]));
}

// ---- 4. torn and corrupt checkpoints ------------------------------------------

/// Checkpoints 1 and 2; 2 shares 000001.sst with 1 and adds 000002.sst.
fn two_checkpoints() -> (Fixture, Manifest, Manifest) {
    let fx = Fixture::new(3);
    let (m1, _) = fx.checkpoint(1, &state(&[1], 1), None);
    let (m2, _) = fx.checkpoint(2, &state(&[1, 2], 2), Some(&m1));
    (fx, m1, m2)
}

fn key_of<'a>(m: &'a Manifest, name: &str) -> &'a str {
    &m.files.iter().find(|f| f.name == name).unwrap().key
}

#[test]
fn torn_or_corrupt_checkpoints_are_skipped_for_the_previous_one() {
    type Damage = fn(&Fixture, &Manifest);
    let cases: [(&str, Damage, &[&str]); 7] = [
        (
            "no manifest",
            |fx, _| fs::remove_file(fx.path("chk-0000000002/_MANIFEST")).unwrap(),
            &["incomplete (no manifest)"],
        ),
        (
            "truncated manifest",
            |fx, _| truncate(&fx.path("chk-0000000002/_MANIFEST"), 5),
            &["chk-0000000002/_MANIFEST", "truncated"],
        ),
        (
            "manifest cut inside its header",
            |fx, _| {
                truncate(
                    &fx.path("chk-0000000002/_MANIFEST"),
                    fx.path("chk-0000000002/_MANIFEST").metadata().unwrap().len() - 10,
                )
            },
            &["chk-0000000002/_MANIFEST", "truncated"],
        ),
        (
            "flipped byte in manifest",
            |fx, _| flip_byte(&fx.path("chk-0000000002/_MANIFEST"), 40),
            &["chk-0000000002/_MANIFEST", "CRC-32 mismatch"],
        ),
        (
            "flipped byte in private file",
            |fx, _| flip_byte(&fx.path("chk-0000000002/files/MANIFEST-000007"), 3),
            &["MANIFEST-000007", "CRC-32"],
        ),
        (
            "missing private file",
            |fx, _| fs::remove_file(fx.path("chk-0000000002/files/OPTIONS-000009")).unwrap(),
            &["OPTIONS-000009", "missing"],
        ),
        (
            "truncated new sst",
            |fx, m2| truncate(&fx.path(key_of(m2, "000002.sst")), 1),
            &["000002.sst", "bytes, the manifest says"],
        ),
    ];
    for (case, damage, words) in cases {
        let (fx, m1, m2) = two_checkpoints();
        damage(&fx, &m2);
        let (latest, skipped) = fx.store.latest().unwrap();
        assert_eq!(latest.as_ref(), Some(&m1), "{case}");
        assert_eq!(skipped.len(), 1, "{case}: {skipped:?}");
        assert_eq!(skipped[0].id, 2, "{case}");
        for word in words {
            assert!(
                skipped[0].reason.contains(word),
                "{case}: {:?} lacks {word:?}",
                skipped[0].reason
            );
        }
        // The previous checkpoint restores whole.
        assert_same(&fx.restore(&m1, "restored"), &state(&[1], 1));
    }
}

#[test]
fn skipped_checkpoints_are_listed_newest_first() {
    let (fx, _, m2) = two_checkpoints();
    // 3 is corrupt, 4 is incomplete: 2 is the latest good one.
    let (m3, _) = fx.checkpoint(3, &state(&[1, 2, 3], 3), Some(&m2));
    flip_byte(&fx.path(key_of(&m3, "000003.sst")), 100);
    fx.store
        .storage()
        .put_bytes("chk-0000000004/files/CURRENT", b"x")
        .unwrap();
    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest, Some(m2));
    assert_eq!(skipped.iter().map(|s| s.id).collect::<Vec<_>>(), [4, 3]);
    assert!(skipped[1].reason.contains("000003.sst"), "{:?}", skipped[1]);

    // Nothing good at all.
    for m in ["chk-0000000001/_MANIFEST", "chk-0000000002/_MANIFEST"] {
        flip_byte(&fx.path(m), 50);
    }
    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest, None);
    assert_eq!(skipped.iter().map(|s| s.id).collect::<Vec<_>>(), [4, 3, 2, 1]);
}

#[test]
fn a_manifest_in_the_wrong_directory_is_corrupt() {
    let (fx, m1, _) = two_checkpoints();
    fs::copy(
        fx.path("chk-0000000001/_MANIFEST"),
        fx.path("chk-0000000002/_MANIFEST"),
    )
    .unwrap();
    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest, Some(m1));
    assert!(
        skipped[0].reason.contains("manifest of checkpoint 1"),
        "{skipped:?}"
    );
}

#[test]
fn a_manifest_pointing_outside_the_restore_directory_is_corrupt() {
    let (fx, _, mut m2) = two_checkpoints();
    m2.files[0].name = "../escaped".into();
    fx.store
        .storage()
        .put_bytes("chk-0000000002/_MANIFEST", &m2.to_bytes())
        .unwrap();
    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest.unwrap().id, 1);
    assert!(skipped[0].reason.contains("../escaped"), "{skipped:?}");
    let err = fx
        .store
        .restore_files(&m2, &fx.tmp.path().join("restored"))
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    assert!(!fx.tmp.path().join("escaped").exists());
}

// ---- 5. savepoints -------------------------------------------------------------

#[test]
fn savepoints_are_self_contained() {
    let fx = Fixture::new(2);
    let files = state(&[1, 2, 3], 1);
    fx.checkpoint(1, &files, None);
    assert!(fx.store.savepoints().unwrap().is_empty());

    let dir = fx.state_dir(&files);
    let sp = fx
        .store
        .write_savepoint("before-upgrade_1.2", manifest(1), Some(&dir))
        .unwrap();
    assert_eq!(sp.kind, Kind::Savepoint as i32);
    assert_eq!(sp.name, "before-upgrade_1.2");
    assert_eq!(sp.files.len(), files.len());
    assert!(
        sp.files
            .iter()
            .all(|f| f.key.starts_with("savepoints/before-upgrade_1.2/files/"))
    );
    assert!(
        sp.files
            .iter()
            .all(|f| f.crc32 == crc32fast::hash(&files[&f.name]))
    );
    assert_eq!(
        CheckpointStore::savepoint_key("before-upgrade_1.2"),
        "savepoints/before-upgrade_1.2"
    );
    assert_eq!(fx.store.savepoints().unwrap(), ["before-upgrade_1.2"]);

    // Same name again: rejected, the first one intact.
    match fx
        .store
        .write_savepoint("before-upgrade_1.2", manifest(2), Some(&dir))
    {
        Err(e @ CheckpointError::AlreadyExists(_)) => assert!(e.to_string().contains("before-upgrade_1.2")),
        other => panic!("{other:?}"),
    }

    // Without any checkpoint or shared file it still verifies and restores.
    fx.store.discard_after(0).unwrap();
    fx.store.storage().delete("shared").unwrap();
    assert!(fx.chk_dirs().is_empty());
    assert_eq!(fx.store.latest().unwrap().0, None);
    assert_eq!(fx.store.savepoint("before-upgrade_1.2").unwrap(), sp);
    assert_same(&fx.restore(&sp, "restored"), &files);

    // Retention never touches it.
    fx.checkpoint(2, &state(&[4], 2), None);
    fx.checkpoint(3, &state(&[5], 3), None);
    fx.checkpoint(4, &state(&[6], 4), None);
    assert_eq!(fx.store.savepoint("before-upgrade_1.2").unwrap(), sp);

    // A damaged savepoint is an error, not a fallback.
    flip_byte(&fx.path(key_of(&sp, "000002.sst")), 10);
    let err = fx.store.savepoint("before-upgrade_1.2").unwrap_err();
    assert!(err.to_string().contains("000002.sst"), "{err}");

    fx.store.delete_savepoint("before-upgrade_1.2").unwrap();
    assert!(fx.store.savepoints().unwrap().is_empty());
    assert!(!fx.path("savepoints/before-upgrade_1.2").exists());
    for result in [
        fx.store.savepoint("before-upgrade_1.2").map(|_| ()),
        fx.store.delete_savepoint("before-upgrade_1.2"),
        fx.store.savepoint("never").map(|_| ()),
    ] {
        match result {
            Err(e @ CheckpointError::NoSavepoint(_)) => assert!(e.to_string().contains("savepoints/")),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn incomplete_savepoints_are_not_listed_and_can_be_rewritten() {
    let fx = Fixture::new(1);
    fx.store
        .storage()
        .put_bytes("savepoints/sp/files/CURRENT", b"torn")
        .unwrap();
    assert!(fx.store.savepoints().unwrap().is_empty());
    assert!(matches!(
        fx.store.savepoint("sp"),
        Err(CheckpointError::NoSavepoint(_))
    ));
    let files = state(&[1], 1);
    let dir = fx.state_dir(&files);
    let sp = fx.store.write_savepoint("sp", manifest(1), Some(&dir)).unwrap();
    assert_eq!(fx.store.savepoints().unwrap(), ["sp"]);
    assert_same(
        &fx.restore(&fx.store.savepoint("sp").unwrap(), "restored"),
        &files,
    );
    assert_eq!(sp.files.len(), files.len());
}

#[test]
fn savepoint_names_are_single_safe_components() {
    let fx = Fixture::new(1);
    for name in ["", "../x", "a/b", ".hidden", "sp one", "é"] {
        for result in [
            fx.store.write_savepoint(name, manifest(1), None).map(|_| ()),
            fx.store.savepoint(name).map(|_| ()),
            fx.store.delete_savepoint(name),
        ] {
            assert!(
                matches!(result, Err(CheckpointError::InvalidSavepointName(_))),
                "{name:?}: {result:?}"
            );
        }
    }
}

// ---- 6. numbering and discarding -------------------------------------------

#[test]
fn last_id_counts_incomplete_checkpoints() {
    let fx = Fixture::new(3);
    assert_eq!(fx.store.last_id().unwrap(), 0);
    fx.checkpoint(1, &state(&[1], 1), None);
    fx.checkpoint(2, &state(&[1], 2), None);
    assert_eq!(fx.store.last_id().unwrap(), 2);
    fx.store
        .storage()
        .put_bytes("chk-0000000005/files/CURRENT", b"x")
        .unwrap();
    assert_eq!(fx.store.last_id().unwrap(), 5);
    // Not checkpoint directories.
    fx.store
        .storage()
        .put_bytes("chk-00000000x9/_MANIFEST", b"x")
        .unwrap();
    fx.store.storage().put_bytes("chk-/_MANIFEST", b"x").unwrap();
    assert_eq!(fx.store.last_id().unwrap(), 5);
}

#[test]
fn discard_after_removes_newer_checkpoints_and_their_shared_files() {
    let fx = Fixture::new(5);
    let (m1, _) = fx.checkpoint(1, &state(&[1, 2], 1), None);
    let (m2, _) = fx.checkpoint(2, &state(&[2, 3], 2), Some(&m1));
    let (m3, _) = fx.checkpoint(3, &state(&[3, 4], 3), Some(&m2));
    fx.store
        .storage()
        .put_bytes("chk-0000000004/files/CURRENT", b"x")
        .unwrap();
    flip_byte(&fx.path(key_of(&m3, "000004.sst")), 0);
    flip_byte(&fx.path("chk-0000000002/_MANIFEST"), 30);

    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest.as_ref(), Some(&m1));
    assert_eq!(skipped.len(), 3);
    fx.store.discard_after(1).unwrap();
    assert_eq!(fx.chk_dirs(), ["chk-0000000001"]);
    assert_eq!(fx.shared(), shared_of(&[&m1]));
    assert_eq!(fx.store.last_id().unwrap(), 1);
    assert_eq!(fx.store.latest().unwrap(), (Some(m1.clone()), vec![]));

    // The resumed job continues at 2, with a different 000003.sst than the
    // discarded one had.
    let mut files = state(&[2], 4);
    files.insert("000003.sst".into(), bytes(333, 4321));
    let (m2b, _) = fx.checkpoint(2, &files, Some(&m1));
    assert_eq!(fx.store.latest().unwrap(), (Some(m2b.clone()), vec![]));
    assert_same(&fx.restore(&m2b, "restored"), &files);
}

// ---- 7. manifest envelope ------------------------------------------------------

#[test]
fn manifest_envelope_round_trips_and_checks_everything() {
    let mut m = manifest(9);
    m.format_version = FORMAT_VERSION;
    let encoded = m.to_bytes();
    assert_eq!(&encoded[..8], b"WAFERMF\x01");
    assert_eq!(Manifest::from_bytes(&encoded, "k").unwrap(), m);

    let reason = |bytes: &[u8]| match Manifest::from_bytes(bytes, "some/_MANIFEST") {
        Err(e @ CheckpointError::Corrupt { .. }) => {
            assert!(e.to_string().contains("some/_MANIFEST"), "{e}");
            e.to_string()
        }
        other => panic!("{other:?}"),
    };
    assert!(reason(&encoded[..encoded.len() - 1]).contains("truncated"));
    assert!(reason(&encoded[..10]).contains("truncated"));
    assert!(reason(&encoded[..3]).contains("truncated"));
    assert!(reason(b"").contains("truncated"));
    assert!(reason(b"PK\x03\x04 something else entirely").contains("magic"));
    let mut longer = encoded.clone();
    longer.push(0);
    assert!(reason(&longer).contains("stray bytes"));
    let mut flipped = encoded.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(reason(&flipped).contains("CRC-32 mismatch"));
    // An envelope that checks out around a body that is not a manifest.
    assert!(reason(&envelope(FORMAT_VERSION, &[0xff; 5])).contains("cannot decode"));
}

#[test]
fn manifest_from_a_newer_format_is_rejected_naming_the_versions() {
    let newer = FORMAT_VERSION + 1;
    let mut m = manifest(2);
    m.format_version = newer;
    let bytes = envelope(newer, &prost::Message::encode_to_vec(&m));
    let err = Manifest::from_bytes(&bytes, "chk-0000000002/_MANIFEST")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("format version {newer} is newer than {FORMAT_VERSION}")),
        "{err}"
    );

    // As the newest checkpoint it is skipped, with that reason.
    let (fx, m1, _) = two_checkpoints();
    fx.store
        .storage()
        .put_bytes("chk-0000000002/_MANIFEST", &bytes)
        .unwrap();
    let (latest, skipped) = fx.store.latest().unwrap();
    assert_eq!(latest, Some(m1));
    assert!(
        skipped[0].reason.contains(&format!("format version {newer}")),
        "{skipped:?}"
    );
}

#[test]
fn store_over_a_shared_storage_handle() {
    // `new` takes any storage; retain is clamped to at least one.
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(tmp.path()).unwrap());
    let store = CheckpointStore::new(storage.clone(), 0);
    assert_eq!(store.retain(), 1);
    store.write_checkpoint(manifest(1), None, None).unwrap();
    store.write_checkpoint(manifest(2), None, None).unwrap();
    assert_eq!(storage.list("").unwrap(), ["chk-0000000002"]);
}
