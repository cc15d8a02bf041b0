//! The producer's settings: Kafka's producer configs of the same names and defaults.

use super::partitioner::PartitionerKind;
use crate::compression::Compression;
use crate::error::Result;
use crate::storage::config::{invalid, parse_num};

/// `acks`: when a send counts as done.
///
/// The log has one replica, so `One` and `All` wait for the same thing: the append returning.
/// What that makes durable is the topic's flush policy: with fsync-on-append
/// (`FlushPolicy::EveryAppend`, `flush.messages=1`) the append returns only after the fsync,
/// so an acknowledged record survives power loss; otherwise it survives a process crash (it is
/// in the page cache) and reaches the disk at the next flush. That is also what `all` means in
/// Kafka, whose brokers do not fsync per request either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// `acks=0`: done when the record is in the producer's buffer. The delivery report has
    /// offset -1, as Kafka's does, and a failed append is only logged.
    Zero,
    /// `acks=1`: done when the log has appended the record.
    One,
    /// `acks=all` (Kafka's default): done when the log has appended the record, durable under
    /// the topic's flush policy.
    #[default]
    All,
}

/// A producer's settings. Each field is Kafka's producer config of the same name; the
/// defaults are Kafka 4.0's.
///
/// Not here because the embedded log has no use for them: `bootstrap.servers`, `retries`,
/// `delivery.timeout.ms`, `request.timeout.ms`, `max.in.flight.requests.per.connection` (one
/// sender appends each partition's batches in order; an append is not retried because the log
/// does not fail transiently).
///
/// ```
/// use core_log::{Acks, ProducerConfig};
/// let config = ProducerConfig::default()
///     .acks(Acks::One)
///     .enable_idempotence(false)
///     .set("linger.ms", "20")?;
/// assert_eq!(config.linger_ms, 20);
/// # Ok::<(), core_log::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// `acks` (default `all`).
    pub acks: Acks,
    /// `batch.size` (16384): the most bytes of records a batch collects for one partition
    /// before it is sent. A record larger than this gets a batch of its own. 0 sends every
    /// record in its own batch.
    pub batch_size: usize,
    /// `linger.ms` (5): how long a batch that is not full waits for more records before it is
    /// sent.
    pub linger_ms: u64,
    /// `buffer.memory` (33554432): the most bytes the producer holds in batches not yet
    /// appended. A send that needs a new batch beyond it waits up to `max.block.ms`.
    pub buffer_memory: usize,
    /// `max.block.ms` (60000): how long `send` waits for room in `buffer.memory` before it
    /// fails with `Error::Timeout`.
    pub max_block_ms: u64,
    /// `enable.idempotence` (true): the log assigns the producer an id, each batch carries a
    /// per-partition sequence, and the log refuses duplicates and gaps. Requires `acks=all`,
    /// as in Kafka.
    pub enable_idempotence: bool,
    /// `max.request.size` (1048576): the largest record (encoded as a batch of its own) that
    /// `send` accepts.
    pub max_request_size: usize,
    /// `partitioner.class`: how records without an explicit partition are placed.
    pub partitioner: PartitionerKind,
    /// `transactional.id` (none): makes the producer transactional. Producers with the same
    /// id fence each other: after `init_transactions`, an older instance can no longer send
    /// or commit. Requires idempotence.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms` (60000): a transaction open longer than this is aborted by the
    /// coordinator, and its producer fenced.
    pub transaction_timeout_ms: u64,
    /// `compression.type` (`none`): the codec of the records section of every batch, which
    /// the log stores as sent and consumers decompress.
    pub compression_type: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_size: 16_384,
            linger_ms: 5,
            buffer_memory: 33_554_432,
            max_block_ms: 60_000,
            enable_idempotence: true,
            max_request_size: 1_048_576,
            partitioner: PartitionerKind::BuiltIn,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            compression_type: Compression::None,
        }
    }
}

/// Kafka declares `batch.size` and `max.request.size` as Java ints.
const MAX_INT: usize = i32::MAX as usize;
/// Kafka declares the time settings as Java longs.
const MAX_LONG: u64 = i64::MAX as u64;
/// Kafka's class name for the round-robin partitioner, accepted by [`ProducerConfig::set`].
const ROUND_ROBIN_CLASS: &str = "org.apache.kafka.clients.producer.RoundRobinPartitioner";

impl ProducerConfig {
    /// Sets `acks`.
    pub fn acks(mut self, v: Acks) -> Self {
        self.acks = v;
        self
    }
    /// Sets `batch.size`.
    pub fn batch_size(mut self, v: usize) -> Self {
        self.batch_size = v;
        self
    }
    /// Sets `linger.ms`.
    pub fn linger_ms(mut self, v: u64) -> Self {
        self.linger_ms = v;
        self
    }
    /// Sets `buffer.memory`.
    pub fn buffer_memory(mut self, v: usize) -> Self {
        self.buffer_memory = v;
        self
    }
    /// Sets `max.block.ms`.
    pub fn max_block_ms(mut self, v: u64) -> Self {
        self.max_block_ms = v;
        self
    }
    /// Sets `enable.idempotence`.
    pub fn enable_idempotence(mut self, v: bool) -> Self {
        self.enable_idempotence = v;
        self
    }
    /// Sets `max.request.size`.
    pub fn max_request_size(mut self, v: usize) -> Self {
        self.max_request_size = v;
        self
    }
    /// Sets `transactional.id`.
    pub fn transactional_id(mut self, v: impl Into<String>) -> Self {
        self.transactional_id = Some(v.into());
        self
    }
    /// Sets `transaction.timeout.ms`.
    pub fn transaction_timeout_ms(mut self, v: u64) -> Self {
        self.transaction_timeout_ms = v;
        self
    }
    /// Sets `compression.type`.
    pub fn compression_type(mut self, v: Compression) -> Self {
        self.compression_type = v;
        self
    }
    /// Sets the partitioner (`partitioner.class`).
    pub fn partitioner(mut self, v: PartitionerKind) -> Self {
        self.partitioner = v;
        self
    }

    /// Sets a config by Kafka's name and string value, as from a properties file.
    /// `partitioner.class` accepts Kafka's `RoundRobinPartitioner` class name, or an empty
    /// value for the built-in partitioner; a custom one is set with
    /// [`ProducerConfig::partitioner`].
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        let v = value.trim();
        match key {
            "acks" => {
                self.acks = match v {
                    "0" => Acks::Zero,
                    "1" => Acks::One,
                    "all" | "-1" => Acks::All,
                    _ => return Err(invalid(key, value, "0, 1, all or -1")),
                }
            }
            "batch.size" => self.batch_size = parse_num(key, value)?,
            "linger.ms" => self.linger_ms = parse_num(key, value)?,
            "buffer.memory" => self.buffer_memory = parse_num(key, value)?,
            "max.block.ms" => self.max_block_ms = parse_num(key, value)?,
            "max.request.size" => self.max_request_size = parse_num(key, value)?,
            "enable.idempotence" => {
                self.enable_idempotence = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(key, value, "true or false")),
                }
            }
            "transactional.id" => self.transactional_id = Some(v.to_string()),
            "transaction.timeout.ms" => self.transaction_timeout_ms = parse_num(key, value)?,
            "compression.type" => {
                self.compression_type = Compression::from_name(v)
                    .ok_or_else(|| invalid(key, value, "none, gzip, snappy, lz4 or zstd"))?;
            }
            "partitioner.class" => {
                self.partitioner = match v {
                    "" => PartitionerKind::BuiltIn,
                    ROUND_ROBIN_CLASS => PartitionerKind::RoundRobin,
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "empty or org.apache.kafka.clients.producer.RoundRobinPartitioner",
                        ));
                    }
                }
            }
            _ => return Err(invalid(key, value, "unknown producer config")),
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value against Kafka's allowed range, and idempotence against `acks`.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size > MAX_INT {
            return Err(invalid(
                "batch.size",
                self.batch_size,
                "between 0 and 2^31-1",
            ));
        }
        if self.max_request_size > MAX_INT {
            return Err(invalid(
                "max.request.size",
                self.max_request_size,
                "between 0 and 2^31-1",
            ));
        }
        if self.linger_ms > MAX_LONG {
            return Err(invalid("linger.ms", self.linger_ms, "between 0 and 2^63-1"));
        }
        if self.max_block_ms > MAX_LONG {
            return Err(invalid(
                "max.block.ms",
                self.max_block_ms,
                "between 0 and 2^63-1",
            ));
        }
        if let Some(id) = &self.transactional_id {
            if id.is_empty() {
                return Err(invalid("transactional.id", "", "a non-empty id, or none"));
            }
            if !self.enable_idempotence {
                return Err(invalid(
                    "enable.idempotence",
                    "false",
                    "must be true for a transactional producer",
                ));
            }
        }
        if self.transaction_timeout_ms < 1 || self.transaction_timeout_ms > i32::MAX as u64 {
            return Err(invalid(
                "transaction.timeout.ms",
                self.transaction_timeout_ms,
                "between 1 and 2^31-1",
            ));
        }
        if self.enable_idempotence && self.acks != Acks::All {
            let acks = match self.acks {
                Acks::Zero => "0",
                Acks::One => "1",
                Acks::All => "all",
            };
            return Err(invalid(
                "acks",
                acks,
                "must be all for an idempotent producer (or set enable.idempotence=false)",
            ));
        }
        Ok(())
    }
}
