//! The consumer's settings: Kafka's consumer configs of the same names and defaults.

use crate::client::consumer::assignor::{
    CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol, SharedAssignor, assignor_by_name,
};
use crate::error::Result;
use crate::storage::config::{invalid, parse_num};
use crate::storage::partition::IsolationLevel;
use std::sync::Arc;

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
/// ```
/// use core_log::{AutoOffsetReset, ConsumerConfig};
/// let config = ConsumerConfig::default()
///     .max_poll_records(100)
///     .auto_offset_reset(AutoOffsetReset::Earliest)
///     .set("fetch.max.bytes", "1048576")?;
/// assert_eq!(config.fetch_max_bytes, 1 << 20);
/// # Ok::<(), core_log::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// `group.id`: the consumer group, needed by `subscribe` and by commits. `None` (Kafka's
    /// default) for a consumer that only uses `assign`.
    pub group_id: Option<String>,
    /// `group.instance.id`: makes the consumer a static member, which keeps its partitions
    /// across a restart within `session.timeout.ms` without a rebalance.
    pub group_instance_id: Option<String>,
    /// `client.id`: names the consumer in member ids and in `describe`.
    pub client_id: String,
    /// `enable.auto.commit`: commit the positions of what earlier polls returned, every
    /// `auto.commit.interval.ms`, before a rebalance revokes partitions, and at close.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `session.timeout.ms`: how long the group waits for a member that stopped (a static
    /// member that closed, or one that stopped polling) before it reassigns its partitions.
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms`: how often a consumer waiting in `poll` checks in with the
    /// coordinator (running the group's timers); must be below `session.timeout.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`: a member that does not call `poll` for this long leaves the
    /// group; also how long a rebalance waits for members to rejoin.
    pub max_poll_interval_ms: u64,
    /// `partition.assignment.strategy`: assignors in order of preference. The group uses the
    /// one every member supports that most prefer; cooperative rebalancing is used only if
    /// every assignor listed supports it. Kafka's default: range, then cooperative-sticky.
    pub partition_assignment_strategy: Vec<SharedAssignor>,
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
    /// `isolation.level` (Kafka's default `read_uncommitted`): `read_committed` returns only
    /// records of committed transactions (and non-transactional ones), never reading past the
    /// last stable offset.
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            group_instance_id: None,
            client_id: String::new(),
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            partition_assignment_strategy: vec![
                Arc::new(RangeAssignor),
                Arc::new(CooperativeStickyAssignor),
            ],
            max_poll_records: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            auto_offset_reset: AutoOffsetReset::Latest,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

/// Kafka declares the byte settings as Java ints.
const MAX_BYTES: usize = i32::MAX as usize;

impl ConsumerConfig {
    /// Sets `group.id`.
    pub fn group_id(mut self, v: impl Into<String>) -> Self {
        self.group_id = Some(v.into());
        self
    }
    /// Sets `group.instance.id` (static membership).
    pub fn group_instance_id(mut self, v: impl Into<String>) -> Self {
        self.group_instance_id = Some(v.into());
        self
    }
    /// Sets `client.id`.
    pub fn client_id(mut self, v: impl Into<String>) -> Self {
        self.client_id = v.into();
        self
    }
    /// Sets `enable.auto.commit`.
    pub fn enable_auto_commit(mut self, v: bool) -> Self {
        self.enable_auto_commit = v;
        self
    }
    /// Sets `auto.commit.interval.ms`.
    pub fn auto_commit_interval_ms(mut self, v: u64) -> Self {
        self.auto_commit_interval_ms = v;
        self
    }
    /// Sets `session.timeout.ms`.
    pub fn session_timeout_ms(mut self, v: u64) -> Self {
        self.session_timeout_ms = v;
        self
    }
    /// Sets `heartbeat.interval.ms`.
    pub fn heartbeat_interval_ms(mut self, v: u64) -> Self {
        self.heartbeat_interval_ms = v;
        self
    }
    /// Sets `max.poll.interval.ms`.
    pub fn max_poll_interval_ms(mut self, v: u64) -> Self {
        self.max_poll_interval_ms = v;
        self
    }
    /// Sets `partition.assignment.strategy`.
    pub fn partition_assignment_strategy(mut self, v: Vec<SharedAssignor>) -> Self {
        self.partition_assignment_strategy = v;
        self
    }

    /// The rebalance protocol the strategy allows: cooperative only if every assignor
    /// supports it (Kafka's rule).
    pub fn rebalance_protocol(&self) -> RebalanceProtocol {
        let all_cooperative = !self.partition_assignment_strategy.is_empty()
            && self.partition_assignment_strategy.iter().all(|a| {
                a.supported_protocols()
                    .contains(&RebalanceProtocol::Cooperative)
            });
        if all_cooperative {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

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
    /// Sets `isolation.level`.
    pub fn isolation_level(mut self, v: IsolationLevel) -> Self {
        self.isolation_level = v;
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
            "group.id" => self.group_id = Some(value.trim().to_string()),
            "group.instance.id" => self.group_instance_id = Some(value.trim().to_string()),
            "client.id" => self.client_id = value.trim().to_string(),
            "enable.auto.commit" => {
                self.enable_auto_commit = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(key, value, "true or false")),
                }
            }
            "auto.commit.interval.ms" => self.auto_commit_interval_ms = parse_num(key, value)?,
            "session.timeout.ms" => self.session_timeout_ms = parse_num(key, value)?,
            "heartbeat.interval.ms" => self.heartbeat_interval_ms = parse_num(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval_ms = parse_num(key, value)?,
            "partition.assignment.strategy" => {
                let mut assignors = Vec::new();
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match assignor_by_name(name) {
                        Some(a) => assignors.push(a),
                        None => {
                            return Err(invalid(
                                key,
                                value,
                                "a list of range, roundrobin, sticky, cooperative-sticky",
                            ));
                        }
                    }
                }
                self.partition_assignment_strategy = assignors;
            }
            "isolation.level" => {
                self.isolation_level = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => return Err(invalid(key, value, "read_uncommitted or read_committed")),
                }
            }
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
        if self.group_id.as_deref() == Some("") {
            return Err(invalid("group.id", "", "a non-empty group id"));
        }
        if self.group_instance_id.as_deref() == Some("") {
            return Err(invalid(
                "group.instance.id",
                "",
                "a non-empty instance id, or none",
            ));
        }
        if self.partition_assignment_strategy.is_empty() {
            return Err(invalid(
                "partition.assignment.strategy",
                "",
                "at least one assignor",
            ));
        }
        // Kafka declares these as Java ints.
        for (key, v) in [
            ("auto.commit.interval.ms", self.auto_commit_interval_ms),
            ("session.timeout.ms", self.session_timeout_ms),
            ("heartbeat.interval.ms", self.heartbeat_interval_ms),
            ("max.poll.interval.ms", self.max_poll_interval_ms),
        ] {
            if v > i32::MAX as u64 {
                return Err(invalid(key, v, "between 0 and 2^31-1"));
            }
        }
        if self.max_poll_interval_ms < 1 {
            return Err(invalid(
                "max.poll.interval.ms",
                self.max_poll_interval_ms,
                "at least 1",
            ));
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(invalid(
                "heartbeat.interval.ms",
                self.heartbeat_interval_ms,
                "lower than session.timeout.ms",
            ));
        }
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
