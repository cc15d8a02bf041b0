//! The transaction coordinator's state machine with a manual clock: fencing, markers with
//! bumped epochs, retried and delayed ends, timeouts, recovery of a decided transaction, and
//! transactional offsets.

use super::*;
use crate::Log;
use crate::clock::ManualClock;
use crate::codec::RecordBatch;
use crate::coordinator::group::{MemberRef, OffsetAndMetadata};
use crate::storage::config::TopicConfig;

const TIMEOUT: i64 = 10_000;

struct Fixture {
    dir: tempfile::TempDir,
    log: Log,
    clock: ManualClock,
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .background_maintenance(false)
        .offsets_topic_num_partitions(2)
        .transaction_state_log_num_partitions(2)
        .open()
        .expect("open")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    let log = open(dir.path(), &clock);
    log.create_topic("out", 2, TopicConfig::default())
        .expect("create");
    Fixture { dir, log, clock }
}

fn init(f: &Fixture, id: &str) -> Result<ProducerIdentity> {
    f.log
        .with_txn_coordinator(|c, log, now| c.init_producer_id(log, id, TIMEOUT, now))
}

fn who(id: &str, p: ProducerIdentity) -> TxnRef<'_> {
    TxnRef {
        transactional_id: id,
        producer_id: p.producer_id,
        epoch: p.epoch,
    }
}

fn add(f: &Fixture, id: &str, p: ProducerIdentity, partition: u32) -> Result<()> {
    f.log.with_txn_coordinator(|c, log, now| {
        c.add_partitions(
            log,
            who(id, p),
            &[TopicPartition::new("out", partition)],
            now,
        )
    })
}

fn end(f: &Fixture, id: &str, p: ProducerIdentity, commit: bool) -> Result<ProducerIdentity> {
    f.log
        .with_txn_coordinator(|c, log, now| c.end_transaction(log, who(id, p), commit, now))
}

/// Appends one transactional data batch of `p` to `out`/`partition`.
fn write(f: &Fixture, p: ProducerIdentity, partition: u32, seq: i32) {
    let mut b = crate::codec::BatchBuilder::new(Vec::new()).producer(crate::codec::BatchProducer {
        producer_id: p.producer_id,
        producer_epoch: p.epoch,
        base_sequence: seq,
        transactional: true,
    });
    b.append(1_000_000, Some(b"k"), Some(b"v"), &[]);
    let mut bytes = b.finish();
    f.log
        .partition("out", partition)
        .expect("partition")
        .append_batches(&mut bytes)
        .expect("append");
}

/// The control batches of `out`/`partition`: (producer id, epoch, commit?).
fn markers(f: &Fixture, partition: u32) -> Vec<(i64, i16, bool)> {
    let data = f
        .log
        .partition("out", partition)
        .expect("partition")
        .read(0, 1 << 20)
        .expect("read");
    data.batches()
        .filter(RecordBatch::is_control)
        .map(|b| {
            let key = b.records().next().and_then(|r| r.ok()).and_then(|r| r.key);
            let kind = ControlRecordType::parse(key).expect("marker");
            (
                b.producer_id(),
                b.producer_epoch(),
                kind == ControlRecordType::Commit,
            )
        })
        .collect()
}

fn is_fenced<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::ProducerFenced { .. }))
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let f = fixture();
    let old = init(&f, "copier").expect("init");
    assert_eq!(old.epoch, 0);
    add(&f, "copier", old, 0).expect("add");
    write(&f, old, 0, 0);
    let new = init(&f, "copier").expect("init again");
    assert_eq!(new.producer_id, old.producer_id);
    assert!(
        new.epoch > old.epoch + 1,
        "abort and init both bump: {new:?}"
    );
    // The old instance's open transaction was aborted with a bumped epoch...
    assert_eq!(
        markers(&f, 0),
        vec![(old.producer_id, old.epoch + 1, false)]
    );
    // ... and it can do nothing more.
    assert!(is_fenced(add(&f, "copier", old, 1)));
    assert!(is_fenced(end(&f, "copier", old, true)));
    add(&f, "copier", new, 1).expect("the new instance works");
}

#[test]
fn commit_writes_markers_with_the_bumped_epoch_everywhere() {
    let f = fixture();
    let p = init(&f, "t").expect("init");
    add(&f, "t", p, 0).expect("add");
    add(&f, "t", p, 1).expect("add");
    write(&f, p, 0, 0);
    write(&f, p, 1, 0);
    let next = end(&f, "t", p, true).expect("commit");
    assert_eq!(next.epoch, p.epoch + 1);
    for partition in 0..2 {
        assert_eq!(
            markers(&f, partition),
            vec![(p.producer_id, next.epoch, true)]
        );
        let part = f.log.partition("out", partition).expect("partition");
        assert_eq!(
            part.last_stable_offset().expect("lso"),
            part.high_watermark().expect("hw"),
            "nothing open any more"
        );
    }
}

#[test]
fn a_retried_end_changes_nothing_and_a_delayed_one_cannot_end_the_next_transaction() {
    let f = fixture();
    let p = init(&f, "t").expect("init");
    add(&f, "t", p, 0).expect("add");
    write(&f, p, 0, 0);
    let next = end(&f, "t", p, true).expect("commit");
    // The reply was lost: the producer retries with the epoch it had.
    assert_eq!(end(&f, "t", p, true).expect("retry"), next);
    assert_eq!(markers(&f, 0).len(), 1, "the retry wrote nothing");

    // The next transaction is open; a delayed abort of the first arrives.
    add(&f, "t", next, 0).expect("add");
    write(&f, next, 0, 0);
    assert!(is_fenced(end(&f, "t", p, false)), "a stale abort is fenced");
    // And a stale marker written straight to the partition is refused too.
    let part = f.log.partition("out", 0).expect("partition");
    let stale = part.append_marker(p.producer_id, next.epoch, 0, ControlRecordType::Abort);
    assert!(
        stale.is_err(),
        "a marker must carry an epoch above the open transaction's"
    );
    assert!(part.last_stable_offset().expect("lso") < part.high_watermark().expect("hw"));
    let after = end(&f, "t", next, true).expect("the second transaction commits");
    assert_eq!(
        markers(&f, 0),
        vec![
            (p.producer_id, next.epoch, true),
            (p.producer_id, after.epoch, true)
        ]
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let f = fixture();
    let p = init(&f, "slow").expect("init");
    add(&f, "slow", p, 0).expect("add");
    write(&f, p, 0, 0);
    f.clock.advance_ms(TIMEOUT - 1);
    add(&f, "slow", p, 1).expect("still in time");
    f.clock.advance_ms(2);
    let aborted = f
        .log
        .with_txn_coordinator(|c, log, now| c.expire(log, now))
        .expect("expire");
    assert_eq!(aborted, 1);
    assert_eq!(markers(&f, 0), vec![(p.producer_id, p.epoch + 1, false)]);
    assert_eq!(markers(&f, 1), vec![(p.producer_id, p.epoch + 1, false)]);
    assert!(
        is_fenced(end(&f, "slow", p, true)),
        "the zombie cannot commit"
    );
}

#[test]
fn a_decided_transaction_is_finished_after_a_restart() {
    let f = fixture();
    let p = init(&f, "t").expect("init");
    add(&f, "t", p, 0).expect("add");
    write(&f, p, 0, 0);
    // The decision is durable, then the process dies before any marker.
    f.log
        .with_txn_coordinator(|c, log, now| {
            let m = c.meta_mut("t")?;
            m.epoch += 1;
            m.state = TransactionState::PrepareCommit;
            m.last_update = now;
            c.persist(log, "t")
        })
        .expect("prepare");
    let Fixture { dir, log, clock } = f;
    log.close().expect("close");
    let log = open(dir.path(), &clock);
    let f = Fixture { dir, log, clock };
    init(&f, "t").expect("load and init");
    assert_eq!(markers(&f, 0), vec![(p.producer_id, p.epoch + 1, true)]);
}

#[test]
fn transactional_offsets_take_effect_only_with_the_commit() {
    let f = fixture();
    let tp = TopicPartition::new("out", 0);
    let fetch = |f: &Fixture| {
        f.log
            .with_coordinator(|c, _, _| Ok(c.fetch_offsets("g", Some(std::slice::from_ref(&tp)))))
            .expect("fetch")
            .get(&tp)
            .map(|o| o.offset)
    };
    let commit_in_txn = |f: &Fixture, p: ProducerIdentity, offset: i64| {
        f.log
            .with_txn_coordinator(|c, log, now| c.add_offsets(log, who("t", p), "g", now))
            .expect("add offsets");
        f.log
            .with_coordinator(|c, log, now| {
                c.commit_transactional_offsets(
                    log,
                    MemberRef {
                        group_id: "g",
                        generation: -1,
                        member_id: "",
                        group_instance_id: None,
                    },
                    p,
                    &[(tp.clone(), OffsetAndMetadata::new(offset))],
                    now,
                )
            })
            .expect("txn offset commit");
    };
    let p = init(&f, "t").expect("init");
    commit_in_txn(&f, p, 5);
    assert_eq!(fetch(&f), None, "pending until the commit");
    let p = end(&f, "t", p, true).expect("commit");
    assert_eq!(fetch(&f), Some(5));
    commit_in_txn(&f, p, 9);
    end(&f, "t", p, false).expect("abort");
    assert_eq!(fetch(&f), Some(5), "aborted offsets never apply");

    // After a restart, the log says the same.
    let Fixture { dir, log, clock } = f;
    log.close().expect("close");
    let log = open(dir.path(), &clock);
    let f = Fixture { dir, log, clock };
    assert_eq!(fetch(&f), Some(5));
}

fn end_keeping_epoch(
    f: &Fixture,
    id: &str,
    p: ProducerIdentity,
    commit: bool,
) -> Result<ProducerIdentity> {
    f.log.with_txn_coordinator(|c, log, now| {
        c.end_transaction_with(log, who(id, p), commit, EpochAtEnd::Keep, now)
    })
}

#[test]
fn a_protocol_version_1_producer_keeps_its_epoch_and_sequence_across_transactions() {
    let f = fixture();
    let p = init(&f, "v1").expect("init");
    add(&f, "v1", p, 0).expect("add");
    write(&f, p, 0, 0);
    assert_eq!(end_keeping_epoch(&f, "v1", p, true).expect("commit"), p);
    // A retried commit is answered as the first and writes nothing.
    assert_eq!(end_keeping_epoch(&f, "v1", p, true).expect("retried"), p);
    add(&f, "v1", p, 0).expect("add");
    write(&f, p, 0, 1);
    assert_eq!(end_keeping_epoch(&f, "v1", p, false).expect("abort"), p);
    assert_eq!(
        markers(&f, 0),
        vec![
            (p.producer_id, p.epoch, true),
            (p.producer_id, p.epoch, false)
        ]
    );
    // read_committed sees the first transaction only.
    let mut buf = Vec::new();
    let read = f
        .log
        .partition("out", 0)
        .expect("partition")
        .read_into_isolated(0, 1 << 20, &mut buf, crate::IsolationLevel::ReadCommitted)
        .expect("read");
    assert_eq!(read.committed_records().count(), 1);
    // A newer instance still fences it.
    let newer = init(&f, "v1").expect("init");
    assert!(newer.epoch > p.epoch);
    assert!(is_fenced(add(&f, "v1", p, 1)));
}

#[test]
fn a_protocol_version_1_end_decided_before_a_restart_is_finished_after_it() {
    let f = fixture();
    let p = init(&f, "v1").expect("init");
    add(&f, "v1", p, 0).expect("add");
    write(&f, p, 0, 0);
    // Decided, with the epoch kept, then the process dies before any marker; the mode is not
    // stored.
    f.log
        .with_txn_coordinator(|c, log, now| {
            let m = c.meta_mut("v1")?;
            m.state = TransactionState::PrepareCommit;
            m.last_update = now;
            c.persist(log, "v1")
        })
        .expect("prepare");
    let Fixture { dir, log, clock } = f;
    log.close().expect("close");
    let log = open(dir.path(), &clock);
    let f = Fixture { dir, log, clock };
    init(&f, "v1").expect("load and init");
    assert_eq!(markers(&f, 0), vec![(p.producer_id, p.epoch, true)]);
    let partition = f.log.partition("out", 0).expect("partition");
    assert_eq!(
        partition.last_stable_offset().expect("lso"),
        partition.high_watermark().expect("hw")
    );
}
