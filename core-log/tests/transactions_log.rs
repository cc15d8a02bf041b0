//! The log's side of transactions as the public API shows it: an open transaction holds the
//! last stable offset (LSO) while other producers append; read_committed never returns
//! anything at or past it, read_uncommitted returns everything; the open transaction survives
//! a clean reopen and a crash; compaction does not touch it; a producer inside a transaction
//! writes only transactional batches.
//!
//! Commits and aborts are written by the transaction coordinator through a crate-private call,
//! so the tests that end transactions (markers, the aborted-transaction index, fencing by
//! markers, recovery of the index, compaction of aborted data, a model test) are in
//! `core-log/src/storage/partition/transaction_tests.rs`.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use core_log::codec::{BatchBuilder, BatchProducer};
use core_log::{
    CleanupPolicy, Error, IsolationLevel, Log, Partition, ProducerIdentity, Record, TopicConfig,
};

mod common;
use common::{NOW, open, simulate_crash};

const COMMITTED: IsolationLevel = IsolationLevel::ReadCommitted;
const UNCOMMITTED: IsolationLevel = IsolationLevel::ReadUncommitted;

/// A producer writing one partition, transactional or idempotent.
struct Producer {
    id: ProducerIdentity,
    seq: i32,
    transactional: bool,
}

impl Producer {
    fn new(log: &Log, transactional: bool) -> Producer {
        Producer {
            id: log.init_producer_id().unwrap(),
            seq: 0,
            transactional,
        }
    }

    /// Sends one batch of `(key, value)` records; returns its base offset.
    fn send(&mut self, p: &Partition, records: &[(&str, &str)]) -> i64 {
        let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: self.id.producer_id,
            producer_epoch: self.id.epoch,
            base_sequence: self.seq,
            transactional: self.transactional,
        });
        for (k, v) in records {
            b.append(NOW, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
        }
        let info = p.append_batches(&mut b.finish()).unwrap();
        self.seq += records.len() as i32;
        info.base_offset
    }
}

fn plain(p: &Partition, key: &str, value: &str) -> i64 {
    p.append(&[Record::new(Some(key.as_bytes()), Some(value.as_bytes()))])
        .unwrap()
        .base_offset
}

/// Every value a reader at `isolation` gets from the log start, in small fetches. For
/// read_committed, also checks that no batch at or past the LSO is returned.
fn read_all(p: &Partition, isolation: IsolationLevel) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut offset = p.log_start_offset().unwrap();
    loop {
        let fetch = p
            .read_into_isolated(offset, 200, &mut buf, isolation)
            .unwrap();
        assert_eq!(fetch.last_stable_offset, p.last_stable_offset().unwrap());
        assert!(fetch.aborted_transactions.is_empty(), "nothing was aborted");
        if isolation == COMMITTED {
            for b in fetch.batches() {
                assert!(b.last_offset() < fetch.last_stable_offset, "{b:?}");
            }
        }
        out.extend(fetch.records().map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        }));
        if fetch.next_offset() == offset {
            return out;
        }
        offset = fetch.next_offset();
    }
}

fn values(v: &[(i64, String)]) -> Vec<&str> {
    v.iter().map(|(_, s)| s.as_str()).collect()
}

#[test]
fn an_open_transaction_holds_the_lso_and_read_committed_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut txn = Producer::new(&log, true);
    let mut idempotent = Producer::new(&log, false);

    plain(&p, "k", "before");
    idempotent.send(&p, &[("k", "idempotent")]);
    assert_eq!(
        p.last_stable_offset().unwrap(),
        p.high_watermark().unwrap(),
        "idempotent batches are not transactions"
    );
    let first = txn.send(&p, &[("k", "in-txn-1"), ("k", "in-txn-2")]);
    plain(&p, "k", "after-1");
    idempotent.send(&p, &[("k", "after-2")]);
    txn.send(&p, &[("k", "in-txn-3")]);
    assert_eq!(p.last_stable_offset().unwrap(), first);
    assert_eq!(p.high_watermark().unwrap(), 7);

    assert_eq!(
        values(&read_all(&p, COMMITTED)),
        ["before", "idempotent"],
        "nothing at or after the open transaction's first offset"
    );
    assert_eq!(
        values(&read_all(&p, UNCOMMITTED)),
        [
            "before",
            "idempotent",
            "in-txn-1",
            "in-txn-2",
            "after-1",
            "after-2",
            "in-txn-3"
        ]
    );
    // A read_committed fetch at or past the LSO is empty but reports the offsets.
    let mut buf = Vec::new();
    for offset in first..=7 {
        let f = p
            .read_into_isolated(offset, 1 << 20, &mut buf, COMMITTED)
            .unwrap();
        assert_eq!(f.batches().count(), 0, "{offset}");
        assert_eq!(f.next_offset(), offset);
        assert_eq!(
            (f.last_stable_offset, f.high_watermark, f.log_end_offset),
            (first, 7, 7)
        );
    }
    // The plain readers report the LSO too.
    assert_eq!(p.read(0, 1 << 20).unwrap().last_stable_offset, first);
    assert_eq!(
        p.read_into(0, 1 << 20, &mut buf)
            .unwrap()
            .last_stable_offset,
        first
    );
    assert!(matches!(
        p.read_into_isolated(8, 1 << 20, &mut buf, COMMITTED),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn an_open_transaction_survives_a_clean_reopen_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default().segment_bytes(300))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut txn = Producer::new(&log, true);
    for i in 0..3 {
        plain(&p, "k", &format!("plain-{i}"));
    }
    let first = txn.send(&p, &[("k", "t-1")]);
    for i in 3..12 {
        plain(&p, "k", &format!("plain-{i}"));
        if i % 4 == 0 {
            txn.send(&p, &[("k", &format!("t-{i}"))]);
        }
    }
    assert!(
        p.segment_count().unwrap() > 2,
        "the transaction spans segments"
    );
    let committed = read_all(&p, COMMITTED);
    let uncommitted = read_all(&p, UNCOMMITTED);
    assert_eq!(committed.len(), 3);
    log.close().unwrap();

    for crash in [false, true] {
        if crash {
            simulate_crash(dir.path());
        }
        let log = open(dir.path());
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.last_stable_offset().unwrap(), first, "crash: {crash}");
        assert_eq!(read_all(&p, COMMITTED), committed);
        assert_eq!(read_all(&p, UNCOMMITTED), uncommitted);
        // Still inside its transaction: the producer's next batch must be transactional,
        // and it continues the sequence.
        let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: txn.id.producer_id,
            producer_epoch: txn.id.epoch,
            base_sequence: txn.seq,
            transactional: false,
        });
        b.append(NOW, Some(b"k"), Some(b"outside"), &[]);
        let err = p.append_batches(&mut b.finish()).unwrap_err();
        assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
        log.close().unwrap();
    }
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    txn.send(&p, &[("k", "t-last")]);
    assert_eq!(p.last_stable_offset().unwrap(), first);
}

#[test]
fn a_producer_inside_a_transaction_writes_only_transactional_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut txn = Producer::new(&log, true);
    txn.send(&p, &[("k", "in-txn")]);
    let end = p.log_end_offset().unwrap();

    txn.transactional = false;
    let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
        producer_id: txn.id.producer_id,
        producer_epoch: txn.id.epoch,
        base_sequence: txn.seq,
        transactional: false,
    });
    b.append(NOW, Some(b"k"), Some(b"outside"), &[]);
    let err = p.append_batches(&mut b.finish()).unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    assert_eq!(p.log_end_offset().unwrap(), end, "nothing appended");

    // A transactional batch needs a producer id.
    let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
        transactional: true,
        ..BatchProducer::default()
    });
    b.append(NOW, Some(b"k"), Some(b"anonymous"), &[]);
    let err = p.append_batches(&mut b.finish()).unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    // The transaction itself goes on.
    txn.transactional = true;
    txn.send(&p, &[("k", "in-txn-2")]);
    assert_eq!(values(&read_all(&p, COMMITTED)), Vec::<&str>::new());
}

/// An undecided transaction's records may still be aborted: compaction must neither let them
/// replace committed values nor remove them.
#[test]
fn compaction_never_touches_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let config = TopicConfig::default()
        .cleanup_policy(CleanupPolicy::COMPACT)
        .segment_bytes(300);
    log.create_topic("t", 1, config).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut txn = Producer::new(&log, true);
    plain(&p, "a", "a-committed");
    plain(&p, "b", "b-old");
    plain(&p, "b", "b-committed");
    let first = txn.send(&p, &[("a", "a-open")]);
    for i in 0..10 {
        plain(&p, &format!("filler-{i}"), "x");
    }
    txn.send(&p, &[("filler-0", "open")]);
    for i in 10..20 {
        plain(&p, &format!("filler-{i}"), "x");
    }
    let from_first = |p: &Partition| -> Vec<(i64, String)> {
        read_all(p, UNCOMMITTED)
            .into_iter()
            .filter(|(o, _)| *o >= first)
            .collect()
    };
    let open_part = from_first(&p);

    let stats = log.compact(true).unwrap();
    assert!(stats.segments_cleaned > 0, "{stats:?}");
    assert_eq!(
        from_first(&p),
        open_part,
        "nothing at or after the LSO changed"
    );
    assert_eq!(
        values(&read_all(&p, COMMITTED)),
        ["a-committed", "b-committed"],
        "the open transaction's record for `a` replaced nothing; `b-old` was compacted"
    );
    assert_eq!(p.last_stable_offset().unwrap(), first);
}
