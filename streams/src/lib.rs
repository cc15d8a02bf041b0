//! Moldau streams: the Kafka Streams of Rust, on [`core_log`].
//!
//! A topology is declared with the DSL of a [`StreamsBuilder`] ([`KStream`], [`KTable`],
//! grouping, count, reduce, aggregate) or with custom [`Processor`]s, built into an immutable
//! [`Topology`], and run by [`Streams`] on a [`core_log::Log`]: `num.stream.threads` threads,
//! one task per input partition, each task owning its state stores (RocksDB or in memory), each
//! store backed by a compacted changelog topic it restores from. A key-changing operation
//! followed by a grouping goes through a repartition topic. Processing is at-least-once: a
//! commit flushes caches, output and changelogs before it commits the input offsets.
//!
//! ```
//! use streams::{Consumed, Materialized, Produced, StreamsBuilder, StreamsConfig, TopologyTestDriver};
//! use streams::serde::{IntegerSerde, Nullable, StringSerde};
//!
//! // Likes per product: events keyed by user, valued by product.
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("likes", Consumed::with(StringSerde, StringSerde))
//!     .group_by(|_user, product| product.clone(), streams::Grouped::with(StringSerde, StringSerde))
//!     .count(Materialized::named("likes-per-product"))
//!     .to_stream()
//!     .to("likes-per-product", Produced::with(StringSerde, Nullable(IntegerSerde)));
//! let topology = builder.build()?;
//! println!("{}", topology.describe());
//!
//! let mut driver = TopologyTestDriver::with_partitions(topology, StreamsConfig::new("app"), 4)?;
//! let likes = driver.input_topic("likes", StringSerde, StringSerde);
//! for user in ["ann", "bob", "cid"] {
//!     likes.pipe_input(&mut driver, &user.to_string(), &"p42".to_string(), 0)?;
//! }
//! let counts = driver.key_value_store::<String, i64>("likes-per-product")?;
//! assert_eq!(counts, vec![("p42".to_string(), 3)]);
//! # Ok::<(), streams::Error>(())
//! ```

mod app;
mod builder;
pub mod client;
mod config;
mod dsl;
mod error;
mod hot_keys;
mod processor;
mod record_collector;
mod runtime;
pub mod serde;
pub mod state;
mod sync;
mod test_driver;
mod topology;
pub mod window;

pub use app::{State, Streams, StreamsMetrics};
pub use builder::{
    Consumed, Data, Grouped, Key, Materialized, Produced, Repartitioned, StreamPartitioner,
    StreamsBuilder,
};
pub use client::KafkaClientSupplier;
pub use config::{
    ErrorHandling, ProcessingGuarantee, StreamThreadExceptionResponse, StreamsConfig,
};
pub use core_log;
pub use dsl::{
    Branches, BufferFull, HotKeys, KGroupedStream, KGroupedTable, KStream, KTable,
    SessionWindowedKStream, SlidingWindowedKStream, TimeWindowedKStream, WindowedBy,
};
pub use error::{Error, ProcessingError, Result};
pub use hot_keys::{Estimate, HotKey, RepartitionHotKeys, SpaceSaving};
pub use processor::context::TaskId;
pub use processor::{
    Processor, ProcessorContext, PunctuationType, Record, RecordContext, StoreHandle,
};
pub use state::store::Store;
pub use test_driver::{TestInputTopic, TestOutputTopic, TestRecord, TopologyTestDriver};
pub use topology::{StoreType, Topology};
pub use window::{SessionWindows, SlidingWindows, TimeWindows, Window, Windowed, WindowedSerde};
