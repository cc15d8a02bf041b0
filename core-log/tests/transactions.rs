//! Transactions as a Kafka user relies on them: a transactional producer's records appear to
//! `read_committed` consumers all at once at commit and never after an abort (or a drop);
//! `read_uncommitted` sees everything; a newer instance with the same `transactional.id`
//! fences the older one; a transaction past its timeout is aborted and its producer fenced;
//! offsets sent in a transaction take effect with it, and a member the group has moved on
//! from cannot send them (KIP-447); a read-process-write loop that aborts at random and
//! rewinds to its committed offsets copies every record exactly once.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use core_log::serialization::StringSerde;
use core_log::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerGroupMetadata, Error, FlushPolicy,
    IsolationLevel, Log, ManualClock, OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord,
    Record, TopicConfig, TopicPartition,
};

mod common;
use common::{NOW, Rng};

fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::Never)
        .background_maintenance(false)
        .offsets_topic_num_partitions(3)
        .transaction_state_log_num_partitions(3)
        .open()
        .unwrap()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn producer(log: &Log, id: &str) -> Producer<str, str> {
    let config = ProducerConfig::default().transactional_id(id).linger_ms(0);
    let p = Producer::new(log, config, StringSerde, StringSerde).unwrap();
    p.init_transactions().unwrap();
    p
}

fn reader(log: &Log, isolation: IsolationLevel, topic: &str) -> Consumer<String, String> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(isolation);
    let mut c = Consumer::new(log, config, StringSerde, StringSerde).unwrap();
    let partitions: Vec<_> = (0..log.partition_count(topic).unwrap())
        .map(|p| tp(topic, p))
        .collect();
    c.assign(&partitions).unwrap();
    c
}

/// Every value a poll loop returns until a poll comes back empty.
fn drain(c: &mut Consumer<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(records.iter().filter_map(|r| r.value.clone()));
    }
}

#[test]
fn read_committed_sees_a_transaction_at_its_commit_and_never_after_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("out", 2, TopicConfig::default()).unwrap();
    let p = producer(&log, "tx");
    let mut committed = reader(&log, IsolationLevel::ReadCommitted, "out");
    let mut uncommitted = reader(&log, IsolationLevel::ReadUncommitted, "out");

    let txn = p.begin_transaction().unwrap();
    for i in 0..10 {
        let v = format!("a{i}");
        txn.send(ProducerRecord::new("out").key(v.as_str()).value(v.as_str()))
            .unwrap()
            .wait()
            .unwrap();
    }
    p.flush();
    // A plain record after the open transaction: below the LSO only once the txn ends.
    log.partition("out", 0)
        .unwrap()
        .append(&[Record::new(None, Some(b"plain"))])
        .unwrap();
    assert_eq!(
        drain(&mut uncommitted).len(),
        11,
        "read_uncommitted sees it all at once"
    );
    assert!(
        drain(&mut committed).is_empty(),
        "nothing past the last stable offset"
    );
    txn.commit().unwrap();
    let mut seen = drain(&mut committed);
    seen.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    want.push("plain".into());
    want.sort();
    assert_eq!(seen, want);

    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").key("x").value("aborted-1"))
        .unwrap()
        .wait()
        .unwrap();
    txn.abort().unwrap();
    {
        let txn = p.begin_transaction().unwrap();
        txn.send(ProducerRecord::new("out").key("y").value("dropped-1"))
            .unwrap()
            .wait()
            .unwrap();
        // dropped: aborted
    }
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").key("x").value("b"))
        .unwrap()
        .wait()
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(
        drain(&mut committed),
        vec!["b".to_string()],
        "aborted records never show"
    );
    let everything = drain(&mut uncommitted);
    assert!(
        everything.contains(&"aborted-1".to_string())
            && everything.contains(&"dropped-1".to_string())
    );
    assert!(
        p.send(ProducerRecord::new("out").value("outside")).is_err(),
        "a transactional producer sends only inside a transaction"
    );
}

#[test]
fn a_new_instance_fences_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let old = producer(&log, "copier");
    let txn = old.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("zombie-1"))
        .unwrap()
        .wait()
        .unwrap();
    old.flush();

    let new = producer(&log, "copier"); // aborts the old instance's open transaction
    let t2 = new.begin_transaction().unwrap();
    t2.send(ProducerRecord::new("out").value("fresh"))
        .unwrap()
        .wait()
        .unwrap();
    t2.commit().unwrap();

    // The zombie goes on: its records and its commit are refused.
    let _ = txn.send(ProducerRecord::new("out").value("zombie-2"));
    let err = txn.commit().unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
    assert!(matches!(
        old.begin_transaction(),
        Err(Error::ProducerFenced { .. })
    ));
    let mut c = reader(&log, IsolationLevel::ReadCommitted, "out");
    assert_eq!(drain(&mut c), vec!["fresh".to_string()]);
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_the_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let config = ProducerConfig::default()
        .transactional_id("slow")
        .transaction_timeout_ms(5_000)
        .linger_ms(0);
    let p: Producer<str, str> = Producer::new(&log, config, StringSerde, StringSerde).unwrap();
    p.init_transactions().unwrap();
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("stalled"))
        .unwrap()
        .wait()
        .unwrap();
    p.flush();
    clock.advance_ms(5_001);
    let err = txn.commit().unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err}");
    let mut c = reader(&log, IsolationLevel::ReadCommitted, "out");
    assert!(drain(&mut c).is_empty());
    let part = log.partition("out", 0).unwrap();
    assert_eq!(
        part.last_stable_offset().unwrap(),
        part.high_watermark().unwrap()
    );
}

fn group_consumer(log: &Log, group: &str) -> Consumer<String, String> {
    let config = ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted);
    let mut c = Consumer::new(log, config, StringSerde, StringSerde).unwrap();
    c.subscribe(&["in"]).unwrap();
    c
}

fn committed(c: &Consumer<String, String>, partition: u32) -> Option<i64> {
    c.committed(&[tp("in", partition)]).unwrap()[&tp("in", partition)]
        .as_ref()
        .map(|o| o.offset)
}

#[test]
fn offsets_sent_in_a_transaction_take_effect_with_it_and_zombies_cannot_send_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("in", 1, TopicConfig::default()).unwrap();
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let mut c = group_consumer(&log, "g");
    c.poll(Duration::ZERO).unwrap();
    let p = producer(&log, "rpw");

    let offsets = |o: i64| vec![(tp("in", 0), OffsetAndMetadata::new(o))];
    let txn = p.begin_transaction().unwrap();
    txn.send_offsets_to_transaction(&offsets(7), &c.group_metadata().unwrap())
        .unwrap();
    assert_eq!(committed(&c, 0), None, "pending until the commit");
    txn.commit().unwrap();
    assert_eq!(committed(&c, 0), Some(7));

    let txn = p.begin_transaction().unwrap();
    txn.send_offsets_to_transaction(&offsets(9), &c.group_metadata().unwrap())
        .unwrap();
    txn.abort().unwrap();
    assert_eq!(committed(&c, 0), Some(7), "aborted offsets never apply");

    // The group moves on without this member's generation: its metadata is stale.
    let stale = c.group_metadata().unwrap();
    let mut other = group_consumer(&log, "g");
    other.poll(Duration::ZERO).unwrap();
    c.poll(Duration::ZERO).unwrap();
    other.poll(Duration::ZERO).unwrap();
    assert_ne!(c.generation(), stale.generation_id);
    let txn = p.begin_transaction().unwrap();
    let err = txn
        .send_offsets_to_transaction(&offsets(100), &stale)
        .unwrap_err();
    assert!(matches!(err, Error::IllegalGeneration { .. }), "{err}");
    txn.abort().unwrap();
    assert_eq!(committed(&c, 0), Some(7));
}

/// The read-process-write loop: consume `in` (read_committed), copy each record to `out`
/// and commit the input offsets in the same transaction; abort one transaction in ten at
/// random and rewind to the committed offsets. Every input record is in `out` exactly once,
/// in order per input partition.
#[test]
fn a_copier_that_aborts_at_random_copies_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("in", 2, TopicConfig::default()).unwrap();
    log.create_topic("out", 3, TopicConfig::default()).unwrap();
    let per_partition = 2_000;
    for p in 0..2u32 {
        let values: Vec<String> = (0..per_partition).map(|i| format!("{p}-{i:05}")).collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record::new(Some(&v.as_bytes()[..1]), Some(v.as_bytes())))
            .collect();
        log.partition("in", p).unwrap().append(&records).unwrap();
    }
    let config = ConsumerConfig::default()
        .group_id("copier")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted)
        .max_poll_records(50); // small transactions: many commits and aborts
    let mut consumer: Consumer<String, String> =
        Consumer::new(&log, config, StringSerde, StringSerde).unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let config = ProducerConfig::default()
        .transactional_id("copier-0")
        .linger_ms(0);
    let producer: Producer<str, str> =
        Producer::new(&log, config, StringSerde, StringSerde).unwrap();
    producer.init_transactions().unwrap();
    let mut rng = Rng(0x5eed_1234);
    let (mut commits, mut aborts) = (0, 0);
    let mut output = reader(&log, IsolationLevel::ReadCommitted, "out");
    let mut copied = Vec::new();
    for _ in 0..10_000 {
        let records = consumer.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            if consumer
                .assignment()
                .iter()
                .all(|t| committed(&consumer, t.partition) == Some(per_partition))
                && consumer.assignment().len() == 2
            {
                break;
            }
            continue;
        }
        let txn = producer.begin_transaction().unwrap();
        let mut next: BTreeMap<u32, i64> = BTreeMap::new();
        for r in &records {
            let v = r.value.as_deref().unwrap();
            txn.send(ProducerRecord::new("out").key(&v[..1]).value(v))
                .unwrap()
                .wait()
                .unwrap();
            next.insert(r.partition, r.offset + 1);
        }
        let offsets: Vec<_> = next
            .iter()
            .map(|(p, o)| (tp("in", *p), OffsetAndMetadata::new(*o)))
            .collect();
        txn.send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap())
            .unwrap();
        if rng.below(10) == 0 {
            txn.abort().unwrap();
            aborts += 1;
            // Rewind to what is committed, as an application does after an abort.
            for t in consumer.assignment() {
                let at = committed(&consumer, t.partition).unwrap_or(0);
                consumer.seek(&t, at).unwrap();
            }
        } else {
            txn.commit().unwrap();
            commits += 1;
        }
        copied.extend(drain(&mut output));
    }
    copied.extend(drain(&mut output));
    assert!(
        aborts > 0 && commits > 0,
        "{aborts} aborts, {commits} commits"
    );
    assert_eq!(
        copied.len(),
        2 * per_partition as usize,
        "exactly once: no loss, no duplicate"
    );
    for p in 0..2 {
        let mine: Vec<&String> = copied
            .iter()
            .filter(|v| v.starts_with(&format!("{p}-")))
            .collect();
        assert_eq!(mine.len(), per_partition as usize);
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "order kept for input partition {p}"
        );
    }
}

/// Kafka's zombie scenario: copier A stalls (no poll, its transaction open) past
/// `max.poll.interval.ms` and `transaction.timeout.ms`; copier B, another member of the group
/// with its own transactional id, takes over A's partition and copies it. When A resumes,
/// neither its output nor its offsets can become visible: nothing is copied twice.
#[test]
fn a_stalled_copier_that_resumes_cannot_commit_anything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("in", 1, TopicConfig::default()).unwrap();
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let values: Vec<String> = (0..20).map(|i| format!("v{i:02}")).collect();
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|v| Record::new(None, Some(v.as_bytes())))
        .collect();
    log.partition("in", 0).unwrap().append(&records).unwrap();

    let copier = |id: &str| {
        let consumer_config = ConsumerConfig::default()
            .group_id("copiers")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .isolation_level(IsolationLevel::ReadCommitted)
            .max_poll_interval_ms(30_000)
            .max_poll_records(5);
        let mut c: Consumer<String, String> =
            Consumer::new(&log, consumer_config, StringSerde, StringSerde).unwrap();
        c.subscribe(&["in"]).unwrap();
        let producer_config = ProducerConfig::default()
            .transactional_id(id)
            .transaction_timeout_ms(10_000)
            .linger_ms(0);
        let p: Producer<str, str> =
            Producer::new(&log, producer_config, StringSerde, StringSerde).unwrap();
        p.init_transactions().unwrap();
        (c, p)
    };
    // One step of a copier: poll, copy what came back, send the offsets, commit.
    fn step(c: &mut Consumer<String, String>, p: &Producer<str, str>) -> Result<usize, Error> {
        let records = c.poll(Duration::ZERO)?;
        if records.is_empty() {
            return Ok(0);
        }
        let txn = p.begin_transaction()?;
        let mut next = 0;
        for r in &records {
            txn.send(ProducerRecord::new("out").value(r.value.as_deref().unwrap_or("")))?
                .wait()?;
            next = r.offset + 1;
        }
        txn.send_offsets_to_transaction(
            &[(tp("in", 0), OffsetAndMetadata::new(next))],
            &c.group_metadata()?,
        )?;
        txn.commit()?;
        Ok(records.count())
    }

    let (mut a, pa) = copier("copier-a");
    assert_eq!(
        step(&mut a, &pa).unwrap(),
        5,
        "A copies a first transaction"
    );
    // A's next transaction: records sent, then A stalls before committing.
    let stalled = a.poll(Duration::ZERO).unwrap();
    let txn = pa.begin_transaction().unwrap();
    for r in &stalled {
        txn.send(ProducerRecord::new("out").value(r.value.as_deref().unwrap()))
            .unwrap()
            .wait()
            .unwrap();
    }
    let a_group = a.group_metadata().unwrap();

    clock.advance_ms(31_000); // past A's max.poll.interval.ms and its transaction.timeout.ms
    let (mut b, pb) = copier("copier-b");
    let mut copied_by_b = 0;
    for _ in 0..20 {
        copied_by_b += step(&mut b, &pb).unwrap();
    }
    assert_eq!(copied_by_b, 15, "B copies everything A had not committed");

    // A resumes where it stopped: its offsets and its commit are refused.
    let offsets = [(tp("in", 0), OffsetAndMetadata::new(10))];
    assert!(txn.send_offsets_to_transaction(&offsets, &a_group).is_err());
    let err = txn.commit().unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProducerFenced { .. } | Error::UnknownMemberId { .. }
        ),
        "{err}"
    );
    let mut out = reader(&log, IsolationLevel::ReadCommitted, "out");
    let mut seen = drain(&mut out);
    seen.sort();
    assert_eq!(seen, values, "every record exactly once");
}

// Found by review: an abandoned transaction after a restart, read_committed's "latest", an
// abort after refused offsets, init inside a transaction, and the order of plain and
// transactional commits.

const TIMEOUT_MS: i64 = 60_000;

fn open_log_bg(dir: &Path, clock: &ManualClock, background: bool) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::Never)
        .background_maintenance(background)
        .offsets_topic_num_partitions(1)
        .transaction_state_log_num_partitions(1)
        .open()
        .unwrap()
}

fn txn_producer(log: &Log, id: &str) -> Producer<str, str> {
    let config = ProducerConfig::default()
        .transactional_id(id)
        .linger_ms(0)
        .transaction_timeout_ms(TIMEOUT_MS as u64);
    let p = Producer::new(log, config, StringSerde, StringSerde).unwrap();
    p.init_transactions().unwrap();
    p
}

fn committed_reader(log: &Log, reset: AutoOffsetReset) -> Consumer<String, String> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(reset)
        .isolation_level(IsolationLevel::ReadCommitted);
    let mut c = Consumer::new(log, config, StringSerde, StringSerde).unwrap();
    c.assign(&[tp("out", 0)]).unwrap();
    c
}

/// A read_committed consumer that resets to "latest" (or seeks to the end) while a
/// transaction is open starts at the high watermark, past the open transaction's records;
/// when that transaction commits, its records are never delivered. Kafka resets a
/// read_committed consumer to the LSO (ListOffsets LATEST with READ_COMMITTED).
#[test]
fn read_committed_latest_reset_must_not_skip_an_open_transaction_that_commits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log_bg(dir.path(), &clock, false);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let p = txn_producer(&log, "tx");
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("a"))
        .unwrap()
        .wait()
        .unwrap();
    let mut c = committed_reader(&log, AutoOffsetReset::Latest);
    assert!(drain(&mut c).is_empty());
    txn.commit().unwrap();
    assert_eq!(
        drain(&mut c),
        vec!["a".to_string()],
        "committed record lost"
    );
}

/// After a restart, a transaction its producer left open (the process died, the producer
/// never comes back with that transactional.id) is aborted once its timeout has passed: the
/// open loads the transaction coordinator, which aborts it, so the partition's last stable
/// offset moves on and read_committed consumers see what was written after it.
#[test]
fn an_abandoned_transaction_is_aborted_when_the_log_reopens_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    {
        let log = open_log_bg(dir.path(), &clock, false);
        log.create_topic("out", 1, TopicConfig::default()).unwrap();
        let p = txn_producer(&log, "tx");
        let txn = p.begin_transaction().unwrap();
        txn.send(ProducerRecord::new("out").value("open"))
            .unwrap()
            .wait()
            .unwrap();
        p.flush();
        std::mem::forget(txn); // the process dies here: no abort
        p.close();
        log.close().unwrap();
    }
    clock.advance_ms(10 * TIMEOUT_MS);
    let log = open_log_bg(dir.path(), &clock, false);
    let part = log.partition("out", 0).unwrap();
    part.append(&[core_log::Record::new(None, Some(b"later"))])
        .unwrap();
    // The maintenance thread's transaction cleanup runs every 10 s.
    assert_eq!(
        part.last_stable_offset().unwrap(),
        part.high_watermark().unwrap(),
        "LSO still held by a transaction 10 timeouts old"
    );
    let mut c = committed_reader(&log, AutoOffsetReset::Earliest);
    assert_eq!(drain(&mut c), vec!["later".to_string()]);
}

/// send_offsets_to_transaction whose AddOffsetsToTxn succeeded but whose TxnOffsetCommit
/// was refused (a zombie generation, KIP-447) does not mark the transaction as started in the
/// producer: the abort that follows sends no EndTxn, so the coordinator's transaction stays
/// Ongoing with the old start time. At its timeout the coordinator aborts it and bumps the
/// epoch: the producer, which did everything right, is fenced in its next transaction.
#[test]
fn abort_after_a_refused_send_offsets_ends_the_coordinator_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log_bg(dir.path(), &clock, false);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let p = txn_producer(&log, "tx");
    let txn = p.begin_transaction().unwrap();
    let stale = ConsumerGroupMetadata {
        group_id: "g".into(),
        generation_id: 7,
        member_id: "gone".into(),
        group_instance_id: None,
    };
    txn.send_offsets_to_transaction(&[(tp("out", 0), OffsetAndMetadata::new(1))], &stale)
        .unwrap_err();
    txn.abort().unwrap();
    clock.advance_ms(TIMEOUT_MS + 1);
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("x"))
        .unwrap()
        .wait()
        .unwrap();
    txn.commit()
        .expect("a live producer must not be fenced by its own aborted transaction");
}

/// init_transactions while a transaction is open is refused (`InvalidTxnState`; Kafka
/// requires the UNINITIALIZED or READY state): a new epoch would leave the open transaction's
/// partitions with data the coordinator no longer knows, and their last stable offset stuck
/// for good. Aborting the open transaction (dropping it) then leaves nothing behind.
#[test]
fn init_transactions_inside_a_transaction_is_refused_and_orphans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log_bg(dir.path(), &clock, false);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let p = txn_producer(&log, "tx");
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("a"))
        .unwrap()
        .wait()
        .unwrap();
    p.flush();
    let err = p.init_transactions().unwrap_err();
    assert!(matches!(err, Error::InvalidTxnState { .. }), "{err:?}");
    drop(txn);
    clock.advance_ms(10 * TIMEOUT_MS);
    p.init_transactions().unwrap();
    let part = log.partition("out", 0).unwrap();
    assert_eq!(
        part.last_stable_offset().unwrap(),
        part.high_watermark().unwrap(),
        "partition holds a transaction no coordinator will ever end"
    );
    let mut c = committed_reader(&log, AutoOffsetReset::Earliest);
    assert!(
        drain(&mut c).is_empty(),
        "the aborted record is not visible"
    );
}

/// A refused init_transactions changes nothing: the open transaction goes on, and its
/// records commit with it (no epoch was bumped under it).
#[test]
fn a_refused_init_transactions_leaves_the_open_transaction_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log_bg(dir.path(), &clock, false);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let p = txn_producer(&log, "tx");
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("a"))
        .unwrap()
        .wait()
        .unwrap();
    p.flush();
    assert!(matches!(
        p.init_transactions(),
        Err(Error::InvalidTxnState { .. })
    ));
    txn.send(ProducerRecord::new("out").value("b"))
        .unwrap()
        .wait()
        .unwrap();
    txn.commit().unwrap();
    let txn = p.begin_transaction().unwrap();
    txn.send(ProducerRecord::new("out").value("c"))
        .unwrap()
        .wait()
        .unwrap();
    txn.commit().unwrap();
    let mut c = committed_reader(&log, AutoOffsetReset::Earliest);
    assert_eq!(drain(&mut c), ["a", "b", "c"].map(String::from));
}

/// A plain offset commit written after a transaction's TxnOffsetCommit (but before its
/// commit marker) is overwritten in memory by the older transactional value when the marker
/// arrives. Kafka keeps whichever record is later in the log (`CommitRecordMetadataAndOffset
/// .olderThan`), which is also what compaction keeps: here memory says 5 while a compacted
/// log replayed after a restart says 9.
#[test]
fn a_later_plain_commit_wins_over_an_earlier_transactional_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log_bg(dir.path(), &clock, false);
    log.create_topic("out", 1, TopicConfig::default()).unwrap();
    let admin = core_log::Admin::new(&log);
    admin
        .alter_consumer_group_offsets("g", &[(tp("out", 0), OffsetAndMetadata::new(3))])
        .unwrap();
    let p = txn_producer(&log, "tx");
    let txn = p.begin_transaction().unwrap();
    let simple = ConsumerGroupMetadata {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    };
    txn.send_offsets_to_transaction(&[(tp("out", 0), OffsetAndMetadata::new(5))], &simple)
        .unwrap();
    admin
        .alter_consumer_group_offsets("g", &[(tp("out", 0), OffsetAndMetadata::new(9))])
        .unwrap();
    txn.commit().unwrap();
    let config = ConsumerConfig::default().group_id("g");
    let c: Consumer<String, String> =
        Consumer::new(&log, config, StringSerde, StringSerde).unwrap();
    let got = c.committed(&[tp("out", 0)]).unwrap()[&tp("out", 0)]
        .as_ref()
        .map(|o| o.offset);
    assert_eq!(got, Some(9));
}
