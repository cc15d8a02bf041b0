//! The consumer: Kafka's `KafkaConsumer` over the embedded log, with manual assignment
//! (`assign`, below) or as a member of a consumer group (`subscribe`, committed offsets and
//! rebalances: see `group.rs`).
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use core_log::serialization::StringSerde;
//! use core_log::{AutoOffsetReset, Consumer, ConsumerConfig, Log, Record, TopicConfig, TopicPartition};
//!
//! let log = Log::open(dir.path())?;
//! log.create_topic("likes", 1, TopicConfig::default())?;
//! log.partition("likes", 0)?.append(&[Record::new(Some(b"product-42"), Some(b"+1"))])?;
//!
//! let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
//! let mut consumer = Consumer::<String, String>::new(&log, config, StringSerde, StringSerde)?;
//! consumer.assign(&[TopicPartition::new("likes", 0)])?;
//! let records = consumer.poll(Duration::from_secs(1))?;
//! for r in &records {
//!     assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some("product-42"), Some("+1")));
//! }
//! assert_eq!(consumer.position(&TopicPartition::new("likes", 0))?, 1);
//! # Ok::<(), core_log::Error>(())
//! ```
//!
//! How a poll works: for each assigned, unpaused partition in turn (the first one rotates
//! between polls, so a busy partition cannot starve the others), it continues from the
//! batches the previous poll read but did not return (Kafka's buffered "completed fetch"), or
//! reads more with [`Partition::read_into`] into the partition's reused buffer (shared with
//! the records when they are [`bytes::Bytes`], see `Fetched`), and deserializes records until
//! `max.poll.records`, `fetch.max.bytes` or the partition's `max.partition.fetch.bytes` is
//! reached. When nothing is available it sleeps on one waker that every assigned partition
//! notifies on append, until an append or the timeout.
//!
//! A topic deleted under the consumer is not an error (as in Kafka): its assigned partitions
//! yield nothing while they are gone. Whenever the log's topics change, each poll looks the
//! assigned partitions up again, and fetches from (and is woken by) a topic of the same name
//! once it exists again.

pub mod assignor;
mod config;
mod group;
mod records;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use config::{AutoOffsetReset, ConsumerConfig};
pub use group::{ConsumerGroupMetadata, ConsumerRebalanceListener};
pub use records::{ConsumerRecord, ConsumerRecords, OffsetAndTimestamp, OwnedHeader};

use crate::broker::Broker;
use crate::codec::{DecodeError, MAX_BATCH_BYTES, RecordBatch, RecordRef};
use crate::error::{Error, Result};
use crate::record::TimestampType;
use crate::serialization::Deserializer;
use crate::storage::partition::aborted::Aborted;
use crate::storage::partition::{IsolationLevel, Partition};
use crate::storage::topic::TopicPartition;
use crate::sync::AppendWaker;

/// Reads records from partitions of a [`Log`], deserializing keys as `K` and values as `V`.
/// Kafka's `KafkaConsumer`: partitions are assigned by hand ([`Consumer::assign`]) or by the
/// consumer group `group.id` ([`Consumer::subscribe`]), whose committed offsets
/// ([`Consumer::commit_sync`]) survive restarts.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// use core_log::serialization::StringSerde;
/// use core_log::{AutoOffsetReset, Consumer, ConsumerConfig, Log, Record, TopicConfig};
///
/// let log = Log::builder(dir.path()).offsets_topic_num_partitions(1).open()?;
/// log.create_topic("likes", 2, TopicConfig::default())?;
/// log.partition("likes", 1)?.append(&[Record::new(Some(b"product-42"), Some(b"+1"))])?;
///
/// let config = ConsumerConfig::default()
///     .group_id("like-counters")
///     .auto_offset_reset(AutoOffsetReset::Earliest)
///     .enable_auto_commit(false);
/// let mut consumer = Consumer::<String, String>::new(&log, config, StringSerde, StringSerde)?;
/// consumer.subscribe(&["likes"])?;
/// let records = consumer.poll(Duration::from_secs(1))?; // joins the group, then fetches
/// assert_eq!(records.count(), 1);
/// assert_eq!(consumer.assignment().len(), 2, "the only member owns both partitions");
/// consumer.commit_sync()?;
/// consumer.close()?; // leaves the group at once
/// # Ok::<(), core_log::Error>(())
/// ```
///
/// A consumer is used from one thread at a time, as Kafka's is; it is `Send`.
pub struct Consumer<K, V> {
    log: Broker,
    config: ConsumerConfig,
    key_deserializer: Box<dyn Deserializer<K>>,
    value_deserializer: Box<dyn Deserializer<V>>,
    /// The assignment, in the order given to `assign`.
    assigned: Vec<Assigned>,
    /// Index in `assigned` where the next poll starts.
    next_start: usize,
    /// The log's metadata version read before the assigned partitions' handles were last
    /// looked up: every handle in `assigned` was obtained after it was read, so a topic
    /// deleted or recreated since then shows as a different version.
    metadata_version: u64,
    /// Notified by every assigned partition on append, and by the group coordinator when
    /// the group changes; `poll` sleeps on it.
    waker: Arc<AppendWaker>,
    /// The consumer group, when `group.id` is set.
    group: Option<group::GroupMember>,
    listener: Option<Box<dyn ConsumerRebalanceListener<K, V>>>,
    /// A listener callback is running: `poll` and `subscribe` are refused.
    in_callback: bool,
    closed: bool,
}

impl<K, V> std::fmt::Debug for Consumer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("assignment", &self.assignment())
            .finish_non_exhaustive()
    }
}

/// Where a partition's next fetch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// None yet: `auto.offset.reset` decides at the next poll (or `position`).
    Unset,
    /// `seek_to_beginning`: the log start offset, evaluated at the next poll (as Kafka does).
    Beginning,
    /// `seek_to_end`: the log end offset, evaluated at the next poll.
    End,
    /// The offset of the next record to return.
    At(i64),
    /// The group's committed offset, looked up at the next poll. While an open transaction
    /// holds newer offsets for the partition (Kafka's UNSTABLE_OFFSET_COMMIT) the partition is
    /// skipped, poll after poll, until the transaction is decided.
    Committed,
}

/// One assigned partition's state.
struct Assigned {
    tp: TopicPartition,
    /// Shared by every record returned from this partition.
    topic: Arc<str>,
    partition: Partition,
    position: Position,
    paused: bool,
    fetched: Fetched,
    /// The topic was deleted under the consumer: nothing is fetched until a topic of that name
    /// has the partition again (then `partition` is replaced by the new handle).
    missing: bool,
}

/// Batches read from the partition but not yet returned. A poll cut short by
/// `max.poll.records` leaves the rest here, and the next poll continues from it instead of
/// reading the same bytes again.
///
/// A read goes into `buf`, which then becomes `shared`: records deserialized as
/// [`bytes::Bytes`] are slices of it, not copies. The next read takes the buffer back when no
/// record holds a slice of it any more (the usual case: records are processed and dropped
/// between polls), or reads into a new one.
#[derive(Default)]
struct Fetched {
    buf: Vec<u8>,
    shared: Bytes,
    /// read_committed: what to skip in the buffered batches.
    aborted: Aborted,
    /// The unreturned batches: `shared[range]`.
    range: Range<usize>,
    /// The position they continue from. Any other position (after a seek) discards them.
    position: i64,
    /// The read that filled the buffer reached the log end: reading again in the same poll
    /// would find nothing new (or little), so the poll moves on.
    reached_end: bool,
}

/// What one poll may still return.
struct Budget {
    records_left: usize,
    bytes_used: usize,
}

/// What fetching from one partition did.
#[derive(Default)]
struct Outcome {
    /// The position moved (records returned, control batches skipped, or a reset).
    progressed: bool,
    /// `max.poll.records` or `fetch.max.bytes` is reached: the poll is done.
    poll_full: bool,
}

/// How long `position` waits for a transaction that holds the group's offsets of a partition:
/// Kafka's `default.api.timeout.ms`.
const UNSTABLE_OFFSETS_WAIT: Duration = Duration::from_secs(60);

/// Longest single sleep in `poll`; a longer timeout sleeps again (it keeps `Instant`
/// arithmetic far from overflow for `Duration::MAX`).
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest single sleep in `poll` while an assigned partition's topic is deleted: creating a
/// topic wakes no consumer, so a waiting poll looks again this often (Kafka's consumer
/// refreshes metadata for an unknown topic after `retry.backoff.ms`, 100 ms by default).
const MISSING_PARTITION_RECHECK: Duration = Duration::from_millis(100);

impl<K, V> Consumer<K, V> {
    /// A consumer of `log` (a [`Log`](crate::Log), or its [`Broker`]) with no assignment yet.
    /// Fails with `InvalidConfig` if a setting is out of Kafka's range.
    pub fn new(
        log: &impl AsRef<Broker>,
        config: ConsumerConfig,
        key_deserializer: impl Deserializer<K> + 'static,
        value_deserializer: impl Deserializer<V> + 'static,
    ) -> Result<Self> {
        let log = log.as_ref();
        config.validate()?;
        if config.group_instance_id.is_some() && config.group_id.is_none() {
            return Err(Error::InvalidConfig {
                key: "group.instance.id".into(),
                value: config.group_instance_id.clone().unwrap_or_default(),
                reason: "needs a group.id",
            });
        }
        let waker = Arc::new(AppendWaker::default());
        // Read before any partition is looked up (see the field).
        let metadata_version = log.metadata_version();
        let group = config
            .group_id
            .as_deref()
            .map(|g| group::GroupMember::new(g, &config, waker.clone(), log.clock().now_ms()));
        Ok(Consumer {
            log: log.clone(),
            config,
            key_deserializer: Box::new(key_deserializer),
            value_deserializer: Box::new(value_deserializer),
            assigned: Vec::new(),
            next_start: 0,
            metadata_version,
            waker,
            group,
            listener: None,
            in_callback: false,
            closed: false,
        })
    }

    /// The consumer's settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the assignment with `partitions` (Kafka's `assign`). Partitions that stay
    /// assigned keep their position and paused state; new ones start at the group's
    /// committed offset (with a `group.id`) or get a position from `auto.offset.reset` at the
    /// next poll. An empty slice unassigns everything.
    ///
    /// Fails with `UnknownTopicOrPartition`, changing nothing, if any partition does not
    /// exist, and with `IllegalState` while subscribed (the group assigns partitions then).
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.group.as_ref().is_some_and(|g| g.subscribed.is_some()) {
            return Err(Error::IllegalState {
                reason: "assign while subscribed: call unsubscribe first",
            });
        }
        let before = self.assignment();
        self.set_assignment(partitions)?;
        let added: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| !before.contains(tp))
            .cloned()
            .collect();
        self.start_from_committed(&added)
    }

    /// Replaces the assignment, whoever decided it.
    fn set_assignment(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        // Look everything up first: an unknown partition changes nothing.
        let mut looked_up: Vec<(&TopicPartition, Partition)> = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if looked_up.iter().any(|(t, _)| *t == tp) {
                continue;
            }
            looked_up.push((tp, self.log.partition(&tp.topic, tp.partition)?));
        }
        let mut old = std::mem::take(&mut self.assigned);
        for (tp, partition) in looked_up {
            let kept = old.iter().position(|a| a.tp == *tp);
            self.assigned.push(match kept {
                Some(i) => old.swap_remove(i),
                None => Assigned {
                    tp: tp.clone(),
                    topic: Arc::from(tp.topic.as_str()),
                    partition,
                    position: Position::Unset,
                    paused: false,
                    fetched: Fetched::default(),
                    missing: false,
                },
            });
        }
        if !old.is_empty() {
            // Partitions keep a waker registered until it is dropped: a fresh one stops
            // unassigned partitions from waking this consumer.
            self.waker = Arc::new(AppendWaker::default());
            if let Some(g) = &self.group {
                g.link.set_waker(self.waker.clone());
            }
        }
        for a in &self.assigned {
            a.partition.watch(&self.waker);
        }
        if self.next_start >= self.assigned.len() {
            self.next_start = 0;
        }
        Ok(())
    }

    /// The assigned partitions, in the order given to [`Consumer::assign`].
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.iter().map(|a| a.tp.clone()).collect()
    }

    fn assigned_mut(&mut self, tp: &TopicPartition) -> Result<&mut Assigned> {
        self.assigned
            .iter_mut()
            .find(|a| a.tp == *tp)
            .ok_or_else(|| not_assigned(tp))
    }

    fn assigned(&self, tp: &TopicPartition) -> Result<&Assigned> {
        self.assigned
            .iter()
            .find(|a| a.tp == *tp)
            .ok_or_else(|| not_assigned(tp))
    }

    /// The tps named, or every assigned partition for an empty slice (Kafka's rule for
    /// `seekToBeginning` and `seekToEnd`). Fails with `NotAssigned` before changing anything.
    fn for_each_named(
        &mut self,
        partitions: &[TopicPartition],
        mut f: impl FnMut(&mut Assigned),
    ) -> Result<()> {
        if let Some(tp) = partitions
            .iter()
            .find(|tp| !self.assigned.iter().any(|a| a.tp == **tp))
        {
            return Err(not_assigned(tp));
        }
        for a in &mut self.assigned {
            if partitions.is_empty() || partitions.contains(&a.tp) {
                f(a);
            }
        }
        Ok(())
    }

    /// The offset of the next record a poll returns from `tp`. A partition without a position
    /// gets one now, from a pending `seek_to_*` or from `auto.offset.reset` (`none` fails with
    /// `NoOffsetForPartition`). Fails with `NotAssigned` for a partition not assigned.
    ///
    /// A partition waiting for the group's committed offset while an open transaction holds
    /// newer offsets for it waits here, up to 60 s (Kafka's `default.api.timeout.ms`), for the
    /// transaction to be decided; then `Timeout`.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        let started = Instant::now();
        while self.assigned(tp)?.position == Position::Committed {
            self.resolve_committed()?;
            if self.assigned(tp)?.position != Position::Committed {
                break;
            }
            if started.elapsed() > UNSTABLE_OFFSETS_WAIT {
                return Err(Error::Timeout {
                    operation: "waiting for a transaction holding the group's offsets",
                    after_ms: UNSTABLE_OFFSETS_WAIT.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (reset, isolation) = (self.config.auto_offset_reset, self.config.isolation_level);
        resolve(self.assigned_mut(tp)?, reset, isolation)
    }

    /// Makes the next poll of `tp` start at `offset`. An offset outside the partition's range
    /// is found out at that poll and handled by `auto.offset.reset`, as in Kafka. Fails with
    /// `NotAssigned`, or `OffsetOutOfRange` for a negative offset.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let a = self.assigned_mut(tp)?;
        if offset < 0 {
            return Err(Error::OffsetOutOfRange {
                topic: tp.topic.clone(),
                partition: tp.partition,
                requested: offset,
                log_start: a.partition.log_start_offset()?,
                log_end: a.partition.log_end_offset()?,
            });
        }
        a.position = Position::At(offset);
        Ok(())
    }

    /// Makes the next poll of each partition start at its log start offset, evaluated then
    /// (lazily, as in Kafka). An empty slice means every assigned partition.
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.for_each_named(partitions, |a| a.position = Position::Beginning)
    }

    /// Makes the next poll of each partition start at its log end offset, evaluated then: only
    /// records appended later are returned. An empty slice means every assigned partition.
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.for_each_named(partitions, |a| a.position = Position::End)
    }

    /// Stops returning records from these partitions until [`Consumer::resume`]; their
    /// positions stay where they are.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.for_each_named(partitions, |a| a.paused = true)
    }

    /// Returns records from these paused partitions again, from where they stopped.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.for_each_named(partitions, |a| a.paused = false)
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assigned
            .iter()
            .filter(|a| a.paused)
            .map(|a| a.tp.clone())
            .collect()
    }

    /// How many records `tp` holds past the consumer's position: log end offset minus
    /// position (Kafka's `currentLag`, the `records-lag` metric). `None` while the position is
    /// not known yet (before the first poll, or after a `seek_to_*`, until the next poll).
    pub fn current_lag(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        let a = self.assigned(tp)?;
        match a.position {
            Position::At(p) => Ok(Some(
                (end_offset(&a.partition, self.config.isolation_level)? - p).max(0),
            )),
            _ => Ok(None),
        }
    }

    /// The log start offset of each partition (assigned or not). Kafka's `beginningOffsets`.
    pub fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        self.offsets(partitions, Partition::log_start_offset)
    }

    /// The end offset of each partition (assigned or not), Kafka's `endOffsets`: the high
    /// watermark (the offset the next record will get), or with `read_committed` the last
    /// stable offset (the first offset of an open transaction).
    pub fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let isolation = self.config.isolation_level;
        self.offsets(partitions, |p| end_offset(p, isolation))
    }

    fn offsets(
        &self,
        partitions: &[TopicPartition],
        f: impl Fn(&Partition) -> Result<i64>,
    ) -> Result<HashMap<TopicPartition, i64>> {
        partitions
            .iter()
            .map(|tp| {
                let p = self.log.partition(&tp.topic, tp.partition)?;
                Ok((tp.clone(), f(&p)?))
            })
            .collect()
    }

    /// For each partition (assigned or not), the earliest record whose timestamp is at or
    /// after the given one, or `None` if every record is older. Kafka's `offsetsForTimes`.
    pub fn offsets_for_times(
        &self,
        timestamps: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        timestamps
            .into_iter()
            .map(|(tp, ts)| {
                let p = self.log.partition(&tp.topic, tp.partition)?;
                let found = p
                    .offset_for_timestamp(ts)?
                    .map(|(offset, timestamp)| OffsetAndTimestamp { offset, timestamp });
                Ok((tp, found))
            })
            .collect()
    }

    /// Returns up to `max.poll.records` records from the assigned, unpaused partitions, waiting
    /// up to `timeout` for the first one (`Duration::ZERO` returns what is there now). Empty if
    /// none arrived in time.
    ///
    /// Errors, after which the partition's position stays where it was:
    /// - `Deserialization` for a record whose key or value cannot be decoded. Records before
    ///   it are returned first (by this poll), and the next poll reports it. Polling again
    ///   reports it again: `seek(tp, offset + 1)` skips it.
    /// - `NoOffsetForPartition` (no position, `auto.offset.reset=none`) and `OffsetOutOfRange`
    ///   (a position outside the log, `none`): `seek` to continue.
    /// - the log's own errors (`Closed`, `KafkaStorageError`, ...).
    ///
    /// An error in one partition does not lose records already gathered from others: they
    /// are returned, and the error comes with the next poll.
    ///
    /// With nothing assigned (or everything paused) it waits out the timeout and returns empty.
    /// A partition whose topic was deleted is not an error either (Kafka's consumer waits for
    /// the topic's metadata): it yields nothing, with a warning when it disappears, until a
    /// topic of that name has the partition again. Then the poll reads the new partition from
    /// the old position, if that is within it, or from where `auto.offset.reset` says (with
    /// `none`, `OffsetOutOfRange`).
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords<K, V>> {
        if self.in_callback {
            return Err(Error::IllegalState {
                reason: "poll from inside a rebalance callback",
            });
        }
        let start = Instant::now();
        let grouped = self.group.as_ref().is_some_and(|g| g.subscribed.is_some());
        loop {
            if grouped {
                self.update_group()?;
            }
            self.maybe_auto_commit(false);
            let (records, progressed) = self.fetch_once()?;
            if !records.is_empty() {
                return Ok(records);
            }
            if progressed {
                // Only control batches, or a reset: there may be records right behind.
                continue;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(records);
            }
            // An append between the fetch above and this wait is not lost: the waker keeps
            // the notification and `wait` returns at once. A group member checks in with the
            // coordinator at least every `heartbeat.interval.ms`.
            let mut wait = if grouped {
                left.min(Duration::from_millis(
                    self.config.heartbeat_interval_ms.max(1),
                ))
            } else {
                left
            };
            if self.assigned.iter().any(|a| a.missing) {
                wait = wait.min(MISSING_PARTITION_RECHECK);
            }
            self.waker.wait(wait.min(MAX_WAIT));
        }
    }

    /// One pass over the fetchable partitions: the records gathered, and whether any
    /// position moved.
    fn fetch_once(&mut self) -> Result<(ConsumerRecords<K, V>, bool)> {
        self.refresh_partitions()?;
        self.resolve_committed()?;
        let n = self.assigned.len();
        let start = self.next_start.min(n.saturating_sub(1));
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        let mut budget = Budget {
            records_left: self.config.max_poll_records,
            bytes_used: 0,
        };
        let mut progressed = false;
        let mut last_returning = None;
        let deserializers = (&*self.key_deserializer, &*self.value_deserializer);
        for k in 0..n {
            let i = (start + k) % n;
            let a = &mut self.assigned[i];
            if a.paused || a.missing {
                continue;
            }
            let first = out.len();
            let res = match fetch_partition(a, &self.config, &mut budget, deserializers, &mut out) {
                // Only a deleted partition's handle fails so (deleted since the last
                // refresh, which the next one confirms): nothing to fetch, not an error.
                Err(Error::UnknownTopicOrPartition { .. }) => {
                    mark_missing(a);
                    Ok(Outcome::default())
                }
                res => res,
            };
            if out.len() > first {
                ranges.push(first..out.len());
                last_returning = Some(i);
            }
            match res {
                Ok(outcome) => {
                    progressed |= outcome.progressed;
                    if outcome.poll_full {
                        break;
                    }
                }
                Err(e) => {
                    // The next poll starts here, so it reports the error before anything else.
                    self.next_start = i;
                    if out.is_empty() {
                        return Err(e);
                    }
                    return Ok((ConsumerRecords::new(out, ranges), true));
                }
            }
        }
        // Fairness: the next poll starts after the last partition that returned records, so
        // the partitions skipped for lack of budget go first.
        self.next_start = match last_returning {
            Some(i) => (i + 1) % n.max(1),
            None => (start + 1) % n.max(1),
        };
        Ok((ConsumerRecords::new(out, ranges), progressed))
    }

    /// Looks the assigned partitions up again if topics were created or deleted since the
    /// last time: a deleted topic's partitions are marked missing, and a partition whose
    /// topic exists again (recreated, so a new partition) replaces the deleted handle, and
    /// wakes this consumer on its appends from now on.
    fn refresh_partitions(&mut self) -> Result<()> {
        // Read before the lookups: a change during them shows at the next refresh.
        let version = self.log.metadata_version();
        if version == self.metadata_version {
            return Ok(());
        }
        for a in &mut self.assigned {
            match self.log.partition(&a.tp.topic, a.tp.partition) {
                Ok(p) => {
                    // A live handle is the one the log holds (a topic is recreated only
                    // after the deleted one's handles were marked deleted).
                    let deleted = matches!(
                        a.partition.log_end_offset(),
                        Err(Error::UnknownTopicOrPartition { .. })
                    );
                    if a.missing || deleted {
                        if a.missing {
                            tracing::info!(
                                topic = %a.tp.topic, partition = a.tp.partition,
                                "assigned partition exists again: fetching from it"
                            );
                        }
                        p.watch(&self.waker);
                        a.partition = p;
                        // Batches of the deleted partition are not the new one's.
                        a.fetched = Fetched::default();
                        a.missing = false;
                    }
                }
                Err(Error::UnknownTopicOrPartition { .. }) => mark_missing(a),
                Err(e) => return Err(e),
            }
        }
        self.metadata_version = version;
        Ok(())
    }
}

/// The partition's topic was deleted: warns once per disappearance, not at every poll.
fn mark_missing(a: &mut Assigned) {
    if !a.missing {
        tracing::warn!(
            topic = %a.tp.topic, partition = a.tp.partition,
            "assigned partition no longer exists (topic deleted): nothing is fetched from it \
             until it exists again"
        );
        a.missing = true;
        a.fetched = Fetched::default();
    }
}

impl<K, V> Consumer<K, V> {
    /// Closes the consumer (Kafka's `close`): with `enable.auto.commit` it commits the
    /// consumed positions, runs `on_partitions_revoked`, and leaves the group at once so the
    /// others rebalance without waiting for a timeout. A static member does not leave: its
    /// partitions wait `session.timeout.ms` for it to come back. Dropping the consumer does
    /// the same without the callback, and without the commit if it is dropped by a panic.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.leave(true)
    }
}

impl<K, V> Drop for Consumer<K, V> {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            // Dropped while a panic unwinds: what the last poll returned was probably not
            // processed, so nothing is committed (the records are read again after the
            // rebalance). The consumer still leaves the group.
            let commit = !std::thread::panicking();
            if let Err(e) = self.leave_with(false, commit) {
                tracing::debug!(error = %e, "closing a dropped consumer");
            }
        }
    }
}

fn not_assigned(tp: &TopicPartition) -> Error {
    Error::NotAssigned {
        topic: tp.topic.clone(),
        partition: tp.partition,
    }
}

/// Where "the end" is for a consumer: the high watermark, or with `read_committed` the last
/// stable offset, so that a reset to latest never skips an open transaction's records.
fn end_offset(p: &Partition, isolation: IsolationLevel) -> Result<i64> {
    match isolation {
        IsolationLevel::ReadUncommitted => p.high_watermark(),
        IsolationLevel::ReadCommitted => p.last_stable_offset(),
    }
}

/// The partition's position, resolving a pending `seek_to_*` or `auto.offset.reset`. A
/// position still waiting for the group's committed offset is an error here: callers resolve
/// those first (`resolve_committed`).
fn resolve(a: &mut Assigned, reset: AutoOffsetReset, isolation: IsolationLevel) -> Result<i64> {
    let offset = match (a.position, reset) {
        (Position::At(offset), _) => return Ok(offset),
        (Position::Committed, _) => {
            return Err(Error::Timeout {
                operation: "the position waits for a transaction holding the group's offsets",
                after_ms: 0,
            });
        }
        (Position::Beginning, _) | (Position::Unset, AutoOffsetReset::Earliest) => {
            a.partition.log_start_offset()?
        }
        (Position::End, _) | (Position::Unset, AutoOffsetReset::Latest) => {
            end_offset(&a.partition, isolation)?
        }
        (Position::Unset, AutoOffsetReset::None) => {
            return Err(Error::NoOffsetForPartition {
                topic: a.tp.topic.clone(),
                partition: a.tp.partition,
            });
        }
    };
    a.position = Position::At(offset);
    Ok(offset)
}

/// Gathers records from one partition into `out` within `budget`, and leaves the partition's
/// position after the last record gathered (or at the record that failed to deserialize).
fn fetch_partition<K, V>(
    a: &mut Assigned,
    config: &ConsumerConfig,
    budget: &mut Budget,
    de: (&dyn Deserializer<K>, &dyn Deserializer<V>),
    out: &mut Vec<ConsumerRecord<K, V>>,
) -> Result<Outcome> {
    if a.position == Position::Committed {
        // Waiting for an open transaction that holds the group's offsets: skipped this poll.
        return Ok(Outcome::default());
    }
    let mut pos = resolve(a, config.auto_offset_reset, config.isolation_level)?;
    let started_at = pos;
    let mut outcome = Outcome::default();
    let mut partition_bytes = 0usize;
    // Batches are counted whole against both byte bounds. The first batch of the poll is taken
    // whatever its size, and so is a partition's first if it fits `fetch.max.bytes` (KIP-74):
    // a batch larger than the bounds still makes progress.
    //
    // Whether this poll read from the partition: a read that reached the log end, once
    // drained, leaves nothing more to gather now.
    let mut read_here = false;
    let res = loop {
        if budget.records_left == 0 {
            outcome.poll_full = true;
            break Ok(());
        }
        let f = &mut a.fetched;
        if f.range.is_empty() || f.position != pos {
            let fetch_left = config.fetch_max_bytes.saturating_sub(budget.bytes_used);
            let partition_left = config
                .max_partition_fetch_bytes
                .saturating_sub(partition_bytes);
            if budget.bytes_used > 0 && fetch_left == 0 {
                outcome.poll_full = true;
                break Ok(());
            }
            if partition_bytes > 0 && partition_left == 0 {
                break Ok(());
            }
            // The buffered batches (none, or stale after a seek) go with the buffer, even if
            // the read fails. The buffer comes back whole (capacity and length, so the read
            // neither reallocates nor zero-fills it) when no record holds a slice of it.
            let last = std::mem::take(&mut f.shared);
            f.range = 0..0;
            if last.is_unique() {
                f.buf = Vec::from(last);
            }
            match a.partition.read_into_isolated(
                pos,
                fetch_left.min(partition_left),
                &mut f.buf,
                config.isolation_level,
            ) {
                Ok(data) => {
                    f.aborted.reset(data.aborted_transactions.iter().copied());
                    let (at, len) = (data.records.as_ptr() as usize, data.records.len());
                    let reached_end = data.next_offset() >= data.log_end_offset;
                    // `data.records` is a slice of `f.buf`: keep its place, not the borrow.
                    let start = at.saturating_sub(f.buf.as_ptr() as usize);
                    f.range = start..start + len;
                    f.shared = Bytes::from(std::mem::take(&mut f.buf));
                    f.position = pos;
                    f.reached_end = reached_end;
                    read_here = true;
                    if len == 0 {
                        break Ok(());
                    }
                }
                Err(Error::OffsetOutOfRange {
                    log_start, log_end, ..
                }) if config.auto_offset_reset != AutoOffsetReset::None => {
                    let to = match config.auto_offset_reset {
                        AutoOffsetReset::Earliest => log_start,
                        _ => match config.isolation_level {
                            IsolationLevel::ReadUncommitted => log_end,
                            IsolationLevel::ReadCommitted => a.partition.last_stable_offset()?,
                        },
                    };
                    tracing::info!(
                        topic = %a.tp.topic, partition = a.tp.partition, from = pos, to,
                        "position out of range: reset by auto.offset.reset"
                    );
                    pos = to;
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        // Drain the buffered batches.
        let f = &mut a.fetched;
        let bytes = &f.shared[f.range.clone()];
        let mut done = 0usize;
        let mut stop = false;
        let mut failure = None;
        // The log split these bytes into whole, checked batches before returning them, so
        // `split` cannot fail here.
        while let Ok(Some((batch, _))) = RecordBatch::split(&bytes[done..]) {
            let size = batch.size();
            if batch.next_offset() <= pos {
                done += size;
                continue;
            }
            if budget.bytes_used > 0
                && budget.bytes_used.saturating_add(size) > config.fetch_max_bytes
            {
                outcome.poll_full = true;
                stop = true;
                break;
            }
            if partition_bytes > 0
                && partition_bytes.saturating_add(size) > config.max_partition_fetch_bytes
            {
                stop = true;
                break;
            }
            partition_bytes += size;
            budget.bytes_used += size;
            if config.isolation_level == IsolationLevel::ReadCommitted && f.aborted.skip(&batch) {
                pos = pos.max(batch.next_offset());
                done += size;
                continue;
            }
            if !batch.is_control() {
                let timestamp_type = batch.timestamp_type();
                let mut cut = false;
                // Records are slices of the fetch, or of their batch decompressed (once per
                // poll that reaches the batch: records a poll leaves are decompressed again).
                let inflated;
                let (records, source) = if batch.compression() == 0 {
                    (batch.records(), &f.shared)
                } else {
                    let mut out = Vec::new();
                    if let Err(e) = batch.decompress_records(&mut out, MAX_BATCH_BYTES) {
                        failure = Some(corrupt(&a.partition, e));
                        break;
                    }
                    inflated = Bytes::from(out);
                    (batch.records_from(&inflated), &inflated)
                };
                for r in records {
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => {
                            failure = Some(corrupt(&a.partition, e));
                            break;
                        }
                    };
                    if r.offset < pos {
                        continue;
                    }
                    if budget.records_left == 0 {
                        cut = true;
                        break;
                    }
                    let offset = r.offset;
                    match decode(
                        &a.topic,
                        a.tp.partition,
                        timestamp_type,
                        r,
                        source,
                        de,
                        &a.partition,
                    ) {
                        Ok(rec) => {
                            out.push(rec);
                            budget.records_left -= 1;
                            pos = offset + 1;
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
                if cut {
                    // `max.poll.records` reached inside the batch: the rest of it stays
                    // buffered for the next poll.
                    outcome.poll_full = true;
                    stop = true;
                    break;
                }
            }
            pos = pos.max(batch.next_offset());
            done += size;
        }
        f.range.start += done;
        f.position = pos;
        if let Some(e) = failure {
            break Err(e);
        }
        if stop || (read_here && f.reached_end) {
            break Ok(());
        }
        // Drained a buffer that did not reach the log end: read on, within the bounds.
    };
    a.position = Position::At(pos);
    outcome.progressed = pos != started_at;
    res.map(|()| outcome)
}

/// One record, deserialized and owned.
fn decode<K, V>(
    topic: &Arc<str>,
    partition: u32,
    timestamp_type: TimestampType,
    r: RecordRef<'_>,
    fetched: &Bytes,
    (key_de, value_de): (&dyn Deserializer<K>, &dyn Deserializer<V>),
    p: &Partition,
) -> Result<ConsumerRecord<K, V>> {
    let failed = |part: &'static str| {
        move |source| Error::Deserialization {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            part,
            source,
        }
    };
    let key = match r.key {
        Some(k) => Some(
            key_de
                .deserialize_shared(topic, fetched, k)
                .map_err(failed("key"))?,
        ),
        None => None,
    };
    let value = match r.value {
        Some(v) => Some(
            value_de
                .deserialize_shared(topic, fetched, v)
                .map_err(failed("value"))?,
        ),
        None => None,
    };
    // An empty Vec does not allocate: records without headers cost nothing here.
    let mut headers = Vec::new();
    for h in r.headers() {
        let h = h.map_err(|e| corrupt(p, e))?;
        headers.push(OwnedHeader {
            key: h.key.to_owned(),
            value: h.value.map(<[u8]>::to_vec),
        });
    }
    Ok(ConsumerRecord {
        topic: topic.clone(),
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        timestamp_type,
        key,
        value,
        headers,
    })
}

/// A record that does not decode inside a batch whose CRC matched. The log validated every
/// record before storing or serving its batch, so this means the file changed under it; the
/// consumer reports it rather than skip records. (The byte position is not known at this
/// level: the partition directory is the file given.)
fn corrupt(p: &Partition, e: DecodeError) -> Error {
    Error::Corrupt {
        file: p.dir().to_path_buf(),
        position: 0,
        reason: e.0,
    }
}
