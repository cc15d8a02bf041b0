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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::Clock;
use crate::coordinator::group::{
    ConsumerGroupDescription, GroupCoordinator, GroupCoordinatorCell, GroupState, JoinOutcome,
    JoinRequest, MemberRef, OffsetAndMetadata, SyncOutcome,
};
use crate::coordinator::producer_id::{ProducerIdManager, ProducerIdentity};
use crate::coordinator::transaction::{
    EpochAtEnd, TRANSACTION_STATE_TOPIC, TransactionCoordinator, TransactionCoordinatorCell,
    TxnEnv, TxnRef,
};
use crate::error::Result;
use crate::record::TopicPartition;
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
    pub fn init_producer_id(&self) -> Result<ProducerIdentity> {
        self.check_open()?;
        self.inner.producer_ids.next()
    }

    // Group coordinator requests (Kafka's API names).

    /// JoinGroup: `Pending` until the rebalance completes.
    pub fn join_group(&self, req: JoinRequest<'_>) -> Result<JoinOutcome> {
        self.with_coordinator(|c, log, now| c.join_group(log, req, now))
    }

    /// SyncGroup: the leader brings the assignment; every member gets its part.
    pub fn sync_group(
        &self,
        who: MemberRef<'_>,
        assignment: Option<BTreeMap<String, Vec<TopicPartition>>>,
    ) -> Result<SyncOutcome> {
        self.with_coordinator(|c, log, now| c.sync_group(log, who, assignment, now))
    }

    /// Heartbeat. `polled` says the member is also polling (an embedded member's heartbeat
    /// comes from its poll, which restarts its `max.poll.interval.ms` timer).
    pub fn heartbeat(&self, who: MemberRef<'_>, polled: bool) -> Result<()> {
        self.with_coordinator(|c, log, now| c.heartbeat(log, who, polled, now))
    }

    /// LeaveGroup.
    pub fn leave_group(&self, group_id: &str, member_id: &str) -> Result<()> {
        self.with_coordinator(|c, log, now| c.leave_group(log, group_id, member_id, now))
    }

    /// OffsetCommit from a member of the group's current generation.
    pub fn offset_commit(
        &self,
        who: MemberRef<'_>,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.with_coordinator(|c, log, now| c.commit_offsets(log, who, offsets, now))
    }

    /// TxnOffsetCommit: offsets that apply when `producer`'s transaction commits.
    pub fn txn_offset_commit(
        &self,
        who: MemberRef<'_>,
        producer: ProducerIdentity,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.with_coordinator(|c, log, now| {
            c.commit_transactional_offsets(log, who, producer, offsets, now)
        })
    }

    /// OffsetFetch: the group's committed offsets, of `partitions` or of all.
    pub fn offset_fetch(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.with_coordinator(|c, _, _| Ok(c.fetch_offsets(group_id, partitions)))
    }

    /// OffsetFetch with `require_stable` (KIP-447): the committed offsets of `partitions`,
    /// and which of them an open transaction is about to change (their committed offset is
    /// not stable yet).
    pub fn offset_fetch_stable(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<(
        HashSet<TopicPartition>,
        BTreeMap<TopicPartition, OffsetAndMetadata>,
    )> {
        self.with_coordinator(|c, _, _| {
            Ok((
                c.pending_offsets(group_id, partitions),
                c.fetch_offsets(group_id, Some(partitions)),
            ))
        })
    }

    /// ListGroups.
    pub fn list_groups(&self) -> Result<Vec<(String, GroupState)>> {
        self.with_coordinator(|c, log, now| Ok(c.list_groups(log, now)))
    }

    /// DescribeGroups, for one group.
    pub fn describe_group(&self, group_id: &str) -> Result<ConsumerGroupDescription> {
        self.with_coordinator(|c, log, now| c.describe_group(log, group_id, now))
    }

    /// DescribeGroups and OffsetFetch of one group, at the same moment.
    pub(crate) fn describe_group_offsets(
        &self,
        group_id: &str,
    ) -> Result<(
        ConsumerGroupDescription,
        BTreeMap<TopicPartition, OffsetAndMetadata>,
    )> {
        self.with_coordinator(|c, log, now| {
            Ok((
                c.describe_group(log, group_id, now)?,
                c.fetch_offsets(group_id, None),
            ))
        })
    }

    /// AlterConsumerGroupOffsets: an admin's commit, for a group with no members.
    pub(crate) fn alter_offsets(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.with_coordinator(|c, log, now| c.alter_offsets(log, group_id, offsets, now))
    }

    /// DeleteGroups, for one group.
    pub fn delete_group(&self, group_id: &str) -> Result<()> {
        self.with_coordinator(|c, log, now| c.delete_group(log, group_id, now))
    }

    // Transaction coordinator requests.

    /// InitProducerId with a transactional id: its producer id and a new epoch, fencing any
    /// older instance.
    pub fn init_transactional_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i64,
    ) -> Result<ProducerIdentity> {
        self.with_txn_coordinator(|c, env, now| {
            c.init_producer_id(env, transactional_id, timeout_ms, now)
        })
    }

    /// AddPartitionsToTxn.
    pub fn add_partitions_to_txn(
        &self,
        who: TxnRef<'_>,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.with_txn_coordinator(|c, env, now| c.add_partitions(env, who, partitions, now))
    }

    /// Whether a transactional batch of producer `producer_id` at `epoch` may be appended to
    /// `partition`: the producer's transaction is open and the partition was added to it
    /// (KIP-890's check, for a network front end's Produce; the embedded producer adds every
    /// partition before it appends).
    pub fn partition_in_transaction(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &TopicPartition,
    ) -> Result<bool> {
        self.with_txn_coordinator(|c, _, _| {
            Ok(c.partition_in_transaction(producer_id, epoch, partition))
        })
    }

    /// AddOffsetsToTxn.
    pub fn add_offsets_to_txn(&self, who: TxnRef<'_>, group_id: &str) -> Result<()> {
        self.with_txn_coordinator(|c, env, now| c.add_offsets(env, who, group_id, now))
    }

    /// EndTxn: commits or aborts; returns the producer's bumped epoch.
    pub fn end_txn(&self, who: TxnRef<'_>, commit: bool) -> Result<ProducerIdentity> {
        self.with_txn_coordinator(|c, env, now| c.end_transaction(env, who, commit, now))
    }

    /// EndTxn, bumping the producer's epoch or keeping it ([`EpochAtEnd`]: a network client
    /// sending EndTxn v0–v4 keeps it); returns the producer's epoch after the end.
    pub fn end_txn_with(
        &self,
        who: TxnRef<'_>,
        commit: bool,
        epoch_at_end: EpochAtEnd,
    ) -> Result<ProducerIdentity> {
        self.with_txn_coordinator(|c, env, now| {
            c.end_transaction_with(env, who, commit, epoch_at_end, now)
        })
    }

    /// Runs `f` on the group coordinator under its lock, loading it on first use. Clients go
    /// through the requests above; this is for them and for the coordinators' tests.
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
