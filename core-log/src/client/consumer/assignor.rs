//! Partition assignors: how a consumer group's leader divides the subscribed topics'
//! partitions among the members. Kafka's `ConsumerPartitionAssignor` and its four built-in
//! strategies, chosen through `partition.assignment.strategy`.
//!
//! ```text
//!  JoinGroup (each member)          group leader                       SyncGroup (each member)
//!  Subscription {              ┌──────────────────────────────┐
//!    topics,            ──────►│ assignor.assign(             │──────► Vec<TopicPartition>
//!    owned_partitions,         │   partitions_per_topic,      │
//!    generation_id,            │   subscriptions)             │
//!    group_instance_id }       │ cooperative protocol only:   │
//!                              │   cooperative_adjust(..)     │
//!                              └──────────────────────────────┘
//! ```
//!
//! | name                 | assignor                      | protocols           |
//! |----------------------|-------------------------------|---------------------|
//! | `range`              | [`RangeAssignor`]             | eager               |
//! | `roundrobin`         | [`RoundRobinAssignor`]        | eager               |
//! | `sticky`             | [`StickyAssignor`]            | eager               |
//! | `cooperative-sticky` | [`CooperativeStickyAssignor`] | cooperative, eager  |
//!
//! Every built-in assignor is deterministic: the same input gives the same output, so a new
//! leader elected in the middle of a rebalance computes what the old one would have.
//! [`assignor_by_name`] resolves the names above and Kafka's Java class names.

mod cooperative_sticky;
mod range;
mod round_robin;
mod sticky;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use cooperative_sticky::CooperativeStickyAssignor;
pub use range::RangeAssignor;
pub use round_robin::RoundRobinAssignor;
pub use sticky::StickyAssignor;

pub use crate::coordinator::protocol::Subscription;
use crate::storage::topic::TopicPartition;

/// Which rebalance protocol an assignor supports (Kafka's `RebalanceProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RebalanceProtocol {
    /// Every member revokes all its partitions before the group is reassigned.
    Eager,
    /// Members keep the partitions they keep; only moved ones are revoked, in a second round.
    Cooperative,
}

/// A strategy that divides partitions among a group's members. Kafka's
/// `ConsumerPartitionAssignor`.
pub trait ConsumerPartitionAssignor: Send + Sync + std::fmt::Debug {
    /// The name members vote with, e.g. `"range"`.
    fn name(&self) -> &str;

    /// The protocols this assignor supports. Cooperative rebalancing is used only when every
    /// assignor in `partition.assignment.strategy` supports it.
    fn supported_protocols(&self) -> Vec<RebalanceProtocol> {
        vec![RebalanceProtocol::Eager]
    }

    /// Divides the partitions of the subscribed topics among the members. `partitions_per_topic`
    /// has the partition count of every topic any member subscribes to (and exists);
    /// `subscriptions` maps member id to subscription. The result must name every member (an
    /// empty list for one that gets nothing) and give each partition to at most one member
    /// subscribed to its topic.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

/// A shared assignor, as `partition.assignment.strategy` holds them.
pub type SharedAssignor = Arc<dyn ConsumerPartitionAssignor>;

/// The built-in assignor called `name`: Kafka's short name (`range`, `roundrobin`, `sticky`,
/// `cooperative-sticky`) or its Java class name, as `partition.assignment.strategy` accepts
/// them. `None` for anything else.
///
/// ```
/// use core_log::assignor_by_name;
///
/// let sticky = assignor_by_name("org.apache.kafka.clients.consumer.StickyAssignor").unwrap();
/// assert_eq!(sticky.name(), "sticky");
/// assert_eq!(assignor_by_name("cooperative-sticky").unwrap().name(), "cooperative-sticky");
/// assert!(assignor_by_name("fair").is_none());
/// ```
pub fn assignor_by_name(name: &str) -> Option<SharedAssignor> {
    const PACKAGE: &str = "org.apache.kafka.clients.consumer.";
    let short = match name.strip_prefix(PACKAGE) {
        Some("RangeAssignor") => "range",
        Some("RoundRobinAssignor") => "roundrobin",
        Some("StickyAssignor") => "sticky",
        Some("CooperativeStickyAssignor") => "cooperative-sticky",
        Some(_) => return None,
        None => name,
    };
    let assignor: SharedAssignor = match short {
        "range" => Arc::new(RangeAssignor),
        "roundrobin" => Arc::new(RoundRobinAssignor),
        "sticky" => Arc::new(StickyAssignor),
        "cooperative-sticky" => Arc::new(CooperativeStickyAssignor),
        _ => return None,
    };
    Some(assignor)
}

/// Checks an assignor's output before the leader hands it out: every member is named and no
/// unknown one, each partition exists, goes to at most one member, and only to a member that
/// subscribes to its topic. Partitions left unassigned are allowed (Kafka allows them too).
/// The error says what is wrong, for the leader's log and error.
pub(crate) fn validate_assignment(
    partitions_per_topic: &BTreeMap<String, u32>,
    subscriptions: &BTreeMap<String, Subscription>,
    assignment: &BTreeMap<String, Vec<TopicPartition>>,
) -> Result<(), String> {
    if let Some(member) = subscriptions.keys().find(|m| !assignment.contains_key(*m)) {
        return Err(format!("member {member} is missing from the assignment"));
    }
    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for (member, partitions) in assignment {
        let Some(subscription) = subscriptions.get(member) else {
            return Err(format!("the assignment names unknown member {member}"));
        };
        for tp in partitions {
            match partitions_per_topic.get(&tp.topic) {
                Some(&count) if tp.partition < count => {}
                _ => return Err(format!("partition {tp} does not exist")),
            }
            if !subscription.topics.contains(&tp.topic) {
                return Err(format!(
                    "partition {tp} is assigned to {member}, which does not subscribe to {}",
                    tp.topic
                ));
            }
            if let Some(other) = owner.insert(tp, member) {
                return Err(format!(
                    "partition {tp} is assigned twice (to {other} and {member})"
                ));
            }
        }
    }
    Ok(())
}

/// Kafka's first round of a cooperative rebalance: removes from each member's new assignment
/// every partition that a *different* member still lists in `owned_partitions`.
///
/// Why: under the cooperative protocol members do not revoke everything before rejoining, so
/// a partition moving from A to B is still being consumed by A when the leader decides. Handing
/// it to B at once would let two members consume (and commit) it at the same time. So B does
/// not get it in this round; A, seeing the partition missing from its own assignment, revokes
/// it (committing its offsets) and rejoins, and the follow-up rebalance, where nobody owns it
/// any more, gives it to B. Partitions that stay with their owner, and unowned ones, pass
/// through unchanged. Any other member's claim counts, whatever its generation, because the
/// claim means that member may still be consuming the partition. Applying this twice changes
/// nothing more, so it is safe on an assignor's output that already respects the rule.
pub(crate) fn cooperative_adjust(
    subscriptions: &BTreeMap<String, Subscription>,
    assignment: &BTreeMap<String, Vec<TopicPartition>>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut claimants: BTreeMap<&TopicPartition, BTreeSet<&str>> = BTreeMap::new();
    for (member, subscription) in subscriptions {
        for tp in &subscription.owned_partitions {
            claimants.entry(tp).or_default().insert(member);
        }
    }
    assignment
        .iter()
        .map(|(member, partitions)| {
            let kept = partitions
                .iter()
                .filter(|tp| {
                    claimants
                        .get(tp)
                        .is_none_or(|owners| owners.iter().all(|o| *o == member.as_str()))
                })
                .cloned()
                .collect();
            (member.clone(), kept)
        })
        .collect()
}

/// The members in Kafka's `MemberInfo` order, which range and round-robin assign in: static
/// members (those with a `group.instance.id`) first, ordered by instance id, then dynamic ones
/// ordered by member id. Ordering static members by their stable instance id keeps their
/// partitions across restarts, which give them a new member id.
fn members_in_kafka_order(subscriptions: &BTreeMap<String, Subscription>) -> Vec<&str> {
    let mut members: Vec<(Option<&str>, &str)> = subscriptions
        .iter()
        .map(|(id, s)| (s.group_instance_id.as_deref(), id.as_str()))
        .collect();
    // Member id breaks ties between equal instance ids, which a broker would not admit anyway.
    members.sort_by_key(|&(instance, id)| (instance.is_none(), instance, id));
    members.into_iter().map(|(_, id)| id).collect()
}

/// The topics `subscription` names that exist, without duplicates, borrowed from
/// `partitions_per_topic` so that they outlive the subscription.
fn subscribed_topics<'a>(
    partitions_per_topic: &'a BTreeMap<String, u32>,
    subscription: &Subscription,
) -> BTreeSet<&'a str> {
    subscription
        .topics
        .iter()
        .filter_map(|t| partitions_per_topic.get_key_value(t))
        .map(|(t, _)| t.as_str())
        .collect()
}

/// An assignment naming every member with nothing assigned yet.
fn empty_assignment(
    subscriptions: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect()
}

/// Helpers shared by the assignors' tests: building groups, checking outputs.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::{ConsumerPartitionAssignor, Subscription, validate_assignment};
    use crate::storage::topic::TopicPartition;

    pub(crate) type Assignment = BTreeMap<String, Vec<TopicPartition>>;

    pub(crate) fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    pub(crate) fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    pub(crate) fn subscription(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    /// Members `m00`, `m01`, ... (zero-padded so that id order is numeric order), all
    /// subscribed to every topic of `partitions_per_topic`.
    pub(crate) fn identical_group(
        partitions_per_topic: &BTreeMap<String, u32>,
        members: usize,
    ) -> BTreeMap<String, Subscription> {
        let all: Vec<&str> = partitions_per_topic.keys().map(String::as_str).collect();
        (0..members)
            .map(|i| (member_name(i), subscription(&all)))
            .collect()
    }

    pub(crate) fn member_name(i: usize) -> String {
        format!("m{i:02}")
    }

    /// Random topics `t0`, `t1`, ... with random partition counts (zero included).
    pub(crate) fn arb_topics(
        max_topics: usize,
        max_partitions: u32,
    ) -> impl Strategy<Value = BTreeMap<String, u32>> {
        proptest::collection::vec(0..=max_partitions, 1..=max_topics).prop_map(|counts| {
            counts
                .into_iter()
                .enumerate()
                .map(|(i, n)| (format!("t{i}"), n))
                .collect()
        })
    }

    /// A group where each member subscribes to its own random subset of the topics (possibly
    /// none), plus a topic `gone` that does not exist, which every assignor must ignore.
    pub(crate) fn arb_heterogeneous(
        max_topics: usize,
        max_partitions: u32,
        max_members: usize,
    ) -> impl Strategy<Value = (BTreeMap<String, u32>, BTreeMap<String, Subscription>)> {
        arb_topics(max_topics, max_partitions).prop_flat_map(move |ppt| {
            let n = ppt.len();
            let masks = proptest::collection::vec(
                (proptest::collection::vec(any::<bool>(), n), any::<bool>()),
                1..=max_members,
            );
            (Just(ppt), masks).prop_map(|(ppt, masks)| {
                let names: Vec<&String> = ppt.keys().collect();
                let subs = masks
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mask, gone))| {
                        let mut topics: Vec<String> = names
                            .iter()
                            .zip(&mask)
                            .filter(|(_, on)| **on)
                            .map(|(t, _)| (*t).clone())
                            .collect();
                        if gone {
                            topics.push("gone".to_string());
                        }
                        let sub = Subscription {
                            topics,
                            ..Subscription::default()
                        };
                        (member_name(i), sub)
                    })
                    .collect();
                (ppt, subs)
            })
        })
    }

    pub(crate) fn all_partitions(ppt: &BTreeMap<String, u32>) -> Vec<TopicPartition> {
        ppt.iter()
            .flat_map(|(t, &n)| (0..n).map(move |p| tp(t, p)))
            .collect()
    }

    /// Runs `assignor` and checks what every assignor promises on any input: the output
    /// passes `validate_assignment`, and each partition of a topic someone subscribes to is
    /// assigned exactly once (the built-in assignors leave nothing unassigned).
    pub(crate) fn assign_checked(
        assignor: &dyn ConsumerPartitionAssignor,
        ppt: &BTreeMap<String, u32>,
        subs: &BTreeMap<String, Subscription>,
    ) -> Assignment {
        let assignment = assignor.assign(ppt, subs);
        if let Err(e) = validate_assignment(ppt, subs, &assignment) {
            panic!(
                "{}: invalid assignment: {e}\n{assignment:?}",
                assignor.name()
            );
        }
        let subscribed: BTreeSet<&String> = subs.values().flat_map(|s| &s.topics).collect();
        let assigned: BTreeSet<&TopicPartition> = assignment.values().flatten().collect();
        for p in all_partitions(ppt) {
            assert_eq!(
                assigned.contains(&p),
                subscribed.contains(&p.topic),
                "{}: partition {p} assigned iff subscribed",
                assignor.name()
            );
        }
        assignment
    }

    pub(crate) fn counts(assignment: &Assignment) -> Vec<usize> {
        assignment.values().map(Vec::len).collect()
    }

    pub(crate) fn max_minus_min(counts: &[usize]) -> usize {
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    /// Each member's assignment as its `owned_partitions` for the next rebalance, as members
    /// of `generation`.
    pub(crate) fn feed_back(
        subs: &BTreeMap<String, Subscription>,
        assignment: &Assignment,
        generation: i32,
    ) -> BTreeMap<String, Subscription> {
        subs.iter()
            .map(|(m, s)| {
                let mut s = s.clone();
                s.owned_partitions = assignment.get(m).cloned().unwrap_or_default();
                s.generation_id = Some(generation);
                (m.clone(), s)
            })
            .collect()
    }

    pub(crate) fn owners(assignment: &Assignment) -> BTreeMap<&TopicPartition, &str> {
        assignment
            .iter()
            .flat_map(|(m, ps)| ps.iter().map(move |p| (p, m.as_str())))
            .collect()
    }

    /// How many partitions have a different owner in `after` than in `before` (a partition
    /// of a member that left counts as moved).
    pub(crate) fn moved(before: &Assignment, after: &Assignment) -> usize {
        let before = owners(before);
        owners(after)
            .into_iter()
            .filter(|(p, m)| before.get(p) != Some(m))
            .count()
    }

    /// The fewest partitions any balanced assignment of `total` partitions among the members
    /// of `owned` can move away from their current owners, given that each member owns
    /// `owned[m]` distinct partitions and the rest (of members that left, or new) have no
    /// owner. Balanced with identical subscriptions means `total % members` members hold
    /// `ceil` and the rest `floor`; a member keeps at most `min(owned, its quota)`, so at most
    /// `sum(min(owned, floor))` plus one for each `ceil` slot given to a member owning more
    /// than `floor` stay; everything else moves.
    pub(crate) fn minimum_moves(owned: &[usize], total: usize) -> usize {
        if owned.is_empty() {
            return 0;
        }
        let floor = total / owned.len();
        let ceil_slots = total % owned.len();
        let over_floor = owned.iter().filter(|&&o| o > floor).count();
        let kept: usize =
            owned.iter().map(|&o| o.min(floor)).sum::<usize>() + ceil_slots.min(over_floor);
        total - kept
    }

    #[test]
    fn minimum_moves_on_hand_computed_cases() {
        // 6 partitions, members owning 3 and 3, a third joins: each gives up one.
        assert_eq!(minimum_moves(&[3, 3, 0], 6), 2);
        // 7 partitions, the owner of 1 left: its partition moves, 3+3 fit floor 3 + one ceil.
        assert_eq!(minimum_moves(&[3, 3], 7), 1);
        // All owned by one member; 4 members: it keeps a ceil slot (2), six move.
        assert_eq!(minimum_moves(&[8, 0, 0, 0], 8), 6);
        assert_eq!(minimum_moves(&[2, 2, 2], 6), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn names_resolve_to_the_built_in_assignors() {
        for (name, short, protocols) in [
            ("range", "range", vec![RebalanceProtocol::Eager]),
            ("roundrobin", "roundrobin", vec![RebalanceProtocol::Eager]),
            ("sticky", "sticky", vec![RebalanceProtocol::Eager]),
            (
                "cooperative-sticky",
                "cooperative-sticky",
                vec![RebalanceProtocol::Cooperative, RebalanceProtocol::Eager],
            ),
            (
                "org.apache.kafka.clients.consumer.RangeAssignor",
                "range",
                vec![RebalanceProtocol::Eager],
            ),
            (
                "org.apache.kafka.clients.consumer.RoundRobinAssignor",
                "roundrobin",
                vec![RebalanceProtocol::Eager],
            ),
            (
                "org.apache.kafka.clients.consumer.StickyAssignor",
                "sticky",
                vec![RebalanceProtocol::Eager],
            ),
            (
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
                "cooperative-sticky",
                vec![RebalanceProtocol::Cooperative, RebalanceProtocol::Eager],
            ),
        ] {
            let assignor = assignor_by_name(name).expect(name);
            assert_eq!(assignor.name(), short);
            assert_eq!(assignor.supported_protocols(), protocols, "{name}");
        }
        for unknown in [
            "",
            "Range",
            "round-robin",
            "org.apache.kafka.clients.consumer.FairAssignor",
            "org.apache.kafka.clients.consumer.range",
            "com.example.RangeAssignor",
        ] {
            assert!(assignor_by_name(unknown).is_none(), "{unknown:?}");
        }
    }

    #[test]
    fn static_members_sort_first_by_instance_id() {
        let mut subs = BTreeMap::new();
        subs.insert("a".to_string(), subscription(&["t"]));
        let mut b = subscription(&["t"]);
        b.group_instance_id = Some("z".to_string());
        subs.insert("b".to_string(), b);
        let mut c = subscription(&["t"]);
        c.group_instance_id = Some("y".to_string());
        subs.insert("c".to_string(), c);
        subs.insert("0".to_string(), subscription(&["t"]));
        assert_eq!(members_in_kafka_order(&subs), vec!["c", "b", "0", "a"]);
    }

    #[test]
    fn validate_assignment_names_each_fault() {
        let ppt = topics(&[("t0", 2), ("t1", 1)]);
        let mut subs = BTreeMap::new();
        subs.insert("a".to_string(), subscription(&["t0"]));
        subs.insert("b".to_string(), subscription(&["t0", "t1"]));
        let ok: Assignment = [
            ("a".to_string(), vec![tp("t0", 0)]),
            ("b".to_string(), vec![tp("t0", 1), tp("t1", 0)]),
        ]
        .into();
        assert_eq!(validate_assignment(&ppt, &subs, &ok), Ok(()));
        // Leaving partitions unassigned is allowed.
        let sparse: Assignment = [("a".to_string(), vec![]), ("b".to_string(), vec![])].into();
        assert_eq!(validate_assignment(&ppt, &subs, &sparse), Ok(()));

        let fault = |edit: &dyn Fn(&mut Assignment)| {
            let mut a = ok.clone();
            edit(&mut a);
            validate_assignment(&ppt, &subs, &a).unwrap_err()
        };
        assert!(fault(&|a| drop(a.remove("a"))).contains("member a is missing"));
        assert!(fault(&|a| drop(a.insert("x".into(), vec![]))).contains("unknown member x"));
        assert!(
            fault(&|a| a.get_mut("a").unwrap().push(tp("t0", 2))).contains("t0-2 does not exist")
        );
        assert!(
            fault(&|a| a.get_mut("a").unwrap().push(tp("t9", 0))).contains("t9-0 does not exist")
        );
        assert!(
            fault(&|a| a.get_mut("a").unwrap().push(tp("t1", 0))).contains("not subscribe to t1")
        );
        assert!(fault(&|a| a.get_mut("a").unwrap().push(tp("t0", 1))).contains("assigned twice"));
        assert!(fault(&|a| a.get_mut("a").unwrap().push(tp("t0", 0))).contains("assigned twice"));
    }

    #[test]
    fn cooperative_adjust_holds_back_partitions_until_their_owner_revokes() {
        let ppt = topics(&[("t0", 4)]);
        // a owns everything; b joins.
        let mut subs = identical_group(&ppt, 1);
        subs.insert("m01".into(), subscription(&["t0"]));
        let start: Assignment = [("m00".to_string(), all_partitions(&ppt))].into();
        let subs = feed_back(&subs, &start, 1);

        let sticky = StickyAssignor;
        let target = sticky.assign(&ppt, &subs);
        assert_eq!(target["m00"], vec![tp("t0", 0), tp("t0", 1)]);
        assert_eq!(target["m01"], vec![tp("t0", 2), tp("t0", 3)]);

        // First round: b gets nothing yet, a keeps what it keeps.
        let first = cooperative_adjust(&subs, &target);
        assert_eq!(first["m00"], target["m00"]);
        assert_eq!(first["m01"], vec![]);
        assert_eq!(cooperative_adjust(&subs, &first), first);

        // a revokes t0-2 and t0-3 and rejoins; the follow-up round hands them to b.
        let subs = feed_back(&subs, &first, 2);
        let second = sticky.assign(&ppt, &subs);
        assert_eq!(second, target);
        assert_eq!(cooperative_adjust(&subs, &second), second);
    }

    #[test]
    fn cooperative_adjust_counts_any_other_claim() {
        let mut subs = BTreeMap::new();
        let mut a = subscription(&["t0"]);
        a.owned_partitions = vec![tp("t0", 0), tp("t0", 1)];
        a.generation_id = Some(3);
        let mut b = subscription(&["t0"]);
        // A stale claim (older generation) still means b may be consuming t0-1.
        b.owned_partitions = vec![tp("t0", 1)];
        b.generation_id = Some(1);
        subs.insert("a".to_string(), a);
        subs.insert("b".to_string(), b);
        let assignment: Assignment = [
            ("a".to_string(), vec![tp("t0", 0), tp("t0", 1)]),
            ("b".to_string(), vec![tp("t0", 2)]),
        ]
        .into();
        let adjusted = cooperative_adjust(&subs, &assignment);
        assert_eq!(adjusted["a"], vec![tp("t0", 0)]);
        assert_eq!(adjusted["b"], vec![tp("t0", 2)]);
    }
}
