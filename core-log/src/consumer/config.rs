//! The consumer's settings: Kafka's consumer configs of the same names and defaults.

use crate::config::{invalid, parse_num};
use crate::error::Result;

/// `auto.offset.reset`: where a partition without a valid position starts.
///
/// Applies to a newly assigned partition (no position yet) and to a position that fell out of
/// the partition's range (retention deleted it, or a seek went past the end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AutoOffsetReset {
    /// `earliest`: the log start offset.
    Earliest,
    /// `latest` (Kafka's default): the log end offset, so only records appended from then on.
    #[default]
    Latest,
    /// `none`: no reset; `poll` fails with [`Error::NoOffsetForPartition`] (no position yet) or
    /// [`Error::OffsetOutOfRange`] (a position outside the log) until the caller seeks.
    None,
}

/// A consumer's settings. Each field is Kafka's consumer config of the same name; the defaults
/// are Kafka's.
///
/// There is no `isolation.level` yet: the log has no transactions, so `read_uncommitted` (Kafka's
/// default) is the only meaningful level. `read_committed` arrives with transactions, as a new
/// field; the struct is `#[non_exhaustive]` so adding it breaks no caller.
///
/// ```
/// use core_log::{AutoOffsetReset, ConsumerConfig};
/// let config = ConsumerConfig::default()
///     .max_poll_records(100)
///     .auto_offset_reset(AutoOffsetReset::Earliest)
///     .set("fetch.max.bytes", "1048576")?;
/// assert_eq!(config.fetch_max_bytes, 1 << 20);
/// # Ok::<(), core_log::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// `max.poll.records`: the most records one `poll` returns (at least 1).
    pub max_poll_records: usize,
    /// `fetch.max.bytes`: about the most batch bytes one `poll` returns, over all partitions.
    /// Not absolute: if the first batch is larger, it is returned alone, so the consumer
    /// always makes progress (Kafka's KIP-74).
    pub fetch_max_bytes: usize,
    /// `max.partition.fetch.bytes`: about the most batch bytes one `poll` returns from one
    /// partition; likewise not absolute for a partition's first batch.
    pub max_partition_fetch_bytes: usize,
    /// `auto.offset.reset`.
    pub auto_offset_reset: AutoOffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_poll_records: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            auto_offset_reset: AutoOffsetReset::Latest,
        }
    }
}

/// Kafka declares the byte settings as Java ints.
const MAX_BYTES: usize = i32::MAX as usize;

impl ConsumerConfig {
    /// Sets `max.poll.records`.
    pub fn max_poll_records(mut self, v: usize) -> Self {
        self.max_poll_records = v;
        self
    }
    /// Sets `fetch.max.bytes`.
    pub fn fetch_max_bytes(mut self, v: usize) -> Self {
        self.fetch_max_bytes = v;
        self
    }
    /// Sets `max.partition.fetch.bytes`.
    pub fn max_partition_fetch_bytes(mut self, v: usize) -> Self {
        self.max_partition_fetch_bytes = v;
        self
    }
    /// Sets `auto.offset.reset`.
    pub fn auto_offset_reset(mut self, v: AutoOffsetReset) -> Self {
        self.auto_offset_reset = v;
        self
    }

    /// Sets a config by Kafka's name and string value, as from a properties file.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "max.poll.records" => self.max_poll_records = parse_num(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = parse_num(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = parse_num(key, value)?,
            "auto.offset.reset" => {
                self.auto_offset_reset = match value.trim() {
                    "earliest" => AutoOffsetReset::Earliest,
                    "latest" => AutoOffsetReset::Latest,
                    "none" => AutoOffsetReset::None,
                    _ => return Err(invalid(key, value, "earliest, latest or none")),
                }
            }
            _ => return Err(invalid(key, value, "unknown consumer config")),
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value against Kafka's allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.max_poll_records < 1 || self.max_poll_records > MAX_BYTES {
            return Err(invalid(
                "max.poll.records",
                self.max_poll_records,
                "between 1 and 2^31-1",
            ));
        }
        if self.fetch_max_bytes > MAX_BYTES {
            return Err(invalid(
                "fetch.max.bytes",
                self.fetch_max_bytes,
                "between 0 and 2^31-1",
            ));
        }
        if self.max_partition_fetch_bytes > MAX_BYTES {
            return Err(invalid(
                "max.partition.fetch.bytes",
                self.max_partition_fetch_bytes,
                "between 0 and 2^31-1",
            ));
        }
        Ok(())
    }
}
