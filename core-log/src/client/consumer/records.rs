//! What a poll returns: Kafka's `ConsumerRecord` and `ConsumerRecords`.

use std::ops::Range;
use std::sync::Arc;

use crate::record::{Header, TimestampType};
use crate::storage::topic::TopicPartition;

/// A record header the consumer owns: a UTF-8 key and an optional value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedHeader {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Vec<u8>>,
}

impl OwnedHeader {
    /// The header borrowed, as the log's writers take it.
    pub fn as_header(&self) -> Header<'_> {
        Header {
            key: &self.key,
            value: self.value.as_deref(),
        }
    }
}

/// One record as a poll returns it, with its key and value deserialized.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerRecord<K, V> {
    /// The topic (shared by every record of the partition: no allocation per record).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// Milliseconds since the epoch: the create time or the log append time, per
    /// [`ConsumerRecord::timestamp_type`].
    pub timestamp: i64,
    /// Whose clock set [`ConsumerRecord::timestamp`].
    pub timestamp_type: TimestampType,
    /// The key; `None` when the record has none.
    pub key: Option<K>,
    /// The value; `None` for a tombstone.
    pub value: Option<V>,
    /// The headers, in the order they were written.
    pub headers: Vec<OwnedHeader>,
}

impl<K, V> ConsumerRecord<K, V> {
    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

/// The records one poll returned, grouped by partition, each partition's in offset order.
///
/// Iterate it directly (`for r in &records`), or per partition with
/// [`ConsumerRecords::partitions`] and [`ConsumerRecords::records`].
#[derive(Clone, Debug)]
pub struct ConsumerRecords<K, V> {
    records: Vec<ConsumerRecord<K, V>>,
    /// One range of `records` per partition that returned any, in the order they were fetched.
    partitions: Vec<Range<usize>>,
}

impl<K, V> Default for ConsumerRecords<K, V> {
    fn default() -> Self {
        ConsumerRecords {
            records: Vec::new(),
            partitions: Vec::new(),
        }
    }
}

impl<K, V> ConsumerRecords<K, V> {
    pub(crate) fn new(records: Vec<ConsumerRecord<K, V>>, partitions: Vec<Range<usize>>) -> Self {
        ConsumerRecords {
            records,
            partitions,
        }
    }

    /// The number of records.
    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// Whether the poll returned no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, partition by partition.
    pub fn iter(&self) -> std::slice::Iter<'_, ConsumerRecord<K, V>> {
        self.records.iter()
    }

    /// The partitions that returned records, in the order they were fetched.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .map(|r| self.records[r.start].topic_partition())
            .collect()
    }

    /// The records of one partition, in offset order (empty if it returned none).
    pub fn records(&self, tp: &TopicPartition) -> &[ConsumerRecord<K, V>] {
        self.partitions
            .iter()
            .find(|r| {
                let first = &self.records[r.start];
                first.partition == tp.partition && *first.topic == *tp.topic
            })
            .map_or(&[], |r| &self.records[r.clone()])
    }
}

/// The records of a poll made elsewhere than this crate's consumer (another client behind the
/// same interface, a test double), grouped into runs of one partition as they come: give them
/// partition by partition, each in offset order, as a poll returns them.
///
/// ```
/// use core_log::{ConsumerRecord, ConsumerRecords, TimestampType, TopicPartition};
/// let record = |partition, offset| ConsumerRecord {
///     topic: "likes".into(),
///     partition,
///     offset,
///     timestamp: 0,
///     timestamp_type: TimestampType::CreateTime,
///     key: None::<Vec<u8>>,
///     value: Some(b"+1".to_vec()),
///     headers: Vec::new(),
/// };
/// let records = ConsumerRecords::from(vec![record(1, 7), record(1, 8), record(0, 3)]);
/// assert_eq!(records.count(), 3);
/// assert_eq!(records.partitions(), vec![TopicPartition::new("likes", 1), TopicPartition::new("likes", 0)]);
/// assert_eq!(records.records(&TopicPartition::new("likes", 1)).len(), 2);
/// ```
impl<K, V> From<Vec<ConsumerRecord<K, V>>> for ConsumerRecords<K, V> {
    fn from(records: Vec<ConsumerRecord<K, V>>) -> Self {
        let mut partitions: Vec<Range<usize>> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match partitions.last_mut() {
                Some(run)
                    if records[run.start].partition == r.partition
                        && records[run.start].topic == r.topic =>
                {
                    run.end = i + 1;
                }
                _ => partitions.push(i..i + 1),
            }
        }
        ConsumerRecords::new(records, partitions)
    }
}

impl<K, V> IntoIterator for ConsumerRecords<K, V> {
    type Item = ConsumerRecord<K, V>;
    type IntoIter = std::vec::IntoIter<ConsumerRecord<K, V>>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a ConsumerRecords<K, V> {
    type Item = &'a ConsumerRecord<K, V>;
    type IntoIter = std::slice::Iter<'a, ConsumerRecord<K, V>>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

/// The answer of `offsets_for_times` for one partition: the earliest record at or after the
/// asked timestamp. Kafka's `OffsetAndTimestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OffsetAndTimestamp {
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp: i64,
}
