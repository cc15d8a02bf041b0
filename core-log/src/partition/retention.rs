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
    /// Deletes segments that retention no longer keeps. Returns how many were deleted.
    pub(crate) fn enforce_retention(&self, now: i64) -> Result<usize> {
        let mut st = self.lock()?;
        let config = st.config.clone();
        if !config.cleanup_policy.delete {
            return Ok(0);
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

        let mut excess = if config.retention_bytes >= 0 {
            st.size_bytes() as i64 - config.retention_bytes
        } else {
            0
        };
        let active_base = st.active().base_offset.max(active_base);
        let mut doomed = Vec::new();
        for (&base, seg) in &st.segments {
            if base == active_base {
                break;
            }
            // An empty sealed segment (left by compaction) holds nothing to keep.
            let by_time = seg.size == 0 || expired(seg.max_timestamp);
            let by_size = excess >= seg.size as i64;
            if !(by_time || by_size) {
                break;
            }
            excess -= seg.size as i64;
            doomed.push(base);
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let dir = self.dir().to_path_buf();
        for base in &doomed {
            if let Some(seg) = st.segments.remove(base) {
                seg.delete_files(&dir)?;
            }
        }
        let new_start = *st
            .segments
            .keys()
            .next()
            .expect("the active segment remains");
        st.log_start_offset = st.log_start_offset.max(new_start);
        st.cleaner_checkpoint = st.cleaner_checkpoint.max(new_start);
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
