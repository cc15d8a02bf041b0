//! Consumer-group administration: Kafka's `AdminClient` calls for groups, and what
//! `kafka-consumer-groups.sh` does with them.
//!
//! ```text
//!   kafka-consumer-groups.sh                        Admin
//!   --list                                          list_consumer_groups
//!   --describe --members                            describe_consumer_group
//!   --describe (offsets, LOG-END-OFFSET, LAG)       list_consumer_group_offsets, consumer_group_lag
//!   --reset-offsets --to-earliest|--to-latest|      reset_consumer_group_offsets
//!       --to-datetime|--to-offset --execute
//!   --delete                                        delete_consumer_group
//! ```
//!
//! Every call goes to the log's group coordinator, the same one the consumers use, so what it
//! reports is what the members see. Changing offsets needs the group inactive (no members),
//! as in Kafka: a live member would overwrite them with its next commit.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::Broker;
use crate::coordinator::group::{ConsumerGroupDescription, GroupState, OffsetAndMetadata};
use crate::error::{Error, Result};
use crate::storage::partition::Partition;
use crate::storage::topic::TopicPartition;

/// Administers the consumer groups of a [`Log`]. Cheap to clone.
///
/// The seeds' "rewind and reprocess": stop the group's consumers, move its committed offsets
/// back, and start them again; they continue from the new offsets.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use core_log::{Admin, Log, OffsetAndMetadata, OffsetSpec, Record, TopicConfig, TopicPartition};
///
/// let log = Log::open(dir.path())?;
/// log.create_topic("likes", 1, TopicConfig::default())?;
/// let p = log.partition("likes", 0)?;
/// p.append(&[Record::new(None, Some(b"+1")), Record::new(None, Some(b"+1"))])?;
///
/// let admin = Admin::new(&log);
/// let likes_0 = TopicPartition::new("likes", 0);
/// // The group "counters" has processed the first record (its consumers commit this way).
/// admin.alter_consumer_group_offsets("counters", &[(likes_0.clone(), OffsetAndMetadata::new(1))])?;
/// let lag = admin.consumer_group_lag("counters")?;
/// assert_eq!((lag[0].committed, lag[0].log_end_offset, lag[0].lag), (Some(1), 2, Some(1)));
///
/// // Rewind: the group's next consumer starts over from the first record.
/// let reset = admin.reset_consumer_group_offsets("counters", &["likes"], OffsetSpec::Earliest)?;
/// assert_eq!(reset[&likes_0], 0);
/// assert_eq!(admin.list_consumer_group_offsets("counters")?[&likes_0].offset, 0);
/// # Ok::<(), core_log::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    log: Broker,
}

/// A group as [`Admin::list_consumer_groups`] lists it: Kafka's `ConsumerGroupListing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupListing {
    /// The group.
    pub group_id: String,
    /// Its state (`Empty` for a group that only has committed offsets).
    pub state: GroupState,
}

/// One partition's row of `kafka-consumer-groups --describe`: how far a group is behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset (the next record it will process), if any.
    pub committed: Option<i64>,
    /// The partition's high watermark: the offset the next record will get.
    pub log_end_offset: i64,
    /// Records behind: `log_end_offset - committed`, as Kafka's tool computes it. `None`
    /// without a commit. Not clamped: a commit beyond the log end shows as negative.
    pub lag: Option<i64>,
    /// How old the oldest record the group has not processed is, in ms of the log's clock:
    /// `now - timestamp` of the first record at or after the committed offset (from the log
    /// start if the commit is below it, as retention deleted the records in between).
    /// `Some(0)` when the group is caught up, `None` without a commit. A record stamped in the
    /// future counts as 0.
    pub time_lag_ms: Option<i64>,
    /// The member that owns the partition in the current generation, if any.
    pub member_id: Option<String>,
}

/// Where [`Admin::reset_consumer_group_offsets`] moves a group's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (`--to-earliest`).
    Earliest,
    /// The high watermark: skip everything there is (`--to-latest`).
    Latest,
    /// The first record with a timestamp at or after this one, in ms since the epoch, or the
    /// high watermark if there is none (`--to-datetime`).
    Timestamp(i64),
    /// This offset, clamped into `[log start, high watermark]` (`--to-offset`).
    Offset(i64),
}

impl Admin {
    /// An admin client of `log` (a [`Log`](crate::Log), or its [`Broker`]).
    pub fn new(log: &impl AsRef<Broker>) -> Self {
        Admin {
            log: log.as_ref().clone(),
        }
    }

    /// Every consumer group the log knows, with its state, sorted by id (Kafka's
    /// `listConsumerGroups`). A group exists once it has members or committed offsets.
    pub fn list_consumer_groups(&self) -> Result<Vec<ConsumerGroupListing>> {
        let groups = self.log.list_groups()?;
        Ok(groups
            .into_iter()
            .map(|(group_id, state)| ConsumerGroupListing { group_id, state })
            .collect())
    }

    /// A group's state, generation, assignor and members with their partitions (Kafka's
    /// `describeConsumerGroups`). `GroupIdNotFound` for a group the log does not know.
    pub fn describe_consumer_group(&self, group: &str) -> Result<ConsumerGroupDescription> {
        self.log.describe_group(group)
    }

    /// A group's committed offsets (Kafka's `listConsumerGroupOffsets`). `GroupIdNotFound`
    /// for a group the log does not know.
    pub fn list_consumer_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        // Described first: an unknown group and a group without commits differ.
        Ok(self.log.describe_group_offsets(group)?.1)
    }

    /// How far a group is behind, per partition: every partition it has a committed offset
    /// for or that a member owns, sorted (the offsets part of `kafka-consumer-groups
    /// --describe`, plus the time lag). See [`PartitionLag`] for how `lag` and `time_lag_ms`
    /// are computed. Partitions of topics deleted since the commit are left out: they have no
    /// log end. `GroupIdNotFound` for a group the log does not know.
    pub fn consumer_group_lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let (description, offsets) = self.log.describe_group_offsets(group)?;
        let now = self.log.clock().now_ms();
        let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
        for m in &description.members {
            for tp in &m.assignment {
                owners.insert(tp.clone(), m.member_id.clone());
            }
        }
        let partitions: BTreeSet<&TopicPartition> = offsets.keys().chain(owners.keys()).collect();
        let mut rows = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let partition = match self.log.partition(&tp.topic, tp.partition) {
                Ok(p) => p,
                Err(Error::UnknownTopicOrPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            let log_end_offset = partition.high_watermark()?;
            let committed = offsets.get(tp).map(|o| o.offset);
            let time_lag_ms = match committed {
                Some(c) => Some(time_lag(&partition, c, log_end_offset, now)?),
                None => None,
            };
            rows.push(PartitionLag {
                partition: tp.clone(),
                committed,
                log_end_offset,
                lag: committed.map(|c| log_end_offset - c),
                time_lag_ms,
                member_id: owners.get(tp).cloned(),
            });
        }
        Ok(rows)
    }

    /// Moves a group's committed offsets for every partition of `topics` to `to`, and returns
    /// what was committed: `kafka-consumer-groups --reset-offsets --topic .. --execute`. The
    /// group's consumers started afterwards continue from there ("rewind and reprocess").
    ///
    /// The group must have no members: `NonEmptyGroup` otherwise, and nothing changes (as in
    /// Kafka, whose tool only resets inactive groups). A group that does not exist yet is
    /// created with these offsets. All partitions are committed together or none are.
    /// `UnknownTopicOrPartition` for a topic that does not exist; an empty `topics` resets
    /// nothing.
    pub fn reset_consumer_group_offsets(
        &self,
        group: &str,
        topics: &[&str],
        to: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut targets = BTreeMap::new();
        for topic in topics {
            for p in 0..self.log.partition_count(topic)? {
                let partition = self.log.partition(topic, p)?;
                targets.insert(TopicPartition::new(*topic, p), target(&partition, to)?);
            }
        }
        let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = targets
            .iter()
            .map(|(tp, o)| (tp.clone(), OffsetAndMetadata::new(*o)))
            .collect();
        // The coordinator checks that the group has no members under its lock, so a member
        // that joined while the targets were computed is not overwritten.
        self.alter_consumer_group_offsets(group, &offsets)?;
        Ok(targets)
    }

    /// Sets a group's committed offsets (Kafka's `alterConsumerGroupOffsets`). The group must
    /// have no members (`NonEmptyGroup`); offsets must be non-negative, of existing
    /// partitions (`InvalidCommitOffset`, `UnknownTopicOrPartition`). All or nothing.
    pub fn alter_consumer_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.log.alter_offsets(group, offsets)
    }

    /// Deletes a group and its committed offsets (Kafka's `deleteConsumerGroups`): its next
    /// consumer starts from `auto.offset.reset`. `NonEmptyGroup` while it has members,
    /// `GroupIdNotFound` for a group the log does not know.
    pub fn delete_consumer_group(&self, group: &str) -> Result<()> {
        self.log.delete_group(group)
    }
}

/// The offset `to` names in `partition`, as `kafka-consumer-groups --reset-offsets` picks it.
fn target(partition: &Partition, to: OffsetSpec) -> Result<i64> {
    Ok(match to {
        OffsetSpec::Earliest => partition.log_start_offset()?,
        OffsetSpec::Latest => partition.high_watermark()?,
        OffsetSpec::Timestamp(ts) => match partition.offset_for_timestamp(ts)? {
            Some((offset, _)) => offset,
            None => partition.high_watermark()?,
        },
        OffsetSpec::Offset(o) => {
            let (start, end) = (partition.log_start_offset()?, partition.high_watermark()?);
            // `max` keeps `clamp` from panicking should the two be read across a
            // retention run that moved the start past the end read before.
            o.clamp(start, end.max(start))
        }
    })
}

/// Bytes per read while looking for the oldest unprocessed record: a read returns at least
/// one whole batch, and the first batch usually holds it.
const TIME_LAG_READ_BYTES: usize = 1;

/// The age of the first record at or after `committed` (or the log start), 0 if none is
/// below `high_watermark`.
fn time_lag(partition: &Partition, committed: i64, high_watermark: i64, now: i64) -> Result<i64> {
    let mut offset = committed.max(partition.log_start_offset()?);
    while offset < high_watermark {
        let data = match partition.read(offset, TIME_LAG_READ_BYTES) {
            Ok(d) => d,
            // Retention deleted the records from `offset` on since the start was read.
            Err(Error::OffsetOutOfRange {
                requested,
                log_start,
                ..
            }) if requested < log_start => {
                offset = log_start;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(r) = data.records().next() {
            return Ok(now.saturating_sub(r.timestamp).max(0));
        }
        // Only control batches or records compacted away here: look further.
        let next = data.next_offset();
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(0)
}
