//! Bad input is refused with the error a Kafka client expects, and refused whole: an invalid
//! topic name creates nothing, an invalid or oversized batch appends nothing (not even the
//! valid batches of the same request), and out-of-range reads report the valid range. Also the
//! two timestamp types: `LogAppendTime` stamps the log's clock, `CreateTime` keeps the
//! producer's.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use core_log::codec::{BATCH_HEADER_LEN, BatchBuilder, RecordBatch};
use core_log::{CleanupPolicy, Error, ManualClock, Partition, Record, TimestampType, TopicConfig};

mod common;
use common::{NOW, open_at as open};

fn dir_listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// An encoded batch of `n` records with keys `k<i>` and values `value`.
fn batch(n: usize, value: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new(Vec::new());
    for i in 0..n {
        let key = format!("k{i}");
        b.append(NOW + i as i64, Some(key.as_bytes()), Some(value), &[]);
    }
    b.finish()
}

/// Recomputes a batch's CRC after the test edited CRC-covered bytes on purpose.
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Log end offset and size, to check that a rejected append left no trace.
fn state(p: &Partition) -> (i64, u64, usize) {
    (
        p.log_end_offset().unwrap(),
        p.size_bytes().unwrap(),
        p.read(0, 1 << 20).unwrap().records().count(),
    )
}

fn is_invalid_record<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidRecord { .. }))
}

#[test]
fn invalid_topic_names_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let before = dir_listing(dir.path());
    let long = "x".repeat(250);
    for name in [
        "",
        ".",
        "..",
        "a/b",
        "../escape",
        "a b",
        "ü",
        "naïve",
        "tab\t",
        long.as_str(),
    ] {
        match log.create_topic(name, 1, TopicConfig::default()) {
            Err(Error::InvalidTopicName { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert!(log.topics().is_empty());
    assert_eq!(dir_listing(dir.path()), before);
    assert!(!dir.path().parent().unwrap().join("escape-0").exists());
    // The longest legal name works.
    let longest = "x".repeat(249);
    log.create_topic(&longest, 1, TopicConfig::default())
        .unwrap();
    assert_eq!(log.topics(), vec![longest]);
}

#[test]
fn unknown_topic_or_partition() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("t", 3, TopicConfig::default()).unwrap();
    match log.partition("t", 3) {
        Err(Error::UnknownTopicOrPartition { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("t", 3));
        }
        other => panic!("{other:?}"),
    }
    match log.partition("nope", 0) {
        Err(Error::UnknownTopicOrPartition { topic, .. }) => assert_eq!(topic, "nope"),
        other => panic!("{other:?}"),
    }
    let unknown = |r: Result<(), Error>| matches!(r, Err(Error::UnknownTopicOrPartition { .. }));
    assert!(unknown(log.partition("t", u32::MAX).map(|_| ())));
    assert!(unknown(log.topic_config("nope").map(|_| ())));
    assert!(unknown(log.partition_count("nope").map(|_| ())));
    assert!(unknown(log.delete_topic("nope")));
    assert!(unknown(log.create_partitions("nope", 4)));
    assert!(unknown(
        log.alter_topic_config("nope", TopicConfig::default())
    ));
    assert_eq!(log.topics(), vec!["t"]);
}

#[test]
fn oversized_batch_is_record_too_large_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let max = 1000u32;
    log.create_topic("t", 1, TopicConfig::default().max_message_bytes(max))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    p.append(&[Record::new(Some(b"first"), Some(b"ok"))])
        .unwrap();
    let before = state(&p);

    // Through `append`: the limit applies to the encoded batch.
    let big = vec![7u8; 2000];
    let expected_size = batch(1, &big).len();
    match p.append(&[Record::new(Some(b"k0"), Some(&big)).timestamp(NOW)]) {
        Err(Error::RecordTooLarge { size, max: m }) => {
            assert_eq!((size, m), (expected_size, max as usize));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&p), before);

    // Many small records that together exceed the limit form one batch too large.
    let small: Vec<Record<'_>> = (0..100)
        .map(|_| Record::new(Some(b"k"), Some(b"0123456789")))
        .collect();
    assert!(matches!(
        p.append(&small),
        Err(Error::RecordTooLarge { max: 1000, .. })
    ));
    assert_eq!(state(&p), before);

    // Through `append_batches`, even when an acceptable batch comes first.
    let mut req = batch(1, b"fine");
    req.extend(batch(1, &big));
    assert!(matches!(
        p.append_batches(&mut req),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(state(&p), before);

    // A batch of exactly max.message.bytes is accepted (Kafka rejects only larger ones).
    let mut value_len = 0;
    while batch(1, &vec![1u8; value_len + 1]).len() <= max as usize {
        value_len += 1;
    }
    let mut exact = batch(1, &vec![1u8; value_len]);
    assert_eq!(exact.len(), max as usize);
    let info = p.append_batches(&mut exact).unwrap();
    assert_eq!(info.base_offset, before.0);
    let mut over = batch(1, &vec![1u8; value_len + 1]);
    assert!(matches!(
        p.append_batches(&mut over),
        Err(Error::RecordTooLarge { size, .. }) if size == max as usize + 1
    ));

    // The partition accepts appends afterwards, at the next offset.
    let info = p
        .append(&[Record::new(Some(b"after"), Some(b"ok"))])
        .unwrap();
    assert_eq!(info.base_offset, before.0 + 1);
    let keys: Vec<Vec<u8>> = p
        .read(0, 1 << 20)
        .unwrap()
        .records()
        .map(|r| r.key.unwrap().to_vec())
        .collect();
    assert_eq!(
        keys,
        vec![b"first".to_vec(), b"k0".to_vec(), b"after".to_vec()]
    );
}

#[test]
fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let cases = [
        ("retention.ms", "-2"),
        ("retention.bytes", "-5"),
        ("segment.bytes", "13"),
        ("segment.bytes", "4294967295"),
        ("segment.ms", "0"),
        ("cleanup.policy", ""),
        ("cleanup.policy", "compact,shred"),
        ("max.message.bytes", "60"),
        ("min.compaction.lag.ms", "-1"),
        ("delete.retention.ms", "-1"),
        ("min.cleanable.dirty.ratio", "1.01"),
        ("min.cleanable.dirty.ratio", "-0.1"),
        ("message.timestamp.type", "WallClock"),
        ("index.interval.bytes", "0"),
        ("flush.messages", "0"),
        ("flush.ms", "-1"),
        ("retention.ms", "soon"),
        ("no.such.config", "1"),
    ];
    for (key, value) in cases {
        match TopicConfig::default().set(key, value) {
            Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key, "{key}={value}"),
            other => panic!("{key}={value}: {other:?}"),
        }
    }
    let before = dir_listing(dir.path());
    let bad_structs = [
        TopicConfig::default().retention_ms(-2),
        TopicConfig::default().retention_bytes(-2),
        TopicConfig::default().segment_bytes(10),
        TopicConfig::default().segment_ms(0),
        TopicConfig::default().max_message_bytes(10),
        TopicConfig::default().min_compaction_lag_ms(-1),
        TopicConfig::default().delete_retention_ms(-1),
        TopicConfig::default().cleanup_policy(CleanupPolicy {
            delete: false,
            compact: false,
        }),
    ];
    for config in &bad_structs {
        assert!(
            matches!(
                log.create_topic("t", 1, config.clone()),
                Err(Error::InvalidConfig { .. })
            ),
            "{config:?}"
        );
    }
    assert!(log.topics().is_empty());
    assert_eq!(dir_listing(dir.path()), before);

    // Altering a topic to an invalid config leaves its config unchanged.
    let good = TopicConfig::default().retention_ms(5000);
    log.create_topic("t", 1, good.clone()).unwrap();
    for config in bad_structs {
        assert!(matches!(
            log.alter_topic_config("t", config),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert_eq!(log.topic_config("t").unwrap(), good);
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    assert_eq!(log.topic_config("t").unwrap(), good);
}

#[test]
fn malformed_batches_are_invalid_record_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    p.append_batches(&mut batch(3, b"v")).unwrap();
    let before = state(&p);
    assert_eq!(before.0, 3);

    let good = batch(2, b"value");
    let mut bad: Vec<(&str, Vec<u8>)> = Vec::new();
    bad.push((
        "garbage",
        b"this is not a record batch at all, not even close!!!!!!!!!!!!!!!!!!!!!!!!!!!".to_vec(),
    ));
    bad.push(("short garbage", vec![0xff; 7]));
    {
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0x01; // inside the last record: the CRC no longer matches
        bad.push(("bad crc", b));
    }
    {
        let mut b = good.clone();
        b[17] ^= 0x80; // the stored CRC itself
        bad.push(("bad stored crc", b));
    }
    bad.push(("truncated", good[..good.len() - 3].to_vec()));
    bad.push(("header only", good[..BATCH_HEADER_LEN].to_vec()));
    {
        let mut b = good.clone();
        b[57..61].copy_from_slice(&3i32.to_be_bytes()); // two records, header says three
        fix_crc(&mut b);
        bad.push(("record count too high", b));
    }
    {
        let mut b = good.clone();
        b[57..61].copy_from_slice(&1i32.to_be_bytes());
        fix_crc(&mut b);
        bad.push(("record count too low", b));
    }
    {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&(i32::MAX).to_be_bytes()); // length past the request
        bad.push(("length too large", b));
    }
    {
        let mut b = good.clone();
        b[16] = 1; // magic
        bad.push(("magic 1", b));
    }
    {
        let mut b = BatchBuilder::new(Vec::new()).control(true);
        b.append(NOW, Some(&[0, 0, 0, 0]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        bad.push(("control batch", b.finish()));
    }
    bad.push(("no records", BatchBuilder::new(Vec::new()).finish()));
    {
        let mut b = good.clone();
        b[35..43].copy_from_slice(&(NOW + 99_999).to_be_bytes()); // max timestamp lies
        fix_crc(&mut b);
        bad.push(("max timestamp mismatch", b));
    }

    for (what, b) in &bad {
        let mut alone = b.clone();
        let r = p.append_batches(&mut alone);
        let shown = format!("{r:?}");
        assert!(is_invalid_record(r), "{what}: {shown}");
        assert_eq!(state(&p), before, "{what} alone");
        // Atomicity: a valid batch before the bad one is not appended either.
        let mut req = good.clone();
        req.extend_from_slice(b);
        assert!(
            is_invalid_record(p.append_batches(&mut req)),
            "{what} second"
        );
        assert_eq!(state(&p), before, "{what} second");
        // Nor after it.
        let mut req = b.clone();
        req.extend_from_slice(&good);
        assert!(
            is_invalid_record(p.append_batches(&mut req)),
            "{what} first"
        );
        assert_eq!(state(&p), before, "{what} first");
    }
    assert!(is_invalid_record(p.append_batches(&mut [])));
    assert!(is_invalid_record(p.append(&[])));
    assert_eq!(state(&p), before);

    // The partition is fine afterwards, and a request of two valid batches appends both.
    let mut req = good.clone();
    req.extend_from_slice(&good);
    let info = p.append_batches(&mut req).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (3, 6));
    assert_eq!(p.log_end_offset().unwrap(), 7);
    let offsets: Vec<i64> = p
        .read(0, 1 << 20)
        .unwrap()
        .records()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, (0..7).collect::<Vec<_>>());
    // Every stored batch is valid, with the offsets the log assigned.
    let data = p.read(0, 1 << 20).unwrap();
    let bases: Vec<i64> = data.batches().map(|b| b.base_offset()).collect();
    assert_eq!(bases, vec![0, 3, 5]);
    for b in data.batches() {
        b.validate().unwrap();
    }
    // Also after a reopen that re-validates every batch.
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    let log = open(dir.path(), &clock);
    let p = log.partition("t", 0).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), 7);
}

#[test]
fn compacted_topics_refuse_records_without_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    for policy in [CleanupPolicy::COMPACT, CleanupPolicy::COMPACT_DELETE] {
        let name = format!("c{}", u8::from(policy.delete));
        log.create_topic(&name, 1, TopicConfig::default().cleanup_policy(policy))
            .unwrap();
        let p = log.partition(&name, 0).unwrap();
        assert!(is_invalid_record(
            p.append(&[Record::new(None, Some(b"v"))])
        ));
        assert!(is_invalid_record(p.append(&[
            Record::new(Some(b"k"), Some(b"v")),
            Record::new(None, Some(b"v")),
        ])));
        let mut b = BatchBuilder::new(Vec::new());
        b.append(NOW, Some(b"k"), Some(b"v"), &[]);
        b.append(NOW, None, Some(b"v"), &[]);
        let mut req = batch(1, b"ok");
        req.extend(b.finish());
        assert!(is_invalid_record(p.append_batches(&mut req)));
        assert_eq!(p.log_end_offset().unwrap(), 0);
        // Keyed records, tombstones included, are fine.
        p.append(&[
            Record::new(Some(b"k"), Some(b"v")),
            Record::new(Some(b"k"), None),
        ])
        .unwrap();
        assert_eq!(p.log_end_offset().unwrap(), 2);
    }
    // A delete-only topic takes records without keys.
    log.create_topic("d", 1, TopicConfig::default()).unwrap();
    let p = log.partition("d", 0).unwrap();
    p.append(&[Record::new(None, Some(b"v"))]).unwrap();
    assert_eq!(
        p.read(0, 1 << 20).unwrap().records().next().unwrap().key,
        None
    );
}

#[test]
fn reads_out_of_range_report_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic(
        "t",
        1,
        TopicConfig::default()
            .segment_bytes(300)
            .retention_ms(60_000),
    )
    .unwrap();
    let p = log.partition("t", 0).unwrap();
    for i in 0..10 {
        p.append(&[Record::new(Some(b"k"), Some(format!("{i:040}").as_bytes()))])
            .unwrap();
    }
    let check = |requested: i64, start: i64, end: i64| match p.read(requested, 1 << 20) {
        Err(Error::OffsetOutOfRange {
            topic,
            partition,
            requested: r,
            log_start,
            log_end,
        }) => {
            assert_eq!(
                (topic.as_str(), partition, r, log_start, log_end),
                ("t", 0, requested, start, end)
            );
        }
        other => panic!("read({requested}): {other:?}"),
    };
    check(11, 0, 10);
    check(i64::MAX, 0, 10);
    check(-1, 0, 10);
    check(i64::MIN, 0, 10);
    // The log end itself is a valid position with nothing to read yet.
    let at_end = p.read(10, 1 << 20).unwrap();
    assert_eq!(at_end.records().count(), 0);
    assert_eq!((at_end.next_offset(), at_end.log_end_offset), (10, 10));

    // After retention moved the log start, reads below it are out of range too.
    assert!(p.segment_count().unwrap() > 2);
    clock.advance_ms(60_001);
    p.append(&[Record::new(Some(b"k"), Some(b"new"))]).unwrap();
    assert!(log.enforce_retention().unwrap() > 0);
    let start = p.log_start_offset().unwrap();
    assert!(start > 0);
    check(0, start, 11);
    check(start - 1, start, 11);
    check(12, start, 11);
    assert_eq!(
        p.read(start, 1 << 20)
            .unwrap()
            .records()
            .next()
            .unwrap()
            .offset,
        start
    );
}

#[test]
fn log_append_time_stamps_the_log_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic(
        "lat",
        1,
        TopicConfig::default().message_timestamp_type(TimestampType::LogAppendTime),
    )
    .unwrap();
    let p = log.partition("lat", 0).unwrap();

    let info = p
        .append(&[
            Record::new(Some(b"a"), Some(b"1")).timestamp(5),
            Record::new(Some(b"b"), Some(b"2")).timestamp(NOW + 1_000_000),
            Record::new(Some(b"c"), Some(b"3")),
        ])
        .unwrap();
    assert_eq!(info.log_append_time, Some(NOW));
    clock.advance_ms(250);
    let info2 = p.append_batches(&mut batch(2, b"x")).unwrap();
    assert_eq!(info2.log_append_time, Some(NOW + 250));
    assert_eq!(info2.base_offset, 3);

    let stamps = |p: &Partition| -> Vec<(i64, i64)> {
        p.read(0, 1 << 20)
            .unwrap()
            .records()
            .map(|r| (r.offset, r.timestamp))
            .collect()
    };
    let expected = vec![(0, NOW), (1, NOW), (2, NOW), (3, NOW + 250), (4, NOW + 250)];
    assert_eq!(stamps(&p), expected);
    let data = p.read(0, 1 << 20).unwrap();
    for b in data.batches() {
        assert_eq!(b.timestamp_type(), TimestampType::LogAppendTime);
        b.validate().unwrap();
    }
    // Time lookups use the append time too.
    assert_eq!(
        p.offset_for_timestamp(NOW + 1).unwrap(),
        Some((3, NOW + 250))
    );
    assert_eq!(p.offset_for_timestamp(0).unwrap(), Some((0, NOW)));
    assert_eq!(p.offset_for_timestamp(NOW + 251).unwrap(), None);
    // And survive a reopen with full recovery.
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    let log = open(dir.path(), &clock);
    let p = log.partition("lat", 0).unwrap();
    assert_eq!(stamps(&p), expected);
    assert_eq!(
        p.offset_for_timestamp(NOW + 1).unwrap(),
        Some((3, NOW + 250))
    );
}

#[test]
fn create_time_keeps_producer_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("ct", 1, TopicConfig::default()).unwrap();
    let p = log.partition("ct", 0).unwrap();
    let info = p
        .append(&[
            Record::new(Some(b"a"), Some(b"1")).timestamp(5),
            Record::new(Some(b"b"), Some(b"2")).timestamp(NOW + 1_000_000),
            Record::new(Some(b"c"), Some(b"3")), // no timestamp: the log's clock
        ])
        .unwrap();
    assert_eq!(info.log_append_time, None);
    clock.advance_ms(10);
    let mut b = batch(2, b"x"); // timestamps NOW, NOW + 1
    let info = p.append_batches(&mut b).unwrap();
    assert_eq!(info.log_append_time, None);
    let got: Vec<(i64, i64)> = p
        .read(0, 1 << 20)
        .unwrap()
        .records()
        .map(|r| (r.offset, r.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 5),
            (1, NOW + 1_000_000),
            (2, NOW),
            (3, NOW),
            (4, NOW + 1)
        ]
    );
    let data = p.read(0, 1 << 20).unwrap();
    let batches: Vec<RecordBatch<'_>> = data.batches().collect();
    assert_eq!(batches[0].timestamp_type(), TimestampType::CreateTime);
    assert_eq!(batches[0].max_timestamp(), NOW + 1_000_000);
}
