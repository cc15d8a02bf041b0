//! The record collector (Kafka Streams' `RecordCollector`): a task's one door to the log.
//!
//! Every record a task writes goes through its collector: output and repartition records
//! from its sinks, dead-letter records from its error handlers, and changelog records from
//! the change-logging layer of its stores. The collector owns what those sends share: the
//! producer (the thread's, whose transaction carries all of them under exactly-once), the
//! delivery callbacks, where a failed send is reported, and the end offset each changelog
//! has reached, which becomes its store's checkpoint.
//!
//! ```text
//!  sinks, dead-letter queue ──send───────────┐
//!                                            ├──▶ producer ──▶ log
//!  stores (change logging) ──send_changelog──┘        │ delivery callbacks (sender thread)
//!                                                     ▼
//!              SendErrors (the thread's: the first failure, until a commit takes it)
//!              changelog ends (per changelog: one past the highest offset acknowledged)
//! ```
//!
//! A send does not allocate for its callback: each destination has one shared callback,
//! made once.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use core_log::{OwnedHeader, ProducerRecord, SharedCallback};

use crate::client::producer::Producer;
use crate::error::Result;
use crate::sync::lock;

/// Where the failed sends of a thread's tasks are reported: the first failure is kept until a
/// commit takes it (after flushing the producer), so no offset is committed past a record the
/// log does not have.
#[derive(Clone, Default)]
pub(crate) struct SendErrors(Arc<Mutex<Option<core_log::Error>>>);

impl SendErrors {
    fn report(&self, e: core_log::Error) {
        lock(&self.0).get_or_insert(e);
    }

    /// The first failure since the last call, if any.
    pub(crate) fn take(&self) -> Option<core_log::Error> {
        lock(&self.0).take()
    }
}

/// A changelog partition a collector sends to (see [`RecordCollector::register_changelog`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChangelogId(usize);

struct Changelog {
    topic: Arc<str>,
    partition: u32,
    /// One past the highest offset a send got (-1: none since the last take); written by the
    /// delivery callbacks.
    end: Arc<AtomicI64>,
    /// Moves `end`, or reports a failure.
    on_delivery: SharedCallback,
}

/// The sends of one task.
pub(crate) struct RecordCollector {
    /// The thread's producer: one dynamic call per record sent.
    producer: Arc<dyn Producer>,
    /// The callback of output sends: reports a failure.
    on_delivery: SharedCallback,
    errors: SendErrors,
    changelogs: Vec<Changelog>,
}

impl RecordCollector {
    /// A collector sending with `producer`, reporting failures to `errors`.
    pub(crate) fn new(producer: Arc<dyn Producer>, errors: SendErrors) -> Self {
        let reported = errors.clone();
        RecordCollector {
            producer,
            on_delivery: Arc::new(move |r| {
                if let Err(e) = r {
                    reported.report(e);
                }
            }),
            errors,
            changelogs: Vec::new(),
        }
    }

    /// Adds a changelog partition (a store's) to send to and to track the end of.
    pub(crate) fn register_changelog(&mut self, topic: Arc<str>, partition: u32) -> ChangelogId {
        let end = Arc::new(AtomicI64::new(-1));
        let sent = end.clone();
        let errors = self.errors.clone();
        self.changelogs.push(Changelog {
            topic,
            partition,
            end,
            on_delivery: Arc::new(move |r| match r {
                Ok(m) => {
                    sent.fetch_max(m.offset + 1, Ordering::AcqRel);
                }
                Err(e) => errors.report(e),
            }),
        });
        ChangelogId(self.changelogs.len() - 1)
    }

    /// Sends a record (output, repartition, dead letter); a failed append is reported at
    /// commit.
    #[inline]
    pub(crate) fn send(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[OwnedHeader],
    ) -> Result<()> {
        let borrowed: Vec<core_log::Header<'_>>;
        let mut record = ProducerRecord::new(topic)
            .partition(partition)
            .timestamp(timestamp);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.value(v);
        }
        if !headers.is_empty() {
            borrowed = headers.iter().map(OwnedHeader::as_header).collect();
            record = record.headers(&borrowed);
        }
        self.producer.send(record, &self.on_delivery)?;
        Ok(())
    }

    /// Sends one change of a store to its changelog: `value` `None` is a tombstone; a negative
    /// `timestamp` (no record has set one) leaves it to the producer.
    #[inline]
    pub(crate) fn send_changelog(
        &self,
        changelog: ChangelogId,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<()> {
        let log = &self.changelogs[changelog.0];
        let mut record = ProducerRecord::new(&log.topic)
            .key(key)
            .partition(log.partition);
        if let Some(v) = value {
            record = record.value(v);
        }
        if timestamp >= 0 {
            record = record.timestamp(timestamp);
        }
        self.producer.send(record, &log.on_delivery)?;
        Ok(())
    }

    /// One past the highest changelog offset acknowledged since the last call, if any (call
    /// it after the producer has flushed: it is the store's checkpoint).
    pub(crate) fn take_changelog_end(&self, changelog: ChangelogId) -> Option<i64> {
        let end = self.changelogs[changelog.0].end.swap(-1, Ordering::AcqRel);
        (end >= 0).then_some(end)
    }
}
