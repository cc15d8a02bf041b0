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
//! The clients speak Kafka's language: a [`Producer`] batches records per partition
//! (`batch.size`, `linger.ms`, idempotent by default) and a [`Consumer`] polls them, sleeping
//! until an append wakes it.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use core_log::serialization::{IntegerSerde, StringSerde};
//! use core_log::{AutoOffsetReset, Consumer, ConsumerConfig, Log, Producer, ProducerConfig,
//!                ProducerRecord, TopicConfig, TopicPartition};
//!
//! let log = Log::open(dir.path())?;
//! log.create_topic("likes", 2, TopicConfig::default())?;
//! let producer: Producer<str, i64> =
//!     Producer::new(&log, ProducerConfig::default(), StringSerde, IntegerSerde)?;
//! let delivered = producer.send(ProducerRecord::new("likes").key("product-42").value(&1))?;
//! let metadata = delivered.wait()?; // or `.await` in async code
//!
//! let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
//! let mut consumer: Consumer<String, i64> = Consumer::new(&log, config, StringSerde, IntegerSerde)?;
//! consumer.assign(&[TopicPartition::new("likes", metadata.partition)])?;
//! let records = consumer.poll(Duration::from_secs(5))?;
//! let first = records.iter().next().expect("the record sent above");
//! assert_eq!((first.key.as_deref(), first.value), (Some("product-42"), Some(1)));
//! # Ok::<(), core_log::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` at the repository root for the on-disk format, the locking, and what
//! each durability policy survives.

mod broker;
mod client;
mod clock;
pub mod codec;
mod compression;
mod coordinator;
mod error;
mod log;
mod record;
pub mod serialization;
mod storage;
mod sync;
mod wire;

pub use broker::Broker;
pub use client::admin::{Admin, ConsumerGroupListing, OffsetSpec, PartitionLag};
pub use client::consumer::assignor::{
    ConsumerPartitionAssignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol,
    RoundRobinAssignor, SharedAssignor, StickyAssignor, assignor_by_name,
};
pub use client::consumer::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRebalanceListener,
    ConsumerRecord, ConsumerRecords, OffsetAndTimestamp, OwnedHeader,
};
pub use client::producer::{
    Acks, DeliveryFuture, Partitioner, PartitionerKind, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata, SharedCallback, Transaction, murmur2, partition_for_key, to_positive,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use compression::Compression;
pub use coordinator::group::{
    ConsumerGroupDescription, GroupState, JoinOutcome, JoinRequest, JoinResult, MemberDescription,
    MemberLink, MemberRef, OffsetAndMetadata, SyncOutcome,
};
pub use coordinator::protocol::Subscription;
pub use coordinator::transaction::{EpochAtEnd, TxnRef};
pub use error::{Error, Result};
pub use log::{Log, LogBuilder, ProducerIdentity};
pub use record::{Header, Record, TimestampType};
pub use storage::config::{CleanupPolicy, FlushPolicy, TopicConfig};
pub use storage::partition::compaction::CleanerStats;
pub use storage::partition::{
    AbortedTransaction, AppendInfo, FetchData, IsolationLevel, LostRange, Partition,
};
pub use storage::topic::{
    MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LEN, TopicPartition, is_internal_topic,
    validate_topic_name,
};
pub use storage::verify::{Finding, VerifyReport, verify};
pub use sync::AppendWaker;
