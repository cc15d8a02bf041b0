//! The byte-level state stores against what a task relies on: staged writes invisible until
//! `write`, `write` atomic with its checkpoint, key order and range bounds, `clear`, reopening a
//! RocksDB store, and one memory budget shared by many RocksDB stores.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use streams::Error;
use streams::state::{
    InMemoryKeyValueStore, KeyValueStore, RocksDbConfig, RocksDbKeyValueStore, RocksDbMemory,
};

/// A small budget, so that tests open many stores cheaply.
fn config() -> RocksDbConfig {
    RocksDbConfig::new(RocksDbMemory::new(8 << 20, 0.5))
}

fn open(dir: &Path) -> RocksDbKeyValueStore {
    RocksDbKeyValueStore::open(dir, "store", &config()).unwrap()
}

/// Every entry of `store`, through `range(None, None)`.
fn all(store: &dyn KeyValueStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    range(store, None, None)
}

fn range(
    store: &dyn KeyValueStore,
    from: Option<&[u8]>,
    to: Option<&[u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.range(from, to).unwrap().map(Result::unwrap).collect()
}

/// Runs `check` on a fresh in-memory store and on a fresh RocksDB store.
fn both(check: impl Fn(&mut dyn KeyValueStore)) {
    check(&mut InMemoryKeyValueStore::new("store"));
    let dir = tempfile::tempdir().unwrap();
    check(&mut open(dir.path()));
}

// ---------------------------------------------------------------------------------------------
// Model test

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Write(Option<i64>),
    Get(Vec<u8>),
    Range(Option<Vec<u8>>, Option<Vec<u8>>),
    /// Close and reopen (RocksDB only; a no-op for the in-memory store).
    Reopen,
    Clear,
}

/// Short keys over a 3-letter alphabet (with 0x00 and 0xff): many are prefixes of others.
fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), proptest::collection::vec(any::<u8>(), 0..6)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        3 => proptest::option::of(0i64..1000).prop_map(Op::Write),
        2 => key().prop_map(Op::Get),
        2 => (proptest::option::of(key()), proptest::option::of(key()))
            .prop_map(|(f, t)| Op::Range(f, t)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Clear),
    ]
}

/// What a store must show: applied writes, staged writes, the checkpoint.
#[derive(Default)]
struct Model {
    applied: BTreeMap<Vec<u8>, Vec<u8>>,
    staged: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    checkpoint: Option<i64>,
}

/// Applies `ops` to the store `open` opens and to the model, comparing every read.
fn check_model(
    ops: &[Op],
    persistent: bool,
    mut open: impl FnMut() -> Box<dyn KeyValueStore>,
) -> Result<(), TestCaseError> {
    let mut store = open();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v) => {
                store.put(k, Some(v));
                model.staged.push((k.clone(), Some(v.clone())));
            }
            Op::Delete(k) => {
                store.put(k, None);
                model.staged.push((k.clone(), None));
            }
            Op::Write(c) => {
                store.write(*c).unwrap();
                for (k, v) in model.staged.drain(..) {
                    match v {
                        Some(v) => model.applied.insert(k, v),
                        None => model.applied.remove(&k),
                    };
                }
                if persistent && c.is_some() {
                    model.checkpoint = *c;
                }
            }
            Op::Get(k) => {
                prop_assert_eq!(
                    store.get(k).unwrap(),
                    model.applied.get(k).cloned(),
                    "op {}",
                    i
                );
            }
            Op::Range(from, to) => {
                let got = range(&*store, from.as_deref(), to.as_deref());
                let want: Vec<_> = model
                    .applied
                    .iter()
                    .filter(|(k, _)| from.as_ref().is_none_or(|f| *k >= f))
                    .filter(|(k, _)| to.as_ref().is_none_or(|t| *k < t))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "op {}: range {:?}..{:?}", i, from, to);
            }
            Op::Reopen => {
                if persistent {
                    store.close().unwrap();
                    store = open();
                    model.staged.clear();
                }
            }
            Op::Clear => {
                store.clear().unwrap();
                model.applied.clear();
                model.staged.clear();
                model.checkpoint = None;
            }
        }
        prop_assert_eq!(store.checkpoint(), model.checkpoint, "op {}", i);
    }
    let want: Vec<_> = model.applied.into_iter().collect();
    prop_assert_eq!(all(&*store), want);
    store.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// The in-memory store behaves as the model (and never has a checkpoint).
    #[test]
    fn in_memory_store_matches_model(ops in proptest::collection::vec(op(), 0..60)) {
        check_model(&ops, false, || Box::new(InMemoryKeyValueStore::new("store")))?;
    }

    /// The RocksDB store behaves as the model, across reopens: applied writes and the
    /// checkpoint survive, staged writes do not.
    #[test]
    fn rocksdb_store_matches_model(ops in proptest::collection::vec(op(), 0..60), wal in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let config = config().wal(wal);
        check_model(&ops, true, || {
            Box::new(RocksDbKeyValueStore::open(dir.path(), "store", &config).unwrap())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Staging, atomicity, checkpoints

/// Puts and deletes are invisible to `get` and `range` until `write`, then all visible.
#[test]
fn staged_writes_are_invisible_until_write() {
    both(|s| {
        s.put(b"a", Some(b"1"));
        s.write(None).unwrap();
        s.put(b"a", None);
        s.put(b"b", Some(b"2"));
        s.put(b"b", Some(b"3"));
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert_eq!(all(s), vec![(b"a".to_vec(), b"1".to_vec())]);
        s.write(None).unwrap();
        assert_eq!(s.get(b"a").unwrap(), None);
        // The last staged write of a key wins.
        assert_eq!(all(s), vec![(b"b".to_vec(), b"3".to_vec())]);
        // An empty value is a value, not a delete.
        s.put(b"c", Some(b""));
        s.write(None).unwrap();
        assert_eq!(s.get(b"c").unwrap(), Some(Vec::new()));
    });
}

/// A RocksDB store reopens at its last `write`: its data with its checkpoint, never the writes
/// staged after it; `write(None)` keeps the last checkpoint.
#[test]
fn rocksdb_write_is_atomic_with_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    assert_eq!(s.checkpoint(), None);
    assert!(s.persistent());
    s.put(b"k1", Some(b"v1"));
    s.write(Some(5)).unwrap();
    assert_eq!(s.checkpoint(), Some(5));
    s.put(b"k2", Some(b"v2"));
    s.write(None).unwrap();
    assert_eq!(s.checkpoint(), Some(5));
    s.put(b"k3", Some(b"v3"));
    s.put(b"k1", None);
    Box::new(s).close().unwrap();

    let mut s = open(dir.path());
    assert_eq!(s.checkpoint(), Some(5));
    assert_eq!(
        all(&s),
        vec![
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k2".to_vec(), b"v2".to_vec())
        ]
    );
    // A checkpoint alone is a write too; negative and large offsets round-trip.
    s.write(Some(-1)).unwrap();
    drop(s); // no close: the WAL recovers it
    let mut s = open(dir.path());
    assert_eq!(s.checkpoint(), Some(-1));
    s.write(Some(i64::MAX)).unwrap();
    Box::new(s).close().unwrap();
    assert_eq!(open(dir.path()).checkpoint(), Some(i64::MAX));
}

/// The in-memory store is not persistent and never reports a checkpoint.
#[test]
fn in_memory_store_has_no_checkpoint() {
    let mut s = InMemoryKeyValueStore::new("mem");
    assert_eq!(s.name(), "mem");
    assert!(!s.persistent());
    s.put(b"a", Some(b"1"));
    s.write(Some(10)).unwrap();
    assert_eq!(s.checkpoint(), None);
    assert_eq!(s.approximate_num_entries().unwrap(), 1);
}

/// With the WAL off, `close` flushes: data and checkpoint are there after a reopen.
#[test]
fn rocksdb_without_wal_close_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config().wal(false);
    let mut s = RocksDbKeyValueStore::open(dir.path(), "nowal", &config).unwrap();
    for i in 0..1000u32 {
        s.put(&i.to_be_bytes(), Some(b"x"));
    }
    s.write(Some(1000)).unwrap();
    Box::new(s).close().unwrap();
    let s = RocksDbKeyValueStore::open(dir.path(), "nowal", &config).unwrap();
    assert_eq!(s.checkpoint(), Some(1000));
    assert_eq!(all(&s).len(), 1000);
    let n = s.approximate_num_entries().unwrap();
    assert!((500..=2000).contains(&n), "estimate {n} for 1000 keys");
}

// ---------------------------------------------------------------------------------------------
// Ranges

/// Range bounds: `from` included, `to` excluded, `None` open, empty and inverted ranges empty,
/// bytewise order with keys that are prefixes of each other.
#[test]
fn range_bounds() {
    let keys: [&[u8]; 9] = [
        b"",
        b"\0",
        b"a",
        b"a\0",
        b"aa",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\xff",
    ];
    both(|s| {
        for k in keys.iter().rev() {
            s.put(k, Some(k));
        }
        s.write(None).unwrap();
        let ks = |from: Option<&[u8]>, to: Option<&[u8]>| -> Vec<Vec<u8>> {
            range(s, from, to)
                .into_iter()
                .map(|(k, v)| {
                    assert_eq!(k, v);
                    k
                })
                .collect()
        };
        let v = |ks: &[&[u8]]| -> Vec<Vec<u8>> { ks.iter().map(|k| k.to_vec()).collect() };
        assert_eq!(ks(None, None), v(&keys));
        assert_eq!(ks(Some(b""), None), v(&keys));
        assert_eq!(ks(None, Some(b"")), v(&[]));
        assert_eq!(ks(Some(b"a"), Some(b"b")), v(&[b"a", b"a\0", b"aa", b"ab"]));
        assert_eq!(ks(Some(b"a\0"), Some(b"ab")), v(&[b"a\0", b"aa"]));
        assert_eq!(ks(Some(b"a"), Some(b"a\0")), v(&[b"a"]));
        assert_eq!(ks(Some(b"a"), Some(b"a")), v(&[]));
        assert_eq!(ks(Some(b"b"), Some(b"a")), v(&[]));
        assert_eq!(ks(Some(b"ac"), Some(b"az")), v(&[]));
        assert_eq!(ks(Some(b"\xff"), None), v(&[b"\xff", b"\xff\xff"]));
        assert_eq!(ks(None, Some(b"\0")), v(&[b""]));
        assert_eq!(ks(Some(b"\xff\xff\xff"), None), v(&[]));
        assert_eq!(ks(None, Some(b"\xff\xff\xff")), v(&keys));
        // The iterator is lazy: taking one entry is fine.
        assert_eq!(
            s.range(Some(b"aa"), None)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .0,
            b"aa"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Clear

/// `clear` deletes every entry, the checkpoint and the staged writes; the store stays usable,
/// and a reopened RocksDB store is still empty.
#[test]
fn clear_empties_data_and_checkpoint() {
    both(|s| {
        for i in 0..100u8 {
            s.put(&[i], Some(&[i]));
        }
        s.write(Some(7)).unwrap();
        s.put(b"staged", Some(b"x"));
        s.clear().unwrap();
        assert_eq!(s.checkpoint(), None);
        assert!(all(s).is_empty());
        assert_eq!(s.get(&[5]).unwrap(), None);
        s.write(None).unwrap();
        assert_eq!(
            s.get(b"staged").unwrap(),
            None,
            "clear discards staged writes"
        );
        s.put(&[5], Some(b"again"));
        s.write(Some(1)).unwrap();
        assert_eq!(all(s), vec![(vec![5], b"again".to_vec())]);
        // Clearing an empty store is fine.
        s.clear().unwrap();
        s.clear().unwrap();
        assert!(all(s).is_empty());
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"a", Some(b"1"));
    s.write(Some(3)).unwrap();
    s.clear().unwrap();
    Box::new(s).close().unwrap();
    let s = open(dir.path());
    assert_eq!(s.checkpoint(), None);
    assert!(all(&s).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Memory, errors

/// Two stores share one 4 MiB budget: writing 8 MiB through them keeps the shared cache
/// (blocks and memtables) within it, and every value reads back.
#[test]
fn stores_sharing_memory_stay_within_budget() {
    const TOTAL: usize = 4 << 20;
    const SLACK: usize = 1 << 20;
    let memory = RocksDbMemory::new(TOTAL, 0.5);
    assert_eq!(memory.total_bytes(), TOTAL);
    let config = RocksDbConfig::new(memory.clone());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut stores: Vec<RocksDbKeyValueStore> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| RocksDbKeyValueStore::open(d.path(), &format!("s{i}"), &config).unwrap())
        .collect();
    let value = vec![7u8; 1024];
    let mut max_usage = 0;
    for batch in 0..40u32 {
        for s in &mut stores {
            for k in 0..100u32 {
                s.put(&(batch * 100 + k).to_be_bytes(), Some(&value));
            }
            s.write(Some(i64::from(batch))).unwrap();
            max_usage = max_usage.max(memory.usage_bytes());
        }
    }
    for s in &stores {
        for k in (0..4000u32).step_by(97) {
            assert_eq!(
                s.get(&k.to_be_bytes()).unwrap().as_deref(),
                Some(&value[..])
            );
        }
        max_usage = max_usage.max(memory.usage_bytes());
    }
    assert!(max_usage > 0, "nothing was charged to the shared cache");
    assert!(
        max_usage <= TOTAL + SLACK,
        "usage {max_usage} over the {TOTAL} budget"
    );
    for s in stores {
        Box::new(s).close().unwrap();
    }
}

/// Opening a RocksDB directory that an open store holds is a store error, not a panic; once
/// the first store is closed the directory opens.
#[test]
fn opening_a_locked_directory_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = RocksDbKeyValueStore::open(dir.path(), "second", &config()).unwrap_err();
    match &err {
        Error::Store {
            store,
            reason,
            source: Some(source),
        } => {
            assert_eq!(store, "second");
            assert!(reason.starts_with("cannot open"), "{reason}");
            // RocksDB's own error is kept, and says why.
            let cause = source.to_string().to_lowercase();
            assert!(cause.contains("lock"), "{cause}");
            assert!(err.to_string().contains(&source.to_string()), "{err}");
        }
        e => panic!("expected a store error, got {e:?}"),
    }
    assert!(!err.is_retriable());
    Box::new(first).close().unwrap();
    open(dir.path());
}

/// A path RocksDB cannot create a database in is a store error.
#[test]
fn an_unusable_directory_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = RocksDbKeyValueStore::open(&file, "s", &config()).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
}
