//! Opening a partition directory: finish interrupted compactions, then load segments, checking
//! every batch written after the last point known to be durable.
//!
//! ```text
//!  segments wholly below the recovery point     from the segment holding it to the end
//!  (fsynced, or the log closed cleanly)          (may hold torn or unflushed writes)
//!  ---------------------------------------      ----------------------------------------
//!  load .index/.timeindex (CRC-checked),        scan every batch: length bound, magic,
//!  scan only the tail after the last entry      CRC, records, offsets; rebuild indexes
//!                               \                /
//!    invalid bytes below the recovery point: damage, kept and reported; the scan resumes at
//!      the next valid batch, and reads of the offsets in between fail with CorruptRecord
//!    invalid bytes at or past it: the torn tail; truncate there, delete later segments
//! ```
//!
//! This is Kafka's rule: only the unflushed tail is ever cut. Damage anywhere else costs the
//! offsets it covers and nothing more. A damaged last segment is sealed (a new segment takes
//! the appends), and in a topic whose offsets are contiguous (never compacted) offsets that
//! no segment holds are a gap, reported like damage.
//!
//! Nothing read from disk is trusted before it is checked: batch lengths are bounded by what
//! the file holds and by the largest batch allowed before any buffer is sized from them.
//!
//! Last, the producers' state (idempotence and ongoing transactions) is rebuilt from the newest
//! usable snapshot and the batches after it ([`ProducerStateManager::load`]), once truncation
//! has settled the log end. The same replay rebuilds the aborted-transaction index of every
//! segment that was scanned, or whose index file fails its checks (see `txn_index`); trusted
//! segments keep their checked file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::producer_state::ProducerStateManager;
use super::segment::{self, LostRange, SEGMENT_FILE_EXTS, ScanError, ScanRules, Scanner, Segment};
use super::swap;
use super::txn_index::{self, AbortedTxn, TxnIndex};
use crate::codec::{ControlRecordType, EndTransactionMarker};
use crate::error::{Error, Result};
use crate::storage::config::TopicConfig;
use crate::storage::fs::{fsync_dir, remove_if_exists};

/// A partition's state as found on disk.
#[derive(Debug)]
pub(crate) struct Opened {
    pub segments: BTreeMap<i64, Segment>,
    pub log_start_offset: i64,
    pub recovery_point: i64,
    pub cleaner_checkpoint: i64,
    /// Bytes dropped from the end of the log because they were torn or corrupt.
    pub truncated_bytes: u64,
    /// Idempotent producers' state, from the newest snapshot and the batches after it.
    pub producer_state: ProducerStateManager,
    /// Offsets in a gap between segments (contiguous topics only). Damaged ranges inside
    /// segments are in the segments.
    pub gaps: Vec<LostRange>,
    /// Offsets may have gaps: compaction may have run on the topic.
    pub compacted: bool,
}

/// What the log knows about a partition before opening it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recover {
    /// The log was closed cleanly: every segment is trusted, and nothing is torn.
    pub clean_shutdown: bool,
    /// From the checkpoint: everything below was fsynced. `None` when the checkpoint does not
    /// name the partition (or is damaged).
    pub recovery_point: Option<i64>,
    /// From the checkpoint: everything below was compacted.
    pub cleaner_checkpoint: i64,
    /// From the checkpoint: the first offset retention kept. `None` when not known.
    pub log_start_offset: Option<i64>,
    /// Offsets may have gaps (compaction may have run on the topic).
    pub compacted: bool,
}

impl Recover {
    /// A new, empty partition.
    pub(crate) fn new_partition(compacted: bool) -> Recover {
        Recover {
            clean_shutdown: true,
            recovery_point: Some(0),
            cleaner_checkpoint: 0,
            log_start_offset: Some(0),
            compacted,
        }
    }
}

/// Opens (or creates) the partition in `dir`.
///
/// After a clean shutdown every segment is trusted; otherwise segments from the one holding
/// the recovery point on are scanned in full.
pub(crate) fn open_partition(dir: &Path, config: &TopicConfig, how: Recover) -> Result<Opened> {
    let Recover {
        clean_shutdown,
        recovery_point,
        cleaner_checkpoint,
        log_start_offset: checkpointed_start,
        compacted,
    } = how;
    // Bytes past the recovery point that are not a valid batch are the unflushed tail (Kafka's
    // rule). After a clean shutdown the recovery point is the log end; without a checkpoint
    // nothing is known unflushed then, and nothing is cut.
    let flushed_below = match (clean_shutdown, recovery_point) {
        (_, Some(rp)) => rp,
        (true, None) => i64::MAX,
        (false, None) => 0,
    };
    let recovery_point = recovery_point.unwrap_or(0);
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    swap::complete_swaps(dir)?;

    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A `.txnswap` whose `.swap` is gone was written by a compaction that never reached
        // its commit point (`complete_swaps` above consumed every committed one).
        if name.ends_with(".tmp") || name.ends_with(".cleaned") || swap::is_txn_swap(&name) {
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = segment::parse_base_offset(&name, "log") {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    // Index files whose segment is gone are leftovers of a crash during deletion.
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let base = SEGMENT_FILE_EXTS[1..]
            .iter()
            .find_map(|ext| segment::parse_base_offset(&name, ext));
        if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
            remove_if_exists(&entry.path())?;
        }
    }

    let interval = config.index_interval_bytes;
    let mut segments = BTreeMap::new();
    let mut truncated_bytes = 0u64;
    let mut scanned_untrusted = false;
    let mut stop_at = None;
    // Segments whose aborted-transaction index is rebuilt rather than read: those not known
    // durable (scanned in full), damaged ones and the one cut by truncation.
    let mut rebuild_txn_index = BTreeSet::new();
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let trusted = clean_shutdown || next_base.is_some_and(|n| n <= recovery_point);
        scanned_untrusted |= !trusted;
        if !trusted {
            rebuild_txn_index.insert(base);
        }
        let rules = ScanRules {
            flushed_below,
            known_end: recovery_point,
            contiguous: !compacted,
            upper: next_base,
        };
        let (mut seg, torn) = Segment::open(dir, base, interval, trusted, &rules)?;
        if seg.damage.is_some() {
            seg.report_damage("recovery");
            rebuild_txn_index.insert(base);
        }
        if let Some(torn) = torn {
            let file_len = seg.file.metadata().map_err(Error::io(&seg.path))?.len();
            tracing::warn!(
                ?dir,
                base,
                position = torn.position,
                reason = torn.reason,
                "truncating an unflushed tail at an invalid batch"
            );
            truncated_bytes += file_len - torn.position;
            seg.truncate_file(torn.position)?;
            rebuild_txn_index.insert(base);
            segments.insert(base, seg);
            stop_at = Some(i + 1);
            break;
        }
        segments.insert(base, seg);
    }
    if let Some(first_dropped) = stop_at {
        // Past a torn tail everything is unflushed too (the recovery point lies before it).
        for &base in &bases[first_dropped..] {
            let path = dir.join(segment::file_name(base, "log"));
            truncated_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            for ext in SEGMENT_FILE_EXTS {
                remove_if_exists(&dir.join(segment::file_name(base, ext)))?;
            }
        }
        fsync_dir(dir)?;
    }
    // Drop empty segments other than the first and the last: they hold nothing. (An empty
    // first segment is what compaction leaves to keep the log start offset.) A segment whose
    // bytes are all damage is not empty.
    let first = segments.keys().next().copied();
    let last = segments.keys().next_back().copied();
    let empty: Vec<i64> = segments
        .iter()
        .filter(|(b, s)| {
            s.size == 0 && s.damage.is_none() && Some(**b) != last && Some(**b) != first
        })
        .map(|(b, _)| *b)
        .collect();
    for b in empty {
        if let Some(s) = segments.remove(&b) {
            s.delete_files(dir)?;
        }
    }
    // After a torn tail was cut, the log legitimately ends before the recovery point.
    let spans: Vec<SegmentSpan<'_>> = segments.values().map(SegmentSpan::of).collect();
    let gaps = missing_offsets(
        &spans,
        checkpointed_start,
        how.recovery_point.filter(|_| stop_at.is_none()),
        compacted,
    );
    for g in &gaps {
        tracing::error!(
            ?dir,
            first_offset = g.first_offset,
            end_offset = g.end_offset,
            reason = g.reason,
            "offsets missing: reads of them fail with CorruptRecord"
        );
    }
    // Offsets never go back: the log goes on from the recovery point at least.
    if stop_at.is_none()
        && log_end_offset_of(&segments) < recovery_point
        && !segments.contains_key(&recovery_point)
        || segments.is_empty()
    {
        let start = recovery_point.max(0);
        segments.insert(start, Segment::create(dir, start, interval)?);
        fsync_dir(dir)?;
    }
    // As in Kafka, `segment.ms` counts from the first batch's timestamp, which a restart
    // does not reset: a log reopened more often than `segment.ms` still rolls (and so still
    // gets compacted and retention-deleted).
    if let Some(active) = segments.values_mut().next_back()
        && active.size > 0
        && let Ok(Some(first)) = segment::Scanner::over(active, 0, active.size).next_batch()
        && first.max_timestamp() != crate::codec::NO_TIMESTAMP
    {
        active.roll_timer_start = Some(first.max_timestamp());
    }
    let first_base = *segments.keys().next().expect("at least one segment");
    // Retention moves the checkpointed log start before it deletes a segment: segments below
    // it are what a crash left of a retention pass (the next pass deletes them), and offsets
    // missing above it are lost (`missing_offsets`).
    let log_start_offset = match checkpointed_start {
        Some(start) => start.min(log_end_offset_of(&segments)),
        None => first_base,
    };
    let log_end_offset = log_end_offset_of(&segments);
    // What was scanned is now known good; make it durable so the recovery point can cover it.
    if scanned_untrusted || truncated_bytes > 0 {
        for s in segments.values() {
            s.fsync().map_err(Error::io(&s.path))?;
        }
    }
    // Trusted segments' transaction indexes are loaded if they pass their checks. An empty
    // segment (a new partition's, or one just rolled) has nothing to index and may have no
    // file yet.
    for (base, seg) in segments.iter_mut() {
        if rebuild_txn_index.contains(base) || seg.size == 0 {
            continue;
        }
        match load_txn_index(dir, seg)? {
            Ok(index) => seg.txn_index = index,
            Err(reason) => {
                tracing::warn!(
                    ?dir,
                    base,
                    reason,
                    "rebuilding a damaged aborted-transaction index"
                );
                rebuild_txn_index.insert(*base);
            }
        }
    }
    // Segments dropped above are not rebuilt.
    rebuild_txn_index.retain(|base| segments.contains_key(base));
    // After truncation, so that snapshots above the new log end are dropped.
    let producer_state = ProducerStateManager::load(
        dir,
        &mut segments,
        log_start_offset,
        log_end_offset,
        &rebuild_txn_index,
        !compacted,
    )?;
    // A damaged segment is never appended to: the appends go to a new one after it. (After
    // the replay, which may have found damage in a segment the open did not read whole.)
    if let Some(last) = segments.values().next_back()
        && last.damage.is_some()
    {
        let start = last.next_offset;
        segments.insert(start, Segment::create(dir, start, interval)?);
        fsync_dir(dir)?;
    }
    // Durably: once the recovery point covers these segments, their index files are trusted.
    // A file that cannot be written (a full disk) is removed, so that the next open rebuilds
    // it too; the log opens either way.
    for base in &rebuild_txn_index {
        if let Some(seg) = segments.get(base)
            && let Err(e) = seg.save_txn_index(dir, true)
        {
            tracing::warn!(?dir, base, error = %e, "cannot write a rebuilt aborted-transaction index");
            remove_if_exists(&txn_index::path(dir, *base))?;
        }
    }
    Ok(Opened {
        producer_state,
        log_start_offset,
        recovery_point: log_end_offset,
        cleaner_checkpoint: cleaner_checkpoint.clamp(log_start_offset, log_end_offset),
        segments,
        truncated_bytes,
        gaps,
        compacted,
    })
}

fn log_end_offset_of(segments: &BTreeMap<i64, Segment>) -> i64 {
    segments.values().next_back().map_or(0, |s| s.next_offset)
}

/// A segment's place in the partition, as [`missing_offsets`] sees it.
pub(crate) struct SegmentSpan<'a> {
    pub base_offset: i64,
    /// The offset after its last batch (or after the offsets its damage lost).
    pub next_offset: i64,
    /// Bytes of valid batches.
    pub size: u64,
    pub path: &'a Path,
}

impl<'a> SegmentSpan<'a> {
    pub(crate) fn of(seg: &'a Segment) -> Self {
        SegmentSpan {
            base_offset: seg.base_offset,
            next_offset: seg.next_offset,
            size: seg.size,
            path: &seg.path,
        }
    }
}

/// The offsets no segment holds that the partition's bookkeeping says it has: between the
/// checkpointed log start and the first segment (retention moves that checkpoint before it
/// deletes anything), between two segments of a topic never compacted, and between the last
/// segment and the checkpointed recovery point (everything below it was on disk). `spans` are
/// in offset order; `recovery_point` is `None` when it does not bound the log end (unknown, or
/// a torn tail was cut).
pub(crate) fn missing_offsets(
    spans: &[SegmentSpan<'_>],
    log_start: Option<i64>,
    recovery_point: Option<i64>,
    compacted: bool,
) -> Vec<LostRange> {
    let mut lost = Vec::new();
    let mut gap = |first_offset: i64, end_offset: i64, at: Option<&SegmentSpan<'_>>, reason| {
        if first_offset < end_offset {
            lost.push(LostRange {
                first_offset,
                end_offset,
                file: at.map(|s| s.path.to_path_buf()).unwrap_or_default(),
                position: at.map_or(0, |s| s.size),
                reason,
            });
        }
    };
    let first = spans.first();
    let first_base = first.map(|s| s.base_offset);
    if let Some(start) = log_start {
        let end = first_base.or(recovery_point).unwrap_or(start);
        gap(
            start,
            end,
            first.map(|s| SegmentSpan { size: 0, ..*s }).as_ref(),
            "offsets missing before the first segment (a segment file is missing)",
        );
    }
    if !compacted {
        for pair in spans.windows(2) {
            gap(
                pair[0].next_offset,
                pair[1].base_offset,
                Some(&SegmentSpan { size: 0, ..pair[1] }),
                "offsets missing before this segment (a segment file is missing or was cut short)",
            );
        }
    }
    if let (Some(last), Some(rp)) = (spans.last(), recovery_point) {
        gap(
            last.next_offset,
            rp,
            Some(last),
            "the log ends before its recovery point (a segment was cut short or removed)",
        );
    }
    lost
}

/// Loads the aborted-transaction index of a segment trusted at open: `Ok(Ok(index))`, or `Ok(Err(reason))`
/// when the file is missing or fails a check and must be rebuilt.
fn load_txn_index(
    dir: &Path,
    seg: &Segment,
) -> Result<std::result::Result<TxnIndex, &'static str>> {
    let path = txn_index::path(dir, seg.base_offset);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("missing"));
        }
        Err(e) => return Err(Error::io(&path)(e)),
    };
    let index = match TxnIndex::decode(&bytes, seg.base_offset, seg.next_offset) {
        Ok(i) => i,
        Err(reason) => return Ok(Err(reason)),
    };
    for e in index.entries() {
        if let Err(reason) = check_marker(seg, e)? {
            return Ok(Err(reason));
        }
    }
    Ok(Ok(index))
}

/// Whether `entry`'s last offset holds an abort marker of its producer, with a good CRC.
/// `Err` only for i/o errors.
fn check_marker(
    seg: &Segment,
    entry: &AbortedTxn,
) -> Result<std::result::Result<(), &'static str>> {
    let mut scanner = Scanner::over(seg, seg.lookup(entry.last_offset).0, seg.size);
    loop {
        let batch = match scanner.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Err("no batch at the entry's marker offset")),
            Err(ScanError::Io(e)) => return Err(e),
            Err(ScanError::Invalid(reason)) => return Ok(Err(reason)),
        };
        if batch.next_offset() <= entry.last_offset {
            continue;
        }
        let is_abort_marker = batch.base_offset() == entry.last_offset
            && batch.producer_id() == entry.producer_id
            && batch.stored_crc() == batch.computed_crc()
            && EndTransactionMarker::of(&batch).is_ok_and(|m| m.kind == ControlRecordType::Abort);
        return Ok(if is_abort_marker {
            Ok(())
        } else {
            Err("the entry's marker offset holds no abort marker of its producer")
        });
    }
}
