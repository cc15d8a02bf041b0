//! The admin calls the streams runtime makes: Kafka's `Admin` interface, reduced to what an
//! application needs of its topics.

use core_log::{IsolationLevel, Result, TopicConfig, TopicPartition};

/// Which offset [`Admin::list_offsets`] asks for (Kafka's `OffsetSpec`, the two the runtime
/// uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the first offset retention kept.
    Earliest,
    /// The end: the high watermark under `read_uncommitted`, the last stable offset (the
    /// first offset of an open transaction) under `read_committed`.
    Latest,
}

/// The topic operations of an application instance: its internal topics, the partition counts
/// its sinks and co-partitioning checks need, and the end offsets its restoration reads to.
pub trait Admin: Send + Sync {
    /// Creates `topic` with `partitions` partitions and `config` (Kafka's `createTopics` for
    /// one topic): `TopicAlreadyExists` if it exists.
    fn create_topic(&self, topic: &str, partitions: u32, config: TopicConfig) -> Result<()>;

    /// The number of partitions of `topic` (what Kafka Streams reads from `describeTopics`):
    /// `UnknownTopicOrPartition` if it does not exist.
    fn partition_count(&self, topic: &str) -> Result<u32>;

    /// The offset `spec` names in `partition`, as a consumer with `isolation` would see it
    /// (Kafka's `listOffsets` with `ListOffsetsOptions(isolation)`, for one partition).
    fn list_offsets(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<i64>;
}
