//! The transaction coordinator: Kafka's `TransactionCoordinator`, in the same process as its
//! producers.
//!
//! ```text
//!   init_transactions ─► Empty ──add partitions──► Ongoing ──end (commit|abort)──┐
//!   (bumps the epoch:      ▲                        │ timeout: abort             │
//!    fences the previous   │                        ▼                            ▼
//!    instance, aborts its  └──── CompleteCommit / CompleteAbort ◄── markers ◄─ PrepareCommit /
//!    open transaction)                                                          PrepareAbort
//! ```
//!
//! Ending a transaction (protocol version 2, KIP-890): the decision is written to
//! `__transaction_state` as `PrepareCommit`/`PrepareAbort` with the epoch bumped by one; then
//! a control marker with that bumped epoch goes to every partition of the transaction (and
//! pending transactional offsets in `__consumer_offsets` are applied or dropped); then
//! `CompleteCommit`/`CompleteAbort`. The producer continues with the bumped epoch. Because a
//! partition accepts a marker only with an epoch above the open transaction's, and the
//! coordinator recognises a retried end call by its old epoch, a delayed or repeated commit
//! or abort can never end a later transaction (the Kafka bug KAFKA-17754).
//!
//! A crash between the prepare record and the complete record leaves the decision durable:
//! loading the coordinator finishes it (markers again, harmless where already written).
//! Transactions open longer than their `transaction.timeout.ms` are aborted (with the epoch
//! bumped) at the next coordinator call, at log open, or by the maintenance thread every
//! 10 s: the producer's commit is then refused with `ProducerFenced`, its abort is answered as
//! already done, and its late data is fenced by the partitions.

mod records;

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::ControlRecordType;
use crate::coordinator::group::{GroupCoordinator, GroupCoordinatorCell, OFFSETS_TOPIC};
use crate::coordinator::producer_id::{ProducerIdManager, ProducerIdentity};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::log_manager::LogManager;
use crate::storage::partition::Partition;
use crate::storage::topic::TopicPartition;

pub(crate) use records::TRANSACTION_STATE_TOPIC;
use records::{TransactionMetadataValue, TransactionState};

/// Kafka's `transaction.max.timeout.ms`.
const MAX_TRANSACTION_TIMEOUT_MS: i64 = 900_000;
/// Transactional ids are stored as Kafka strings.
const MAX_TRANSACTIONAL_ID_LEN: usize = i16::MAX as usize;
/// The markers' coordinator epoch: Kafka's is the leader epoch of the `__transaction_state`
/// partition, which never changes here.
const COORDINATOR_EPOCH: i32 = 0;

/// What EndTxn does to the producer's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochAtEnd {
    /// Bumps it: the markers are written with the new epoch, which fences any late write of
    /// the ended transaction (KIP-890); the producer goes on with the new epoch. The embedded
    /// transactional producer works so.
    Bump,
    /// Keeps it, as Kafka's brokers did before KIP-890 and as clients sending EndTxn v0–v4
    /// expect: they go on with the same epoch and their sequences.
    Keep,
}

/// A producer's claim in a call: its transactional id, producer id and epoch.
#[derive(Clone, Copy, Debug)]
pub struct TxnRef<'a> {
    /// The producer's `transactional.id`.
    pub transactional_id: &'a str,
    /// The producer id InitProducerId gave it.
    pub producer_id: i64,
    /// Its epoch; an older one than the id's current epoch is fenced.
    pub epoch: i16,
}

#[derive(Debug, Clone)]
struct TxnMetadata {
    producer_id: i64,
    epoch: i16,
    timeout_ms: i64,
    state: TransactionState,
    partitions: BTreeSet<TopicPartition>,
    start_timestamp: i64,
    last_update: i64,
    /// How the transaction being ended ends the epoch: markers of a `Keep` end carry the
    /// epoch of the transaction's data. Not stored: after a restart, `finish_prepared` tells
    /// a `Keep` end by the partitions' epochs.
    epoch_at_end: EpochAtEnd,
}

impl TxnMetadata {
    fn value(&self) -> TransactionMetadataValue {
        TransactionMetadataValue {
            producer_id: self.producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: self.epoch,
            timeout_ms: self.timeout_ms.clamp(0, i32::MAX as i64) as i32,
            state: self.state,
            partitions: self.partitions.iter().cloned().collect(),
            last_update_timestamp: self.last_update,
            start_timestamp: self.start_timestamp,
            client_transaction_version: 2,
        }
    }
}

/// What the transaction coordinator works with: the storage, the producer ids, and the group
/// coordinator (offsets sent in a transaction are the group's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxnEnv<'a> {
    pub storage: &'a LogManager,
    pub producer_ids: &'a ProducerIdManager,
    pub groups: &'a GroupCoordinatorCell,
}

impl TxnEnv<'_> {
    fn partition(&self, topic: &str, partition: u32) -> Result<Partition> {
        self.storage.partition(topic, partition)
    }

    fn ensure_internal_topic(&self, name: &str, partitions: u32) -> Result<u32> {
        self.storage.ensure_internal_topic(name, partitions)
    }

    fn replay_topic(
        &self,
        topic: &str,
        f: impl FnMut(u32, &Partition, &crate::codec::RecordBatch<'_>) -> Result<()>,
    ) -> Result<()> {
        self.storage.replay_topic(topic, f)
    }

    fn init_producer_id(&self) -> Result<ProducerIdentity> {
        self.producer_ids.next()
    }

    /// Runs `f` on the group coordinator (lock order: transaction coordinator, then group).
    fn with_coordinator<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator, &LogManager, i64) -> Result<T>,
    ) -> Result<T> {
        self.groups.with(self.storage, f)
    }
}

/// The transaction coordinator of one log, loaded from `__transaction_state` on first use
/// (which finishes transactions a crash left between decision and completion), behind its
/// lock. Taken before the group coordinator's.
#[derive(Debug)]
pub(crate) struct TransactionCoordinatorCell {
    coordinator: std::sync::Mutex<Option<TransactionCoordinator>>,
    /// `transaction.state.log.num.partitions`, used when `__transaction_state` is created.
    partitions: u32,
}

impl TransactionCoordinatorCell {
    pub(crate) fn new(partitions: u32) -> Self {
        TransactionCoordinatorCell {
            coordinator: std::sync::Mutex::new(None),
            partitions,
        }
    }

    /// Runs `f` on the coordinator under its lock, loading it on first use.
    pub(crate) fn with<T>(
        &self,
        env: &TxnEnv<'_>,
        f: impl FnOnce(&mut TransactionCoordinator, &TxnEnv<'_>, i64) -> Result<T>,
    ) -> Result<T> {
        env.storage.check_open()?;
        let mut guard = crate::sync::lock(&self.coordinator);
        let now = env.storage.clock().now_ms();
        if guard.is_none() {
            *guard = Some(TransactionCoordinator::load(env, self.partitions, now)?);
        }
        match guard.as_mut() {
            Some(c) => f(c, env, now),
            None => Err(Error::Closed),
        }
    }

    /// Aborts the transactions open longer than their `transaction.timeout.ms`, fencing their
    /// producers (Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms` task).
    /// Nothing happens if no transactional producer has ever used the log.
    pub(crate) fn abort_timed_out(&self, env: &TxnEnv<'_>) -> Result<usize> {
        let loaded = crate::sync::lock(&self.coordinator).is_some();
        if !loaded
            && env
                .storage
                .partition_count(TRANSACTION_STATE_TOPIC)
                .is_err()
        {
            return Ok(0);
        }
        self.with(env, |c, env, now| c.expire(env, now))
    }
}

/// Every transactional id's state in one log. Lives behind the log's transaction
/// coordinator lock, which is taken before the group coordinator's.
#[derive(Debug)]
pub(crate) struct TransactionCoordinator {
    txns: BTreeMap<String, TxnMetadata>,
    state_partitions: u32,
}

impl TransactionCoordinator {
    /// Creates `__transaction_state` if needed, loads it, and finishes transactions whose
    /// decision was written but whose markers may not have been.
    pub(crate) fn load(log: &TxnEnv<'_>, partitions: u32, now: i64) -> Result<Self> {
        let partitions = log.ensure_internal_topic(TRANSACTION_STATE_TOPIC, partitions)?;
        let mut c = TransactionCoordinator {
            txns: BTreeMap::new(),
            state_partitions: partitions,
        };
        log.replay_topic(TRANSACTION_STATE_TOPIC, |p, _, batch| {
            if batch.is_control() {
                return Ok(());
            }
            for r in batch.records().map_while(|r| r.ok()) {
                let Some(key) = r.key else { continue };
                match records::decode(key, r.value) {
                    Ok((id, Some(v))) => {
                        c.txns.insert(
                            id,
                            TxnMetadata {
                                producer_id: v.producer_id,
                                epoch: v.producer_epoch,
                                timeout_ms: v.timeout_ms as i64,
                                state: v.state,
                                partitions: v.partitions.into_iter().collect(),
                                start_timestamp: v.start_timestamp,
                                last_update: v.last_update_timestamp,
                                epoch_at_end: EpochAtEnd::Bump,
                            },
                        );
                    }
                    Ok((id, None)) => {
                        c.txns.remove(&id);
                    }
                    Err(e) if e.is_unknown_key_version() => {}
                    Err(e) => {
                        tracing::warn!(partition = p, offset = r.offset, error = %e,
                            "skipping an undecodable __transaction_state record");
                    }
                }
            }
            Ok(())
        })?;
        // Decided transactions get their markers (again), and those whose producer died with
        // the previous process end at their timeout.
        c.expire(log, now)?;
        Ok(c)
    }

    fn persist(&self, log: &TxnEnv<'_>, id: &str) -> Result<()> {
        let Some(m) = self.txns.get(id) else {
            return Ok(());
        };
        let key = records::transaction_key(id);
        let value = records::transaction_value(&m.value());
        let p = records::partition_for_transactional_id(id, self.state_partitions);
        log.partition(TRANSACTION_STATE_TOPIC, p)?
            .append(&[Record::new(Some(&key), Some(&value))])?;
        Ok(())
    }

    /// Kafka's InitProducerId with a transactional id: a producer id (new, or the id's
    /// existing one) with a bumped epoch, which fences every older instance. An open
    /// transaction of the previous instance is aborted first.
    pub(crate) fn init_producer_id(
        &mut self,
        log: &TxnEnv<'_>,
        transactional_id: &str,
        timeout_ms: i64,
        now: i64,
    ) -> Result<ProducerIdentity> {
        validate_transactional_id(transactional_id)?;
        if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(Error::InvalidConfig {
                key: "transaction.timeout.ms".into(),
                value: timeout_ms.to_string(),
                reason: "between 1 and transaction.max.timeout.ms (900000)",
            });
        }
        self.expire(log, now)?;
        if !self.txns.contains_key(transactional_id) {
            let id = log.init_producer_id()?;
            self.txns.insert(
                transactional_id.to_string(),
                TxnMetadata {
                    producer_id: id.producer_id,
                    epoch: 0,
                    timeout_ms,
                    state: TransactionState::Empty,
                    partitions: BTreeSet::new(),
                    start_timestamp: -1,
                    last_update: now,
                    epoch_at_end: EpochAtEnd::Bump,
                },
            );
            self.persist(log, transactional_id)?;
            return Ok(id);
        }
        self.finish_prepared(log, transactional_id, now)?;
        if self.state(transactional_id) == Some(TransactionState::Ongoing) {
            tracing::info!(
                transactional_id,
                "aborting the open transaction of a previous producer instance"
            );
            self.complete(log, transactional_id, false, now)?;
        }
        let m = self.meta_mut(transactional_id)?;
        bump_epoch(log, m)?;
        m.timeout_ms = timeout_ms;
        m.state = TransactionState::Empty;
        m.partitions.clear();
        m.last_update = now;
        let identity = ProducerIdentity {
            producer_id: m.producer_id,
            epoch: m.epoch,
        };
        self.persist(log, transactional_id)?;
        Ok(identity)
    }

    /// Kafka's AddPartitionsToTxn: the partitions take part in the producer's open
    /// transaction (which this starts, if none is open). Fails with `ProducerFenced` for an
    /// old epoch and `UnknownTopicOrPartition` for a partition that does not exist.
    /// Whether producer `producer_id` at `epoch` has an open transaction that `partition` was
    /// added to: what a transactional batch from a remote producer must find before it is
    /// appended (KIP-890's verification), so a batch sent without AddPartitionsToTxn cannot
    /// leave a transaction no marker will ever end.
    pub(crate) fn partition_in_transaction(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &TopicPartition,
    ) -> bool {
        self.txns.values().any(|t| {
            t.producer_id == producer_id
                && t.epoch == epoch
                && t.state == TransactionState::Ongoing
                && t.partitions.contains(partition)
        })
    }

    pub(crate) fn add_partitions(
        &mut self,
        log: &TxnEnv<'_>,
        who: TxnRef<'_>,
        partitions: &[TopicPartition],
        now: i64,
    ) -> Result<()> {
        self.expire(log, now)?;
        self.check_current(who)?;
        self.finish_prepared(log, who.transactional_id, now)?;
        for tp in partitions {
            log.partition(&tp.topic, tp.partition)?;
        }
        let m = self.meta_mut(who.transactional_id)?;
        let fresh: Vec<&TopicPartition> = partitions
            .iter()
            .filter(|tp| !m.partitions.contains(*tp))
            .collect();
        if m.state == TransactionState::Ongoing && fresh.is_empty() {
            return Ok(());
        }
        if m.state != TransactionState::Ongoing {
            m.state = TransactionState::Ongoing;
            m.partitions.clear();
            m.start_timestamp = now;
        }
        m.partitions.extend(fresh.into_iter().cloned());
        m.last_update = now;
        self.persist(log, who.transactional_id)
    }

    /// Kafka's AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the
    /// transaction, so the offsets committed in it are decided with it.
    pub(crate) fn add_offsets(
        &mut self,
        log: &TxnEnv<'_>,
        who: TxnRef<'_>,
        group_id: &str,
        now: i64,
    ) -> Result<()> {
        // Through the group coordinator, which creates `__consumer_offsets` on first use.
        let partition = log.with_coordinator(|c, _, _| Ok(c.partition_for(group_id)))?;
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        self.add_partitions(log, who, &[tp], now)
    }

    /// Kafka's EndTxn: commits or aborts the open transaction and returns the identity for
    /// the producer's next transaction (the epoch bumped). A retried call for a transaction
    /// that was already ended the same way succeeds without writing anything.
    pub(crate) fn end_transaction(
        &mut self,
        log: &TxnEnv<'_>,
        who: TxnRef<'_>,
        commit: bool,
        now: i64,
    ) -> Result<ProducerIdentity> {
        self.end_transaction_with(log, who, commit, EpochAtEnd::Bump, now)
    }

    /// [`TransactionCoordinator::end_transaction`], bumping the producer's epoch at the end
    /// (KIP-890, what the embedded producer expects) or keeping it (EndTxn v0–v4: Kafka's
    /// clients before KIP-890 go on with the same epoch).
    pub(crate) fn end_transaction_with(
        &mut self,
        log: &TxnEnv<'_>,
        who: TxnRef<'_>,
        commit: bool,
        epoch_at_end: EpochAtEnd,
        now: i64,
    ) -> Result<ProducerIdentity> {
        self.expire(log, now)?;
        let m = self.meta(who.transactional_id)?;
        let done = if commit {
            TransactionState::CompleteCommit
        } else {
            TransactionState::CompleteAbort
        };
        // A retry after the reply was lost: the epoch was bumped by the end it repeats (or
        // kept, for a client that keeps it).
        let epoch_after = match epoch_at_end {
            EpochAtEnd::Bump => who.epoch.wrapping_add(1),
            EpochAtEnd::Keep => who.epoch,
        };
        if m.producer_id == who.producer_id && m.epoch == epoch_after && m.state == done {
            return Ok(ProducerIdentity {
                producer_id: m.producer_id,
                epoch: m.epoch,
            });
        }
        self.check_current(who)?;
        self.finish_prepared(log, who.transactional_id, now)?;
        match self.state(who.transactional_id) {
            Some(TransactionState::Ongoing) => {
                self.complete_with(log, who.transactional_id, commit, epoch_at_end, now)?;
            }
            _ if !commit => {
                // Nothing open: an abort has nothing to undo.
            }
            _ => {
                return Err(Error::InvalidTxnState {
                    transactional_id: who.transactional_id.to_string(),
                    reason: "commit without an open transaction",
                });
            }
        }
        let m = self.meta(who.transactional_id)?;
        Ok(ProducerIdentity {
            producer_id: m.producer_id,
            epoch: m.epoch,
        })
    }

    /// Aborts every transaction open longer than its timeout, fencing its producer (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup`). Returns how many it aborted.
    pub(crate) fn expire(&mut self, log: &TxnEnv<'_>, now: i64) -> Result<usize> {
        // A decided transaction whose markers could not all be written (a partition was
        // offline) is retried here, as Kafka's coordinator retries its markers.
        let prepared: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    TransactionState::PrepareCommit | TransactionState::PrepareAbort
                )
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &prepared {
            if let Err(e) = self.finish_prepared(log, id, now) {
                tracing::warn!(transactional_id = %id, error = %e, "writing transaction markers failed; retrying later");
            }
        }
        let late: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                m.state == TransactionState::Ongoing
                    && now > m.start_timestamp.saturating_add(m.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &late {
            tracing::info!(transactional_id = %id, "aborting a transaction past transaction.timeout.ms");
            self.complete(log, id, false, now)?;
        }
        Ok(late.len())
    }

    /// Writes the decision, the markers and the completion of an open transaction.
    fn complete(&mut self, log: &TxnEnv<'_>, id: &str, commit: bool, now: i64) -> Result<()> {
        self.complete_with(log, id, commit, EpochAtEnd::Bump, now)
    }

    fn complete_with(
        &mut self,
        log: &TxnEnv<'_>,
        id: &str,
        commit: bool,
        epoch_at_end: EpochAtEnd,
        now: i64,
    ) -> Result<()> {
        let m = self.meta_mut(id)?;
        m.epoch_at_end = epoch_at_end;
        if epoch_at_end == EpochAtEnd::Bump {
            m.epoch = m.epoch.checked_add(1).ok_or(Error::InvalidTxnState {
                transactional_id: id.to_string(),
                reason: "producer epoch exhausted",
            })?;
        }
        m.state = if commit {
            TransactionState::PrepareCommit
        } else {
            TransactionState::PrepareAbort
        };
        m.last_update = now;
        self.persist(log, id)?;
        self.finish_prepared(log, id, now)
    }

    /// For a transaction in `PrepareCommit`/`PrepareAbort`: writes the markers (again) and
    /// the completion. Anything else is left alone.
    fn finish_prepared(&mut self, log: &TxnEnv<'_>, id: &str, now: i64) -> Result<()> {
        let m = self.meta(id)?.clone();
        let commit = match m.state {
            TransactionState::PrepareCommit => true,
            TransactionState::PrepareAbort => false,
            _ => return Ok(()),
        };
        let kind = if commit {
            ControlRecordType::Commit
        } else {
            ControlRecordType::Abort
        };
        let mut offsets_partitions = Vec::new();
        for tp in &m.partitions {
            let partition = match log.partition(&tp.topic, tp.partition) {
                Ok(p) => p,
                Err(Error::UnknownTopicOrPartition { .. }) => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, "no marker for a deleted partition");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let keep = m.epoch_at_end == EpochAtEnd::Keep;
            match partition.append_marker_at(m.producer_id, m.epoch, COORDINATOR_EPOCH, kind, keep)
            {
                // The partition's transaction carries the marker's own epoch: it is a `Keep`
                // end prepared before a restart (the mode is not stored). A `Bump` end's data
                // has an older epoch, and the producer's next transaction cannot start on a
                // partition before this one is finished, so nothing else fences it so.
                Err(Error::ProducerFenced { current_epoch, .. })
                    if !keep && current_epoch == m.epoch =>
                {
                    partition.append_marker_at(
                        m.producer_id,
                        m.epoch,
                        COORDINATOR_EPOCH,
                        kind,
                        true,
                    )?;
                }
                written => {
                    written?;
                }
            }
            if tp.topic == OFFSETS_TOPIC {
                offsets_partitions.push(tp.partition);
            }
        }
        if !offsets_partitions.is_empty() {
            log.with_coordinator(|g, _, _| {
                for p in &offsets_partitions {
                    g.complete_transactional_offsets(*p, m.producer_id, commit);
                }
                Ok(())
            })?;
        }
        let m = self.meta_mut(id)?;
        m.state = if commit {
            TransactionState::CompleteCommit
        } else {
            TransactionState::CompleteAbort
        };
        m.partitions.clear();
        m.last_update = now;
        if m.epoch == i16::MAX {
            // The epoch space is used up: the next transaction gets a new producer id.
            bump_epoch(log, m)?;
        }
        self.persist(log, id)
    }

    fn meta(&self, id: &str) -> Result<&TxnMetadata> {
        self.txns.get(id).ok_or_else(|| Error::InvalidTxnState {
            transactional_id: id.to_string(),
            reason: "unknown transactional id: call init_transactions first",
        })
    }

    fn meta_mut(&mut self, id: &str) -> Result<&mut TxnMetadata> {
        self.txns.get_mut(id).ok_or_else(|| Error::InvalidTxnState {
            transactional_id: id.to_string(),
            reason: "unknown transactional id: call init_transactions first",
        })
    }

    fn state(&self, id: &str) -> Option<TransactionState> {
        self.txns.get(id).map(|m| m.state)
    }

    /// The caller holds the id's current producer id and epoch; anything older is fenced.
    fn check_current(&self, who: TxnRef<'_>) -> Result<()> {
        let m = self.meta(who.transactional_id)?;
        if m.producer_id != who.producer_id || m.epoch != who.epoch {
            return Err(Error::ProducerFenced {
                producer_id: who.producer_id,
                epoch: who.epoch,
                current_epoch: if m.producer_id == who.producer_id {
                    m.epoch
                } else {
                    i16::MAX
                },
            });
        }
        Ok(())
    }
}

/// The next epoch of the transactional id, or a fresh producer id at epoch 0 when the epochs
/// are used up (as Kafka's transaction protocol version 2 does).
fn bump_epoch(log: &TxnEnv<'_>, m: &mut TxnMetadata) -> Result<()> {
    match m.epoch.checked_add(1) {
        Some(e) if e < i16::MAX => m.epoch = e,
        _ => {
            let fresh = log.init_producer_id()?;
            m.producer_id = fresh.producer_id;
            m.epoch = 0;
        }
    }
    Ok(())
}

fn validate_transactional_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_TRANSACTIONAL_ID_LEN {
        return Err(Error::InvalidConfig {
            key: "transactional.id".into(),
            value: id.chars().take(64).collect(),
            reason: "between 1 and 32767 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
