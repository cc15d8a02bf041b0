//! The partition's half of transactions, as the transaction coordinator and read_committed
//! consumers rely on it. These tests live in the crate because markers are written only by the
//! coordinator (`Partition::append_marker` is crate-private); `tests/transactions_log.rs` covers
//! what the public API reaches.
//!
//! Every read_committed check goes through [`consumer_view`], a reference implementation of
//! Kafka's consumer rule, and compares with what must be visible.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::txn_index::{self, AbortedTxn};
use crate::codec::{BatchBuilder, BatchProducer, ControlRecordType, EndTransactionMarker};
use crate::{
    AbortedTransaction, CleanupPolicy, Error, FetchData, FlushPolicy, IsolationLevel, Log,
    ManualClock, Partition, Record, TopicConfig,
};

const NOW: i64 = 1_700_000_000_000;
const COMMIT: ControlRecordType = ControlRecordType::Commit;
const ABORT: ControlRecordType = ControlRecordType::Abort;

fn open(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::EveryAppend)
        .background_maintenance(false)
        .open()
        .unwrap()
}

/// As after a crash: the next open recovers every segment (no clean-shutdown marker, no
/// recovery point).
fn simulate_crash(dir: &Path) {
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.join("recovery-point-offset-checkpoint")).unwrap();
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("t-0")
}

/// A producer as the transactional producer drives one partition: sequences from 0 in each
/// epoch, and an epoch bumped by the coordinator at every commit or abort (KIP-890).
#[derive(Clone, Copy, Debug)]
struct TxnProducer {
    id: i64,
    epoch: i16,
    seq: i32,
    /// The records' timestamp.
    timestamp: i64,
}

impl TxnProducer {
    fn new(id: i64) -> TxnProducer {
        TxnProducer {
            id,
            epoch: 0,
            seq: 0,
            timestamp: NOW,
        }
    }

    /// A batch with each value as its own key, at the producer's epoch and next sequence.
    fn batch(&self, values: &[&str], transactional: bool) -> Vec<u8> {
        let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: self.id,
            producer_epoch: self.epoch,
            base_sequence: self.seq,
            transactional,
        });
        for v in values {
            b.append(self.timestamp, Some(v.as_bytes()), Some(v.as_bytes()), &[]);
        }
        b.finish()
    }

    /// Sends a batch of the transaction (starting it if none is ongoing); returns its base
    /// offset.
    fn send(&mut self, p: &Partition, values: &[&str]) -> i64 {
        let info = p.append_batches(&mut self.batch(values, true)).unwrap();
        assert!(!info.duplicate);
        self.seq += values.len() as i32;
        info.base_offset
    }

    /// The coordinator ends the transaction: bumps the epoch, writes the marker with it.
    fn end(&mut self, p: &Partition, kind: ControlRecordType) -> i64 {
        self.epoch += 1;
        self.seq = 0;
        p.append_marker(self.id, self.epoch, 0, kind).unwrap()
    }
}

fn plain(p: &Partition, value: &str) -> i64 {
    p.append(&[Record::new(Some(value.as_bytes()), Some(value.as_bytes()))])
        .unwrap()
        .base_offset
}

/// Kafka's read_committed consumer rule, applied to one fetch as the consumer's
/// `CompletedFetch` does: an aborted transaction applies from the first batch whose last
/// offset reaches its first offset; its producer's transactional batches are skipped until
/// that producer's abort marker; control batches are never returned.
fn consumer_view(fetch: &FetchData<&[u8]>) -> Vec<(i64, String)> {
    // The log lists them in the order they begin, as Kafka's consumer applies them.
    let pending: Vec<AbortedTransaction> = fetch.aborted_transactions.clone();
    assert!(pending.is_sorted_by_key(|t| t.first_offset), "{pending:?}");
    let mut pending = VecDeque::from(pending);
    let mut aborted = HashSet::new();
    let mut out = Vec::new();
    for batch in fetch.batches() {
        if batch.producer_id() >= 0 {
            while pending
                .front()
                .is_some_and(|t| t.first_offset <= batch.last_offset())
            {
                aborted.insert(pending.pop_front().unwrap().producer_id);
            }
            if batch.is_control() {
                if EndTransactionMarker::of(&batch).unwrap().kind == ABORT {
                    aborted.remove(&batch.producer_id());
                }
                continue;
            }
            if batch.is_transactional() && aborted.contains(&batch.producer_id()) {
                continue;
            }
        }
        if batch.is_control() {
            continue;
        }
        for r in batch.records() {
            let r = r.unwrap();
            if r.offset >= fetch.fetch_offset {
                out.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
    }
    out
}

/// What a consumer at `isolation` sees reading the partition from the log start, in fetches of
/// `max_bytes` (read_committed through [`consumer_view`]). Checks that read_committed never
/// returns a batch at or past the LSO.
fn consume(p: &Partition, isolation: IsolationLevel, max_bytes: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut offset = p.log_start_offset().unwrap();
    loop {
        let fetch = p
            .read_into_isolated(offset, max_bytes, &mut buf, isolation)
            .unwrap();
        match isolation {
            IsolationLevel::ReadCommitted => {
                for b in fetch.batches() {
                    assert!(
                        b.last_offset() < fetch.last_stable_offset,
                        "batch {b:?} at or past the LSO {}",
                        fetch.last_stable_offset
                    );
                }
                out.extend(consumer_view(&fetch));
            }
            IsolationLevel::ReadUncommitted => {
                assert!(fetch.aborted_transactions.is_empty());
                out.extend(fetch.records().map(|r| {
                    (
                        r.offset,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    )
                }));
            }
        }
        let next = fetch.next_offset();
        if next == offset {
            return out;
        }
        offset = next;
    }
}

fn values(v: &[(i64, String)]) -> Vec<&str> {
    v.iter().map(|(_, s)| s.as_str()).collect()
}

/// Every aborted-transaction entry of the partition, by segment.
fn txn_entries(p: &Partition) -> Vec<(i64, Vec<AbortedTxn>)> {
    p.lock()
        .unwrap()
        .segments
        .iter()
        .filter(|(_, s)| !s.txn_index.is_empty())
        .map(|(&b, s)| (b, s.txn_index.entries().to_vec()))
        .collect()
}

fn lso(p: &Partition) -> i64 {
    p.last_stable_offset().unwrap()
}

fn leo(p: &Partition) -> i64 {
    p.log_end_offset().unwrap()
}

const C: IsolationLevel = IsolationLevel::ReadCommitted;
const U: IsolationLevel = IsolationLevel::ReadUncommitted;

#[test]
fn the_lso_stays_at_an_open_transaction_and_moves_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = (TxnProducer::new(1), TxnProducer::new(2));

    plain(&p, "x0");
    assert_eq!(lso(&p), 1);
    assert_eq!(a.send(&p, &["a1"]), 1);
    assert_eq!((lso(&p), leo(&p)), (1, 2));
    plain(&p, "x1");
    assert_eq!(b.send(&p, &["b1", "b2"]), 3);
    a.send(&p, &["a2"]);
    assert_eq!(
        (lso(&p), leo(&p)),
        (1, 6),
        "other data does not move the LSO"
    );
    assert_eq!(values(&consume(&p, C, 1 << 20)), ["x0"]);

    assert_eq!(a.end(&p, COMMIT), 6);
    assert_eq!(lso(&p), 3, "now b's transaction is the earliest open one");
    assert_eq!(values(&consume(&p, C, 1 << 20)), ["x0", "a1", "x1"]);

    assert_eq!(b.end(&p, ABORT), 7);
    assert_eq!((lso(&p), p.high_watermark().unwrap()), (8, 8));
    assert_eq!(values(&consume(&p, C, 1 << 20)), ["x0", "a1", "x1", "a2"]);
    assert_eq!(
        values(&consume(&p, U, 1 << 20)),
        ["x0", "a1", "x1", "b1", "b2", "a2"]
    );
    // The abort is indexed in the marker's segment, with the LSO right after the marker.
    assert_eq!(
        txn_entries(&p),
        vec![(
            0,
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 3,
                last_offset: 7,
                last_stable_offset: 8
            }]
        )]
    );
    // Read_committed past the LSO returns nothing; both levels report it.
    b.send(&p, &["b3"]);
    let mut buf = Vec::new();
    let f = p.read_into_isolated(8, 1 << 20, &mut buf, C).unwrap();
    assert_eq!((f.batches().count(), f.last_stable_offset), (0, 8));
    let f = p.read_into_isolated(8, 1 << 20, &mut buf, U).unwrap();
    assert_eq!((f.batches().count(), f.last_stable_offset), (1, 8));
    assert_eq!(p.read(0, 1 << 20).unwrap().last_stable_offset, 8);
}

/// The aborted list a read_committed fetch returns is exactly what a consumer needs to skip
/// aborted batches, however the log is cut into fetches and segments, including an abort
/// whose transaction was still open when another aborted.
#[test]
fn read_committed_returns_the_aborts_a_consumer_needs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default().segment_bytes(400))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b, mut c) = (
        TxnProducer::new(1),
        TxnProducer::new(2),
        TxnProducer::new(3),
    );
    plain(&p, "p0");
    a.send(&p, &["a-bad-1", "a-bad-2"]);
    b.send(&p, &["b-bad-1"]);
    plain(&p, "p1");
    c.send(&p, &["c-ok-1"]);
    a.send(&p, &["a-bad-3"]);
    a.end(&p, ABORT); // while b's and c's transactions are open
    b.send(&p, &["b-bad-2"]);
    c.send(&p, &["c-ok-2"]);
    c.end(&p, COMMIT);
    plain(&p, "p2");
    b.end(&p, ABORT);
    a.send(&p, &["a-ok-1"]); // a's next transaction, same producer id
    a.end(&p, COMMIT);
    plain(&p, "p3");
    assert!(p.segment_count().unwrap() > 2);

    let expected = ["p0", "p1", "c-ok-1", "c-ok-2", "p2", "a-ok-1", "p3"];
    for max_bytes in [1, 100, 300, 1 << 20] {
        assert_eq!(values(&consume(&p, C, max_bytes)), expected, "{max_bytes}");
    }
    // Starting anywhere, a consumer sees the committed records from there on.
    let all = consume(&p, C, 1 << 20);
    let mut buf = Vec::new();
    for from in 0..leo(&p) {
        let mut got = Vec::new();
        let mut offset = from;
        loop {
            let f = p.read_into_isolated(offset, 150, &mut buf, C).unwrap();
            got.extend(consumer_view(&f));
            if f.next_offset() == offset {
                break;
            }
            offset = f.next_offset();
        }
        let want: Vec<_> = all.iter().filter(|(o, _)| *o >= from).cloned().collect();
        assert_eq!(got, want, "from {from}");
    }
    assert_eq!(consume(&p, U, 1 << 20).len(), 12);
}

#[test]
fn markers_with_stale_epochs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = TxnProducer::new(1);

    // Transaction 1 is aborted (with epoch 1); transaction 2 opens at epoch 1.
    a.send(&p, &["t1"]);
    a.end(&p, ABORT);
    let t2 = a.send(&p, &["t2"]);
    let before = (leo(&p), lso(&p));
    // The first abort arrives again, late (a coordinator retry): it must not end t2.
    for epoch in [0, 1] {
        let err = p.append_marker(1, epoch, 0, ABORT).unwrap_err();
        assert!(
            matches!(err, Error::ProducerFenced { producer_id: 1, current_epoch: 1, epoch: e } if e == epoch),
            "{err:?}"
        );
    }
    assert_eq!((leo(&p), lso(&p)), before);
    assert_eq!(lso(&p), t2);

    // Commit t2 (epoch 2). Its marker retried before anything else is harmless.
    a.end(&p, COMMIT);
    assert_eq!(lso(&p), leo(&p));
    p.append_marker(1, 2, 0, COMMIT).unwrap();
    assert_eq!(lso(&p), leo(&p));
    // Transaction 3 opens at epoch 2; the commit of t2 retried again must not commit it.
    let t3 = a.send(&p, &["t3"]);
    let err = p.append_marker(1, 2, 0, COMMIT).unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err:?}");
    assert_eq!(lso(&p), t3);
    assert_eq!(values(&consume(&p, C, 1 << 20)), ["t2"]);
    // The coordinator aborts t3: it never becomes visible.
    a.end(&p, ABORT);
    assert_eq!(values(&consume(&p, C, 1 << 20)), ["t2"]);
    assert_eq!(values(&consume(&p, U, 1 << 20)), ["t1", "t2", "t3"]);
}

#[test]
fn a_marker_fences_late_data_of_the_old_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = TxnProducer::new(1);
    a.send(&p, &["t1"]);
    let late = a; // the same producer, before the coordinator's bump
    a.end(&p, COMMIT);
    let end = leo(&p);
    let err = p
        .append_batches(&mut late.batch(&["late"], true))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProducerFenced {
                producer_id: 1,
                epoch: 0,
                current_epoch: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!((leo(&p), lso(&p)), (end, end));
    // The new epoch starts at sequence 0.
    assert_eq!(a.send(&p, &["t2"]), end);

    // A marker for a producer the partition has not seen ends nothing but sets its epoch.
    p.append_marker(9, 5, 0, ABORT).unwrap();
    assert!(txn_entries(&p).is_empty(), "nothing was aborted");
    let mut old = TxnProducer::new(9);
    old.epoch = 4;
    assert!(matches!(
        p.append_batches(&mut old.batch(&["x"], true)),
        Err(Error::ProducerFenced { .. })
    ));
    old.epoch = 5;
    old.send(&p, &["y"]);

    // Inside a transaction, a producer writes only transactional batches.
    let err = p.append_batches(&mut a.batch(&["z"], false)).unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    // Markers need a producer.
    assert!(matches!(
        p.append_marker(-1, 0, 0, COMMIT),
        Err(Error::InvalidRecord { .. })
    ));
}

/// A history across several segments: aborts, a commit, an open transaction, plain records.
/// Returns the producers for the test to go on with.
fn history(p: &Partition) -> (TxnProducer, TxnProducer, TxnProducer) {
    let (mut a, mut b, mut c) = (
        TxnProducer::new(1),
        TxnProducer::new(2),
        TxnProducer::new(3),
    );
    for round in 0..6 {
        let r = round.to_string();
        a.send(p, &[&format!("a{r}-bad")]);
        plain(p, &format!("p{r}"));
        c.send(p, &[&format!("c{r}-ok")]);
        a.send(p, &[&format!("a{r}-bad2")]);
        a.end(p, ABORT);
        c.end(p, COMMIT);
    }
    b.send(p, &["b-open-1"]);
    plain(p, "p-last");
    b.send(p, &["b-open-2"]);
    (a, b, c)
}

fn history_committed() -> Vec<String> {
    let mut v = Vec::new();
    for r in 0..6 {
        v.push(format!("p{r}"));
        v.push(format!("c{r}-ok"));
    }
    v
}

#[test]
fn transactions_survive_a_clean_reopen_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default().segment_bytes(500))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    let (a, mut b, _) = history(&p);
    let open_at = lso(&p);
    let committed = consume(&p, C, 1 << 20);
    let uncommitted = consume(&p, U, 1 << 20);
    let entries = txn_entries(&p);
    assert_eq!(values(&committed), history_committed());
    assert_eq!(entries.iter().map(|(_, e)| e.len()).sum::<usize>(), 6);
    assert!(entries.len() > 1, "aborts in several segments");
    log.close().unwrap();

    for crash in [false, true] {
        if crash {
            simulate_crash(dir.path());
        }
        let log = open(dir.path(), &clock);
        let p = log.partition("t", 0).unwrap();
        assert_eq!(lso(&p), open_at, "crash: {crash}");
        assert_eq!(consume(&p, C, 1 << 20), committed, "crash: {crash}");
        assert_eq!(consume(&p, C, 200), committed, "crash: {crash}");
        assert_eq!(consume(&p, U, 1 << 20), uncommitted);
        assert_eq!(txn_entries(&p), entries, "crash: {crash}");
        // Every epoch is still known: a's last abort fenced its epoch 5.
        let err = p.append_marker(a.id, a.epoch - 1, 0, ABORT).unwrap_err();
        assert!(matches!(err, Error::ProducerFenced { .. }), "{err:?}");
        log.close().unwrap();
    }
    // The index files on disk hold Kafka's entries, 34 bytes per abort, and a 4-byte CRC.
    let sizes: Vec<usize> = std::fs::read_dir(partition_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
        .map(|p| std::fs::metadata(p).unwrap().len() as usize)
        .collect();
    assert!(
        sizes.iter().all(|s| s % txn_index::ENTRY_LEN == 4),
        "{sizes:?}"
    );
    let entries_on_disk: usize = sizes.iter().map(|s| s - 4).sum();
    assert_eq!(entries_on_disk, 6 * txn_index::ENTRY_LEN);

    // After a crash, the open transaction goes on and commits.
    simulate_crash(dir.path());
    let log = open(dir.path(), &clock);
    let p = log.partition("t", 0).unwrap();
    b.send(&p, &["b-open-3"]);
    b.end(&p, COMMIT);
    let mut want = history_committed();
    want.extend(["b-open-1", "p-last", "b-open-2", "b-open-3"].map(String::from));
    assert_eq!(values(&consume(&p, C, 1 << 20)), want);
    assert_eq!(lso(&p), leo(&p));
}

/// A damaged, cut or lost aborted-transaction index is caught at open (or, after a crash,
/// never read) and rebuilt from the markers: read_committed consumers never see aborted
/// records because of it.
#[test]
fn a_damaged_txnindex_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default().segment_bytes(1000))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    history(&p);
    let committed = consume(&p, C, 1 << 20);
    let entries = txn_entries(&p);
    log.close().unwrap();
    let (base, seg_entries) = entries
        .iter()
        .find(|(_, e)| e.len() >= 2)
        .cloned()
        .expect("a segment with two aborts");
    let path = txn_index::path(&partition_dir(dir.path()), base);
    let good = std::fs::read(&path).unwrap();
    assert_eq!(good.len(), seg_entries.len() * txn_index::ENTRY_LEN + 4);

    type Damage = fn(&[u8]) -> Option<Vec<u8>>;
    let damages: [(&str, Damage, bool); 9] = [
        ("torn", |g| Some(g[..g.len() - 5].to_vec()), false),
        // The second entry's marker moved one offset back: in range, in order, but not a
        // marker.
        (
            "marker offset",
            |g| {
                let mut b = g.to_vec();
                b[34 + 25] = b[34 + 25].wrapping_sub(1);
                Some(b)
            },
            false,
        ),
        (
            "producer id",
            |g| {
                let mut b = g.to_vec();
                b[9] ^= 0x40;
                Some(b)
            },
            false,
        ),
        ("cut at an entry", |g| Some(g[..34].to_vec()), false),
        ("lost", |_| None, false),
        (
            "kafka's layout, without the crc",
            |g| Some(g[..g.len() - 4].to_vec()),
            false,
        ),
        (
            "cut at an entry, then a crash",
            |g| Some(g[..34].to_vec()),
            true,
        ),
        ("lost, then a crash", |_| None, true),
        ("garbage, then a crash", |g| Some(vec![0xa5; g.len()]), true),
    ];
    for (what, damage, crash) in damages {
        match damage(&good) {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        if crash {
            simulate_crash(dir.path());
        }
        let log = open(dir.path(), &clock);
        let p = log.partition("t", 0).unwrap();
        assert_eq!(txn_entries(&p), entries, "{what}");
        assert_eq!(consume(&p, C, 1 << 20), committed, "{what}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "{what}: the file is rewritten"
        );
        log.close().unwrap();
    }
}

#[test]
fn compaction_drops_aborted_data_keeps_committed_data_and_markers_and_skips_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let config = TopicConfig::default()
        .cleanup_policy(CleanupPolicy::COMPACT)
        .segment_bytes(300);
    log.create_topic("t", 1, config).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b, mut c) = (
        TxnProducer::new(1),
        TxnProducer::new(2),
        TxnProducer::new(3),
    );
    let send_kv = |prod: &mut TxnProducer, k: &str, v: &str| {
        let mut bb = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: prod.id,
            producer_epoch: prod.epoch,
            base_sequence: prod.seq,
            transactional: true,
        });
        bb.append(NOW, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
        p.append_batches(&mut bb.finish()).unwrap();
        prod.seq += 1;
    };
    let put = |k: &str, v: &str| {
        p.append(&[Record::new(Some(k.as_bytes()), Some(v.as_bytes()))])
            .unwrap();
    };
    put("k1", "v1");
    put("k2", "v2");
    // An aborted transaction overwrites both keys: it must shadow nothing.
    send_kv(&mut a, "k1", "aborted");
    send_kv(&mut a, "k2", "aborted");
    a.end(&p, ABORT);
    // A committed transaction overwrites k1.
    send_kv(&mut b, "k1", "committed");
    b.end(&p, COMMIT);
    // An open transaction overwrites k1 and k2, and writes k3.
    let open_first = p.log_end_offset().unwrap();
    send_kv(&mut c, "k1", "open");
    for i in 0..8 {
        put(&format!("f{i}"), "filler"); // rolls segments past the open transaction
    }
    send_kv(&mut c, "k2", "open");
    send_kv(&mut c, "k3", "open");
    for i in 8..16 {
        put(&format!("f{i}"), "filler");
    }
    assert_eq!(lso(&p), open_first);
    let markers = |p: &Partition| {
        let mut n = 0;
        let mut offset = p.log_start_offset().unwrap();
        while offset < leo(p) {
            let f = p.read(offset, 1 << 20).unwrap();
            n += f.batches().filter(|b| b.is_control()).count();
            offset = f.next_offset();
        }
        n
    };
    let from_open = |p: &Partition| -> Vec<(i64, String)> {
        consume(p, U, 1 << 20)
            .into_iter()
            .filter(|(o, _)| *o >= open_first)
            .collect()
    };
    let open_before = from_open(&p);
    let committed_before = consume(&p, C, 1 << 20);

    let stats = log.compact(true).unwrap();
    assert!(stats.segments_cleaned > 0, "{stats:?}");
    assert_eq!(markers(&p), 2, "markers are kept");
    assert_eq!(
        from_open(&p),
        open_before,
        "an open transaction is not touched"
    );
    assert_eq!(lso(&p), open_first);
    let below: Vec<String> = consume(&p, U, 1 << 20)
        .into_iter()
        .filter(|(o, _)| *o < open_first)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        below,
        ["v2", "committed"],
        "aborted records are gone and shadowed nothing; k1's committed value won"
    );
    assert_eq!(consume(&p, C, 1 << 20), {
        let mut v = committed_before.clone();
        v.retain(|(_, s)| s != "v1");
        v
    });
    // The aborted-transaction entry is carried to the cleaned segment, and survives a reopen.
    assert_eq!(
        txn_entries(&p)
            .iter()
            .flat_map(|(_, e)| e.iter().map(|e| e.producer_id))
            .collect::<Vec<_>>(),
        [1]
    );
    let entries = txn_entries(&p);
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(txn_entries(&p), entries);
    assert_eq!(from_open(&p), open_before);

    // Once the transaction commits, its records are compacted like any other.
    c.end(&p, COMMIT);
    for i in 16..24 {
        p.append(&[Record::new(
            Some(format!("f{i}").as_bytes()),
            Some(b"filler"),
        )])
        .unwrap();
    }
    log.compact(true).unwrap();
    let live: Vec<String> = consume(&p, C, 1 << 20)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v != "filler")
        .collect();
    assert_eq!(
        live,
        ["open", "open", "open"],
        "k1, k2, k3 from the last commit"
    );
    assert_eq!(markers(&p), 3);
}

#[test]
fn retention_removes_txnindex_files_with_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic(
        "t",
        1,
        TopicConfig::default()
            .segment_bytes(500)
            .retention_ms(1_000),
    )
    .unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut c) = (TxnProducer::new(1), TxnProducer::new(3));
    for r in 0..4 {
        a.send(&p, &[&format!("old-bad-{r}")]);
        c.send(&p, &[&format!("old-ok-{r}")]);
        a.end(&p, ABORT);
        c.end(&p, COMMIT);
    }
    let txnindex_files = || -> Vec<i64> {
        let mut v: Vec<i64> = std::fs::read_dir(partition_dir(dir.path()))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".txnindex")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    // Sealed segments have their index on disk; the active one's is written when it is sealed.
    let active = p.lock().unwrap().active().base_offset;
    let sealed: Vec<i64> = txn_entries(&p)
        .iter()
        .map(|(b, _)| *b)
        .filter(|&b| b != active)
        .collect();
    assert!(!sealed.is_empty());
    assert_eq!(txnindex_files(), sealed);
    clock.advance_ms(10_000);
    a.timestamp = NOW + 10_000;
    a.send(&p, &["new-bad"]);
    a.end(&p, ABORT);
    plain(&p, "new-ok");
    let deleted = log.enforce_retention().unwrap();
    assert!(deleted > 0);
    let start = p.log_start_offset().unwrap();
    for base in txnindex_files() {
        assert!(base >= start, "txnindex {base} below the log start {start}");
    }
    assert!(txn_entries(&p).iter().all(|(b, _)| *b >= start));
    let seen = values(&consume(&p, C, 1 << 20))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(seen.iter().all(|v| !v.contains("bad")), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("new-ok"));
    log.close().unwrap();
    simulate_crash(dir.path());
    let log = open(dir.path(), &clock);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(
        values(&consume(&p, C, 1 << 20))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
        seen
    );
}

/// A compaction swap interrupted at any point after its commit completes on open with the
/// cleaned group's aborted-transaction entries in place, whether or not the `.txnswap` had
/// been renamed already.
#[test]
fn an_interrupted_compaction_swap_carries_the_txnindex() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = |base: i64, ext: &str| d.join(super::segment::file_name(base, ext));
    let write = |path: PathBuf, bytes: &[u8]| std::fs::write(path, bytes).unwrap();
    let swap = d.join(format!("{:020}.{:020}.swap", 0, 20));
    let txn_swap = d.join(format!("{:020}.{:020}.txnswap", 0, 20));
    for renamed in [false, true] {
        for f in std::fs::read_dir(d).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        // Old segments 0 and 10 (with their own indexes), the next segment 20.
        for base in [0, 10, 20] {
            write(name(base, "log"), b"old");
            write(name(base, "txnindex"), b"old");
        }
        write(swap.clone(), b"cleaned");
        if renamed {
            // The completion had deleted the old files and renamed the .txnswap already.
            std::fs::remove_file(name(10, "log")).unwrap();
            std::fs::remove_file(name(10, "txnindex")).unwrap();
            write(name(0, "txnindex"), b"carried");
        } else {
            write(txn_swap.clone(), b"carried");
        }
        super::swap::complete_swaps(d).unwrap();
        assert_eq!(std::fs::read(name(0, "log")).unwrap(), b"cleaned");
        assert_eq!(std::fs::read(name(0, "txnindex")).unwrap(), b"carried");
        assert!(!name(10, "log").exists() && !name(10, "txnindex").exists());
        assert_eq!(std::fs::read(name(20, "txnindex")).unwrap(), b"old");
        assert!(!swap.exists() && !txn_swap.exists());
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// A transactional batch of producer `0..3` with `1..4` records.
    Send(usize, usize),
    /// A non-transactional record.
    Plain,
    /// The coordinator ends the producer's transaction (bumping its epoch).
    End(usize, bool),
    /// A late marker with the producer's current epoch: refused if a transaction is open.
    Stale(usize),
    Reopen,
    Crash,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..4usize).prop_map(|(i, n)| Op::Send(i, n)),
        3 => Just(Op::Plain),
        3 => (0..3usize, any::<bool>()).prop_map(|(i, c)| Op::End(i, c)),
        1 => (0..3usize).prop_map(Op::Stale),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Compact),
    ]
}

/// What the log must hold: each data record's offset and value, and its fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Open(usize),
    Committed,
    Aborted,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random interleavings of three producers' transactions, plain records, late markers,
    /// reopens, crashes and compactions (with unique keys, so compaction may only drop aborted
    /// records), against a model: read_committed (through the consumer rule) sees exactly the
    /// committed records below the LSO, read_uncommitted every record not aborted-and-compacted,
    /// and the LSO is the first offset of the earliest open transaction.
    #[test]
    fn read_committed_matches_a_model(ops in proptest::collection::vec(op(), 1..50)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let mut log = open(dir.path(), &clock);
        let config = TopicConfig::default()
            .cleanup_policy(CleanupPolicy::COMPACT_DELETE)
            .segment_bytes(400)
            .retention_ms(-1);
        log.create_topic("t", 1, config).unwrap();
        let mut p = log.partition("t", 0).unwrap();
        let mut producers: Vec<TxnProducer> = (0..3).map(|i| TxnProducer::new(i as i64 + 1)).collect();
        let mut records: Vec<(i64, String, Fate)> = Vec::new();
        let mut compacted_aborted = false;
        let mut n = 0;
        for op in ops {
            match op {
                Op::Send(i, k) => {
                    let vals: Vec<String> = (0..k).map(|_| { n += 1; format!("p{i}-{n}") }).collect();
                    let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
                    let base = producers[i].send(&p, &refs);
                    for (j, v) in vals.into_iter().enumerate() {
                        records.push((base + j as i64, v, Fate::Open(i)));
                    }
                }
                Op::Plain => {
                    n += 1;
                    let v = format!("plain-{n}");
                    let o = plain(&p, &v);
                    records.push((o, v, Fate::Committed));
                }
                Op::End(i, commit) => {
                    producers[i].end(&p, if commit { COMMIT } else { ABORT });
                    for r in records.iter_mut().filter(|r| r.2 == Fate::Open(i)) {
                        r.2 = if commit { Fate::Committed } else { Fate::Aborted };
                    }
                }
                Op::Stale(i) => {
                    let open = records.iter().any(|r| r.2 == Fate::Open(i));
                    let end = leo(&p);
                    let res = p.append_marker(producers[i].id, producers[i].epoch, 0, ABORT);
                    if open {
                        prop_assert!(matches!(res, Err(Error::ProducerFenced { .. })), "{res:?}");
                        prop_assert_eq!(leo(&p), end);
                    } else {
                        prop_assert!(res.is_ok(), "{:?}", res);
                    }
                }
                Op::Reopen | Op::Crash => {
                    log.close().unwrap();
                    if matches!(op, Op::Crash) {
                        simulate_crash(dir.path());
                    }
                    log = open(dir.path(), &clock);
                    p = log.partition("t", 0).unwrap();
                }
                Op::Compact => {
                    log.compact(true).unwrap();
                    compacted_aborted = true;
                }
            }
            let lso_model = records
                .iter()
                .filter(|r| matches!(r.2, Fate::Open(_)))
                .map(|r| r.0)
                .min()
                .unwrap_or(leo(&p));
            prop_assert_eq!(lso(&p), lso_model);
            let committed: Vec<(i64, String)> = records
                .iter()
                .filter(|r| r.2 == Fate::Committed && r.0 < lso_model)
                .map(|r| (r.0, r.1.clone()))
                .collect();
            prop_assert_eq!(consume(&p, C, 300), committed);
            let uncommitted = consume(&p, U, 1 << 20);
            let all: Vec<(i64, String)> = records.iter().map(|r| (r.0, r.1.clone())).collect();
            if compacted_aborted {
                // Compaction may have dropped aborted records, and only those.
                let kept: Vec<(i64, String)> = records
                    .iter()
                    .filter(|r| r.2 != Fate::Aborted)
                    .map(|r| (r.0, r.1.clone()))
                    .collect();
                let without_aborted: Vec<(i64, String)> = uncommitted
                    .iter()
                    .filter(|r| kept.contains(r))
                    .cloned()
                    .collect();
                prop_assert_eq!(without_aborted, kept);
                prop_assert!(uncommitted.iter().all(|r| all.contains(r)));
            } else {
                prop_assert_eq!(uncommitted, all);
            }
        }
        log.close().unwrap();
    }
}
