//! Delivery reports: what a send became, through a future or a callback.
//!
//! Completion is per batch, as in Kafka (`ProduceRequestResult` plus `FutureRecordMetadata`):
//! a batch has one shared [`BatchCompletion`], and each record's [`DeliveryFuture`] holds it
//! with the record's index in the batch. A send therefore allocates nothing for its future; the
//! record's offset is the batch's base offset plus its index.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::storage::topic::TopicPartition;

/// Where a record was appended: Kafka's `RecordMetadata`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    /// The topic (shared by every record of the batch: no allocation per record).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset; -1 with `acks=0`, which does not wait for the append.
    pub offset: i64,
    /// The record's timestamp: the log append time when the topic uses `LogAppendTime`, else
    /// the create time the record was sent with.
    pub timestamp: i64,
    /// Bytes of the serialized key; -1 when the record has no key.
    pub serialized_key_size: i32,
    /// Bytes of the serialized value; -1 when the record has no value.
    pub serialized_value_size: i32,
}

impl RecordMetadata {
    /// Whether the offset is known (false with `acks=0`).
    pub fn has_offset(&self) -> bool {
        self.offset >= 0
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

/// A delivery-report callback for many records
/// ([`Producer::send_with_shared_callback`](crate::Producer::send_with_shared_callback)):
/// called on the producer's sender thread once per record sent with it.
pub type SharedCallback = Arc<dyn Fn(Result<RecordMetadata>) + Send + Sync + 'static>;

/// A send's delivery-report callback, on its way into a batch.
pub(crate) enum Callback<'a> {
    /// Called once.
    Once(Box<dyn FnOnce(Result<RecordMetadata>) + Send + 'static>),
    /// Shared by many records: a batch holds one reference for all of its records that have it.
    Shared(&'a SharedCallback),
}

/// A callback as a batch keeps it.
pub(crate) enum Stored {
    Once(Box<dyn FnOnce(Result<RecordMetadata>) + Send + 'static>),
    /// An index into the batch's shared callbacks.
    Shared(u32),
}

/// What the producer knows of one record, apart from its batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordInfo {
    /// Position in the batch.
    pub index: u32,
    /// The create time it was encoded with.
    pub timestamp: i64,
    pub key_size: i32,
    pub value_size: i32,
}

/// What an append did for a batch: its base offset (-1 with `acks=0`) and the log append
/// time when the topic uses it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    pub base_offset: i64,
    pub log_append_time: Option<i64>,
}

impl RecordInfo {
    pub(crate) fn metadata(&self, topic: &Arc<str>, partition: u32, a: Appended) -> RecordMetadata {
        RecordMetadata {
            topic: topic.clone(),
            partition,
            offset: if a.base_offset < 0 {
                -1
            } else {
                a.base_offset + i64::from(self.index)
            },
            timestamp: a.log_append_time.unwrap_or(self.timestamp),
            serialized_key_size: self.key_size,
            serialized_value_size: self.value_size,
        }
    }
}

/// The shared outcome of one batch.
#[derive(Debug)]
pub(crate) struct BatchCompletion {
    pub topic: Arc<str>,
    pub partition: u32,
    state: Mutex<CompletionState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct CompletionState {
    result: Option<Result<Appended>>,
    /// Tasks awaiting a future of this batch; each future remembers its slot so that
    /// re-polling replaces its waker instead of adding one.
    wakers: Vec<Waker>,
}

impl BatchCompletion {
    pub(crate) fn new(topic: Arc<str>, partition: u32) -> Arc<BatchCompletion> {
        Arc::new(BatchCompletion {
            topic,
            partition,
            state: Mutex::new(CompletionState::default()),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CompletionState> {
        // The state is a plain value written once; a panic elsewhere cannot leave it torn.
        crate::sync::lock(&self.state)
    }

    /// Publishes the batch's outcome and wakes every waiter, blocking or async.
    pub(crate) fn complete(&self, result: Result<Appended>) {
        let wakers = {
            let mut st = self.lock();
            st.result = Some(result);
            std::mem::take(&mut st.wakers)
        };
        self.done.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    fn outcome(&self, result: &Result<Appended>, record: &RecordInfo) -> Result<RecordMetadata> {
        match result {
            Ok(a) => Ok(record.metadata(&self.topic, self.partition, *a)),
            Err(e) => Err(copy_error(e)),
        }
    }
}

/// The eventual outcome of one `send`: resolves to the record's [`RecordMetadata`] or the
/// error that failed its batch.
///
/// It is a `Future` (await it from tokio or any executor; it does not need a runtime of its
/// own: the producer's sender thread wakes it), and [`DeliveryFuture::wait`] blocks for it
/// in synchronous code. Dropping it does not cancel the send.
#[derive(Debug)]
#[must_use = "a send's outcome is only known through its future (or use send_with_callback)"]
pub struct DeliveryFuture {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Known at send time (`acks=0`).
    Ready(RecordMetadata),
    Pending {
        batch: Arc<BatchCompletion>,
        record: RecordInfo,
        waker_slot: Option<usize>,
    },
}

impl DeliveryFuture {
    pub(crate) fn ready(metadata: RecordMetadata) -> DeliveryFuture {
        DeliveryFuture {
            inner: Inner::Ready(metadata),
        }
    }

    pub(crate) fn pending(batch: Arc<BatchCompletion>, record: RecordInfo) -> DeliveryFuture {
        DeliveryFuture {
            inner: Inner::Pending {
                batch,
                record,
                waker_slot: None,
            },
        }
    }

    /// Blocks until the record's batch is appended (or has failed) and returns the outcome.
    pub fn wait(self) -> Result<RecordMetadata> {
        match self.inner {
            Inner::Ready(m) => Ok(m),
            Inner::Pending { batch, record, .. } => {
                let st = batch.lock();
                let st = batch
                    .done
                    .wait_while(st, |s| s.result.is_none())
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match &st.result {
                    Some(r) => batch.outcome(r, &record),
                    // wait_while returns only once the result is set.
                    None => Err(Error::Closed),
                }
            }
        }
    }

    /// Whether the outcome is known, so that [`DeliveryFuture::wait`] would not block.
    pub fn is_done(&self) -> bool {
        match &self.inner {
            Inner::Ready(_) => true,
            Inner::Pending { batch, .. } => batch.lock().result.is_some(),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // DeliveryFuture is Unpin (no self-references), so it can be used through `&mut`.
        match &mut self.get_mut().inner {
            Inner::Ready(m) => Poll::Ready(Ok(m.clone())),
            Inner::Pending {
                batch,
                record,
                waker_slot,
            } => {
                let mut st = batch.lock();
                if let Some(r) = &st.result {
                    return Poll::Ready(batch.outcome(r, record));
                }
                match waker_slot.and_then(|i| st.wakers.get_mut(i)) {
                    Some(w) => {
                        if !w.will_wake(cx.waker()) {
                            w.clone_from(cx.waker());
                        }
                    }
                    None => {
                        *waker_slot = Some(st.wakers.len());
                        st.wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// A copy of `e` for each record of a failed batch (the error type is not `Clone`: it can
/// carry an `io::Error` or a serializer's boxed error). Sources that cannot be cloned are
/// copied as their kind and message. The match is exhaustive on purpose: a new variant must
/// decide how it is copied.
pub(crate) fn copy_error(e: &Error) -> Error {
    fn message(
        source: &(dyn std::error::Error + Send + Sync),
    ) -> Box<dyn std::error::Error + Send + Sync> {
        source.to_string().into()
    }
    match e {
        Error::InvalidTopicName { name, reason } => Error::InvalidTopicName {
            name: name.clone(),
            reason,
        },
        Error::TopicAlreadyExists { topic } => Error::TopicAlreadyExists {
            topic: topic.clone(),
        },
        Error::UnknownTopicOrPartition { topic, partition } => Error::UnknownTopicOrPartition {
            topic: topic.clone(),
            partition: *partition,
        },
        Error::InvalidPartitions {
            topic,
            current,
            requested,
        } => Error::InvalidPartitions {
            topic: topic.clone(),
            current: *current,
            requested: *requested,
        },
        Error::InvalidConfig { key, value, reason } => Error::InvalidConfig {
            key: key.clone(),
            value: value.clone(),
            reason,
        },
        Error::RecordTooLarge { size, max } => Error::RecordTooLarge {
            size: *size,
            max: *max,
        },
        Error::InvalidRecord { reason } => Error::InvalidRecord { reason },
        Error::OffsetOutOfRange {
            topic,
            partition,
            requested,
            log_start,
            log_end,
        } => Error::OffsetOutOfRange {
            topic: topic.clone(),
            partition: *partition,
            requested: *requested,
            log_start: *log_start,
            log_end: *log_end,
        },
        Error::Corrupt {
            file,
            position,
            reason,
        } => Error::Corrupt {
            file: file.clone(),
            position: *position,
            reason,
        },
        Error::TooManyPartitions {
            topic,
            requested,
            max,
        } => Error::TooManyPartitions {
            topic: topic.clone(),
            requested: *requested,
            max: *max,
        },
        Error::CorruptRecord {
            topic,
            partition,
            offset,
            first_offset,
            resume_offset,
            file,
            position,
            reason,
        } => Error::CorruptRecord {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
            first_offset: *first_offset,
            resume_offset: *resume_offset,
            file: file.clone(),
            position: *position,
            reason,
        },
        Error::KafkaStorageError {
            topic,
            partition,
            cause,
        } => Error::KafkaStorageError {
            topic: topic.clone(),
            partition: *partition,
            cause: cause.clone(),
        },
        Error::LogDirLocked { dir } => Error::LogDirLocked { dir: dir.clone() },
        Error::Closed => Error::Closed,
        Error::OutOfOrderSequence {
            topic,
            partition,
            producer_id,
            expected,
            received,
        } => Error::OutOfOrderSequence {
            topic: topic.clone(),
            partition: *partition,
            producer_id: *producer_id,
            expected: *expected,
            received: *received,
        },
        Error::ProducerFenced {
            producer_id,
            epoch,
            current_epoch,
        } => Error::ProducerFenced {
            producer_id: *producer_id,
            epoch: *epoch,
            current_epoch: *current_epoch,
        },
        Error::Serialization {
            topic,
            part,
            source,
        } => Error::Serialization {
            topic: topic.clone(),
            part,
            source: message(source.as_ref()),
        },
        Error::Deserialization {
            topic,
            partition,
            offset,
            part,
            source,
        } => Error::Deserialization {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
            part,
            source: message(source.as_ref()),
        },
        Error::NoOffsetForPartition { topic, partition } => Error::NoOffsetForPartition {
            topic: topic.clone(),
            partition: *partition,
        },
        Error::NotAssigned { topic, partition } => Error::NotAssigned {
            topic: topic.clone(),
            partition: *partition,
        },
        Error::IllegalGeneration {
            group,
            generation,
            current,
        } => Error::IllegalGeneration {
            group: group.clone(),
            generation: *generation,
            current: *current,
        },
        Error::UnknownMemberId { group, member_id } => Error::UnknownMemberId {
            group: group.clone(),
            member_id: member_id.clone(),
        },
        Error::RebalanceInProgress { group } => Error::RebalanceInProgress {
            group: group.clone(),
        },
        Error::FencedInstanceId {
            group,
            group_instance_id,
        } => Error::FencedInstanceId {
            group: group.clone(),
            group_instance_id: group_instance_id.clone(),
        },
        Error::InconsistentGroupProtocol { group, reason } => Error::InconsistentGroupProtocol {
            group: group.clone(),
            reason: reason.clone(),
        },
        Error::InvalidGroupId { group, reason } => Error::InvalidGroupId {
            group: group.clone(),
            reason,
        },
        Error::GroupIdNotFound { group } => Error::GroupIdNotFound {
            group: group.clone(),
        },
        Error::NonEmptyGroup { group } => Error::NonEmptyGroup {
            group: group.clone(),
        },
        Error::InvalidCommitOffset {
            topic,
            partition,
            reason,
        } => Error::InvalidCommitOffset {
            topic: topic.clone(),
            partition: *partition,
            reason: reason.clone(),
        },
        Error::IllegalState { reason } => Error::IllegalState { reason },
        Error::InvalidTxnState {
            transactional_id,
            reason,
        } => Error::InvalidTxnState {
            transactional_id: transactional_id.clone(),
            reason,
        },
        Error::Timeout {
            operation,
            after_ms,
        } => Error::Timeout {
            operation,
            after_ms: *after_ms,
        },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
    }
}
