//! The producer a stream thread writes with: Kafka's `Producer` interface, reduced to what the
//! runtime calls.

use core_log::{
    ConsumerGroupMetadata, OffsetAndMetadata, ProducerRecord, Result, SharedCallback,
    TopicPartition,
};

/// A stream thread's producer of byte records, shared by its tasks' record collectors.
///
/// Every output, repartition, dead-letter and changelog record goes through
/// [`Producer::send`]: one dynamic call per record, with a callback shared by every record to
/// the same destination (so a send allocates nothing for it). Under exactly-once the thread
/// keeps one transaction open between commits.
pub trait Producer: Send + Sync {
    /// Sends a record to the partition it names and calls `callback` once with its outcome,
    /// on any thread, in the order of the partition's records (Kafka's `send(record,
    /// callback)`). `Err` means the record was not sent and the callback will not be called.
    fn send(&self, record: ProducerRecord<'_, [u8], [u8]>, callback: &SharedCallback)
    -> Result<()>;

    /// Waits until every record sent before the call was acknowledged or failed and its
    /// callback ran (Kafka's `flush`): a commit checks the callbacks' failures after it.
    fn flush(&self);

    /// Fences earlier producers of the `transactional.id` and aborts what they left open
    /// (Kafka's `initTransactions`); once, before the first transaction.
    fn init_transactions(&self) -> Result<()>;

    /// Opens a transaction (Kafka's `beginTransaction`); records sent until it ends belong to
    /// it.
    fn begin_transaction(&self) -> Result<()>;

    /// Whether a transaction is open: begun, and neither committed nor aborted since (Kafka
    /// Streams' `StreamsProducer` keeps this flag beside Kafka's producer).
    fn in_transaction(&self) -> bool;

    /// Adds the consumer's offsets to the open transaction (Kafka's
    /// `sendOffsetsToTransaction`): the group checks `group`'s generation, so a member the
    /// group has moved on from cannot commit (KIP-447).
    fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()>;

    /// Flushes and commits the open transaction (Kafka's `commitTransaction`).
    fn commit_transaction(&self) -> Result<()>;

    /// Aborts the open transaction (Kafka's `abortTransaction`).
    fn abort_transaction(&self) -> Result<()>;
}
