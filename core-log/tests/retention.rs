//! Retention as a Kafka user relies on it: whole segments are deleted oldest first once their
//! newest record is older than `retention.ms`, or while the partition is larger than
//! `retention.bytes` by at least a segment; the log start offset moves up (and stays there
//! after a restart), reads below it are out of range, appends carry on at the log end;
//! `retention.ms=-1` keeps everything; compact-only topics are never retention-deleted; and
//! `segment.ms` rolls segments by the clock, across restarts too.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use core_log::{CleanupPolicy, Clock, Error, ManualClock, Partition, Record, TopicConfig};

mod common;
use common::{NOW, open_at as open, simulate_crash};

/// `(base offset, file size)` of every segment file of a partition directory, in order.
fn segments(pdir: &Path) -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = std::fs::read_dir(pdir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".log")?;
            Some((stem.parse().unwrap(), e.metadata().unwrap().len()))
        })
        .collect();
    out.sort_unstable();
    out
}

fn offsets(p: &Partition) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = p.log_start_offset().unwrap();
    let end = p.log_end_offset().unwrap();
    while at < end {
        let data = p.read(at, 1 << 16).unwrap();
        out.extend(data.records().map(|r| r.offset));
        assert!(data.next_offset() > at);
        at = data.next_offset();
    }
    out
}

fn out_of_range(p: &Partition, offset: i64) -> (i64, i64) {
    match p.read(offset, 1 << 20) {
        Err(Error::OffsetOutOfRange {
            log_start, log_end, ..
        }) => (log_start, log_end),
        other => panic!("read({offset}): {other:?}"),
    }
}

fn append_at(p: &Partition, ts: i64, i: usize) -> i64 {
    p.append(&[Record::new(Some(b"k"), Some(format!("{i:060}").as_bytes())).timestamp(ts)])
        .unwrap()
        .base_offset
}

#[test]
fn retention_by_time_deletes_expired_segments_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir = dir.path().join("t-0");
    let retention = 100_000;
    let log = open(dir.path(), &clock);
    log.create_topic(
        "t",
        1,
        TopicConfig::default()
            .segment_bytes(600)
            .retention_ms(retention),
    )
    .unwrap();
    let p = log.partition("t", 0).unwrap();
    // Timestamps rise overall, with one late young record in an early segment and an old one
    // in a late segment: a segment's newest record decides.
    let mut ts = Vec::new();
    for i in 0..60 {
        let t = match i {
            7 => NOW + 50_000,
            40 => NOW - 1_000_000,
            _ => NOW + 1_000 * i as i64,
        };
        assert_eq!(append_at(&p, t, i), i as i64);
        ts.push(t);
    }
    let before = segments(&pdir);
    assert!(before.len() > 10);

    // The rule, applied to the segments found on disk: delete sealed segments from the oldest
    // while their newest record is older than retention.ms.
    let expected_start = |now: i64, segs: &[(i64, u64)]| -> i64 {
        for (i, &(base, _)) in segs.iter().enumerate() {
            let Some(&(next, _)) = segs.get(i + 1) else {
                return base;
            };
            let newest = ts[base as usize..next as usize].iter().max().unwrap();
            if now - newest <= retention {
                return base;
            }
        }
        unreachable!()
    };

    // Nothing has expired yet.
    clock.set_ms(NOW + 1_000 + retention);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    assert_eq!(p.log_start_offset().unwrap(), 0);

    // The young record at offset 7 holds back its segment and every later one.
    clock.set_ms(NOW + 30_000 + retention);
    let start = expected_start(NOW + 30_000 + retention, &before);
    let seg_of_7 = before.iter().rev().find(|s| s.0 <= 7).unwrap().0;
    assert_eq!(start, seg_of_7);
    let deleted = log.enforce_retention().unwrap();
    assert_eq!(deleted, before.iter().filter(|s| s.0 < start).count());
    assert_eq!(p.log_start_offset().unwrap(), start);
    assert_eq!(segments(&pdir), before[deleted..].to_vec());
    assert_eq!(offsets(&p), (start..60).collect::<Vec<_>>());
    assert_eq!(out_of_range(&p, start - 1), (start, 60));
    assert_eq!(out_of_range(&p, 0), (start, 60));

    // Later, more segments go, up to the first whose newest record is young enough; the old
    // record at offset 40 neither holds its segment back nor makes a later one go early.
    let now = NOW + 55_000 + retention;
    clock.set_ms(now);
    let start = expected_start(now, &before);
    assert!(start > 40 && start <= 55);
    log.enforce_retention().unwrap();
    assert_eq!(p.log_start_offset().unwrap(), start);
    assert_eq!(offsets(&p), (start..60).collect::<Vec<_>>());
    let info = p.append(&[Record::new(Some(b"k"), Some(b"new"))]).unwrap();
    assert_eq!((info.base_offset, info.log_start_offset), (60, start));
    ts.push(now);

    // Once everything has expired, the active segment is rolled and deleted too: the log is
    // empty, starting at its end, and appends carry on from there.
    clock.set_ms(now + retention + 1);
    assert!(log.enforce_retention().unwrap() > 0);
    assert_eq!(p.log_start_offset().unwrap(), 61);
    assert_eq!(p.log_end_offset().unwrap(), 61);
    assert_eq!(p.segment_count().unwrap(), 1);
    assert_eq!(p.size_bytes().unwrap(), 0);
    assert_eq!(out_of_range(&p, 60), (61, 61));
    assert_eq!(p.read(61, 1 << 20).unwrap().records().count(), 0);
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None);
    let info = p
        .append(&[Record::new(Some(b"k"), Some(b"fresh"))])
        .unwrap();
    assert_eq!(info.base_offset, 61);
    assert_eq!(offsets(&p), vec![61]);
    assert_eq!(
        log.enforce_retention().unwrap(),
        0,
        "the fresh record is kept"
    );
}

#[test]
fn retention_by_size_follows_kafkas_rule() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir = dir.path().join("t-0");
    let log = open(dir.path(), &clock);
    let retention_bytes = 2_000i64;
    log.create_topic(
        "t",
        1,
        TopicConfig::default()
            .segment_bytes(500)
            .retention_bytes(retention_bytes),
    )
    .unwrap();
    let p = log.partition("t", 0).unwrap();
    for i in 0..50 {
        append_at(&p, NOW, i);
    }
    let before = segments(&pdir);
    let total: u64 = before.iter().map(|s| s.1).sum();
    assert_eq!(p.size_bytes().unwrap(), total);
    // Kafka: delete the oldest sealed segments while size - retention.bytes >= segment size.
    let mut excess = total as i64 - retention_bytes;
    let mut keep_from = 0;
    while keep_from + 1 < before.len() && excess >= before[keep_from].1 as i64 {
        excess -= before[keep_from].1 as i64;
        keep_from += 1;
    }
    assert!(keep_from > 0);
    assert_eq!(log.enforce_retention().unwrap(), keep_from);
    assert_eq!(segments(&pdir), before[keep_from..].to_vec());
    let size = p.size_bytes().unwrap();
    assert!(size as i64 >= retention_bytes - before[keep_from].1 as i64);
    assert!(size as i64 - retention_bytes < before[keep_from].1 as i64);
    assert_eq!(p.log_start_offset().unwrap(), before[keep_from].0);
    // Time does not matter to size retention, and a second pass deletes nothing more.
    assert_eq!(log.enforce_retention().unwrap(), 0);
    // Nothing is ever deleted below retention.bytes.
    log.alter_topic_config(
        "t",
        TopicConfig::default()
            .segment_bytes(500)
            .retention_bytes(1 << 30),
    )
    .unwrap();
    for i in 0..50 {
        append_at(&p, NOW, i);
    }
    assert_eq!(log.enforce_retention().unwrap(), 0);
}

#[test]
fn infinite_retention_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic(
        "forever",
        1,
        TopicConfig::default().segment_bytes(400).retention_ms(-1),
    )
    .unwrap();
    // A topic that would lose everything, as a control.
    log.create_topic(
        "short",
        1,
        TopicConfig::default().segment_bytes(400).retention_ms(1),
    )
    .unwrap();
    for topic in ["forever", "short"] {
        let p = log.partition(topic, 0).unwrap();
        for i in 0..30 {
            append_at(&p, NOW - 10 * 365 * 86_400_000, i);
        }
    }
    clock.advance_ms(100 * 365 * 86_400_000);
    assert!(log.enforce_retention().unwrap() > 0);
    let forever = log.partition("forever", 0).unwrap();
    assert_eq!(forever.log_start_offset().unwrap(), 0);
    assert_eq!(offsets(&forever), (0..30).collect::<Vec<_>>());
    let short = log.partition("short", 0).unwrap();
    assert_eq!(short.log_start_offset().unwrap(), 30);
}

#[test]
fn compact_only_topics_are_not_retention_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let small = TopicConfig::default()
        .segment_bytes(400)
        .retention_ms(1000)
        .retention_bytes(100);
    log.create_topic("c", 1, small.clone().cleanup_policy(CleanupPolicy::COMPACT))
        .unwrap();
    log.create_topic(
        "cd",
        1,
        small.clone().cleanup_policy(CleanupPolicy::COMPACT_DELETE),
    )
    .unwrap();
    for topic in ["c", "cd"] {
        let p = log.partition(topic, 0).unwrap();
        for i in 0..30 {
            p.append(&[Record::new(
                Some(format!("k{i}").as_bytes()),
                Some(&[b'x'; 60]),
            )])
            .unwrap();
        }
    }
    clock.advance_ms(1_000_000);
    log.enforce_retention().unwrap();
    let c = log.partition("c", 0).unwrap();
    assert_eq!(c.log_start_offset().unwrap(), 0);
    assert_eq!(offsets(&c), (0..30).collect::<Vec<_>>());
    // compact,delete topics are subject to retention too.
    let cd = log.partition("cd", 0).unwrap();
    assert_eq!(cd.log_start_offset().unwrap(), 30);
}

#[test]
fn segment_ms_rolls_by_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir = dir.path().join("t-0");
    let segment_ms = 60_000;
    let retention = 600_000;
    let first_of_second;
    {
        let log = open(dir.path(), &clock);
        log.create_topic(
            "t",
            1,
            TopicConfig::default()
                .segment_ms(segment_ms)
                .retention_ms(retention),
        )
        .unwrap();
        let p = log.partition("t", 0).unwrap();
        // An idle partition does not roll: there is nothing to roll.
        clock.advance_ms(10 * segment_ms);
        p.append(&[Record::new(Some(b"k"), Some(b"0"))]).unwrap();
        assert_eq!(p.segment_count().unwrap(), 1);
        clock.advance_ms(segment_ms / 2);
        p.append(&[Record::new(Some(b"k"), Some(b"1"))]).unwrap();
        assert_eq!(p.segment_count().unwrap(), 1);
        clock.advance_ms(segment_ms / 2 + 1);
        p.append(&[Record::new(Some(b"k"), Some(b"2"))]).unwrap();
        first_of_second = clock.now_ms();
        assert_eq!(
            segments(&pdir).iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![0, 2]
        );
        // The new segment's clock starts at its first record.
        clock.advance_ms(segment_ms - 1);
        p.append(&[Record::new(Some(b"k"), Some(b"3"))]).unwrap();
        assert_eq!(p.segment_count().unwrap(), 2);
        log.close().unwrap();
    }
    // A restart does not restart the segment's clock: the roll is due segment.ms after the
    // segment's first record, however often the application restarts.
    for _ in 0..3 {
        clock.advance_ms(segment_ms / 4);
        let log = open(dir.path(), &clock);
        log.close().unwrap();
    }
    let log = open(dir.path(), &clock);
    let p = log.partition("t", 0).unwrap();
    p.append(&[Record::new(Some(b"k"), Some(b"4"))]).unwrap();
    assert_eq!(
        segments(&pdir).iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    // Rolled segments let retention delete old data while the partition keeps receiving.
    // Segments [0, 2) and [2, 4) have expired, [4, 5) has not.
    clock.set_ms(first_of_second + segment_ms + retention + 20_000);
    p.append(&[Record::new(Some(b"k"), Some(b"5"))]).unwrap();
    assert_eq!(log.enforce_retention().unwrap(), 2);
    assert_eq!(p.log_start_offset().unwrap(), 4);
    assert_eq!(offsets(&p), vec![4, 5]);
}

#[test]
fn log_start_offset_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let retention = 10_000;
    let start;
    {
        let log = open(dir.path(), &clock);
        log.create_topic(
            "t",
            2,
            TopicConfig::default()
                .segment_bytes(400)
                .retention_ms(retention),
        )
        .unwrap();
        let p = log.partition("t", 0).unwrap();
        for i in 0..20 {
            append_at(&p, NOW, i);
        }
        for i in 20..40 {
            append_at(&p, NOW + 2 * retention, i);
        }
        clock.set_ms(NOW + 2 * retention);
        assert!(log.enforce_retention().unwrap() > 0);
        start = p.log_start_offset().unwrap();
        assert!(start > 0 && start <= 20);
        // Partition 1, emptied completely, starts at its end.
        let q = log.partition("t", 1).unwrap();
        for i in 0..20 {
            append_at(&q, NOW, i);
        }
        log.enforce_retention().unwrap();
        assert_eq!(q.log_start_offset().unwrap(), 20);
        log.close().unwrap();
    }
    for crash in [false, true] {
        if crash {
            simulate_crash(dir.path());
        }
        let log = open(dir.path(), &clock);
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.log_start_offset().unwrap(), start, "crash: {crash}");
        assert_eq!(p.log_end_offset().unwrap(), 40);
        assert_eq!(offsets(&p), (start..40).collect::<Vec<_>>());
        assert_eq!(out_of_range(&p, start - 1), (start, 40));
        let q = log.partition("t", 1).unwrap();
        assert_eq!(q.log_start_offset().unwrap(), 20, "crash: {crash}");
        assert_eq!(q.log_end_offset().unwrap(), 20, "crash: {crash}");
        assert_eq!(out_of_range(&q, 0), (20, 20));
        log.close().unwrap();
    }
    // Appends after the reopen continue at the log end.
    let log = open(dir.path(), &clock);
    let q = log.partition("t", 1).unwrap();
    assert_eq!(append_at(&q, NOW + 3 * retention, 0), 20);
    assert_eq!(offsets(&q), vec![20]);
}
