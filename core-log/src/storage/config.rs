//! Topic configuration, with Kafka's setting names and defaults.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::TimestampType;

/// When the log fsyncs a partition's data: the durability/throughput dial.
///
/// | policy | survives a process crash | survives a power loss |
/// |---|---|---|
/// | `Never` | yes (the page cache holds it) | only what the OS had written back |
/// | `Interval` | yes | up to the last flush |
/// | `EveryAppend` | yes | every acknowledged append |
///
/// Kafka's `flush.messages` and `flush.ms`: `EveryAppend` is `flush.messages=1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushPolicy {
    /// Leave write-back to the operating system (Kafka's default).
    #[default]
    Never,
    /// Fsync after this many messages or this many milliseconds, whichever comes first.
    Interval {
        /// `flush.messages`.
        messages: u64,
        /// `flush.ms`.
        ms: i64,
    },
    /// Fsync before an append returns.
    EveryAppend,
}

impl FlushPolicy {
    /// `(flush.messages, flush.ms)`.
    pub(crate) fn thresholds(self) -> (u64, i64) {
        match self {
            FlushPolicy::Never => (u64::MAX, i64::MAX),
            FlushPolicy::Interval { messages, ms } => (messages.max(1), ms.max(0)),
            FlushPolicy::EveryAppend => (1, i64::MAX),
        }
    }
}

/// `cleanup.policy`: delete old segments, compact to the latest value per key, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupPolicy {
    /// Retention by time and size deletes old segments.
    pub delete: bool,
    /// Compaction keeps the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `delete` (the default).
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    /// `compact`.
    pub const COMPACT: CleanupPolicy = CleanupPolicy {
        delete: false,
        compact: true,
    };
    /// `compact,delete`.
    pub const COMPACT_DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: true,
    };
}

/// A topic's settings. Each field is Kafka's topic-level config of the same name; the defaults
/// are Kafka's.
///
/// ```
/// use core_log::{CleanupPolicy, TopicConfig};
/// let config = TopicConfig::default()
///     .cleanup_policy(CleanupPolicy::COMPACT)
///     .set("segment.bytes", "1048576").unwrap();
/// assert_eq!(config.segment_bytes, 1_048_576);
/// assert!(TopicConfig::default().set("retention.ms", "-5").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    #[serde(rename = "retention.ms")]
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the partition is larger; -1 = no limit.
    #[serde(rename = "retention.bytes")]
    pub retention_bytes: i64,
    /// `segment.bytes`: roll to a new segment file at this size.
    #[serde(rename = "segment.bytes")]
    pub segment_bytes: u32,
    /// `segment.ms`: roll a segment this long after its first record, even if not full.
    #[serde(rename = "segment.ms")]
    pub segment_ms: i64,
    /// `cleanup.policy`.
    #[serde(rename = "cleanup.policy")]
    pub cleanup_policy: CleanupPolicy,
    /// `max.message.bytes`: the largest record batch accepted.
    #[serde(rename = "max.message.bytes")]
    pub max_message_bytes: u32,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    #[serde(rename = "min.compaction.lag.ms")]
    pub min_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long compaction keeps tombstones after it first sees them.
    #[serde(rename = "delete.retention.ms")]
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact when this share of the log is uncompacted.
    #[serde(rename = "min.cleanable.dirty.ratio")]
    pub min_cleanable_dirty_ratio: f64,
    /// `message.timestamp.type`.
    #[serde(rename = "message.timestamp.type")]
    pub message_timestamp_type: TimestampType,
    /// `index.interval.bytes`: bytes between offset index entries.
    #[serde(rename = "index.interval.bytes")]
    pub index_interval_bytes: u32,
    /// `flush.messages`; `None` takes the log's [`FlushPolicy`].
    #[serde(rename = "flush.messages")]
    pub flush_messages: Option<u64>,
    /// `flush.ms`; `None` takes the log's [`FlushPolicy`].
    #[serde(rename = "flush.ms")]
    pub flush_ms: Option<i64>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            cleanup_policy: CleanupPolicy::DELETE,
            max_message_bytes: 1_048_588,
            min_compaction_lag_ms: 0,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            message_timestamp_type: TimestampType::CreateTime,
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
        }
    }
}

/// The `InvalidConfig` error for `key=value`.
pub(crate) fn invalid(key: &str, value: impl ToString, reason: &'static str) -> Error {
    Error::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Parses a numeric setting given by Kafka name as a string.
pub(crate) fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number"))
}

impl TopicConfig {
    /// Sets `retention.ms`.
    pub fn retention_ms(mut self, v: i64) -> Self {
        self.retention_ms = v;
        self
    }
    /// Sets `retention.bytes`.
    pub fn retention_bytes(mut self, v: i64) -> Self {
        self.retention_bytes = v;
        self
    }
    /// Sets `segment.bytes`.
    pub fn segment_bytes(mut self, v: u32) -> Self {
        self.segment_bytes = v;
        self
    }
    /// Sets `segment.ms`.
    pub fn segment_ms(mut self, v: i64) -> Self {
        self.segment_ms = v;
        self
    }
    /// Sets `cleanup.policy`.
    pub fn cleanup_policy(mut self, v: CleanupPolicy) -> Self {
        self.cleanup_policy = v;
        self
    }
    /// Sets `max.message.bytes`.
    pub fn max_message_bytes(mut self, v: u32) -> Self {
        self.max_message_bytes = v;
        self
    }
    /// Sets `min.compaction.lag.ms`.
    pub fn min_compaction_lag_ms(mut self, v: i64) -> Self {
        self.min_compaction_lag_ms = v;
        self
    }
    /// Sets `delete.retention.ms`.
    pub fn delete_retention_ms(mut self, v: i64) -> Self {
        self.delete_retention_ms = v;
        self
    }
    /// Sets `message.timestamp.type`.
    pub fn message_timestamp_type(mut self, v: TimestampType) -> Self {
        self.message_timestamp_type = v;
        self
    }
    /// Sets `flush.messages` and `flush.ms` from a policy, overriding the log's.
    pub fn flush_policy(mut self, p: FlushPolicy) -> Self {
        let (messages, ms) = p.thresholds();
        self.flush_messages = Some(messages);
        self.flush_ms = Some(ms);
        self
    }

    /// Sets a config by Kafka's name and string value, as an admin tool would.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "retention.ms" => self.retention_ms = parse_num(key, value)?,
            "retention.bytes" => self.retention_bytes = parse_num(key, value)?,
            "segment.bytes" => self.segment_bytes = parse_num(key, value)?,
            "segment.ms" => self.segment_ms = parse_num(key, value)?,
            "max.message.bytes" => self.max_message_bytes = parse_num(key, value)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_num(key, value)?,
            "delete.retention.ms" => self.delete_retention_ms = parse_num(key, value)?,
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio = parse_num(key, value)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_num(key, value)?,
            "flush.messages" => self.flush_messages = Some(parse_num(key, value)?),
            "flush.ms" => self.flush_ms = Some(parse_num(key, value)?),
            "message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid(key, value, "CreateTime or LogAppendTime")),
                }
            }
            "cleanup.policy" => {
                let mut p = CleanupPolicy {
                    delete: false,
                    compact: false,
                };
                for part in value.split(',') {
                    match part.trim() {
                        "delete" => p.delete = true,
                        "compact" => p.compact = true,
                        _ => return Err(invalid(key, value, "delete, compact, or both")),
                    }
                }
                self.cleanup_policy = p;
            }
            _ => return Err(invalid(key, value, "unknown topic config")),
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value against Kafka's allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.retention_ms < -1 {
            return Err(invalid("retention.ms", self.retention_ms, "-1 or more"));
        }
        if self.retention_bytes < -1 {
            return Err(invalid(
                "retention.bytes",
                self.retention_bytes,
                "-1 or more",
            ));
        }
        if self.segment_bytes < 14 || self.segment_bytes > i32::MAX as u32 {
            return Err(invalid(
                "segment.bytes",
                self.segment_bytes,
                "between 14 and 2^31-1",
            ));
        }
        if self.segment_ms < 1 {
            return Err(invalid("segment.ms", self.segment_ms, "at least 1"));
        }
        if !self.cleanup_policy.delete && !self.cleanup_policy.compact {
            return Err(invalid("cleanup.policy", "", "delete, compact, or both"));
        }
        if (self.max_message_bytes as usize) < crate::codec::BATCH_HEADER_LEN
            || self.max_message_bytes as usize > crate::codec::MAX_BATCH_BYTES
        {
            return Err(invalid(
                "max.message.bytes",
                self.max_message_bytes,
                "between 61 (one batch header) and 64 MiB",
            ));
        }
        if self.min_compaction_lag_ms < 0 {
            return Err(invalid(
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms,
                "0 or more",
            ));
        }
        if self.delete_retention_ms < 0 {
            return Err(invalid(
                "delete.retention.ms",
                self.delete_retention_ms,
                "0 or more",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(invalid(
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio,
                "between 0 and 1",
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(invalid("index.interval.bytes", 0, "at least 1"));
        }
        if self.flush_messages == Some(0) {
            return Err(invalid("flush.messages", 0, "at least 1"));
        }
        if let Some(ms) = self.flush_ms
            && ms < 0
        {
            return Err(invalid("flush.ms", ms, "0 or more"));
        }
        Ok(())
    }

    /// The effective `(flush.messages, flush.ms)` over the log's default policy.
    pub(crate) fn flush_thresholds(&self, default: FlushPolicy) -> (u64, i64) {
        let (m, ms) = default.thresholds();
        (
            self.flush_messages.unwrap_or(m),
            self.flush_ms.unwrap_or(ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_parse_and_bad_values_are_typed_errors() {
        let c = TopicConfig::default()
            .set("cleanup.policy", "compact,delete")
            .unwrap()
            .set("message.timestamp.type", "LogAppendTime")
            .unwrap();
        assert_eq!(c.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
        assert_eq!(c.message_timestamp_type, TimestampType::LogAppendTime);
        for (k, v) in [
            ("segment.bytes", "10"),
            ("segment.bytes", "x"),
            ("cleanup.policy", "shred"),
            ("retention.bytes", "-2"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("no.such.config", "1"),
            ("flush.messages", "0"),
        ] {
            match TopicConfig::default().set(k, v) {
                Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn persisted_form_uses_kafka_names() {
        let json = serde_json::to_string(&TopicConfig::default()).unwrap();
        assert!(json.contains("\"retention.ms\":604800000"), "{json}");
        let back: TopicConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, TopicConfig::default());
    }
}
