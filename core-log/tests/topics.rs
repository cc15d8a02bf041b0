//! Topic administration as a Kafka user relies on it: metadata that survives a restart,
//! partition counts that only grow, deletion that really removes a topic, the errors of
//! duplicate creation, a locked directory and a closed log, and partitions that never see each
//! other's data.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use core_log::{CleanupPolicy, Error, Log, Record, TimestampType, TopicConfig};

mod common;
use common::open;

/// `(offset, key, value)` of records.
type Contents = Vec<(i64, Vec<u8>, Vec<u8>)>;

/// `(offset, key, value)` of every record of a partition, from its log start.
fn contents(log: &Log, topic: &str, partition: u32) -> Contents {
    let p = log.partition(topic, partition).unwrap();
    let mut out = Vec::new();
    let mut offset = p.log_start_offset().unwrap();
    loop {
        let data = p.read(offset, 1 << 20).unwrap();
        let before = out.len();
        for r in data.records() {
            out.push((
                r.offset,
                r.key.unwrap_or_default().to_vec(),
                r.value.unwrap_or_default().to_vec(),
            ));
        }
        offset = data.next_offset();
        if out.len() == before {
            return out;
        }
    }
}

fn put(log: &Log, topic: &str, partition: u32, key: &str, value: &str) -> i64 {
    log.partition(topic, partition)
        .unwrap()
        .append(&[Record::new(Some(key.as_bytes()), Some(value.as_bytes()))])
        .unwrap()
        .base_offset
}

fn non_default_config() -> TopicConfig {
    TopicConfig::default()
        .set("retention.ms", "123456")
        .unwrap()
        .set("retention.bytes", "987654321")
        .unwrap()
        .set("segment.bytes", "65536")
        .unwrap()
        .set("segment.ms", "3600000")
        .unwrap()
        .set("cleanup.policy", "compact,delete")
        .unwrap()
        .set("max.message.bytes", "20000")
        .unwrap()
        .set("min.compaction.lag.ms", "5000")
        .unwrap()
        .set("delete.retention.ms", "777")
        .unwrap()
        .set("min.cleanable.dirty.ratio", "0.25")
        .unwrap()
        .set("message.timestamp.type", "LogAppendTime")
        .unwrap()
        .set("index.interval.bytes", "512")
        .unwrap()
        .set("flush.messages", "10")
        .unwrap()
        .set("flush.ms", "2500")
        .unwrap()
}

#[test]
fn topic_metadata_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let custom = non_default_config();
    assert_ne!(custom, TopicConfig::default());
    assert_eq!(custom.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
    assert_eq!(custom.message_timestamp_type, TimestampType::LogAppendTime);
    let altered = TopicConfig::default()
        .retention_ms(-1)
        .segment_bytes(1 << 20);
    {
        let log = open(dir.path());
        log.create_topic("orders", 3, custom.clone()).unwrap();
        log.create_topic("audit.v2_x-y", 1, TopicConfig::default())
            .unwrap();
        log.create_topic("changed", 2, TopicConfig::default())
            .unwrap();
        log.alter_topic_config("changed", altered.clone()).unwrap();
        assert_eq!(log.topic_config("changed").unwrap(), altered);
        log.close().unwrap();
    }
    for crash in [false, true] {
        if crash {
            std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
            std::fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
        }
        let log = open(dir.path());
        assert_eq!(log.topics(), vec!["audit.v2_x-y", "changed", "orders"]);
        assert_eq!(log.partition_count("orders").unwrap(), 3);
        assert_eq!(log.partition_count("audit.v2_x-y").unwrap(), 1);
        assert_eq!(log.partition_count("changed").unwrap(), 2);
        assert_eq!(log.topic_config("orders").unwrap(), custom);
        assert_eq!(
            log.topic_config("audit.v2_x-y").unwrap(),
            TopicConfig::default()
        );
        assert_eq!(log.topic_config("changed").unwrap(), altered);
        log.close().unwrap();
    }
}

#[test]
fn create_partitions_grows_persists_and_never_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("t", 2, TopicConfig::default()).unwrap();
        put(&log, "t", 0, "a", "0");
        put(&log, "t", 1, "b", "1");
        assert!(matches!(
            log.partition("t", 2),
            Err(Error::UnknownTopicOrPartition { partition: 2, .. })
        ));
        log.create_partitions("t", 5).unwrap();
        assert_eq!(log.partition_count("t").unwrap(), 5);
        for p in 2..5 {
            let part = log.partition("t", p).unwrap();
            assert_eq!(part.log_end_offset().unwrap(), 0);
            assert_eq!(part.log_start_offset().unwrap(), 0);
        }
        assert_eq!(put(&log, "t", 4, "c", "4"), 0);
        // Existing partitions keep their data.
        assert_eq!(
            contents(&log, "t", 0),
            vec![(0, b"a".to_vec(), b"0".to_vec())]
        );

        for requested in [5, 3, 0] {
            match log.create_partitions("t", requested) {
                Err(Error::InvalidPartitions {
                    topic,
                    current,
                    requested: r,
                }) => {
                    assert_eq!((topic.as_str(), current, r), ("t", 5, requested));
                }
                other => panic!("create_partitions({requested}): {other:?}"),
            }
        }
        assert_eq!(log.partition_count("t").unwrap(), 5);
        assert!(matches!(
            log.create_partitions("missing", 3),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.partition_count("t").unwrap(), 5);
    assert_eq!(
        contents(&log, "t", 0),
        vec![(0, b"a".to_vec(), b"0".to_vec())]
    );
    assert_eq!(
        contents(&log, "t", 1),
        vec![(0, b"b".to_vec(), b"1".to_vec())]
    );
    assert_eq!(
        contents(&log, "t", 4),
        vec![(0, b"c".to_vec(), b"4".to_vec())]
    );
    assert!(contents(&log, "t", 3).is_empty());
    assert!(matches!(
        log.create_partitions("t", 4),
        Err(Error::InvalidPartitions {
            current: 5,
            requested: 4,
            ..
        })
    ));
}

#[test]
fn zero_partitions_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(matches!(
        log.create_topic("t", 0, TopicConfig::default()),
        Err(Error::InvalidPartitions { requested: 0, .. })
    ));
    assert!(log.topics().is_empty());
    assert!(!dir.path().join("t-0").exists());
}

#[test]
fn delete_topic_removes_data_and_fails_old_handles() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("gone", 2, TopicConfig::default().segment_bytes(200))
        .unwrap();
    log.create_topic("kept", 1, TopicConfig::default()).unwrap();
    for i in 0..20 {
        put(&log, "gone", i % 2, &format!("k{i}"), &"x".repeat(50));
    }
    put(&log, "kept", 0, "k", "v");
    let handle = log.partition("gone", 1).unwrap();
    assert!(handle.segment_count().unwrap() > 1);
    assert!(dir.path().join("gone-0").is_dir());
    assert!(dir.path().join("gone-1").is_dir());

    log.delete_topic("gone").unwrap();

    assert!(!dir.path().join("gone-0").exists());
    assert!(!dir.path().join("gone-1").exists());
    assert_eq!(log.topics(), vec!["kept"]);
    let unknown = |r: Result<_, Error>| matches!(r, Err(Error::UnknownTopicOrPartition { .. }));
    assert!(unknown(
        handle
            .append(&[Record::new(Some(b"k"), Some(b"v"))])
            .map(|_| ())
    ));
    assert!(unknown(handle.read(0, 1 << 20).map(|_| ())));
    assert!(unknown(handle.log_end_offset().map(|_| ())));
    assert!(unknown(handle.offset_for_timestamp(0).map(|_| ())));
    assert!(unknown(log.partition("gone", 0).map(|_| ())));
    assert!(unknown(log.partition_count("gone").map(|_| ())));
    assert!(unknown(log.topic_config("gone").map(|_| ())));
    assert!(unknown(log.delete_topic("gone")));
    // Maintenance over the remaining topics is unaffected.
    log.enforce_retention().unwrap();
    log.compact(true).unwrap();
    log.flush().unwrap();

    // Re-created under the same name, the topic starts empty at offset 0.
    log.create_topic("gone", 1, TopicConfig::default()).unwrap();
    let fresh = log.partition("gone", 0).unwrap();
    assert_eq!(fresh.log_start_offset().unwrap(), 0);
    assert_eq!(fresh.log_end_offset().unwrap(), 0);
    assert_eq!(fresh.read(0, 1 << 20).unwrap().records().count(), 0);
    assert_eq!(log.partition_count("gone").unwrap(), 1);
    assert_eq!(put(&log, "gone", 0, "new", "1"), 0);
    // The old handle still refers to the deleted topic.
    assert!(unknown(handle.log_end_offset().map(|_| ())));
    assert!(!dir.path().join("gone-1").exists());
    assert_eq!(
        contents(&log, "kept", 0),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );
    log.close().unwrap();

    let log = open(dir.path());
    assert_eq!(log.topics(), vec!["gone", "kept"]);
    assert_eq!(log.partition_count("gone").unwrap(), 1);
    assert_eq!(
        contents(&log, "gone", 0),
        vec![(0, b"new".to_vec(), b"1".to_vec())]
    );
    assert_eq!(
        contents(&log, "kept", 0),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );
}

#[test]
fn deleted_topic_stays_deleted_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("a", 2, TopicConfig::default()).unwrap();
        // A topic whose name looks like a partition directory of "a".
        log.create_topic("a-1", 1, TopicConfig::default()).unwrap();
        put(&log, "a", 1, "k", "a1");
        put(&log, "a-1", 0, "k", "a-1/0");
        log.delete_topic("a").unwrap();
        assert_eq!(
            contents(&log, "a-1", 0),
            vec![(0, b"k".to_vec(), b"a-1/0".to_vec())]
        );
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.topics(), vec!["a-1"]);
    assert!(matches!(
        log.partition("a", 0),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert_eq!(
        contents(&log, "a-1", 0),
        vec![(0, b"k".to_vec(), b"a-1/0".to_vec())]
    );
    assert!(!dir.path().join("a-0").exists());
}

#[test]
fn duplicate_create_is_topic_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 2, TopicConfig::default().retention_ms(1000))
        .unwrap();
    put(&log, "t", 0, "k", "v");
    match log.create_topic("t", 5, TopicConfig::default()) {
        Err(Error::TopicAlreadyExists { topic }) => assert_eq!(topic, "t"),
        other => panic!("{other:?}"),
    }
    // The existing topic is untouched: partitions, config and data.
    assert_eq!(log.partition_count("t").unwrap(), 2);
    assert_eq!(log.topic_config("t").unwrap().retention_ms, 1000);
    assert_eq!(
        contents(&log, "t", 0),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );
    log.close().unwrap();
    let log = open(dir.path());
    assert!(matches!(
        log.create_topic("t", 1, TopicConfig::default()),
        Err(Error::TopicAlreadyExists { .. })
    ));
}

#[test]
fn second_log_on_the_same_dir_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    match Log::open(dir.path()) {
        Err(e @ Error::LogDirLocked { .. }) => assert!(e.is_retriable()),
        other => panic!("{other:?}"),
    }
    // The first log is unaffected.
    put(&log, "t", 0, "k", "v");
    log.close().unwrap();
    // Once closed, the directory can be opened again.
    let again = open(dir.path());
    assert_eq!(
        contents(&again, "t", 0),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );
}

#[test]
fn operations_after_close_fail_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    p.append(&[Record::new(Some(b"k"), Some(b"v"))]).unwrap();
    let clone = log.clone();
    log.close().unwrap();

    let closed = |r: Result<(), Error>| matches!(r, Err(Error::Closed));
    assert!(closed(clone.create_topic("u", 1, TopicConfig::default())));
    assert!(closed(clone.partition("t", 0).map(|_| ())));
    assert!(closed(clone.create_partitions("t", 2)));
    assert!(closed(clone.delete_topic("t")));
    assert!(closed(
        clone.alter_topic_config("t", TopicConfig::default())
    ));
    assert!(closed(clone.topic_config("t").map(|_| ())));
    assert!(closed(clone.enforce_retention().map(|_| ())));
    assert!(closed(clone.compact(true).map(|_| ())));
    assert!(closed(clone.flush()));
    assert!(closed(
        p.append(&[Record::new(Some(b"k"), Some(b"late"))])
            .map(|_| ())
    ));
    assert!(closed(p.read(0, 1 << 20).map(|_| ())));
    assert!(closed(p.log_end_offset().map(|_| ())));
    assert!(closed(p.flush()));
    // Closing again is harmless.
    clone.close().unwrap();

    // Nothing was written after the close; the clean close needs no recovery.
    assert!(dir.path().join("clean-shutdown").exists());
    let log = open(dir.path());
    assert_eq!(
        contents(&log, "t", 0),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );
    assert_eq!(log.topics(), vec!["t"]);
}

#[test]
fn topics_and_partitions_keep_their_data_apart() {
    let dir = tempfile::tempdir().unwrap();
    let topics = ["alpha", "beta", "gamma"];
    let mut expected: Vec<Vec<Contents>> = vec![vec![Vec::new(); 3]; 3];
    {
        let log = open(dir.path());
        for t in topics {
            log.create_topic(t, 3, TopicConfig::default().segment_bytes(300))
                .unwrap();
        }
        // Interleave appends over every partition, each with its own number of records.
        for round in 0..30 {
            for (ti, t) in topics.iter().enumerate() {
                for p in 0..3u32 {
                    if (round + ti + p as usize).is_multiple_of(3) {
                        continue;
                    }
                    let key = format!("{t}/{p}/{round}");
                    let value = format!("value of {key}");
                    let offset = put(&log, t, p, &key, &value);
                    let exp = &mut expected[ti][p as usize];
                    assert_eq!(offset, exp.len() as i64, "offsets are per partition");
                    exp.push((offset, key.into_bytes(), value.into_bytes()));
                }
            }
        }
        for (ti, t) in topics.iter().enumerate() {
            for p in 0..3u32 {
                assert_eq!(contents(&log, t, p), expected[ti][p as usize]);
                assert_eq!(
                    log.partition(t, p).unwrap().log_end_offset().unwrap(),
                    expected[ti][p as usize].len() as i64
                );
            }
        }
        log.close().unwrap();
    }
    let log = open(dir.path());
    for (ti, t) in topics.iter().enumerate() {
        for p in 0..3u32 {
            assert_eq!(contents(&log, t, p), expected[ti][p as usize]);
        }
    }
}
