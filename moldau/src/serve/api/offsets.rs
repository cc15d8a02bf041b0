//! OffsetCommit and OffsetFetch: a group's committed offsets, in the log's
//! `__consumer_offsets` (`Broker::offset_commit`, `Broker::offset_fetch`).

use std::collections::BTreeMap;

use core_log::{Broker, Error, MemberRef, OffsetAndMetadata, TopicPartition};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Apis;
use crate::serve::error_code::error_code;

fn broker(apis: &Apis) -> &Broker {
    apis.log().as_ref()
}

/// OffsetCommit, v2–v8. The commit is one write: every partition gets its outcome.
pub fn commit(apis: &Apis, req: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let who = MemberRef {
        group_id: &req.group_id,
        generation: req.generation_id_or_member_epoch,
        member_id: &req.member_id,
        group_instance_id: req.group_instance_id.as_deref(),
    };
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            if let Ok(partition) = u32::try_from(p.partition_index) {
                offsets.push((
                    TopicPartition::new(t.name.to_string(), partition),
                    committed(
                        p.committed_offset,
                        (version >= 6).then_some(p.committed_leader_epoch),
                        p.committed_metadata.as_deref(),
                    ),
                ));
            }
        }
    }
    let code = match broker(apis).offset_commit(who, &offsets) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(group = &**req.group_id, error = %e, "offset commit refused");
            error_code(&e)
        }
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(if p.partition_index < 0 {
                                    ResponseError::UnknownTopicOrPartition.code()
                                } else {
                                    code
                                })
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch, v1–v7: the committed offsets of the partitions asked for (v2+: of all, when
/// none are named), -1 where none is committed; with `require_stable` (v7), partitions an open
/// transaction is about to commit get UNSTABLE_OFFSET_COMMIT.
pub fn fetch(apis: &Apis, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let group: &str = &req.group_id;
    let asked: Option<Vec<TopicPartition>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .filter_map(|&p| u32::try_from(p).ok())
                    .map(|p| TopicPartition::new(t.name.to_string(), p))
            })
            .collect()
    });
    let found: Result<
        (
            Vec<TopicPartition>,
            BTreeMap<TopicPartition, OffsetAndMetadata>,
        ),
        Error,
    > = match &asked {
        Some(partitions) if version >= 7 && req.require_stable => broker(apis)
            .offset_fetch_stable(group, partitions)
            .map(|(unstable, offsets)| (unstable.into_iter().collect(), offsets)),
        Some(partitions) => broker(apis)
            .offset_fetch(group, Some(partitions))
            .map(|o| (Vec::new(), o)),
        None => broker(apis)
            .offset_fetch(group, None)
            .map(|o| (Vec::new(), o)),
    };
    let (unstable, offsets) = match found {
        Ok(found) => found,
        Err(e) => {
            let res = OffsetFetchResponse::default();
            return if version >= 2 {
                res.with_error_code(error_code(&e))
            } else {
                res
            };
        }
    };
    let partitions: Vec<TopicPartition> = match asked {
        Some(p) => p,
        None => offsets.keys().cloned().collect(),
    };
    let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
    for tp in partitions {
        let mut p = OffsetFetchResponsePartition::default()
            .with_partition_index(tp.partition as i32)
            .with_committed_offset(-1);
        if unstable.contains(&tp) {
            p = p.with_error_code(ResponseError::UnstableOffsetCommit.code());
        } else if let Some(o) = offsets.get(&tp) {
            p = p
                .with_committed_offset(o.offset)
                .with_metadata(Some(StrBytes::from_string(o.metadata.clone())));
            if version >= 5 {
                p = p.with_committed_leader_epoch(o.leader_epoch.unwrap_or(-1));
            }
        }
        by_topic.entry(tp.topic).or_default().push(p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// An offset as OffsetCommit and TxnOffsetCommit carry it: a leader epoch of -1 (or one the
/// request's version has no field for) is none; no metadata is the empty string.
pub fn committed(
    offset: i64,
    leader_epoch: Option<i32>,
    metadata: Option<&str>,
) -> OffsetAndMetadata {
    OffsetAndMetadata {
        offset,
        leader_epoch: leader_epoch.filter(|&e| e >= 0),
        metadata: metadata.unwrap_or_default().to_string(),
    }
}
