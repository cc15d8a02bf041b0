//! One segment: a file of record batches named by its base offset, with its sparse indexes.
//!
//! A partition's segments are `00000000000000000000.log`, `00000000000000004096.log`, ...
//! (the 20-digit base offset, as Kafka names them). Only the last, active segment is appended
//! to; the others are sealed and immutable until retention deletes them or compaction
//! replaces them.
//!
//! A scan of a segment (recovery, a read that finds damage, `verify`) reads batch after batch
//! and checks each: framing, CRC, records, and its offsets against the batch before it. Bytes
//! that fail are judged by where they lie:
//!
//! ```text
//!   [ batch | batch | ##### damage ##### | batch | batch | ~~ torn ~~ ]
//!                   ^ expected offset A  ^ next valid batch (base B)
//!   A below the recovery point: the offsets [A, B) are lost; the bytes stay, reads of those
//!     offsets fail with CorruptRecord, and batches on both sides stay readable.
//!   A at or past it: an unflushed tail that a crash tore: recovery truncates it (Kafka's rule).
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{OffsetIndex, TimeIndex};
use super::txn_index::{self, TxnIndex};
use crate::codec::{self, LOG_OVERHEAD, NO_TIMESTAMP, RecordBatch};
use crate::error::{Error, Result};
use crate::storage::fs::{remove_if_exists, write_atomic};

pub(crate) use crate::codec::MAX_BATCH_BYTES;

/// Bytes read at a time when scanning a segment sequentially.
const SCAN_CHUNK: usize = 256 << 10;

/// The files of a segment, named by its base offset: the data, then its indexes.
pub(crate) const SEGMENT_FILE_EXTS: [&str; 4] =
    ["log", "index", "timeindex", txn_index::TXN_INDEX_EXT];

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_base_offset(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Summary of one batch, all a segment needs to maintain its indexes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchMeta {
    pub base_offset: i64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub size: u32,
}

impl BatchMeta {
    pub(crate) fn of(b: &RecordBatch<'_>) -> Self {
        BatchMeta {
            base_offset: b.base_offset(),
            next_offset: b.next_offset(),
            max_timestamp: b.max_timestamp(),
            size: b.size() as u32,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<File>,
    pub path: PathBuf,
    /// Bytes of valid batches; readers never look past it.
    pub size: u64,
    /// The offset after the last batch (`base_offset` when empty).
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// Clock time of the first append to the segment, or on open its first batch's timestamp
    /// (`segment.ms`).
    pub roll_timer_start: Option<i64>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes from here to `size` have had their CRC checked by this process: appended
    /// batches are validated in memory before they are written, and recovery validates what
    /// it scans. Only a segment trusted at open has an unchecked prefix, which reads check.
    pub verified_from: u64,
    /// The transactions aborted by markers in this segment. Filled by appends of markers, by
    /// recovery (loaded or rebuilt) and by compaction (carried over); empty until then.
    pub txn_index: TxnIndex,
    /// Damaged ranges found by recovery or by a read, in position order; `None` for a healthy
    /// segment (almost all of them), so that a read plan clones nothing. A damaged segment is
    /// never appended to: recovery rolls a new one after it.
    pub damage: Option<Arc<[Damage]>>,
    offset_of_max_timestamp: i64,
    bytes_since_index_entry: u64,
    index_interval: u64,
}

/// A range of a segment file that holds no valid batch, with the offsets it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    /// The first byte that is not part of a valid batch.
    pub position: u64,
    /// Where valid batches resume: the next valid batch, or the end of the file.
    pub end: u64,
    /// The offsets whose batches were in the range, as the batches around it tell:
    /// `[first_offset, end_offset)`. Empty when the bytes held no offsets (garbage after the
    /// last batch of a segment whose successor continues the offsets).
    pub first_offset: i64,
    /// See `first_offset`.
    pub end_offset: i64,
    /// Which check the bytes at `position` failed.
    pub reason: &'static str,
}

/// Offsets a partition cannot serve because the bytes that held them are damaged or missing.
/// Reads of them fail with [`Error::CorruptRecord`]; the offsets on both sides stay readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostRange {
    /// The first offset lost.
    pub first_offset: i64,
    /// The offset after the last one lost: where reads work again.
    pub end_offset: i64,
    /// The segment file holding the damage (for a gap, the segment after it).
    pub file: PathBuf,
    /// The byte position of the damage in `file`.
    pub position: u64,
    /// Which check the bytes failed.
    pub reason: &'static str,
}

/// How a scan judges what it finds (see the module doc).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanRules {
    /// Offsets below this were durable (fsynced, or the log closed cleanly): damage there is
    /// kept and reported. Invalid bytes where the next offset is at or past it are a torn,
    /// unflushed tail. `i64::MAX` never tears: after a clean shutdown, and for scans that
    /// only report (a read's rescan, `verify`).
    pub flushed_below: i64,
    /// The log end the checkpoints knew of: where the offsets lost to damage at the end of
    /// the last segment end.
    pub known_end: i64,
    /// Offsets continue from batch to batch: no compaction ever ran on the topic.
    pub contiguous: bool,
    /// The next segment's base offset: every batch of this segment ends before it.
    pub upper: Option<i64>,
}

/// Invalid bytes past the recovery point, from `position` to the end of the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Torn {
    pub position: u64,
    pub reason: &'static str,
}

/// What a scan found past the batches it observed.
#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    /// Damaged ranges, in position order.
    pub damage: Vec<Damage>,
    /// A torn tail, where the scan stopped.
    pub torn: Option<Torn>,
}

/// The offsets a batch must have to follow the one before it: exactly `expected` when
/// `exact`, else at least that; within the segment's relative range and below `upper`.
pub(crate) fn check_offsets(
    b: &RecordBatch<'_>,
    segment_base: i64,
    expected: i64,
    exact: bool,
    upper: Option<i64>,
) -> std::result::Result<(), &'static str> {
    let base = b.base_offset();
    let delta = b.last_offset_delta();
    if delta < 0 {
        return Err("negative last offset delta");
    }
    if exact && base != expected {
        return Err("batch offset does not continue the previous batch");
    }
    if base < expected {
        return Err("batch offsets out of order");
    }
    let last = base
        .checked_add(i64::from(delta))
        .ok_or("batch offset overflows")?;
    if base < segment_base || last - segment_base > i64::from(i32::MAX) {
        return Err("batch offset outside its segment");
    }
    if upper.is_some_and(|u| last >= u) {
        return Err("batch offset reaches into the next segment");
    }
    Ok(())
}

/// [`check_offsets`] on a header's base offset and last offset delta alone.
fn offsets_plausible(
    base: i64,
    delta: i32,
    segment_base: i64,
    expected: i64,
    upper: Option<i64>,
) -> bool {
    let Some(last) = base.checked_add(i64::from(delta)) else {
        return false;
    };
    delta >= 0
        && base >= expected
        && base >= segment_base
        && last - segment_base <= i64::from(i32::MAX)
        && upper.is_none_or(|u| last < u)
}

/// Reads every batch of `file` from `start` (where the batch with offset `start_offset`
/// begins, exactly if `exact_start`) to `file_len`, checking framing, CRC, records and
/// offsets, and calls `observe` with each valid one. Damage is skipped over by searching for
/// the next valid batch ([`resync`]); a torn tail ends the scan.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_batches(
    file: &Arc<File>,
    path: &Path,
    segment_base: i64,
    start: u64,
    start_offset: i64,
    exact_start: bool,
    file_len: u64,
    rules: &ScanRules,
    mut observe: impl FnMut(u64, &BatchMeta),
) -> Result<ScanOutcome> {
    let mut out = ScanOutcome::default();
    let mut pos = start;
    let mut expected = start_offset;
    let mut exact = exact_start;
    'resume: loop {
        let mut scanner = Scanner::new(file.clone(), path, pos, file_len);
        let reason = loop {
            let position = scanner.position();
            pos = position;
            let batch = match scanner.next_batch() {
                Ok(None) => return Ok(out),
                Ok(Some(b)) => b,
                Err(ScanError::Io(e)) => return Err(e),
                Err(ScanError::Invalid(reason)) => break reason,
            };
            if let Err(e) = batch.validate() {
                break e.0;
            }
            if let Err(reason) = check_offsets(&batch, segment_base, expected, exact, rules.upper) {
                break reason;
            }
            expected = batch.next_offset();
            exact = rules.contiguous;
            observe(position, &BatchMeta::of(&batch));
        };
        if expected >= rules.flushed_below {
            out.torn = Some(Torn {
                position: pos,
                reason,
            });
            return Ok(out);
        }
        match resync(
            file,
            path,
            segment_base,
            pos + 1,
            file_len,
            expected,
            rules.upper,
        )? {
            Some((at, base)) => {
                out.damage.push(Damage {
                    position: pos,
                    end: at,
                    first_offset: expected,
                    end_offset: base,
                    reason,
                });
                pos = at;
                expected = base;
                exact = true;
                continue 'resume;
            }
            None => {
                let end_offset = rules.upper.unwrap_or(rules.known_end).max(expected);
                out.damage.push(Damage {
                    position: pos,
                    end: file_len,
                    first_offset: expected,
                    end_offset,
                    reason,
                });
                return Ok(out);
            }
        }
    }
}

/// Bytes read at a time while searching damaged bytes for the next valid batch.
const RESYNC_CHUNK: usize = 1 << 20;

/// The first position at or after `from` where a valid batch starts whose offsets can follow
/// `expected` (and end before `upper`): `(position, base offset)`. A candidate must have the
/// magic byte, a length that fits, a matching CRC-32C and records that decode, so random
/// bytes pass with a probability far below 2^-32.
fn resync(
    file: &Arc<File>,
    path: &Path,
    segment_base: i64,
    from: u64,
    file_len: u64,
    expected: i64,
    upper: Option<i64>,
) -> Result<Option<(u64, i64)>> {
    const MAGIC_AT: usize = 16;
    let mut chunk = Vec::new();
    let mut candidate = Vec::new();
    let mut chunk_start = from;
    while chunk_start + (codec::BATCH_HEADER_LEN as u64) <= file_len {
        let len = (file_len - chunk_start).min(RESYNC_CHUNK as u64) as usize;
        chunk.resize(len, 0);
        file.read_exact_at(&mut chunk, chunk_start)
            .map_err(Error::io(path))?;
        // Positions whose header lies wholly in this chunk; the next chunk starts at the first
        // position not tried.
        let tried = len.saturating_sub(codec::BATCH_HEADER_LEN - 1).max(1);
        for i in 0..tried.min(len) {
            if i + codec::BATCH_HEADER_LEN > len {
                break;
            }
            if chunk[i + MAGIC_AT] as i8 != codec::MAGIC {
                continue;
            }
            let Ok(Some((_, size))) = codec::peek_header(&chunk[i..]) else {
                continue;
            };
            let at = chunk_start + i as u64;
            if size > MAX_BATCH_BYTES || size as u64 > file_len - at {
                continue;
            }
            // The offsets first, from the header: random bytes almost never pass them, so the
            // body (up to 64 MiB) is read and CRC-checked only for a likely batch.
            let base = i64::from_be_bytes(chunk[i..i + 8].try_into().expect("8 bytes"));
            let delta = i32::from_be_bytes(chunk[i + 23..i + 27].try_into().expect("4 bytes"));
            if !offsets_plausible(base, delta, segment_base, expected, upper) {
                continue;
            }
            let bytes: &[u8] = if i + size <= len {
                &chunk[i..i + size]
            } else {
                candidate.resize(size, 0);
                file.read_exact_at(&mut candidate, at)
                    .map_err(Error::io(path))?;
                &candidate
            };
            let Ok(batch) = RecordBatch::new(bytes) else {
                continue;
            };
            if batch.validate().is_ok()
                && check_offsets(&batch, segment_base, expected, false, upper).is_ok()
            {
                return Ok(Some((at, batch.base_offset())));
            }
        }
        chunk_start += tried as u64;
    }
    Ok(None)
}

impl Segment {
    pub(crate) fn create(dir: &Path, base_offset: i64, index_interval: u32) -> Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(Segment::empty(base_offset, file, path, index_interval))
    }

    fn empty(
        base_offset: i64,
        file: impl Into<Arc<File>>,
        path: PathBuf,
        index_interval: u32,
    ) -> Segment {
        Segment {
            base_offset,
            file: file.into(),
            path,
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            roll_timer_start: None,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            verified_from: 0,
            txn_index: TxnIndex::default(),
            damage: None,
            offset_of_max_timestamp: base_offset,
            bytes_since_index_entry: 0,
            index_interval: u64::from(index_interval),
        }
    }

    /// Opens an existing segment file.
    ///
    /// A `trusted` segment (wholly below the recovery point: fsynced, or closed cleanly) loads
    /// its index files and checks only the batches after the last index entry. Any other
    /// segment, or one whose index files fail their checks or whose tail is not clean, is
    /// scanned in full, with the indexes rebuilt. Damage is recorded in the segment
    /// ([`Segment::damage`]); a torn tail is returned for the caller to truncate.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        trusted: bool,
        rules: &ScanRules,
    ) -> Result<(Segment, Option<Torn>)> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let file_len = file.metadata().map_err(Error::io(&path))?.len();
        let mut seg = Segment::empty(base_offset, file, path, index_interval);
        if trusted && let Some((index, time_index)) = seg.load_indexes(dir, file_len) {
            let (rel, start) = index.last_entry().unwrap_or((0, 0));
            let start = u64::from(start);
            if let Some((ts, rel)) = time_index.last() {
                seg.max_timestamp = ts;
                seg.offset_of_max_timestamp = base_offset + i64::from(rel);
            }
            seg.index = index;
            seg.time_index = time_index;
            seg.size = start;
            seg.verified_from = start;
            seg.next_offset = base_offset + i64::from(rel);
            let exact = start > 0 || rules.contiguous;
            let outcome = seg.scan(start, seg.next_offset, exact, file_len, rules)?;
            if outcome.damage.is_empty() && outcome.torn.is_none() {
                return Ok((seg, None));
            }
            // No batch where the index says, or a bad tail: the index may be what is wrong.
            // Scan the whole segment before judging anything.
            seg = Segment::empty(base_offset, Arc::clone(&seg.file), seg.path, index_interval);
        }
        let outcome = seg.scan(0, base_offset, rules.contiguous, file_len, rules)?;
        seg.set_damage(outcome.damage);
        Ok((seg, outcome.torn))
    }

    /// Scans from `start` (the batch with offset `start_offset`) to `file_len`, extending the
    /// segment's in-memory state over the valid batches.
    fn scan(
        &mut self,
        start: u64,
        start_offset: i64,
        exact: bool,
        file_len: u64,
        rules: &ScanRules,
    ) -> Result<ScanOutcome> {
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let outcome = scan_batches(
            &file,
            &path,
            self.base_offset,
            start,
            start_offset,
            exact,
            file_len,
            rules,
            |position, meta| {
                if self.size < position {
                    // Valid batches resume after damage: start an index entry there, so that
                    // lookups past the damage never walk into it.
                    self.bytes_since_index_entry = u64::MAX;
                }
                self.observe(position, meta)
            },
        )?;
        Ok(outcome)
    }

    fn empty_shared(
        base_offset: i64,
        file: Arc<File>,
        path: &Path,
        index_interval: u32,
    ) -> Segment {
        Segment::empty(base_offset, file, path.to_path_buf(), index_interval)
    }

    /// Records the damage a scan found. The segment's offsets extend over the offsets the
    /// damage lost, so that reads of them find this segment and its error.
    pub(crate) fn set_damage(&mut self, damage: Vec<Damage>) {
        if let Some(end) = damage.iter().map(|d| d.end_offset).max() {
            self.next_offset = self.next_offset.max(end);
        }
        self.damage = (!damage.is_empty()).then(|| damage.into());
    }

    /// Scans the whole segment again (at open, when a batch the open did not read fails its
    /// checks) and takes the damage and indexes found.
    pub(crate) fn rescan_in_place(&mut self, contiguous: bool) -> Result<()> {
        let rules = ScanRules {
            flushed_below: i64::MAX,
            known_end: self.next_offset,
            contiguous,
            upper: Some(self.next_offset),
        };
        let interval = u32::try_from(self.index_interval).unwrap_or(u32::MAX);
        let fresh = Segment::rescan(
            &self.file,
            &self.path,
            self.base_offset,
            self.size,
            interval,
            &rules,
        )?;
        fresh.report_damage("recovery");
        self.damage = fresh.damage;
        self.index = fresh.index;
        self.time_index = fresh.time_index;
        self.size = fresh.size;
        self.verified_from = 0;
        Ok(())
    }

    /// Logs the segment's damage at error level; `found_by` says what found it.
    pub(crate) fn report_damage(&self, found_by: &str) {
        for d in self.damage.iter().flat_map(|d| d.iter()) {
            tracing::error!(
                path = ?self.path,
                position = d.position,
                end = d.end,
                first_offset = d.first_offset,
                end_offset = d.end_offset,
                reason = d.reason,
                found_by,
                "damaged bytes in a segment: kept; reads of the offsets they held fail with CorruptRecord"
            );
        }
    }

    /// Scans the whole segment again, up to `size`, as a read does when it finds a batch that
    /// fails its checks in the part of a trusted segment that recovery did not scan. Returns
    /// the damage and fresh indexes, all from the file as it is now; the caller installs them
    /// if the segment has not changed meanwhile.
    pub(crate) fn rescan(
        file: &Arc<File>,
        path: &Path,
        base_offset: i64,
        size: u64,
        index_interval: u32,
        rules: &ScanRules,
    ) -> Result<Segment> {
        let mut seg = Segment::empty_shared(base_offset, Arc::clone(file), path, index_interval);
        let outcome = seg.scan(0, base_offset, rules.contiguous, size, rules)?;
        seg.set_damage(outcome.damage);
        Ok(seg)
    }

    fn load_indexes(&self, dir: &Path, file_len: u64) -> Option<(OffsetIndex, TimeIndex)> {
        let index = std::fs::read(dir.join(file_name(self.base_offset, "index"))).ok()?;
        let time = std::fs::read(dir.join(file_name(self.base_offset, "timeindex"))).ok()?;
        let index = OffsetIndex::decode(&index, file_len)?;
        let time = TimeIndex::decode(&time)?;
        Some((index, time))
    }

    /// Records a batch written (or found) at `position`: size, offsets, timestamps, indexes.
    pub(crate) fn observe(&mut self, position: u64, b: &BatchMeta) {
        let relative = (b.base_offset - self.base_offset) as u32;
        if self.bytes_since_index_entry > self.index_interval {
            self.index.push(relative, position as u32);
            self.time_index.push(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += u64::from(b.size);
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        self.next_offset = b.next_offset;
        self.size = position + u64::from(b.size);
    }

    /// Writes `bytes` (whole batches already assigned their offsets) at the end of the file.
    /// The caller updates the in-memory state with [`Segment::observe`] after success.
    pub(crate) fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.size)
    }

    pub(crate) fn fsync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the file back to `size` bytes, dropping a torn or corrupt tail.
    pub(crate) fn truncate_file(&mut self, size: u64) -> Result<()> {
        self.file.set_len(size).map_err(Error::io(&self.path))?;
        self.file.sync_all().map_err(Error::io(&self.path))?;
        self.size = size;
        Ok(())
    }

    /// Seals the segment's time index with its largest timestamp, then writes both indexes
    /// (atomically; they are checked on load and rebuilt if stale).
    pub(crate) fn save_indexes(&mut self, dir: &Path, durable: bool) -> Result<()> {
        if self.max_timestamp != NO_TIMESTAMP {
            self.time_index.push(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
        }
        write_atomic(
            &dir.join(file_name(self.base_offset, "index")),
            &self.index.encode(),
            durable,
        )?;
        write_atomic(
            &dir.join(file_name(self.base_offset, "timeindex")),
            &self.time_index.encode(),
            durable,
        )
    }

    /// Writes the aborted-transaction index, even when empty (see `txn_index`). A non-empty
    /// index is fsynced whatever `durable` says, so that an open rarely has to rebuild it from
    /// the segment; aborts are rare, so this costs little.
    pub(crate) fn save_txn_index(&self, dir: &Path, durable: bool) -> Result<()> {
        self.txn_index
            .save(dir, self.base_offset, durable || !self.txn_index.is_empty())
    }

    /// Removes the segment's files. Readers holding the file handle finish their reads.
    pub(crate) fn delete_files(&self, dir: &Path) -> Result<()> {
        for ext in SEGMENT_FILE_EXTS {
            remove_if_exists(&dir.join(file_name(self.base_offset, ext)))?;
        }
        Ok(())
    }

    /// Where to start scanning for `offset`: `(position, offset of the batch there, whether
    /// that offset is exact)`. Never before a damaged range that ends at or below `offset`.
    pub(crate) fn lookup(&self, offset: i64) -> (u64, i64, bool) {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let (mut position, mut at, mut exact) = match self.index.lookup_entry(rel) {
            Some((r, p)) => (u64::from(p), self.base_offset + i64::from(r), true),
            None => (0, self.base_offset, false),
        };
        for d in self.damage.iter().flat_map(|d| d.iter()) {
            if d.end > position && d.end_offset <= offset && d.end < self.size {
                (position, at, exact) = (d.end, d.end_offset, true);
            }
        }
        (position, at, exact)
    }

    /// Where the readable bytes from `position` on end: the segment's size, or the first
    /// damaged range after `position`.
    pub(crate) fn readable_end(&self, position: u64) -> u64 {
        self.damage
            .iter()
            .flat_map(|d| d.iter())
            .find(|d| d.position >= position)
            .map_or(self.size, |d| d.position.min(self.size))
    }

    /// Where to start scanning for the first record with a timestamp at or after `target`.
    pub(crate) fn lookup_time(&self, target: i64) -> u64 {
        let rel = self.time_index.lookup(target);
        self.lookup(self.base_offset + i64::from(rel)).0
    }
}

pub(crate) enum ScanError {
    Io(Error),
    Invalid(&'static str),
}

/// Sequential reader of the batches in `[start, end)` of a segment file, in large chunks.
/// Checks framing (lengths against what the file holds and [`MAX_BATCH_BYTES`], magic) but not
/// CRCs; callers validate what they use.
pub(crate) struct Scanner {
    file: Arc<File>,
    path: PathBuf,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Read cursor within `buf`.
    cursor: usize,
    end: u64,
    /// Damaged ranges to step over.
    skip: Option<Arc<[Damage]>>,
}

impl Scanner {
    pub(crate) fn new(file: Arc<File>, path: &Path, start: u64, end: u64) -> Scanner {
        Scanner {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            buf_pos: start,
            cursor: 0,
            end,
            skip: None,
        }
    }

    /// A scanner of `seg`'s batches in `[start, end)` that steps over its damaged ranges.
    pub(crate) fn over(seg: &Segment, start: u64, end: u64) -> Scanner {
        let mut scanner = Scanner::new(Arc::clone(&seg.file), &seg.path, start, end);
        scanner.skip = seg.damage.clone();
        scanner
    }

    pub(crate) fn position(&self) -> u64 {
        self.buf_pos + self.cursor as u64
    }

    /// Ensures `want` bytes from the cursor are buffered (`want` must not pass `end`).
    fn fill(&mut self, want: usize) -> std::result::Result<(), ScanError> {
        if self.buf.len() - self.cursor >= want {
            return Ok(());
        }
        self.buf.drain(..self.cursor);
        self.buf_pos += self.cursor as u64;
        self.cursor = 0;
        let have = self.buf.len();
        let remaining_in_file = (self.end - self.buf_pos) as usize;
        let target = want.max(SCAN_CHUNK).min(remaining_in_file);
        self.buf.resize(target, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], self.buf_pos + have as u64)
            .map_err(|e| ScanError::Io(Error::io(&self.path)(e)))
    }

    /// The next batch, `None` at the end, or why the bytes at the cursor are not a batch.
    pub(crate) fn next_batch(&mut self) -> std::result::Result<Option<RecordBatch<'_>>, ScanError> {
        Ok(self.next_batch_at()?.map(|(_, b)| b))
    }

    /// [`Scanner::next_batch`] with the batch's position (after any damaged range stepped
    /// over).
    pub(crate) fn next_batch_at(
        &mut self,
    ) -> std::result::Result<Option<(u64, RecordBatch<'_>)>, ScanError> {
        let position = self.position();
        if let Some(d) = self.skip.as_deref().and_then(|s| {
            s.iter()
                .find(|d| d.position <= position && position < d.end)
        }) {
            self.buf.clear();
            self.cursor = 0;
            self.buf_pos = d.end.min(self.end);
        }
        let remaining = self.end.saturating_sub(self.position());
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < LOG_OVERHEAD as u64 {
            return Err(ScanError::Invalid("partial batch header at the end"));
        }
        self.fill(LOG_OVERHEAD)?;
        let (_, size) = codec::peek_header(&self.buf[self.cursor..])
            .map_err(|e| ScanError::Invalid(e.0))?
            .ok_or(ScanError::Invalid("partial batch header at the end"))?;
        if size > MAX_BATCH_BYTES {
            return Err(ScanError::Invalid(
                "batch length above the largest batch allowed",
            ));
        }
        if size as u64 > remaining {
            return Err(ScanError::Invalid(
                "batch extends past the end of the segment",
            ));
        }
        self.fill(size)?;
        let at = self.position();
        let start = self.cursor;
        self.cursor += size;
        RecordBatch::new(&self.buf[start..start + size])
            .map(|b| Some((at, b)))
            .map_err(|e| ScanError::Invalid(e.0))
    }
}
