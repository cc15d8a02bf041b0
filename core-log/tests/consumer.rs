//! The consumer as a Kafka user relies on it (manual assignment): poll returns every record
//! once, in offset order per partition, across segment boundaries; seek, seek_to_beginning /
//! end and offsets_for_times land where Kafka's do; pause and resume; max.poll.records and
//! the byte bounds (with KIP-74's "at least one batch"); fairness across partitions; a waiting
//! poll is woken by an append; auto.offset.reset for new and out-of-range positions; a record
//! that fails to deserialize is reported with its offset and never skipped silently; lag;
//! typed keys, values and headers; and a topic deleted (and recreated) under the consumer.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use core_log::serialization::{BytesSerde, IntegerSerde, Json, StringSerde};
use core_log::{
    AutoOffsetReset, Consumer, ConsumerConfig, Error, FlushPolicy, Header, Log, ManualClock,
    OffsetAndTimestamp, OwnedHeader, Partition, Record, TimestampType, TopicConfig, TopicPartition,
};

mod common;
use common::NOW;

/// A log without per-append fsyncs (these tests are about reading) or a maintenance thread.
fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::Never)
        .background_maintenance(false)
        .open()
        .unwrap()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn earliest() -> ConsumerConfig {
    ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest)
}

fn string_consumer(log: &Log, config: ConsumerConfig) -> Consumer<String, String> {
    Consumer::new(log, config, StringSerde, StringSerde).unwrap()
}

/// Appends one single-record batch per value; returns the offsets.
fn append_each(p: &Partition, values: impl IntoIterator<Item = String>) -> Vec<i64> {
    values
        .into_iter()
        .map(|v| {
            p.append(&[Record::new(None, Some(v.as_bytes()))])
                .unwrap()
                .base_offset
        })
        .collect()
}

/// Polls without waiting until a poll comes back empty; every record's (partition, offset,
/// value).
fn drain(c: &mut Consumer<String, String>) -> Vec<(u32, i64, String)> {
    let mut out = Vec::new();
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(
            records
                .into_iter()
                .map(|r| (r.partition, r.offset, r.value.unwrap())),
        );
    }
}

fn offsets_of(records: &[(u32, i64, String)]) -> Vec<i64> {
    records.iter().map(|r| r.1).collect()
}

#[test]
fn poll_seek_and_offsets_for_times_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default().segment_bytes(1024))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    // 200 batches of 5 records; record i has timestamp NOW + 10 * i.
    for b in 0..200 {
        let values: Vec<String> = (b * 5..b * 5 + 5).map(|i| format!("v{i}")).collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .enumerate()
            .map(|(k, v)| {
                Record::new(None, Some(v.as_bytes())).timestamp(NOW + 10 * (b * 5 + k) as i64)
            })
            .collect();
        p.append(&records).unwrap();
    }
    assert!(
        p.segment_count().unwrap() > 20,
        "{}",
        p.segment_count().unwrap()
    );
    let t0 = tp("t", 0);

    let mut c = string_consumer(&log, earliest());
    c.assign(std::slice::from_ref(&t0)).unwrap();
    let all = drain(&mut c);
    assert_eq!(offsets_of(&all), (0..1000).collect::<Vec<_>>());
    assert!(all.iter().all(|(_, o, v)| *v == format!("v{o}")));
    assert_eq!(c.position(&t0).unwrap(), 1000);

    // A seek into the middle of a batch returns exactly from that offset.
    for target in [0, 3, 497, 999] {
        c.seek(&t0, target).unwrap();
        assert_eq!(c.position(&t0).unwrap(), target);
        let first = c.poll(Duration::ZERO).unwrap();
        let r = first.iter().next().unwrap();
        assert_eq!(
            (r.offset, r.value.as_deref()),
            (target, Some(&*format!("v{target}")))
        );
        assert_eq!(r.timestamp, NOW + 10 * target);
    }

    // offsets_for_times: the earliest offset whose timestamp is at or after the target.
    let asked: HashMap<TopicPartition, i64> = [(t0.clone(), NOW + 4_995)].into();
    let found = c.offsets_for_times(asked).unwrap();
    assert_eq!(
        found[&t0],
        Some(OffsetAndTimestamp {
            offset: 500,
            timestamp: NOW + 5_000
        })
    );
    let before_all = c.offsets_for_times([(t0.clone(), 0)]).unwrap();
    assert_eq!(before_all[&t0].unwrap().offset, 0);
    let after_all = c.offsets_for_times([(t0.clone(), NOW + 10_000)]).unwrap();
    assert_eq!(after_all[&t0], None);
    // Seeking to the answer continues from that record.
    c.seek(&t0, found[&t0].unwrap().offset).unwrap();
    let rest = drain(&mut c);
    assert_eq!(offsets_of(&rest), (500..1000).collect::<Vec<_>>());

    assert_eq!(
        c.beginning_offsets(std::slice::from_ref(&t0)).unwrap()[&t0],
        0
    );
    assert_eq!(c.end_offsets(std::slice::from_ref(&t0)).unwrap()[&t0], 1000);
    assert!(matches!(
        c.offsets_for_times([(tp("t", 9), 0)]),
        Err(Error::UnknownTopicOrPartition { partition: 9, .. })
    ));
}

#[test]
fn seek_to_beginning_and_end_are_evaluated_at_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (p0, p1) = (
        log.partition("t", 0).unwrap(),
        log.partition("t", 1).unwrap(),
    );
    append_each(&p0, (0..10).map(|i| format!("a{i}")));
    append_each(&p1, (0..5).map(|i| format!("b{i}")));
    let (t0, t1) = (tp("t", 0), tp("t", 1));

    let mut c = string_consumer(&log, ConsumerConfig::default()); // latest
    c.assign(&[t0.clone(), t1.clone()]).unwrap();
    assert!(drain(&mut c).is_empty(), "latest starts at the end");

    // An empty slice means every assigned partition.
    c.seek_to_beginning(&[]).unwrap();
    assert_eq!(c.current_lag(&t0).unwrap(), None, "not evaluated yet");
    let all = drain(&mut c);
    assert_eq!(all.len(), 15);
    assert_eq!(all.iter().filter(|r| r.0 == 0).count(), 10);

    c.seek_to_beginning(std::slice::from_ref(&t1)).unwrap();
    assert_eq!(offsets_of(&drain(&mut c)), (0..5).collect::<Vec<_>>());

    // seek_to_end is evaluated at the next poll: a record appended before it is skipped too.
    c.seek(&t0, 2).unwrap();
    c.seek_to_end(std::slice::from_ref(&t0)).unwrap();
    append_each(&p0, ["a10".to_string()]);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.position(&t0).unwrap(), 11);
    append_each(&p0, ["a11".to_string()]);
    assert_eq!(drain(&mut c), vec![(0, 11, "a11".to_string())]);

    assert!(matches!(
        c.seek_to_end(&[tp("t", 7)]),
        Err(Error::NotAssigned { partition: 7, .. })
    ));
}

#[test]
fn paused_partitions_return_nothing_and_resume_where_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (p0, p1) = (
        log.partition("t", 0).unwrap(),
        log.partition("t", 1).unwrap(),
    );
    append_each(&p0, (0..5).map(|i| format!("a{i}")));
    append_each(&p1, (0..5).map(|i| format!("b{i}")));
    let (t0, t1) = (tp("t", 0), tp("t", 1));

    let mut c = string_consumer(&log, earliest().max_poll_records(3));
    c.assign(&[t0.clone(), t1.clone()]).unwrap();
    let first = c.poll(Duration::ZERO).unwrap();
    assert_eq!(first.count(), 3);
    let started = first.partitions();
    assert_eq!(started.len(), 1);
    let (paused, other) = if started[0] == t0 { (t0, t1) } else { (t1, t0) };

    c.pause(std::slice::from_ref(&paused)).unwrap();
    assert_eq!(c.paused(), vec![paused.clone()]);
    let rest = drain(&mut c);
    assert_eq!(rest.len(), 5);
    assert!(rest.iter().all(|r| r.0 == other.partition));
    // New records on the paused partition are not returned either, even by a waiting poll.
    append_each(
        &log.partition("t", paused.partition).unwrap(),
        ["late".to_string()],
    );
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    assert_eq!(c.position(&paused).unwrap(), 3);

    c.resume(std::slice::from_ref(&paused)).unwrap();
    assert!(c.paused().is_empty());
    let resumed = drain(&mut c);
    assert_eq!(offsets_of(&resumed), vec![3, 4, 5]);
    assert!(resumed.iter().all(|r| r.0 == paused.partition));
    assert_eq!(resumed[2].2, "late");
}

#[test]
fn max_poll_records_and_fetch_bytes_bound_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (p0, p1) = (
        log.partition("t", 0).unwrap(),
        log.partition("t", 1).unwrap(),
    );
    append_each(&p0, (0..100).map(|i| format!("{i:050}")));
    append_each(&p1, (0..100).map(|i| format!("{i:050}")));
    // Every batch holds one record of the same size.
    let batch = p0.read(0, 1).unwrap().records.len();
    let (t0, t1) = (tp("t", 0), tp("t", 1));

    // max.poll.records.
    let mut c = string_consumer(&log, earliest().max_poll_records(7));
    c.assign(std::slice::from_ref(&t0)).unwrap();
    let sizes: Vec<usize> =
        std::iter::from_fn(|| Some(c.poll(Duration::ZERO).unwrap().count()).filter(|&n| n > 0))
            .collect();
    assert_eq!(sizes, [vec![7; 14], vec![2]].concat());

    // fetch.max.bytes: three batches per poll, over both partitions.
    let mut c = string_consumer(&log, earliest().fetch_max_bytes(3 * batch));
    c.assign(&[t0.clone(), t1.clone()]).unwrap();
    let sizes: Vec<usize> =
        std::iter::from_fn(|| Some(c.poll(Duration::ZERO).unwrap().count()).filter(|&n| n > 0))
            .collect();
    assert_eq!(sizes, [vec![3; 66], vec![2]].concat());

    // max.partition.fetch.bytes: two batches per partition per poll.
    let mut c = string_consumer(&log, earliest().max_partition_fetch_bytes(2 * batch));
    c.assign(&[t0.clone(), t1.clone()]).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.records(&t0).len(), 2);
    assert_eq!(records.records(&t1).len(), 2);
    let offsets: Vec<i64> = records.records(&t1).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1]);
}

/// A read that fails (here: out of range with `auto.offset.reset=none`) while batches of an
/// earlier read are still buffered loses nothing: a seek back reads them again.
#[test]
fn a_failed_read_after_a_cut_poll_leaves_the_partition_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    p.append(
        &(0..10)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(|v| Record::new(None, Some(v.as_bytes())))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let config = ConsumerConfig::default()
        .auto_offset_reset(AutoOffsetReset::None)
        .max_poll_records(3);
    let mut c = string_consumer(&log, config);
    let t = tp("t", 0);
    c.assign(std::slice::from_ref(&t)).unwrap();
    c.seek(&t, 0).unwrap();
    // Cut inside the one batch: offsets 3..10 stay buffered.
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 3);
    c.seek(&t, 1000).unwrap();
    assert!(matches!(
        c.poll(Duration::ZERO),
        Err(Error::OffsetOutOfRange { .. })
    ));
    c.seek(&t, 3).unwrap();
    let values: Vec<String> = drain(&mut c).into_iter().map(|r| r.2).collect();
    assert_eq!(values, (3..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
}

/// `Bytes` keys and values are slices of the consumer's fetch buffer, not copies: records kept
/// across later polls (whose fetches would reuse the buffer were it free) keep their bytes, and
/// records dropped let the next fetch take the buffer back.
#[test]
fn bytes_records_share_the_fetch_buffer_and_outlive_later_polls() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    append_each(&p, (0..200).map(|i| format!("{i:050}")));
    let batch = p.read(0, 1).unwrap().records.len();
    let config = earliest()
        .max_partition_fetch_bytes(3 * batch)
        .max_poll_records(3);
    let mut c: Consumer<bytes::Bytes, bytes::Bytes> =
        Consumer::new(&log, config, BytesSerde, BytesSerde).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();

    // Kept: every record of 40 polls, each from a fetch of its own.
    let mut kept = Vec::new();
    for _ in 0..40 {
        kept.extend(c.poll(Duration::ZERO).unwrap());
    }
    assert_eq!(kept.len(), 120);
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(
            &r.value.as_ref().unwrap()[..],
            format!("{i:050}").as_bytes()
        );
    }
    // The records share the fetch buffer: consecutive ones sit a batch apart in it.
    let first = kept[0].value.as_ref().unwrap().as_ptr() as i64;
    let second = kept[1].value.as_ref().unwrap().as_ptr() as i64;
    assert_eq!(second - first, batch as i64);
    drop(kept);

    // Dropped at once: the rest reads through, every value right.
    let mut offset = 120;
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        for r in records {
            assert_eq!(r.offset, offset);
            assert_eq!(&r.value.unwrap()[..], format!("{offset:050}").as_bytes());
            offset += 1;
        }
    }
    assert_eq!(offset, 200);
}
#[test]
fn a_batch_larger_than_the_fetch_bounds_is_still_returned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let big = "x".repeat(100_000);
    append_each(&p, [big.clone(), big.clone(), "small".to_string()]);

    let config = earliest()
        .fetch_max_bytes(100)
        .max_partition_fetch_bytes(100);
    let mut c = string_consumer(&log, config);
    c.assign(&[tp("t", 0)]).unwrap();
    let polls: Vec<Vec<i64>> = std::iter::from_fn(|| {
        let r = c.poll(Duration::ZERO).unwrap();
        (!r.is_empty()).then(|| r.iter().map(|r| r.offset).collect())
    })
    .collect();
    assert_eq!(polls, vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn polls_rotate_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    for i in 0..3 {
        let p = log.partition("t", i).unwrap();
        for _ in 0..10 {
            let values: Vec<String> = (0..50).map(|k| format!("{k}")).collect();
            let records: Vec<Record<'_>> = values
                .iter()
                .map(|v| Record::new(None, Some(v.as_bytes())))
                .collect();
            p.append(&records).unwrap();
        }
    }
    // Each partition holds 500 records; a poll takes 100: without rotation the first
    // partition would be drained before the others get anything.
    let mut c = string_consumer(&log, earliest().max_poll_records(100));
    c.assign(&[tp("t", 0), tp("t", 1), tp("t", 2)]).unwrap();
    let mut per_partition = [0usize; 3];
    for _ in 0..3 {
        let records = c.poll(Duration::ZERO).unwrap();
        assert_eq!(records.count(), 100);
        for r in &records {
            per_partition[r.partition as usize] += 1;
        }
    }
    assert_eq!(per_partition, [100, 100, 100]);
    // And over the whole run, every record exactly once, in order per partition.
    let rest = drain(&mut c);
    assert_eq!(rest.len(), 1200);
    for i in 0..3u32 {
        let offsets: Vec<i64> = rest.iter().filter(|r| r.0 == i).map(|r| r.1).collect();
        assert_eq!(offsets, (100..500).collect::<Vec<_>>());
    }
}

#[test]
fn a_waiting_poll_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    let mut c = string_consumer(&log, ConsumerConfig::default());
    c.assign(&[tp("t", 0), tp("t", 1), tp("t", 2)]).unwrap();

    // No data: a short poll returns empty.
    assert!(c.poll(Duration::from_millis(10)).unwrap().is_empty());

    // A long poll returns the record another thread appends, woken by the append (it comes
    // back before its timeout).
    let timeout = Duration::from_secs(60);
    let p = log.partition("t", 2).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        p.append(&[Record::new(None, Some(b"hello"))]).unwrap();
    });
    let started = Instant::now();
    let records = c.poll(timeout).unwrap();
    assert!(started.elapsed() < timeout);
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.partition, r.value.clone()))
        .collect();
    assert_eq!(got, vec![(2, Some("hello".to_string()))]);
    writer.join().unwrap();

    // An append racing with the poll's check-then-wait is never lost: each poll gets its record.
    let p = log.partition("t", 1).unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for i in 0..200 {
            if go_rx.recv().is_err() {
                return;
            }
            p.append(&[Record::new(None, Some(format!("{i}").as_bytes()))])
                .unwrap();
        }
    });
    for i in 0..200 {
        go_tx.send(()).unwrap();
        let started = Instant::now();
        let records = c.poll(timeout).unwrap();
        assert!(started.elapsed() < timeout);
        let values: Vec<_> = records.into_iter().map(|r| r.value.unwrap()).collect();
        assert_eq!(values, vec![format!("{i}")]);
    }
    drop(go_tx);
    writer.join().unwrap();

    // A consumer can move to the thread that polls.
    let polled = std::thread::spawn(move || c.poll(Duration::ZERO).unwrap().count());
    assert_eq!(polled.join().unwrap(), 0);
}

#[test]
fn auto_offset_reset_for_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    append_each(&p, (0..3).map(|i| format!("{i}")));
    let t0 = tp("t", 0);

    let mut early = string_consumer(&log, earliest());
    let mut late = string_consumer(&log, ConsumerConfig::default());
    let mut none = string_consumer(
        &log,
        ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None),
    );
    for c in [&mut early, &mut late, &mut none] {
        c.assign(std::slice::from_ref(&t0)).unwrap();
    }

    assert_eq!(offsets_of(&drain(&mut early)), vec![0, 1, 2]);
    assert!(drain(&mut late).is_empty());
    assert_eq!(late.position(&t0).unwrap(), 3);
    append_each(&p, ["3".to_string()]);
    assert_eq!(offsets_of(&drain(&mut late)), vec![3]);

    let err = none.poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(&err, Error::NoOffsetForPartition { topic, partition: 0 } if topic == "t"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"t\"/0"), "{err}");
    assert!(matches!(
        none.position(&t0),
        Err(Error::NoOffsetForPartition { .. })
    ));
    none.seek(&t0, 1).unwrap();
    assert_eq!(offsets_of(&drain(&mut none)), vec![1, 2, 3]);
}

#[test]
fn auto_offset_reset_after_retention_deleted_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    let config = TopicConfig::default()
        .segment_bytes(1024)
        .retention_ms(60_000);
    log.create_topic("t", 1, config).unwrap();
    let p = log.partition("t", 0).unwrap();
    // Old records (deleted by retention below), then recent ones.
    for i in 0..100 {
        let v = format!("old{i:040}");
        p.append(&[Record::new(None, Some(v.as_bytes())).timestamp(NOW - 3_600_000)])
            .unwrap();
    }
    for i in 0..5 {
        let v = format!("new{i}");
        p.append(&[Record::new(None, Some(v.as_bytes())).timestamp(NOW)])
            .unwrap();
    }
    let t0 = tp("t", 0);
    let consumers: Vec<Consumer<String, String>> = [
        AutoOffsetReset::Earliest,
        AutoOffsetReset::Latest,
        AutoOffsetReset::None,
    ]
    .into_iter()
    .map(|reset| {
        let mut c = string_consumer(&log, ConsumerConfig::default().auto_offset_reset(reset));
        c.assign(std::slice::from_ref(&t0)).unwrap();
        c.seek(&t0, 10).unwrap();
        assert_eq!(
            c.poll(Duration::ZERO)
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .offset,
            10
        );
        c.seek(&t0, 10).unwrap();
        c
    })
    .collect();
    let [mut early, mut late, mut none] = <[_; 3]>::try_from(consumers).unwrap();

    assert!(log.enforce_retention().unwrap() > 0);
    let start = p.log_start_offset().unwrap();
    assert!(start > 10, "{start}");

    let got = drain(&mut early);
    assert_eq!(got.first().unwrap().1, start);
    assert_eq!(got.last().unwrap().1, 104);

    assert!(drain(&mut late).is_empty());
    assert_eq!(late.position(&t0).unwrap(), 105);

    let err = none.poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetOutOfRange { requested: 10, log_start, log_end: 105, .. } if log_start == start
        ),
        "{err:?}"
    );
    assert_eq!(
        none.position(&t0).unwrap(),
        10,
        "none leaves the position alone"
    );
    none.seek(&t0, start).unwrap();
    assert_eq!(drain(&mut none).len() as i64, 105 - start);
}

#[test]
fn a_record_that_fails_to_deserialize_is_reported_and_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let four = |i: i32| i.to_be_bytes();
    let (v0, v1, v2, v4, v5) = (four(0), four(1), four(2), four(4), four(5));
    // One batch: offsets 0..=5, where offset 3 has a 3-byte value (not an i32).
    p.append(&[
        Record::new(None, Some(&v0)),
        Record::new(None, Some(&v1)),
        Record::new(None, Some(&v2)),
        Record::new(None, Some(b"bad")),
        Record::new(None, Some(&v4)),
        Record::new(None, Some(&v5)),
    ])
    .unwrap();
    // Offset 6: a key that is not an i32.
    p.append(&[Record::new(Some(b"k"), Some(&four(6)))])
        .unwrap();
    let t0 = tp("t", 0);
    let mut c: Consumer<i32, i32> =
        Consumer::new(&log, earliest(), IntegerSerde, IntegerSerde).unwrap();
    c.assign(std::slice::from_ref(&t0)).unwrap();

    // The records before the bad one come first.
    let values: Vec<i32> = c
        .poll(Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, vec![0, 1, 2]);
    assert_eq!(c.position(&t0).unwrap(), 3);
    // Then the error, with the record's coordinates, as often as the caller polls.
    for _ in 0..2 {
        match c.poll(Duration::ZERO) {
            Err(Error::Deserialization {
                topic,
                partition,
                offset,
                part,
                ..
            }) => assert_eq!((&*topic, partition, offset, part), ("t", 0, 3, "value")),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.position(&t0).unwrap(), 3);
    }
    // Skipping it continues with the next record.
    c.seek(&t0, 3 + 1).unwrap();
    let offsets: Vec<i64> = c
        .poll(Duration::ZERO)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![4, 5]);
    match c.poll(Duration::ZERO) {
        Err(Error::Deserialization { offset, part, .. }) => assert_eq!((offset, part), (6, "key")),
        other => panic!("{other:?}"),
    }
    c.seek(&t0, 7).unwrap();
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn records_from_other_partitions_are_not_lost_to_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (p0, p1) = (
        log.partition("t", 0).unwrap(),
        log.partition("t", 1).unwrap(),
    );
    p0.append(&[Record::new(None, Some(&7i32.to_be_bytes()))])
        .unwrap();
    p1.append(&[Record::new(None, Some(b"no"))]).unwrap();
    p1.append(&[Record::new(None, Some(&8i32.to_be_bytes()))])
        .unwrap();
    let mut c: Consumer<i32, i32> =
        Consumer::new(&log, earliest(), IntegerSerde, IntegerSerde).unwrap();
    c.assign(&[tp("t", 0), tp("t", 1)]).unwrap();
    let mut good = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..4 {
        match c.poll(Duration::ZERO) {
            Ok(records) => good.extend(records.into_iter().map(|r| r.value.unwrap())),
            Err(Error::Deserialization {
                partition, offset, ..
            }) => {
                errors.push((partition, offset));
                c.seek(&tp("t", partition), offset + 1).unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    good.sort_unstable();
    assert_eq!(good, vec![7, 8]);
    assert_eq!(errors, vec![(1, 0)]);
}

#[test]
fn current_lag_is_end_offset_minus_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    append_each(&p, (0..10).map(|i| format!("{i}")));
    let t0 = tp("t", 0);
    let mut c = string_consumer(&log, earliest().max_poll_records(4));
    c.assign(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(c.current_lag(&t0).unwrap(), None, "no position yet");
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 4);
    assert_eq!(c.current_lag(&t0).unwrap(), Some(6));
    append_each(&p, (0..5).map(|i| format!("{i}")));
    assert_eq!(c.current_lag(&t0).unwrap(), Some(11));
    drain(&mut c);
    assert_eq!(c.current_lag(&t0).unwrap(), Some(0));
    assert!(matches!(
        c.current_lag(&tp("t", 1)),
        Err(Error::NotAssigned { .. })
    ));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Like {
    user: u64,
    product: String,
}

#[test]
fn typed_keys_values_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("likes", 1, TopicConfig::default())
        .unwrap();
    log.create_topic(
        "stamped",
        1,
        TopicConfig::default().message_timestamp_type(TimestampType::LogAppendTime),
    )
    .unwrap();
    let p = log.partition("likes", 0).unwrap();
    let like = serde_json::to_vec(&Like {
        user: 7,
        product: "p-42".into(),
    })
    .unwrap();
    let key = 42i64.to_be_bytes();
    let headers = [
        Header {
            key: "trace",
            value: Some(b"abc"),
        },
        Header {
            key: "empty",
            value: None,
        },
    ];
    p.append(&[
        Record::new(Some(&key), Some(&like))
            .timestamp(NOW - 5)
            .headers(&headers),
        Record::new(Some(&key), None), // a tombstone
        Record::new(None, Some(&like)),
    ])
    .unwrap();

    let mut c: Consumer<i64, Like> =
        Consumer::new(&log, earliest(), IntegerSerde, Json::default()).unwrap();
    c.assign(&[tp("likes", 0)]).unwrap();
    let records: Vec<_> = c.poll(Duration::ZERO).unwrap().into_iter().collect();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    assert_eq!((&*r.topic, r.partition, r.offset), ("likes", 0, 0));
    assert_eq!(r.key, Some(42));
    assert_eq!(
        r.value,
        Some(Like {
            user: 7,
            product: "p-42".into()
        })
    );
    assert_eq!(
        (r.timestamp, r.timestamp_type),
        (NOW - 5, TimestampType::CreateTime)
    );
    assert_eq!(
        r.headers,
        vec![
            OwnedHeader {
                key: "trace".into(),
                value: Some(b"abc".to_vec())
            },
            OwnedHeader {
                key: "empty".into(),
                value: None
            },
        ]
    );
    assert_eq!(r.headers[0].as_header(), headers[0]);
    assert_eq!(
        (records[1].key, records[1].value.is_none()),
        (Some(42), true)
    );
    assert_eq!(records[2].key, None);

    // LogAppendTime: the log's clock, and the type says so.
    let s = log.partition("stamped", 0).unwrap();
    clock.advance_ms(1_000);
    s.append(&[Record::new(None, Some(b"v")).timestamp(1)])
        .unwrap();
    let mut c: Consumer<Vec<u8>, String> =
        Consumer::new(&log, earliest(), BytesSerde, StringSerde).unwrap();
    c.assign(&[tp("stamped", 0)]).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    let r = records.iter().next().unwrap();
    assert_eq!(
        (r.timestamp, r.timestamp_type, r.value.as_deref()),
        (NOW + 1_000, TimestampType::LogAppendTime, Some("v"))
    );
}

#[test]
fn assign_replaces_the_assignment_and_rejects_unknown_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    for i in 0..3 {
        append_each(
            &log.partition("t", i).unwrap(),
            (0..4).map(|k| format!("{i}-{k}")),
        );
    }
    let mut c = string_consumer(&log, earliest());
    c.assign(&[tp("t", 0), tp("t", 1), tp("t", 0)]).unwrap();
    assert_eq!(c.assignment(), vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(drain(&mut c).len(), 8);

    // Unknown: an error, and the assignment is unchanged.
    for bad in [tp("t", 3), tp("nope", 0)] {
        assert!(matches!(
            c.assign(&[tp("t", 2), bad]),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
    }
    assert_eq!(c.assignment(), vec![tp("t", 0), tp("t", 1)]);

    // Replacing: t-0 keeps its position, t-1 is gone, t-2 starts by auto.offset.reset.
    c.pause(&[tp("t", 0)]).unwrap();
    c.assign(&[tp("t", 0), tp("t", 2)]).unwrap();
    assert_eq!(c.assignment(), vec![tp("t", 0), tp("t", 2)]);
    assert_eq!(c.paused(), vec![tp("t", 0)]);
    assert_eq!(c.position(&tp("t", 0)).unwrap(), 4);
    assert!(matches!(
        c.seek(&tp("t", 1), 0),
        Err(Error::NotAssigned { partition: 1, .. })
    ));
    let got = drain(&mut c);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.0 == 2));
    // Appends to a partition no longer assigned do not concern this consumer.
    append_each(&log.partition("t", 1).unwrap(), ["x".to_string()]);
    assert!(c.poll(Duration::from_millis(10)).unwrap().is_empty());

    c.assign(&[]).unwrap();
    assert!(c.assignment().is_empty());
    assert!(c.poll(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn a_deleted_topics_partition_yields_nothing_and_poll_waits_out_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("gone", 1, TopicConfig::default()).unwrap();
    log.create_topic("kept", 1, TopicConfig::default()).unwrap();
    append_each(
        &log.partition("gone", 0).unwrap(),
        (0..3).map(|i| format!("g{i}")),
    );
    let kept = log.partition("kept", 0).unwrap();
    append_each(&kept, (0..2).map(|i| format!("k{i}")));
    let mut c = string_consumer(&log, earliest());
    c.assign(&[tp("gone", 0), tp("kept", 0)]).unwrap();
    assert_eq!(drain(&mut c).len(), 5);

    log.delete_topic("gone").unwrap();

    // Each poll is an empty poll that waits out its timeout, as Kafka's consumer does for a
    // topic it has no metadata for, not an error returned at once (a user's poll loop spun on
    // `UnknownTopicOrPartition`). 500 ms of 50 ms polls are about ten polls; the bound is
    // far from both that and a busy loop.
    let window = Duration::from_millis(500);
    let started = Instant::now();
    let mut polls = 0;
    while started.elapsed() < window {
        let records = c.poll(Duration::from_millis(50)).unwrap();
        assert!(records.is_empty());
        polls += 1;
    }
    assert!(
        polls < 100,
        "{polls} polls in {window:?}: poll did not wait"
    );
    assert_eq!(c.assignment(), vec![tp("gone", 0), tp("kept", 0)]);

    // The partition that still exists keeps returning its records.
    append_each(&kept, ["k2".to_string()]);
    assert_eq!(drain(&mut c), vec![(0, 2, "k2".to_string())]);
    // ... and its appends end a waiting poll.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        append_each(&kept, ["k3".to_string()]);
    });
    let got: Vec<_> = c
        .poll(Duration::from_secs(60))
        .unwrap()
        .into_iter()
        .map(|r| (r.topic.to_string(), r.offset, r.value.unwrap()))
        .collect();
    assert_eq!(got, vec![("kept".to_string(), 3, "k3".to_string())]);
    writer.join().unwrap();
}

#[test]
fn a_recreated_topic_is_read_by_the_same_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    append_each(
        &log.partition("t", 0).unwrap(),
        (0..3).map(|i| format!("old{i}")),
    );
    let t0 = tp("t", 0);
    let mut early = string_consumer(&log, earliest());
    let mut none = string_consumer(
        &log,
        ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None),
    );
    for c in [&mut early, &mut none] {
        c.assign(std::slice::from_ref(&t0)).unwrap();
        c.seek(&t0, 0).unwrap();
        assert_eq!(drain(c).len(), 3);
    }

    log.delete_topic("t").unwrap();
    for c in [&mut early, &mut none] {
        assert!(c.poll(Duration::from_millis(10)).unwrap().is_empty());
    }
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    append_each(&p, (0..2).map(|i| format!("new{i}")));

    // Position 3 is past the new partition's end: auto.offset.reset applies, as for any
    // out-of-range position.
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(
            early
                .poll(Duration::from_secs(10))
                .unwrap()
                .into_iter()
                .map(|r| (r.offset, r.value.unwrap())),
        );
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, vec![(0, "new0".to_string()), (1, "new1".to_string())]);
    let err = none.poll(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetOutOfRange {
                requested: 3,
                log_start: 0,
                log_end: 2,
                ..
            }
        ),
        "{err:?}"
    );

    // The consumer now watches the new partition: its appends end a waiting poll (were it
    // still registered with the deleted one only, this poll would run its full minute).
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        append_each(&p, ["new2".to_string()]);
    });
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    let got: Vec<_> = early
        .poll(timeout)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    assert!(started.elapsed() < timeout, "woken by the append");
    assert_eq!(got, vec![(2, "new2".to_string())]);
    writer.join().unwrap();
}

#[test]
fn bad_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), &ManualClock::new(NOW));
    let zero = ConsumerConfig::default().max_poll_records(0);
    assert!(matches!(
        Consumer::<String, String>::new(&log, zero, StringSerde, StringSerde),
        Err(Error::InvalidConfig { key, .. }) if key == "max.poll.records"
    ));
    let huge = ConsumerConfig::default().fetch_max_bytes(1 << 40);
    assert!(matches!(
        huge.validate(),
        Err(Error::InvalidConfig { key, .. }) if key == "fetch.max.bytes"
    ));
    assert!(ConsumerConfig::default().set("group.id", "").is_err());
    assert!(
        ConsumerConfig::default()
            .set("auto.offset.reset", "smallest")
            .is_err()
    );
    assert!(
        ConsumerConfig::default()
            .set("max.poll.records", "many")
            .is_err()
    );
    let c = ConsumerConfig::default()
        .set("auto.offset.reset", "none")
        .unwrap()
        .set("max.partition.fetch.bytes", "4096")
        .unwrap();
    assert_eq!(c.auto_offset_reset, AutoOffsetReset::None);
    assert_eq!(c.max_partition_fetch_bytes, 4096);
    let d = ConsumerConfig::default();
    assert_eq!(
        (
            d.max_poll_records,
            d.fetch_max_bytes,
            d.max_partition_fetch_bytes,
            d.auto_offset_reset
        ),
        (500, 52_428_800, 1_048_576, AutoOffsetReset::Latest)
    );
}
