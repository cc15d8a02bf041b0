//! The client seam: everything the streams runtime asks of a Kafka cluster, behind one small
//! interface, Kafka Streams' `KafkaClientSupplier` with the admin calls Kafka Streams makes.
//!
//! ```text
//!  Streams::new(topology, &clients, config)
//!        │ KafkaClientSupplier
//!        ├─ admin()             ─▶ Admin      internal topics, partition counts, end offsets
//!        └─ per stream thread:
//!             producer(config)         ─▶ Producer   every record the thread's tasks write,
//!                                                    its transactions (exactly-once)
//!             consumer(config)         ─▶ Consumer   the application's group: subscribe with a
//!                                                    rebalance listener, poll, commit
//!             restore_consumer(config) ─▶ Consumer   changelogs, read_committed, by assignment
//!        clock()                                     the time every thread and task reads
//! ```
//!
//! Above this module nothing in the crate names the log or its clients; a
//! [`Log`](core_log::Log) is a supplier (`client/embedded.rs`: the clients of the embedded log
//! in this process), and one over the network can take its place without touching the DSL,
//! the tasks or the stores. Each trait holds only what the runtime calls, in Kafka's names;
//! ARCHITECTURE.md ("streams: clients") says why each method is there.
//!
//! Records stay Kafka's: the runtime sends a [`ProducerRecord`](core_log::ProducerRecord) of
//! bytes with a shared delivery callback, and polls [`ConsumerRecords`](core_log::ConsumerRecords)
//! of [`Bytes`](bytes::Bytes), a whole batch per call; errors are core-log's, whose variants are
//! Kafka's error codes (`ProducerFenced`, `RebalanceInProgress`, ...), which the runtime acts on.

pub mod admin;
pub mod consumer;
mod embedded;
pub mod producer;

use std::path::PathBuf;
use std::sync::Arc;

use core_log::{Clock, ConsumerConfig, ProducerConfig, Result};

pub use admin::{Admin, OffsetSpec};
pub use consumer::{Consumer, ConsumerRebalanceListener};
pub use producer::Producer;

/// Hands the runtime its clients (Kafka Streams' `KafkaClientSupplier`, plus the clock).
///
/// An application instance takes one admin when it is made, and each stream thread a producer,
/// a consumer and a restore consumer when it starts (and again when a failed thread is
/// replaced). The configs are Kafka's, filled in by the runtime; an implementation adds its
/// connection settings and may ignore what has no meaning for it.
///
/// [`Log`](core_log::Log) implements it: `Streams::new(topology, &log, config)` runs the
/// application on the embedded log.
pub trait KafkaClientSupplier: Send + Sync {
    /// A producer of byte records (Kafka's `getProducer`): `linger.ms`, and under exactly-once
    /// `transactional.id` and `transaction.timeout.ms`.
    fn producer(&self, config: ProducerConfig) -> Result<Box<dyn Producer>>;

    /// The main consumer of a stream thread (Kafka's `getConsumer`): a member of the group
    /// `application.id` with the range assignor, auto-commit off, `read_committed` under
    /// exactly-once.
    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>>;

    /// A stream thread's restore consumer (Kafka's `getRestoreConsumer`): no group, partitions
    /// assigned by hand, `read_committed`, `auto.offset.reset=none`.
    fn restore_consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>>;

    /// The admin client of an application instance (Kafka's `getAdmin`).
    fn admin(&self) -> Result<Box<dyn Admin>>;

    /// The clock of commit intervals, punctuations and hot-key rates: the log's own for the
    /// embedded log (a `ManualClock` there drives a whole application), the system clock for
    /// a cluster.
    fn clock(&self) -> Arc<dyn Clock>;

    /// Where `state.dir` is when the config leaves it unset: `streams-state` in the embedded
    /// log's directory; Kafka Streams' default is `kafka-streams` in the temporary directory.
    fn default_state_dir(&self) -> PathBuf {
        std::env::temp_dir().join("kafka-streams")
    }
}
