//! The clients of the embedded log: a [`Log`] is a [`KafkaClientSupplier`] handing out
//! core-log's own producer and consumer, and an admin over the log's topics, all in this
//! process.
//!
//! The traits are implemented on core-log's clients themselves, so a call through the seam is
//! one dynamic call into the same code the runtime called before: a send is
//! `send_with_shared_callback`, and a poll returns the consumer's batch as it is, its keys and
//! values slices of the fetch buffer (no copy). A rebalance listener is wrapped once, when the
//! thread subscribes; inside it the consumer is passed on as the seam's `Consumer`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use core_log::serialization::BytesSerde;
use core_log::{
    Clock, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecords, IsolationLevel, Log,
    OffsetAndMetadata, ProducerConfig, ProducerRecord, Result, SharedCallback, TopicConfig,
    TopicPartition,
};

use super::{
    Admin, Consumer, ConsumerRebalanceListener, KafkaClientSupplier, OffsetSpec, Producer,
};

/// The embedded log's producer of a stream thread.
type LogProducer = core_log::Producer<[u8], [u8]>;
/// The embedded log's consumer of a stream thread: keys and values as slices of its fetches.
type LogConsumer = core_log::Consumer<Bytes, Bytes>;

impl KafkaClientSupplier for Log {
    fn producer(&self, config: ProducerConfig) -> Result<Box<dyn Producer>> {
        Ok(Box::new(LogProducer::new(
            self, config, BytesSerde, BytesSerde,
        )?))
    }

    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(LogConsumer::new(
            self, config, BytesSerde, BytesSerde,
        )?))
    }

    fn restore_consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        KafkaClientSupplier::consumer(self, config)
    }

    fn admin(&self) -> Result<Box<dyn Admin>> {
        Ok(Box::new(LogAdmin { log: self.clone() }))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Log::clock(self)
    }

    fn default_state_dir(&self) -> PathBuf {
        self.dir().join("streams-state")
    }
}

impl Producer for LogProducer {
    #[inline]
    fn send(
        &self,
        record: ProducerRecord<'_, [u8], [u8]>,
        callback: &SharedCallback,
    ) -> Result<()> {
        self.send_with_shared_callback(record, callback)
    }

    fn flush(&self) {
        LogProducer::flush(self);
    }

    fn init_transactions(&self) -> Result<()> {
        LogProducer::init_transactions(self)
    }

    fn begin_transaction(&self) -> Result<()> {
        // The guard-less form: the thread keeps its transaction open across polls.
        self.open_transaction()
    }

    fn in_transaction(&self) -> bool {
        LogProducer::in_transaction(self)
    }

    fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        LogProducer::send_offsets_to_transaction(self, offsets, group)
    }

    fn commit_transaction(&self) -> Result<()> {
        LogProducer::commit_transaction(self)
    }

    fn abort_transaction(&self) -> Result<()> {
        LogProducer::abort_transaction(self)
    }
}

impl Consumer for LogConsumer {
    fn subscribe(
        &mut self,
        topics: &[String],
        listener: Box<dyn ConsumerRebalanceListener>,
    ) -> Result<()> {
        self.set_rebalance_listener(Listener(listener));
        LogConsumer::subscribe(self, topics)
    }

    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        LogConsumer::assign(self, partitions)
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        LogConsumer::assignment(self)
    }

    fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords<Bytes, Bytes>> {
        LogConsumer::poll(self, timeout)
    }

    fn position(&mut self, partition: &TopicPartition) -> Result<i64> {
        LogConsumer::position(self, partition)
    }

    fn seek(&mut self, partition: &TopicPartition, offset: i64) -> Result<()> {
        LogConsumer::seek(self, partition, offset)
    }

    fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        LogConsumer::seek_to_beginning(self, partitions)
    }

    fn commit_sync(&mut self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<()> {
        self.commit_sync_offsets(offsets)
    }

    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        LogConsumer::committed(self, partitions)
    }

    fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        LogConsumer::group_metadata(self)
    }
}

/// The seam's listener as core-log's consumer runs it.
struct Listener(Box<dyn ConsumerRebalanceListener>);

impl core_log::ConsumerRebalanceListener<Bytes, Bytes> for Listener {
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut LogConsumer,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.0.on_partitions_revoked(consumer, partitions)
    }

    fn on_partitions_assigned(
        &mut self,
        consumer: &mut LogConsumer,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.0.on_partitions_assigned(consumer, partitions)
    }

    fn on_partitions_lost(
        &mut self,
        consumer: &mut LogConsumer,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.0.on_partitions_lost(consumer, partitions)
    }
}

/// The embedded log's topic operations. core-log's `Admin` administers consumer groups; the
/// topic calls are the log's own.
struct LogAdmin {
    log: Log,
}

impl Admin for LogAdmin {
    fn create_topic(&self, topic: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        self.log.create_topic(topic, partitions, config)
    }

    fn partition_count(&self, topic: &str) -> Result<u32> {
        self.log.partition_count(topic)
    }

    fn list_offsets(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<i64> {
        let p = self.log.partition(&partition.topic, partition.partition)?;
        match (spec, isolation) {
            (OffsetSpec::Earliest, _) => p.log_start_offset(),
            (OffsetSpec::Latest, IsolationLevel::ReadUncommitted) => p.high_watermark(),
            (OffsetSpec::Latest, IsolationLevel::ReadCommitted) => p.last_stable_offset(),
        }
    }
}
