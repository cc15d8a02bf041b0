//! Exactly-once recovery without wiping state: an application holding 1,000,000 keys of
//! RocksDB state is killed with SIGKILL mid-stream; the restarted instance restores only the
//! changelog tail after its stores' last committed checkpoint (counted), not the 1,000,000
//! records of the whole changelog, and finishes with every key counted exactly twice (each key
//! comes twice, in two rounds; the kill lands in the second: lost state would count 1).
#![allow(
    clippy::unwrap_used,
    reason = "helpers of this test unwrap as the test does: a failure is a test failure"
)]

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{DIR_ENV, Kill, ack, open_retrying, read_committed, run_child, start_acks};
use core_log::codec::BatchBuilder;
use core_log::{Admin, Log, TopicConfig};
use streams::serde::{IntegerSerde, Nullable, StringSerde};
use streams::{
    Consumed, Materialized, Produced, State, Streams, StreamsBuilder, StreamsConfig, Topology,
};

const KEYS: u64 = 1_000_000;
const PARTITIONS: u32 = 4;
const APP: &str = "restore-tail";
/// The child is killed once the group has committed this many input records (in round 2).
const KILL_AFTER: i64 = 1_400_000;

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("keys", Consumed::with(StringSerde, StringSerde))
        .group_by_key()
        .count(Materialized::named("seen"))
        .to_stream()
        .to("seen", Produced::with(StringSerde, Nullable(IntegerSerde)));
    b.build().unwrap()
}

fn config(dir: &Path) -> StreamsConfig {
    StreamsConfig::new(APP)
        .exactly_once()
        .num_stream_threads(2)
        .state_dir(dir.join("state"))
}

fn committed(log: &Log, topic: &str) -> i64 {
    let offsets = Admin::new(log)
        .list_consumer_group_offsets(APP)
        .unwrap_or_default();
    offsets
        .iter()
        .filter(|(tp, _)| tp.topic == topic)
        .map(|(_, o)| o.offset)
        .sum()
}

fn end(log: &Log, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| log.partition(topic, p).unwrap().high_watermark().unwrap())
        .sum()
}

/// The child runs the application and acknowledges `far` once `KILL_AFTER` input records
/// are committed; the parent kills it there.
#[test]
fn crash_child_restore_tail() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let dir = PathBuf::from(dir);
    let log = open_retrying(&dir.join("log"), |b| b);
    let app = Streams::new(topology(), &log, config(&dir)).unwrap();
    app.start().unwrap();
    loop {
        if committed(&log, "keys") >= KILL_AFTER {
            ack(format_args!("far"));
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_restart_after_sigkill_restores_only_the_changelog_tail() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    {
        let log = open_retrying(&root.path().join("log"), |b| b);
        log.create_topic("keys", PARTITIONS, TopicConfig::default())
            .unwrap();
        log.create_topic("seen", PARTITIONS, TopicConfig::default())
            .unwrap();
        let mut batches: Vec<BatchBuilder> = (0..PARTITIONS)
            .map(|_| BatchBuilder::new(Vec::new()))
            .collect();
        for n in 0..2 * KEYS {
            let i = n % KEYS;
            let key = format!("key-{i:07}");
            let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS) as usize;
            batches[p].append(0, Some(key.as_bytes()), Some(b"x"), &[]);
            if n % 1_000 == 999 {
                for (p, b) in batches.iter_mut().enumerate() {
                    let mut bytes = std::mem::replace(b, BatchBuilder::new(Vec::new())).finish();
                    if bytes.len() > 61 {
                        log.partition("keys", p as u32)
                            .unwrap()
                            .append_batches(&mut bytes)
                            .unwrap();
                    }
                }
            }
        }
        log.close().unwrap();
    }
    let child = run_child(
        "crash_child_restore_tail",
        root.path(),
        &[],
        Kill::AtAck {
            ack: "far",
            within: Duration::from_secs(120),
        },
    );
    assert!(
        child.acks.iter().any(|a| a == "far"),
        "the child did not get far: {:?}",
        child.acks
    );

    let log = open_retrying(&root.path().join("log"), |b| {
        b.background_maintenance(false)
    });
    let changelog = format!("{APP}-seen-changelog");
    let changelog_records = end(&log, &changelog);
    assert!(
        changelog_records >= KEYS as i64,
        "the state holds every key: {changelog_records}"
    );
    let app = Streams::new(topology(), &log, config(root.path())).unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&log, "keys") < end(&log, "keys") {
        assert!(
            Instant::now() < deadline,
            "the restarted application did not catch up"
        );
        thread::sleep(Duration::from_millis(20));
    }
    app.close().unwrap();
    let restored = app.metrics().restored_records;
    println!(
        "changelog {changelog_records} records at the crash, restored {restored}, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Only the tail after the last applied checkpoint: at most the transactions of the last
    // commit intervals before the kill, never the million records behind it.
    assert!(
        restored < 100_000,
        "restored {restored} of {changelog_records} changelog records"
    );

    // Every key counted exactly twice, as read_committed readers see the output.
    let mut keys = 0u64;
    let mut latest = std::collections::HashMap::new();
    for p in 0..PARTITIONS {
        for (k, v) in read_committed(&log, "seen", p) {
            latest.insert(
                k.unwrap(),
                i64::from_be_bytes(v.unwrap().try_into().unwrap()),
            );
        }
    }
    for (k, n) in &latest {
        assert_eq!(*n, 2, "{} counted {n} times", String::from_utf8_lossy(k));
        keys += 1;
    }
    assert_eq!(keys, KEYS);
    log.close().unwrap();
}
