//! The log: a directory of topics and their partitions, opened by one process at a time, with
//! its coordinators and the clients' way in. The public face of the layers below:
//!
//! ```text
//!   Log ── the façade: open, topics, partitions, close
//!    └─ Broker ── coordinators (group, transaction, producer ids)
//!        └─ LogManager ── storage (partitions, segments, recovery, maintenance)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::broker::Broker;
use crate::clock::{Clock, SystemClock};
#[cfg(test)]
use crate::coordinator::group::GroupCoordinator;
use crate::coordinator::producer_id::ProducerIdManager;
pub use crate::coordinator::producer_id::ProducerIdentity;
#[cfg(test)]
use crate::coordinator::transaction::{TransactionCoordinator, TxnEnv};
use crate::error::{Error, Result};
use crate::storage::config::{FlushPolicy, TopicConfig};
use crate::storage::log_manager::{LogManager, Options};
use crate::storage::partition::Partition;
use crate::storage::partition::compaction::CleanerStats;
use crate::storage::topic::is_internal_topic;

/// A durable, partitioned, append-only log in a local directory. Cheap to clone: clones share
/// the log. Closed cleanly by [`Log::close`] or when the last clone is dropped.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use core_log::{FlushPolicy, Log, Record, TopicConfig};
/// let log = Log::builder(dir.path()).flush_policy(FlushPolicy::EveryAppend).open().unwrap();
/// log.create_topic("likes", 8, TopicConfig::default()).unwrap();
/// log.partition("likes", 3).unwrap().append(&[Record::new(Some(b"p42"), Some(b"+1"))]).unwrap();
/// log.close().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Log {
    broker: Broker,
}

impl AsRef<Broker> for Log {
    fn as_ref(&self) -> &Broker {
        &self.broker
    }
}

/// Builds a [`Log`]: `Log::builder(dir).flush_policy(..).clock(..).open()`.
#[derive(Debug)]
pub struct LogBuilder {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    flush_policy: FlushPolicy,
    background: bool,
    retention_check_interval_ms: u64,
    cleaner_backoff_ms: u64,
    checkpoint_interval_ms: u64,
    offsets_topic_partitions: u32,
    transaction_state_partitions: u32,
}

impl LogBuilder {
    /// The clock that stamps records and drives rolls, retention and compaction lag.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// The default durability policy; topics may override it with `flush.messages`/`flush.ms`.
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.flush_policy = policy;
        self
    }
    /// Whether to run the maintenance thread (on by default). Without it, call
    /// [`Log::enforce_retention`], [`Log::compact`] and [`Log::flush`] yourself.
    pub fn background_maintenance(mut self, on: bool) -> Self {
        self.background = on;
        self
    }
    /// `log.retention.check.interval.ms` (default 300000).
    pub fn retention_check_interval_ms(mut self, ms: u64) -> Self {
        self.retention_check_interval_ms = ms;
        self
    }
    /// `log.cleaner.backoff.ms` (default 15000).
    pub fn cleaner_backoff_ms(mut self, ms: u64) -> Self {
        self.cleaner_backoff_ms = ms;
        self
    }
    /// `log.flush.offset.checkpoint.interval.ms` (default 60000): how often the maintenance
    /// thread writes the recovery points (and the other checkpoints). After a crash, recovery
    /// scans the segments from the last written recovery point on.
    pub fn checkpoint_interval_ms(mut self, ms: u64) -> Self {
        self.checkpoint_interval_ms = ms;
        self
    }
    /// `offsets.topic.num.partitions` (default 50, as in Kafka): the partitions of the
    /// internal topic `__consumer_offsets` when it is created; later changes do not apply.
    pub fn offsets_topic_num_partitions(mut self, partitions: u32) -> Self {
        self.offsets_topic_partitions = partitions.max(1);
        self
    }
    /// `transaction.state.log.num.partitions` (default 50, as in Kafka): the partitions of the
    /// internal topic `__transaction_state` when it is created.
    pub fn transaction_state_log_num_partitions(mut self, partitions: u32) -> Self {
        self.transaction_state_partitions = partitions.max(1);
        self
    }
    /// Opens the log, recovering it if it was not closed cleanly.
    pub fn open(self) -> Result<Log> {
        Log::open_with(self)
    }
}

impl Log {
    /// Opens (or creates) a log in `dir` with the default settings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Log::builder(dir).open()
    }

    /// A builder for a log in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> LogBuilder {
        LogBuilder {
            dir: dir.as_ref().to_path_buf(),
            clock: Arc::new(SystemClock),
            flush_policy: FlushPolicy::default(),
            background: true,
            retention_check_interval_ms: 300_000,
            cleaner_backoff_ms: 15_000,
            checkpoint_interval_ms: 60_000,
            offsets_topic_partitions: 50,
            transaction_state_partitions: 50,
        }
    }

    fn open_with(b: LogBuilder) -> Result<Log> {
        let options = Options {
            dir: b.dir,
            clock: b.clock,
            flush_policy: b.flush_policy,
            retention_check_interval_ms: b.retention_check_interval_ms,
            cleaner_backoff_ms: b.cleaner_backoff_ms,
            checkpoint_interval_ms: b.checkpoint_interval_ms,
        };
        let storage = LogManager::open(&options)?;
        let producer_ids = ProducerIdManager::open(&options.dir, || storage.max_producer_id());
        let broker = Broker::new(
            storage,
            producer_ids,
            b.offsets_topic_partitions,
            b.transaction_state_partitions,
        );
        if let Err(e) = broker.recover_transactions() {
            tracing::error!(error = %e, "loading the transaction coordinator failed");
        }
        if b.background {
            broker
                .storage()
                .start_maintenance(&options, broker.periodic_tasks());
        }
        Ok(Log { broker })
    }

    fn storage(&self) -> &LogManager {
        self.broker.storage()
    }

    /// Allocates a producer id for an idempotent producer, with epoch 0: Kafka's
    /// `InitProducerId` without a transactional id. Ids are never reused, across restarts
    /// too.
    pub fn init_producer_id(&self) -> Result<ProducerIdentity> {
        self.broker.init_producer_id()
    }

    /// The clock the log and its clients read time from.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.storage().clock()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        self.storage().dir()
    }

    /// Creates a topic with `partitions` partitions (at most
    /// [`MAX_PARTITIONS_PER_TOPIC`](crate::MAX_PARTITIONS_PER_TOPIC)). The names of the log's
    /// internal topics, `__consumer_offsets` and `__transaction_state`, are refused, as Kafka
    /// refuses them: the log creates those itself.
    pub fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        refuse_internal(name)?;
        self.storage().create_topic(name, partitions, config)
    }

    /// Grows a topic to `total` partitions. Partitions are never removed: a smaller or equal
    /// count is `InvalidPartitions`. (As in Kafka, keys may map to other partitions afterwards.)
    /// The internal topics are refused: their partition count places every group and
    /// transactional id.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        refuse_internal(name)?;
        self.storage().create_partitions(name, total)
    }

    /// Deletes a topic and its data. Handles to its partitions fail from then on. The internal
    /// topics are refused.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        refuse_internal(name)?;
        self.storage().delete_topic(name)
    }

    /// Replaces a topic's config (validated first).
    pub fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        self.storage().alter_topic_config(name, config)
    }

    /// The names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.storage().topics()
    }

    /// A topic's config.
    pub fn topic_config(&self, name: &str) -> Result<TopicConfig> {
        self.storage().topic_config(name)
    }

    /// A topic's partition count.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        self.storage().partition_count(name)
    }

    /// A handle to one partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Partition> {
        self.storage().partition(topic, partition)
    }

    /// Deletes segments that `retention.ms` and `retention.bytes` no longer keep, in every
    /// topic whose `cleanup.policy` includes `delete`. Returns the number deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.storage().enforce_retention()
    }

    /// Compacts every partition of every `compact` topic. With `force`, even partitions below
    /// `min.cleanable.dirty.ratio`.
    pub fn compact(&self, force: bool) -> Result<CleanerStats> {
        self.storage().compact(force)
    }

    /// Fsyncs every partition, and writes the checkpoints.
    pub fn flush(&self) -> Result<()> {
        self.storage().flush()
    }

    /// Closes the log cleanly: stops maintenance, fsyncs every partition, writes indexes and
    /// checkpoints, and leaves the clean-shutdown marker so the next open skips recovery.
    pub fn close(self) -> Result<()> {
        self.storage().close()
    }

    /// [`Broker::with_coordinator`], for tests that drive the group coordinator.
    #[cfg(test)]
    pub(crate) fn with_coordinator<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator, &LogManager, i64) -> Result<T>,
    ) -> Result<T> {
        self.broker.with_coordinator(f)
    }

    /// [`Broker::with_txn_coordinator`], for tests that drive the transaction coordinator.
    #[cfg(test)]
    pub(crate) fn with_txn_coordinator<T>(
        &self,
        f: impl FnOnce(&mut TransactionCoordinator, &TxnEnv<'_>, i64) -> Result<T>,
    ) -> Result<T> {
        self.broker.with_txn_coordinator(f)
    }
}

/// `InvalidTopicName` for the log's internal topics, which only the log creates, grows,
/// deletes and writes.
fn refuse_internal(name: &str) -> Result<()> {
    if is_internal_topic(name) {
        return Err(Error::InvalidTopicName {
            name: name.to_string(),
            reason: "an internal topic, which only the log creates, changes and writes",
        });
    }
    Ok(())
}
