//! Checkpoint cost on session-like keyed state: N keys of a value state
//! (about 100 bytes each, incompressible) written through
//! `KeyedState`, then
//!
//! - a **full** checkpoint (nothing stored yet): the RocksDB snapshot (the
//!   part during which keyed workers pause) and the upload of every file;
//! - an **incremental** checkpoint after 1% of the keys changed, taken as
//!   keyed workers take it: the worker freezes its writes (its pause) and
//!   goes on writing while another thread writes the frozen set and
//!   snapshots RocksDB; only new SST files are uploaded;
//! - the baseline, the barrier as it was: 1% changed again, written back
//!   and snapshotted while the worker waits;
//! - **recovery**: finding the latest checkpoint (every file's CRC checked),
//!   materialising its files and opening the database.
//!
//! Run: `cargo bench -p wafer-benches --bench checkpoint` (keys from
//! `CHECKPOINT_BENCH_KEYS`, default `1000000,10000000`). Figures go to
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use wafer_checkpoint::{CheckpointStore, Manifest};
use wafer_state::{KeyedState, Kind, StateDb, StateDecl, Timers};

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

/// Entries a keyed worker's freeze captures between two batches (as
/// `wafer_runtime`'s keyed workers do).
const FREEZE_SLICE: usize = 4096;

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
    let changed_key = |i: u64| (i * 7919) % keys;
    let write_round = |state: &mut KeyedState, round: u64| {
        for i in 0..changed {
            let k = changed_key(i);
            state.value_set(op, 0, &key(k), value(k, round)).expect("set");
        }
    };
    write_round(&mut state, 1);

    // The barrier as keyed workers take it: a freeze starts, and between
    // batches (here 256 writes of round 2 to the same keys) it captures
    // the next 4096 entries; each step is a pause. Then the coordinator
    // writes the frozen set and snapshots RocksDB on another thread while
    // the worker goes on writing, held back from RocksDB until the release.
    let mut timers = Timers::new(db.clone());
    let mut round2 = 0u64;
    let mut write_round2 = |state: &mut KeyedState| {
        let k = changed_key(round2 % changed);
        state.value_set(op, 0, &key(k), value(k, 2)).expect("set");
        round2 += 1;
    };
    let t = Instant::now();
    state.begin_freeze(&mut timers).expect("freeze");
    let mut freeze_pause = t.elapsed();
    let mut slices = 0;
    let frozen = loop {
        let t = Instant::now();
        let step = state.freeze_step(FREEZE_SLICE);
        freeze_pause = freeze_pause.max(t.elapsed());
        slices += 1;
        if let Some(f) = step {
            break f;
        }
        for _ in 0..256 {
            write_round2(&mut state);
        }
    };
    let freeze_total = t.elapsed();
    let frozen_entries = frozen.state_entries();
    let (incr, incr_stats, snapshot, incr_total, writes_meanwhile) = std::thread::scope(|scope| {
        let coordinator = scope.spawn(|| {
            let t = Instant::now();
            frozen.apply(&db).expect("apply frozen writes");
            let (m, stats, snapshot, total) = checkpoint(2, Some(&full));
            (m, stats, snapshot + t.elapsed() - total, t.elapsed())
        });
        let mut writes = 0u64;
        while !coordinator.is_finished() {
            write_round2(&mut state);
            writes += 1;
        }
        let (m, stats, snapshot, total) = coordinator.join().expect("coordinator");
        (m, stats, snapshot, total, writes)
    });
    state.release().expect("release");

    // Baseline: the barrier as it was, writing the dirty entries back and
    // snapshotting while the worker waits.
    write_round(&mut state, 3);
    let t = Instant::now();
    state.flush().expect("flush");
    let write_back = t.elapsed();
    let (_m3, _, base_snapshot, _) = checkpoint(3, Some(&incr));
    let base_pause = write_back + base_snapshot;

    drop(state);
    drop(db);
    // Recovery from the incremental checkpoint taken while writes went on:
    // it holds round 1 of the changed keys, none of round 2.
    let t = Instant::now();
    let found = store.latest().expect("latest").0.expect("a checkpoint");
    assert_eq!(found.id, 3);
    let into = tmp.path().join("restored");
    store.restore_files(&incr, &into).expect("restore");
    let restored = StateDb::open(&into).expect("open restored");
    let recovery = t.elapsed();
    let (entries, _) = restored.count().expect("count");
    assert_eq!(entries as u64, keys, "every key restored");
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
    let changed_set: std::collections::HashSet<u64> = (0..changed).map(changed_key).collect();
    for k in (0..keys)
        .step_by((keys / 1000).max(1) as usize)
        .chain((0..50).map(changed_key))
    {
        let round = if changed_set.contains(&k) { 1 } else { 0 };
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
        "  incremental: {:>7.0} ms total; longest pause {:>5.2} ms (freeze of {frozen_entries} entries in {slices} \
         steps over {:.1} ms); in the background: write + snapshot {:>5.1} ms, {writes_meanwhile} writes \
         went on meanwhile; uploaded {:>7.1} MiB in {} files ({changed} keys changed)",
        incr_total.as_secs_f64() * 1e3,
        freeze_pause.as_secs_f64() * 1e3,
        freeze_total.as_secs_f64() * 1e3,
        snapshot.as_secs_f64() * 1e3,
        mib(incr_stats.bytes_uploaded),
        incr_stats.files_uploaded
    );
    println!(
        "  baseline (write back at the barrier): pause {:>5.1} ms = write-back {:>5.1} ms + snapshot {:>5.1} ms; \
         freeze pause is {:.1}% of it",
        base_pause.as_secs_f64() * 1e3,
        write_back.as_secs_f64() * 1e3,
        base_snapshot.as_secs_f64() * 1e3,
        100.0 * freeze_pause.as_secs_f64() / base_pause.as_secs_f64()
    );
    println!(
        "  recovery:    {:>7.0} ms (verify {} files, restore, open); checkpoint dir {:.0} MiB",
        recovery.as_secs_f64() * 1e3,
        incr.files.len(),
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
