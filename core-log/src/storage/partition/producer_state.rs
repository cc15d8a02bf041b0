//! Idempotent and transactional producers' state in one partition: Kafka's
//! `ProducerStateManager`.
//!
//! ```text
//!  producer id -> epoch, last 5 batches (first/last sequence, first/last offset, max timestamp),
//!                 first offset of its ongoing transaction (if any)
//!  ongoing transactions, by first offset -> the last stable offset (LSO) is the smallest
//!
//!  append of a data batch with producer id >= 0:
//!    epoch < current                        -> ProducerFenced
//!    same epoch, (first, last seq) cached   -> duplicate: nothing appended, original offsets
//!    not transactional, transaction ongoing -> refused (Kafka's INVALID_TXN_STATE)
//!    epoch > current, or unknown producer   -> base sequence must be 0
//!    same epoch                             -> base sequence must be last sequence + 1
//!    transactional, no transaction ongoing  -> the batch's base offset starts one
//!
//!  transaction marker (commit or abort), written by the transaction coordinator:
//!    transaction ongoing, epoch <= current  -> ProducerFenced (a delayed or retried marker)
//!    no transaction, epoch < current        -> ProducerFenced
//!    otherwise                              -> ends the transaction (an abort is returned for
//!                                              the aborted-transaction index); the epoch
//!                                              becomes the marker's
//!
//!  <offset:020>.snapshot   the state as of `offset` (written on roll and on clean close)
//!  open: newest valid snapshot <= log end (and <= the first segment whose transaction index
//!        is rebuilt), then replay the batches from there to the end
//! ```
//!
//! Sequences run from 0 to `i32::MAX` and wrap to 0, as Kafka's do. A batch's last sequence is
//! its base sequence plus its last offset delta, so it survives compaction, which keeps each
//! batch's offset range (and keeps a producer's last batch, emptied if need be, so that a
//! replay still finds the producer's last sequence).
//!
//! The marker rules are Kafka's transaction protocol version 2 (KIP-890): the coordinator
//! bumps the producer's epoch at every commit or abort and writes the marker with the new
//! epoch. So a marker of an ongoing transaction must carry an epoch above the one its data was
//! written with; a marker that does not is a late copy of an earlier transaction's marker and
//! must not end the current one. Raising the epoch to the marker's also fences a late data
//! batch of the finished transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use super::segment::{self, ScanError, Scanner, Segment};
use super::txn_index::AbortedTxn;
use crate::codec::{ControlRecordType, EndTransactionMarker, RecordBatch};
use crate::error::{Error, Result};
use crate::storage::fs::{remove_if_exists, write_atomic};

/// How many batches per producer are remembered for duplicate detection. Kafka's
/// `NUM_BATCHES_TO_RETAIN`, matching the producer's `max.in.flight.requests.per.connection`
/// limit of 5 with idempotence.
pub(crate) const BATCHES_TO_RETAIN: usize = 5;

/// Snapshot file extension: `00000000000000004711.snapshot`.
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// Version 2 adds each producer's ongoing transaction; version 1 files (written before
/// transactions existed) are still read.
const SNAPSHOT_VERSION: i16 = 2;
const SNAPSHOT_VERSION_1: i16 = 1;
/// version i16, crc u32, producer count i32.
const SNAPSHOT_HEADER: usize = 2 + 4 + 4;
/// producer id i64, epoch i16, ongoing transaction's first offset i64 (-1: none), batch count
/// i32. (Version 1 has no transaction field: 14 bytes.)
const ENTRY_HEADER: usize = 8 + 2 + 8 + 4;
const ENTRY_HEADER_V1: usize = 8 + 2 + 4;
/// The transaction field of a producer with no ongoing transaction.
const NO_TXN: i64 = -1;
/// first seq i32, last seq i32, first offset i64, last offset i64, max timestamp i64.
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;

/// `seq + inc` in the sequence space `0..=i32::MAX`, wrapping to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`). Both arguments are non-negative.
pub(crate) fn increment_sequence(seq: i32, inc: i32) -> i32 {
    if seq > i32::MAX - inc {
        inc - (i32::MAX - seq) - 1
    } else {
        seq + inc
    }
}

/// One appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl BatchMetadata {
    /// The producer id, epoch and metadata of a batch as written (offsets assigned). `None`
    /// for batches without a producer id or sequence, and for control batches.
    pub(crate) fn of(batch: &RecordBatch<'_>) -> Option<(i64, i16, BatchMetadata)> {
        let first_seq = batch.base_sequence();
        if batch.producer_id() < 0 || batch.is_control() || first_seq < 0 {
            return None;
        }
        let meta = BatchMetadata {
            first_seq,
            last_seq: increment_sequence(first_seq, batch.last_offset_delta().max(0)),
            first_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            max_timestamp: batch.max_timestamp(),
        };
        Some((batch.producer_id(), batch.producer_epoch(), meta))
    }
}

/// A producer's epoch, its last batches (oldest first) and its ongoing transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    /// The offset of the first data batch of the producer's ongoing transaction.
    txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
            txn_first_offset: None,
        }
    }

    /// A new epoch starts a fresh sequence: the old epoch's batches cannot be retried any more
    /// (Kafka's `maybeUpdateProducerEpoch`).
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// What the log should do with an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// In sequence: append it.
    Append,
    /// Already appended (a retry after a lost acknowledgement): append nothing and answer
    /// with the original batch.
    Duplicate(BatchMetadata),
}

/// Why an idempotent batch is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The batch's epoch is older than the producer's current one.
    Fenced { current_epoch: i16 },
    /// The batch does not follow the producer's last one.
    OutOfOrder { expected: i32 },
    /// A non-transactional batch from a producer whose transaction is ongoing.
    NotTransactional,
}

/// The state of every producer that wrote to the partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every ongoing transaction: the first is the LSO. Always
    /// the set of the producers' `txn_first_offset`s.
    ongoing: BTreeSet<(i64, i64)>,
    /// The offset of the snapshot this state was loaded from or last written to. The state
    /// changes only with appends, which move the log end, so a snapshot at the log end is
    /// current.
    snapshot_offset: Option<i64>,
}

impl ProducerStateManager {
    /// The highest producer id with state here.
    pub(crate) fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().max().copied()
    }

    /// Decides what to do with a data batch of `producer_id` / `epoch` covering sequences
    /// `first_seq..=last_seq`. One hash lookup; nothing is changed.
    pub(crate) fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        transactional: bool,
    ) -> std::result::Result<Check, Refusal> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // A producer the partition has never seen starts at 0.
            return in_sequence(0, first_seq);
        };
        if epoch < entry.epoch {
            return Err(Refusal::Fenced {
                current_epoch: entry.epoch,
            });
        }
        if epoch == entry.epoch
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*dup));
        }
        // Kafka's rule: a producer inside a transaction writes only transactional batches
        // until a marker ends it; anything else would escape the transaction's fate.
        if entry.txn_first_offset.is_some() && !transactional {
            return Err(Refusal::NotTransactional);
        }
        let expected = if epoch > entry.epoch {
            // A new epoch starts a fresh sequence.
            0
        } else {
            entry
                .batches
                .back()
                .map_or(0, |b| increment_sequence(b.last_seq, 1))
        };
        in_sequence(expected, first_seq)
    }

    /// Records an appended data batch. A new epoch forgets the old epoch's batches; the first
    /// transactional batch after no ongoing transaction starts one.
    pub(crate) fn update(
        &mut self,
        producer_id: i64,
        epoch: i16,
        batch: BatchMetadata,
        transactional: bool,
    ) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        entry.set_epoch(epoch);
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        if transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(batch.first_offset);
            self.ongoing.insert((batch.first_offset, producer_id));
        }
    }

    /// The base sequence `producer_id`'s next batch at `epoch` must have: after its last
    /// batch at that epoch, or 0 at a new epoch (or for a producer not seen).
    pub(crate) fn next_sequence(&self, producer_id: i64, epoch: i16) -> i32 {
        match self.producers.get(&producer_id) {
            Some(entry) if entry.epoch == epoch => entry
                .batches
                .back()
                .map_or(0, |b| increment_sequence(b.last_seq, 1)),
            _ => 0,
        }
    }

    /// Whether a transaction marker of `producer_id` with `epoch` may be written (see the
    /// module doc); if not, the producer's current epoch, which fences it. Nothing is changed.
    /// With `same_epoch` (transaction protocol version 1), a marker with the ongoing
    /// transaction's own epoch ends it too.
    pub(crate) fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        same_epoch: bool,
    ) -> std::result::Result<(), i16> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // No data and no earlier marker: nothing to end; the marker is harmless.
            return Ok(());
        };
        let fenced = if entry.txn_first_offset.is_some() && !same_epoch {
            epoch <= entry.epoch
        } else {
            epoch < entry.epoch
        };
        if fenced {
            return Err(entry.epoch);
        }
        Ok(())
    }

    /// Records a marker written at `offset`: ends the producer's ongoing transaction and raises
    /// its epoch to the marker's. Returns the aborted transaction's index entry when the marker
    /// aborted an ongoing transaction. The entry's last stable offset is the LSO right after
    /// the marker, as Kafka computes it: the first offset of the earliest other ongoing
    /// transaction, else the offset after the marker. (Reads rely on it to stop looking for
    /// aborted transactions in later segments.)
    pub(crate) fn apply_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        offset: i64,
        kind: ControlRecordType,
    ) -> Option<AbortedTxn> {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        entry.set_epoch(epoch);
        let first_offset = entry.txn_first_offset.take()?;
        self.ongoing.remove(&(first_offset, producer_id));
        if kind != ControlRecordType::Abort {
            return None;
        }
        Some(AbortedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(offset + 1),
        })
    }

    /// The first offset of the earliest ongoing transaction: nothing at or after it is stable.
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|&(first, _)| first)
    }

    /// Applies a batch read back from the log (opening the partition). Batches on disk were
    /// checked when they were appended, so nothing is refused; a batch already covered (by a
    /// snapshot) or of an epoch older than the producer's is skipped. Returns the aborted
    /// transaction an abort marker ended, for the rebuild of the aborted-transaction index.
    pub(crate) fn replay(&mut self, batch: &RecordBatch<'_>) -> Option<AbortedTxn> {
        if batch.is_control() {
            if batch.producer_id() < 0 {
                return None;
            }
            let marker = match EndTransactionMarker::of(batch) {
                Ok(m) => m,
                Err(e) => {
                    // The log writes only commit and abort markers; a control batch it cannot
                    // read is not one of them and ends nothing.
                    tracing::warn!(offset = batch.base_offset(), error = %e, "skipping an unreadable control batch in producer state replay");
                    return None;
                }
            };
            return self.apply_marker(
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_offset(),
                marker.kind,
            );
        }
        let (producer_id, epoch, meta) = BatchMetadata::of(batch)?;
        if let Some(entry) = self.producers.get(&producer_id) {
            let applied = entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= meta.last_offset);
            if epoch < entry.epoch || applied {
                return None;
            }
        }
        self.update(producer_id, epoch, meta, batch.is_transactional());
        None
    }

    /// Each producer's last batch's last offset: compaction keeps that batch (emptied if all
    /// its records are superseded) so that a replay still finds the producer's last sequence.
    pub(crate) fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(&id, e)| e.batches.back().map(|b| (id, b.last_offset)))
            .collect()
    }

    /// Number of producers known.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.producers.len()
    }

    /// The first offsets of the ongoing transactions, ascending.
    #[cfg(test)]
    pub(crate) fn ongoing_first_offsets(&self) -> Vec<i64> {
        self.ongoing.iter().map(|&(first, _)| first).collect()
    }

    /// The snapshot bytes (Kafka's big-endian style, with a CRC-32C of everything after the
    /// CRC field). Producers are written in id order so that equal states give equal files.
    fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER + ids.len() * (ENTRY_HEADER + BATCHES_TO_RETAIN * BATCH_LEN),
        );
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(ids.len() as i32).to_be_bytes());
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(NO_TXN).to_be_bytes());
            out.extend_from_slice(&(e.batches.len() as i32).to_be_bytes());
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot taken at `offset`. Any inconsistency (CRC, version, lengths, batches
    /// or transactions at or past `offset`, sequences out of range) makes it unusable.
    pub(crate) fn decode(bytes: &[u8], offset: i64) -> std::result::Result<Self, &'static str> {
        let mut r = Reader { buf: bytes };
        let version = r.i16()?;
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
            return Err("unknown snapshot version");
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(r.buf) != crc {
            return Err("crc mismatch");
        }
        let count = usize::try_from(r.i32()?).map_err(|_| "negative producer count")?;
        // The smallest entry: a version 2 producer without batches (ended its transaction with
        // a new epoch), a version 1 producer with one batch.
        let min_entry = if version == SNAPSHOT_VERSION {
            ENTRY_HEADER
        } else {
            ENTRY_HEADER_V1 + BATCH_LEN
        };
        if count > r.buf.len() / min_entry {
            return Err("producer count beyond the file");
        }
        let mut producers = HashMap::with_capacity(count);
        let mut ongoing = BTreeSet::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let txn_first_offset = if version == SNAPSHOT_VERSION {
                match r.i64()? {
                    NO_TXN => None,
                    first if (0..offset).contains(&first) => Some(first),
                    _ => return Err("ongoing transaction outside the snapshot"),
                }
            } else {
                None
            };
            let n = r.i32()?;
            // Version 1 wrote producers only with batches; version 2 also those whose batches
            // a marker's new epoch made obsolete.
            let min_batches = if version == SNAPSHOT_VERSION { 0 } else { 1 };
            if id < 0 || epoch < 0 || !(min_batches..=BATCHES_TO_RETAIN as i32).contains(&n) {
                return Err("invalid producer entry");
            }
            let mut batches = VecDeque::with_capacity(BATCHES_TO_RETAIN);
            for _ in 0..n {
                let b = BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                };
                if b.first_seq < 0
                    || b.last_seq < 0
                    || b.first_offset > b.last_offset
                    || b.last_offset >= offset
                {
                    return Err("invalid batch entry");
                }
                batches.push_back(b);
            }
            if let Some(first) = txn_first_offset {
                ongoing.insert((first, id));
            }
            let entry = ProducerEntry {
                epoch,
                batches,
                txn_first_offset,
            };
            if producers.insert(id, entry).is_some() {
                return Err("producer listed twice");
            }
        }
        if !r.buf.is_empty() {
            return Err("bytes after the last producer");
        }
        Ok(ProducerStateManager {
            producers,
            ongoing,
            snapshot_offset: None,
        })
    }

    /// Writes the state as of `offset` (the log end offset) to `<offset>.snapshot` in `dir`,
    /// atomically; with `durable`, fsynced.
    pub(crate) fn write_snapshot(&mut self, dir: &Path, offset: i64, durable: bool) -> Result<()> {
        write_atomic(&snapshot_path(dir, offset), &self.encode(), durable)?;
        self.snapshot_offset = Some(offset);
        Ok(())
    }

    /// Whether the newest snapshot holds this state as of `log_end` already (a clean close
    /// after an open without appends need not write it again).
    pub(crate) fn has_snapshot_at(&self, log_end: i64) -> bool {
        self.snapshot_offset == Some(log_end)
    }

    /// Rebuilds the state of the partition in `dir` after its segments are recovered: the
    /// newest usable snapshot at or below the log end, then the batches from there to the log
    /// end (from the log start, if there is no snapshot). Snapshots above the log end (the log
    /// was truncated below them) and damaged ones are deleted.
    ///
    /// The aborted-transaction indexes of the segments in `rebuild_txn_index` are rebuilt from
    /// the markers replayed; the replay then starts at or below the first of them (a snapshot
    /// there knows the transactions ongoing at its start), using an older snapshot if need be.
    pub(crate) fn load(
        dir: &Path,
        segments: &mut BTreeMap<i64, Segment>,
        log_start: i64,
        log_end: i64,
        rebuild_txn_index: &BTreeSet<i64>,
        contiguous: bool,
    ) -> Result<Self> {
        let replay_floor = rebuild_txn_index
            .first()
            .map_or(log_end, |&base| base.min(log_end));
        let mut state = None;
        let mut from = log_start;
        for offset in list_snapshots(dir)?.into_iter().rev() {
            let path = snapshot_path(dir, offset);
            if offset > log_end {
                remove_if_exists(&path)?;
                continue;
            }
            if offset > replay_floor {
                // Valid, but past a segment whose index must be rebuilt: kept for later opens.
                continue;
            }
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            match Self::decode(&bytes, offset) {
                Ok(mut s) => {
                    s.snapshot_offset = Some(offset);
                    state = Some(s);
                    // A snapshot below the log start still knows the producers whose batches
                    // retention deleted; the batches from the log start on update it.
                    from = offset.max(log_start);
                    break;
                }
                Err(reason) => {
                    tracing::warn!(?path, reason, "ignoring a damaged producer state snapshot");
                    remove_if_exists(&path)?;
                }
            }
        }
        let mut state = state.unwrap_or_default();
        for (base, seg) in segments.iter_mut() {
            if rebuild_txn_index.contains(base) {
                seg.txn_index.clear();
            }
        }
        if from < log_end {
            state.replay_segments(segments, from, rebuild_txn_index, contiguous)?;
        }
        Ok(state)
    }

    /// Replays every batch ending at or after `from`; aborts found in the segments of
    /// `rebuild_txn_index` go to their aborted-transaction index.
    ///
    /// Each batch is checked (CRC, framing, offsets against the batch before): a segment
    /// trusted at open was read only after its last index entry. A batch that fails makes the
    /// segment be scanned whole once, recording its damage, and the replay goes on after the
    /// last batch it applied, stepping over the damage.
    fn replay_segments(
        &mut self,
        segments: &mut BTreeMap<i64, Segment>,
        from: i64,
        rebuild_txn_index: &BTreeSet<i64>,
        contiguous: bool,
    ) -> Result<()> {
        for seg in segments.values_mut().filter(|s| s.next_offset > from) {
            let rebuild = rebuild_txn_index.contains(&seg.base_offset);
            // The next offset to replay from: batches ending at or before it are applied.
            let mut replayed = from;
            let mut rescanned = false;
            loop {
                let failure = self.replay_segment(seg, &mut replayed, rebuild, contiguous)?;
                let Some((position, reason)) = failure else {
                    break;
                };
                if rescanned {
                    // A fresh scan found these bytes valid: the file changed under us.
                    return Err(Error::Corrupt {
                        file: seg.path.clone(),
                        position,
                        reason,
                    });
                }
                rescanned = true;
                seg.rescan_in_place(contiguous)?;
            }
        }
        Ok(())
    }

    /// Applies the batches of `seg` that end after `*replayed`, advancing it; stops at the
    /// first batch that fails its checks and returns where and why.
    fn replay_segment(
        &mut self,
        seg: &mut Segment,
        replayed: &mut i64,
        rebuild: bool,
        contiguous: bool,
    ) -> Result<Option<(u64, &'static str)>> {
        let (start, mut expected, exact) = seg.lookup(*replayed);
        let mut exact = exact || contiguous;
        let mut scanner = Scanner::over(seg, start, seg.size);
        loop {
            let before = scanner.position();
            // The position is the batch's own, after any damaged range stepped over.
            let (position, batch) = match scanner.next_batch_at() {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(None),
                Err(ScanError::Io(e)) => return Err(e),
                Err(ScanError::Invalid(reason)) => return Ok(Some((before, reason))),
            };
            if scanner_resumed(position, seg) {
                // Stepped over a damaged range: the next batch starts where it says.
                exact = false;
            }
            if batch.stored_crc() != batch.computed_crc() {
                return Ok(Some((position, "crc mismatch")));
            }
            if let Err(reason) = segment::check_offsets(
                &batch,
                seg.base_offset,
                expected,
                exact,
                Some(seg.next_offset),
            ) {
                return Ok(Some((position, reason)));
            }
            expected = batch.next_offset();
            exact = contiguous;
            if batch.next_offset() <= *replayed {
                continue;
            }
            *replayed = batch.next_offset();
            if batch.producer_id() < 0 {
                continue;
            }
            if let Some(aborted) = self.replay(&batch)
                && rebuild
            {
                seg.txn_index.push(aborted);
            }
        }
    }
}

/// Whether the batch at `position` is the first after one of `seg`'s damaged ranges.
fn scanner_resumed(position: u64, seg: &Segment) -> bool {
    seg.damage
        .iter()
        .flat_map(|d| d.iter())
        .any(|d| d.end == position)
}

fn in_sequence(expected: i32, first_seq: i32) -> std::result::Result<Check, Refusal> {
    if first_seq == expected {
        Ok(Check::Append)
    } else {
        Err(Refusal::OutOfOrder { expected })
    }
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(segment::file_name(offset, SNAPSHOT_EXT))
}

/// The offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        if let Some(o) =
            segment::parse_base_offset(&entry.file_name().to_string_lossy(), SNAPSHOT_EXT)
        {
            offsets.push(o);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Deletes the snapshots below `offset` (the new log start), except the newest snapshot,
/// which is kept whatever its offset: it still knows producers whose batches are all gone.
pub(crate) fn delete_snapshots_below(dir: &Path, offset: i64) -> Result<()> {
    let snapshots = list_snapshots(dir)?;
    let Some((_, older)) = snapshots.split_last() else {
        return Ok(());
    };
    for &o in older.iter().filter(|&&o| o < offset) {
        remove_if_exists(&snapshot_path(dir, o))?;
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> std::result::Result<[u8; N], &'static str> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or("snapshot truncated")?;
        self.buf = rest;
        Ok(*head)
    }
    fn i16(&mut self) -> std::result::Result<i16, &'static str> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> std::result::Result<i32, &'static str> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> std::result::Result<i64, &'static str> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq.wrapping_sub(first_seq).max(0)),
            max_timestamp: 1_000,
        }
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(increment_sequence(0, 0), 0);
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX - 3, 3), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 4), 2);
        assert_eq!(increment_sequence(i32::MAX, i32::MAX), i32::MAX - 1);
    }

    #[test]
    fn unknown_producers_and_new_epochs_start_at_zero() {
        let mut s = ProducerStateManager::default();
        assert_eq!(s.check(7, 0, 0, 4, false), Ok(Check::Append));
        assert_eq!(
            s.check(7, 0, 3, 4, false),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        s.update(7, 0, meta(0, 4, 0), false);
        assert_eq!(s.check(7, 1, 0, 0, false), Ok(Check::Append));
        assert_eq!(
            s.check(7, 1, 5, 5, false),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        s.update(7, 1, meta(0, 0, 5), false);
        assert_eq!(
            s.check(7, 0, 5, 5, false),
            Err(Refusal::Fenced { current_epoch: 1 })
        );
        assert_eq!(s.check(7, 1, 1, 1, false), Ok(Check::Append));
    }

    #[test]
    fn the_last_five_batches_are_duplicates_and_gaps_are_refused() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            s.update(1, 0, meta(i * 2, i * 2 + 1, i64::from(i) * 2), false);
        }
        // Batches 2..=6 are remembered; 0 and 1 fell out.
        for i in 2..7 {
            assert_eq!(
                s.check(1, 0, i * 2, i * 2 + 1, false),
                Ok(Check::Duplicate(meta(i * 2, i * 2 + 1, i64::from(i) * 2)))
            );
        }
        assert_eq!(
            s.check(1, 0, 0, 1, false),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        // Same first sequence, different length: not the same batch.
        assert_eq!(
            s.check(1, 0, 12, 12, false),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        assert_eq!(
            s.check(1, 0, 15, 15, false),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        assert_eq!(s.check(1, 0, 14, 20, false), Ok(Check::Append));
    }

    #[test]
    fn the_sequence_after_i32_max_is_zero() {
        let mut s = ProducerStateManager::default();
        s.update(1, 0, meta(i32::MAX - 1, i32::MAX, 0), false);
        assert_eq!(s.check(1, 0, 0, 3, false), Ok(Check::Append));
        assert_eq!(
            s.check(1, 0, i32::MAX, 3, false),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        // A batch spanning the wrap: last sequence = base + delta, wrapped.
        let mut s = ProducerStateManager::default();
        s.update(1, 0, meta(0, i32::MAX - 2, 0), false);
        assert_eq!(s.check(1, 0, i32::MAX - 1, 1, false), Ok(Check::Append));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerStateManager::default();
        for i in 0..6 {
            s.update(3, 2, meta(i, i, i64::from(i)), false);
        }
        s.update(9, 0, meta(0, 9, 6), false);
        let bytes = s.encode();
        assert_eq!(ProducerStateManager::decode(&bytes, 16), Ok(s.clone()));
        assert_eq!(ProducerStateManager::decode(&bytes, 16).unwrap().len(), 2);
        // A batch at or past the snapshot's offset cannot belong to it.
        assert!(ProducerStateManager::decode(&bytes, 15).is_err());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(ProducerStateManager::decode(&bad, 16).is_err(), "byte {at}");
        }
        for len in 0..bytes.len() {
            assert!(ProducerStateManager::decode(&bytes[..len], 16).is_err());
        }
        let empty = ProducerStateManager::default();
        assert_eq!(ProducerStateManager::decode(&empty.encode(), 0), Ok(empty));
    }

    #[test]
    fn transactions_start_with_a_transactional_batch_and_end_with_a_marker_of_a_newer_epoch() {
        let mut s = ProducerStateManager::default();
        assert_eq!(s.check(1, 0, 0, 1, true), Ok(Check::Append));
        s.update(1, 0, meta(0, 1, 10), true);
        s.update(2, 0, meta(0, 0, 12), true);
        s.update(1, 0, meta(2, 2, 13), true);
        assert_eq!(s.ongoing_first_offsets(), [10, 12]);
        assert_eq!(s.first_unstable_offset(), Some(10));
        // Inside its transaction a producer writes only transactional batches.
        assert_eq!(s.check(1, 0, 3, 3, false), Err(Refusal::NotTransactional));
        // A marker must carry an epoch above the transaction's.
        assert_eq!(s.check_marker(1, 0, false), Err(0));
        assert_eq!(s.check_marker(1, 1, false), Ok(()));
        // Protocol version 1 (the client keeps its epoch): the transaction's own epoch ends
        // it, an older one still does not.
        assert_eq!(s.check_marker(1, 0, true), Ok(()));
        assert_eq!(s.check_marker(2, 0, true), Ok(()));
        assert_eq!(
            s.apply_marker(1, 1, 14, ControlRecordType::Abort),
            Some(AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                last_stable_offset: 12,
            }),
            "the LSO after the abort is producer 2's open transaction"
        );
        assert_eq!(s.ongoing_first_offsets(), [12]);
        // The marker's epoch fences the old epoch's data and starts a new sequence.
        assert_eq!(
            s.check(1, 0, 3, 3, true),
            Err(Refusal::Fenced { current_epoch: 1 })
        );
        assert_eq!(
            s.check(1, 1, 3, 3, true),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        assert_eq!(s.check(1, 1, 0, 0, false), Ok(Check::Append));
        // With no transaction open, a marker of the current epoch is harmless; older ones not.
        assert_eq!(s.check_marker(1, 1, false), Ok(()));
        assert_eq!(s.check_marker(1, 0, false), Err(1));
        assert_eq!(s.apply_marker(1, 1, 15, ControlRecordType::Abort), None);
        // A commit ends a transaction without an index entry.
        assert_eq!(s.apply_marker(2, 1, 16, ControlRecordType::Commit), None);
        assert_eq!(s.first_unstable_offset(), None);
        // A producer first seen through a marker gets its epoch.
        assert_eq!(s.check_marker(7, 3, false), Ok(()));
        assert_eq!(s.apply_marker(7, 3, 17, ControlRecordType::Commit), None);
        assert_eq!(
            s.check(7, 2, 0, 0, true),
            Err(Refusal::Fenced { current_epoch: 3 })
        );
        assert_eq!(s.check_marker(7, 2, true), Err(3));
    }

    #[test]
    fn with_protocol_version_1_a_producer_keeps_its_epoch_and_sequence_across_transactions() {
        let mut s = ProducerStateManager::default();
        assert_eq!(s.check(1, 0, 0, 1, true), Ok(Check::Append));
        s.update(1, 0, meta(0, 1, 10), true);
        assert_eq!(s.check_marker(1, 0, true), Ok(()));
        assert_eq!(s.apply_marker(1, 0, 12, ControlRecordType::Commit), None);
        assert_eq!(s.first_unstable_offset(), None);
        // The next transaction: the same epoch, the sequence goes on.
        assert_eq!(
            s.check(1, 0, 0, 0, true),
            Err(Refusal::OutOfOrder { expected: 2 })
        );
        assert_eq!(s.check(1, 0, 2, 2, true), Ok(Check::Append));
        s.update(1, 0, meta(2, 2, 13), true);
        assert_eq!(s.first_unstable_offset(), Some(13));
        assert!(s.apply_marker(1, 0, 14, ControlRecordType::Abort).is_some());
        assert_eq!(s.first_unstable_offset(), None);
    }

    #[test]
    fn version_2_snapshots_keep_ongoing_transactions() {
        let mut s = ProducerStateManager::default();
        s.update(3, 2, meta(0, 4, 0), false);
        s.update(4, 0, meta(0, 1, 5), true);
        s.update(5, 0, meta(0, 0, 7), true);
        // Producer 5's transaction is aborted with a new epoch: no batches are left.
        s.apply_marker(5, 1, 8, ControlRecordType::Abort);
        let bytes = s.encode();
        let back = ProducerStateManager::decode(&bytes, 9).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.ongoing_first_offsets(), [5]);
        // A transaction at or past the snapshot's offset cannot belong to it.
        assert!(ProducerStateManager::decode(&bytes, 5).is_err());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(ProducerStateManager::decode(&bad, 9).is_err(), "byte {at}");
        }
        for len in 0..bytes.len() {
            assert!(ProducerStateManager::decode(&bytes[..len], 9).is_err());
        }
    }

    /// Snapshots written before transactions existed still load.
    #[test]
    fn version_1_snapshots_still_load() {
        let v1 = |batches: &[BatchMetadata]| {
            let mut out = Vec::new();
            out.extend_from_slice(&1i16.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&3i64.to_be_bytes());
            out.extend_from_slice(&2i16.to_be_bytes());
            out.extend_from_slice(&(batches.len() as i32).to_be_bytes());
            for b in batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
            let crc = crc32c::crc32c(&out[6..]);
            out[2..6].copy_from_slice(&crc.to_be_bytes());
            out
        };
        let s = ProducerStateManager::decode(&v1(&[meta(0, 4, 0), meta(5, 5, 5)]), 6).unwrap();
        let mut want = ProducerStateManager::default();
        want.update(3, 2, meta(0, 4, 0), false);
        want.update(3, 2, meta(5, 5, 5), false);
        assert_eq!(s, want);
        assert_eq!(s.first_unstable_offset(), None);
        // Version 1 never wrote a producer without batches.
        assert!(ProducerStateManager::decode(&v1(&[]), 6).is_err());
    }
}
