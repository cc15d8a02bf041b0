//! `offset_for_timestamp` (Kafka's `offsetsForTimes`) answers "the first offset, in offset
//! order, whose timestamp is at or after T" across many segments and sparse indexes, for
//! ordered and out-of-order timestamps alike, before and after a reopen that loads (clean) or
//! rebuilds (crash, damaged files) the indexes; and reads at every offset find their record.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use core_log::{Log, ManualClock, Partition, Record, TopicConfig};

mod common;
use common::{NOW, Rng, open, simulate_crash};

fn config() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(2048)
        .set("index.interval.bytes", "128")
        .unwrap()
}

/// Appends batches of 1 to 4 records with the timestamps `next_ts` gives; returns the
/// timestamps of the appended records, in offset order.
fn fill(
    p: &Partition,
    rng: &mut Rng,
    batches: usize,
    mut next_ts: impl FnMut(&mut Rng) -> i64,
) -> Vec<i64> {
    let mut ts = Vec::new();
    let first = p.log_end_offset().unwrap();
    for _ in 0..batches {
        let n = 1 + rng.below(4) as usize;
        let stamps: Vec<i64> = (0..n).map(|_| next_ts(rng)).collect();
        let values: Vec<String> = (0..n)
            .map(|i| format!("value-{}", first + (ts.len() + i) as i64))
            .collect();
        let records: Vec<Record<'_>> = stamps
            .iter()
            .zip(&values)
            .map(|(&t, v)| Record::new(Some(b"k"), Some(v.as_bytes())).timestamp(t))
            .collect();
        let info = p.append(&records).unwrap();
        assert_eq!(info.base_offset, first + ts.len() as i64);
        ts.extend(stamps);
    }
    ts
}

/// Kafka's answer by brute force: the first offset whose timestamp is at or after `target`.
fn brute_force(ts: &[i64], target: i64) -> Option<(i64, i64)> {
    ts.iter()
        .position(|&t| t >= target)
        .map(|o| (o as i64, ts[o]))
}

/// Every record timestamp, one below and one above it, and targets before and after all.
fn targets(ts: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = ts.iter().flat_map(|&t| [t - 1, t, t + 1]).collect();
    let (min, max) = (*ts.iter().min().unwrap(), *ts.iter().max().unwrap());
    out.extend([
        i64::MIN,
        0,
        min - 1_000_000,
        max + 1,
        max + 1_000_000,
        i64::MAX,
    ]);
    out.sort_unstable();
    out.dedup();
    out
}

fn answers(p: &Partition, targets: &[i64]) -> Vec<Option<(i64, i64)>> {
    targets
        .iter()
        .map(|&t| p.offset_for_timestamp(t).unwrap())
        .collect()
}

fn check_against_brute_force(p: &Partition, ts: &[i64]) -> Vec<Option<(i64, i64)>> {
    let targets = targets(ts);
    let got = answers(p, &targets);
    for (target, got) in targets.iter().zip(&got) {
        assert_eq!(
            *got,
            brute_force(ts, *target),
            "offset_for_timestamp({target})"
        );
    }
    // The extremes, explicitly: before all is the first offset, after all is None.
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some((0, ts[0])));
    let max = *ts.iter().max().unwrap();
    assert_eq!(p.offset_for_timestamp(max + 1).unwrap(), None);
    got
}

/// A read at every offset starts with that offset's record, and reads carry on in order.
fn check_reads(p: &Partition, ts: &[i64]) {
    for offset in 0..ts.len() as i64 {
        let data = p.read(offset, 1).unwrap();
        let first = data.records().next().unwrap();
        assert_eq!(
            (first.offset, first.timestamp),
            (offset, ts[offset as usize])
        );
        assert_eq!(first.value.unwrap(), format!("value-{offset}").as_bytes());
    }
    let mut at = 0;
    let mut seen = Vec::new();
    while at < ts.len() as i64 {
        let data = p.read(at, 500).unwrap();
        seen.extend(data.records().map(|r| r.timestamp));
        at = data.next_offset();
    }
    assert_eq!(seen, ts);
}

/// Runs the checks on a fresh log, after a clean reopen (indexes loaded), after a crash
/// (indexes rebuilt from the segments), and with damaged or missing index files.
fn check_everywhere(seed: u64, next_ts: impl FnMut(&mut Rng) -> i64) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t-0");
    let mut rng = Rng(seed);
    let log = open(dir.path());
    log.create_topic("t", 1, config()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let ts = fill(&p, &mut rng, 400, next_ts);
    assert!(p.segment_count().unwrap() > 10, "many segments");
    let reference = check_against_brute_force(&p, &ts);
    check_reads(&p, &ts);
    log.close().unwrap();

    let target_list = targets(&ts);
    for case in ["clean", "crash", "damaged indexes", "missing indexes"] {
        match case {
            "crash" => simulate_crash(dir.path()),
            "damaged indexes" | "missing indexes" => {
                for e in std::fs::read_dir(&pdir).unwrap() {
                    let path = e.unwrap().path();
                    let ext = path.extension().unwrap().to_string_lossy().into_owned();
                    if ext == "index" || ext == "timeindex" {
                        if case == "missing indexes" {
                            std::fs::remove_file(&path).unwrap();
                        } else {
                            let mut bytes = std::fs::read(&path).unwrap();
                            let n = bytes.len();
                            bytes[n / 2] ^= 0x5a;
                            std::fs::write(&path, bytes).unwrap();
                        }
                    }
                }
            }
            _ => {}
        }
        let log = open(dir.path());
        let p = log.partition("t", 0).unwrap();
        assert_eq!(answers(&p, &target_list), reference, "{case}");
        check_reads(&p, &ts);
        log.close().unwrap();
    }
}

#[test]
fn offset_for_timestamp_with_ordered_timestamps() {
    let mut t = NOW;
    check_everywhere(0x1234_5678_9abc_def1, move |rng| {
        // Steps of 0 (equal timestamps) to 9 ms.
        t += rng.below(10) as i64;
        t
    });
}

#[test]
fn offset_for_timestamp_with_out_of_order_timestamps() {
    let mut t = NOW;
    check_everywhere(0x0fed_cba9_8765_4321, move |rng| {
        // A rising trend with large jitter both ways, and now and then a far outlier.
        t += 5;
        match rng.below(50) {
            0 => t + 100_000,
            1 => t - 100_000,
            _ => t + rng.below(400) as i64 - 200,
        }
    });
}

#[test]
fn offset_for_timestamp_with_random_timestamps() {
    check_everywhere(0xdead_beef_cafe_f00d, |rng| NOW + rng.below(5_000) as i64);
}

#[test]
fn offset_for_timestamp_starts_at_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = Log::builder(dir.path())
        .clock(clock.clone())
        .background_maintenance(false)
        .open()
        .unwrap();
    log.create_topic("t", 1, config().retention_ms(1_000_000))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut rng = Rng(42);
    // Old records first, then young ones; retention deletes the old segments.
    let mut ts = fill(&p, &mut rng, 100, |_| NOW - 2_000_000);
    let young = NOW - 10;
    let young_from = ts.len() as i64;
    ts.extend(fill(&p, &mut rng, 100, |_| young).iter());
    assert!(log.enforce_retention().unwrap() > 0);
    let start = p.log_start_offset().unwrap();
    assert!(start > 0 && start <= young_from);
    // Targets older than everything kept answer with the first kept record.
    assert_eq!(
        p.offset_for_timestamp(0).unwrap(),
        Some((start, ts[start as usize]))
    );
    assert_eq!(
        p.offset_for_timestamp(NOW - 2_000_000).unwrap(),
        Some((start, ts[start as usize]))
    );
    assert_eq!(
        p.offset_for_timestamp(young).unwrap(),
        Some((young_from, young))
    );
    assert_eq!(p.offset_for_timestamp(young + 1).unwrap(), None);
}
