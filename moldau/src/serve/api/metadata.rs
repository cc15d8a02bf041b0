//! Metadata: the brokers (this one), and each topic's partitions with their leader (this
//! one). A client asking for a topic that does not exist creates it when it allows it and the
//! server's `auto.create.topics.enable` is on (Kafka's default), with `num.partitions`.

use core_log::{Error, TopicConfig, is_internal_topic};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Apis, NODE_ID, authorized_operations};
use crate::serve::error_code::error_code;

/// The cluster id clients see (v2+).
pub const CLUSTER_ID: &str = "moldau";

/// What a client may do with a topic, as Kafka's authorized-operations bit field (bit `i` for
/// `AclOperation` code `i`): there are no ACLs, so everything a topic allows: READ (3), WRITE
/// (4), CREATE (5), DELETE (6), ALTER (7), DESCRIBE (8), DESCRIBE_CONFIGS (10), ALTER_CONFIGS
/// (11).
const TOPIC_OPERATIONS: i32 = authorized_operations(&[3, 4, 5, 6, 7, 8, 10, 11]);

/// The same for the cluster: CREATE (5), ALTER (7), DESCRIBE (8), CLUSTER_ACTION (9),
/// DESCRIBE_CONFIGS (10), ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12).
const CLUSTER_OPERATIONS: i32 = authorized_operations(&[5, 7, 8, 9, 10, 11, 12]);

/// Metadata, v0–v12.
pub fn handle(apis: &Apis, req: MetadataRequest, version: i16) -> MetadataResponse {
    let log = apis.log();
    // v0: an empty list means every topic; v1+: null does, and empty means none. Before v4
    // a request always allows auto-creation.
    let allow_create =
        apis.config().auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut topics: Vec<MetadataResponseTopic> = match req.topics {
        None => log
            .topics()
            .into_iter()
            .map(|name| describe(apis, &name))
            .collect(),
        Some(t) if t.is_empty() && version == 0 => log
            .topics()
            .into_iter()
            .map(|name| describe(apis, &name))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|t| match t.name {
                Some(name) => {
                    if allow_create
                        && matches!(
                            log.partition_count(&name),
                            Err(Error::UnknownTopicOrPartition { .. })
                        )
                    {
                        auto_create(apis, &name)
                    } else {
                        describe(apis, &name)
                    }
                }
                // v10+ may name a topic by id; the log has no topic ids.
                None => MetadataResponseTopic::default()
                    .with_topic_id(t.topic_id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            })
            .collect(),
    };
    // Asked for (v8+), the operations each topic and the cluster allow; else Kafka's "not
    // asked" value (the default).
    if version >= 8 && req.include_topic_authorized_operations {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            t.topic_authorized_operations = TOPIC_OPERATIONS;
        }
    }
    let mut res = MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(NODE_ID.into())
                .with_host(StrBytes::from_string(apis.config().advertised_host.clone()))
                .with_port(i32::from(apis.config().advertised_port)),
        ])
        .with_topics(topics);
    if version >= 1 {
        res = res.with_controller_id(NODE_ID.into());
    }
    if version >= 2 {
        res = res.with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)));
    }
    if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        res = res.with_cluster_authorized_operations(CLUSTER_OPERATIONS);
    }
    res
}

fn auto_create(apis: &Apis, name: &str) -> MetadataResponseTopic {
    let created = if is_internal_topic(name) {
        Err(Error::InvalidTopicName {
            name: name.to_string(),
            reason: "the name of an internal topic",
        })
    } else {
        apis.log()
            .create_topic(name, apis.config().num_partitions, TopicConfig::default())
    };
    match created {
        // Another client created it first: as good.
        Ok(()) | Err(Error::TopicAlreadyExists { .. }) => {
            tracing::info!(topic = name, "created topic on a metadata request");
            describe(apis, name)
        }
        Err(e) => topic_error(name, &e),
    }
}

fn describe(apis: &Apis, name: &str) -> MetadataResponseTopic {
    match apis.log().partition_count(name) {
        Ok(count) => MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_is_internal(is_internal_topic(name))
            .with_partitions((0..count).map(partition).collect()),
        Err(e) => topic_error(name, &e),
    }
}

fn partition(index: u32) -> MetadataResponsePartition {
    MetadataResponsePartition::default()
        .with_partition_index(index as i32)
        .with_leader_id(NODE_ID.into())
        .with_leader_epoch(0)
        .with_replica_nodes(vec![NODE_ID.into()])
        .with_isr_nodes(vec![NODE_ID.into()])
}

fn topic_error(name: &str, e: &Error) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(error_code(e))
}
