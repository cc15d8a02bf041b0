//! Log compaction for `cleanup.policy=compact`: keep the latest record per key.
//!
//! ```text
//!  log start        cleaner checkpoint        first uncleanable        active
//!     | clean (compacted) |   dirty (new since)  |  too young / active  |
//!     [seg][seg][seg]......[seg][seg]............[seg (lag)] [seg (active)]
//!
//!  1. offset map: for every key in the dirty range, its latest offset
//!  2. rewrite [log start, first uncleanable) in groups of at most segment.bytes, keeping a
//!     record iff no later record has its key; keeping offsets (holes are fine) and each
//!     batch's producer id, epoch, sequence and offset range
//!  3. swap each group in: X.log.cleaned -> fsync -> X.<end>.swap (the commit point) ->
//!     delete the old segments -> X.log. A crash before the swap rename leaves the old
//!     segments; after it, opening the partition finishes the swap (`complete_swaps`).
//! ```
//!
//! Tombstones (null values) are kept for `delete.retention.ms` after compaction first sees
//! them: the cleaned batch records the horizon in its header (Kafka's KIP-534), and a later pass
//! past the horizon drops them.
//!
//! Transactions:
//!
//! - Nothing at or past the last stable offset is cleaned (the segment holding it ends the
//!   cleanable range): an undecided transaction's data stays as written until its marker says
//!   what it is.
//! - A transactional data batch of producer P inside an aborted transaction of P (from the
//!   aborted-transaction indexes of every segment) is dropped, and never enters the offset
//!   map, so aborted data can never shadow (and so delete) committed data ([`is_aborted`]).
//! - Control batches (commit and abort markers) are always copied unchanged. Kafka removes a
//!   marker once the data of its transaction is gone and `delete.retention.ms` has passed; this
//!   log keeps them: a marker is one small batch per transaction and partition, and keeping it
//!   keeps the producer's epoch in the log for a replay.
//! - The transactional bit, producer id and epoch of every kept data batch are kept, so
//!   read_committed filtering still applies after cleaning; each group's aborted-transaction
//!   entries are carried to the cleaned segment: written before the commit point as
//!   `X.<end>.txnswap` and renamed to `X.txnindex` when the swap completes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::Partition;
use super::segment::{self, ScanError, ScanRules, Scanner, Segment};
use super::swap::{replace_with_swap, swap_name, txn_swap_name};
use super::txn_index::TxnIndex;
use crate::codec::{BatchBuilder, BatchProducer, MAX_BATCH_BYTES, RecordBatch, patch};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::record::{Header, TimestampType};
use crate::storage::fs::{fsync_dir, remove_if_exists, write_atomic};

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanerStats {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Records read from the cleaned range.
    pub records_read: u64,
    /// Records dropped (superseded, or tombstones past their horizon).
    pub records_removed: u64,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes after cleaning.
    pub bytes_after: u64,
}

/// Producer id -> its aborted transactions' (first offset, marker offset), ascending. A
/// producer's transactions never overlap: the next starts after the marker of the last.
type AbortedRanges = HashMap<i64, Vec<(i64, i64)>>;

fn aborted_ranges<'a>(indexes: impl Iterator<Item = &'a TxnIndex>) -> AbortedRanges {
    let mut ranges = AbortedRanges::new();
    for e in indexes.flat_map(|i| i.entries()) {
        ranges
            .entry(e.producer_id)
            .or_default()
            .push((e.first_offset, e.last_offset));
    }
    for r in ranges.values_mut() {
        r.sort_unstable();
    }
    ranges
}

/// Whether a data batch belongs to an aborted transaction: it is transactional and lies
/// between the first offset and the abort marker of one of its producer's aborted
/// transactions.
fn is_aborted(batch: &RecordBatch<'_>, aborted: &AbortedRanges) -> bool {
    if !batch.is_transactional() || batch.is_control() {
        return false;
    }
    let Some(ranges) = aborted.get(&batch.producer_id()) else {
        return false;
    };
    let i = ranges.partition_point(|&(first, _)| first <= batch.base_offset());
    i > 0 && batch.last_offset() < ranges[i - 1].1
}

struct SourceSegment {
    base: i64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    /// The offset after its last batch.
    end_offset: i64,
    txn_index: TxnIndex,
}

impl Partition {
    /// One compaction pass. With `force`, cleans even below `min.cleanable.dirty.ratio`.
    ///
    /// A source batch that fails its checks (CRC, framing, offsets) ends the pass before
    /// anything is swapped in; the segment is scanned and its damage recorded, so the next
    /// pass stops before it.
    pub(crate) fn compact(&self, now: i64, force: bool) -> Result<CleanerStats> {
        match self.compact_pass(now, force) {
            Err(Error::Corrupt {
                file,
                position,
                reason,
            }) => {
                let view = {
                    let st = self.lock()?;
                    st.segments
                        .values()
                        .find(|s| s.path == file)
                        .map(|s| super::SegmentView::of(s, st.compacted))
                };
                tracing::error!(?file, position, reason, "compaction found a damaged batch");
                if let Some(view) = view {
                    self.rescan_segment(&view)?;
                }
                Ok(CleanerStats::default())
            }
            other => other,
        }
    }

    fn compact_pass(&self, now: i64, force: bool) -> Result<CleanerStats> {
        // 1. Under the lock: what is cleanable, and handles to read it.
        let (sources, first_dirty, first_uncleanable, config, producer_last, aborted) = {
            let st = self.lock()?;
            let config = st.config.clone();
            if !config.cleanup_policy.compact {
                return Ok(CleanerStats::default());
            }
            // Rewriting a damaged segment would drop the evidence with the bytes, and turn
            // the offsets it lost into holes that read as compaction's: cleaning stops at the
            // first damaged segment (what lies before it is cleaned as usual).
            let first_damaged = st
                .segments
                .values()
                .find(|s| s.damage.is_some())
                .map(|s| s.base_offset);
            let active_base = st.active().base_offset;
            let lag_limit = now.saturating_sub(config.min_compaction_lag_ms);
            let lso = st.last_stable_offset();
            let mut first_uncleanable = active_base;
            for s in st.segments.values() {
                if s.base_offset >= active_base
                    || s.max_timestamp > lag_limit
                    || s.next_offset > lso
                    || Some(s.base_offset) == first_damaged
                {
                    first_uncleanable = s.base_offset;
                    break;
                }
            }
            let first_dirty = st.cleaner_checkpoint.max(st.log_start_offset);
            if first_dirty >= first_uncleanable {
                return Ok(CleanerStats::default());
            }
            let sources: Vec<SourceSegment> = st
                .segments
                .range(..first_uncleanable)
                .map(|(&base, s)| SourceSegment {
                    base,
                    file: s.file.clone(),
                    path: s.path.clone(),
                    size: s.size,
                    end_offset: s.next_offset,
                    txn_index: s.txn_index.clone(),
                })
                .collect();
            let total: u64 = sources.iter().map(|s| s.size).sum();
            let dirty: u64 = st
                .segments
                .range(..first_uncleanable)
                .filter(|(_, s)| s.next_offset > first_dirty)
                .map(|(_, s)| s.size)
                .sum();
            if !force
                && total > 0
                && (dirty as f64 / total as f64) < config.min_cleanable_dirty_ratio
            {
                return Ok(CleanerStats::default());
            }
            // Appends after this point land above the cleaned range, so a batch kept as some
            // producer's last may stop being its last; keeping it is harmless.
            let producer_last = st.producers.last_offsets();
            // Every transaction with data in the cleanable range is decided (it lies below the
            // LSO), but its abort marker may be in any later segment.
            let aborted = aborted_ranges(st.segments.values().map(|s| &s.txn_index));
            (
                sources,
                first_dirty,
                first_uncleanable,
                config,
                producer_last,
                aborted,
            )
        };

        // 2. The offset map of the dirty range.
        let mut latest: HashMap<Box<[u8]>, i64> = HashMap::new();
        let mut inflated = Vec::new();
        for src in sources.iter() {
            for_each_batch(src, |batch| {
                if batch.is_control()
                    || batch.next_offset() <= first_dirty
                    || is_aborted(batch, &aborted)
                {
                    return Ok(());
                }
                let records = batch
                    .records_in(&mut inflated, MAX_BATCH_BYTES)
                    .map_err(|e| corrupt(src, e.0))?;
                for r in records {
                    let r = r.map_err(|e| corrupt(src, e.0))?;
                    if r.offset < first_dirty {
                        continue;
                    }
                    if let Some(k) = r.key {
                        match latest.get_mut(k) {
                            Some(o) => *o = (*o).max(r.offset),
                            None => {
                                latest.insert(k.into(), r.offset);
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }

        // 3. Rewrite groups of segments and swap each in.
        let mut stats = CleanerStats::default();
        let dir = self.dir().to_path_buf();
        let mut groups: Vec<Vec<&SourceSegment>> = Vec::new();
        let mut group_size = 0u64;
        for src in &sources {
            match groups.last_mut() {
                Some(g) if group_size + src.size <= u64::from(config.segment_bytes) => {
                    g.push(src);
                    group_size += src.size;
                }
                _ => {
                    groups.push(vec![src]);
                    group_size = src.size;
                }
            }
        }
        let horizon = now.saturating_add(config.delete_retention_ms);
        for (gi, group) in groups.iter().enumerate() {
            let base = group[0].base;
            let end = groups.get(gi + 1).map_or(first_uncleanable, |g| g[0].base);
            let cleaned_path = dir.join(format!("{}.cleaned", segment::file_name(base, "log")));
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&cleaned_path)
                .map_err(Error::io(&cleaned_path))?;
            let mut scratch = Vec::new();
            for src in group {
                stats.bytes_before += src.size;
                for_each_batch(src, |batch| {
                    let ctx = CleanContext {
                        latest: &latest,
                        producer_last: &producer_last,
                        aborted: &aborted,
                        now,
                        horizon,
                    };
                    let kept = clean_batch(batch, &ctx, &mut scratch, &mut stats)
                        .map_err(|reason| corrupt(src, reason))?;
                    let bytes: &[u8] = match kept {
                        Kept::All => batch.as_bytes(),
                        Kept::Rebuilt => &scratch,
                        Kept::Nothing => return Ok(()),
                    };
                    out.write_all(bytes).map_err(Error::io(&cleaned_path))
                })?;
            }
            out.sync_all().map_err(Error::io(&cleaned_path))?;
            drop(out);
            // The markers stay, so their aborted-transaction entries do too. Durable before the
            // commit point, like the cleaned segment (written even when empty: an empty file
            // tells a completion to drop the old `X.txnindex`).
            let mut txn_index = TxnIndex::default();
            for e in group.iter().flat_map(|src| src.txn_index.entries()) {
                txn_index.push(*e);
            }
            let txn_swap = dir.join(txn_swap_name(base, end));
            write_atomic(&txn_swap, &txn_index.encode(), true)?;

            // Swap under the lock, after checking the sources are still the live segments.
            let mut st = self.lock()?;
            let still_live = group.iter().all(|src| {
                st.segments
                    .get(&src.base)
                    .is_some_and(|s| Arc::ptr_eq(&s.file, &src.file))
            });
            if !still_live {
                remove_if_exists(&cleaned_path)?;
                remove_if_exists(&txn_swap)?;
                return Ok(stats);
            }
            let swap = dir.join(swap_name(base, end));
            std::fs::rename(&cleaned_path, &swap).map_err(Error::io(&swap))?;
            fsync_dir(&dir)?;
            for src in group {
                if let Some(old) = st.segments.remove(&src.base) {
                    old.delete_files(&dir)?;
                }
            }
            replace_with_swap(&dir, base, end)?;
            // The cleaned file was written and fsynced by this process: nothing in it is torn.
            let rules = ScanRules {
                flushed_below: i64::MAX,
                known_end: end,
                contiguous: false,
                upper: st.segments.range(end..).next().map(|(&b, _)| b),
            };
            let (mut seg, _) =
                Segment::open(&dir, base, config.index_interval_bytes, false, &rules)?;
            seg.txn_index = txn_index;
            // An empty result is dropped, except for the first segment: as in Kafka,
            // compaction never moves the log start offset (a consumer at a removed offset
            // reads on from the next kept record instead of getting OffsetOutOfRange).
            let first_of_log = st.segments.range(..base).next().is_none();
            if seg.size == 0 && !first_of_log {
                seg.delete_files(&dir)?;
            } else {
                seg.save_indexes(&dir, false)?;
                stats.bytes_after += seg.size;
                st.segments.insert(base, seg);
            }
            stats.segments_cleaned += group.len();
            let first = *st
                .segments
                .keys()
                .next()
                .expect("the active segment remains");
            st.log_start_offset = st.log_start_offset.max(first);
            st.refresh_lost();
        }
        let mut st = self.lock()?;
        st.cleaner_checkpoint = st.cleaner_checkpoint.max(first_uncleanable);
        tracing::debug!(
            topic = self.topic(),
            partition = self.id(),
            ?stats,
            "compacted"
        );
        Ok(stats)
    }
}

enum Kept {
    All,
    Rebuilt,
    Nothing,
}

/// What a pass decides batches by.
struct CleanContext<'a> {
    /// Key -> its latest offset in the dirty range.
    latest: &'a HashMap<Box<[u8]>, i64>,
    /// Producer id -> the last offset of its last batch in the log.
    producer_last: &'a HashMap<i64, i64>,
    /// The aborted transactions of the whole partition.
    aborted: &'a AbortedRanges,
    now: i64,
    /// The delete horizon for tombstones seen for the first time.
    horizon: i64,
}

/// Decides what of `batch` survives; a rebuilt batch is left in `scratch`.
fn clean_batch(
    batch: &RecordBatch<'_>,
    ctx: &CleanContext<'_>,
    scratch: &mut Vec<u8>,
    stats: &mut CleanerStats,
) -> std::result::Result<Kept, &'static str> {
    let (latest, now, horizon) = (ctx.latest, ctx.now, ctx.horizon);
    if batch.is_control() {
        return Ok(Kept::All);
    }
    // The records of a compressed batch, decompressed: a rebuilt batch is compressed again
    // with the same codec, as the producer sent it.
    let mut inflated = Vec::new();
    batch
        .validate_in(&mut inflated, MAX_BATCH_BYTES)
        .map_err(|e| e.0)?;
    let codec = batch.compression_type().map_err(|e| e.0)?;
    let aborted = is_aborted(batch, ctx.aborted);
    let tombstones_expire = batch.delete_horizon_ms().is_some_and(|h| now >= h);
    let mut keep = Vec::with_capacity(batch.records_count().max(0) as usize);
    let mut has_tombstone = false;
    // validate_in left the decompressed records in `inflated`.
    let records = match codec {
        Compression::None => batch.records(),
        _ => batch.records_from(&inflated),
    };
    for r in records {
        let r = r.map_err(|e| e.0)?;
        stats.records_read += 1;
        let superseded = r
            .key
            .and_then(|k| latest.get(k))
            .is_some_and(|&o| o > r.offset);
        let expired_tombstone = r.value.is_none() && tombstones_expire;
        if superseded || expired_tombstone || aborted {
            stats.records_removed += 1;
        } else {
            has_tombstone |= r.value.is_none();
            keep.push(r);
        }
    }
    if keep.is_empty() {
        // A producer's last batch stays, as a header without records (Kafka does the same), so
        // that a replay of the log still finds the producer's epoch and last sequence.
        let producer_last = batch.producer_id() >= 0
            && ctx.producer_last.get(&batch.producer_id()) == Some(&batch.last_offset());
        if !producer_last {
            return Ok(Kept::Nothing);
        }
        if batch.records_count() == 0 {
            return Ok(Kept::All);
        }
        patch::empty_copy(batch, scratch);
        return Ok(Kept::Rebuilt);
    }
    let needs_horizon = has_tombstone && batch.delete_horizon_ms().is_none();
    if keep.len() == batch.records_count() as usize && !needs_horizon {
        return Ok(Kept::All);
    }
    let horizon = if has_tombstone {
        Some(batch.delete_horizon_ms().unwrap_or(horizon))
    } else {
        None
    };
    let mut b = BatchBuilder::new(std::mem::take(scratch))
        .producer(BatchProducer {
            producer_id: batch.producer_id(),
            producer_epoch: batch.producer_epoch(),
            base_sequence: batch.base_sequence(),
            transactional: batch.is_transactional(),
        })
        .compression(codec)
        .delete_horizon_ms(horizon);
    let mut headers: Vec<Header<'_>> = Vec::new();
    for r in &keep {
        headers.clear();
        for h in r.headers() {
            headers.push(h.map_err(|e| e.0)?);
        }
        let delta = (r.offset - batch.base_offset()) as i32;
        b.append_with_offset_delta(delta, r.timestamp, r.key, r.value, &headers);
    }
    b.set_last_offset_delta(batch.last_offset_delta());
    let mut bytes = b.finish();
    patch::set_base_offset(&mut bytes, batch.base_offset());
    if batch.timestamp_type() == TimestampType::LogAppendTime {
        patch::set_log_append_time(&mut bytes, batch.max_timestamp());
    }
    *scratch = bytes;
    Ok(Kept::Rebuilt)
}

fn corrupt(src: &SourceSegment, reason: &'static str) -> Error {
    Error::Corrupt {
        file: src.path.clone(),
        position: 0,
        reason,
    }
}

/// Calls `f` with each batch of `src`, each checked first: its CRC (control batches too) and
/// its offsets (after the previous batch, inside the segment). A trusted segment's batches
/// before its last index entry were not read at open, and a base offset lies outside the CRC:
/// a wrong one would make records look like the latest of their keys.
fn for_each_batch(
    src: &SourceSegment,
    mut f: impl FnMut(&RecordBatch<'_>) -> Result<()>,
) -> Result<()> {
    let mut scanner = Scanner::new(src.file.clone(), &src.path, 0, src.size);
    let mut expected = src.base;
    loop {
        let position = scanner.position();
        match scanner.next_batch() {
            Ok(Some(b)) => {
                let bad = if b.stored_crc() != b.computed_crc() {
                    Some("crc mismatch")
                } else {
                    segment::check_offsets(&b, src.base, expected, false, Some(src.end_offset))
                        .err()
                };
                if let Some(reason) = bad {
                    return Err(Error::Corrupt {
                        file: src.path.clone(),
                        position,
                        reason,
                    });
                }
                expected = b.next_offset();
                f(&b)?;
            }
            Ok(None) => return Ok(()),
            Err(ScanError::Io(e)) => return Err(e),
            Err(ScanError::Invalid(reason)) => {
                return Err(Error::Corrupt {
                    file: src.path.clone(),
                    position,
                    reason,
                });
            }
        }
    }
}
