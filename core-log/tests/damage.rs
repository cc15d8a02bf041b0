//! A damaged log directory never costs good data: the cases an outside tester found, each
//! with the behaviour a user relies on (the randomized version is `tests/tests/corruption.rs`).
//!
//! - Damage in a middle segment (garbage, a cut, a flipped base offset, a missing segment)
//!   costs only the offsets it covers, after a clean close and after a crash; the rest is
//!   served, the lost range is reported by reads (`CorruptRecord`), `lost_ranges` and
//!   `verify`, and a consumer surfaces it instead of stalling.
//! - Partition directories no topic names are never deleted when they hold records.
//! - Internal topic names, absurd partition counts: refused before the disk is touched.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use core_log::serialization::BytesSerde;
use core_log::{
    Admin, AutoOffsetReset, CleanupPolicy, Consumer, ConsumerConfig, Error, Finding, Log,
    MAX_PARTITIONS_PER_TOPIC, ManualClock, OffsetAndMetadata, Partition, Record, TopicConfig,
    TopicPartition, verify,
};

mod common;
use common::NOW;

const TOPIC: &str = "likes";

fn open_at(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .background_maintenance(false)
        .open()
        .unwrap()
}

fn open(dir: &Path) -> Log {
    open_at(dir, &ManualClock::new(NOW))
}

/// Records per segment: 5 batches of 2.
const PER_SEGMENT: i64 = 10;

/// A log of `segments` segments in topic `likes` (one partition), each of 5 batches of 2
/// records: a segment rolls by `segment.ms` on the manual clock. Closed cleanly, or left as
/// a crash after a flush leaves it (`crash`). Returns the log end offset.
fn build(dir: &Path, segments: i64, crash: bool) -> i64 {
    let clock = ManualClock::new(NOW);
    let log = open_at(dir, &clock);
    // Index entries every few batches: a clean open then reads a trusted segment only after
    // its last entry, and damage before it is found by the read that reaches it.
    let mut config = TopicConfig::default().segment_ms(1_000);
    config.index_interval_bytes = 64;
    log.create_topic(TOPIC, 1, config).unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    for s in 0..segments {
        for b in 0..5 {
            let o = s * PER_SEGMENT + b * 2;
            let (a, z) = (value(o), value(o + 1));
            p.append(&[Record::new(None, Some(&a)), Record::new(None, Some(&z))])
                .unwrap();
        }
        clock.advance_ms(1_001);
    }
    assert_eq!(p.segment_count().unwrap() as i64, segments);
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();
    if crash {
        // As a crash after a flush leaves it: the checkpointed recovery point is the log end,
        // and the next open recovers from it.
        fs::remove_file(dir.join("clean-shutdown")).unwrap();
    }
    end
}

fn value(offset: i64) -> Vec<u8> {
    format!("like-{offset}").into_bytes()
}

fn pdir(dir: &Path) -> PathBuf {
    dir.join(format!("{TOPIC}-0"))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(pdir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// What reading a partition found: the values served, by offset, and the lost ranges.
type ReadAll = (Vec<(i64, Vec<u8>)>, Vec<std::ops::Range<i64>>);

/// Reads every offset: the values served, and the lost ranges reads reported.
fn read_all(p: &Partition) -> ReadAll {
    let (mut served, mut lost) = (Vec::new(), Vec::new());
    let mut offset = p.log_start_offset().unwrap();
    while offset < p.log_end_offset().unwrap() {
        match p.read(offset, 100) {
            Ok(fetch) => {
                for r in fetch.records() {
                    served.push((r.offset, r.value.unwrap().to_vec()));
                }
                offset = fetch.next_offset();
            }
            Err(Error::CorruptRecord {
                first_offset,
                resume_offset,
                ..
            }) => {
                lost.push(first_offset..resume_offset);
                offset = resume_offset;
            }
            Err(e) => panic!("read({offset}): {e}"),
        }
    }
    (served, lost)
}

fn expected_except(end: i64, lost: std::ops::Range<i64>) -> Vec<(i64, Vec<u8>)> {
    (0..end)
        .filter(|o| !lost.contains(o))
        .map(|o| (o, value(o)))
        .collect()
}

/// The tester's case: 100 garbage bytes after segment 2 of 12 used to leave offsets [0, 2).
/// Garbage between batches costs no offset at all: everything is served, after a clean close
/// and after a crash, and `verify` reports the bytes.
#[test]
fn garbage_after_a_middle_segment_costs_nothing() {
    for crash in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let end = build(dir.path(), 12, crash);
        let seg = &segment_files(dir.path())[2];
        let mut bytes = fs::read(seg).unwrap();
        bytes.extend((0..100u8).map(|i| i.wrapping_mul(37)));
        fs::write(seg, bytes).unwrap();

        let report = verify(dir.path()).unwrap();
        assert!(
            matches!(report.findings.as_slice(), [Finding::Garbage { file, .. }] if file == seg),
            "crash: {crash}: {:?}",
            report.findings
        );
        let log = open(dir.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), end, "crash: {crash}");
        assert_eq!(
            read_all(&p),
            (expected_except(end, 0..0), vec![]),
            "crash: {crash}"
        );
        assert!(p.lost_ranges().unwrap().is_empty());
        log.close().unwrap();
    }
}

/// A middle segment cut short (inside a batch, or at a batch boundary) costs the offsets that
/// were in the cut bytes; reads of them fail with `CorruptRecord` naming the range, and the
/// segments after it are all served.
#[test]
fn a_middle_segment_cut_short_costs_only_its_tail() {
    for (crash, cut_inside_batch) in [(false, true), (false, false), (true, true), (true, false)] {
        let what = format!("crash: {crash}, inside a batch: {cut_inside_batch}");
        let dir = tempfile::tempdir().unwrap();
        let end = build(dir.path(), 12, crash);
        let seg = &segment_files(dir.path())[4];
        let bytes = fs::read(seg).unwrap();
        // The first three batches (6 records) stay whole.
        let mut keep = 0;
        for _ in 0..3 {
            keep +=
                12 + i32::from_be_bytes(bytes[keep + 8..keep + 12].try_into().unwrap()) as usize;
        }
        let cut = if cut_inside_batch { keep + 30 } else { keep };
        fs::write(seg, &bytes[..cut]).unwrap();

        let lost = 4 * PER_SEGMENT + 6..5 * PER_SEGMENT;
        assert_eq!(
            verify(dir.path()).unwrap().lost_offsets(),
            vec![(TOPIC.to_string(), 0, lost.clone())],
            "{what}"
        );
        let log = open(dir.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), end, "{what}");
        assert_eq!(
            read_all(&p),
            (expected_except(end, lost.clone()), vec![lost.clone()]),
            "{what}"
        );
        let err = p.read(lost.start + 1, 100).unwrap_err();
        assert!(
            matches!(err, Error::CorruptRecord { offset, first_offset, resume_offset, .. }
                if offset == lost.start + 1 && first_offset == lost.start && resume_offset == lost.end),
            "{what}: {err:?}"
        );
        // Appends go on at the log end.
        assert_eq!(
            p.append(&[Record::new(None, Some(b"next"))])
                .unwrap()
                .base_offset,
            end
        );
        log.close().unwrap();
    }
}

/// A flipped bit in a batch's base offset (outside the CRC) used to move records: offsets 3..5
/// served as 11..13, later records dropped, the log end moved. Now the batch is damage: its
/// offsets are lost and reported, nothing moves, and a consumer polling from 0 gets the error
/// at its position instead of stalling; seeking past the range goes on.
#[test]
fn a_flipped_base_offset_moves_nothing_and_the_consumer_surfaces_it() {
    for (crash, bit) in [(false, 3), (false, 62), (true, 3), (true, 40)] {
        let what = format!("crash: {crash}, bit {bit}");
        let dir = tempfile::tempdir().unwrap();
        let end = build(dir.path(), 4, crash);
        // The second batch of the second segment: offsets 12 and 13.
        let seg = &segment_files(dir.path())[1];
        let mut bytes = fs::read(seg).unwrap();
        let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        bytes[first_len + 7 - bit / 8] ^= 1 << (bit % 8);
        fs::write(seg, bytes).unwrap();

        let log = open(dir.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), end, "{what}");
        let lost = 12..14;
        assert_eq!(
            read_all(&p),
            (expected_except(end, lost.clone()), vec![lost.clone()]),
            "{what}"
        );

        let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer: Consumer<Vec<u8>, Vec<u8>> =
            Consumer::new(&log, config, BytesSerde, BytesSerde).unwrap();
        let tp = TopicPartition::new(TOPIC, 0);
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        let mut seen = Vec::new();
        let err = loop {
            match consumer.poll(Duration::from_millis(100)) {
                Ok(records) => {
                    assert!(!records.is_empty(), "{what}: a poll stalled at {seen:?}");
                    seen.extend(records.iter().map(|r| r.offset));
                }
                Err(e) => break e,
            }
        };
        assert_eq!(seen, (0..12).collect::<Vec<_>>(), "{what}");
        let Error::CorruptRecord {
            offset,
            resume_offset,
            ..
        } = err
        else {
            panic!("{what}: {err:?}");
        };
        assert_eq!((offset, resume_offset), (12, 14), "{what}");
        // Polling again reports it again; the position stays.
        assert!(matches!(
            consumer.poll(Duration::ZERO),
            Err(Error::CorruptRecord { .. })
        ));
        assert_eq!(consumer.position(&tp).unwrap(), 12);
        consumer.seek(&tp, resume_offset).unwrap();
        let mut rest = Vec::new();
        while rest.last().is_none_or(|&o| o + 1 < end) {
            rest.extend(
                consumer
                    .poll(Duration::from_millis(100))
                    .unwrap()
                    .iter()
                    .map(|r| r.offset),
            );
        }
        assert_eq!(rest, (14..end).collect::<Vec<_>>(), "{what}");
        drop(consumer);
        log.close().unwrap();
    }
}

/// A missing middle segment is a gap: reads into it fail instead of skipping, and the
/// segments around it are served. A missing first segment is told from retention by the
/// checkpointed log start.
#[test]
fn missing_segments_are_reported_gaps_not_skips() {
    for (crash, which) in [(false, 5), (true, 5), (false, 0), (true, 0), (false, 11)] {
        let what = format!("crash: {crash}, segment {which}");
        let dir = tempfile::tempdir().unwrap();
        let end = build(dir.path(), 12, crash);
        let base = which as i64 * PER_SEGMENT;
        for ext in ["log", "index", "timeindex", "txnindex"] {
            let _ = fs::remove_file(pdir(dir.path()).join(format!("{base:020}.{ext}")));
        }
        let lost = base..base + PER_SEGMENT;
        assert_eq!(
            verify(dir.path()).unwrap().lost_offsets(),
            vec![(TOPIC.to_string(), 0, lost.clone())],
            "{what}"
        );
        let log = open(dir.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_start_offset().unwrap(), 0, "{what}");
        assert_eq!(p.log_end_offset().unwrap(), end, "{what}");
        assert_eq!(
            read_all(&p),
            (expected_except(end, lost.clone()), vec![lost]),
            "{what}"
        );
        log.close().unwrap();
    }
}

/// A partition directory that no topic names (a topic the manifest lost, a directory copied
/// in, a deletion a crash interrupted) is left in place by the open when it holds records, and
/// reported by `verify`; creating the topic again moves it aside (`.<id>-stray`), never
/// deletes it. An empty one, left by an interrupted creation, is removed.
#[test]
fn partition_directories_of_no_topic_are_never_deleted_when_they_hold_records() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    build(other.path(), 2, false);
    // A copy of `likes-0` with records, and an empty `empty-0`, in a log without them.
    let log = open(dir.path());
    log.create_topic("kept", 1, TopicConfig::default()).unwrap();
    log.close().unwrap();
    let stray = pdir(dir.path());
    fs::create_dir(&stray).unwrap();
    for e in fs::read_dir(pdir(other.path())).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), stray.join(e.file_name())).unwrap();
    }
    let stray_files = fs::read_dir(&stray).unwrap().count();
    let empty = dir.path().join("empty-0");
    fs::create_dir(&empty).unwrap();
    fs::write(empty.join("00000000000000000000.log"), b"").unwrap();

    assert!(verify(dir.path()).unwrap().findings.iter().any(
        |f| matches!(f, Finding::StrayDirectory { path, holds_records: true } if path == &stray)
    ));
    let log = open(dir.path());
    assert_eq!(log.topics(), vec!["kept".to_string()]);
    assert_eq!(
        fs::read_dir(&stray).unwrap().count(),
        stray_files,
        "left in place"
    );
    assert!(!empty.exists(), "the empty leftover is removed");

    log.create_topic(TOPIC, 1, TopicConfig::default()).unwrap();
    assert_eq!(
        log.partition(TOPIC, 0).unwrap().log_end_offset().unwrap(),
        0
    );
    let aside: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-stray"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        fs::read_dir(&aside[0]).unwrap().count(),
        stray_files,
        "moved aside whole"
    );
    log.close().unwrap();
    let log = open(dir.path());
    assert!(aside[0].exists(), "an open leaves the stray copy alone");
    log.close().unwrap();
}

/// Kafka refuses `__consumer_offsets` and `__transaction_state` from users: the log creates
/// them. A partition count above the cap is refused before any directory is made.
#[test]
fn internal_names_and_absurd_partition_counts_are_refused_before_the_disk_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for name in ["__consumer_offsets", "__transaction_state"] {
        let err = log
            .create_topic(name, 1, TopicConfig::default())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { .. }), "{err:?}");
    }
    let err = log
        .create_topic("huge", 1_000_000, TopicConfig::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::TooManyPartitions { requested: 1_000_000, max, .. } if max == MAX_PARTITIONS_PER_TOPIC),
        "{err:?}"
    );
    log.create_topic("small", 2, TopicConfig::default())
        .unwrap();
    let err = log
        .create_partitions("small", MAX_PARTITIONS_PER_TOPIC + 1)
        .unwrap_err();
    assert!(matches!(err, Error::TooManyPartitions { .. }), "{err:?}");
    let dirs: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains('.') && n.contains('-') && !n.ends_with("checkpoint"))
        .collect();
    let mut dirs = dirs;
    dirs.sort();
    assert_eq!(dirs, ["small-0", "small-1"]);
    assert_eq!(log.partition_count("small").unwrap(), 2);
    log.close().unwrap();
}

/// Once the coordinators made them, the internal topics cannot be grown (their partition
/// count places every group and transactional id) or deleted.
#[test]
fn internal_topics_cannot_be_grown_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let mut c: Consumer<Vec<u8>, Vec<u8>> = Consumer::new(
        &log,
        ConsumerConfig::default().group_id("g"),
        BytesSerde,
        BytesSerde,
    )
    .unwrap();
    let tp = TopicPartition::new("t", 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.commit_sync_offsets(vec![(tp, OffsetAndMetadata::new(0))])
        .unwrap();
    assert!(log.partition_count("__consumer_offsets").is_ok());
    for name in ["__consumer_offsets", "__transaction_state"] {
        let err = log.create_partitions(name, 100).unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { .. }), "{err:?}");
        let err = log.delete_topic(name).unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { .. }), "{err:?}");
    }
    log.close().unwrap();
}

/// A deletion renames the partition directories (Kafka's `-delete` suffix) before it rewrites
/// the manifest and removes them. What a crash leaves is finished by the next open: renamed
/// directories are removed, and a topic the manifest still names with a partition renamed so
/// is deleted whole; nothing else is touched.
#[test]
fn directories_renamed_for_deletion_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("gone", 2, TopicConfig::default()).unwrap();
    log.create_topic("kept", 1, TopicConfig::default()).unwrap();
    log.partition("kept", 0)
        .unwrap()
        .append(&[Record::new(None, Some(b"v"))])
        .unwrap();
    log.delete_topic("gone").unwrap();
    assert!(!dir.path().join("gone-0").exists() && !dir.path().join("gone-1").exists());
    log.close().unwrap();
    // What a crash between the rename and the removal leaves.
    let renamed = dir.path().join("gone-0.18c2a5f0-delete");
    fs::create_dir(&renamed).unwrap();
    fs::write(renamed.join("00000000000000000000.log"), b"whatever").unwrap();
    let log = open(dir.path());
    assert!(!renamed.exists());
    assert_eq!(log.topics(), vec!["kept".to_string()]);
    assert_eq!(
        log.partition("kept", 0).unwrap().log_end_offset().unwrap(),
        1
    );
    // A crash after the first rename, before the manifest changed.
    log.create_topic("half", 2, TopicConfig::default()).unwrap();
    log.partition("half", 1)
        .unwrap()
        .append(&[Record::new(None, Some(b"v"))])
        .unwrap();
    log.close().unwrap();
    fs::rename(
        dir.path().join("half-0"),
        dir.path().join("half-0.1f-delete"),
    )
    .unwrap();
    assert!(
        verify(dir.path())
            .unwrap()
            .findings
            .contains(&Finding::InterruptedDeletion {
                topic: "half".to_string()
            })
    );
    let log = open(dir.path());
    assert_eq!(log.topics(), vec!["kept".to_string()]);
    assert!(!dir.path().join("half-1").exists() && !dir.path().join("half-0.1f-delete").exists());
    log.close().unwrap();
    let log = open(dir.path());
    assert_eq!(
        log.topics(),
        vec!["kept".to_string()],
        "the manifest was rewritten"
    );
    log.close().unwrap();
}

/// A copy of a log directory taken while its log is open: what a SIGKILL at that moment
/// leaves on disk (the page cache included, as after a process crash).
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else if e.file_name() != ".lock" {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let to = tempfile::tempdir().unwrap();
    copy(dir, to.path());
    to
}

/// Flips bit `bit` of the byte at `at` in `path`.
fn flip(path: &Path, at: usize, bit: u32) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// The batches of a segment file: `(position, base offset, size)`.
fn batches_of(path: &Path) -> Vec<(usize, i64, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let size = 12 + i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push((at, base, size));
        at += size;
    }
    out
}

/// A topic deleted and created again under the same name starts from nothing: the deleted
/// topic's checkpointed log start and recovery point never apply to it, also after a crash
/// right after the new topic's first appends.
#[test]
fn a_recreated_topic_never_takes_the_deleted_topics_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic(TOPIC, 1, TopicConfig::default()).unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    for i in 0..30 {
        p.append(&[Record::new(None, Some(&value(i)))]).unwrap();
    }
    log.flush().unwrap(); // checkpoints: recovery point 30
    log.delete_topic(TOPIC).unwrap();
    log.create_topic(TOPIC, 1, TopicConfig::default()).unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    for i in 0..5 {
        p.append(&[Record::new(None, Some(&value(i)))]).unwrap();
    }
    let crashed = crash_copy(dir.path());
    log.close().unwrap();

    let log = open(crashed.path());
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.log_start_offset().unwrap(), 0);
    assert_eq!(p.log_end_offset().unwrap(), 5);
    assert_eq!(read_all(&p), (expected_except(5, 0..0), vec![]));
    log.close().unwrap();
}

/// Damage in `__consumer_offsets` costs the commits in it, not the group coordinator: the
/// commits after it are loaded, and groups keep working.
#[test]
fn damage_in_the_offsets_topic_costs_only_the_commits_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path())
        .clock(ManualClock::new(NOW))
        .background_maintenance(false)
        .offsets_topic_num_partitions(1)
        .open()
        .unwrap();
    log.create_topic(TOPIC, 1, TopicConfig::default()).unwrap();
    log.partition(TOPIC, 0)
        .unwrap()
        .append(&[Record::new(None, Some(b"v"))])
        .unwrap();
    let admin = Admin::new(&log);
    let tp = TopicPartition::new(TOPIC, 0);
    for offset in [0, 1] {
        admin
            .alter_consumer_group_offsets("g", &[(tp.clone(), OffsetAndMetadata::new(offset))])
            .unwrap();
    }
    drop(admin);
    log.close().unwrap();
    let seg = dir
        .path()
        .join("__consumer_offsets-0/00000000000000000000.log");
    let batches = batches_of(&seg);
    assert!(batches.len() >= 2, "{batches:?}");
    // The first commit's batch: a flipped bit in its records.
    let (at, _, size) = batches[0];
    flip(&seg, at + size - 3, 2);

    let log = open(dir.path());
    let admin = Admin::new(&log);
    let offsets = admin.list_consumer_group_offsets("g").unwrap();
    assert_eq!(offsets.get(&tp).map(|o| o.offset), Some(1));
    admin
        .alter_consumer_group_offsets("g", &[(tp.clone(), OffsetAndMetadata::new(0))])
        .unwrap();
    assert_eq!(
        admin
            .list_consumer_group_offsets("g")
            .unwrap()
            .get(&tp)
            .map(|o| o.offset),
        Some(0)
    );
    drop(admin);
    log.close().unwrap();
}

/// Compaction checks every batch it reads: a base offset flipped high in a trusted segment
/// (outside the CRC, and not read at a clean open) would make an old value look like its
/// key's latest and remove the real latest. Instead the pass finds the damage, records it,
/// and cleans nothing it would mislead; the latest value of every key stays readable.
#[test]
fn compaction_finds_damage_instead_of_trusting_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_at(dir.path(), &clock);
    let mut config = TopicConfig::default()
        .cleanup_policy(CleanupPolicy::COMPACT)
        .segment_ms(1_000);
    config.index_interval_bytes = 64;
    config.min_compaction_lag_ms = 0;
    log.create_topic(TOPIC, 1, config).unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    // 4 segments of 10 records: keys k0..k9, each written once per segment.
    for round in 0..4 {
        for k in 0..10 {
            let v = format!("k{k}-round{round}");
            p.append(&[Record::new(
                Some(format!("k{k}").as_bytes()),
                Some(v.as_bytes()),
            )])
            .unwrap();
        }
        clock.advance_ms(1_001);
    }
    log.close().unwrap();
    // The third batch (k2, round 0) of the first segment: past the segment's first index entry
    // positions, its base offset's bit 40 flipped.
    let seg = dir
        .path()
        .join(format!("{TOPIC}-0/00000000000000000000.log"));
    let (at, base, _) = batches_of(&seg)[2];
    assert_eq!(base, 2);
    flip(&seg, at + 2, 0);

    let log = open_at(dir.path(), &clock);
    let p = log.partition(TOPIC, 0).unwrap();
    log.compact(true).unwrap();
    assert_eq!(
        p.lost_ranges()
            .unwrap()
            .iter()
            .map(|l| l.first_offset..l.end_offset)
            .collect::<Vec<_>>(),
        vec![2..3]
    );
    // A second pass cleans only before the damaged segment: nothing, here.
    log.compact(true).unwrap();
    let (served, lost) = read_all(&p);
    assert_eq!(lost, vec![2..3]);
    let latest: std::collections::BTreeMap<String, String> = served
        .iter()
        .map(|(_, v)| {
            let v = String::from_utf8(v.clone()).unwrap();
            (v.split('-').next().unwrap().to_string(), v)
        })
        .collect();
    for k in 0..10 {
        assert_eq!(latest[&format!("k{k}")], format!("k{k}-round3"), "k{k}");
    }
    log.close().unwrap();
}

/// An open replays producer state over segments it did not read whole (a trusted segment
/// whose aborted-transaction index must be rebuilt, here because it is gone): damage met on
/// the way is recorded, not a failed open.
#[test]
fn replaying_producer_state_over_damage_records_it_and_opens() {
    let dir = tempfile::tempdir().unwrap();
    let end = build(dir.path(), 6, false);
    let seg = &segment_files(dir.path())[2];
    fs::remove_file(seg.with_extension("txnindex")).unwrap();
    // The second batch's length: framing damage, before the segment's last index entry.
    let (at, base, _) = batches_of(seg)[1];
    assert_eq!(base, 2 * PER_SEGMENT + 2);
    flip(seg, at + 9, 6);

    let log = open(dir.path());
    let p = log.partition(TOPIC, 0).unwrap();
    let lost = base..base + 2;
    assert_eq!(
        read_all(&p),
        (expected_except(end, lost.clone()), vec![lost])
    );
    log.close().unwrap();
}
