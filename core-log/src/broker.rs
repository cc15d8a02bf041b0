//! The broker: the log's storage and its coordinators behind one handle, the way a client
//! reaches them.
//!
//! ```text
//!   Producer, Consumer, Admin ──> Broker ──> group coordinator ──┐
//!   (an in-process transport;              transaction coordinator ├──> LogManager (storage)
//!    `moldau serve` will be another)       producer ids ───────────┘
//! ```
//!
//! Clients take `impl AsRef<Broker>` (a `Log` is one): every request they make goes through
//! it, so a network front end can drive the same coordinators for remote clients.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::coordinator::group::{GroupCoordinator, GroupCoordinatorCell};
use crate::coordinator::producer_id::{ProducerIdManager, ProducerIdentity};
use crate::coordinator::transaction::{
    TRANSACTION_STATE_TOPIC, TransactionCoordinator, TransactionCoordinatorCell, TxnEnv,
};
use crate::error::Result;
use crate::storage::log_manager::{LogManager, PeriodicTask};
use crate::storage::partition::Partition;

/// Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
const TXN_CLEANUP_INTERVAL_MS: u64 = 10_000;

/// The log's storage and coordinators, as its clients reach them. Cheap to clone. Obtained
/// from a [`Log`](crate::Log) (`AsRef<Broker>`); clients' constructors take either.
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: LogManager,
    producer_ids: ProducerIdManager,
    groups: GroupCoordinatorCell,
    transactions: TransactionCoordinatorCell,
}

impl AsRef<Broker> for Broker {
    fn as_ref(&self) -> &Broker {
        self
    }
}

impl Broker {
    /// The coordinators over `storage`. `__consumer_offsets` and `__transaction_state` get
    /// these partition counts when they are created.
    pub(crate) fn new(
        storage: LogManager,
        producer_ids: ProducerIdManager,
        offsets_topic_partitions: u32,
        transaction_state_partitions: u32,
    ) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                storage,
                producer_ids,
                groups: GroupCoordinatorCell::new(offsets_topic_partitions),
                transactions: TransactionCoordinatorCell::new(transaction_state_partitions),
            }),
        }
    }

    /// The storage layer.
    pub(crate) fn storage(&self) -> &LogManager {
        &self.inner.storage
    }

    /// A handle to one partition.
    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Partition> {
        self.inner.storage.partition(topic, partition)
    }

    /// The names of all topics, sorted (Kafka's metadata request, for subscriptions by
    /// pattern).
    pub(crate) fn topics(&self) -> Vec<String> {
        self.inner.storage.topics()
    }

    /// A topic's partition count.
    pub(crate) fn partition_count(&self, topic: &str) -> Result<u32> {
        self.inner.storage.partition_count(topic)
    }

    /// Changes whenever a topic is created or deleted or gains partitions.
    pub(crate) fn metadata_version(&self) -> u64 {
        self.inner.storage.metadata_version()
    }

    /// The clock the log and its clients read time from.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.storage.clock()
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.inner.storage.dir()
    }

    /// `Closed` once the log is closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        self.inner.storage.check_open()
    }

    /// Kafka's `InitProducerId` without a transactional id: a new producer id, epoch 0.
    pub(crate) fn init_producer_id(&self) -> Result<ProducerIdentity> {
        self.check_open()?;
        self.inner.producer_ids.next()
    }

    /// Runs `f` on the group coordinator under its lock, loading it on first use.
    pub(crate) fn with_coordinator<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator, &LogManager, i64) -> Result<T>,
    ) -> Result<T> {
        self.inner.groups.with(&self.inner.storage, f)
    }

    /// Runs `f` on the transaction coordinator under its lock, loading it on first use.
    /// Lock order: transaction coordinator, group coordinator, then storage.
    pub(crate) fn with_txn_coordinator<T>(
        &self,
        f: impl FnOnce(&mut TransactionCoordinator, &TxnEnv<'_>, i64) -> Result<T>,
    ) -> Result<T> {
        self.inner.transactions.with(&self.env(), f)
    }

    /// Aborts the transactions open longer than their `transaction.timeout.ms`.
    pub(crate) fn abort_timed_out_transactions(&self) -> Result<usize> {
        self.inner.transactions.abort_timed_out(&self.env())
    }

    /// Loads the transaction coordinator if the log has its topic: transactions the previous
    /// run left decided but unmarked are finished, and open ones past their timeout aborted
    /// (until then read_committed consumers of their partitions would wait at the last
    /// stable offset).
    pub(crate) fn recover_transactions(&self) -> Result<()> {
        if self.partition_count(TRANSACTION_STATE_TOPIC).is_ok() {
            self.with_txn_coordinator(|_, _, _| Ok(()))?;
        }
        Ok(())
    }

    /// The work of the coordinators the storage's maintenance thread runs.
    pub(crate) fn periodic_tasks(&self) -> Vec<PeriodicTask> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        vec![PeriodicTask {
            name: "abort timed-out transactions",
            every: Duration::from_millis(TXN_CLEANUP_INTERVAL_MS),
            run: Box::new(move || match weak.upgrade() {
                Some(inner) => Broker { inner }.abort_timed_out_transactions().map(drop),
                None => Ok(()),
            }),
        }]
    }

    fn env(&self) -> TxnEnv<'_> {
        TxnEnv {
            storage: &self.inner.storage,
            producer_ids: &self.inner.producer_ids,
            groups: &self.inner.groups,
        }
    }
}
