//! Log compaction as a Kafka user relies on it: the latest value of every key survives, at its
//! original offset; tombstones live for `delete.retention.ms` after compaction first sees them;
//! `min.compaction.lag.ms` protects young records; the active segment, the log end offset and
//! headers are untouched; reads at removed offsets return the next record; and the result (or a
//! compaction a crash interrupted) survives a reopen.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use core_log::{CleanupPolicy, Header, Log, ManualClock, Partition, Record, TopicConfig};

mod common;
use common::{NOW, Rng, open_at as open, simulate_crash};

fn compacted(segment_bytes: u32) -> TopicConfig {
    TopicConfig::default()
        .cleanup_policy(CleanupPolicy::COMPACT)
        .segment_bytes(segment_bytes)
        .set("index.interval.bytes", "100")
        .unwrap()
}

/// A record as read back: offset, key, value (None = tombstone), headers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every record of the partition from `from` on, following `next_offset` across holes.
fn read_from(p: &Partition, from: i64) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut offset = from;
    let end = p.log_end_offset().unwrap();
    while offset < end {
        let data = p.read(offset, 700).unwrap();
        for r in data.records() {
            out.push(Stored {
                offset: r.offset,
                key: r.key.unwrap().to_vec(),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .map(|h| {
                        let h = h.unwrap();
                        (h.key.to_string(), h.value.map(<[u8]>::to_vec))
                    })
                    .collect(),
            });
        }
        let next = data.next_offset();
        assert!(next > offset, "reads make progress at {offset}");
        offset = next;
    }
    out
}

fn read_all(p: &Partition) -> Vec<Stored> {
    read_from(p, p.log_start_offset().unwrap())
}

/// Base offsets of the partition's segment files, in order.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".log")?;
            (stem.len() == 20).then(|| stem.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn active_base(dir: &Path) -> i64 {
    *segment_bases(dir).last().unwrap()
}

/// Kafka's compaction over `[0, active_base)`: a record survives iff no later record below the
/// active segment has its key. Records in the active segment all survive.
fn model(all: &[Stored], active_base: i64) -> Vec<Stored> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for r in all.iter().filter(|r| r.offset < active_base) {
        latest.insert(&r.key, r.offset);
    }
    all.iter()
        .filter(|r| r.offset >= active_base || latest[r.key.as_slice()] == r.offset)
        .cloned()
        .collect()
}

/// Checks that a read at each offset in `[from, log end)` starts at the first kept record at or
/// after it, as Kafka serves offsets that compaction removed.
fn check_reads_across_holes(p: &Partition, kept: &[Stored], from: i64) {
    let end = p.log_end_offset().unwrap();
    for offset in from..end {
        let expected = kept.iter().find(|r| r.offset >= offset).map(|r| r.offset);
        // As a consumer does: a batch whose kept records all lie before the fetch offset
        // yields nothing, and the fetch continues at the batch's next offset.
        let mut at = offset;
        let got = loop {
            let data = p.read(at, 1).unwrap();
            if let Some(r) = data.records().next() {
                break Some(r.offset);
            }
            if data.next_offset() == at {
                break None;
            }
            assert!(data.next_offset() > at);
            at = data.next_offset();
        };
        assert_eq!(got, expected, "read({offset})");
    }
}

#[test]
fn compaction_keeps_exactly_the_latest_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir: PathBuf = dir.path().join("c-0");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Everything ever appended, as the model sees it.
    let mut appended: Vec<Stored> = Vec::new();
    // What the log holds after the last compaction (the model of it).
    let mut expected: Vec<Stored>;
    {
        let log = open(dir.path(), &clock);
        log.create_topic("c", 1, compacted(1024)).unwrap();
        let p = log.partition("c", 0).unwrap();
        expected = Vec::new();
        for round in 0..4 {
            for _ in 0..500 {
                let n = 1 + rng.below(3) as usize;
                let mut owned = Vec::new();
                for i in 0..n {
                    let key = format!("key-{}", rng.below(80));
                    let offset = p.log_end_offset().unwrap() + i as i64;
                    let value = (rng.below(10) != 0).then(|| format!("v{offset}"));
                    let header = format!("h{offset}");
                    owned.push((key, value, header));
                }
                let headers: Vec<[Header<'_>; 2]> = owned
                    .iter()
                    .map(|(_, _, h)| {
                        [
                            Header {
                                key: "trace",
                                value: Some(h.as_bytes()),
                            },
                            Header {
                                key: "null",
                                value: None,
                            },
                        ]
                    })
                    .collect();
                let records: Vec<Record<'_>> = owned
                    .iter()
                    .zip(&headers)
                    .map(|((k, v, _), h)| {
                        Record::new(Some(k.as_bytes()), v.as_ref().map(String::as_bytes)).headers(h)
                    })
                    .collect();
                let info = p.append(&records).unwrap();
                for (i, (k, v, h)) in owned.iter().enumerate() {
                    let s = Stored {
                        offset: info.base_offset + i as i64,
                        key: k.clone().into_bytes(),
                        value: v.clone().map(String::into_bytes),
                        headers: vec![
                            ("trace".into(), Some(h.clone().into_bytes())),
                            ("null".into(), None),
                        ],
                    };
                    appended.push(s.clone());
                    expected.push(s);
                }
            }
            assert!(
                p.segment_count().unwrap() > 20,
                "round {round}: many segments"
            );
            let end_before = p.log_end_offset().unwrap();
            let size_before = p.size_bytes().unwrap();
            let active = active_base(&pdir);
            let stats = log.compact(true).unwrap();

            expected = model(&expected, active);
            assert_eq!(
                expected,
                model(&appended, active),
                "compaction is idempotent"
            );
            let got = read_all(&p);
            assert_eq!(got.len(), expected.len(), "round {round}");
            assert_eq!(got, expected, "round {round}");
            assert_eq!(p.log_end_offset().unwrap(), end_before);
            assert!(stats.records_removed > 0);
            assert!(p.size_bytes().unwrap() < size_before);
            assert_eq!(
                active_base(&pdir),
                active,
                "the active segment is not compacted"
            );
            check_reads_across_holes(&p, &expected, p.log_start_offset().unwrap());
            // Appends continue at the log end; the next round compacts them.
        }
        let end = p.log_end_offset().unwrap();
        let info = p
            .append(&[Record::new(Some(b"key-1"), Some(b"after"))])
            .unwrap();
        assert_eq!(info.base_offset, end);
        expected.push(Stored {
            offset: end,
            key: b"key-1".to_vec(),
            value: Some(b"after".to_vec()),
            headers: Vec::new(),
        });
        assert_eq!(read_all(&p), expected);
        log.close().unwrap();
    }
    for crash in [false, true] {
        if crash {
            simulate_crash(dir.path());
        }
        let log = open(dir.path(), &clock);
        let p = log.partition("c", 0).unwrap();
        assert_eq!(read_all(&p), expected, "reopen (crash: {crash})");
        check_reads_across_holes(&p, &expected, p.log_start_offset().unwrap());
        // Nothing left to compact: a second pass changes nothing.
        log.compact(true).unwrap();
        assert_eq!(read_all(&p), expected);
        log.close().unwrap();
    }
}

#[test]
fn compaction_never_moves_the_log_start_offset() {
    // Kafka keeps a compacted topic's log start offset: a consumer positioned at an offset
    // whose records were all superseded still reads on from the next kept record instead of
    // getting OffsetOutOfRange (and, with auto.offset.reset=latest, skipping the topic).
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("c", 1, compacted(300)).unwrap();
    let p = log.partition("c", 0).unwrap();
    // The first segments hold only values that later records replace.
    for i in 0..20 {
        p.append(&[Record::new(
            Some(b"same"),
            Some(format!("old-{i:030}").as_bytes()),
        )])
        .unwrap();
    }
    for i in 0..10 {
        p.append(&[Record::new(Some(format!("k{i}").as_bytes()), Some(b"v"))])
            .unwrap();
    }
    p.append(&[Record::new(Some(b"same"), Some(b"newest"))])
        .unwrap();
    assert!(p.segment_count().unwrap() > 3);
    let all = read_all(&p);
    log.compact(true).unwrap();
    let kept = model(&all, active_base(&dir.path().join("c-0")));
    assert_eq!(read_all(&p), kept);
    assert!(kept[0].offset > 0);
    assert_eq!(p.log_start_offset().unwrap(), 0);
    check_reads_across_holes(&p, &kept, 0);
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    assert_eq!(p.log_start_offset().unwrap(), 0);
    check_reads_across_holes(&p, &kept, 0);
}

/// Appends a filler record after `segment.ms`, so that everything before becomes a sealed
/// (cleanable) segment.
fn roll(p: &Partition, clock: &ManualClock, segment_ms: i64) {
    let before = p.segment_count().unwrap();
    clock.advance_ms(segment_ms);
    p.append(&[Record::new(Some(b"filler"), Some(b"x"))])
        .unwrap();
    assert_eq!(p.segment_count().unwrap(), before + 1, "rolled");
}

fn values_of(p: &Partition, key: &[u8]) -> Vec<Option<Vec<u8>>> {
    read_all(p)
        .into_iter()
        .filter(|r| r.key == key)
        .map(|r| r.value)
        .collect()
}

#[test]
fn tombstones_live_for_delete_retention_ms_after_first_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let segment_ms = 1000;
    let retention = 10_000;
    log.create_topic(
        "c",
        1,
        compacted(1 << 20)
            .segment_ms(segment_ms)
            .delete_retention_ms(retention),
    )
    .unwrap();
    let p = log.partition("c", 0).unwrap();
    // The tombstone's own timestamp is long past: the horizon counts from compaction, not it.
    p.append(&[
        Record::new(Some(b"gone"), Some(b"v1")).timestamp(NOW - 100 * retention),
        Record::new(Some(b"kept"), Some(b"k1")),
    ])
    .unwrap();
    p.append(&[Record::new(Some(b"gone"), None).timestamp(NOW - 100 * retention)])
        .unwrap();
    // Before any compaction the tombstone is a plain record.
    assert_eq!(values_of(&p, b"gone"), vec![Some(b"v1".to_vec()), None]);
    roll(&p, &clock, segment_ms);
    let first_compaction = NOW + segment_ms;
    log.compact(true).unwrap();
    assert_eq!(
        values_of(&p, b"gone"),
        vec![None],
        "value removed, tombstone kept"
    );
    assert_eq!(values_of(&p, b"kept"), vec![Some(b"k1".to_vec())]);

    // Later compactions before the horizon keep it (and do not restart its clock).
    clock.set_ms(first_compaction + retention - 2 * segment_ms);
    roll(&p, &clock, segment_ms);
    assert!(clock_now(&clock) < first_compaction + retention);
    log.compact(true).unwrap();
    assert_eq!(values_of(&p, b"gone"), vec![None]);
    // Still there after a reopen.
    log.close().unwrap();
    simulate_crash(dir.path());
    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    assert_eq!(values_of(&p, b"gone"), vec![None]);

    // The first compaction at or after the horizon removes it.
    clock.set_ms(first_compaction + retention - segment_ms);
    roll(&p, &clock, segment_ms);
    assert!(clock_now(&clock) >= first_compaction + retention);
    let end = p.log_end_offset().unwrap();
    log.compact(true).unwrap();
    assert_eq!(values_of(&p, b"gone"), Vec::<Option<Vec<u8>>>::new());
    assert_eq!(values_of(&p, b"kept"), vec![Some(b"k1".to_vec())]);
    assert_eq!(p.log_end_offset().unwrap(), end);
    // A new value for the key is an ordinary record again.
    p.append(&[Record::new(Some(b"gone"), Some(b"back"))])
        .unwrap();
    assert_eq!(values_of(&p, b"gone"), vec![Some(b"back".to_vec())]);
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    assert_eq!(values_of(&p, b"gone"), vec![Some(b"back".to_vec())]);
}

fn clock_now(clock: &ManualClock) -> i64 {
    use core_log::Clock;
    clock.now_ms()
}

#[test]
fn min_compaction_lag_protects_young_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    let segment_ms = 1000;
    let lag = 60_000;
    log.create_topic(
        "c",
        1,
        compacted(1 << 20)
            .segment_ms(segment_ms)
            .min_compaction_lag_ms(lag),
    )
    .unwrap();
    let p = log.partition("c", 0).unwrap();
    p.append(&[Record::new(Some(b"k"), Some(b"1"))]).unwrap();
    p.append(&[Record::new(Some(b"k"), Some(b"2"))]).unwrap();
    roll(&p, &clock, segment_ms);
    p.append(&[Record::new(Some(b"k"), Some(b"3"))]).unwrap();
    roll(&p, &clock, segment_ms);
    let all = vec![
        Some(b"1".to_vec()),
        Some(b"2".to_vec()),
        Some(b"3".to_vec()),
    ];

    // Younger than the lag: nothing is compacted, even forced.
    let stats = log.compact(true).unwrap();
    assert_eq!(stats.records_removed, 0);
    assert_eq!(values_of(&p, b"k"), all);

    // Once the first segment is old enough it is compacted, but only against what is itself
    // old enough: the young "3" does not yet remove "2".
    clock.set_ms(NOW + lag + 1);
    log.compact(true).unwrap();
    assert_eq!(values_of(&p, b"k"), all[1..].to_vec());

    clock.set_ms(NOW + lag + segment_ms + 1);
    log.compact(true).unwrap();
    assert_eq!(values_of(&p, b"k"), all[2..].to_vec());
}

#[test]
fn headers_and_batch_metadata_survive_partial_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(dir.path(), &clock);
    log.create_topic("c", 1, compacted(1 << 20).segment_ms(1000))
        .unwrap();
    let p = log.partition("c", 0).unwrap();
    let h1 = [
        Header {
            key: "content-type",
            value: Some(b"json"),
        },
        Header {
            key: "empty",
            value: Some(b""),
        },
        Header {
            key: "none",
            value: None,
        },
    ];
    let h2 = [Header {
        key: "ü-unicode",
        value: Some(&[0, 1, 2, 255]),
    }];
    p.append(&[
        Record::new(Some(b"a"), Some(b"a1")).timestamp(NOW - 5),
        Record::new(Some(b"b"), Some(b"b1"))
            .headers(&h1)
            .timestamp(NOW - 4),
        Record::new(Some(b"a"), Some(b"a2"))
            .headers(&h2)
            .timestamp(NOW - 3),
        Record::new(Some(b"c"), Some(b"c1")).timestamp(NOW - 2),
        Record::new(Some(b"c"), Some(b"c2")).timestamp(NOW - 1),
    ])
    .unwrap();
    roll(&p, &clock, 1000);
    log.compact(true).unwrap();
    let got = read_all(&p);
    let summary: Vec<(i64, Vec<u8>)> = got.iter().map(|r| (r.offset, r.key.clone())).collect();
    assert_eq!(
        summary,
        vec![
            (1, b"b".to_vec()),
            (2, b"a".to_vec()),
            (4, b"c".to_vec()),
            (5, b"filler".to_vec())
        ]
    );
    assert_eq!(
        got[0].headers,
        vec![
            ("content-type".to_string(), Some(b"json".to_vec())),
            ("empty".to_string(), Some(Vec::new())),
            ("none".to_string(), None),
        ]
    );
    assert_eq!(
        got[1].headers,
        vec![("ü-unicode".to_string(), Some(vec![0, 1, 2, 255]))]
    );
    assert!(got[2].headers.is_empty());
    // Timestamps are kept, and the rewritten batch keeps its offset range and is valid.
    let data = p.read(0, 1 << 20).unwrap();
    let ts: Vec<i64> = data.records().map(|r| r.timestamp).collect();
    assert_eq!(&ts[..3], &[NOW - 4, NOW - 3, NOW - 1]);
    let first = data.batches().next().unwrap();
    first.validate().unwrap();
    assert_eq!((first.base_offset(), first.last_offset()), (0, 4));
    assert_eq!(p.offset_for_timestamp(NOW - 5).unwrap(), Some((1, NOW - 4)));
    assert_eq!(p.offset_for_timestamp(NOW - 2).unwrap(), Some((4, NOW - 1)));
}

fn copy_dir_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A compacted partition with three small sealed segments (one compaction group) and an
/// active one. Returns the records before compaction.
fn three_sealed_segments(log: &Log, clock: &ManualClock) -> Vec<Stored> {
    log.create_topic("c", 1, compacted(1 << 20).segment_ms(1000))
        .unwrap();
    let p = log.partition("c", 0).unwrap();
    for round in 0..3 {
        for i in 0..10 {
            let key = format!("k{}", i % 4);
            let value = format!("r{round}-{i}");
            p.append(&[Record::new(Some(key.as_bytes()), Some(value.as_bytes()))])
                .unwrap();
        }
        roll(&p, clock, 1000);
    }
    assert_eq!(p.segment_count().unwrap(), 4);
    read_all(&p)
}

#[test]
fn stray_cleaned_file_is_removed_on_open_and_data_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir = dir.path().join("c-0");
    let log = open(dir.path(), &clock);
    let before = three_sealed_segments(&log, &clock);
    log.close().unwrap();
    // A compaction that crashed while writing its output leaves a `.cleaned` file.
    let stray = pdir.join("00000000000000000000.log.cleaned");
    std::fs::write(&stray, b"half-written compaction output").unwrap();
    for crash in [false, true] {
        if crash {
            std::fs::write(&stray, b"half-written compaction output").unwrap();
            simulate_crash(dir.path());
        }
        let log = open(dir.path(), &clock);
        assert!(!stray.exists(), "crash: {crash}");
        let p = log.partition("c", 0).unwrap();
        assert_eq!(read_all(&p), before);
        log.close().unwrap();
    }
    // Compaction then works as usual.
    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    log.compact(true).unwrap();
    assert_eq!(read_all(&p), model(&before, active_base(&pdir)));
}

#[test]
fn interrupted_swap_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let pdir = dir.path().join("c-0");
    let backup = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &clock);
    let before = three_sealed_segments(&log, &clock);
    log.close().unwrap();
    let old_bases = segment_bases(&pdir);
    let end = *old_bases.last().unwrap();
    copy_dir_files(&pdir, backup.path());

    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    let stats = log.compact(true).unwrap();
    assert_eq!(stats.segments_cleaned, 3, "one group of three segments");
    let after = read_all(&p);
    assert_eq!(after, model(&before, end));
    assert_ne!(after, before);
    log.close().unwrap();
    assert_eq!(segment_bases(&pdir), vec![0, end]);

    // Rebuild the state of a crash right after the swap file was committed: the old segments
    // still in place, the cleaned segment beside them as `<base>.<end>.swap`.
    let swap = pdir.join(format!("{:020}.{:020}.swap", 0, end));
    std::fs::copy(pdir.join(format!("{:020}.log", 0)), &swap).unwrap();
    for ext in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(pdir.join(format!("{:020}.{ext}", 0)));
    }
    for name in file_names(backup.path()) {
        let base: Option<i64> = name.get(..20).and_then(|s| s.parse().ok());
        if base.is_some_and(|b| b < end) {
            std::fs::copy(backup.path().join(&name), pdir.join(&name)).unwrap();
        }
    }
    assert_eq!(segment_bases(&pdir), old_bases);
    simulate_crash(dir.path());

    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    assert!(!swap.exists());
    assert_eq!(segment_bases(&pdir), vec![0, end]);
    assert_eq!(read_all(&p), after);
    assert_eq!(
        p.log_end_offset().unwrap(),
        before.last().unwrap().offset + 1
    );
    check_reads_across_holes(&p, &after, 0);
    // And the partition carries on.
    let info = p
        .append(&[Record::new(Some(b"k0"), Some(b"later"))])
        .unwrap();
    assert_eq!(info.base_offset, before.last().unwrap().offset + 1);
    log.close().unwrap();

    let log = open(dir.path(), &clock);
    let p = log.partition("c", 0).unwrap();
    let mut expected = after;
    expected.push(Stored {
        offset: info.base_offset,
        key: b"k0".to_vec(),
        value: Some(b"later".to_vec()),
        headers: Vec::new(),
    });
    assert_eq!(read_all(&p), expected);
}
