//! The records of the compacted topic `__consumer_offsets`, byte for byte as Kafka writes
//! them, so that a later Kafka wire front end (or Kafka's own tools, given the segment files)
//! reads the same offsets and groups.
//!
//! Every record has a key and a value, each starting with an `i16` version; the key's version
//! says what the record is. A null value is a tombstone: compaction then drops the key.
//!
//! ```text
//! key version  key fields                               value
//!   0, 1       group str | topic str | partition i32    OffsetCommitValue
//!   2          group str                                GroupMetadataValue
//!   3+         Kafka's newer group types (KIP-848 consumer groups, share and streams
//!              groups): not kept here, skipped by the loader
//!
//! OffsetCommitValue  v0, v2  offset i64 | metadata str | commit_timestamp i64
//!                    v1      v0 fields | expire_timestamp i64
//!                    v3      offset i64 | leader_epoch i32 | metadata str | commit_timestamp i64
//!                    v4      v3 fields, flexible (see below)
//!
//! GroupMetadataValue protocol_type str | generation i32 | protocol str? | leader str? |
//!                    current_state_timestamp i64 (v2+) | members [MemberMetadata]
//! MemberMetadata     member_id str | group_instance_id str? (v3+) | client_id str |
//!                    client_host str | rebalance_timeout i32 (v1+) | session_timeout i32 |
//!                    subscription bytes | assignment bytes                  (v4: flexible)
//!
//! subscription = ConsumerProtocolSubscription: version i16 | topics [str] | user_data bytes? |
//!                owned_partitions [topic str | partitions [i32]] (v1+) | generation_id i32 (v2+) |
//!                rack_id str? (v3+)
//! assignment   = ConsumerProtocolAssignment: version i16 |
//!                assigned_partitions [topic str | partitions [i32]] | user_data bytes?
//! ```
//!
//! Integers are big-endian. `str` is an `i16` length and UTF-8, `bytes` an `i32` length and
//! the data, `[x]` an `i32` count and the elements; `?` marks a nullable field, whose length
//! is -1 for null. Flexible versions (v4) use Kafka's compact forms instead: an unsigned
//! varint of length + 1 (0 for null) before strings, bytes and arrays, and a tagged-field
//! section after every structure, which is skipped.
//!
//! This module writes the versions Kafka's classic group coordinator writes: offset values v3,
//! group values v3, and the consumer protocol at v2 (subscription and assignment share the
//! version, as Kafka requires). It reads every version Kafka has written.
//!
//! Decoding checks every length against the bytes that remain before using it, so corrupt
//! bytes give an error and never a panic or an allocation on behalf of a bogus length.

use crate::coordinator::protocol::Subscription;
use crate::storage::topic::TopicPartition;
use crate::wire::{self, InternalRecordError, Reader, Writer, encode_with};

/// The internal topic holding committed offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;
/// The consumer protocol version written, for subscriptions and assignments alike.
const CONSUMER_PROTOCOL_VERSION: i16 = 2;
/// The newest consumer protocol version whose layout is known; newer ones only append
/// fields, so Kafka reads them as this one.
const CONSUMER_PROTOCOL_MAX_KNOWN: i16 = 3;
/// The first flexible version of the offset and group values.
const FIRST_FLEXIBLE_VALUE_VERSION: i16 = 4;
/// Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH` and "no generation".
const NONE_I32: i32 = -1;

/// A committed offset: Kafka's `OffsetAndMetadata`. `offset` is the offset of the next record
/// to consume, as in Kafka.
///
/// ```
/// use core_log::OffsetAndMetadata;
///
/// let committed = OffsetAndMetadata::new(42).with_metadata("batch 7 done");
/// assert_eq!(committed.offset, 42);
/// assert_eq!(committed.leader_epoch, None);
/// assert_eq!(committed.metadata, "batch 7 done");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OffsetAndMetadata {
    /// The offset of the next record the group will consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// Free-form text stored with the offset (empty when none was given).
    pub metadata: String,
}

impl OffsetAndMetadata {
    /// `offset`, with no leader epoch and empty metadata.
    pub fn new(offset: i64) -> Self {
        OffsetAndMetadata {
            offset,
            leader_epoch: None,
            metadata: String::new(),
        }
    }

    /// Sets the metadata stored with the offset.
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Sets the leader epoch of the last consumed record.
    pub fn with_leader_epoch(mut self, leader_epoch: i32) -> Self {
        self.leader_epoch = Some(leader_epoch);
        self
    }
}

/// The value of an offset commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    /// What the group committed.
    pub(crate) offset: OffsetAndMetadata,
    /// When the coordinator stored it (ms). Version 1's expire timestamp is not kept: as in
    /// Kafka since 2.1, retention counts from the commit.
    pub(crate) commit_timestamp: i64,
}

/// The value of a group metadata record: the group as its last generation left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupMetadataValue {
    /// `"consumer"` for consumer groups; empty when the group has never had members.
    pub(crate) protocol_type: String,
    /// The generation.
    pub(crate) generation: i32,
    /// The assignor the group chose (e.g. `"range"`), if any.
    pub(crate) protocol: Option<String>,
    /// The leader's member id, if any.
    pub(crate) leader: Option<String>,
    /// When the group last changed state (ms); -1 in records older than version 2.
    pub(crate) current_state_timestamp: i64,
    /// The members.
    pub(crate) members: Vec<MemberMetadata>,
}

/// One member of a [`GroupMetadataValue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberMetadata {
    /// The member id the coordinator gave it.
    pub(crate) member_id: String,
    /// Its `group.instance.id`, for a static member.
    pub(crate) group_instance_id: Option<String>,
    /// Its `client.id`.
    pub(crate) client_id: String,
    /// Where it connected from (empty in process).
    pub(crate) client_host: String,
    /// Its rebalance timeout (`max.poll.interval.ms`); the session timeout in version 0.
    pub(crate) rebalance_timeout_ms: i32,
    /// Its `session.timeout.ms`.
    pub(crate) session_timeout_ms: i32,
    /// Its subscription for the chosen protocol. Its `group_instance_id` is the member's
    /// (the subscription bytes do not hold it).
    pub(crate) subscription: Subscription,
    /// The partitions the leader assigned to it.
    pub(crate) assignment: Vec<TopicPartition>,
}

/// One decoded `__consumer_offsets` record. `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OffsetsRecord {
    /// A committed offset of `group` for `tp`.
    Offset {
        /// The group id.
        group: String,
        /// The partition the offset is for.
        tp: TopicPartition,
        /// The offset, or `None` when deleted.
        value: Option<CommittedOffset>,
    },
    /// The metadata of `group`.
    Group {
        /// The group id.
        group: String,
        /// The metadata, or `None` when the group was deleted.
        value: Option<GroupMetadataValue>,
    },
}

/// Why a `__consumer_offsets` record, subscription or assignment could not be read.
pub(crate) type RecordsError = InternalRecordError;

type Decoded<T> = Result<T, RecordsError>;

/// The `__consumer_offsets` partition of a group: Kafka's `partitionFor`,
/// `Utils.abs(groupId.hashCode()) % partitions`, where `Utils.abs` maps `i32::MIN` to 0. The
/// same group lands in the same partition as in Kafka with the same partition count.
/// `partitions` is at least 1 (the topic exists); 0 gives 0.
pub(crate) fn partition_for_group(group: &str, partitions: u32) -> u32 {
    wire::partition_for(group, partitions)
}

// ---------------------------------------------------------------------------------------
// Encoding

/// The key of the offset `group` committed for `tp`: `OffsetCommitKey`, key version 1.
pub(crate) fn offset_commit_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    encode_with(&|w| {
        w.i16(OFFSET_COMMIT_KEY_VERSION);
        w.string(group);
        w.string(&tp.topic);
        // Ids past i32::MAX come out negative, which decoding refuses rather than misreads.
        w.i32(tp.partition as i32);
    })
}

/// A committed offset: `OffsetCommitValue` version 3.
pub(crate) fn offset_commit_value(v: &CommittedOffset) -> Vec<u8> {
    encode_with(&|w| {
        w.i16(OFFSET_COMMIT_VALUE_VERSION);
        w.i64(v.offset.offset);
        w.i32(v.offset.leader_epoch.unwrap_or(NONE_I32));
        w.string(&v.offset.metadata);
        w.i64(v.commit_timestamp);
    })
}

/// The key of `group`'s metadata: `GroupMetadataKey`, key version 2.
pub(crate) fn group_metadata_key(group: &str) -> Vec<u8> {
    encode_with(&|w| {
        w.i16(GROUP_METADATA_KEY_VERSION);
        w.string(group);
    })
}

/// A group's metadata: `GroupMetadataValue` version 3.
pub(crate) fn group_metadata_value(v: &GroupMetadataValue) -> Vec<u8> {
    encode_with(&|w| {
        w.i16(GROUP_METADATA_VALUE_VERSION);
        w.string(&v.protocol_type);
        w.i32(v.generation);
        w.nullable_string(v.protocol.as_deref());
        w.nullable_string(v.leader.as_deref());
        w.i64(v.current_state_timestamp);
        w.count(Some(v.members.len()));
        for m in &v.members {
            w.string(&m.member_id);
            w.nullable_string(m.group_instance_id.as_deref());
            w.string(&m.client_id);
            w.string(&m.client_host);
            w.i32(m.rebalance_timeout_ms);
            w.i32(m.session_timeout_ms);
            w.nested(&|w| write_subscription(w, &m.subscription));
            w.nested(&|w| write_assignment(w, &m.assignment));
        }
    })
}

fn write_subscription(w: &mut Writer<'_>, s: &Subscription) {
    w.i16(CONSUMER_PROTOCOL_VERSION);
    w.count(Some(s.topics.len()));
    for t in &s.topics {
        w.string(t);
    }
    w.nullable_bytes(s.user_data.as_deref());
    w.topic_partitions(Some(&s.owned_partitions));
    w.i32(s.generation_id.unwrap_or(NONE_I32));
}

fn write_assignment(w: &mut Writer<'_>, partitions: &[TopicPartition]) {
    w.i16(CONSUMER_PROTOCOL_VERSION);
    w.topic_partitions(Some(partitions));
    w.nullable_bytes(None);
}

/// A member's subscription as Kafka's consumer protocol bytes (`ConsumerProtocolSubscription`
/// version 2). Its `group_instance_id` is not part of them.
#[allow(
    dead_code,
    reason = "for the wire protocol; group metadata writes these in place"
)]
pub(crate) fn encode_subscription(s: &Subscription) -> Vec<u8> {
    encode_with(&|w| write_subscription(w, s))
}

/// A member's assignment as Kafka's consumer protocol bytes (`ConsumerProtocolAssignment`
/// version 2, no user data).
#[allow(
    dead_code,
    reason = "for the wire protocol; group metadata writes these in place"
)]
pub(crate) fn encode_assignment(partitions: &[TopicPartition]) -> Vec<u8> {
    encode_with(&|w| write_assignment(w, partitions))
}

// ---------------------------------------------------------------------------------------
// Decoding

/// The error for a version of `r`'s record that cannot be read.
fn unsupported(r: &Reader<'_>, version: i16) -> RecordsError {
    RecordsError::UnsupportedVersion {
        record: r.record,
        version,
    }
}

/// Decodes one `__consumer_offsets` record. Keys of record types this coordinator does not
/// keep give [`RecordsError::UnknownKeyVersion`], whatever their value.
pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Decoded<OffsetsRecord> {
    let mut k = Reader::new(key, "__consumer_offsets key");
    match k.i16()? {
        0 | 1 => {
            k.record = "OffsetCommitKey";
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.partition()?;
            k.finish()?;
            Ok(OffsetsRecord::Offset {
                group,
                tp: TopicPartition::new(topic, partition),
                value: value.map(decode_offset_commit_value).transpose()?,
            })
        }
        2 => {
            k.record = "GroupMetadataKey";
            let group = k.string()?;
            k.finish()?;
            Ok(OffsetsRecord::Group {
                group,
                value: value.map(decode_group_metadata_value).transpose()?,
            })
        }
        version => Err(RecordsError::UnknownKeyVersion {
            topic: OFFSETS_TOPIC,
            version,
        }),
    }
}

fn decode_offset_commit_value(bytes: &[u8]) -> Decoded<CommittedOffset> {
    let mut r = Reader::new(bytes, "OffsetCommitValue");
    let version = r.i16()?;
    if !(0..=FIRST_FLEXIBLE_VALUE_VERSION).contains(&version) {
        return Err(unsupported(&r, version));
    }
    r.flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { NONE_I32 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    if version == 1 {
        let _expire_timestamp = r.i64()?;
    }
    r.skip_tagged_fields()?;
    r.finish()?;
    Ok(CommittedOffset {
        offset: OffsetAndMetadata {
            offset,
            leader_epoch: (leader_epoch != NONE_I32).then_some(leader_epoch),
            metadata,
        },
        commit_timestamp,
    })
}

fn decode_group_metadata_value(bytes: &[u8]) -> Decoded<GroupMetadataValue> {
    let mut r = Reader::new(bytes, "GroupMetadataValue");
    let version = r.i16()?;
    if !(0..=FIRST_FLEXIBLE_VALUE_VERSION).contains(&version) {
        return Err(unsupported(&r, version));
    }
    r.flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    // A member has at least its three strings, two byte fields and session timeout.
    let member_min = 3 * r.min_len(false) + 2 * r.min_len(true) + 4;
    let members = r.vec(member_min, |r| decode_member(r, version))?;
    r.skip_tagged_fields()?;
    r.finish()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

fn decode_member(r: &mut Reader<'_>, version: i16) -> Decoded<MemberMetadata> {
    let member_id = r.string()?;
    let group_instance_id = if version >= 3 {
        r.nullable_string()?
    } else {
        None
    };
    let client_id = r.string()?;
    let client_host = r.string()?;
    let rebalance_timeout = if version >= 1 { Some(r.i32()?) } else { None };
    let session_timeout_ms = r.i32()?;
    let mut subscription = decode_subscription(r.bytes()?)?;
    subscription.group_instance_id = group_instance_id.clone();
    // Kafka stores empty assignment bytes for a member the leader gave nothing to (or before
    // the first sync); its admin client reads them as no partitions, and so does this.
    let assignment = match r.bytes()? {
        [] => Vec::new(),
        bytes => decode_assignment(bytes)?,
    };
    r.skip_tagged_fields()?;
    Ok(MemberMetadata {
        member_id,
        group_instance_id,
        client_id,
        client_host,
        // Version 0 had one timeout for both, as Kafka reads it.
        rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
        session_timeout_ms,
        subscription,
        assignment,
    })
}

/// Reads Kafka's `ConsumerProtocolSubscription`, any version. Versions past the newest known
/// only append fields (Kafka's rule), so they are read as it and the rest is ignored. The
/// rack id of version 3 is not kept, and `group_instance_id` is left `None`.
pub(crate) fn decode_subscription(bytes: &[u8]) -> Decoded<Subscription> {
    let mut r = Reader::new(bytes, "ConsumerProtocolSubscription");
    let version = r.i16()?;
    if version < 0 {
        return Err(unsupported(&r, version));
    }
    let topics = r.vec(2, Reader::string)?;
    let user_data = r.nullable_bytes()?.map(<[u8]>::to_vec);
    let owned_partitions = if version >= 1 {
        r.topic_partitions()?
    } else {
        Vec::new()
    };
    let generation_id = if version >= 2 { r.i32()? } else { NONE_I32 };
    if version >= 3 {
        let _rack_id = r.nullable_string()?;
    }
    if version <= CONSUMER_PROTOCOL_MAX_KNOWN {
        r.finish()?;
    }
    Ok(Subscription {
        topics,
        user_data,
        owned_partitions,
        generation_id: (generation_id != NONE_I32).then_some(generation_id),
        group_instance_id: None,
    })
}

/// Reads Kafka's `ConsumerProtocolAssignment`, any version (all have the same layout; newer
/// ones may append fields). The user data is not kept.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Decoded<Vec<TopicPartition>> {
    let mut r = Reader::new(bytes, "ConsumerProtocolAssignment");
    let version = r.i16()?;
    if version < 0 {
        return Err(unsupported(&r, version));
    }
    let partitions = r.topic_partitions()?;
    let _user_data = r.nullable_bytes()?;
    if version <= CONSUMER_PROTOCOL_MAX_KNOWN {
        r.finish()?;
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_STRING_LEN;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// Concatenates byte pieces, for writing Kafka layouts out by hand.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn kstr(s: &str) -> Vec<u8> {
        let mut v = (s.len() as i16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn sample_member() -> MemberMetadata {
        MemberMetadata {
            member_id: "m".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 0x100,
            session_timeout_ms: 0x200,
            subscription: Subscription {
                topics: vec!["t".into()],
                ..Subscription::default()
            },
            assignment: vec![tp("t", 0)],
        }
    }

    // Golden bytes, written out from Kafka's schemas.

    #[test]
    fn offset_commit_key_matches_kafka_layout() {
        let key = offset_commit_key("g", &tp("t", 1));
        assert_eq!(
            key,
            [
                0x00, 0x01, 0x00, 0x01, 0x67, 0x00, 0x01, 0x74, 0x00, 0x00, 0x00, 0x01
            ]
        );
    }

    #[test]
    fn group_metadata_key_matches_kafka_layout() {
        assert_eq!(group_metadata_key("g"), [0x00, 0x02, 0x00, 0x01, 0x67]);
    }

    #[test]
    fn offset_commit_value_v3_matches_kafka_layout() {
        let v = CommittedOffset {
            offset: OffsetAndMetadata::new(5).with_metadata("m"),
            commit_timestamp: 0x0102,
        };
        let bytes = offset_commit_value(&v);
        #[rustfmt::skip]
        let want = [
            0x00, 0x03,                                     // version
            0, 0, 0, 0, 0, 0, 0, 5,                         // offset
            0xff, 0xff, 0xff, 0xff,                         // leader epoch: none
            0x00, 0x01, b'm',                               // metadata
            0, 0, 0, 0, 0, 0, 0x01, 0x02,                   // commit timestamp
        ];
        assert_eq!(bytes, want);
        let with_epoch = CommittedOffset {
            offset: OffsetAndMetadata::new(5).with_leader_epoch(7),
            commit_timestamp: 0,
        };
        assert_eq!(offset_commit_value(&with_epoch)[10..14], [0, 0, 0, 7]);
    }

    #[test]
    fn group_metadata_value_v3_matches_kafka_layout() {
        let v = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: Some("range".into()),
            leader: Some("m".into()),
            current_state_timestamp: 9,
            members: vec![sample_member()],
        };
        #[rustfmt::skip]
        let subscription: &[u8] = &[
            0x00, 0x02,                                     // version
            0, 0, 0, 1, 0x00, 0x01, b't',                   // topics ["t"]
            0xff, 0xff, 0xff, 0xff,                         // user data: null
            0, 0, 0, 0,                                     // owned partitions []
            0xff, 0xff, 0xff, 0xff,                         // generation id: none
        ];
        #[rustfmt::skip]
        let assignment: &[u8] = &[
            0x00, 0x02,                                     // version
            0, 0, 0, 1, 0x00, 0x01, b't', 0, 0, 0, 1, 0, 0, 0, 0, // [t: [0]]
            0xff, 0xff, 0xff, 0xff,                         // user data: null
        ];
        let want = cat(&[
            &[0x00, 0x03],
            &kstr("consumer"),
            &[0, 0, 0, 1],
            &kstr("range"),
            &kstr("m"),
            &[0, 0, 0, 0, 0, 0, 0, 9],
            &[0, 0, 0, 1],
            &kstr("m"),
            &[0xff, 0xff], // group instance id: null
            &kstr("c"),
            &kstr("h"),
            &[0, 0, 0x01, 0x00],
            &[0, 0, 0x02, 0x00],
            &[0, 0, 0, 21],
            subscription,
            &[0, 0, 0, 21],
            assignment,
        ]);
        assert_eq!(group_metadata_value(&v), want);
        assert_eq!(
            encode_subscription(&v.members[0].subscription),
            subscription
        );
        assert_eq!(encode_assignment(&v.members[0].assignment), assignment);
    }

    #[test]
    fn subscription_v2_matches_kafka_layout() {
        let s = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: Some(vec![0xde, 0xad]),
            owned_partitions: vec![tp("a", 0), tp("a", 2), tp("b", 1)],
            generation_id: Some(4),
            group_instance_id: Some("not in the bytes".into()),
        };
        #[rustfmt::skip]
        let want = [
            0x00, 0x02,
            0, 0, 0, 2, 0x00, 0x01, b'a', 0x00, 0x01, b'b',
            0, 0, 0, 2, 0xde, 0xad,
            0, 0, 0, 2,
                0x00, 0x01, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2,
                0x00, 0x01, b'b', 0, 0, 0, 1, 0, 0, 0, 1,
            0, 0, 0, 4,
        ];
        assert_eq!(encode_subscription(&s), want);
        let back = decode_subscription(&want).unwrap();
        assert_eq!(
            back,
            Subscription {
                group_instance_id: None,
                ..s
            }
        );
    }

    // Older and newer versions Kafka writes.

    #[test]
    fn reads_every_offset_commit_value_version() {
        let key = offset_commit_key("g", &tp("t", 0));
        let v0 = cat(&[
            &[0, 0],
            &7i64.to_be_bytes(),
            &kstr("x"),
            &11i64.to_be_bytes(),
        ]);
        let v1 = cat(&[&[0, 1], &v0[2..], &99i64.to_be_bytes()]);
        let v2 = cat(&[&[0, 2], &v0[2..]]);
        let v3 = cat(&[
            &[0, 3],
            &7i64.to_be_bytes(),
            &3i32.to_be_bytes(),
            &kstr("x"),
            &11i64.to_be_bytes(),
        ]);
        // Flexible: compact string (length + 1 as a varint), then one unknown tagged field.
        let v4 = cat(&[
            &[0, 4],
            &7i64.to_be_bytes(),
            &3i32.to_be_bytes(),
            &[2, b'x'],
            &11i64.to_be_bytes(),
            &[1, 5, 2, 0xaa, 0xbb],
        ]);
        let without_epoch = CommittedOffset {
            offset: OffsetAndMetadata::new(7).with_metadata("x"),
            commit_timestamp: 11,
        };
        let with_epoch = CommittedOffset {
            offset: OffsetAndMetadata::new(7)
                .with_metadata("x")
                .with_leader_epoch(3),
            commit_timestamp: 11,
        };
        for (bytes, want) in [
            (&v0, &without_epoch),
            (&v1, &without_epoch),
            (&v2, &without_epoch),
            (&v3, &with_epoch),
            (&v4, &with_epoch),
        ] {
            let got = decode(&key, Some(bytes)).unwrap();
            assert_eq!(
                got,
                OffsetsRecord::Offset {
                    group: "g".into(),
                    tp: tp("t", 0),
                    value: Some(want.clone())
                },
                "{bytes:02x?}"
            );
        }
        // The legacy key version 0 has the same layout.
        let legacy_key = cat(&[&[0, 0], &key[2..]]);
        assert!(matches!(
            decode(&legacy_key, Some(&v3)),
            Ok(OffsetsRecord::Offset { .. })
        ));
        let v5 = cat(&[&[0, 5], &v3[2..]]);
        assert_eq!(
            decode(&key, Some(&v5)),
            Err(RecordsError::UnsupportedVersion {
                record: "OffsetCommitValue",
                version: 5
            })
        );
    }

    #[test]
    fn reads_group_metadata_v0_and_flexible_v4() {
        let key = group_metadata_key("g");
        let sub = encode_subscription(&Subscription {
            topics: vec!["t".into()],
            ..Subscription::default()
        });
        let asg = encode_assignment(&[tp("t", 0)]);
        // Version 0: no state timestamp, no instance id, no rebalance timeout.
        let v0 = cat(&[
            &[0, 0],
            &kstr("consumer"),
            &[0, 0, 0, 1],
            &kstr("range"),
            &kstr("m"),
            &[0, 0, 0, 1],
            &kstr("m"),
            &kstr("c"),
            &kstr("h"),
            &[0, 0, 0x02, 0x00],
            &(sub.len() as i32).to_be_bytes(),
            &sub,
            &(asg.len() as i32).to_be_bytes(),
            &asg,
        ]);
        let OffsetsRecord::Group {
            value: Some(got), ..
        } = decode(&key, Some(&v0)).unwrap()
        else {
            panic!("not a group record");
        };
        let mut member = sample_member();
        member.rebalance_timeout_ms = member.session_timeout_ms;
        assert_eq!(
            got,
            GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 1,
                protocol: Some("range".into()),
                leader: Some("m".into()),
                current_state_timestamp: -1,
                members: vec![member.clone()],
            }
        );

        // Version 4: compact strings and bytes, null as 0, tagged fields after each struct.
        let compact = |s: &[u8]| cat(&[&[s.len() as u8 + 1], s]);
        let v4 = cat(&[
            &[0, 4],
            &compact(b"consumer"),
            &[0, 0, 0, 1],
            &compact(b"range"),
            &[0], // leader: null
            &9i64.to_be_bytes(),
            &[2], // one member
            &compact(b"m"),
            &compact(b"static-1"),
            &compact(b"c"),
            &compact(b"h"),
            &[0, 0, 0x01, 0x00],
            &[0, 0, 0x02, 0x00],
            &compact(&sub),
            &compact(&asg),
            &[0],          // member: no tagged fields
            &[1, 0, 1, 7], // value: one tagged field
        ]);
        let OffsetsRecord::Group {
            value: Some(got), ..
        } = decode(&key, Some(&v4)).unwrap()
        else {
            panic!("not a group record");
        };
        let mut member = sample_member();
        member.group_instance_id = Some("static-1".into());
        member.subscription.group_instance_id = Some("static-1".into());
        assert_eq!(
            got,
            GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 1,
                protocol: Some("range".into()),
                leader: None,
                current_state_timestamp: 9,
                members: vec![member],
            }
        );
    }

    #[test]
    fn empty_assignment_bytes_are_no_partitions() {
        let mut v = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m".into()),
            current_state_timestamp: 0,
            members: vec![sample_member()],
        };
        let bytes = group_metadata_value(&v);
        // Replace the assignment (the last field) with zero-length bytes.
        let asg_len = encode_assignment(&v.members[0].assignment).len();
        let cut = bytes.len() - asg_len - 4;
        let patched = cat(&[&bytes[..cut], &[0, 0, 0, 0]]);
        v.members[0].assignment.clear();
        assert_eq!(
            decode(&group_metadata_key("g"), Some(&patched)).unwrap(),
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(v)
            }
        );
        // The consumer protocol itself refuses empty bytes.
        assert!(decode_assignment(&[]).is_err());
    }

    #[test]
    fn reads_every_consumer_protocol_version() {
        let topics = cat(&[&[0, 0, 0, 1], &kstr("t")]);
        let owned = cat(&[&[0, 0, 0, 1], &kstr("t"), &[0, 0, 0, 1, 0, 0, 0, 3]]);
        let v0 = cat(&[&[0, 0], &topics, &[0, 0, 0, 1, 0x55]]);
        let v1 = cat(&[&[0, 1], &topics, &[0, 0, 0, 1, 0x55], &owned]);
        let v2 = cat(&[&v1[..], &[0, 0, 0, 6]]);
        let v2 = cat(&[&[0, 2], &v2[2..]]);
        let v3 = cat(&[&[0, 3], &v2[2..], &kstr("rack-a")]);
        let v9 = cat(&[&[0, 9], &v3[2..], &[0xaa, 0xbb]]);
        let base = Subscription {
            topics: vec!["t".into()],
            user_data: Some(vec![0x55]),
            ..Subscription::default()
        };
        assert_eq!(decode_subscription(&v0).unwrap(), base);
        let owned_base = Subscription {
            owned_partitions: vec![tp("t", 3)],
            ..base
        };
        assert_eq!(decode_subscription(&v1).unwrap(), owned_base);
        let with_generation = Subscription {
            generation_id: Some(6),
            ..owned_base
        };
        assert_eq!(decode_subscription(&v2).unwrap(), with_generation);
        assert_eq!(decode_subscription(&v3).unwrap(), with_generation);
        // A newer version is read as the newest known; what it appends is ignored.
        assert_eq!(decode_subscription(&v9).unwrap(), with_generation);
        // A known version with extra bytes is corrupt.
        assert!(decode_subscription(&cat(&[&v2, &[0]])).is_err());
        assert!(decode_subscription(&cat(&[&[0xff, 0xff], &v2[2..]])).is_err());

        // Assignments have one layout in every version.
        let body = cat(&[&owned, &[0xff, 0xff, 0xff, 0xff]]);
        for version in 0..=3u8 {
            let bytes = cat(&[&[0, version], &body]);
            assert_eq!(decode_assignment(&bytes).unwrap(), vec![tp("t", 3)]);
        }
        assert_eq!(
            decode_assignment(&cat(&[&[0, 7], &body, &[1, 2, 3]])).unwrap(),
            vec![tp("t", 3)]
        );
    }

    #[test]
    fn unknown_record_types_are_not_corruption() {
        for version in [3i16, 4, 11, 100, -1] {
            let key = cat(&[&version.to_be_bytes(), &kstr("g")]);
            for value in [None, Some(&b"whatever"[..])] {
                let err = decode(&key, value).unwrap_err();
                assert!(err.is_unknown_key_version(), "{version}: {err}");
            }
        }
        let corrupt = decode(&[0, 2, 0, 5, b'g'], None).unwrap_err();
        assert!(!corrupt.is_unknown_key_version());
        assert_eq!(corrupt.to_string(), "corrupt GroupMetadataKey: truncated");
    }

    #[test]
    fn tombstones_decode_to_none() {
        assert_eq!(
            decode(&offset_commit_key("g", &tp("t", 2)), None).unwrap(),
            OffsetsRecord::Offset {
                group: "g".into(),
                tp: tp("t", 2),
                value: None
            }
        );
        assert_eq!(
            decode(&group_metadata_key("g"), None).unwrap(),
            OffsetsRecord::Group {
                group: "g".into(),
                value: None
            }
        );
    }

    #[test]
    fn bad_lengths_are_errors_not_allocations() {
        // A subscription claiming i32::MAX topics in 10 bytes.
        let huge = cat(&[&[0, 2], &i32::MAX.to_be_bytes(), &[0, 1, b't', 0]]);
        assert!(decode_subscription(&huge).is_err());
        // A negative length that is not -1.
        let negative = cat(&[&[0, 1], &(-2i16).to_be_bytes()]);
        assert!(decode(&negative, None).is_err());
        // A null string where Kafka's schema has none.
        let null_group = cat(&[&[0, 2], &(-1i16).to_be_bytes()]);
        assert!(decode(&null_group, None).is_err());
        // A negative partition.
        let key = cat(&[&[0, 1], &kstr("g"), &kstr("t"), &(-1i32).to_be_bytes()]);
        assert!(decode(&key, None).is_err());
        // Invalid UTF-8.
        assert!(decode(&[0, 2, 0, 1, 0xff], None).is_err());
        // A varint running past 32 bits in a flexible value.
        let v4 = cat(&[&[0, 4], &[0; 12], &[0xff, 0xff, 0xff, 0xff, 0x7f]]);
        assert!(decode(&offset_commit_key("g", &tp("t", 0)), Some(&v4)).is_err());
    }

    #[test]
    fn overlong_strings_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(MAX_STRING_LEN); // two bytes each
        let key = group_metadata_key(&long);
        let OffsetsRecord::Group { group, .. } = decode(&key, None).unwrap() else {
            panic!("not a group record");
        };
        assert_eq!(group.len(), MAX_STRING_LEN - 1);
        assert!(long.starts_with(&group));
    }

    #[test]
    fn partition_for_group_matches_kafka() {
        // Negative hashes: Kafka puts "my-group" in partition 12 of the default 50.
        assert_eq!(partition_for_group("my-group", 50), 12);
        assert_eq!(partition_for_group("kafka-txn-0", 50), 30);
        assert_eq!(partition_for_group("like-count", 50), 19);
        // Utils.abs(Integer.MIN_VALUE) is 0, not a negative number.
        assert_eq!(partition_for_group("polygenelubricants", 50), 0);
        assert_eq!(partition_for_group("a", 1), 0);
        assert_eq!(partition_for_group("a", 0), 0);
    }

    // Round trips and robustness on random input.

    fn name() -> impl Strategy<Value = String> {
        "[a-z\u{e9}\u{1F600}.-]{0,10}"
    }

    fn partitions() -> impl Strategy<Value = Vec<TopicPartition>> {
        proptest::collection::vec(("[ab]{1,2}", 0..=i32::MAX as u32), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .collect()
        })
    }

    fn subscription() -> impl Strategy<Value = Subscription> {
        (
            proptest::collection::vec(name(), 0..4),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            partitions(),
            proptest::option::of(0..=i32::MAX),
        )
            .prop_map(|(topics, user_data, owned_partitions, generation_id)| {
                Subscription {
                    topics,
                    user_data,
                    owned_partitions,
                    generation_id,
                    group_instance_id: None,
                }
            })
    }

    fn member() -> impl Strategy<Value = MemberMetadata> {
        (
            (name(), proptest::option::of(name()), name(), name()),
            (any::<i32>(), any::<i32>()),
            subscription(),
            partitions(),
        )
            .prop_map(
                |(
                    (member_id, group_instance_id, client_id, client_host),
                    (rebalance_timeout_ms, session_timeout_ms),
                    mut subscription,
                    assignment,
                )| {
                    subscription.group_instance_id = group_instance_id.clone();
                    MemberMetadata {
                        member_id,
                        group_instance_id,
                        client_id,
                        client_host,
                        rebalance_timeout_ms,
                        session_timeout_ms,
                        subscription,
                        assignment,
                    }
                },
            )
    }

    fn group_value() -> impl Strategy<Value = GroupMetadataValue> {
        (
            name(),
            any::<i32>(),
            proptest::option::of(name()),
            proptest::option::of(name()),
            any::<i64>(),
            proptest::collection::vec(member(), 0..4),
        )
            .prop_map(
                |(
                    protocol_type,
                    generation,
                    protocol,
                    leader,
                    current_state_timestamp,
                    members,
                )| {
                    GroupMetadataValue {
                        protocol_type,
                        generation,
                        protocol,
                        leader,
                        current_state_timestamp,
                        members,
                    }
                },
            )
    }

    fn committed() -> impl Strategy<Value = CommittedOffset> {
        (
            any::<i64>(),
            proptest::option::of(0..=i32::MAX),
            name(),
            any::<i64>(),
        )
            .prop_map(|(offset, leader_epoch, metadata, commit_timestamp)| {
                CommittedOffset {
                    offset: OffsetAndMetadata {
                        offset,
                        leader_epoch,
                        metadata,
                    },
                    commit_timestamp,
                }
            })
    }

    /// Every proper prefix of `bytes` fails `decode`.
    fn every_truncation_fails<T: std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<(), TestCaseError> {
        for len in 0..bytes.len() {
            let got = decode(&bytes[..len]);
            prop_assert!(
                matches!(got, Err(RecordsError::Corrupt { .. })),
                "prefix {len}/{}: {got:?}",
                bytes.len()
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn offset_commit_round_trips(group in name(), topic in name(), partition in 0..=i32::MAX as u32, v in committed()) {
            let tp = TopicPartition::new(topic, partition);
            let key = offset_commit_key(&group, &tp);
            let value = offset_commit_value(&v);
            prop_assert_eq!(key.capacity(), key.len());
            prop_assert_eq!(value.capacity(), value.len());
            let want = OffsetsRecord::Offset { group: group.clone(), tp: tp.clone(), value: Some(v) };
            prop_assert_eq!(decode(&key, Some(&value))?, want);
            let tombstone = OffsetsRecord::Offset { group, tp, value: None };
            prop_assert_eq!(decode(&key, None)?, tombstone);
            every_truncation_fails(&value, |b| decode(&key, Some(b)))?;
            every_truncation_fails(&key, |k| decode(k, None))?;
        }

        #[test]
        fn group_metadata_round_trips(group in name(), v in group_value()) {
            let key = group_metadata_key(&group);
            let value = group_metadata_value(&v);
            prop_assert_eq!(value.capacity(), value.len());
            let want = OffsetsRecord::Group { group: group.clone(), value: Some(v) };
            prop_assert_eq!(decode(&key, Some(&value))?, want);
            prop_assert_eq!(decode(&key, None)?, OffsetsRecord::Group { group, value: None });
            every_truncation_fails(&value, |b| decode(&key, Some(b)))?;
            every_truncation_fails(&key, |k| decode(k, None))?;
        }

        #[test]
        fn subscription_round_trips(s in subscription()) {
            let bytes = encode_subscription(&s);
            prop_assert_eq!(bytes.capacity(), bytes.len());
            prop_assert_eq!(decode_subscription(&bytes)?, s);
            every_truncation_fails(&bytes, decode_subscription)?;
        }

        #[test]
        fn assignment_round_trips(partitions in partitions()) {
            let bytes = encode_assignment(&partitions);
            prop_assert_eq!(decode_assignment(&bytes)?, partitions);
            every_truncation_fails(&bytes, decode_assignment)?;
        }

        /// Any bytes at all give a record or an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let _ = decode(&key, value.as_deref());
            if let Some(v) = &value {
                let _ = decode_subscription(v);
                let _ = decode_assignment(v);
            }
        }

        /// Random bodies behind valid keys and value versions reach the field decoders.
        #[test]
        fn decoding_arbitrary_values_never_panics(
            offset_key in any::<bool>(),
            version in 0i16..=5,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let key = if offset_key { offset_commit_key("g", &TopicPartition::new("t", 0)) } else { group_metadata_key("g") };
            let value = cat(&[&version.to_be_bytes(), &body]);
            let _ = decode(&key, Some(&value));
            let _ = decode_subscription(&value);
            let _ = decode_assignment(&value);
        }
    }
}
