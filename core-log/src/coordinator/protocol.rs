//! The consumer group protocol's shared types: what members and the group coordinator
//! exchange, used by both sides (the coordinator stores and forwards them; the client's
//! assignors read them).

use crate::storage::topic::TopicPartition;

/// What one member tells the group leader when it joins: Kafka's `Subscription`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The topics the member subscribes to (patterns already resolved), sorted, no duplicates.
    pub topics: Vec<String>,
    /// Assignor-specific bytes (Kafka's `userData`); the built-in assignors send none.
    pub user_data: Option<Vec<u8>>,
    /// The partitions the member owns now (sent by every member, as Kafka does since 2.4).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member got `owned_partitions` (KIP-792); `None` before its
    /// first assignment.
    pub generation_id: Option<i32>,
    /// The member's `group.instance.id`, for static members.
    pub group_instance_id: Option<String>,
}
