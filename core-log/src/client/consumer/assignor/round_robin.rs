//! Kafka's `RoundRobinAssignor` (`roundrobin`).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    ConsumerPartitionAssignor, Subscription, empty_assignment, members_in_kafka_order,
    subscribed_topics,
};
use crate::storage::topic::TopicPartition;

/// Deals all partitions of all subscribed topics, sorted by topic then partition, to the
/// members in turn (Kafka's member order: static members first by `group.instance.id`, then by
/// member id), skipping a member that does not subscribe to the partition's topic.
///
/// With identical subscriptions every member's count is within one of the others'. With
/// different subscriptions it can be badly unbalanced; the sticky assignors do better there.
///
/// ```
/// use std::collections::BTreeMap;
/// use core_log::{ConsumerPartitionAssignor, RoundRobinAssignor, Subscription, TopicPartition};
///
/// let partitions = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let both = Subscription { topics: vec!["t0".into(), "t1".into()], ..Default::default() };
/// let members = BTreeMap::from([("c0".to_string(), both.clone()), ("c1".to_string(), both)]);
///
/// let assignment = RoundRobinAssignor.assign(&partitions, &members);
/// let tp = TopicPartition::new;
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
/// assert_eq!(assignment["c1"], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundRobinAssignor;

impl ConsumerPartitionAssignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let members: Vec<(&str, BTreeSet<&str>)> = members_in_kafka_order(subscriptions)
            .into_iter()
            .filter_map(|m| {
                let subscription = subscriptions.get(m)?;
                Some((m, subscribed_topics(partitions_per_topic, subscription)))
            })
            .collect();
        let all_topics: BTreeSet<&str> = members.iter().flat_map(|(_, ts)| ts).copied().collect();

        let mut assignment = empty_assignment(subscriptions);
        // The cycle position persists across topics, as Kafka's CircularIterator does.
        let mut next = 0;
        for topic in all_topics {
            let partitions = partitions_per_topic.get(topic).copied().unwrap_or(0);
            for partition in 0..partitions {
                // Some member subscribes to `topic` (that is how it got into `all_topics`), so
                // this finds one within a full turn.
                let Some(skip) = (0..members.len())
                    .find(|k| members[(next + k) % members.len()].1.contains(topic))
                else {
                    break;
                };
                let member = members[(next + skip) % members.len()].0;
                if let Some(assigned) = assignment.get_mut(member) {
                    assigned.push(TopicPartition::new(topic, partition));
                }
                next = (next + skip + 1) % members.len();
            }
        }
        assignment
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn kafka_documented_example() {
        let ppt = topics(&[("t0", 3), ("t1", 3)]);
        let a = assign_checked(&RoundRobinAssignor, &ppt, &identical_group(&ppt, 2));
        assert_eq!(a["m00"], vec![tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
        assert_eq!(a["m01"], vec![tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
    }

    #[test]
    fn kafka_documented_heterogeneous_example() {
        // RoundRobinAssignor's Javadoc: C0 takes t0; C1 t0, t1; C2 t0, t1, t2.
        let ppt = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let subs: BTreeMap<String, Subscription> = [
            ("c0".to_string(), subscription(&["t0"])),
            ("c1".to_string(), subscription(&["t0", "t1"])),
            ("c2".to_string(), subscription(&["t0", "t1", "t2"])),
        ]
        .into();
        let a = assign_checked(&RoundRobinAssignor, &ppt, &subs);
        assert_eq!(a["c0"], vec![tp("t0", 0)]);
        assert_eq!(a["c1"], vec![tp("t1", 0)]);
        assert_eq!(
            a["c2"],
            vec![tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]
        );
    }

    #[test]
    fn static_members_come_first() {
        let ppt = topics(&[("t", 3)]);
        let mut subs = identical_group(&ppt, 2);
        subs.get_mut("m01").unwrap().group_instance_id = Some("i".into());
        let a = assign_checked(&RoundRobinAssignor, &ppt, &subs);
        assert_eq!(a["m01"], vec![tp("t", 0), tp("t", 2)]);
        assert_eq!(a["m00"], vec![tp("t", 1)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn identical_subscriptions_are_dealt_in_turn(
            ppt in arb_topics(6, 30),
            members in 1usize..12,
        ) {
            let subs = identical_group(&ppt, members);
            let a = assign_checked(&RoundRobinAssignor, &ppt, &subs);
            prop_assert_eq!(a.len(), members);
            let c = counts(&a);
            prop_assert!(max_minus_min(&c) <= 1);
            // The k-th partition in (topic, partition) order goes to the (k mod members)-th.
            let owner = owners(&a);
            for (k, p) in all_partitions(&ppt).iter().enumerate() {
                let expected = member_name(k % members);
                prop_assert_eq!(owner[p], expected.as_str());
            }
        }

        #[test]
        fn heterogeneous_subscriptions_assign_each_partition_once_to_a_subscriber(
            (ppt, subs) in arb_heterogeneous(5, 12, 8),
        ) {
            let a = assign_checked(&RoundRobinAssignor, &ppt, &subs);
            prop_assert_eq!(a.len(), subs.len());
        }
    }
}
