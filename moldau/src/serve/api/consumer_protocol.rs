//! The consumer protocol: what consumers put in JoinGroup's member metadata (their
//! subscription) and in SyncGroup's assignments, as bytes the broker forwards. Kafka's broker
//! never reads them; the group coordinator here keeps subscriptions and assignments as
//! values (so that `DescribeGroups`, lag and the embedded consumers work on them), so they are
//! decoded on the way in and encoded on the way out, with kafka-protocol's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`.
//!
//! ```text
//!   | version: i16 | ConsumerProtocolSubscription or ConsumerProtocolAssignment at that version |
//! ```
//!
//! A version newer than the codec knows is read as the newest it knows (Kafka's rule: newer
//! versions only add fields at the end).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use core_log::{Subscription, TopicPartition};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The newest consumer protocol version the codec knows.
const MAX_VERSION: i16 = 3;

/// Bytes that are not a consumer protocol message.
#[derive(Debug, thiserror::Error)]
#[error("malformed consumer protocol {what}")]
pub struct MalformedConsumerProtocol {
    what: &'static str,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn version(bytes: &mut Bytes, what: &'static str) -> Result<i16, MalformedConsumerProtocol> {
    if bytes.remaining() < 2 {
        return Err(MalformedConsumerProtocol { what, source: None });
    }
    let v = bytes.get_i16();
    if v < 0 {
        return Err(MalformedConsumerProtocol { what, source: None });
    }
    Ok(v.min(MAX_VERSION))
}

/// A member's subscription from its JoinGroup metadata.
pub fn decode_subscription(
    metadata: &Bytes,
    group_instance_id: Option<&str>,
) -> Result<Subscription, MalformedConsumerProtocol> {
    let mut bytes = metadata.clone();
    let v = version(&mut bytes, "subscription")?;
    let s = ConsumerProtocolSubscription::decode(&mut bytes, v).map_err(|e| {
        MalformedConsumerProtocol {
            what: "subscription",
            source: Some(e.into()),
        }
    })?;
    let mut topics: Vec<String> = s.topics.iter().map(|t| t.to_string()).collect();
    topics.sort();
    topics.dedup();
    Ok(Subscription {
        topics,
        user_data: s.user_data.map(|d| d.to_vec()),
        owned_partitions: flatten(s.owned_partitions.iter().map(|t| (&t.topic, &t.partitions))),
        generation_id: (v >= 2 && s.generation_id >= 0).then_some(s.generation_id),
        group_instance_id: group_instance_id.map(str::to_string),
    })
}

/// JoinGroup metadata for a subscription (v1, or v2 when it has a generation).
pub fn encode_subscription(s: &Subscription) -> Bytes {
    let v = if s.generation_id.is_some() { 2 } else { 1 };
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(
            s.topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_user_data(s.user_data.clone().map(Bytes::from))
        .with_owned_partitions(
            group(&s.owned_partitions)
                .into_iter()
                .map(|(topic, partitions)| {
                    OwnedTopic::default()
                        .with_topic(topic)
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_generation_id(s.generation_id.unwrap_or(-1));
    encode(v, &msg)
}

/// A member's partitions from the leader's SyncGroup assignment.
pub fn decode_assignment(
    assignment: &Bytes,
) -> Result<Vec<TopicPartition>, MalformedConsumerProtocol> {
    // An empty assignment is a member with nothing assigned (Kafka's clients send it so).
    if assignment.is_empty() {
        return Ok(Vec::new());
    }
    let mut bytes = assignment.clone();
    let v = version(&mut bytes, "assignment")?;
    let a = ConsumerProtocolAssignment::decode(&mut bytes, v).map_err(|e| {
        MalformedConsumerProtocol {
            what: "assignment",
            source: Some(e.into()),
        }
    })?;
    Ok(flatten(
        a.assigned_partitions
            .iter()
            .map(|t| (&t.topic, &t.partitions)),
    ))
}

/// SyncGroup's assignment bytes for `partitions` (v0).
pub fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(
        group(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(topic)
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode(0, &msg)
}

fn encode(version: i16, msg: &impl Encodable) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Every field set is valid at this version: encoding cannot fail.
    if let Err(e) = msg.encode(&mut buf, version) {
        tracing::error!(error = %e, "encoding a consumer protocol message failed");
    }
    buf.freeze()
}

fn flatten<'a>(topics: impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>) -> Vec<TopicPartition> {
    let mut out = Vec::new();
    for (topic, partitions) in topics {
        for &p in partitions {
            if let Ok(p) = u32::try_from(p) {
                out.push(TopicPartition::new(topic.to_string(), p));
            }
        }
    }
    out
}

fn group(partitions: &[TopicPartition]) -> Vec<(TopicName, Vec<i32>)> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for tp in partitions {
        by_topic
            .entry(&tp.topic)
            .or_default()
            .push(i32::try_from(tp.partition).unwrap_or(i32::MAX));
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| (TopicName(StrBytes::from_string(t.to_string())), ps))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let s = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: Some(vec![1, 2, 3]),
            owned_partitions: vec![TopicPartition::new("a", 0), TopicPartition::new("a", 2)],
            generation_id: Some(4),
            group_instance_id: Some("i".into()),
        };
        assert_eq!(
            decode_subscription(&encode_subscription(&s), Some("i")).unwrap(),
            s
        );
        let parts = vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)];
        assert_eq!(
            decode_assignment(&encode_assignment(&parts)).unwrap(),
            parts
        );
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
        assert!(decode_subscription(&Bytes::from_static(&[0]), None).is_err());
        assert!(
            decode_subscription(&Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None)
                .is_err()
        );
    }
}
