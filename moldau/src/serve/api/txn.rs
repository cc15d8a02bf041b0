//! The transactional producer's requests to its transaction coordinator: AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn and TxnOffsetCommit, driving the log's transaction coordinator
//! (`Broker::add_partitions_to_txn`, ...), the one embedded transactional producers use. The
//! coordinator writes the commit or abort markers before EndTxn returns, so a read_committed
//! fetch after the response sees the outcome.
//!
//! These versions are transaction protocol version 1: the producer keeps its epoch from one
//! transaction to the next (the embedded producer, on version 2, gets a new one at every end),
//! so EndTxn asks the coordinator to keep it ([`EpochAtEnd::Keep`]). As with Kafka's version 1,
//! a client's EndTxn retried after its next transaction began would end that one.

use core_log::{Broker, EpochAtEnd, MemberRef, ProducerIdentity, TopicPartition, TxnRef};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};

use super::Apis;
use crate::serve::error_code::error_code;

fn broker(apis: &Apis) -> &Broker {
    apis.log().as_ref()
}

/// The code every partition of a request gets: `code`, or UNKNOWN_TOPIC_OR_PARTITION for a
/// negative index (left out of the request to the coordinator).
fn partition_code(index: i32, code: i16) -> i16 {
    if index < 0 {
        ResponseError::UnknownTopicOrPartition.code()
    } else {
        code
    }
}

/// AddPartitionsToTxn, v0–v3 (a client's request; v4+ is the brokers' batched form). The
/// partitions join the transaction together or not at all.
pub fn add_partitions(apis: &Apis, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let who = TxnRef {
        transactional_id: &req.v3_and_below_transactional_id,
        producer_id: req.v3_and_below_producer_id.0,
        epoch: req.v3_and_below_producer_epoch,
    };
    let partitions: Vec<TopicPartition> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter_map(|&p| u32::try_from(p).ok())
                .map(|p| TopicPartition::new(t.name.to_string(), p))
        })
        .collect();
    let code = match broker(apis).add_partitions_to_txn(who, &partitions) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(error = %e, "AddPartitionsToTxn refused");
            error_code(&e)
        }
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(partition_code(p, code))
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn, v0–v3: the group's offsets (sent next with TxnOffsetCommit) commit with
/// the transaction.
pub fn add_offsets(apis: &Apis, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let who = TxnRef {
        transactional_id: &req.transactional_id,
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    match broker(apis).add_offsets_to_txn(who, &req.group_id) {
        Ok(()) => AddOffsetsToTxnResponse::default(),
        Err(e) => {
            tracing::debug!(error = %e, "AddOffsetsToTxn refused");
            AddOffsetsToTxnResponse::default().with_error_code(error_code(&e))
        }
    }
}

/// EndTxn, v0–v3: commits or aborts, markers written before the answer; the producer keeps
/// its epoch.
pub fn end(apis: &Apis, req: EndTxnRequest) -> EndTxnResponse {
    let who = TxnRef {
        transactional_id: &req.transactional_id,
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    match broker(apis).end_txn_with(who, req.committed, EpochAtEnd::Keep) {
        Ok(_) => EndTxnResponse::default(),
        Err(e) => {
            tracing::debug!(error = %e, "EndTxn refused");
            EndTxnResponse::default().with_error_code(error_code(&e))
        }
    }
}

/// TxnOffsetCommit, v0–v3: offsets that apply when the producer's transaction commits (v3:
/// only from a member of the group's current generation, KIP-447).
pub fn offset_commit(
    apis: &Apis,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let who = MemberRef {
        group_id: &req.group_id,
        generation: if version >= 3 { req.generation_id } else { -1 },
        member_id: if version >= 3 { &req.member_id } else { "" },
        group_instance_id: req.group_instance_id.as_deref(),
    };
    let producer = ProducerIdentity {
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
    };
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            if let Ok(partition) = u32::try_from(p.partition_index) {
                offsets.push((
                    TopicPartition::new(t.name.to_string(), partition),
                    super::offsets::committed(
                        p.committed_offset,
                        (version >= 2).then_some(p.committed_leader_epoch),
                        p.committed_metadata.as_deref(),
                    ),
                ));
            }
        }
    }
    let code = match broker(apis).txn_offset_commit(who, producer, &offsets) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(error = %e, "TxnOffsetCommit refused");
            error_code(&e)
        }
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(partition_code(p.partition_index, code))
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
