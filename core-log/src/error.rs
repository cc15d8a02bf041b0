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
    /// The log has been closed.
    #[error("the log is closed")]
    Closed,
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
        matches!(self, Error::LogDirLocked { .. } | Error::Io { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
