//! State against a plain map oracle: with a cache far smaller than the state,
//! with transactions, with TTL; and timers.

use std::collections::HashMap;

use super::*;

fn db() -> (tempfile::TempDir, std::sync::Arc<StateDb>) {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    (dir, db)
}

fn decl(kind: Kind, ttl_ms: Option<i64>) -> StateDecl {
    StateDecl { kind, ttl_ms }
}

#[test]
fn state_larger_than_the_cache_matches_a_plain_map() {
    let (_dir, db) = db();
    for cache in [1usize, 7, 100_000] {
        let mut s = KeyedState::new(db.clone(), cache);
        let op = db.operator_id(&format!("op-{cache}")).unwrap();
        s.declare(op, 0, decl(Kind::Value, None));
        s.declare(op, 1, decl(Kind::List, None));
        s.declare(op, 2, decl(Kind::Map, None));
        let mut oracle_v: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut oracle_l: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        let mut oracle_m: HashMap<Vec<u8>, std::collections::BTreeMap<Vec<u8>, Vec<u8>>> = HashMap::new();
        let mut x: u64 = 42;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 500).into_bytes();
            let val = i.to_le_bytes().to_vec();
            match (x >> 20) % 5 {
                0 => {
                    s.value_set(op, 0, &key, val.clone()).unwrap();
                    oracle_v.insert(key.clone(), val);
                }
                1 => {
                    s.list_append(op, 1, &key, val.clone()).unwrap();
                    oracle_l.entry(key.clone()).or_default().push(val);
                }
                2 => {
                    let mk = vec![(x % 7) as u8];
                    s.map_put(op, 2, &key, mk.clone(), val.clone()).unwrap();
                    oracle_m.entry(key.clone()).or_default().insert(mk, val);
                }
                3 => {
                    let mk = vec![(x % 7) as u8];
                    s.map_remove(op, 2, &key, &mk).unwrap();
                    if let Some(m) = oracle_m.get_mut(&key) {
                        m.remove(&mk);
                    }
                }
                _ => {
                    s.clear(op, 0, &key).unwrap();
                    oracle_v.remove(&key);
                }
            }
            assert_eq!(s.value_get(op, 0, &key).unwrap(), oracle_v.get(&key).cloned());
        }
        s.flush().unwrap();
        // A fresh worker over the same database sees everything.
        let mut t = KeyedState::new(db.clone(), cache);
        t.declare(op, 0, decl(Kind::Value, None));
        t.declare(op, 1, decl(Kind::List, None));
        t.declare(op, 2, decl(Kind::Map, None));
        for k in 0..500 {
            let key = format!("k{k}").into_bytes();
            assert_eq!(t.value_get(op, 0, &key).unwrap(), oracle_v.get(&key).cloned());
            assert_eq!(
                t.list_get(op, 1, &key).unwrap(),
                oracle_l.get(&key).cloned().unwrap_or_default()
            );
            let want: Vec<(Vec<u8>, Vec<u8>)> = oracle_m
                .get(&key)
                .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                .unwrap_or_default();
            assert_eq!(t.map_entries(op, 2, &key).unwrap(), want);
        }
        if cache == 1 {
            assert!(s.stats().evictions > 0 && s.stats().writes > 0);
        }
    }
}

#[test]
fn an_aborted_transaction_leaves_no_trace() {
    let (_dir, db) = db();
    let mut s = KeyedState::new(db, 2);
    s.declare(1, 0, decl(Kind::Value, None));
    s.value_set(1, 0, b"a", b"before".to_vec()).unwrap();
    s.begin();
    s.value_set(1, 0, b"a", b"during".to_vec()).unwrap();
    s.value_set(1, 0, b"b", b"new".to_vec()).unwrap();
    assert_eq!(s.value_get(1, 0, b"a").unwrap(), Some(b"during".to_vec()));
    s.abort();
    assert_eq!(s.value_get(1, 0, b"a").unwrap(), Some(b"before".to_vec()));
    assert_eq!(s.value_get(1, 0, b"b").unwrap(), None);
    s.begin();
    s.value_set(1, 0, b"b", b"kept".to_vec()).unwrap();
    s.commit().unwrap();
    assert_eq!(s.value_get(1, 0, b"b").unwrap(), Some(b"kept".to_vec()));
}

#[test]
fn expired_state_is_invisible_and_removed_from_disk() {
    let (_dir, db) = db();
    let mut s = KeyedState::new(db.clone(), 1000);
    s.declare(1, 0, decl(Kind::Value, Some(1_000)));
    s.declare(1, 1, decl(Kind::Value, None));
    s.observe_event_time(10_000);
    s.value_set(1, 0, b"k", b"v".to_vec()).unwrap();
    s.value_set(1, 1, b"k", b"forever".to_vec()).unwrap();
    s.set_watermark(10_999);
    assert_eq!(s.value_get(1, 0, b"k").unwrap(), Some(b"v".to_vec()));
    s.flush().unwrap();
    assert_eq!(db.count().unwrap().0, 2);
    s.set_watermark(11_000);
    assert_eq!(
        s.value_get(1, 0, b"k").unwrap(),
        None,
        "expired at stream time + ttl"
    );
    // Expired entries that were written to disk are removed by compaction
    // once the horizon passes them, even if nobody touches them again.
    let mut fresh = KeyedState::new(db.clone(), 1000);
    fresh.declare(1, 0, decl(Kind::Value, Some(1_000)));
    fresh.observe_event_time(20_000);
    fresh.value_set(1, 0, b"other", b"v".to_vec()).unwrap();
    fresh.flush().unwrap();
    db.set_expiry_horizon(i64::MAX);
    db.compact().unwrap();
    assert_eq!(db.count().unwrap().0, 1, "only the state without TTL is left");
}

#[test]
fn timers_fire_in_time_order_once() {
    let (_dir, db) = db();
    let mut t = Timers::new(db.clone());
    t.register(1, b"b", Domain::EventTime, 20);
    t.register(1, b"a", Domain::EventTime, 10);
    t.register(1, b"a", Domain::EventTime, 10); // de-duplicated
    t.register(2, b"a", Domain::EventTime, 30);
    t.register(1, b"c", Domain::ProcessingTime, 5);
    t.delete(2, b"a", Domain::EventTime, 30);
    assert_eq!(t.len(), 3);
    t.flush().unwrap();
    let mut restored = Timers::new(db);
    assert_eq!(restored.load(|_| true).unwrap(), 3);
    let fired = restored.pop_due(Domain::EventTime, 25, 100);
    let keys: Vec<(i64, &[u8])> = fired.iter().map(|f| (f.time, f.key.as_slice())).collect();
    assert_eq!(keys, vec![(10, &b"a"[..]), (20, &b"b"[..])]);
    assert!(restored.pop_due(Domain::EventTime, 25, 100).is_empty());
    assert_eq!(restored.next(Domain::ProcessingTime), Some(5));
}

#[test]
fn state_without_ttl_survives_the_end_of_input() {
    let (_dir, db) = db();
    let mut s = KeyedState::new(db, 10);
    s.declare(1, 0, decl(Kind::Value, None));
    s.value_set(1, 0, b"k", b"v".to_vec()).unwrap();
    s.set_watermark(i64::MAX);
    assert_eq!(s.value_get(1, 0, b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_timer_horizon_sees_state_as_of_the_timer() {
    let (_dir, db) = db();
    let mut s = KeyedState::new(db, 10);
    s.declare(1, 0, decl(Kind::List, Some(100)));
    s.observe_event_time(1_000);
    s.list_append(1, 0, b"k", b"x".to_vec()).unwrap();
    // The watermark jumps far past the expiry (1100) in one step, as at the
    // end of input; a timer for 1050 still sees the entry, one for 1100 not.
    s.set_watermark(i64::MAX);
    s.set_horizon(Some(1_050));
    assert_eq!(s.list_get(1, 0, b"k").unwrap(), vec![b"x".to_vec()]);
    s.set_horizon(Some(1_100));
    assert!(s.list_get(1, 0, b"k").unwrap().is_empty());
    s.set_horizon(None);
    assert!(s.list_get(1, 0, b"k").unwrap().is_empty());
}

#[test]
fn live_entries_count_committed_state_and_keep_their_peak() {
    let (_dir, db) = db();
    let mut s = KeyedState::new(db, 2);
    s.declare(1, 0, decl(Kind::Value, None));
    for k in [b"a", b"b", b"c"] {
        s.value_set(1, 0, k, b"v".to_vec()).unwrap();
    }
    s.value_set(1, 0, b"a", b"w".to_vec()).unwrap();
    assert_eq!((s.live_entries(), s.peak_entries()), (3, 3));
    s.begin();
    s.value_set(1, 0, b"d", b"v".to_vec()).unwrap();
    s.abort();
    assert_eq!(
        (s.live_entries(), s.peak_entries()),
        (3, 3),
        "aborted writes do not count"
    );
    s.begin();
    s.clear(1, 0, b"a").unwrap();
    s.clear(1, 0, b"b").unwrap();
    s.commit().unwrap();
    assert_eq!((s.live_entries(), s.peak_entries()), (1, 3));
}

/// A small deterministic generator for the randomized tests.
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

#[test]
fn aborted_transactions_leave_no_trace_when_the_cache_evicts_mid_call() {
    // Calls write many keys through caches smaller than one call, so cells
    // a call wrote are evicted (and written to RocksDB) before it aborts.
    // Between calls some dirty entries are written back early (as keyed
    // workers do when checkpoints are on), and every 50 calls everything
    // is flushed and a fresh reader must see exactly the committed state:
    // a dirty entry missing from the dirty list would be lost there.
    let (_dir, db) = db();
    for cache in [1usize, 3, 50, 1000] {
        let mut s = KeyedState::new(db.clone(), cache);
        let op = db.operator_id(&format!("abort-{cache}")).unwrap();
        let check = |committed_v: &HashMap<Vec<u8>, Vec<u8>>,
                     committed_l: &HashMap<Vec<u8>, Vec<Vec<u8>>>| {
            let mut t = KeyedState::new(db.clone(), cache);
            t.declare(op, 0, decl(Kind::Value, None));
            t.declare(op, 1, decl(Kind::List, None));
            for k in 0..40 {
                let key = format!("k{k}").into_bytes();
                assert_eq!(t.value_get(op, 0, &key).unwrap(), committed_v.get(&key).cloned());
                assert_eq!(
                    t.list_get(op, 1, &key).unwrap(),
                    committed_l.get(&key).cloned().unwrap_or_default()
                );
            }
        };
        s.declare(op, 0, decl(Kind::Value, None));
        s.declare(op, 1, decl(Kind::List, None));
        let mut committed_v: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut committed_l: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        let mut x = 7u64 + cache as u64;
        for call in 0..400u64 {
            let mut v = committed_v.clone();
            let mut l = committed_l.clone();
            s.begin();
            for w in 0..(lcg(&mut x) % 12) {
                let key = format!("k{}", lcg(&mut x) % 40).into_bytes();
                let val = (call * 100 + w).to_le_bytes().to_vec();
                match lcg(&mut x) % 4 {
                    // Both ways of setting a value: the copy goes into a
                    // buffer of a value replaced or undone before.
                    0 if w % 2 == 0 => {
                        s.value_set(op, 0, &key, val.clone()).unwrap();
                        v.insert(key, val);
                    }
                    0 => {
                        s.value_set_from(op, 0, &key, &val).unwrap();
                        v.insert(key, val);
                    }
                    1 => {
                        s.clear(op, 0, &key).unwrap();
                        v.remove(&key);
                    }
                    2 => {
                        s.list_append(op, 1, &key, val.clone()).unwrap();
                        l.entry(key).or_default().push(val);
                    }
                    _ => assert_eq!(s.value_get(op, 0, &key).unwrap(), v.get(&key).cloned()),
                }
            }
            if lcg(&mut x).is_multiple_of(3) {
                s.abort();
            } else {
                s.commit().unwrap();
                (committed_v, committed_l) = (v, l);
            }
            let key = format!("k{}", lcg(&mut x) % 40).into_bytes();
            assert_eq!(s.value_get(op, 0, &key).unwrap(), committed_v.get(&key).cloned());
            if lcg(&mut x).is_multiple_of(4) {
                s.write_back_excess((lcg(&mut x) % 6) as usize).unwrap();
            }
            if call % 50 == 49 {
                s.flush().unwrap();
                check(&committed_v, &committed_l);
            }
        }
        s.flush().unwrap();
        check(&committed_v, &committed_l);
        let live = committed_v.len() + committed_l.len();
        assert_eq!(s.live_entries(), live, "cache {cache}: live entries after aborts");
    }
}

#[test]
fn timers_on_disk_match_memory_after_every_flush() {
    // Timers set, deleted and fired between flushes, some set again after
    // firing: after each flush a fresh load sees exactly the timers set.
    let (_dir, db) = db();
    let mut t = Timers::new(db.clone());
    let mut oracle = std::collections::BTreeSet::new();
    let mut x = 99u64;
    for round in 0..30 {
        for _ in 0..200 {
            let key = format!("k{}", lcg(&mut x) % 30).into_bytes();
            let time = (lcg(&mut x) % 50) as i64 + round * 10;
            match lcg(&mut x) % 3 {
                0 | 1 => {
                    t.register(1, &key, Domain::EventTime, time);
                    oracle.insert((time, key));
                }
                _ => {
                    t.delete(1, &key, Domain::EventTime, time);
                    oracle.remove(&(time, key));
                }
            }
        }
        let upto = round * 10 + 15;
        for f in t.pop_due(Domain::EventTime, upto, usize::MAX) {
            assert!(oracle.remove(&(f.time, f.key.to_vec())));
        }
        assert!(oracle.first().is_none_or(|(time, _)| *time > upto));
        t.flush().unwrap();
        let mut loaded = Timers::new(db.clone());
        loaded.load(|_| true).unwrap();
        let on_disk: std::collections::BTreeSet<(i64, Vec<u8>)> = loaded
            .pop_due(Domain::EventTime, i64::MAX, usize::MAX)
            .into_iter()
            .map(|f| (f.time, f.key.to_vec()))
            .collect();
        assert_eq!(on_disk, oracle, "round {round}");
    }
}

#[test]
fn an_abort_restoring_a_reloaded_entry_still_writes_it_back() {
    // Written, evicted, read back in (clean, in a new slot) and then the
    // call aborts: the restored entry is dirty and must reach RocksDB at the
    // next flush, through the dirty list like any other.
    let (_dir, db) = db();
    let mut s = KeyedState::new(db.clone(), 2);
    let op = db.operator_id("reload").unwrap();
    s.declare(op, 0, decl(Kind::Value, None));
    s.value_set(op, 0, b"a", b"1".to_vec()).unwrap();
    s.flush().unwrap();
    s.begin();
    s.value_set(op, 0, b"a", b"2".to_vec()).unwrap();
    s.value_set(op, 0, b"b", b"x".to_vec()).unwrap();
    s.value_set(op, 0, b"c", b"y".to_vec()).unwrap();
    assert_eq!(s.value_get(op, 0, b"a").unwrap(), Some(b"2".to_vec()));
    s.abort();
    s.flush().unwrap();
    let mut t = KeyedState::new(db.clone(), 2);
    t.declare(op, 0, decl(Kind::Value, None));
    assert_eq!(t.value_get(op, 0, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.value_get(op, 0, b"b").unwrap(), None);
}

/// Value and list state of every key as RocksDB holds it.
type Stored = (
    std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
);

fn stored(db: &StateDb) -> Stored {
    let mut out = Stored::default();
    db.scan(crate::db::CF_STATE, &[], |k, v| {
        let (_, _, state, key) = crate::codec::split_state_key(k).unwrap();
        match crate::codec::decode(v).unwrap().0 {
            Data::Value(v) => assert!(out.0.insert(key.to_vec(), v.to_vec()).is_none() && state == 0),
            Data::List(l) => assert!(out.1.insert(key.to_vec(), l).is_none() && state == 1),
            Data::Map(_) => panic!("no map state here"),
        }
    })
    .unwrap();
    out
}

fn stored_timers(db: &std::sync::Arc<StateDb>) -> std::collections::BTreeSet<(i64, Vec<u8>)> {
    let mut t = Timers::new(db.clone());
    t.load(|_| true).unwrap();
    t.pop_due(Domain::EventTime, i64::MAX, usize::MAX)
        .into_iter()
        .map(|f| (f.time, f.key.to_vec()))
        .collect()
}

#[test]
fn frozen_writes_snapshot_the_barrier_while_work_goes_on() {
    // A worker starts a freeze at a barrier and goes on reading and writing
    // (with a cache so small that most of it is evicted, and calls that
    // abort), capturing a few entries now and then; most are captured when
    // touched or evicted. Once the set is complete, at a random later
    // moment the "coordinator" applies it: RocksDB must then hold exactly
    // the state and timers as of the barrier, none of the writes made since.
    // After the release, and at the end, RocksDB catches up with everything.
    for cache in [1usize, 5, 64, 10_000] {
        let (_dir, db) = db();
        let op = db.operator_id("frozen").unwrap();
        let mut s = KeyedState::new(db.clone(), cache);
        // Evicted entries would reach RocksDB every 8 writes, were they not
        // held.
        s.set_write_batch(8);
        let mut t = Timers::new(db.clone());
        s.declare(op, 0, decl(Kind::Value, None));
        s.declare(op, 1, decl(Kind::List, None));
        let mut model = Stored::default();
        let mut timers = std::collections::BTreeSet::new();
        let mut x = cache as u64 + 7;
        let step = |s: &mut KeyedState,
                    t: &mut Timers,
                    model: &mut Stored,
                    timers: &mut std::collections::BTreeSet<(i64, Vec<u8>)>,
                    x: &mut u64| {
            let key = format!("k{}", lcg(x) % 97).into_bytes();
            match lcg(x) % 6 {
                0 | 1 => {
                    let v = lcg(x).to_le_bytes().to_vec();
                    s.value_set(op, 0, &key, v.clone()).unwrap();
                    model.0.insert(key, v);
                }
                2 => {
                    let item = vec![(lcg(x) % 250) as u8];
                    s.list_append(op, 1, &key, item.clone()).unwrap();
                    model.1.entry(key).or_default().push(item);
                }
                3 => {
                    s.clear(op, 0, &key).unwrap();
                    model.0.remove(&key);
                }
                4 => {
                    let time = (lcg(x) % 40) as i64;
                    if lcg(x).is_multiple_of(2) {
                        t.register(op, &key, Domain::EventTime, time);
                        timers.insert((time, key));
                    } else {
                        t.delete(op, &key, Domain::EventTime, time);
                        timers.remove(&(time, key));
                    }
                }
                _ => {
                    assert_eq!(s.value_get(op, 0, &key).unwrap().as_ref(), model.0.get(&key));
                    assert_eq!(
                        s.list_get(op, 1, &key).unwrap(),
                        model.1.get(&key).cloned().unwrap_or_default()
                    );
                }
            }
        };
        for round in 0..30 {
            for _ in 0..150 {
                step(&mut s, &mut t, &mut model, &mut timers, &mut x);
            }
            s.begin_freeze(&mut t).unwrap();
            assert!(
                s.begin_freeze(&mut t).is_err(),
                "a second freeze while one is under way"
            );
            assert!(s.release().is_err(), "a release before the freeze is complete");
            let (at_barrier, timers_at_barrier) = (model.clone(), timers.clone());
            // The "coordinator" applies the frozen set once it is complete
            // and step `apply_at` is reached; past 300, the checkpoint failed
            // and the release applies it.
            let apply_at = lcg(&mut x) % 400;
            let mut frozen = None;
            let mut applied = false;
            for i in 0..300 {
                if frozen.is_none() && lcg(&mut x).is_multiple_of(3) {
                    frozen = s.freeze_step((lcg(&mut x) % 4) as usize);
                }
                if let Some(f) = &frozen
                    && i >= apply_at
                    && !applied
                {
                    assert!(f.apply(&db).unwrap());
                    assert!(!f.apply(&db).unwrap(), "applied once");
                    assert_eq!(stored(&db), at_barrier, "cache {cache} round {round}");
                    assert_eq!(
                        stored_timers(&db),
                        timers_at_barrier,
                        "cache {cache} round {round}"
                    );
                    applied = true;
                }
                if lcg(&mut x).is_multiple_of(10) {
                    // A call that aborts leaves no trace, held or not.
                    s.begin();
                    t.begin();
                    let (mut m, mut tm) = (model.clone(), timers.clone());
                    for _ in 0..5 {
                        step(&mut s, &mut t, &mut m, &mut tm, &mut x);
                    }
                    s.abort();
                    t.abort();
                } else {
                    step(&mut s, &mut t, &mut model, &mut timers, &mut x);
                }
            }
            let frozen = loop {
                if let Some(f) = frozen.take().or_else(|| s.freeze_step(2)) {
                    break f;
                }
            };
            if apply_at < 300 && !applied {
                assert!(frozen.apply(&db).unwrap());
                assert_eq!(stored(&db), at_barrier, "cache {cache} round {round}");
                assert_eq!(
                    stored_timers(&db),
                    timers_at_barrier,
                    "cache {cache} round {round}"
                );
            }
            assert!(s.flush().is_err(), "no flush while held");
            if cache == 1 {
                assert!(s.writes_waiting() > 0, "evictions wait while held");
            }
            // Released before or after the coordinator applied: the same.
            s.release().unwrap();
            assert!(frozen.is_applied());
            assert_eq!(s.writes_waiting(), 0);
        }
        assert!(s.freeze_step(1).is_none(), "nothing under way");
        s.flush().unwrap();
        t.flush().unwrap();
        assert_eq!(stored(&db), model, "cache {cache} at the end");
        assert_eq!(stored_timers(&db), timers, "cache {cache} at the end");
    }
}

#[test]
fn misses_on_keys_never_stored_skip_rocksdb_only_while_the_worker_knows_them_all() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = KeyedState::new(db.clone(), 3);
        s.set_write_batch(2);
        s.declare(1, 0, decl(Kind::Value, None));
        for i in 0..40u32 {
            s.value_set(1, 0, &i.to_be_bytes(), i.to_le_bytes().to_vec())
                .unwrap();
        }
        // Most of the 40 were evicted to RocksDB; the cache holds 3.
        assert!(s.stats().writes > 5);
        let skipped = s.stats().reads_skipped;
        assert!(skipped >= 40, "every new key was known absent: {skipped}");
        for i in 0..40u32 {
            let v = s.value_get(1, 0, &i.to_be_bytes()).unwrap();
            assert_eq!(v, Some(i.to_le_bytes().to_vec()), "key {i}");
        }
        assert_eq!(s.stats().reads_skipped, skipped, "stored keys are read");
        for i in 100..140u32 {
            assert_eq!(s.value_get(1, 0, &i.to_be_bytes()).unwrap(), None);
        }
        // A false positive now and then reads RocksDB (and finds nothing).
        assert!(s.stats().reads_skipped >= skipped + 35);
        s.flush().unwrap();

        // A second worker over a database written since it was opened does
        // not know what is there: it reads every miss.
        let mut t = KeyedState::new(db, 3);
        t.declare(1, 0, decl(Kind::Value, None));
        for i in 0..40u32 {
            let v = t.value_get(1, 0, &i.to_be_bytes()).unwrap();
            assert_eq!(v, Some(i.to_le_bytes().to_vec()), "key {i}");
        }
        assert_eq!(t.value_get(1, 0, b"never").unwrap(), None);
        assert_eq!(t.stats().reads_skipped, 0);
    }
    // Nor does one over a database that held state when opened (a restore).
    let db = StateDb::open(dir.path()).unwrap();
    let mut s = KeyedState::new(db, 3);
    s.declare(1, 0, decl(Kind::Value, None));
    assert_eq!(
        s.value_get(1, 0, &7u32.to_be_bytes()).unwrap(),
        Some(7u32.to_le_bytes().to_vec())
    );
    assert_eq!(s.value_get(1, 0, b"never").unwrap(), None);
    assert_eq!(s.stats().reads_skipped, 0);
}
