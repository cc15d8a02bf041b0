//! The producer: partitioning (Kafka's murmur2 vectors, sticky, round-robin, explicit,
//! custom), batching by batch.size and linger.ms, buffer.memory backpressure, delivery
//! futures and callbacks, flush and close, acks, idempotent sequences, timestamps.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use core_log::serialization::{SerdeError, Serializer, StringSerde};
use core_log::{
    Acks, CleanupPolicy, Error, Log, ManualClock, Partitioner, PartitionerKind, Producer,
    ProducerConfig, ProducerRecord, RecordMetadata, SharedCallback, TimestampType, TopicConfig,
    murmur2, partition_for_key, to_positive,
};

/// A fixed "now" for the log's manual clock.
const NOW: i64 = 1_700_000_000_000;

fn open(dir: &Path) -> Log {
    Log::builder(dir)
        .clock(ManualClock::new(NOW))
        .background_maintenance(false)
        .open()
        .unwrap()
}

fn producer(log: &Log, config: ProducerConfig) -> Producer<str, str> {
    Producer::new(log, config, StringSerde, StringSerde).unwrap()
}

/// A long linger: batches leave only when full, on flush or on close.
fn no_linger_sends() -> ProducerConfig {
    ProducerConfig::default().linger_ms(60_000)
}

/// One row per batch in the partition: (base offset, record count, producer id, epoch, base
/// sequence, encoded size).
fn batches(log: &Log, topic: &str, partition: u32) -> Vec<(i64, i32, i64, i16, i32, usize)> {
    let data = log
        .partition(topic, partition)
        .unwrap()
        .read(0, 64 << 20)
        .unwrap();
    data.batches()
        .map(|b| {
            (
                b.base_offset(),
                b.records_count(),
                b.producer_id(),
                b.producer_epoch(),
                b.base_sequence(),
                b.size(),
            )
        })
        .collect()
}

fn values(log: &Log, topic: &str, partition: u32) -> Vec<String> {
    let data = log
        .partition(topic, partition)
        .unwrap()
        .read(0, 64 << 20)
        .unwrap();
    data.records()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

/// Kafka's own vectors, from apache/kafka
/// clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (`testMurmur2`).
const KAFKA_MURMUR2: [(&str, i32); 6] = [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    (
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        -58897971,
    ),
    ("abc", 479470107),
];

#[test]
fn murmur2_is_bit_exact_with_kafka() {
    for (key, hash) in KAFKA_MURMUR2 {
        assert_eq!(murmur2(key.as_bytes()), hash, "{key}");
    }
    assert_eq!(to_positive(-1), i32::MAX);
    assert_eq!(to_positive(i32::MIN), 0);
    // Partitions from Kafka's formula on those hashes: to_positive(hash) % n.
    let expected: [(&str, [u32; 4]); 6] = [
        // n = 3, 6, 8, 12
        ("21", [0, 0, 4, 0]),
        ("foobar", [0, 0, 6, 6]),
        ("a-little-bit-long-string", [2, 2, 0, 8]),
        ("a-little-bit-longer-string", [2, 5, 3, 11]),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            [2, 5, 5, 5],
        ),
        ("abc", [0, 3, 3, 3]),
    ];
    for (key, parts) in expected {
        for (n, p) in [3, 6, 8, 12].into_iter().zip(parts) {
            assert_eq!(partition_for_key(key.as_bytes(), n), p, "{key} among {n}");
        }
    }
}

#[test]
fn keyed_records_land_where_a_kafka_client_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 8, TopicConfig::default()).unwrap();
    let p = producer(&log, ProducerConfig::default());
    let expected = [4, 6, 0, 3, 5, 3]; // the n = 8 column above
    for ((key, _), want) in KAFKA_MURMUR2.into_iter().zip(expected) {
        let m = p
            .send(ProducerRecord::new("t").key(key).value(key))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(m.partition, want, "{key}");
        assert!(values(&log, "t", want).contains(&key.to_string()));
    }
}

#[test]
fn sticky_partitioner_fills_a_batch_then_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends().batch_size(1024));
    let value = "v".repeat(100);
    let sent: Vec<_> = (0..1000)
        .map(|_| p.send(ProducerRecord::new("t").value(&value)).unwrap())
        .collect();
    p.flush();
    let partitions: Vec<u32> = sent
        .into_iter()
        .map(|f| f.wait().unwrap().partition)
        .collect();

    // Every batch in the log is full (same-size records: the same count), except the one
    // that was open when flush came.
    let all: Vec<_> = (0..4).flat_map(|q| batches(&log, "t", q)).collect();
    let full = all.iter().map(|b| b.1).max().unwrap();
    assert!(full > 1);
    assert!(all.iter().filter(|b| b.1 != full).count() <= 1, "{all:?}");
    assert!(all.iter().all(|b| b.5 <= 1024));

    // In send order, records stay on one partition for exactly one full batch, then move to
    // another partition.
    let mut runs = Vec::new();
    for &q in &partitions {
        match runs.last_mut() {
            Some((last, n)) if *last == q => *n += 1,
            _ => runs.push((q, 1)),
        }
    }
    let (_, last_run) = runs.pop().unwrap();
    assert!(last_run <= full);
    assert!(runs.iter().all(|&(_, n)| n == full), "{runs:?}");
    // Over ~100 batches every partition got some.
    let used: BTreeSet<u32> = partitions.iter().copied().collect();
    assert_eq!(used.len(), 4);
}

#[test]
fn round_robin_spreads_every_record_in_turn_ignoring_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    let p = producer(
        &log,
        ProducerConfig::default().partitioner(PartitionerKind::RoundRobin),
    );
    let got: Vec<u32> = (0..9)
        .map(|_| {
            p.send(ProducerRecord::new("t").key("same-key").value("v"))
                .unwrap()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| f.wait().unwrap().partition)
        .collect();
    assert_eq!(got, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[derive(Debug)]
struct ByFirstByte;

impl Partitioner for ByFirstByte {
    fn partition(&self, _: &str, key: Option<&[u8]>, _: Option<&[u8]>, _: u32) -> u32 {
        key.map_or(0, |k| u32::from(k[0] - b'0'))
    }
}

#[test]
fn explicit_partition_wins_and_is_checked_custom_partitioners_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    let p = producer(&log, ProducerConfig::default());
    // "foobar" hashes to partition 0 of 3; the explicit partition wins.
    let m = p
        .send(
            ProducerRecord::new("t")
                .key("foobar")
                .value("x")
                .partition(2),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((m.partition, m.offset), (2, 0));
    assert!(matches!(
        p.send(ProducerRecord::new("t").value("x").partition(3)),
        Err(Error::UnknownTopicOrPartition { partition: 3, .. })
    ));
    assert!(matches!(
        p.send(ProducerRecord::new("nope").value("x")),
        Err(Error::UnknownTopicOrPartition { .. })
    ));

    let custom = producer(
        &log,
        ProducerConfig::default().partitioner(PartitionerKind::Custom(Arc::new(ByFirstByte))),
    );
    let m = custom
        .send(ProducerRecord::new("t").key("1-abc").value("y"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(m.partition, 1);
    assert!(matches!(
        custom.send(ProducerRecord::new("t").key("7-abc").value("y")),
        Err(Error::UnknownTopicOrPartition { partition: 7, .. })
    ));
    custom.flush();
    assert_eq!(values(&log, "t", 1), ["y"]);
}

/// A producer keeps the partition counts of the topics it sends to; a topic given more
/// partitions, deleted or created again is seen at the next send.
#[test]
fn a_producer_sees_added_partitions_and_deleted_or_recreated_topics() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = producer(&log, ProducerConfig::default());
    let sent = |partition| {
        p.send(ProducerRecord::new("t").value("x").partition(partition))
            .and_then(|f| f.wait())
    };
    assert_eq!(sent(0).unwrap().partition, 0);
    assert!(matches!(
        sent(2),
        Err(Error::UnknownTopicOrPartition { partition: 2, .. })
    ));

    log.create_partitions("t", 3).unwrap();
    assert_eq!(sent(2).unwrap().partition, 2);
    // Keyed records spread over all 3 partitions now.
    let keyed: BTreeSet<u32> = (0..30)
        .map(|i| {
            let key = format!("k{i}");
            p.send(ProducerRecord::new("t").key(key.as_str()).value("x"))
                .unwrap()
                .wait()
                .unwrap()
                .partition
        })
        .collect();
    assert_eq!(keyed, BTreeSet::from([0, 1, 2]));

    log.delete_topic("t").unwrap();
    assert!(matches!(
        p.send(ProducerRecord::new("t").value("x")),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    // Created again with 2 partitions: partition 2 is gone. (The idempotent producer's
    // sequence numbers for the old topic's partitions would be refused by the new ones, as a
    // Kafka broker refuses them: a new producer writes to the new topic.)
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    assert!(matches!(
        sent(2),
        Err(Error::UnknownTopicOrPartition { partition: 2, .. })
    ));
    let fresh = producer(&log, ProducerConfig::default());
    let m = fresh
        .send(ProducerRecord::new("t").value("y").partition(1))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((m.partition, m.offset), (1, 0));
}

#[test]
fn batch_size_bounds_batches_and_a_larger_record_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends().batch_size(1000));
    let value = "v".repeat(100);
    for _ in 0..50 {
        drop(p.send(ProducerRecord::new("t").value(&value)).unwrap());
    }
    p.flush();
    let b = batches(&log, "t", 0);
    assert_eq!(b.iter().map(|b| b.1).sum::<i32>(), 50);
    let (last, full) = b.split_last().unwrap();
    assert!(full.len() >= 5);
    // Full batches: as many records as fit in 1000 bytes, one more would not.
    let per_batch = full[0].1;
    assert!(full.iter().all(|b| b.1 == per_batch && b.5 <= 1000));
    assert!(full[0].5 + (full[0].5 - 61) / per_batch as usize > 1000);
    assert!(last.1 <= per_batch);

    let big = "B".repeat(5000);
    let small = p.send(ProducerRecord::new("t").value("s1")).unwrap();
    let large = p.send(ProducerRecord::new("t").value(&big)).unwrap();
    let after = p.send(ProducerRecord::new("t").value("s2")).unwrap();
    p.flush();
    let offsets: Vec<i64> = [small, large, after]
        .into_iter()
        .map(|f| f.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, [50, 51, 52]);
    let tail: Vec<i32> = batches(&log, "t", 0)
        .iter()
        .filter(|b| b.0 >= 50)
        .map(|b| b.1)
        .collect();
    assert_eq!(tail, [1, 1, 1], "the large record is alone in its batch");
}

#[test]
fn linger_sends_a_partial_batch_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    // A whole second of linger: the five sends below take microseconds.
    let p = producer(&log, ProducerConfig::default().linger_ms(1000));
    let sent: Vec<_> = (0..5)
        .map(|i| {
            p.send(ProducerRecord::new("t").value(&i.to_string()))
                .unwrap()
        })
        .collect();
    // No flush: the batch leaves when its linger has passed.
    let offsets: Vec<i64> = sent.into_iter().map(|f| f.wait().unwrap().offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    let b = batches(&log, "t", 0);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1, 5);
}

#[test]
fn full_buffer_memory_blocks_send_until_max_block_ms_then_times_out_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    let p = producer(
        &log,
        ProducerConfig::default()
            .linger_ms(0)
            .batch_size(1024)
            .buffer_memory(2048)
            .max_block_ms(200),
    );
    // Stall the sender thread inside the first record's callback, so nothing drains.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    p.send_with_callback(
        ProducerRecord::new("t").value("r0").partition(0),
        move |r| {
            r.unwrap();
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        },
    )
    .unwrap();
    entered.recv().unwrap();
    // r0's batch still holds 1024 bytes; r1's new batch takes the other 1024.
    let r1 = p
        .send(ProducerRecord::new("t").value("r1").partition(1))
        .unwrap();
    // r2 needs a third batch: no memory, and the sender cannot free any.
    let err = p
        .send(ProducerRecord::new("t").value("r2").partition(2))
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after_ms: 200, .. }),
        "{err:?}"
    );
    assert!(err.is_retriable());
    // A record that fits an open batch needs no new memory.
    let r3 = p
        .send(ProducerRecord::new("t").value("r3").partition(1))
        .unwrap();

    release.send(()).unwrap();
    assert_eq!(r1.wait().unwrap().offset, 0);
    assert_eq!(r3.wait().unwrap().offset, 1);
    p.flush();
    assert_eq!(values(&log, "t", 0), ["r0"]);
    assert_eq!(values(&log, "t", 1), ["r1", "r3"]);
    assert!(values(&log, "t", 2).is_empty());
    // Memory is back: the refused record can be sent now.
    let r2 = p
        .send(ProducerRecord::new("t").value("r2").partition(2))
        .unwrap();
    assert_eq!(r2.wait().unwrap().offset, 0);
}

/// Fails on the value "bad".
struct Picky;

impl Serializer<str> for Picky {
    fn serialize(&self, _: &str, value: &str, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        if value == "bad" {
            return Err("refusing \"bad\"".into());
        }
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

/// Shared callbacks (one `Arc` for many sends) and boxed ones mixed in the same batches: each
/// record's callback is called exactly once, in the partition's record order, with its own
/// metadata; a record refused at send calls nothing.
#[test]
fn shared_and_boxed_callbacks_are_called_once_per_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends().batch_size(1_000));
    // (callback, partition, offset), in call order.
    let calls = Arc::new(Mutex::new(Vec::<(&str, u32, i64)>::new()));
    let shared = |name: &'static str| -> SharedCallback {
        let calls = calls.clone();
        Arc::new(move |r: core_log::Result<RecordMetadata>| {
            let m = r.unwrap();
            calls.lock().unwrap().push((name, m.partition, m.offset));
        })
    };
    let (a, b) = (shared("a"), shared("b"));
    let value = "v".repeat(100);
    let mut expected = Vec::new();
    let mut rng = 7u64;
    for i in 0..300 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let partition = (rng >> 33) as u32 % 2;
        let record = ProducerRecord::new("t")
            .value(value.as_str())
            .partition(partition);
        let name = match (rng >> 40) % 3 {
            0 => {
                p.send_with_shared_callback(record, &a).unwrap();
                "a"
            }
            1 => {
                p.send_with_shared_callback(record, &b).unwrap();
                "b"
            }
            _ => {
                let calls = calls.clone();
                p.send_with_callback(record, move |r| {
                    let m = r.unwrap();
                    calls.lock().unwrap().push(("boxed", m.partition, m.offset));
                })
                .unwrap();
                "boxed"
            }
        };
        expected.push((name, partition, i));
    }
    // Refused at send (no such partition): never called.
    assert!(
        p.send_with_shared_callback(ProducerRecord::new("t").value("v").partition(9), &a)
            .is_err()
    );
    p.flush();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 300);
    for partition in 0..2 {
        let want: Vec<(&str, i64)> = expected
            .iter()
            .filter(|e| e.1 == partition)
            .enumerate()
            .map(|(offset, e)| (e.0, offset as i64))
            .collect();
        let got: Vec<(&str, i64)> = calls
            .iter()
            .filter(|c| c.1 == partition)
            .map(|c| (c.0, c.2))
            .collect();
        assert_eq!(got, want, "partition {partition}");
    }
    // Several batches per partition were sent (batch.size 1,000 bytes).
    assert!(batches(&log, "t", 0).len() > 3);
}

#[test]
fn a_serialization_failure_fails_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p: Producer<str, str> = Producer::new(&log, no_linger_sends(), StringSerde, Picky).unwrap();
    let a = p.send(ProducerRecord::new("t").value("a")).unwrap();
    let err = p.send(ProducerRecord::new("t").value("bad")).unwrap_err();
    assert!(
        matches!(&err, Error::Serialization { topic, part: "value", .. } if topic == "t"),
        "{err:?}"
    );
    let b = p.send(ProducerRecord::new("t").value("b")).unwrap();
    p.flush();
    assert_eq!((a.wait().unwrap().offset, b.wait().unwrap().offset), (0, 1));
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
}

#[test]
fn futures_resolve_with_offsets_in_send_order_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    // Small batches and no linger: many batches, appended while sends go on.
    let p = producer(&log, ProducerConfig::default().linger_ms(0).batch_size(300));
    let sent: Vec<_> = (0..400u32)
        .map(|i| {
            let v = format!("{i}");
            p.send(ProducerRecord::new("t").value(v.as_str()).partition(i % 2))
                .unwrap()
        })
        .collect();
    let metas: Vec<RecordMetadata> = sent.into_iter().map(|f| f.wait().unwrap()).collect();
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.partition, i as u32 % 2);
        assert_eq!(m.offset, i as i64 / 2);
        assert_eq!(&*m.topic, "t");
        assert_eq!(m.serialized_key_size, -1);
        assert_eq!(m.serialized_value_size, i.to_string().len() as i32);
    }
    for q in 0..2 {
        let want: Vec<String> = (0..400)
            .filter(|i| i % 2 == q)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(values(&log, "t", q as u32), want);
    }
    assert!(batches(&log, "t", 0).len() > 1);
}

#[test]
fn callbacks_fire_once_each_and_flush_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends().batch_size(500));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..1000 {
        let (calls, seen) = (calls.clone(), seen.clone());
        let v = i.to_string();
        p.send_with_callback(ProducerRecord::new("t").value(v.as_str()), move |r| {
            let m = r.unwrap();
            calls.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push((m.partition, m.offset, i));
        })
        .unwrap();
    }
    p.flush();
    assert_eq!(calls.load(Ordering::SeqCst), 1000);
    let seen = seen.lock().unwrap();
    // Each record reported once, with a distinct offset; per partition the callbacks ran in
    // offset order, which is send order.
    let mut per_partition: BTreeMap<u32, Vec<(i64, i32)>> = BTreeMap::new();
    for &(q, off, i) in seen.iter() {
        per_partition.entry(q).or_default().push((off, i));
    }
    let mut total = 0;
    for (q, list) in per_partition {
        let offsets: Vec<i64> = list.iter().map(|x| x.0).collect();
        assert_eq!(offsets, (0..list.len() as i64).collect::<Vec<_>>());
        assert!(list.windows(2).all(|w| w[0].1 < w[1].1));
        let want: Vec<String> = list.iter().map(|x| x.1.to_string()).collect();
        assert_eq!(values(&log, "t", q), want);
        total += list.len();
    }
    assert_eq!(total, 1000);
}

#[test]
fn flush_waits_for_everything_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends());
    let sent: Vec<_> = (0..100)
        .map(|i| {
            let k = format!("k{i}");
            p.send(ProducerRecord::new("t").key(k.as_str()).value("v"))
                .unwrap()
        })
        .collect();
    p.flush();
    assert!(sent.iter().all(|f| f.is_done()));
    let total: i64 = (0..4)
        .map(|q| log.partition("t", q).unwrap().log_end_offset().unwrap())
        .sum();
    assert_eq!(total, 100);
}

#[test]
fn close_sends_what_is_queued_then_refuses_sends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends());
    let sent: Vec<_> = (0..10)
        .map(|_| p.send(ProducerRecord::new("t").value("v")).unwrap())
        .collect();
    p.close();
    assert!(sent.iter().all(|f| f.is_done()));
    assert_eq!(values(&log, "t", 0).len(), 10);
    assert!(matches!(
        p.send(ProducerRecord::new("t").value("late")),
        Err(Error::Closed)
    ));
    assert!(matches!(
        p.send_with_callback(ProducerRecord::new("t").value("late"), |_| {}),
        Err(Error::Closed)
    ));
    p.flush(); // nothing in flight: returns at once
    p.close(); // closing twice is harmless
    drop(p);

    // Dropping a producer closes it too: what it had queued is appended.
    let p = producer(&log, no_linger_sends());
    let last = p.send(ProducerRecord::new("t").value("on drop")).unwrap();
    drop(p);
    assert_eq!(last.wait().unwrap().offset, 10);
}

#[tokio::test(flavor = "current_thread")]
async fn delivery_futures_can_be_awaited_from_tokio() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = producer(&log, ProducerConfig::default());
    let mut futures = Vec::new();
    for i in 0..20 {
        let v = i.to_string();
        futures.push(p.send(ProducerRecord::new("t").value(v.as_str())).unwrap());
    }
    // Awaited without flush: the sender thread wakes this single-threaded runtime.
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().offset, i as i64);
    }
}

#[test]
fn idempotent_batches_carry_the_producer_id_and_increasing_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let p = producer(&log, no_linger_sends().batch_size(300));
    for i in 0..120u32 {
        let v = format!("value-{i}");
        drop(
            p.send(ProducerRecord::new("t").value(v.as_str()).partition(i % 2))
                .unwrap(),
        );
    }
    p.flush();
    let mut ids = BTreeSet::new();
    for q in 0..2 {
        let b = batches(&log, "t", q);
        assert!(b.len() > 3);
        let mut next_sequence = 0;
        for &(_, count, producer_id, epoch, base_sequence, _) in &b {
            assert!(producer_id >= 0);
            assert_eq!(epoch, 0);
            assert_eq!(base_sequence, next_sequence);
            next_sequence += count;
            ids.insert(producer_id);
        }
    }
    assert_eq!(ids.len(), 1, "one producer id for the producer");

    // Another producer gets another id; a non-idempotent one writes none.
    let q = producer(&log, ProducerConfig::default());
    q.send(ProducerRecord::new("t").value("x").partition(0))
        .unwrap()
        .wait()
        .unwrap();
    let last = *batches(&log, "t", 0).last().unwrap();
    assert!(!ids.contains(&last.2));
    let plain = producer(
        &log,
        ProducerConfig::default()
            .acks(Acks::One)
            .enable_idempotence(false),
    );
    plain
        .send(ProducerRecord::new("t").value("y").partition(0))
        .unwrap()
        .wait()
        .unwrap();
    let last = *batches(&log, "t", 0).last().unwrap();
    assert_eq!((last.2, last.3, last.4), (-1, -1, -1));
}

#[test]
fn a_refused_batch_fails_its_records_and_later_batches_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let compacted = TopicConfig::default().cleanup_policy(CleanupPolicy::COMPACT);
    log.create_topic("c", 1, compacted).unwrap();
    let p = producer(&log, ProducerConfig::default());
    // A compacted topic refuses a keyless record: the whole batch fails.
    let err = p
        .send(ProducerRecord::new("c").value("no key"))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    // The next batch is appended (its sequence follows the last appended batch's).
    let m = p
        .send(ProducerRecord::new("c").key("k").value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(m.offset, 0);
    assert_eq!(batches(&log, "c", 0)[0].4, 0);
}

#[test]
fn acks_zero_resolves_at_once_with_offset_minus_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let config = no_linger_sends().acks(Acks::Zero).enable_idempotence(false);
    let p = producer(&log, config);
    let f = p
        .send(ProducerRecord::new("t").value("v").timestamp(42))
        .unwrap();
    assert!(f.is_done());
    let m = f.wait().unwrap();
    assert_eq!((m.offset, m.timestamp, m.has_offset()), (-1, 42, false));
    p.flush();
    assert_eq!(values(&log, "t", 0), ["v"]);
}

#[test]
fn timestamps_are_create_time_or_the_logs_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("create", 1, TopicConfig::default())
        .unwrap();
    let append_time = TopicConfig::default().message_timestamp_type(TimestampType::LogAppendTime);
    log.create_topic("append", 1, append_time).unwrap();
    let p = producer(&log, ProducerConfig::default());
    let send = |topic, ts: Option<i64>| {
        let mut r = ProducerRecord::new(topic).value("v");
        r.timestamp = ts;
        p.send(r).unwrap().wait().unwrap().timestamp
    };
    assert_eq!(send("create", Some(1_000)), 1_000);
    assert_eq!(
        send("append", Some(1_000)),
        NOW,
        "the log's clock stamps it"
    );
    // A record without a timestamp gets the log's (injected) clock time, not the wall's.
    let ts = send("create", None);
    assert_eq!(ts, NOW);
    let data = log
        .partition("create", 0)
        .unwrap()
        .read(0, 1 << 20)
        .unwrap();
    let stored: Vec<i64> = data.records().map(|r| r.timestamp).collect();
    assert_eq!(stored, [1_000, ts]);
    assert!(matches!(
        p.send(ProducerRecord::new("create").value("v").timestamp(-5)),
        Err(Error::InvalidRecord { .. })
    ));
}

#[test]
fn records_larger_than_max_request_size_are_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = producer(&log, ProducerConfig::default().max_request_size(1000));
    let ok = p.send(ProducerRecord::new("t").value("small")).unwrap();
    let big = "x".repeat(2000);
    assert!(matches!(
        p.send(ProducerRecord::new("t").value(&big)),
        Err(Error::RecordTooLarge { max: 1000, .. })
    ));
    assert_eq!(ok.wait().unwrap().offset, 0);
    let tight = producer(&log, ProducerConfig::default().buffer_memory(1500));
    assert!(matches!(
        tight.send(ProducerRecord::new("t").value(&big)),
        Err(Error::RecordTooLarge { max: 1500, .. })
    ));
}

#[test]
fn one_producer_is_shared_by_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let p = Arc::new(producer(&log, ProducerConfig::default()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let k = format!("{t}-{i}");
                    drop(
                        p.send(ProducerRecord::new("t").key(k.as_str()).value("v"))
                            .unwrap(),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    p.flush();
    let total: usize = (0..4).map(|q| values(&log, "t", q).len()).sum();
    assert_eq!(total, 2000);
}

#[test]
fn config_has_kafkas_defaults_names_and_ranges() {
    let c = ProducerConfig::default();
    assert_eq!(c.acks, Acks::All);
    assert_eq!(
        (
            c.batch_size,
            c.linger_ms,
            c.buffer_memory,
            c.max_block_ms,
            c.max_request_size
        ),
        (16_384, 5, 33_554_432, 60_000, 1_048_576)
    );
    assert!(c.enable_idempotence);
    assert!(matches!(c.partitioner, PartitionerKind::BuiltIn));

    let c = ProducerConfig::default()
        .set("enable.idempotence", "false")
        .unwrap()
        .set("acks", "1")
        .unwrap()
        .set(
            "partitioner.class",
            "org.apache.kafka.clients.producer.RoundRobinPartitioner",
        )
        .unwrap()
        .set("batch.size", "0")
        .unwrap();
    assert_eq!((c.acks, c.batch_size), (Acks::One, 0));
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let c = ProducerConfig::default()
            .set("compression.type", codec)
            .unwrap();
        assert_eq!(c.compression_type.name(), codec);
    }
    assert!(matches!(c.partitioner, PartitionerKind::RoundRobin));
    for (key, value) in [
        ("acks", "2"),
        ("batch.size", "-1"),
        ("batch.size", "4294967296"),
        ("linger.ms", "soon"),
        ("enable.idempotence", "yes"),
        ("compression.type", "brotli"),
    ] {
        assert!(
            matches!(
                ProducerConfig::default().set(key, value),
                Err(Error::InvalidConfig { .. })
            ),
            "{key}={value}"
        );
    }
    // Idempotence needs acks=all, as in Kafka.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let err = Producer::<str, str>::new(
        &log,
        ProducerConfig::default().acks(Acks::One),
        StringSerde,
        StringSerde,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig { ref key, .. } if key == "acks"),
        "{err:?}"
    );
}
