//! Checkpoint cost on session-like keyed state: N keys of a value state
//! (about 100 bytes each, incompressible) written through
//! `KeyedState`, then
//!
//! - a **full** checkpoint (nothing stored yet): the RocksDB snapshot (the
//!   part during which keyed workers pause) and the upload of every file;
//! - an **incremental** checkpoint after 1% of the keys changed: only new
//!   SST files are uploaded;
//! - **recovery**: finding the latest checkpoint (every file's CRC checked),
//!   materialising its files and opening the database.
//!
//! Run: `cargo bench -p wafer-benches --bench checkpoint` (keys from
//! `CHECKPOINT_BENCH_KEYS`, default `1000000,10000000`). Figures go to
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use wafer_checkpoint::{CheckpointStore, Manifest};
use wafer_state::{KeyedState, Kind, StateDb, StateDecl};

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            n += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    n
}

fn value(i: u64, round: u64) -> Vec<u8> {
    // start, end, count, clicks, then ~70 bytes that do not compress (a
    // session's ids and features): ~100 bytes, so 10M keys are ~1 GB.
    let mut v = Vec::with_capacity(104);
    for x in [
        i * 1000 + round,
        i * 1000 + 900_000 + round,
        i % 97 + round,
        i % 13,
    ] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let mut r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_add(1);
    while v.len() < 104 {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        v.extend_from_slice(&r.to_le_bytes());
    }
    v
}

/// The job setting `checkpoints.max_dirty_entries` the bench runs with.
const MAX_DIRTY: usize = 8192;

fn key(i: u64) -> Vec<u8> {
    format!("user-{i:012}").into_bytes()
}

fn run(keys: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = StateDb::open(&tmp.path().join("db")).expect("db");
    let op = db.operator_id("processor:sessions").expect("op");
    let mut state = KeyedState::new(db.clone(), 1_000_000);
    state.declare(
        op,
        0,
        StateDecl {
            kind: Kind::Value,
            ttl_ms: None,
        },
    );
    let t = Instant::now();
    for i in 0..keys {
        state.value_set(op, 0, &key(i), value(i, 0)).expect("set");
    }
    state.flush().expect("flush");
    db.compact().expect("compact");
    let load = t.elapsed();
    let store = CheckpointStore::local(&tmp.path().join("ckpt"), 3).expect("store");

    let checkpoint = |id: u64, previous: Option<&Manifest>| {
        let snap_dir = tmp.path().join(format!("snap-{id}"));
        let t = Instant::now();
        db.checkpoint(&snap_dir).expect("rocksdb checkpoint");
        let pause = t.elapsed();
        let m = Manifest {
            id,
            ..Manifest::default()
        };
        let (m, stats) = store
            .write_checkpoint(m, Some(&snap_dir), previous)
            .expect("write");
        let total = t.elapsed();
        let _ = std::fs::remove_dir_all(&snap_dir);
        (m, stats, pause, total)
    };

    let (full, full_stats, full_pause, full_total) = checkpoint(1, None);
    // 1% of the keys change, as between two checkpoints of a busy job.
    let changed = (keys / 100).max(1);
    for i in 0..changed {
        let k = (i * 7919) % keys;
        state.value_set(op, 0, &key(k), value(k, 1)).expect("set");
        // A keyed worker writes the excess of dirty entries back between
        // batches (of up to 256 records) with `max_dirty_entries` set.
        if i % 256 == 255 {
            state.write_back_excess(MAX_DIRTY).expect("write back");
        }
    }
    // At a barrier a keyed worker first writes its dirty entries back, then
    // waits for the snapshot: both are part of the pause.
    let t = Instant::now();
    state.flush().expect("flush");
    let write_back = t.elapsed();
    let (_incr, incr_stats, incr_pause, incr_total) = checkpoint(2, Some(&full));

    drop(state);
    drop(db);
    let t = Instant::now();
    let (latest, _) = store.latest().expect("latest");
    let latest = latest.expect("a checkpoint");
    let into = tmp.path().join("restored");
    store.restore_files(&latest, &into).expect("restore");
    let restored = StateDb::open(&into).expect("open restored");
    let recovery = t.elapsed();
    let (entries, _) = restored.count().expect("count");
    assert_eq!(entries as u64, keys, "every key restored");
    // The changes since the last flush come back from the copied log.
    let mut check = KeyedState::new(restored.clone(), 16);
    let op2 = restored.operator_id("processor:sessions").expect("op");
    check.declare(
        op2,
        0,
        StateDecl {
            kind: Kind::Value,
            ttl_ms: None,
        },
    );
    for k in [0, 7919 % keys, keys - 1] {
        let round = if (0..changed).any(|i| (i * 7919) % keys == k) {
            1
        } else {
            0
        };
        assert_eq!(
            check.value_get(op2, 0, &key(k)).expect("get"),
            Some(value(k, round)),
            "key {k} as of the checkpoint"
        );
    }

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "keys {keys}: state {:.0} MiB on disk (loaded in {:.1}s)",
        mib(full_stats.bytes_total),
        load.as_secs_f64()
    );
    println!(
        "  full:        {:>7.0} ms total, snapshot (pause) {:>5.1} ms, uploaded {:>7.1} MiB in {} files",
        full_total.as_secs_f64() * 1e3,
        full_pause.as_secs_f64() * 1e3,
        mib(full_stats.bytes_uploaded),
        full_stats.files_uploaded
    );
    println!(
        "  incremental: {:>7.0} ms total, write-back {:>5.1} ms + snapshot {:>5.1} ms (pause), uploaded {:>7.1} MiB in {} files ({changed} keys changed)",
        incr_total.as_secs_f64() * 1e3,
        write_back.as_secs_f64() * 1e3,
        incr_pause.as_secs_f64() * 1e3,
        mib(incr_stats.bytes_uploaded),
        incr_stats.files_uploaded
    );
    println!(
        "  recovery:    {:>7.0} ms (verify {} files, restore, open); checkpoint dir {:.0} MiB",
        recovery.as_secs_f64() * 1e3,
        latest.files.len(),
        mib(dir_bytes(&tmp.path().join("ckpt")))
    );
    let _ = Arc::clone(&restored);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let keys = std::env::var("CHECKPOINT_BENCH_KEYS").unwrap_or_else(|_| "1000000,10000000".into());
    for k in keys.split(',').filter_map(|k| k.trim().parse::<u64>().ok()) {
        run(k);
    }
}
