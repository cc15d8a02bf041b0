//! The crate's one error type.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the context a caller can act on. Messages are short; details are in
/// the fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic name that Kafka would refuse (names become directory names).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A topic with this name exists already.
    #[error("topic {topic:?} already exists")]
    TopicAlreadyExists {
        /// The topic.
        topic: String,
    },
    /// No such topic, or no such partition in it.
    #[error("unknown topic or partition {topic:?}/{partition}")]
    UnknownTopicOrPartition {
        /// The topic asked for.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// A partition count that cannot be applied (zero, or fewer than the topic has: partitions
    /// are never removed).
    #[error("invalid partition count for {topic:?}: has {current}, asked for {requested}")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// Partitions it has now (0 when creating).
        current: u32,
        /// Partitions asked for.
        requested: u32,
    },
    /// More partitions than one topic may have (`MAX_PARTITIONS_PER_TOPIC`). Refused before
    /// anything is created.
    #[error("topic {topic:?}: {requested} partitions is more than the {max} a topic may have")]
    TooManyPartitions {
        /// The topic.
        topic: String,
        /// Partitions asked for.
        requested: u32,
        /// The limit.
        max: u32,
    },
    /// A configuration value out of its range, or an unknown key.
    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig {
        /// Kafka's name of the setting, e.g. `retention.ms`.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A record batch larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge {
        /// Encoded batch size.
        size: usize,
        /// The topic's limit.
        max: usize,
    },
    /// A batch sent to the log that is not a well-formed v2 batch, or breaks a topic rule
    /// (a compacted topic's records need keys). Nothing of the request was appended.
    #[error("invalid record: {reason}")]
    InvalidRecord {
        /// What is wrong.
        reason: &'static str,
    },
    /// An offset outside the partition's range `[log_start, log_end]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}] for {topic:?}/{partition}")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        requested: i64,
        /// The first offset the partition holds.
        log_start: i64,
        /// The offset the next record will get.
        log_end: i64,
    },
    /// Bytes on disk that fail their checks (framing or CRC). Nothing invalid is returned.
    #[error("corrupt data in {file:?} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Byte position of the bad batch or entry.
        position: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// A read of offsets whose bytes on disk are damaged or missing (found by recovery, or by
    /// the read itself). Nothing of the damaged range is returned, and the offsets on both
    /// sides stay readable: `seek` to `resume_offset` to go on past the damage. Kafka's
    /// CORRUPT_MESSAGE.
    #[error(
        "offset {offset} of {topic:?}/{partition} is lost to damage (offsets {first_offset}..{resume_offset}): {reason} in {file:?} at byte {position}"
    )]
    CorruptRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: i64,
        /// The first offset of the lost range.
        first_offset: i64,
        /// The offset after the lost range, where reads work again.
        resume_offset: i64,
        /// The segment file holding the damage.
        file: PathBuf,
        /// The byte position of the damage in `file`.
        position: u64,
        /// Which check the bytes failed.
        reason: &'static str,
    },
    /// A write or fsync failed earlier: the partition refuses writes until the log is reopened
    /// (which recovers it from disk). Kafka's KAFKA_STORAGE_ERROR.
    #[error("partition {topic:?}/{partition} is offline after an i/o error: {cause}")]
    KafkaStorageError {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The error that took it offline.
        cause: String,
    },
    /// Another process (or another `Log` in this one) has the directory open.
    #[error("log directory {dir:?} is in use by another process")]
    LogDirLocked {
        /// The directory.
        dir: PathBuf,
    },
    /// The log (or the client) has been closed.
    #[error("the log is closed")]
    Closed,
    /// An idempotent producer's batch does not follow the last one it wrote to the partition:
    /// a batch was lost in between. Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER. Nothing was appended.
    #[error(
        "out of order sequence for producer {producer_id} on {topic:?}/{partition}: expected {expected}, got {received}"
    )]
    OutOfOrderSequence {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The sequence the log expected next.
        expected: i32,
        /// The batch's base sequence.
        received: i32,
    },
    /// A batch from an older epoch of a producer id whose epoch has been bumped: the producer
    /// is a zombie. Kafka's INVALID_PRODUCER_EPOCH (PRODUCER_FENCED for transactions).
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The epoch the batch carried.
        epoch: i16,
        /// The partition's current epoch for that producer.
        current_epoch: i16,
    },
    /// A key or value the serializer could not encode. Only that record failed.
    #[error("cannot serialize the {part} of a record for topic {topic:?}")]
    Serialization {
        /// The topic.
        topic: String,
        /// `"key"` or `"value"`.
        part: &'static str,
        /// The serializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record whose key or value the deserializer could not decode. The consumer's position
    /// stays at this record: skip it with `seek(offset + 1)` or stop.
    #[error("cannot deserialize the {part} of the record at {topic:?}/{partition} offset {offset}")]
    Deserialization {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record's offset.
        offset: i64,
        /// `"key"` or `"value"`.
        part: &'static str,
        /// The deserializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A consumer's partition has no position and `auto.offset.reset` is `none`: seek first.
    /// Kafka's NoOffsetForPartitionException.
    #[error("no offset for {topic:?}/{partition} and auto.offset.reset is none")]
    NoOffsetForPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A consumer call (seek, position, pause, ...) named a partition that is not assigned to
    /// it. Kafka's IllegalStateException "No current assignment for partition".
    #[error("partition {topic:?}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A consumer-group call from a member whose generation is over: the group rebalanced
    /// since (Kafka's ILLEGAL_GENERATION). A commit with it is rejected, so it can never
    /// overwrite what the newer generation committed; the consumer rejoins.
    #[error("group {group:?}: generation {generation} is not the current generation {current}")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The generation the call named.
        generation: i32,
        /// The group's generation now.
        current: i32,
    },
    /// A consumer-group call from a member the group does not know (it left, or was removed
    /// after `session.timeout.ms` or `max.poll.interval.ms`). Kafka's UNKNOWN_MEMBER_ID.
    #[error("group {group:?} has no member {member_id:?}")]
    UnknownMemberId {
        /// The group.
        group: String,
        /// The member id the call named.
        member_id: String,
    },
    /// The group is rebalancing: the member must rejoin before it may do this (Kafka's
    /// REBALANCE_IN_PROGRESS). Retriable after the rejoin.
    #[error("group {group:?} is rebalancing")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// Another consumer with the same `group.instance.id` joined since: this one is fenced
    /// and must stop (Kafka's FENCED_INSTANCE_ID, fatal for the consumer).
    #[error(
        "group {group:?}: group.instance.id {group_instance_id:?} was taken over by a newer member"
    )]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The static member's instance id.
        group_instance_id: String,
    },
    /// A member's protocol type or assignors have nothing in common with the group's members
    /// (Kafka's INCONSISTENT_GROUP_PROTOCOL).
    #[error("group {group:?}: {reason}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// What does not match.
        reason: String,
    },
    /// A `group.id` that cannot be used (empty, or too long to store).
    #[error("invalid group id {group:?}: {reason}")]
    InvalidGroupId {
        /// The id given.
        group: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No such consumer group.
    #[error("group {group:?} does not exist")]
    GroupIdNotFound {
        /// The group.
        group: String,
    },
    /// An admin change that needs the group inactive (no members), such as resetting its
    /// offsets, while it has members (Kafka's NON_EMPTY_GROUP).
    #[error("group {group:?} has active members: stop them first")]
    NonEmptyGroup {
        /// The group.
        group: String,
    },
    /// A committed offset that cannot be stored: negative, or with metadata longer than
    /// `offset.metadata.max.bytes`.
    #[error("invalid offset commit for {topic:?}/{partition}: {reason}")]
    InvalidCommitOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// A call that the consumer's current mode does not allow, such as `subscribe` after
    /// `assign`, or a commit without a `group.id` (Kafka's IllegalStateException).
    #[error("illegal state: {reason}")]
    IllegalState {
        /// What is not allowed, and why.
        reason: &'static str,
    },
    /// A transactional call that the transaction's state does not allow, such as a commit
    /// with no transaction open, or any call before `init_transactions` (Kafka's
    /// INVALID_TXN_STATE and IllegalStateException).
    #[error("transactional id {transactional_id:?}: {reason}")]
    InvalidTxnState {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// What is not allowed.
        reason: &'static str,
    },
    /// A call waited longer than its configured bound (for example `send` blocked on a full
    /// `buffer.memory` for `max.block.ms`). Kafka's TimeoutException.
    #[error("{operation} timed out after {after_ms} ms")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The bound, in milliseconds.
        after_ms: u64,
    },
    /// An i/o error, with the file it concerns.
    #[error("i/o error on {path:?}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed if retried later without changing anything.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::LogDirLocked { .. }
                | Error::Io { .. }
                | Error::Timeout { .. }
                | Error::RebalanceInProgress { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
