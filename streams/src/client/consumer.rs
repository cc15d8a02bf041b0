//! The consumers of a stream thread: Kafka's `Consumer` interface, reduced to what the runtime
//! calls, and the rebalance listener it runs.
//!
//! The main consumer is a member of the application's group (`subscribe`, `poll`, commits,
//! the rollback of exactly-once); the restore consumer reads changelogs by assignment
//! (`assign`, `seek`, `poll`, `position`). Both are this one trait, as both are Kafka's
//! `Consumer` in Kafka Streams.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use core_log::{ConsumerGroupMetadata, ConsumerRecords, OffsetAndMetadata, Result, TopicPartition};

/// A consumer of byte records, used from one thread at a time.
pub trait Consumer: Send {
    /// Joins the consumer's group for `topics` (Kafka's `subscribe(topics, listener)`); `poll`
    /// then follows the group's rebalances and runs `listener` around them, on this thread.
    fn subscribe(
        &mut self,
        topics: &[String],
        listener: Box<dyn ConsumerRebalanceListener>,
    ) -> Result<()>;

    /// Replaces the assignment with `partitions`, by hand (Kafka's `assign`); an empty slice
    /// unassigns everything.
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// The partitions the consumer has now (Kafka's `assignment`).
    fn assignment(&self) -> Vec<TopicPartition>;

    /// The records available from the assigned partitions, waiting up to `timeout` for the
    /// first (Kafka's `poll`): a whole batch per call, partition by partition, each in offset
    /// order. Keys and values are [`Bytes`]: an implementation that can hand out slices of
    /// what it fetched, without a copy, should (the embedded one does).
    fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords<Bytes, Bytes>>;

    /// The offset of the next record a poll returns from `partition` (Kafka's `position`):
    /// past the transaction markers and aborted records a `read_committed` poll skipped.
    fn position(&mut self, partition: &TopicPartition) -> Result<i64>;

    /// Makes the next poll of `partition` start at `offset` (Kafka's `seek`).
    fn seek(&mut self, partition: &TopicPartition, offset: i64) -> Result<()>;

    /// Makes the next poll of each partition start at its log start (Kafka's
    /// `seekToBeginning`).
    fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()>;

    /// Commits `offsets` to the group and waits until they are stored (Kafka's
    /// `commitSync(offsets)`). A member the group has moved on from gets
    /// `RebalanceInProgress`, `IllegalGeneration` or `UnknownMemberId`.
    fn commit_sync(&mut self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<()>;

    /// The group's committed offsets of `partitions`, `None` where there is none (Kafka's
    /// `committed`).
    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>>;

    /// The consumer's group, member id and generation, for
    /// [`Producer::send_offsets_to_transaction`](super::Producer::send_offsets_to_transaction)
    /// (Kafka's `groupMetadata`).
    fn group_metadata(&self) -> Result<ConsumerGroupMetadata>;
}

/// Callbacks around a rebalance, run inside [`Consumer::poll`] on the consumer's thread
/// (Kafka's `ConsumerRebalanceListener`). Each gets the consumer, to commit or seek with.
pub trait ConsumerRebalanceListener: Send {
    /// The consumer gives these partitions up (every one, under the eager protocol the
    /// runtime uses): commit what was processed, now.
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> Result<()>;

    /// The consumer now owns these partitions; their positions start at the committed
    /// offsets.
    fn on_partitions_assigned(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> Result<()>;

    /// The group removed the consumer: these partitions may be another member's already, and
    /// its commits would be refused.
    fn on_partitions_lost(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> Result<()>;
}
