//! Opening a partition directory: finish interrupted compactions, then load segments, checking
//! every batch written after the last point known to be durable.
//!
//! ```text
//!  segments wholly below the recovery point     from the segment holding it to the end
//!  (fsynced, or the log closed cleanly)          (may hold torn or unflushed writes)
//!  ---------------------------------------      ----------------------------------------
//!  load .index/.timeindex (CRC-checked),        scan every batch: length bound, magic,
//!  scan only the tail after the last entry      CRC, offsets in order; rebuild indexes
//!                               \                /
//!               the first invalid batch: truncate the file there, delete later segments
//! ```
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

use super::compaction;
use super::producer_state::ProducerStateManager;
use super::segment::{self, SEGMENT_FILE_EXTS, ScanEnd, Segment};
use super::txn_index::{self, TxnIndex};
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::fs::{fsync_dir, remove_if_exists};

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
}

/// Opens (or creates) the partition in `dir`.
///
/// `clean_shutdown` says the log was closed cleanly, so every segment is trusted; otherwise
/// segments from the one holding `recovery_point` on are scanned in full.
pub(crate) fn open_partition(
    dir: &Path,
    config: &TopicConfig,
    clean_shutdown: bool,
    recovery_point: i64,
    cleaner_checkpoint: i64,
) -> Result<Opened> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    compaction::complete_swaps(dir)?;

    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A `.txnswap` whose `.swap` is gone was written by a compaction that never reached
        // its commit point (`complete_swaps` above consumed every committed one).
        if name.ends_with(".tmp") || name.ends_with(".cleaned") || compaction::is_txn_swap(&name) {
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
    let mut prev_next_offset = i64::MIN;
    let mut stop_at = None;
    // Segments whose aborted-transaction index is rebuilt rather than read: those not known
    // durable (scanned in full) and the one cut by truncation.
    let mut rebuild_txn_index = BTreeSet::new();
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let trusted = clean_shutdown || next_base.is_some_and(|n| n <= recovery_point);
        scanned_untrusted |= !trusted;
        if !trusted {
            rebuild_txn_index.insert(base);
        }
        if base < prev_next_offset {
            tracing::error!(
                ?dir,
                base,
                "segment overlaps the previous one; dropping it and what follows"
            );
            stop_at = Some(i);
            break;
        }
        let (mut seg, end) = Segment::open(dir, base, interval, trusted)?;
        let file_len = seg.file.metadata().map_err(Error::io(&seg.path))?.len();
        if let ScanEnd::Invalid { position, reason } = end {
            tracing::warn!(
                ?dir,
                base,
                position,
                reason,
                "truncating the log at an invalid batch"
            );
            truncated_bytes += file_len - position;
            seg.truncate_file(position)?;
            rebuild_txn_index.insert(base);
            segments.insert(base, seg);
            stop_at = Some(i + 1);
            break;
        }
        prev_next_offset = seg.next_offset;
        segments.insert(base, seg);
    }
    if let Some(first_dropped) = stop_at {
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
    // first segment is what compaction leaves to keep the log start offset.)
    let first = segments.keys().next().copied();
    let last = segments.keys().next_back().copied();
    let empty: Vec<i64> = segments
        .iter()
        .filter(|(b, s)| s.size == 0 && Some(**b) != last && Some(**b) != first)
        .map(|(b, _)| *b)
        .collect();
    for b in empty {
        if let Some(s) = segments.remove(&b) {
            s.delete_files(dir)?;
        }
    }
    if segments.is_empty() {
        let start = recovery_point.max(0);
        segments.insert(start, Segment::create(dir, start, interval)?);
        fsync_dir(dir)?;
    }
    // As in Kafka, `segment.ms` counts from the first batch's timestamp, which a restart
    // does not reset: a log reopened more often than `segment.ms` still rolls (and so still
    // gets compacted and retention-deleted).
    if let Some(active) = segments.values_mut().next_back()
        && active.size > 0
        && let Ok(Some(first)) =
            segment::Scanner::new(active.file.clone(), &active.path, 0, active.size).next_batch()
        && first.max_timestamp() != crate::codec::NO_TIMESTAMP
    {
        active.roll_timer_start = Some(first.max_timestamp());
    }
    let log_start_offset = *segments.keys().next().expect("at least one segment");
    let log_end_offset = segments
        .values()
        .next_back()
        .expect("non-empty")
        .next_offset;
    // What was scanned is now known good; make it durable so the recovery point can cover it.
    if scanned_untrusted || truncated_bytes > 0 {
        for s in segments.values() {
            s.fsync().map_err(Error::io(&s.path))?;
        }
    }
    // Trusted segments' transaction indexes are loaded if they pass their checks.
    for (base, seg) in segments.iter_mut() {
        if rebuild_txn_index.contains(base) {
            continue;
        }
        match TxnIndex::load(dir, seg)? {
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
    )?;
    // Durably: once the recovery point covers these segments, their index files are trusted.
    let mut removed_stale = false;
    for base in &rebuild_txn_index {
        if let Some(seg) = segments.get(base) {
            let path = txn_index::path(dir, *base);
            removed_stale |= seg.txn_index.is_empty() && path.exists();
            seg.save_txn_index(dir, true)?;
        }
    }
    if removed_stale {
        fsync_dir(dir)?;
    }
    Ok(Opened {
        producer_state,
        log_start_offset,
        recovery_point: log_end_offset,
        cleaner_checkpoint: cleaner_checkpoint.clamp(log_start_offset, log_end_offset),
        segments,
        truncated_bytes,
    })
}
