//! `core-log`: Moldau's durable, partitioned, append-only log, embedded in the application.
//!
//! It keeps Kafka's storage model and names: topics split into partitions, each partition a
//! sequence of segment files holding Kafka's RecordBatch v2 bytes, with sparse offset and time
//! indexes, recovery of a torn tail on open, retention by time and size, and compaction to the
//! latest value per key. Time comes from an injected [`Clock`].
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use core_log::{Log, Record, TopicConfig};
//!
//! let log = Log::open(dir.path())?;
//! log.create_topic("likes", 3, TopicConfig::default())?;
//! let p = log.partition("likes", 0)?;
//! p.append(&[Record::new(Some(b"product-42"), Some(b"+1"))])?;
//! let fetched = p.read(0, 1 << 20)?;
//! let values: Vec<_> = fetched.records().map(|r| r.value.unwrap().to_vec()).collect();
//! assert_eq!(values, vec![b"+1".to_vec()]);
//! # Ok::<(), core_log::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` at the repository root for the on-disk format, the locking, and what
//! each durability policy survives.

mod clock;
pub mod codec;
mod config;
mod consumer;
mod error;
mod fs;
mod log;
mod partition;
mod producer;
mod record;
pub mod serialization;
mod topic;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, FlushPolicy, TopicConfig};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, ConsumerRecords, OffsetAndTimestamp,
    OwnedHeader,
};
pub use error::{Error, Result};
pub use log::{Log, LogBuilder, ProducerIdentity};
pub use partition::compaction::CleanerStats;
pub use partition::{AppendInfo, FetchData, Partition};
pub use producer::{
    Acks, DeliveryFuture, Partitioner, PartitionerKind, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata, murmur2, partition_for_key, to_positive,
};
pub use record::{Header, Record, TimestampType};
pub use topic::{MAX_TOPIC_NAME_LEN, TopicPartition, validate_topic_name};
