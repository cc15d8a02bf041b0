//! Retention for `cleanup.policy=delete`: whole sealed segments are deleted, oldest first, when
//! their newest record is older than `retention.ms` or while the partition is larger than
//! `retention.bytes`. The log start offset moves up to the first remaining segment; reads
//! below it get `OffsetOutOfRange`.
//!
//! As in Kafka, when every record of the partition has expired the active segment is rolled
//! first, so that it can be deleted too and the log start reaches the log end.
//!
//! Producer state snapshots below the new log start go too, except the newest: it still knows
//! the producers whose batches were all deleted.

use super::{Partition, producer_state};
use crate::codec::NO_TIMESTAMP;
use crate::error::Result;

impl Partition {
    /// Moves the log start offset past the segments that retention no longer keeps (rolling
    /// first if every record has expired), without deleting anything yet. Returns whether it
    /// moved: the caller then writes the log start checkpoint durably and calls
    /// [`Partition::delete_segments_below_start`], so that a segment is never gone before
    /// the checkpoint says it went (a missing segment the checkpoint does not explain is
    /// damage, reported at open).
    pub(crate) fn advance_log_start_by_retention(&self, now: i64) -> Result<bool> {
        let mut st = self.lock()?;
        let config = st.config.clone();
        if !config.cleanup_policy.delete {
            return Ok(false);
        }
        let expired = |max_ts: i64| {
            config.retention_ms >= 0 && max_ts != NO_TIMESTAMP && now - max_ts > config.retention_ms
        };
        let active_base = st.active().base_offset;
        let all_expired = st
            .segments
            .values()
            .all(|s| s.size == 0 || expired(s.max_timestamp));
        if st.active().size > 0 && expired(st.active().max_timestamp) && all_expired {
            self.roll_locked(&mut st)?;
        }

        let log_start = st.log_start_offset;
        let mut excess = if config.retention_bytes >= 0 {
            st.segments
                .values()
                .filter(|s| s.next_offset > log_start)
                .map(|s| s.size)
                .sum::<u64>() as i64
                - config.retention_bytes
        } else {
            0
        };
        let active_base = st.active().base_offset.max(active_base);
        let mut new_start = None;
        for (&base, seg) in st.segments.range(..active_base) {
            if seg.next_offset <= log_start {
                continue;
            }
            // A sealed segment without a valid batch (emptied by compaction, or all damage)
            // holds nothing to keep: when it is the oldest, it goes, and with it the report of
            // what its damage lost.
            let by_time = seg.size == 0 || expired(seg.max_timestamp);
            let by_size = excess >= seg.size as i64;
            if !(by_time || by_size) {
                break;
            }
            excess -= seg.size as i64;
            new_start = Some(
                st.segments
                    .range(base + 1..)
                    .next()
                    .map_or(active_base, |(&b, _)| b),
            );
        }
        let Some(new_start) = new_start.filter(|&s| s > log_start) else {
            return Ok(false);
        };
        st.log_start_offset = new_start;
        st.cleaner_checkpoint = st.cleaner_checkpoint.max(new_start);
        st.refresh_lost();
        Ok(true)
    }

    /// Deletes the sealed segments wholly below the log start offset, and the producer state
    /// snapshots below it (except the newest). Returns how many segments were deleted.
    pub(crate) fn delete_segments_below_start(&self) -> Result<usize> {
        let mut st = self.lock()?;
        let active_base = st.active().base_offset;
        let log_start = st.log_start_offset;
        let doomed: Vec<i64> = st
            .segments
            .range(..active_base)
            .filter(|(_, s)| s.next_offset <= log_start)
            .map(|(&b, _)| b)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let dir = self.dir().to_path_buf();
        for base in &doomed {
            if let Some(seg) = st.segments.remove(base) {
                seg.delete_files(&dir)?;
            }
        }
        // A snapshot below the log start cannot be replayed from; the newest one stays, as it
        // still knows producers whose batches were all deleted.
        producer_state::delete_snapshots_below(&dir, st.log_start_offset)?;
        tracing::debug!(
            topic = self.topic(),
            partition = self.id(),
            deleted = doomed.len(),
            log_start = st.log_start_offset,
            "retention"
        );
        Ok(doomed.len())
    }
}
