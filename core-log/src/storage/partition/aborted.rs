//! Kafka's read_committed rule over fetched batches: which transactional batches belong to an
//! aborted transaction. The partition lists the aborted transactions a fetch overlaps
//! ([`FetchData::aborted_transactions`](super::FetchData)); the reader applies this rule to
//! skip their records (the consumer, and `FetchData::committed_records`).

use crate::codec::{ControlRecordType, RecordBatch};

/// read_committed state of a partition's buffered batches (Kafka's fetcher keeps the same per
/// completed fetch).
/// An aborted transaction overlapping a read_committed fetch: the consumer skips the
/// producer's transactional batches from `first_offset` until the producer's next abort
/// marker (Kafka's `FetchResponse.AbortedTransaction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AbortedTransaction {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// The offset of the transaction's first batch in this partition.
    pub first_offset: i64,
}

#[derive(Default)]
pub(crate) struct Aborted {
    /// The aborted transactions the read reported, by first offset, not reached yet.
    pending: std::collections::VecDeque<AbortedTransaction>,
    /// Producers whose transactional batches are skipped until their abort marker.
    producers: std::collections::HashSet<i64>,
}

impl Aborted {
    /// The state for one fetch that reported `aborted` transactions.
    pub(crate) fn new(aborted: impl IntoIterator<Item = AbortedTransaction>) -> Self {
        Aborted {
            pending: aborted.into_iter().collect(),
            producers: Default::default(),
        }
    }

    /// Starts over for a new fetch that reported `aborted` transactions, keeping the memory.
    pub(crate) fn reset(&mut self, aborted: impl IntoIterator<Item = AbortedTransaction>) {
        self.pending.clear();
        self.pending.extend(aborted);
        self.producers.clear();
    }

    /// Kafka's read_committed rule for one batch: a transactional batch of a producer with an
    /// aborted transaction that has begun is skipped, until that producer's abort marker
    /// (which ends the skipping). Returns whether the batch is to be skipped.
    pub(crate) fn skip(&mut self, batch: &RecordBatch<'_>) -> bool {
        // Aborted transactions that start at or before this batch now apply.
        while let Some(t) = self.pending.front() {
            if t.first_offset > batch.last_offset() {
                break;
            }
            self.producers.insert(t.producer_id);
            self.pending.pop_front();
        }
        if !batch.is_transactional() {
            return false;
        }
        let aborted = self.producers.contains(&batch.producer_id());
        if batch.is_control() {
            let abort_marker = batch
                .records()
                .next()
                .and_then(|r| r.ok())
                .is_some_and(|r| {
                    ControlRecordType::parse(r.key).is_ok_and(|t| t == ControlRecordType::Abort)
                });
            if aborted && abort_marker {
                self.producers.remove(&batch.producer_id());
            }
            // Control batches are never returned either way.
            return true;
        }
        aborted
    }
}
