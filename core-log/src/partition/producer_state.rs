//! Idempotent producers' state in one partition: Kafka's `ProducerStateManager`.
//!
//! ```text
//!  producer id -> epoch, last 5 batches (first/last sequence, first/last offset, max timestamp)
//!
//!  append of a batch with producer id >= 0:
//!    epoch < current                        -> ProducerFenced
//!    same epoch, (first, last seq) cached   -> duplicate: nothing appended, original offsets
//!    epoch > current, or unknown producer   -> base sequence must be 0
//!    same epoch                             -> base sequence must be last sequence + 1
//!
//!  <offset:020>.snapshot   the state as of `offset` (written on roll and on clean close)
//!  open: newest valid snapshot <= log end, then replay the batches from there to the end
//! ```
//!
//! Sequences run from 0 to `i32::MAX` and wrap to 0, as Kafka's do. A batch's last sequence is
//! its base sequence plus its last offset delta, so it survives compaction, which keeps each
//! batch's offset range (and keeps a producer's last batch, emptied if need be, so that a
//! replay still finds the producer's last sequence).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use super::segment::{self, ScanError, Scanner, Segment};
use crate::codec::RecordBatch;
use crate::error::{Error, Result};
use crate::fs::{remove_if_exists, write_atomic};

/// How many batches per producer are remembered for duplicate detection. Kafka's
/// `NUM_BATCHES_TO_RETAIN`, matching the producer's `max.in.flight.requests.per.connection`
/// limit of 5 with idempotence.
pub(crate) const BATCHES_TO_RETAIN: usize = 5;

/// Snapshot file extension: `00000000000000004711.snapshot`.
const SNAPSHOT_EXT: &str = "snapshot";
const SNAPSHOT_VERSION: i16 = 1;
/// version i16, crc u32, producer count i32.
const SNAPSHOT_HEADER: usize = 2 + 4 + 4;
/// producer id i64, epoch i16, batch count i32.
const ENTRY_HEADER: usize = 8 + 2 + 4;
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

/// A producer's epoch and its last batches, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
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
}

/// The state of every producer that wrote to the partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// The offset of the snapshot this state was loaded from or last written to. The state
    /// changes only with appends, which move the log end, so a snapshot at the log end is
    /// current.
    snapshot_offset: Option<i64>,
}

impl ProducerStateManager {
    /// Decides what to do with a batch of `producer_id` / `epoch` covering sequences
    /// `first_seq..=last_seq`. One hash lookup; nothing is changed.
    pub(crate) fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
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
        if epoch > entry.epoch {
            // A new epoch starts a fresh sequence.
            return in_sequence(0, first_seq);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*dup));
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| increment_sequence(b.last_seq, 1));
        in_sequence(expected, first_seq)
    }

    /// Records an appended batch. A new epoch forgets the old epoch's batches.
    pub(crate) fn update(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
    }

    /// Applies a batch read back from the log (opening the partition). Batches on disk were
    /// checked when they were appended, so nothing is refused; a batch already covered (by a
    /// snapshot) or of an epoch older than the producer's is skipped.
    pub(crate) fn replay(&mut self, batch: &RecordBatch<'_>) {
        let Some((producer_id, epoch, meta)) = BatchMetadata::of(batch) else {
            return;
        };
        if let Some(entry) = self.producers.get(&producer_id) {
            let applied = entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= meta.last_offset);
            if epoch < entry.epoch || applied {
                return;
            }
        }
        self.update(producer_id, epoch, meta);
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
    /// at or past `offset`, sequences out of range) makes it unusable.
    fn decode(bytes: &[u8], offset: i64) -> std::result::Result<Self, &'static str> {
        let mut r = Reader { buf: bytes };
        if r.i16()? != SNAPSHOT_VERSION {
            return Err("unknown snapshot version");
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(r.buf) != crc {
            return Err("crc mismatch");
        }
        let count = usize::try_from(r.i32()?).map_err(|_| "negative producer count")?;
        if count > r.buf.len() / (ENTRY_HEADER + BATCH_LEN) {
            return Err("producer count beyond the file");
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = r.i32()?;
            if id < 0 || epoch < 0 || !(1..=BATCHES_TO_RETAIN as i32).contains(&n) {
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
            if producers
                .insert(id, ProducerEntry { epoch, batches })
                .is_some()
            {
                return Err("producer listed twice");
            }
        }
        if !r.buf.is_empty() {
            return Err("bytes after the last producer");
        }
        Ok(ProducerStateManager {
            producers,
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
    pub(crate) fn load(
        dir: &Path,
        segments: &std::collections::BTreeMap<i64, Segment>,
        log_start: i64,
        log_end: i64,
    ) -> Result<Self> {
        let mut state = None;
        let mut from = log_start;
        for offset in list_snapshots(dir)?.into_iter().rev() {
            let path = snapshot_path(dir, offset);
            if offset > log_end {
                remove_if_exists(&path)?;
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
        if from < log_end {
            state.replay_segments(segments, from)?;
        }
        Ok(state)
    }

    /// Replays every batch ending at or after `from`.
    fn replay_segments(
        &mut self,
        segments: &std::collections::BTreeMap<i64, Segment>,
        from: i64,
    ) -> Result<()> {
        for seg in segments.values().filter(|s| s.next_offset > from) {
            let mut scanner = Scanner::new(seg.file.clone(), &seg.path, seg.lookup(from), seg.size);
            loop {
                let position = scanner.position();
                let batch = match scanner.next_batch() {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(ScanError::Io(e)) => return Err(e),
                    // Recovery has just checked the framing up to `size`; a failure here
                    // means the file changed under us.
                    Err(ScanError::Invalid(reason)) => {
                        return Err(Error::Corrupt {
                            file: seg.path.clone(),
                            position,
                            reason,
                        });
                    }
                };
                if batch.next_offset() <= from || batch.producer_id() < 0 {
                    continue;
                }
                // Segments trusted at a clean open have not had every CRC checked: a header
                // that fails it cannot be believed (reads refuse the batch too).
                if batch.stored_crc() != batch.computed_crc() {
                    tracing::warn!(path = ?seg.path, position, "skipping a batch with a bad crc in producer state replay");
                    continue;
                }
                self.replay(&batch);
            }
        }
        Ok(())
    }
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
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Append));
        assert_eq!(
            s.check(7, 0, 3, 4),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        s.update(7, 0, meta(0, 4, 0));
        assert_eq!(s.check(7, 1, 0, 0), Ok(Check::Append));
        assert_eq!(
            s.check(7, 1, 5, 5),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        s.update(7, 1, meta(0, 0, 5));
        assert_eq!(
            s.check(7, 0, 5, 5),
            Err(Refusal::Fenced { current_epoch: 1 })
        );
        assert_eq!(s.check(7, 1, 1, 1), Ok(Check::Append));
    }

    #[test]
    fn the_last_five_batches_are_duplicates_and_gaps_are_refused() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            s.update(1, 0, meta(i * 2, i * 2 + 1, i64::from(i) * 2));
        }
        // Batches 2..=6 are remembered; 0 and 1 fell out.
        for i in 2..7 {
            assert_eq!(
                s.check(1, 0, i * 2, i * 2 + 1),
                Ok(Check::Duplicate(meta(i * 2, i * 2 + 1, i64::from(i) * 2)))
            );
        }
        assert_eq!(
            s.check(1, 0, 0, 1),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        // Same first sequence, different length: not the same batch.
        assert_eq!(
            s.check(1, 0, 12, 12),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        assert_eq!(
            s.check(1, 0, 15, 15),
            Err(Refusal::OutOfOrder { expected: 14 })
        );
        assert_eq!(s.check(1, 0, 14, 20), Ok(Check::Append));
    }

    #[test]
    fn the_sequence_after_i32_max_is_zero() {
        let mut s = ProducerStateManager::default();
        s.update(1, 0, meta(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(s.check(1, 0, 0, 3), Ok(Check::Append));
        assert_eq!(
            s.check(1, 0, i32::MAX, 3),
            Err(Refusal::OutOfOrder { expected: 0 })
        );
        // A batch spanning the wrap: last sequence = base + delta, wrapped.
        let mut s = ProducerStateManager::default();
        s.update(1, 0, meta(0, i32::MAX - 2, 0));
        assert_eq!(s.check(1, 0, i32::MAX - 1, 1), Ok(Check::Append));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerStateManager::default();
        for i in 0..6 {
            s.update(3, 2, meta(i, i, i64::from(i)));
        }
        s.update(9, 0, meta(0, 9, 6));
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
}
