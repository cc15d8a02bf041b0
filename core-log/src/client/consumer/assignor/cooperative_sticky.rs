//! Kafka's `CooperativeStickyAssignor` (`cooperative-sticky`), the default strategy together
//! with `range` since Kafka 3.0.

use std::collections::BTreeMap;

use super::sticky::sticky_assign;
use super::{ConsumerPartitionAssignor, RebalanceProtocol, Subscription};
use crate::storage::topic::TopicPartition;

/// The [`StickyAssignor`](super::StickyAssignor)'s algorithm, for the cooperative rebalance
/// protocol (KIP-429): members keep consuming the partitions they keep while the group
/// rebalances, instead of all stopping.
///
/// `assign` returns the same full target assignment as `sticky`. Under the cooperative
/// protocol the group leader then holds back every partition that another member still owns
/// (the first of two rounds): that member revokes it and rejoins, and the follow-up rebalance
/// hands it over. It also supports the eager protocol, so that a group can move from `sticky`
/// or `range` to `cooperative-sticky` with rolling restarts: each member follows its own
/// protocol (a member whose strategy lists an eager-only assignor revokes everything before
/// rejoining), and the leader withholds owned partitions whatever its own protocol, so
/// members of both kinds never own a partition at the same time.
///
/// ```
/// use std::collections::BTreeMap;
/// use core_log::{
///     ConsumerPartitionAssignor, CooperativeStickyAssignor, RebalanceProtocol, Subscription,
///     TopicPartition,
/// };
///
/// let assignor = CooperativeStickyAssignor;
/// assert_eq!(
///     assignor.supported_protocols(),
///     [RebalanceProtocol::Cooperative, RebalanceProtocol::Eager]
/// );
///
/// let tp = TopicPartition::new;
/// let partitions = BTreeMap::from([("t0".to_string(), 4)]);
/// let member = |owned: Vec<TopicPartition>| Subscription {
///     topics: vec!["t0".into()],
///     owned_partitions: owned,
///     generation_id: Some(3),
///     ..Default::default()
/// };
/// // c1 left; c0 and c2 keep what they own and split c1's partitions.
/// let members = BTreeMap::from([
///     ("c0".to_string(), member(vec![tp("t0", 0)])),
///     ("c2".to_string(), member(vec![tp("t0", 2)])),
/// ]);
/// let assignment = assignor.assign(&partitions, &members);
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 1)]);
/// assert_eq!(assignment["c2"], [tp("t0", 2), tp("t0", 3)]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

impl ConsumerPartitionAssignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn supported_protocols(&self) -> Vec<RebalanceProtocol> {
        vec![RebalanceProtocol::Cooperative, RebalanceProtocol::Eager]
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        sticky_assign(partitions_per_topic, subscriptions)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::super::sticky::properties::*;
    use super::super::testing::*;
    use super::super::{StickyAssignor, cooperative_adjust};
    use super::*;

    #[test]
    fn kafka_documented_example() {
        let ppt = topics(&[("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2)]);
        let a = assign_checked(&CooperativeStickyAssignor, &ppt, &identical_group(&ppt, 3));
        assert_eq!(a["m00"], vec![tp("t0", 0), tp("t1", 1), tp("t3", 0)]);
        assert_eq!(a["m01"], vec![tp("t0", 1), tp("t2", 0), tp("t3", 1)]);
        assert_eq!(a["m02"], vec![tp("t1", 0), tp("t2", 1)]);
    }

    /// A membership change under the cooperative protocol: the first round holds back moved
    /// partitions, their owners revoke them, and the second round completes the move.
    fn two_rounds(
        ppt: &BTreeMap<String, u32>,
        subs: &BTreeMap<String, Subscription>,
        before: &Assignment,
        generation: i32,
    ) -> Result<Assignment, TestCaseError> {
        let target = assign_checked(&CooperativeStickyAssignor, ppt, subs);
        let first = cooperative_adjust(subs, &target);
        let previous = owners(before);
        for (member, partitions) in &first {
            prop_assert!(partitions.iter().all(|p| target[member].contains(p)));
            for p in partitions {
                // Never given while another member of the group still owns it.
                if let Some(owner) = previous.get(p) {
                    prop_assert!(
                        *owner == member || !subs.contains_key(*owner),
                        "{p} to {member}"
                    );
                }
            }
        }
        // Members revoke what the first round did not give them, and rejoin.
        let subs = feed_back(subs, &first, generation + 1);
        let second = assign_checked(&CooperativeStickyAssignor, ppt, &subs);
        for (member, partitions) in &first {
            prop_assert!(partitions.iter().all(|p| second[member].contains(p)));
        }
        // Nothing is held back twice: the move is complete.
        prop_assert_eq!(&cooperative_adjust(&subs, &second), &second);
        Ok(second)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn same_target_as_sticky(
            (ppt, subs) in arb_heterogeneous(5, 12, 8),
            owner_picks in proptest::collection::vec(0usize..10, 60),
        ) {
            let mut before: Assignment = BTreeMap::new();
            for (p, pick) in all_partitions(&ppt).into_iter().zip(owner_picks) {
                before.entry(member_name(pick)).or_default().push(p);
            }
            let subs = feed_back(&subs, &before, 2);
            prop_assert_eq!(
                CooperativeStickyAssignor.assign(&ppt, &subs),
                StickyAssignor.assign(&ppt, &subs)
            );
        }

        #[test]
        fn identical_subscriptions_are_balanced(ppt in arb_topics(6, 30), members in 1usize..15) {
            Group::new(&CooperativeStickyAssignor, ppt, members)?;
        }

        #[test]
        fn moves_the_minimum_from_any_previous_ownership(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            owner_picks in proptest::collection::vec(any::<usize>(), 100),
        ) {
            minimal_from_any_ownership(&CooperativeStickyAssignor, ppt, members, owner_picks)?;
        }

        #[test]
        fn removing_a_member_moves_the_minimum(
            ppt in arb_topics(4, 25),
            members in 2usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
            victim in any::<usize>(),
        ) {
            let mut group = Group::new(&CooperativeStickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&CooperativeStickyAssignor, change)?;
            }
            group.change(&CooperativeStickyAssignor, Change::Remove(victim))?;
        }

        #[test]
        fn adding_a_member_moves_the_minimum(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
        ) {
            let mut group = Group::new(&CooperativeStickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&CooperativeStickyAssignor, change)?;
            }
            group.change(&CooperativeStickyAssignor, Change::Add)?;
        }

        #[test]
        fn the_same_members_again_move_nothing(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
        ) {
            let mut group = Group::new(&CooperativeStickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&CooperativeStickyAssignor, change)?;
            }
            let again = assign_checked(&CooperativeStickyAssignor, &group.ppt, &group.subs);
            prop_assert_eq!(cooperative_adjust(&group.subs, &again), again.clone());
            prop_assert_eq!(again, group.assignment);
        }

        #[test]
        fn two_cooperative_rounds_move_the_minimum(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
            last in arb_change(),
        ) {
            let mut group = Group::new(&CooperativeStickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&CooperativeStickyAssignor, change)?;
            }
            // The membership after `last`, owning what they owned before it.
            let mut subs = group.subs.clone();
            match last {
                Change::Add => {
                    let all: Vec<&str> = group.ppt.keys().map(String::as_str).collect();
                    subs.insert("joiner".to_string(), subscription(&all));
                }
                Change::Remove(i) => {
                    if subs.len() > 1 {
                        let victim = subs.keys().nth(i % subs.len()).cloned().unwrap();
                        subs.remove(&victim);
                    }
                }
            }
            let done = two_rounds(&group.ppt, &subs, &group.assignment, group.generation)?;
            prop_assert!(max_minus_min(&counts(&done)) <= 1);
            let owned: Vec<usize> =
                subs.keys().map(|m| group.assignment.get(m).map_or(0, Vec::len)).collect();
            let total = all_partitions(&group.ppt).len();
            prop_assert_eq!(moved(&group.assignment, &done), minimum_moves(&owned, total));
        }

        #[test]
        fn garbage_ownership_is_tolerated(
            ppt in arb_topics(4, 20),
            members in 1usize..8,
            owned_picks in proptest::collection::vec(
                (any::<usize>(), any::<usize>(), proptest::option::of(0i32..3)), 0..40),
        ) {
            tolerates_garbage_ownership(&CooperativeStickyAssignor, ppt, members, owned_picks)?;
        }

        #[test]
        fn heterogeneous_subscriptions_assign_each_partition_once_to_a_subscriber(
            (ppt, subs) in arb_heterogeneous(5, 12, 8),
            owned_picks in proptest::collection::vec(
                (any::<usize>(), any::<usize>(), proptest::option::of(0i32..3)), 0..40),
        ) {
            heterogeneous(&CooperativeStickyAssignor, ppt, subs, owned_picks)?;
        }
    }
}
