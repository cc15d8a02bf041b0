//! The transactional producer: Kafka's `initTransactions`, `beginTransaction`,
//! `sendOffsetsToTransaction`, `commitTransaction` and `abortTransaction`, with the open
//! transaction as a value that `commit` consumes and that aborts when dropped.
//!
//! ```text
//!  init_transactions ──► coordinator: producer id, epoch bumped (older instances fenced)
//!  begin_transaction ──► Transaction
//!     send ...           sender thread: first batch to a partition adds it to the
//!                        transaction (AddPartitionsToTxn), batches are transactional
//!     send_offsets_to_transaction ──► AddOffsetsToTxn + TxnOffsetCommit (pending offsets)
//!     commit / abort ──► flush, then EndTxn: markers everywhere, epoch + 1 for the next one
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::delivery::copy_error;
use super::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata, Shared};
use crate::client::consumer::ConsumerGroupMetadata;
use crate::coordinator::group::{MemberRef, OffsetAndMetadata};
use crate::coordinator::producer_id::ProducerIdentity;
use crate::coordinator::transaction::TxnRef;
use crate::error::{Error, Result};
use crate::storage::topic::TopicPartition;

/// A transactional producer's state, shared with its sender thread.
#[derive(Debug)]
pub(crate) struct TxnState {
    pub(crate) transactional_id: String,
    pub(crate) timeout_ms: i64,
    inner: Mutex<TxnInner>,
}

#[derive(Debug, Default)]
struct TxnInner {
    initialized: bool,
    open: bool,
    /// Partitions already added to the open transaction.
    partitions: HashSet<(Arc<str>, u32)>,
    /// Offsets were sent in the open transaction (its `__consumer_offsets` partition joined).
    offsets_sent: bool,
    /// `commit` or `abort` is under way: new sends are refused, so that none can slip in
    /// between the flush and the end (it would be appended outside any transaction the
    /// coordinator knows).
    completing: bool,
    /// The first failure inside the open transaction: it can only abort.
    failed: Option<Error>,
    /// A newer instance took over the transactional id: every call fails.
    fenced: Option<Error>,
}

impl TxnState {
    pub(crate) fn new(transactional_id: String, timeout_ms: i64) -> Self {
        TxnState {
            transactional_id,
            timeout_ms,
            inner: Mutex::new(TxnInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TxnInner> {
        crate::sync::lock(&self.inner)
    }

    /// `send` is allowed only inside a transaction.
    pub(crate) fn check_open(&self) -> Result<()> {
        let t = self.lock();
        if let Some(e) = &t.fenced {
            return Err(copy_error(e));
        }
        if !t.open {
            return Err(self.invalid("send outside a transaction: call begin_transaction"));
        }
        if t.completing {
            return Err(self.invalid("send while the transaction is being committed or aborted"));
        }
        Ok(())
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidTxnState {
            transactional_id: self.transactional_id.clone(),
            reason,
        }
    }

    /// Called by the sender before it appends a batch: the partition joins the open
    /// transaction the first time. A failure fails the batch and dooms the transaction.
    pub(crate) fn before_append(
        &self,
        shared: &Shared,
        identity: ProducerIdentity,
        topic: &Arc<str>,
        partition: u32,
    ) -> Result<()> {
        let mut t = self.lock();
        let res = if let Some(e) = &t.fenced {
            Err(copy_error(e))
        } else if !t.open {
            Err(self.invalid("a batch outside a transaction"))
        } else if t.partitions.contains(&(topic.clone(), partition)) {
            Ok(())
        } else {
            let tp = TopicPartition::new(topic.to_string(), partition);
            let who = TxnRef {
                transactional_id: &self.transactional_id,
                producer_id: identity.producer_id,
                epoch: identity.epoch,
            };
            shared.log.add_partitions_to_txn(who, &[tp]).map(|()| {
                t.partitions.insert((topic.clone(), partition));
            })
        };
        if let Err(e) = &res {
            t.note_failure(e);
        }
        res
    }

    /// Adds the partitions not in the open transaction yet, in one coordinator call. A failure
    /// is left for `before_append` to report with the batch it concerns.
    pub(crate) fn add_partitions(
        &self,
        shared: &Shared,
        identity: ProducerIdentity,
        partitions: impl Iterator<Item = (Arc<str>, u32)>,
    ) {
        let mut t = self.lock();
        if !t.open || t.fenced.is_some() {
            return;
        }
        let mut fresh: Vec<(Arc<str>, u32)> = Vec::new();
        for key in partitions {
            if !t.partitions.contains(&key) && !fresh.contains(&key) {
                fresh.push(key);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let tps: Vec<TopicPartition> = fresh
            .iter()
            .map(|(topic, p)| TopicPartition::new(topic.to_string(), *p))
            .collect();
        let who = TxnRef {
            transactional_id: &self.transactional_id,
            producer_id: identity.producer_id,
            epoch: identity.epoch,
        };
        let added = shared.log.add_partitions_to_txn(who, &tps);
        if added.is_ok() {
            t.partitions.extend(fresh);
        }
    }

    /// A batch of the open transaction failed.
    pub(crate) fn batch_failed(&self, e: &Error) {
        self.lock().note_failure(e);
    }
}

impl TxnInner {
    fn note_failure(&mut self, e: &Error) {
        if matches!(e, Error::ProducerFenced { .. }) && self.fenced.is_none() {
            self.fenced = Some(copy_error(e));
        }
        if self.open && self.failed.is_none() {
            self.failed = Some(copy_error(e));
        }
    }
}

/// An open transaction of a transactional producer: what is sent through it (or through the
/// producer meanwhile) becomes visible to `read_committed` consumers together, at `commit`,
/// or never, at `abort`. Dropping it aborts.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use core_log::serialization::StringSerde;
/// use core_log::{Log, Producer, ProducerConfig, ProducerRecord, TopicConfig};
///
/// let log = Log::builder(dir.path())
///     .transaction_state_log_num_partitions(1)
///     .open()?;
/// log.create_topic("like-totals", 2, TopicConfig::default())?;
/// let config = ProducerConfig::default().transactional_id("like-counter-0");
/// let producer: Producer<str, str> = Producer::new(&log, config, StringSerde, StringSerde)?;
/// producer.init_transactions()?;
///
/// let txn = producer.begin_transaction()?;
/// txn.send(ProducerRecord::new("like-totals").key("product-42").value("7"))?;
/// txn.send(ProducerRecord::new("like-totals").key("product-7").value("1"))?;
/// txn.commit()?; // both records, or (on error or drop) neither
/// # Ok::<(), core_log::Error>(())
/// ```
pub struct Transaction<'p, K: ?Sized, V: ?Sized> {
    producer: &'p Producer<K, V>,
    done: bool,
}

impl<K: ?Sized, V: ?Sized> std::fmt::Debug for Transaction<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("producer", self.producer)
            .finish_non_exhaustive()
    }
}

impl<K: ?Sized, V: ?Sized> Producer<K, V> {
    fn txn(&self) -> Result<&TxnState> {
        self.shared.txn.as_ref().ok_or(Error::IllegalState {
            reason: "a transaction needs a transactional.id",
        })
    }

    /// Registers the `transactional.id` with the transaction coordinator (Kafka's
    /// `initTransactions`): gets the producer id and a bumped epoch, which fences every older
    /// producer with the same id, and aborts (or completes) a transaction such a producer left
    /// open. Call once, before the first transaction.
    pub fn init_transactions(&self) -> Result<()> {
        let txn = self.txn()?;
        if txn.lock().open {
            // Its records would be left in a transaction the coordinator no longer knows.
            return Err(txn.invalid("init_transactions while a transaction is open"));
        }
        let identity = self
            .shared
            .log
            .init_transactional_producer_id(&txn.transactional_id, txn.timeout_ms)?;
        *self.shared.identity_lock() = Some(identity);
        let mut t = txn.lock();
        t.initialized = true;
        t.fenced = None;
        Ok(())
    }

    /// Opens a transaction (Kafka's `beginTransaction`). One at a time per producer.
    pub fn begin_transaction(&self) -> Result<Transaction<'_, K, V>> {
        self.open_transaction()?;
        Ok(Transaction {
            producer: self,
            done: false,
        })
    }

    /// Opens a transaction without a guard, for a loop that keeps one open across calls (a
    /// stream thread): end it with [`Producer::commit_transaction`] or
    /// [`Producer::abort_transaction`]; records sent meanwhile belong to it. Prefer
    /// [`Producer::begin_transaction`], whose guard aborts when dropped.
    pub fn open_transaction(&self) -> Result<()> {
        let txn = self.txn()?;
        let mut t = txn.lock();
        if let Some(e) = &t.fenced {
            return Err(copy_error(e));
        }
        if !t.initialized {
            return Err(txn.invalid("begin_transaction before init_transactions"));
        }
        if t.open {
            return Err(txn.invalid("a transaction is already open"));
        }
        t.open = true;
        t.completing = false;
        t.failed = None;
        t.partitions.clear();
        t.offsets_sent = false;
        Ok(())
    }

    /// Commits the transaction opened by [`Producer::open_transaction`] (see
    /// [`Transaction::commit`]).
    pub fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true)
    }

    /// Aborts the transaction opened by [`Producer::open_transaction`] (see
    /// [`Transaction::abort`]).
    pub fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false)
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn().is_ok_and(|t| t.lock().open)
    }

    /// [`Transaction::send_offsets_to_transaction`] for a transaction opened by
    /// [`Producer::open_transaction`].
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.send_offsets(offsets, group)
    }

    fn send_offsets(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let producer = self;
        let txn = producer.txn()?;
        txn.check_open()?;
        let identity = (*producer.shared.identity_lock()).ok_or(txn.invalid("no producer id"))?;
        let who = TxnRef {
            transactional_id: &txn.transactional_id,
            producer_id: identity.producer_id,
            epoch: identity.epoch,
        };
        let log = &producer.shared.log;
        let res = log.add_offsets_to_txn(who, &group.group_id).and_then(|()| {
            // The coordinator's transaction has begun: whatever happens next, the end
            // must reach it (Kafka's transactionStarted).
            txn.lock().offsets_sent = true;
            {
                let member = MemberRef {
                    group_id: &group.group_id,
                    generation: group.generation_id,
                    member_id: &group.member_id,
                    group_instance_id: group.group_instance_id.as_deref(),
                };
                log.txn_offset_commit(member, identity, offsets)
            }
        });
        if let Err(e) = &res {
            txn.lock().note_failure(e);
        }
        res
    }

    /// Ends the open transaction: flushes its records, then asks the coordinator to commit
    /// or abort, and takes the bumped epoch for the next transaction.
    fn end_transaction(&self, commit: bool) -> Result<()> {
        let txn = self.txn()?;
        txn.lock().completing = true;
        // Every record sent so far is appended (or failed) before the end is decided.
        self.flush();
        let mut t = txn.lock();
        let failed = t.failed.take();
        let added = !t.partitions.is_empty() || t.offsets_sent;
        let wanted_commit = commit;
        let commit = commit && failed.is_none();
        // Under the transaction lock, so that the sender sees the new identity and the
        // emptied partition set together.
        let result = if added {
            let identity = (*self.shared.identity_lock()).ok_or(txn.invalid("no producer id"));
            identity.and_then(|identity| {
                let who = TxnRef {
                    transactional_id: &txn.transactional_id,
                    producer_id: identity.producer_id,
                    epoch: identity.epoch,
                };
                self.shared.log.end_txn(who, commit).map(|next| {
                    *self.shared.identity_lock() = Some(next);
                })
            })
        } else {
            Ok(())
        };
        t.open = false;
        t.completing = false;
        t.partitions.clear();
        t.offsets_sent = false;
        if let Err(e) = &result {
            t.note_failure(e);
        }
        drop(t);
        result?;
        match failed {
            // The commit became an abort: report why.
            Some(e) if wanted_commit => Err(e),
            _ => Ok(()),
        }
    }
}

impl<'p, K: ?Sized, V: ?Sized> Transaction<'p, K, V> {
    /// Sends a record as part of the transaction (see [`Producer::send`]).
    pub fn send(&self, record: ProducerRecord<'_, K, V>) -> Result<DeliveryFuture> {
        self.producer.send(record)
    }

    /// Sends a record as part of the transaction, with a delivery callback (see
    /// [`Producer::send_with_callback`]).
    pub fn send_with_callback(
        &self,
        record: ProducerRecord<'_, K, V>,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        self.producer.send_with_callback(record, callback)
    }

    /// Commits a consumer group's offsets as part of the transaction (Kafka's
    /// `sendOffsetsToTransaction`): they take effect if and only if the transaction commits.
    /// `group` is the consuming member's [`crate::Consumer::group_metadata`]: a member the
    /// group has moved on from is refused (`IllegalGeneration`, `UnknownMemberId`), so a
    /// zombie cannot commit, and the transaction must then abort.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.producer.send_offsets(offsets, group)
    }

    /// Commits the transaction (Kafka's `commitTransaction`): waits until every record sent
    /// is appended, then writes the commit markers. If a record of the transaction failed,
    /// or the producer was fenced, the transaction is aborted instead and the error returned.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.producer.end_transaction(true)
    }

    /// Aborts the transaction (Kafka's `abortTransaction`): its records are never seen by
    /// `read_committed` consumers, and its offsets are not committed.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        self.producer.end_transaction(false)
    }
}

impl<K: ?Sized, V: ?Sized> Drop for Transaction<'_, K, V> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.producer.end_transaction(false)
        {
            tracing::warn!(error = %e, "aborting a dropped transaction failed");
        }
    }
}
