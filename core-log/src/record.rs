//! Records as the log's callers write them.

use serde::{Deserialize, Serialize};

/// A record header: a UTF-8 key and an optional value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header key.
    pub key: &'a str,
    /// Header value; `None` is a null value.
    pub value: Option<&'a [u8]>,
}

/// Whose clock stamps a record: the producer's (`CreateTime`) or the log's (`LogAppendTime`).
/// Kafka's `message.timestamp.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampType {
    /// The timestamp the producer set (or the log's time when it set none).
    #[default]
    CreateTime,
    /// The time the log appended the batch; the producer's timestamps are replaced.
    LogAppendTime,
}

/// A record to append to a partition, borrowing its key, value and headers.
///
/// ```
/// use core_log::Record;
/// let r = Record::new(Some(b"product-42"), Some(b"+1")).timestamp(1_700_000_000_000);
/// assert_eq!(r.key, Some(&b"product-42"[..]));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Record<'a> {
    /// The key; compacted topics require one.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Create time in milliseconds; `None` takes the log's clock at append.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: &'a [Header<'a>],
}

impl<'a> Record<'a> {
    /// A record with a key and a value, no timestamp and no headers.
    pub fn new(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Self {
        Record {
            key,
            value,
            timestamp: None,
            headers: &[],
        }
    }

    /// Sets the create time in milliseconds since the epoch.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Sets the headers.
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }
}

/// A topic and a partition index: Kafka's `TopicPartition`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition's index.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
