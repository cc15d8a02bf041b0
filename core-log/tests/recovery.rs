//! Recovery from torn and corrupt bytes: segment files cut inside a batch, single flipped bytes
//! (after a crash, when recovery scans everything, and after a clean shutdown, when segments
//! are trusted and only reads check CRCs), and hostile files (absurd length fields, zero-filled
//! tails, damaged indexes, stray compaction leftovers, a manifest that is not JSON).
//!
//! The expected contents are the batches found by parsing the segment files with
//! [`RecordBatch::split`] before the damage, compared byte for byte with what the log serves.
//!
//! A crash is simulated inside the process: a clean close, then the clean-shutdown marker and
//! the recovery-point checkpoint are deleted, so the next open re-validates every segment.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use core_log::codec::RecordBatch;
use core_log::{Error, Log, ManualClock, Partition, Record, TopicConfig};

mod common;
use common::simulate_crash;

const TOPIC: &str = "t";
const T0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a fixed, seeded source of choices, so every run damages the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn open(dir: &Path) -> Log {
    Log::builder(dir)
        .clock(ManualClock::new(T0 + 1_000_000))
        .background_maintenance(false)
        .open()
        .unwrap()
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join(format!("{TOPIC}-0"))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of a template log directory.
fn fresh_copy(template: &Path) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    copy_dir(template, work.path());
    work
}

/// The `.log` files of the partition, in offset order: `(base offset, path)`.
fn segment_files(pdir: &Path) -> Vec<(i64, PathBuf)> {
    let mut files: Vec<(i64, PathBuf)> = fs::read_dir(pdir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?;
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    files.sort();
    files
}

/// One batch as found in a segment file.
#[derive(Clone, Debug)]
struct DiskBatch {
    /// The segment file's name (the same in every copy of the directory).
    file: String,
    /// Whether the segment is sealed (not the last one).
    sealed: bool,
    position: u64,
    base: i64,
    next: i64,
    bytes: Vec<u8>,
}

/// Every batch of the partition, parsed from its segment files with `RecordBatch::split`.
fn disk_batches(pdir: &Path) -> Vec<DiskBatch> {
    let files = segment_files(pdir);
    let mut out = Vec::new();
    for (i, (_, path)) in files.iter().enumerate() {
        let bytes = fs::read(path).unwrap();
        let mut rest = &bytes[..];
        while let Some((b, r)) = RecordBatch::split(rest).unwrap() {
            b.validate().unwrap();
            out.push(DiskBatch {
                file: path.file_name().unwrap().to_str().unwrap().to_string(),
                sealed: i + 1 < files.len(),
                position: (bytes.len() - rest.len()) as u64,
                base: b.base_offset(),
                next: b.next_offset(),
                bytes: b.as_bytes().to_vec(),
            });
            rest = r;
        }
        assert!(rest.is_empty(), "{path:?} holds whole batches");
    }
    out
}

/// Every batch the partition serves, read from the log start to the log end.
fn served_batches(p: &Partition) -> Vec<Vec<u8>> {
    let end = p.log_end_offset().unwrap();
    let mut offset = p.log_start_offset().unwrap();
    let mut out = Vec::new();
    while offset < end {
        let fetch = p.read(offset, 4096).unwrap();
        let before = out.len();
        out.extend(fetch.batches().map(|b| b.as_bytes().to_vec()));
        assert!(out.len() > before, "reading from {offset} makes progress");
        offset = fetch.next_offset();
    }
    out
}

fn bytes_of(batches: &[DiskBatch]) -> Vec<Vec<u8>> {
    batches.iter().map(|b| b.bytes.clone()).collect()
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip(path: &Path, position: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// Builds a closed (cleanly) log of `batches` batches of 1-3 records in `dir` and returns its
/// batches as parsed from disk, after checking that the log serves exactly those.
fn build(dir: &Path, config: TopicConfig, batches: usize, seed: u64) -> Vec<DiskBatch> {
    let mut rng = Rng(seed);
    let log = open(dir);
    log.create_topic(TOPIC, 1, config).unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    for i in 0..batches {
        let keys: Vec<String> = (0..1 + rng.below(3)).map(|j| format!("k{i}.{j}")).collect();
        let values: Vec<Vec<u8>> = keys
            .iter()
            .map(|_| (0..10 + rng.below(50)).map(|_| rng.next() as u8).collect())
            .collect();
        let records: Vec<Record<'_>> = keys
            .iter()
            .zip(&values)
            .enumerate()
            .map(|(j, (k, v))| {
                Record::new(Some(k.as_bytes()), Some(v)).timestamp(T0 + 10 * i as i64 + j as i64)
            })
            .collect();
        p.append(&records).unwrap();
    }
    let served = served_batches(&p);
    log.close().unwrap();
    let on_disk = disk_batches(&partition_dir(dir));
    assert_eq!(served, bytes_of(&on_disk));
    on_disk
}

/// Appends one record, checks it got `expected_offset`, and returns its batch's bytes.
fn append_marker(p: &Partition, expected_offset: i64, tag: &str) -> Vec<u8> {
    let info = p
        .append(&[Record::new(Some(b"marker"), Some(tag.as_bytes())).timestamp(T0 + 999_999)])
        .unwrap();
    assert_eq!(info.base_offset, expected_offset, "{tag}");
    let fetch = p.read(expected_offset, 4096).unwrap();
    let batch = fetch.batches().next().unwrap();
    let r = batch.records().next().unwrap().unwrap();
    assert_eq!((r.offset, r.value), (expected_offset, Some(tag.as_bytes())));
    batch.as_bytes().to_vec()
}

/// The last position listed in an offset index file (`(relative u32, position u32)*` then a
/// CRC), or 0 when it lists none.
fn last_index_position(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let body = &bytes[..bytes.len() - 4];
    body.chunks_exact(8).last().map_or(0, |e| {
        u64::from(u32::from_be_bytes([e[4], e[5], e[6], e[7]]))
    })
}

/// An offset index file: `(relative offset, position)` entries, big-endian, then their CRC-32C.
fn index_file(entries: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, p) in entries {
        out.extend_from_slice(&r.to_be_bytes());
        out.extend_from_slice(&p.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Torn writes
// ---------------------------------------------------------------------------------------------

/// The last segment cut at every byte of its last batch: recovery drops exactly that batch,
/// keeps everything before it byte for byte, and appends continue at its offset.
#[test]
fn a_torn_last_batch_is_dropped_at_every_cut_and_appends_continue() {
    let template = tempfile::tempdir().unwrap();
    let config = TopicConfig::default().segment_bytes(600);
    let batches = build(template.path(), config, 14, 1);
    let (last, prefix) = batches.split_last().unwrap();
    assert!(
        batches.iter().any(|b| b.sealed) && batches.iter().filter(|b| !b.sealed).count() > 1,
        "the log has sealed segments, and the last segment holds several batches"
    );

    for cut in 0..last.bytes.len() as u64 {
        let work = fresh_copy(template.path());
        let pdir = partition_dir(work.path());
        simulate_crash(work.path());
        set_len(&pdir.join(&last.file), last.position + cut);

        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), last.base, "cut at {cut}");
        assert_eq!(served_batches(&p), bytes_of(prefix), "cut at {cut}");
        assert_eq!(
            fs::metadata(pdir.join(&last.file)).unwrap().len(),
            last.position,
            "the torn bytes are removed from the file"
        );
        let marker = append_marker(&p, last.base, &format!("after cut {cut}"));
        log.close().unwrap();

        // Another crash: the new batch was written where the torn one was, and is valid.
        simulate_crash(work.path());
        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        let mut expected = bytes_of(prefix);
        expected.push(marker);
        assert_eq!(
            served_batches(&p),
            expected,
            "cut at {cut}, after reopening"
        );
        assert_eq!(p.log_end_offset().unwrap(), last.base + 1);
        log.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Flipped bytes
// ---------------------------------------------------------------------------------------------

/// Which field of a batch header (or the records) a byte belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Field {
    /// Bytes 0..8: outside the CRC.
    BaseOffset,
    /// Bytes 8..12: framing, outside the CRC.
    Length,
    /// Bytes 12..16: outside the CRC (as in Kafka).
    LeaderEpoch,
    /// Byte 16: checked by framing.
    Magic,
    /// Bytes 17..: the CRC and everything it covers.
    Checked,
}

fn field(at: usize) -> Field {
    match at {
        0..8 => Field::BaseOffset,
        8..12 => Field::Length,
        12..16 => Field::LeaderEpoch,
        16 => Field::Magic,
        _ => Field::Checked,
    }
}

/// A byte flipped in a random batch of a multi-segment log, then a crash: recovery keeps the
/// batches before the damaged one byte for byte and serves nothing after it.
///
/// Two header fields are not covered by the CRC in the v2 format, and what must hold for them
/// is weaker:
/// - the partition leader epoch: the batch is valid as it stands, so nothing is dropped and
///   the log serves the batch as it is on disk;
/// - the base offset: a smaller one (or one too large for the segment) breaks the offset order
///   and the batch is dropped like any other damaged batch; a slightly larger one is
///   indistinguishable from a batch following a gap (compaction makes gaps), so recovery may
///   keep that batch, as it is on disk, as the last one. Either way nothing after it is served.
#[test]
fn a_flipped_byte_after_a_crash_truncates_the_log_at_the_damaged_batch() {
    let template = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::default().segment_bytes(900);
    config.index_interval_bytes = 150;
    let batches = build(template.path(), config, 30, 2);
    let segments = segment_files(&partition_dir(template.path())).len();
    assert!(segments >= 4, "{segments} segments");
    let log_end = batches.last().unwrap().next;

    let mut rng = Rng(0xF11F);
    let mut seen = std::collections::HashMap::new();
    for trial in 0..240 {
        let i = rng.below(batches.len());
        let d = &batches[i];
        // Half the flips hit the 61-byte header, whose every field is handled differently.
        let at = rng.below(if trial % 2 == 0 { 61 } else { d.bytes.len() });
        let mask = 1 + rng.below(255) as u8;
        let what = format!(
            "trial {trial}: batch {i} (base {}), byte {at} ^ {mask:#x}",
            d.base
        );
        let mut damaged = d.bytes.clone();
        damaged[at] ^= mask;
        *seen.entry(field(at)).or_insert(0) += 1;

        let work = fresh_copy(template.path());
        let pdir = partition_dir(work.path());
        flip(&pdir.join(&d.file), d.position + at as u64, mask);
        simulate_crash(work.path());
        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        let served = served_batches(&p);
        let leo = p.log_end_offset().unwrap();
        assert_eq!(p.log_start_offset().unwrap(), 0, "{what}");
        assert!(served.len() >= i, "{what}: the valid prefix is kept");
        assert_eq!(served[..i], bytes_of(&batches[..i]), "{what}");

        match field(at) {
            Field::LeaderEpoch => {
                let mut expected = bytes_of(&batches);
                expected[i] = damaged;
                assert_eq!(served, expected, "{what}");
                assert_eq!(leo, log_end, "{what}");
            }
            Field::BaseOffset if leo != d.base => {
                let kept = RecordBatch::new(&damaged).unwrap();
                assert!(kept.base_offset() > d.base, "{what}");
                assert_eq!(served.len(), i + 1, "{what}: nothing after it is served");
                assert_eq!(served[i], damaged, "{what}");
                assert_eq!(leo, kept.next_offset(), "{what}");
            }
            _ => {
                assert_eq!(served.len(), i, "{what}: the damaged batch is dropped");
                assert_eq!(leo, d.base, "{what}");
                assert_eq!(
                    fs::metadata(pdir.join(&d.file)).unwrap().len(),
                    d.position,
                    "{what}: the segment is cut at the damaged batch"
                );
                assert!(
                    segment_files(&pdir).last().unwrap().1 == pdir.join(&d.file),
                    "{what}: later segments are gone"
                );
            }
        }
        append_marker(&p, leo, &what);
        log.close().unwrap();
    }
    for f in [
        Field::BaseOffset,
        Field::Length,
        Field::LeaderEpoch,
        Field::Magic,
        Field::Checked,
    ] {
        assert!(seen.contains_key(&f), "no trial flipped a byte of {f:?}");
    }
}

/// After a clean shutdown sealed segments are trusted: opening does not re-read the batches
/// their index covers. A byte flipped there (in the framing or anywhere the CRC covers) must
/// never reach a reader: every read either fails with `Corrupt` or returns only undamaged
/// batches, from exactly the offset asked for.
#[test]
fn a_flipped_byte_in_a_trusted_sealed_segment_is_never_served() {
    let template = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::default().segment_bytes(1500);
    config.index_interval_bytes = 64;
    let batches = build(template.path(), config, 40, 3);
    let pdir = partition_dir(template.path());
    // Batches of sealed segments that lie before their segment's last index entry: a clean
    // open does not scan them.
    let candidates: Vec<usize> = (0..batches.len())
        .filter(|&i| {
            let b = &batches[i];
            let index = pdir.join(b.file.replace(".log", ".index"));
            b.sealed && b.position < last_index_position(&index)
        })
        .collect();
    assert!(candidates.len() >= 10, "{} candidates", candidates.len());

    let mut rng = Rng(0x5EA1);
    // Random flips: any byte from the length field on, except the leader epoch (outside the
    // CRC); half of them in the header.
    for trial in 0..80 {
        let i = candidates[rng.below(candidates.len())];
        let at = loop {
            let end = if trial % 2 == 0 {
                61
            } else {
                batches[i].bytes.len()
            };
            let at = 8 + rng.below(end - 8);
            if field(at) != Field::LeaderEpoch {
                break at;
            }
        };
        let mask = 1 + rng.below(255) as u8;
        trusted_flip_trial(template.path(), &batches, i, at, mask, &mut rng);
    }
    // The two header fields a reader trusts to skip a batch without reading it: the length
    // and the last offset delta, each made larger and smaller.
    for k in 0..4 {
        let i = candidates[k * candidates.len() / 4];
        for at in [8, 9, 10, 11, 23, 24, 25, 26] {
            for mask in [0x80, 0x01] {
                trusted_flip_trial(template.path(), &batches, i, at, mask, &mut rng);
            }
        }
    }
}

/// Flips byte `at` of batch `i` in a copy of the cleanly closed `template`, then reads every
/// offset: the damaged batch's offsets fail with `CorruptRecord` naming exactly them, and every
/// other offset is served, from exactly the offset asked for, with undamaged batches only.
fn trusted_flip_trial(
    template: &Path,
    batches: &[DiskBatch],
    i: usize,
    at: usize,
    mask: u8,
    rng: &mut Rng,
) {
    let d = &batches[i];
    let log_end = batches.last().unwrap().next;
    let what = format!("batch {i} (base {}), byte {at} ^ {mask:#x}", d.base);
    let work = fresh_copy(template);
    let wdir = partition_dir(work.path());
    let lens: Vec<u64> = segment_files(&wdir)
        .iter()
        .map(|(_, f)| fs::metadata(f).unwrap().len())
        .collect();
    flip(&wdir.join(&d.file), d.position + at as u64, mask);
    let log = open(work.path());
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), log_end, "{what}: trusted");
    let damaged = d.base..d.next;
    for offset in 0..log_end {
        let max_bytes = [1, 300, 5000][rng.below(3)];
        match p.read(offset, max_bytes) {
            Err(Error::CorruptRecord {
                first_offset,
                resume_offset,
                ..
            }) => {
                assert!(
                    damaged.contains(&offset),
                    "{what}: read({offset}) refused an undamaged offset"
                );
                assert_eq!(
                    first_offset..resume_offset,
                    damaged,
                    "{what}: the lost range"
                );
            }
            Ok(fetch) => {
                assert!(
                    !damaged.contains(&offset),
                    "{what}: read({offset}) served the damaged batch's offsets"
                );
                let mut expected = offset;
                for b in fetch.batches() {
                    assert!(
                        batches.iter().any(|o| o.bytes == b.as_bytes()),
                        "{what}: read({offset}) returned a damaged batch at {}",
                        b.base_offset()
                    );
                    for r in b.records().map(Result::unwrap) {
                        if r.offset >= offset {
                            assert_eq!(r.offset, expected, "{what}: read({offset}) skipped");
                            expected += 1;
                        }
                    }
                }
                assert!(expected > offset, "{what}: read({offset}) returned nothing");
            }
            Err(e) => panic!("{what}: read({offset}): {e}"),
        }
    }
    assert!(
        matches!(p.read(d.base, 5000), Err(Error::CorruptRecord { .. })),
        "{what}: reading the damaged batch itself fails"
    );
    assert_eq!(
        p.lost_ranges()
            .unwrap()
            .iter()
            .map(|l| l.first_offset..l.end_offset)
            .collect::<Vec<_>>(),
        vec![damaged],
        "{what}"
    );
    log.close().unwrap();
    let after: Vec<u64> = segment_files(&wdir)
        .iter()
        .map(|(_, f)| fs::metadata(f).unwrap().len())
        .collect();
    assert_eq!(after, lens, "{what}: a clean open changes no segment");
}

// ---------------------------------------------------------------------------------------------
// Hostile and leftover files
// ---------------------------------------------------------------------------------------------

/// A segment tail whose length field claims 2 GB is a torn write: no panic, no 2 GB buffer,
/// the bytes are cut, the data before survives. Also a 2 GB claim inside a trusted sealed
/// segment: reads of that batch fail with `CorruptRecord`, and what lies before and after it
/// is served.
#[test]
fn a_length_field_claiming_two_gigabytes_is_rejected() {
    let template = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::default().segment_bytes(800);
    config.index_interval_bytes = 64;
    let batches = build(template.path(), config, 12, 4);
    let pdir = partition_dir(template.path());
    let last = batches.last().unwrap();
    let mut hostile = last.bytes[..61].to_vec();
    hostile[8..12].copy_from_slice(&0x7FFF_FFF0i32.to_be_bytes());
    hostile.extend(std::iter::repeat_n(0xAB, 500));

    for crash in [true, false] {
        let work = fresh_copy(template.path());
        let pdir = partition_dir(work.path());
        let file = pdir.join(&last.file);
        let len = fs::metadata(&file).unwrap().len();
        append_to_file(&file, &hostile);
        if crash {
            simulate_crash(work.path());
        }
        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), last.next, "crash: {crash}");
        assert_eq!(served_batches(&p), bytes_of(&batches), "crash: {crash}");
        assert_eq!(fs::metadata(&file).unwrap().len(), len, "crash: {crash}");
        append_marker(&p, last.next, "after the 2 GB claim");
        log.close().unwrap();
    }

    // Inside a sealed segment, before its last index entry: a clean open does not scan it.
    let (i, d) = batches
        .iter()
        .enumerate()
        .find(|(_, b)| {
            let index = pdir.join(b.file.replace(".log", ".index"));
            b.sealed && b.position > 0 && b.position < last_index_position(&index)
        })
        .unwrap();
    let work = fresh_copy(template.path());
    let file = partition_dir(work.path()).join(&d.file);
    let mut bytes = fs::read(&file).unwrap();
    let at = d.position as usize + 8;
    bytes[at..at + 4].copy_from_slice(&0x7FFF_FFF0i32.to_be_bytes());
    fs::write(&file, bytes).unwrap();
    let log = open(work.path());
    let p = log.partition(TOPIC, 0).unwrap();
    assert!(matches!(
        p.read(d.base, 1 << 20),
        Err(Error::CorruptRecord { .. })
    ));
    let before = &batches[i - 1];
    let fetch = p.read(before.base, 1 << 20).unwrap();
    let served: Vec<&[u8]> = fetch.batches().map(|b| b.as_bytes()).collect();
    assert_eq!(served.last().copied(), Some(&before.bytes[..]));
    let after = &batches[i + 1];
    let fetch = p.read(after.base, 1 << 20).unwrap();
    assert_eq!(fetch.batches().next().unwrap().as_bytes(), &after.bytes[..]);
    log.close().unwrap();
}

/// Zeros after the last batch (a preallocated-looking file, or a file extended without its
/// data after a power loss) are trimmed whether or not the log was closed cleanly.
#[test]
fn a_zero_filled_tail_is_trimmed() {
    let template = tempfile::tempdir().unwrap();
    let batches = build(
        template.path(),
        TopicConfig::default().segment_bytes(800),
        10,
        5,
    );
    let last = batches.last().unwrap();
    for (crash, zeros) in [(true, 4096), (false, 4096), (true, 7), (false, 61)] {
        let what = format!("crash: {crash}, {zeros} zeros");
        let work = fresh_copy(template.path());
        let file = partition_dir(work.path()).join(&last.file);
        let len = fs::metadata(&file).unwrap().len();
        append_to_file(&file, &vec![0; zeros]);
        if crash {
            simulate_crash(work.path());
        }
        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset().unwrap(), last.next, "{what}");
        assert_eq!(fs::metadata(&file).unwrap().len(), len, "{what}");
        let marker = append_marker(&p, last.next, &what);
        log.close().unwrap();

        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        let mut expected = bytes_of(&batches);
        expected.push(marker);
        assert_eq!(served_batches(&p), expected, "{what}");
        log.close().unwrap();
    }
}

/// Damaged index files of trusted segments are rebuilt from the segment: every offset and
/// every timestamp is still found.
#[test]
fn truncated_or_garbage_index_files_are_rebuilt() {
    let template = tempfile::tempdir().unwrap();
    let mut config = TopicConfig::default().segment_bytes(1200);
    config.index_interval_bytes = 100;
    let batches = build(template.path(), config, 30, 6);
    let pdir = partition_dir(template.path());
    let log_end = batches.last().unwrap().next;
    let first = &batches[0].file;
    let active = &batches.last().unwrap().file;
    assert_ne!(first, active);
    let index = fs::read(pdir.join(first.replace(".log", ".index"))).unwrap();
    assert!(index.len() >= 4 + 2 * 8, "the index has entries");

    let mut rng = Rng(0x1DE);
    let garbage = |n: usize, rng: &mut Rng| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
    let damages: Vec<(String, &str, Vec<u8>)> = vec![
        (
            "truncated to half".into(),
            "index",
            index[..index.len() / 2].to_vec(),
        ),
        (
            "truncated by one byte".into(),
            "index",
            index[..index.len() - 1].to_vec(),
        ),
        ("cut to zero bytes".into(), "index", Vec::new()),
        (
            "well-formed, with a valid CRC, but pointing inside a batch".into(),
            "index",
            index_file(&[(1, 5)]),
        ),
        (
            "garbage, entry-sized".into(),
            "index",
            garbage(index.len(), &mut rng),
        ),
        ("garbage, odd size".into(), "index", garbage(37, &mut rng)),
        (
            "garbage time index".into(),
            "timeindex",
            garbage(4 + 12 * 5, &mut rng),
        ),
        ("truncated time index".into(), "timeindex", vec![0; 3]),
    ];
    for (what, ext, bytes) in &damages {
        for file in [first, active] {
            let what = format!("{what} {ext} of {file}");
            let work = fresh_copy(template.path());
            let wdir = partition_dir(work.path());
            fs::write(wdir.join(file.replace("log", ext)), bytes).unwrap();
            let log = open(work.path());
            let p = log.partition(TOPIC, 0).unwrap();
            assert_eq!(p.log_end_offset().unwrap(), log_end, "{what}");
            assert_eq!(served_batches(&p), bytes_of(&batches), "{what}");
            for b in &batches {
                let batch = RecordBatch::new(&b.bytes).unwrap();
                for r in batch.records().map(Result::unwrap) {
                    let fetch = p.read(r.offset, 1).unwrap();
                    let got = fetch.records().next().unwrap();
                    assert_eq!((got.offset, got.value), (r.offset, r.value), "{what}");
                    assert_eq!(
                        p.offset_for_timestamp(r.timestamp).unwrap(),
                        Some((r.offset, r.timestamp)),
                        "{what}: timestamps increase with offsets here"
                    );
                }
            }
            assert_eq!(p.offset_for_timestamp(T0 + 1_000_000).unwrap(), None);
            log.close().unwrap();
        }
    }
}

/// Leftovers of interrupted work (a compaction's `.cleaned` output, a half-written `.tmp`) and
/// a garbage recovery-point checkpoint: opening removes the leftovers and keeps every batch.
#[test]
fn stray_leftover_files_are_removed_and_the_data_survives() {
    let template = tempfile::tempdir().unwrap();
    let batches = build(
        template.path(),
        TopicConfig::default().segment_bytes(800),
        10,
        7,
    );
    let first = batches[0].file.clone();
    for crash in [false, true] {
        let work = fresh_copy(template.path());
        let pdir = partition_dir(work.path());
        let segment = fs::read(pdir.join(&first)).unwrap();
        let strays = [
            format!("{first}.cleaned"),
            "00000000000000000003.log.cleaned".to_string(),
            format!("{first}.tmp"),
        ];
        fs::write(pdir.join(&strays[0]), &segment[..segment.len() / 2]).unwrap();
        fs::write(pdir.join(&strays[1]), b"\x00garbage\xff").unwrap();
        fs::write(pdir.join(&strays[2]), &segment).unwrap();
        if crash {
            simulate_crash(work.path());
            fs::write(
                work.path().join("recovery-point-offset-checkpoint"),
                b"\xff\xfe not a checkpoint",
            )
            .unwrap();
        }
        let log = open(work.path());
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(served_batches(&p), bytes_of(&batches), "crash: {crash}");
        for stray in &strays {
            assert!(!pdir.join(stray).exists(), "{stray} is removed");
        }
        log.close().unwrap();
    }
}

/// A `topics.json` that is not a valid manifest makes `open` fail with `Corrupt`, without
/// touching any partition directory; once the manifest is restored every topic is back.
#[test]
fn a_manifest_that_is_not_json_fails_open_and_drops_nothing() {
    let template = tempfile::tempdir().unwrap();
    let batches = build(
        template.path(),
        TopicConfig::default().segment_bytes(800),
        6,
        8,
    );
    {
        let log = open(template.path());
        log.create_topic("other", 3, TopicConfig::default())
            .unwrap();
        log.close().unwrap();
    }
    let manifest = fs::read(template.path().join("topics.json")).unwrap();
    let bad: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        Vec::new(),
        manifest[..manifest.len() / 2].to_vec(),
        b"\x00\xff\x13\x37binary".to_vec(),
        b"{\"version\": 2, \"topics\": []}".to_vec(),
        b"[1, 2, 3]".to_vec(),
    ];
    for contents in &bad {
        let what = String::from_utf8_lossy(contents).into_owned();
        let work = fresh_copy(template.path());
        let path = work.path().join("topics.json");
        fs::write(&path, contents).unwrap();
        let listing = |dir: &Path| {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing(work.path());
        let pdir_before = listing(&partition_dir(work.path()));

        match Log::builder(work.path())
            .background_maintenance(false)
            .open()
        {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, path, "{what:?}"),
            other => panic!("{what:?}: {other:?}"),
        }
        assert_eq!(listing(work.path()), before, "{what:?}: nothing removed");
        assert_eq!(
            listing(&partition_dir(work.path())),
            pdir_before,
            "{what:?}: partition files untouched"
        );

        fs::write(&path, &manifest).unwrap();
        let log = open(work.path());
        assert_eq!(log.topics(), vec!["other".to_string(), TOPIC.to_string()]);
        assert_eq!(log.partition_count("other").unwrap(), 3);
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(served_batches(&p), bytes_of(&batches), "{what:?}");
        log.close().unwrap();
    }
}
