//! The task context: the state of a task that its nodes and processors reach while they run
//! (Kafka Streams' `ProcessorContextImpl`, one per task): the current record's provenance,
//! stream time, stores, punctuation schedules, counters, hot-key summaries, error handling,
//! and the sends of output records.
//!
//! It sits below the declaration: the DSL's processors reach it through
//! [`ProcessorContext`](crate::processor::ProcessorContext), and the runtime
//! (`runtime/task.rs`) makes one per task and drives it.

use std::fmt;
use std::sync::Arc;

use core_log::{Clock, OwnedHeader};

use crate::client::Admin;
use crate::config::ErrorHandling;
use crate::error::{Error, Result};
use crate::hot_keys::TaskHotKeys;
use crate::processor::{PunctuationType, Record, RecordContext, StoreHandle};
use crate::record_collector::RecordCollector;
use crate::state::store::{AnyStore, Store};

/// Raw bytes of a key or value as read from a topic (`None`: null).
pub(crate) type Raw = Option<bytes::Bytes>;

/// A task's id: the sub-topology and the partition, written `<sub-topology>_<partition>` as in
/// Kafka Streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The sub-topology.
    pub subtopology: u32,
    /// The partition of its source topics.
    pub partition: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Where an error met a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    Deserialization,
    Processing,
}

/// Counters of one task.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskMetrics {
    pub processed: u64,
    pub skipped_records: u64,
    pub dropped_errors: u64,
    pub dead_lettered: u64,
    pub restored_records: u64,
}

struct Schedule {
    id: usize,
    node: usize,
    kind: PunctuationType,
    interval: i64,
    next: i64,
}

/// The state of a task a processor reaches through its context.
pub(crate) struct TaskContext {
    pub task_id: TaskId,
    pub application_id: Arc<str>,
    pub record: RecordContext,
    pub stream_time: i64,
    pub clock: Arc<dyn Clock>,
    /// The partition counts of the topics the task writes to.
    pub admin: Arc<dyn Admin>,
    pub metrics: TaskMetrics,
    /// The hot-key summaries of the task's repartition sinks.
    pub hot_keys: TaskHotKeys,
    /// Where the task's output (and dead-letter) records go.
    collector: Arc<RecordCollector>,
    deserialization: ErrorHandling,
    processing: ErrorHandling,
    /// The task's stores, in the sub-topology's local store order.
    pub stores: Vec<Box<dyn AnyStore>>,
    schedules: Vec<Schedule>,
    next_schedule: usize,
}

/// What a task's context is made of, besides what it starts empty.
pub(crate) struct TaskContextParts {
    pub task_id: TaskId,
    pub application_id: Arc<str>,
    pub clock: Arc<dyn Clock>,
    pub admin: Arc<dyn Admin>,
    pub metrics: TaskMetrics,
    pub hot_keys: TaskHotKeys,
    pub collector: Arc<RecordCollector>,
    pub deserialization: ErrorHandling,
    pub processing: ErrorHandling,
    pub stores: Vec<Box<dyn AnyStore>>,
}

impl TaskContext {
    pub(crate) fn new(parts: TaskContextParts) -> Self {
        TaskContext {
            task_id: parts.task_id,
            application_id: parts.application_id,
            record: RecordContext::default(),
            stream_time: -1,
            clock: parts.clock,
            admin: parts.admin,
            metrics: parts.metrics,
            hot_keys: parts.hot_keys,
            collector: parts.collector,
            deserialization: parts.deserialization,
            processing: parts.processing,
            stores: parts.stores,
            schedules: Vec::new(),
            next_schedule: 0,
        }
    }

    /// Whether any punctuation is scheduled.
    pub(crate) fn has_schedules(&self) -> bool {
        !self.schedules.is_empty()
    }

    /// The punctuations of `kind` due at `now`, as (schedule id, node), each moved to its next
    /// time: one call per due schedule however far behind it is.
    pub(crate) fn take_due(&mut self, kind: PunctuationType, now: i64) -> Vec<(usize, usize)> {
        let mut due = Vec::new();
        for s in &mut self.schedules {
            if s.kind == kind && s.next <= now {
                due.push((s.id, s.node));
                s.next = if s.next == i64::MIN {
                    now.saturating_add(s.interval)
                } else {
                    let behind = (now - s.next) / s.interval;
                    s.next
                        .saturating_add((behind + 1).saturating_mul(s.interval))
                };
            }
        }
        due
    }

    /// Whether schedule `id` is still on (a punctuator may cancel another).
    pub(crate) fn is_scheduled(&self, id: usize) -> bool {
        self.schedules.iter().any(|s| s.id == id)
    }

    pub(crate) fn store_name(&self, index: usize) -> &str {
        self.stores[index].name()
    }

    pub(crate) fn store_any(&self, index: usize) -> &dyn std::any::Any {
        self.stores[index].as_any()
    }

    pub(crate) fn store_mut<K: 'static, V: 'static>(
        &mut self,
        h: StoreHandle<K, V>,
    ) -> &mut Store<K, V> {
        match self.stores[h.index]
            .as_any_mut()
            .downcast_mut::<Store<K, V>>()
        {
            Some(s) => s,
            // A handle is only made by `key_value_store`, which checks the types.
            None => unreachable!("store handle of the wrong types"),
        }
    }

    pub(crate) fn schedule(&mut self, node: usize, kind: PunctuationType, interval: i64) -> usize {
        let id = self.next_schedule;
        self.next_schedule += 1;
        let next = match kind {
            PunctuationType::WallClockTime => self.clock.now_ms().saturating_add(interval),
            PunctuationType::StreamTime if self.stream_time >= 0 => {
                self.stream_time.saturating_add(interval)
            }
            PunctuationType::StreamTime => i64::MIN,
        };
        self.schedules.push(Schedule {
            id,
            node,
            kind,
            interval,
            next,
        });
        id
    }

    pub(crate) fn cancel(&mut self, id: usize) {
        self.schedules.retain(|s| s.id != id);
    }

    /// Sends a record through the task's collector; a failed append is reported at commit.
    #[inline]
    pub(crate) fn send(
        &mut self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[OwnedHeader],
    ) -> Result<()> {
        self.collector
            .send(topic, partition, key, value, timestamp, headers)
    }

    /// Whether a handler sends failed records to a dead-letter queue, which needs their raw
    /// bytes after decoding.
    pub(crate) fn keeps_raw_records(&self) -> bool {
        matches!(self.deserialization, ErrorHandling::DeadLetterQueue(_))
            || matches!(self.processing, ErrorHandling::DeadLetterQueue(_))
    }

    /// A deserialization error of the current record, with its provenance.
    pub(crate) fn serde_error(&self, source: crate::serde::SerdeError) -> Error {
        Error::Serde {
            topic: self.record.topic.to_string(),
            partition: Some(self.record.partition),
            offset: Some(self.record.offset),
            source,
        }
    }

    /// A processor's error outside the processing of an input record (a punctuation, a
    /// flush, a forwarded cache flush) goes to the processing handler, without raw bytes;
    /// other errors (store, log) pass.
    pub(crate) fn handle_node_error(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Err(e @ (Error::Processing { .. } | Error::Serde { .. })) => {
                let none = Record {
                    key: None,
                    value: None,
                    timestamp: self.record.timestamp,
                    headers: Vec::new(),
                };
                self.handle_error(ErrorSource::Processing, e, &none)
            }
            r => r,
        }
    }

    /// Applies the configured handler to a record that failed; `Ok` means go on.
    pub(crate) fn handle_error(
        &mut self,
        source: ErrorSource,
        error: Error,
        raw: &Record<Raw, Raw>,
    ) -> Result<()> {
        let handling = match source {
            ErrorSource::Deserialization => self.deserialization.clone(),
            ErrorSource::Processing => self.processing.clone(),
        };
        match handling {
            ErrorHandling::Fail => Err(error),
            ErrorHandling::LogAndContinue => {
                tracing::warn!(task = %self.task_id, topic = %self.record.topic, partition = self.record.partition, offset = self.record.offset, %error, "skipping a record that failed");
                self.metrics.dropped_errors += 1;
                Ok(())
            }
            ErrorHandling::DeadLetterQueue(topic) => {
                let mut headers = raw.headers.clone();
                let h = |k: &str, v: String| OwnedHeader {
                    key: k.to_owned(),
                    value: Some(v.into_bytes()),
                };
                headers.push(h("__streams.errors.topic", self.record.topic.to_string()));
                headers.push(h(
                    "__streams.errors.partition",
                    self.record.partition.to_string(),
                ));
                headers.push(h("__streams.errors.offset", self.record.offset.to_string()));
                headers.push(h(
                    "__streams.errors.exception",
                    match source {
                        ErrorSource::Deserialization => "deserialization".to_owned(),
                        ErrorSource::Processing => "processing".to_owned(),
                    },
                ));
                headers.push(h("__streams.errors.message", error.to_string()));
                let partitions = self.admin.partition_count(&topic)?;
                let partition = match &raw.key {
                    Some(k) => core_log::partition_for_key(k, partitions),
                    None => self.record.partition % partitions.max(1),
                };
                self.send(
                    &topic,
                    partition,
                    raw.key.as_deref(),
                    raw.value.as_deref(),
                    raw.timestamp,
                    &headers,
                )?;
                self.metrics.dead_lettered += 1;
                Ok(())
            }
        }
    }
}
