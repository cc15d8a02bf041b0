//! Kafka's `RangeAssignor` (`range`), the default strategy in Kafka before 3.0.

use std::collections::BTreeMap;

use super::{
    ConsumerPartitionAssignor, Subscription, empty_assignment, members_in_kafka_order,
    subscribed_topics,
};
use crate::storage::topic::TopicPartition;

/// Assigns each topic on its own: the topic's partitions are cut into contiguous ranges, one
/// per member subscribed to it, in Kafka's member order (static members first by
/// `group.instance.id`, then by member id). With `n` partitions and `c` members, each member
/// gets `n / c` and the first `n % c` get one more.
///
/// Because each topic is cut alone, the first members get the extra partition of *every*
/// topic: across many topics the load is not balanced. The upside is that members get the same
/// partition numbers of co-partitioned topics, which joins rely on.
///
/// ```
/// use std::collections::BTreeMap;
/// use core_log::{ConsumerPartitionAssignor, RangeAssignor, Subscription, TopicPartition};
///
/// let partitions = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let both = Subscription { topics: vec!["t0".into(), "t1".into()], ..Default::default() };
/// let members = BTreeMap::from([("c0".to_string(), both.clone()), ("c1".to_string(), both)]);
///
/// let assignment = RangeAssignor.assign(&partitions, &members);
/// let tp = TopicPartition::new;
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]);
/// assert_eq!(assignment["c1"], [tp("t0", 2), tp("t1", 2)]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeAssignor;

impl ConsumerPartitionAssignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut members_of_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for member in members_in_kafka_order(subscriptions) {
            let Some(subscription) = subscriptions.get(member) else {
                continue;
            };
            for topic in subscribed_topics(partitions_per_topic, subscription) {
                members_of_topic.entry(topic).or_default().push(member);
            }
        }

        let mut assignment = empty_assignment(subscriptions);
        for (topic, members) in members_of_topic {
            let partitions = partitions_per_topic.get(topic).copied().unwrap_or(0);
            // `members` is never empty: a topic is listed only once a member subscribed to it.
            let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
            let (per_member, extra) = (partitions / count, partitions % count);
            let mut start = 0;
            for (i, member) in (0u32..).zip(members) {
                let len = per_member + u32::from(i < extra);
                if let Some(assigned) = assignment.get_mut(member) {
                    assigned.extend((start..start + len).map(|p| TopicPartition::new(topic, p)));
                }
                start += len;
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
        // RangeAssignor's Javadoc: two members, t0 and t1 with three partitions each.
        let ppt = topics(&[("t0", 3), ("t1", 3)]);
        let a = assign_checked(&RangeAssignor, &ppt, &identical_group(&ppt, 2));
        assert_eq!(
            a["m00"],
            vec![tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]
        );
        assert_eq!(a["m01"], vec![tp("t0", 2), tp("t1", 2)]);
    }

    #[test]
    fn each_topic_is_ranged_among_its_own_subscribers() {
        // Kafka's docs example for heterogeneous subscriptions.
        let ppt = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let subs: BTreeMap<String, Subscription> = [
            ("c0".to_string(), subscription(&["t0"])),
            ("c1".to_string(), subscription(&["t0", "t1"])),
            ("c2".to_string(), subscription(&["t0", "t1", "t2"])),
        ]
        .into();
        let a = assign_checked(&RangeAssignor, &ppt, &subs);
        assert_eq!(a["c0"], vec![tp("t0", 0)]);
        assert_eq!(a["c1"], vec![tp("t1", 0)]);
        assert_eq!(
            a["c2"],
            vec![tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]
        );
    }

    #[test]
    fn static_members_come_first() {
        let ppt = topics(&[("t", 4)]);
        let mut subs = identical_group(&ppt, 3);
        // m02 is static: it takes the first range although its member id sorts last.
        subs.get_mut("m02").unwrap().group_instance_id = Some("instance-a".into());
        let a = assign_checked(&RangeAssignor, &ppt, &subs);
        assert_eq!(a["m02"], vec![tp("t", 0), tp("t", 1)]);
        assert_eq!(a["m00"], vec![tp("t", 2)]);
        assert_eq!(a["m01"], vec![tp("t", 3)]);
    }

    #[test]
    fn more_members_than_partitions_leaves_the_last_empty() {
        let ppt = topics(&[("t", 2), ("empty", 0)]);
        let a = assign_checked(&RangeAssignor, &ppt, &identical_group(&ppt, 3));
        assert_eq!(a["m00"], vec![tp("t", 0)]);
        assert_eq!(a["m01"], vec![tp("t", 1)]);
        assert_eq!(a["m02"], vec![]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn identical_subscriptions_give_contiguous_balanced_ranges(
            ppt in arb_topics(5, 40),
            members in 1usize..12,
        ) {
            let subs = identical_group(&ppt, members);
            let a = assign_checked(&RangeAssignor, &ppt, &subs);
            prop_assert_eq!(a.len(), members);
            for (topic, &n) in &ppt {
                // Per topic: counts within one, larger ones first (member order is id order
                // here), and each member's share is the next contiguous run.
                let mut next = 0;
                let mut per_member = Vec::new();
                for ps in a.values() {
                    let mine: Vec<u32> =
                        ps.iter().filter(|p| &p.topic == topic).map(|p| p.partition).collect();
                    prop_assert_eq!(&mine, &(next..next + mine.len() as u32).collect::<Vec<_>>());
                    next += mine.len() as u32;
                    per_member.push(mine.len());
                }
                prop_assert_eq!(next, n);
                prop_assert!(max_minus_min(&per_member) <= 1);
                prop_assert!(per_member.windows(2).all(|w| w[0] >= w[1]));
            }
        }

        #[test]
        fn a_single_topic_is_balanced(partitions in 0u32..200, members in 1usize..40) {
            let ppt = topics(&[("t", partitions)]);
            let a = assign_checked(&RangeAssignor, &ppt, &identical_group(&ppt, members));
            prop_assert!(max_minus_min(&counts(&a)) <= 1);
        }

        #[test]
        fn heterogeneous_subscriptions_assign_each_partition_once_to_a_subscriber(
            (ppt, subs) in arb_heterogeneous(5, 12, 8),
        ) {
            // assign_checked asserts validity and that every subscribed partition is assigned.
            let a = assign_checked(&RangeAssignor, &ppt, &subs);
            prop_assert_eq!(a.len(), subs.len());
        }
    }
}
