//! CreateTopics, DeleteTopics and CreatePartitions: the admin client's topic requests.
//!
//! One broker holds every partition: a replication factor above 1, or a replica assignment
//! naming another broker, is refused (INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT).
//! Topic configs use Kafka's names (`cleanup.policy`, `retention.ms`, ...) and are checked by
//! the log before anything is created.

use std::collections::HashSet;

use core_log::{Error, TopicConfig, is_internal_topic, validate_topic_name};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Apis, NODE_ID};
use crate::serve::error_code::error_code;

/// A refusal: Kafka's code and a message for the client.
type Refusal = (i16, String);

fn refusal(e: &Error) -> Refusal {
    (error_code(e), e.to_string())
}

/// Only this broker may hold replicas.
fn only_this_broker(ids: &[BrokerId]) -> bool {
    ids.len() == 1 && ids[0] == NODE_ID
}

/// CreateTopics, v2–v7.
pub fn create(apis: &Apis, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<TopicName> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.clone()))
        .map(|t| t.name.clone())
        .collect();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let outcome = if duplicates.contains(&name) {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "the topic is named more than once in the request".to_string(),
                ))
            } else {
                create_one(apis, t, req.validate_only)
            };
            let res = CreatableTopicResult::default().with_name(name);
            match outcome {
                Ok(partitions) if version >= 5 => res
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(1),
                Ok(_) => res,
                Err((code, message)) => res
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Creates one topic (or, with `validate_only`, checks that it could be): its partition count.
fn create_one(apis: &Apis, t: CreatableTopic, validate_only: bool) -> Result<u32, Refusal> {
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!(
                "replication factor {} is more than the 1 broker there is",
                t.replication_factor
            ),
        ));
    }
    let partitions = if t.assignments.is_empty() {
        match t.num_partitions {
            -1 => apis.config().num_partitions,
            n => u32::try_from(n).ok().filter(|&n| n > 0).ok_or((
                ResponseError::InvalidPartitions.code(),
                format!("{n} partitions: at least 1 is needed"),
            ))?,
        }
    } else {
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        let consecutive = indexes
            .iter()
            .enumerate()
            .all(|(i, &p)| i64::from(p) == i as i64);
        if t.num_partitions != -1
            || !consecutive
            || !t
                .assignments
                .iter()
                .all(|a| only_this_broker(&a.broker_ids))
        {
            return Err((
                ResponseError::InvalidReplicaAssignment.code(),
                format!("a replica assignment may only name partitions 0.. on broker {NODE_ID}"),
            ));
        }
        t.assignments.len() as u32
    };
    let mut config = TopicConfig::default();
    for c in &t.configs {
        if let Some(value) = &c.value {
            config = config.set(&c.name, value).map_err(|e| refusal(&e))?;
        }
    }
    if is_internal_topic(&t.name) {
        return Err((
            ResponseError::InvalidTopicException.code(),
            format!(
                "{} is an internal topic, which the log creates itself",
                &*t.name
            ),
        ));
    }
    if validate_only {
        validate_topic_name(&t.name).map_err(|e| refusal(&e))?;
        config.validate().map_err(|e| refusal(&e))?;
        if apis.log().partition_count(&t.name).is_ok() {
            return Err(refusal(&Error::TopicAlreadyExists {
                topic: t.name.to_string(),
            }));
        }
        return Ok(partitions);
    }
    apis.log()
        .create_topic(&t.name, partitions, config)
        .map_err(|e| refusal(&e))?;
    tracing::info!(topic = &**t.name, partitions, "created topic");
    Ok(partitions)
}

/// DeleteTopics, v1–v6 (by name; v6's topic ids are unknown to the log).
pub fn delete(apis: &Apis, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let responses = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => delete_one(apis, name, version),
                None => DeletableTopicResult::default()
                    .with_topic_id(t.topic_id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            })
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|name| delete_one(apis, name, version))
            .collect()
    };
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete_one(apis: &Apis, name: TopicName, version: i16) -> DeletableTopicResult {
    let outcome = if is_internal_topic(&name) {
        Err((
            ResponseError::InvalidTopicException.code(),
            "internal topics cannot be deleted".to_string(),
        ))
    } else {
        apis.log().delete_topic(&name).map_err(|e| refusal(&e))
    };
    let res = DeletableTopicResult::default().with_name(Some(name.clone()));
    match outcome {
        Ok(()) => {
            tracing::info!(topic = &**name, "deleted topic");
            res
        }
        // The message is a v5+ field.
        Err((code, message)) if version >= 5 => res
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
        Err((code, _)) => res.with_error_code(code),
    }
}

/// CreatePartitions, v0–v3: grows a topic to `count` partitions.
pub fn create_partitions(apis: &Apis, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let outcome = grow(
                apis,
                &t.name,
                t.count,
                t.assignments.as_deref(),
                req.validate_only,
            );
            let res = CreatePartitionsTopicResult::default().with_name(t.name);
            match outcome {
                Ok(()) => res,
                Err((code, message)) => res
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

fn grow(
    apis: &Apis,
    name: &str,
    count: i32,
    assignments: Option<&[CreatePartitionsAssignment]>,
    validate_only: bool,
) -> Result<(), Refusal> {
    if assignments.is_some_and(|a| !a.iter().all(|a| only_this_broker(&a.broker_ids))) {
        return Err((
            ResponseError::InvalidReplicaAssignment.code(),
            format!("new partitions can only be on broker {NODE_ID}"),
        ));
    }
    let current = apis.log().partition_count(name).map_err(|e| refusal(&e))?;
    let total = u32::try_from(count).unwrap_or(0);
    if validate_only {
        return if total > current {
            Ok(())
        } else {
            Err(refusal(&Error::InvalidPartitions {
                topic: name.to_string(),
                current,
                requested: total,
            }))
        };
    }
    apis.log()
        .create_partitions(name, total)
        .map_err(|e| refusal(&e))?;
    tracing::info!(topic = name, partitions = total, "added partitions");
    Ok(())
}
