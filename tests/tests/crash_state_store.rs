//! Crash test of the RocksDB state store: a child committing batches (100 keys and the
//! changelog offset they reflect, in one `write`) is killed with SIGKILL at random moments;
//! after every restart the store must be at a whole batch, with its offset, at or after the
//! last acknowledged one.
//!
//! The child re-executes this test binary (see `common`). The seed is printed;
//! `MOLDAU_CRASH_SEED=<n>` replays the same kill delays.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::path::Path;
use std::thread;
use std::time::Duration;

use streams::state::{KeyValueStore, RocksDbConfig, RocksDbKeyValueStore, RocksDbMemory};

mod common;
use common::{DIR_ENV, Kill, SEED_ENV, ack, run_child, seed, start_acks};

/// Keys per batch: `k000` to `k099`.
const KEYS: u32 = 100;

fn key(k: u32) -> Vec<u8> {
    format!("k{k:03}").into_bytes()
}

/// Opens the store in `dir` with a 1 MiB budget (so that memtables are flushed every few
/// hundred batches: recovery sees tables and WAL both), retrying while the directory is
/// locked: a child's lock goes with the kill, but a process forked meanwhile may hold it a
/// moment.
fn open_store(dir: &Path) -> RocksDbKeyValueStore {
    let config = RocksDbConfig::new(RocksDbMemory::new(1 << 20, 0.5));
    for _ in 0..1000 {
        match RocksDbKeyValueStore::open(dir, "crash", &config) {
            Err(streams::Error::Store {
                source: Some(cause),
                ..
            }) if cause.to_string().to_lowercase().contains("lock") => {
                thread::sleep(Duration::from_millis(10));
            }
            res => return res.unwrap(),
        }
    }
    panic!("{} stayed locked for 10 s", dir.display());
}

/// The child of [`committed_batches_survive_sigkill`]: from the store's checkpoint `i` on,
/// puts `k000..k099` all with value `i` (8 bytes big-endian), writes them with checkpoint
/// `i + 1`, and acknowledges `i`, until killed.
#[test]
fn crash_child_state_store() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let mut store = open_store(Path::new(&dir));
    let mut i = store.checkpoint().unwrap_or(0);
    loop {
        for k in 0..KEYS {
            store.put(&key(k), Some(&i.to_be_bytes()));
        }
        store.write(Some(i + 1)).unwrap();
        ack(format_args!("{i}"));
        i += 1;
    }
}

/// A write and its checkpoint survive a process crash together: a child committing 100-key
/// batches is SIGKILLed 20 times. After each kill the reopened store's checkpoint `c` is at
/// least the last acknowledged batch + 1 and never goes back, and every key holds exactly
/// `c - 1` (no torn batch, no batch without its offset).
#[test]
fn committed_batches_survive_sigkill() {
    const KILLS: u32 = 20;
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut checkpoint: Option<i64> = None;
    let mut runs_with_acks = 0;
    for run in 0..KILLS {
        let kill = Kill::random(&mut rng, 150);
        let child = run_child(
            "crash_child_state_store",
            dir.path(),
            &[(SEED_ENV, rng.u64(..).to_string())],
            kill,
        );
        let acks: Vec<i64> = child.acks.iter().map(|a| a.parse().unwrap()).collect();
        // The child resumed from the checkpoint the parent saw, and committed in order.
        let resume = checkpoint.unwrap_or(0);
        for (n, a) in acks.iter().enumerate() {
            assert_eq!(*a, resume + n as i64, "run {run} ({kill:?}): acks {acks:?}");
        }
        runs_with_acks += u32::from(!acks.is_empty());

        let store = open_store(dir.path());
        let c = store.checkpoint();
        if let Some(&last) = acks.last() {
            assert!(
                c >= Some(last + 1),
                "run {run} ({kill:?}): checkpoint {c:?} but batch {last} was acknowledged"
            );
        }
        assert!(
            c >= checkpoint,
            "run {run}: checkpoint went back from {checkpoint:?} to {c:?}"
        );
        let entries: Vec<(Vec<u8>, Vec<u8>)> = store
            .range(None, None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        match c {
            None => assert!(entries.is_empty(), "run {run}: data without a checkpoint"),
            Some(c) => {
                let want: Vec<(Vec<u8>, Vec<u8>)> = (0..KEYS)
                    .map(|k| (key(k), (c - 1).to_be_bytes().to_vec()))
                    .collect();
                assert!(
                    entries == want,
                    "run {run} ({kill:?}): checkpoint {c} but the keys hold {:?}",
                    entries
                        .iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                        .collect::<Vec<_>>()
                );
            }
        }
        checkpoint = c;
        Box::new(store).close().unwrap();
    }
    println!(
        "{KILLS} kills, {runs_with_acks} after acknowledgements, final checkpoint {checkpoint:?}"
    );
    assert!(
        runs_with_acks >= KILLS / 4,
        "only {runs_with_acks} children got to commit"
    );
}
