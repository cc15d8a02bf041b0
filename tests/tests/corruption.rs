//! Randomized damage to log directories, cleanly closed and crashed: after any one mutation
//! (bit flips in batch headers, base offsets and bodies, truncations, garbage tails, zeroed
//! ranges, a removed segment, damaged or deleted index, snapshot and metadata files), the log
//! opens, every record it serves is byte-identical to what was written at that offset, nothing
//! valid outside the damage is lost, and every lost range is reported, by the open (reads
//! fail with `CorruptRecord`, `Partition::lost_ranges`) and by `verify` alike.
//!
//! Kafka's rule decides what counts as "outside the damage": bytes below the recovery point
//! (everything, after a clean close) are flushed data, and damage there costs only the offsets
//! it covers; in the unflushed tail of a crashed log, recovery may cut from the damage on.
//!
//! The crashed template is written by a child process (this test binary re-executed) that
//! flushes part of its appends and is then killed with SIGKILL. The seed is printed; replay a
//! failure with `MOLDAU_CRASH_SEED=<n>`.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use core_log::codec::RecordBatch;
use core_log::{Error, Finding, Log, Partition, Record, TopicConfig};

mod common;
use common::{DIR_ENV, Kill, ack, open_retrying, run_child, seed, start_acks};

const TOPIC: &str = "events";
/// The partition the mutations hit; partition 1 is never touched and must always be whole.
const DAMAGED: u32 = 0;
const BATCHES: i64 = 90;
/// In the crashed template, appends up to this batch are flushed (the recovery point).
const FLUSHED_BATCHES: i64 = 55;
const SEGMENT_BYTES: u32 = 2048;
const INDEX_INTERVAL: u32 = 200;

/// The value of the record at `offset`: its offset, padded to a length that varies with it,
/// so that batches and segments have uneven sizes.
fn value(partition: u32, offset: i64) -> Vec<u8> {
    let mut v = format!("{partition}:{offset}:").into_bytes();
    v.resize(
        v.len() + 20 + (offset as usize * 7) % 40,
        b'a' + (offset % 26) as u8,
    );
    v
}

/// Records per batch: 1 to 5, by batch number.
fn batch_len(batch: i64) -> i64 {
    1 + (batch * 7) % 5
}

fn topic_config() -> TopicConfig {
    let mut config = TopicConfig::default().segment_bytes(SEGMENT_BYTES);
    config.index_interval_bytes = INDEX_INTERVAL;
    config
}

/// Appends batches `from..to` to both partitions, the same way in the parent and the child.
fn append_batches(log: &Log, from: i64, to: i64) {
    for p in 0..2 {
        let part = log.partition(TOPIC, p).unwrap();
        let mut offset: i64 = (0..from).map(batch_len).sum();
        for b in from..to {
            let values: Vec<Vec<u8>> = (0..batch_len(b)).map(|i| value(p, offset + i)).collect();
            let key = format!("k{b}");
            let records: Vec<Record<'_>> = values
                .iter()
                .map(|v| {
                    Record::new(Some(key.as_bytes()), Some(v)).timestamp(1_700_000_000_000 + b)
                })
                .collect();
            assert_eq!(part.append(&records).unwrap().base_offset, offset);
            offset += batch_len(b);
        }
    }
}

fn open(dir: &Path) -> Log {
    open_retrying(dir, |b| b.background_maintenance(false))
}

/// The child that writes the crashed template: appends, flushes part way, appends more
/// (unflushed), acknowledges, and waits to be killed.
#[test]
fn corruption_child_writes_then_dies() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let log = open(Path::new(&dir));
    log.create_topic(TOPIC, 2, topic_config()).unwrap();
    append_batches(&log, 0, FLUSHED_BATCHES);
    log.flush().unwrap();
    append_batches(&log, FLUSHED_BATCHES, BATCHES);
    ack(format_args!("written"));
    std::thread::sleep(Duration::from_secs(600));
}

/// A template directory and what it holds.
struct Template {
    dir: tempfile::TempDir,
    /// The log end of each partition.
    log_end: i64,
    /// Offsets below this are flushed (the log end, for a clean close).
    recovery_point: i64,
    crashed: bool,
}

fn clean_template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic(TOPIC, 2, topic_config()).unwrap();
    append_batches(&log, 0, BATCHES);
    log.close().unwrap();
    let log_end = (0..BATCHES).map(batch_len).sum();
    Template {
        dir,
        log_end,
        recovery_point: log_end,
        crashed: false,
    }
}

fn crashed_template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let run = run_child(
        "corruption_child_writes_then_dies",
        dir.path(),
        &[],
        Kill::AtAck {
            ack: "written",
            within: Duration::from_secs(120),
        },
    );
    assert_eq!(run.acks, ["written"], "the child finished writing");
    assert!(!dir.path().join("clean-shutdown").exists());
    Template {
        dir,
        log_end: (0..BATCHES).map(batch_len).sum(),
        recovery_point: (0..FLUSHED_BATCHES).map(batch_len).sum(),
        crashed: true,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != ".lock" {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes: what "nothing changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(snapshot(&entry.path()));
        } else if entry.file_name() != ".lock" {
            out.insert(entry.path(), fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// A batch as found on disk: its segment, position, size and offsets.
#[derive(Clone, Debug)]
struct DiskBatch {
    segment: PathBuf,
    position: u64,
    size: u64,
    offsets: Range<i64>,
}

/// The `.log` files of a partition directory, by base offset.
fn segments(pdir: &Path) -> Vec<(i64, PathBuf)> {
    let mut out: Vec<(i64, PathBuf)> = fs::read_dir(pdir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let base = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((base, path))
        })
        .collect();
    out.sort();
    out
}

fn disk_batches(pdir: &Path) -> Vec<DiskBatch> {
    let mut out = Vec::new();
    for (_, path) in segments(pdir) {
        let bytes = fs::read(&path).unwrap();
        let mut rest = &bytes[..];
        let mut position = 0u64;
        while let Some((b, r)) = RecordBatch::split(rest).unwrap() {
            out.push(DiskBatch {
                segment: path.clone(),
                position,
                size: b.size() as u64,
                offsets: b.base_offset()..b.next_offset(),
            });
            position += b.size() as u64;
            rest = r;
        }
    }
    out
}

/// One mutation and the offsets it may cost.
struct Mutation {
    what: String,
    /// The offsets whose batches the mutation touched; empty for metadata files.
    touched: Range<i64>,
}

impl Mutation {
    fn of_bytes(what: String, batches: &[DiskBatch], segment: &Path, bytes: Range<u64>) -> Self {
        let hit: Vec<&DiskBatch> = batches
            .iter()
            .filter(|b| {
                b.segment == segment && b.position < bytes.end && bytes.start < b.position + b.size
            })
            .collect();
        let touched = match (hit.first(), hit.last()) {
            (Some(f), Some(l)) => f.offsets.start..l.offsets.end,
            // Bytes after a segment's last batch: what follows it in offsets.
            _ => {
                let next = batches
                    .iter()
                    .filter(|b| b.segment == segment)
                    .map(|b| b.offsets.end)
                    .max()
                    .unwrap_or(0);
                next..next
            }
        };
        Mutation { what, touched }
    }
}

fn flip_bit(path: &Path, byte: u64, bit: u32) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// Applies mutation `kind` (chosen by the rng) to a copy of a template's partition `DAMAGED`.
fn mutate(dir: &Path, kind: u32, rng: &mut fastrand::Rng) -> Mutation {
    let pdir = dir.join(format!("{TOPIC}-{DAMAGED}"));
    let batches = disk_batches(&pdir);
    let segs = segments(&pdir);
    let pick = |rng: &mut fastrand::Rng| batches[rng.usize(..batches.len())].clone();
    match kind {
        // A bit of a batch header, base offset included (it is outside the CRC).
        0 | 1 => {
            let b = pick(rng);
            let at = if kind == 0 {
                rng.u64(0..8)
            } else {
                rng.u64(8..61)
            };
            let bit = rng.u32(0..8);
            flip_bit(&b.segment, b.position + at, bit);
            let what = format!("flip header byte {at} bit {bit} of batch {:?}", b.offsets);
            Mutation::of_bytes(
                what,
                &batches,
                &b.segment,
                b.position + at..b.position + at + 1,
            )
        }
        // A bit of a batch's records.
        2 => {
            let b = pick(rng);
            let at = rng.u64(61..b.size);
            let bit = rng.u32(0..8);
            flip_bit(&b.segment, b.position + at, bit);
            let what = format!("flip body byte {at} bit {bit} of batch {:?}", b.offsets);
            Mutation::of_bytes(
                what,
                &batches,
                &b.segment,
                b.position + at..b.position + at + 1,
            )
        }
        // A segment cut short, anywhere.
        3 => {
            let (_, seg) = &segs[rng.usize(..segs.len())];
            let len = fs::metadata(seg).unwrap().len();
            let cut = rng.u64(0..len);
            fs::OpenOptions::new()
                .write(true)
                .open(seg)
                .unwrap()
                .set_len(cut)
                .unwrap();
            Mutation::of_bytes(
                format!("cut {} at {cut}", seg.display()),
                &batches,
                seg,
                cut..len,
            )
        }
        // Garbage after a segment's last batch.
        4 => {
            let (_, seg) = &segs[rng.usize(..segs.len())];
            let len = fs::metadata(seg).unwrap().len();
            let garbage: Vec<u8> = (0..rng.usize(1..300)).map(|_| rng.u8(..)).collect();
            let mut bytes = fs::read(seg).unwrap();
            bytes.extend_from_slice(&garbage);
            fs::write(seg, bytes).unwrap();
            let what = format!("{} garbage bytes after {}", garbage.len(), seg.display());
            Mutation::of_bytes(what, &batches, seg, len..len + garbage.len() as u64)
        }
        // A zeroed range inside a segment.
        5 => {
            let (_, seg) = &segs[rng.usize(..segs.len())];
            let mut bytes = fs::read(seg).unwrap();
            let start = rng.usize(..bytes.len());
            let end = (start + rng.usize(1..200)).min(bytes.len());
            bytes[start..end].fill(0);
            fs::write(seg, bytes).unwrap();
            let what = format!("zero {start}..{end} of {}", seg.display());
            Mutation::of_bytes(what, &batches, seg, start as u64..end as u64)
        }
        // A segment removed with its index files.
        6 => {
            let (base, seg) = &segs[rng.usize(..segs.len())];
            for ext in ["log", "index", "timeindex", "txnindex"] {
                let _ = fs::remove_file(pdir.join(format!("{base:020}.{ext}")));
            }
            let offsets: Vec<&DiskBatch> = batches.iter().filter(|b| &b.segment == seg).collect();
            let touched = offsets.first().map_or(*base..*base, |f| {
                f.offsets.start..offsets.last().unwrap().offsets.end
            });
            Mutation {
                what: format!("remove segment {base}"),
                touched,
            }
        }
        // An index, time index, aborted-transaction index or snapshot: flipped, cut or gone.
        7 => {
            let mut files: Vec<PathBuf> = fs::read_dir(&pdir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e != "log"))
                .collect();
            files.sort();
            let file = files[rng.usize(..files.len())].clone();
            let len = fs::metadata(&file).unwrap().len();
            let what = match rng.u32(0..3) {
                0 if len > 0 => {
                    let at = rng.u64(0..len);
                    flip_bit(&file, at, rng.u32(0..8));
                    format!("flip byte {at} of {}", file.display())
                }
                1 => {
                    let cut = rng.u64(0..=len);
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .unwrap()
                        .set_len(cut)
                        .unwrap();
                    format!("cut {} at {cut}", file.display())
                }
                _ => {
                    fs::remove_file(&file).unwrap();
                    format!("remove {}", file.display())
                }
            };
            Mutation {
                what,
                touched: 0..0,
            }
        }
        // A checkpoint or the producer id block.
        _ => {
            let files: Vec<PathBuf> = [
                "recovery-point-offset-checkpoint",
                "cleaner-offset-checkpoint",
                "log-start-offset-checkpoint",
                "producer-id-block",
            ]
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .collect();
            let file = &files[rng.usize(..files.len())];
            let len = fs::metadata(file).unwrap().len();
            let at = rng.u64(0..len);
            flip_bit(file, at, rng.u32(0..8));
            Mutation {
                what: format!("flip byte {at} of {}", file.display()),
                touched: 0..0,
            }
        }
    }
}

/// Reads partition `p` from its start: the records served, by offset, and the lost ranges
/// reads reported. A `CorruptRecord` read goes on at its resume offset.
fn read_all(part: &Partition) -> (BTreeMap<i64, Vec<u8>>, Vec<Range<i64>>) {
    let mut served = BTreeMap::new();
    let mut lost = Vec::new();
    let end = part.log_end_offset().unwrap();
    let mut offset = part.log_start_offset().unwrap();
    while offset < end {
        match part.read(offset, [1, 300, 4096][(offset % 3) as usize]) {
            Ok(fetch) => {
                let mut next = offset;
                for r in fetch.records() {
                    assert_eq!(
                        r.offset, next,
                        "read({offset}) skipped or repeated an offset"
                    );
                    served.insert(r.offset, r.value.unwrap().to_vec());
                    next += 1;
                }
                assert!(
                    next > offset,
                    "read({offset}) below the log end {end} returned nothing"
                );
                offset = next;
            }
            Err(Error::CorruptRecord {
                first_offset,
                resume_offset,
                ..
            }) => {
                assert!((first_offset..resume_offset).contains(&offset));
                lost.push(first_offset..resume_offset);
                offset = resume_offset;
            }
            Err(e) => panic!("read({offset}): {e}"),
        }
    }
    (served, lost)
}

fn offsets_of(ranges: &[Range<i64>]) -> Vec<i64> {
    let mut v: Vec<i64> = ranges.iter().flat_map(|r| r.clone()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One trial: mutate a copy of `t`, check `verify`, open, read everything, check against the
/// ground truth, append, reopen.
fn trial(t: &Template, kind: u32, rng: &mut fastrand::Rng) {
    let work = tempfile::tempdir().unwrap();
    copy_dir(t.dir.path(), work.path());
    let m = mutate(work.path(), kind, rng);
    let what = format!(
        "{} ({})",
        m.what,
        if t.crashed { "crashed" } else { "clean" }
    );

    let report = core_log::verify(work.path()).unwrap();
    let before = snapshot(work.path());
    let log = open(work.path());
    let part = log.partition(TOPIC, DAMAGED).unwrap();
    let (served, read_lost) = read_all(&part);

    // 1. Nothing served differs from what was written at that offset.
    for (offset, v) in &served {
        assert_eq!(
            v,
            &value(DAMAGED, *offset),
            "{what}: offset {offset} served other bytes"
        );
    }
    // 2. Every offset is served or reported lost, except an unflushed tail cut by recovery.
    let leo = part.log_end_offset().unwrap();
    let lost = part.lost_ranges().unwrap();
    let lost_ranges: Vec<Range<i64>> = lost.iter().map(|l| l.first_offset..l.end_offset).collect();
    let lost_offsets = offsets_of(&lost_ranges);
    assert_eq!(
        offsets_of(&read_lost),
        lost_offsets,
        "{what}: reads and lost_ranges agree"
    );
    let torn_from = if m.touched.start >= t.recovery_point && !m.touched.is_empty() {
        m.touched.start
    } else if m.touched.is_empty() && m.touched.start >= t.recovery_point && t.crashed {
        // Garbage after a segment in the unflushed tail: cut from there.
        m.touched.start
    } else {
        t.log_end
    };
    for offset in 0..t.log_end {
        let expected_served = offset < torn_from && lost_offsets.binary_search(&offset).is_err();
        if offset < torn_from {
            assert!(
                served.contains_key(&offset) || lost_offsets.binary_search(&offset).is_ok(),
                "{what}: offset {offset} neither served nor reported lost (log end {leo})"
            );
        }
        if expected_served {
            assert!(
                served.contains_key(&offset),
                "{what}: offset {offset} lost silently"
            );
        }
    }
    // 3. What is reported lost is only what the mutation touched.
    for o in &lost_offsets {
        assert!(
            m.touched.contains(o),
            "{what}: offset {o} reported lost, touched {:?}",
            m.touched
        );
    }
    assert!(
        leo >= torn_from.min(t.log_end),
        "{what}: log end {leo} went back"
    );
    if torn_from >= t.log_end {
        assert_eq!(leo, t.log_end, "{what}: the log end moved");
    }
    // 4. `verify` saw the same losses before the open.
    let verified: Vec<Range<i64>> = report
        .lost_offsets()
        .into_iter()
        .filter(|(topic, p, _)| topic == TOPIC && *p == DAMAGED)
        .map(|(_, _, r)| r)
        .collect();
    assert_eq!(
        offsets_of(&verified),
        lost_offsets,
        "{what}: verify {:?}",
        report.findings
    );
    if m.touched.is_empty() && torn_from >= t.log_end {
        assert!(lost_offsets.is_empty(), "{what}");
    }
    assert!(
        report
            .findings
            .iter()
            .all(|f| !matches!(f, Finding::Manifest { .. })),
        "{what}"
    );
    // 5. The other partition is whole.
    let (other, other_lost) = read_all(&log.partition(TOPIC, 1).unwrap());
    assert!(other_lost.is_empty(), "{what}");
    assert_eq!(other.len() as i64, t.log_end, "{what}: partition 1");
    // 6. Appends go on at the log end, and a clean reopen serves the same.
    let info = part.append(&[Record::new(None, Some(b"after"))]).unwrap();
    assert_eq!(info.base_offset, leo, "{what}");
    log.close().unwrap();
    let log = open(work.path());
    let part = log.partition(TOPIC, DAMAGED).unwrap();
    let (again, again_lost) = read_all(&part);
    assert_eq!(
        again.get(&leo).map(Vec::as_slice),
        Some(&b"after"[..]),
        "{what}"
    );
    let mut again = again;
    again.remove(&leo);
    assert_eq!(again, served, "{what}: a reopen serves the same");
    assert_eq!(
        offsets_of(&again_lost),
        lost_offsets,
        "{what}: a reopen reports the same"
    );
    log.close().unwrap();
    // Nothing but the damaged partition's new files and metadata changed: the damaged bytes
    // are still there for an operator.
    let after = snapshot(work.path());
    for (path, bytes) in &before {
        if path.extension().is_some_and(|e| e == "log") && !t.crashed && after.contains_key(path) {
            assert!(
                after[path].starts_with(&bytes[..bytes.len().min(after[path].len())]),
                "{what}: {} was rewritten",
                path.display()
            );
        }
    }
}

/// Many seeds of every mutation kind, on a cleanly closed and on a crashed directory: 8 rounds
/// of the 9 kinds on each (about 10 s); `MOLDAU_CORRUPTION_ROUNDS=<n>` runs more.
#[test]
fn any_single_damage_costs_only_the_offsets_it_covers_and_is_reported() {
    let seed = seed();
    println!("seed {seed} (replay with MOLDAU_CRASH_SEED={seed})");
    let rounds: u32 = std::env::var("MOLDAU_CORRUPTION_ROUNDS").map_or(8, |r| r.parse().unwrap());
    let mut rng = fastrand::Rng::with_seed(seed);
    let templates = [clean_template(), crashed_template()];
    for t in &templates {
        assert!(segments(&t.dir.path().join(format!("{TOPIC}-0"))).len() >= 6);
        for round in 0..rounds {
            for kind in 0..9 {
                let trial_seed = rng.u64(..);
                let mut trial_rng = fastrand::Rng::with_seed(trial_seed);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    trial(t, kind, &mut trial_rng)
                }));
                if let Err(e) = result {
                    panic!(
                        "round {round} kind {kind} trial seed {trial_seed} (crashed: {}): {:?}",
                        t.crashed,
                        e.downcast_ref::<String>()
                    );
                }
            }
        }
    }
}

/// A flipped bit anywhere in `topics.json` is an error at open that deletes nothing: no
/// partition directory of a topic the damaged file no longer names is touched, and with the
/// file restored the log opens with every record.
#[test]
fn a_damaged_manifest_fails_open_and_deletes_nothing() {
    let t = clean_template();
    let manifest = fs::read(t.dir.path().join("topics.json")).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed());
    for _ in 0..40 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(t.dir.path(), work.path());
        let at = rng.usize(..manifest.len());
        let bit = rng.u32(0..8);
        flip_bit(&work.path().join("topics.json"), at as u64, bit);
        let before = snapshot(work.path());
        match Log::open(work.path()) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("byte {at} bit {bit}: {other:?}"),
        }
        assert!(matches!(
            core_log::verify(work.path()).unwrap().findings.first(),
            Some(Finding::Manifest { .. })
        ));
        assert_eq!(
            snapshot(work.path()),
            before,
            "byte {at} bit {bit}: the open changed files"
        );
        fs::write(work.path().join("topics.json"), &manifest).unwrap();
        let log = open(work.path());
        for p in 0..2 {
            let (served, lost) = read_all(&log.partition(TOPIC, p).unwrap());
            assert!(lost.is_empty());
            assert_eq!(served.len() as i64, t.log_end);
        }
        log.close().unwrap();
    }
}

/// The child of [`sealed_segments_are_flushed_in_the_background_so_a_crash_keeps_them`]:
/// appends under the default flush policy (no fsync on append) with the maintenance thread
/// on, waits for a few checkpoint intervals, acknowledges and waits to be killed.
#[test]
fn corruption_child_rolls_and_waits() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let log = open_retrying(Path::new(&dir), |b| b.checkpoint_interval_ms(50));
    log.create_topic(TOPIC, 2, topic_config()).unwrap();
    append_batches(&log, 0, BATCHES);
    std::thread::sleep(Duration::from_millis(500));
    ack(format_args!("written"));
    std::thread::sleep(Duration::from_secs(600));
}

/// Kafka flushes a segment when it rolls, so its recovery point reaches the active segment:
/// after a crash, damage in a sealed segment costs its own offsets only. Without that flush
/// the recovery point would stay at the start, the damage would count as a torn tail, and
/// recovery would cut every segment after it.
#[test]
fn sealed_segments_are_flushed_in_the_background_so_a_crash_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_child(
        "corruption_child_rolls_and_waits",
        dir.path(),
        &[],
        Kill::AtAck {
            ack: "written",
            within: Duration::from_secs(120),
        },
    );
    assert_eq!(run.acks, ["written"]);
    let pdir = dir.path().join(format!("{TOPIC}-{DAMAGED}"));
    let batches = disk_batches(&pdir);
    let segs = segments(&pdir);
    // A batch in the middle of the third segment: far below the active one.
    let victim = batches
        .iter()
        .filter(|b| b.segment == segs[2].1)
        .nth(1)
        .unwrap()
        .clone();
    flip_bit(&victim.segment, victim.position + 70, 0);
    let log_end: i64 = (0..BATCHES).map(batch_len).sum();

    let log = open(dir.path());
    let part = log.partition(TOPIC, DAMAGED).unwrap();
    assert_eq!(part.log_end_offset().unwrap(), log_end);
    let (served, lost) = read_all(&part);
    assert_eq!(lost, vec![victim.offsets.clone()]);
    for o in 0..log_end {
        assert_eq!(
            served.contains_key(&o),
            !victim.offsets.contains(&o),
            "offset {o}"
        );
    }
    log.close().unwrap();
}
