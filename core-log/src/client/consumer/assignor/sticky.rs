//! Kafka's `StickyAssignor` (`sticky`), and the algorithm it shares with
//! `cooperative-sticky` (Kafka's `AbstractStickyAssignor`).
//!
//! ```text
//!  owned_partitions of every member
//!        │ claims resolved by generation; dropped if the partition is gone or
//!        ▼ its owner no longer subscribes to the topic
//!  previous owner per partition ──► identical subscriptions? ──yes──► quotas floor/ceil:
//!                                        │                         keep min(owned, quota),
//!                                        no                        deal the rest in turn
//!                                        ▼
//!                     keep every valid owner's partitions, give each unowned partition to
//!                     its least-loaded subscriber, then move partitions from loaded to
//!                     lighter subscribers while the counts differ by two or more
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{ConsumerPartitionAssignor, Subscription, subscribed_topics};
use crate::storage::topic::TopicPartition;

/// Balances the partitions over the members like round-robin, but keeps as many partitions
/// as possible with the member that owned them before (the `owned_partitions` of each
/// member's [`Subscription`]), so that a rebalance moves few partitions and their state.
///
/// What it promises:
///
/// - **Balanced** when every member subscribes to the same topics: each member's count is
///   within one of every other's.
/// - **Sticky**: with identical subscriptions it moves the fewest partitions that any
///   balanced assignment could: a member keeps `min(owned, quota)` of its partitions, where
///   the quota is `floor(P / C)`, or the ceiling for `P % C` members (chosen among those owning
///   more than the floor, in member-id order). Same members and partitions again: nothing
///   moves.
/// - **Best effort with different subscriptions**: every valid owner keeps its partitions,
///   each unowned partition goes to the subscriber with the fewest partitions, then partitions
///   move from a member to a less loaded subscriber of the same topic while the two differ by
///   two or more. Members with the same subscription end within one of each other, but
///   balance that needs a chain of moves across topics is not searched for.
/// - **Deterministic**: the same input gives the same output (ties go to the lower member id).
///
/// Previous owners: a claim on a partition that no longer exists is ignored; a partition
/// claimed by several members goes to the claim with the highest `generation_id` (`None` is
/// older than any generation); if the highest generation is claimed by more than one member,
/// *no* member counts as its previous owner, since at most one of them can be right and the
/// leader cannot tell which. The winner's claim is then dropped if it no longer subscribes to
/// the topic; the claim is not handed to a loser, whose information is older.
///
/// The assignment is the full target; under the cooperative protocol use
/// [`CooperativeStickyAssignor`](super::CooperativeStickyAssignor).
///
/// ```
/// use std::collections::BTreeMap;
/// use core_log::{ConsumerPartitionAssignor, StickyAssignor, Subscription, TopicPartition};
///
/// let partitions = BTreeMap::from([("t0".to_string(), 3)]);
/// let member = |owned: Vec<TopicPartition>| Subscription {
///     topics: vec!["t0".into()],
///     owned_partitions: owned,
///     generation_id: Some(1),
///     ..Default::default()
/// };
/// let tp = TopicPartition::new;
/// // c0 owned everything; c1 joins and takes only what balance requires.
/// let members = BTreeMap::from([
///     ("c0".to_string(), member(vec![tp("t0", 0), tp("t0", 1), tp("t0", 2)])),
///     ("c1".to_string(), member(vec![])),
/// ]);
/// let assignment = StickyAssignor.assign(&partitions, &members);
/// assert_eq!(assignment["c0"], [tp("t0", 0), tp("t0", 1)]);
/// assert_eq!(assignment["c1"], [tp("t0", 2)]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StickyAssignor;

impl ConsumerPartitionAssignor for StickyAssignor {
    fn name(&self) -> &str {
        "sticky"
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        sticky_assign(partitions_per_topic, subscriptions)
    }
}

/// A partition, borrowing its topic name from `partitions_per_topic`.
type Partition<'a> = (&'a str, u32);

/// The sticky algorithm, for `sticky` and `cooperative-sticky`. Members are indexed in
/// member-id order (the order of `subscriptions`).
pub(super) fn sticky_assign(
    partitions_per_topic: &BTreeMap<String, u32>,
    subscriptions: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let topics_of: Vec<BTreeSet<&str>> = subscriptions
        .values()
        .map(|s| subscribed_topics(partitions_per_topic, s))
        .collect();
    let previous = previous_owners(partitions_per_topic, subscriptions, &topics_of);
    let per_member = if topics_of.windows(2).all(|w| w[0] == w[1]) {
        let partitions: Vec<Partition<'_>> = topics_of
            .first()
            .into_iter()
            .flatten()
            .flat_map(|&t| {
                let count = partitions_per_topic.get(t).copied().unwrap_or(0);
                (0..count).map(move |p| (t, p))
            })
            .collect();
        assign_identical(&partitions, &previous, subscriptions.len())
    } else {
        assign_general(partitions_per_topic, &topics_of, &previous)
    };
    subscriptions
        .keys()
        .zip(per_member)
        .map(|(member, mut partitions)| {
            partitions.sort_unstable();
            let partitions = partitions
                .into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .collect();
            (member.clone(), partitions)
        })
        .collect()
}

/// Each partition's previous owner (a member index), by the rules in [`StickyAssignor`]'s
/// docs.
fn previous_owners<'a>(
    partitions_per_topic: &'a BTreeMap<String, u32>,
    subscriptions: &BTreeMap<String, Subscription>,
    topics_of: &[BTreeSet<&'a str>],
) -> BTreeMap<Partition<'a>, usize> {
    // Per partition: the highest generation claiming it, and its only claimant (None when
    // several members claim that generation).
    let mut claims: BTreeMap<Partition<'a>, (Option<i32>, Option<usize>)> = BTreeMap::new();
    for (member, subscription) in subscriptions.values().enumerate() {
        // A set, so that a member listing a partition twice does not contest itself.
        let owned: BTreeSet<Partition<'a>> = subscription
            .owned_partitions
            .iter()
            .filter_map(|tp| {
                let (topic, &count) = partitions_per_topic.get_key_value(&tp.topic)?;
                (tp.partition < count).then_some((topic.as_str(), tp.partition))
            })
            .collect();
        let generation = subscription.generation_id;
        for partition in owned {
            let claim = claims
                .entry(partition)
                .or_insert((generation, Some(member)));
            if claim.1 == Some(member) {
                continue;
            }
            if generation > claim.0 {
                *claim = (generation, Some(member));
            } else if generation == claim.0 {
                claim.1 = None;
            }
        }
    }
    claims
        .into_iter()
        .filter_map(|(partition, (_, owner))| {
            let owner = owner?;
            topics_of
                .get(owner)?
                .contains(partition.0)
                .then_some((partition, owner))
        })
        .collect()
}

/// Every member subscribes to `partitions`: quotas of floor and ceiling, the fewest moves.
fn assign_identical<'a>(
    partitions: &[Partition<'a>],
    previous: &BTreeMap<Partition<'a>, usize>,
    members: usize,
) -> Vec<Vec<Partition<'a>>> {
    let mut assigned: Vec<Vec<Partition<'a>>> = vec![Vec::new(); members];
    if members == 0 {
        return assigned;
    }
    for (&partition, &owner) in previous {
        if let Some(owned) = assigned.get_mut(owner) {
            owned.push(partition);
        }
    }
    let floor = partitions.len() / members;
    // The members that may hold one more than the floor. Giving these slots to members that
    // own more than the floor keeps one more partition in place per slot; which of those get
    // them does not change the number of moves, so member-id order decides.
    let mut ceil_slots = partitions.len() % members;
    for owned in &mut assigned {
        let quota = if owned.len() > floor && ceil_slots > 0 {
            ceil_slots -= 1;
            floor + 1
        } else {
            floor
        };
        owned.truncate(quota);
    }

    let kept: HashSet<Partition<'a>> = assigned.iter().flatten().copied().collect();
    let mut unassigned = partitions.iter().copied().filter(|p| !kept.contains(p));
    // Fill the members below the floor one partition at a time, in member-id order, as
    // Kafka does: a fresh group gets a round-robin-like spread over topics.
    let mut below_floor: Vec<usize> = (0..members)
        .filter(|&m| assigned[m].len() < floor)
        .collect();
    while !below_floor.is_empty() {
        below_floor.retain(|&m| match unassigned.next() {
            Some(p) => {
                assigned[m].push(p);
                assigned[m].len() < floor
            }
            // Cannot happen: the partitions left cover every member's gap to the floor.
            None => false,
        });
    }
    // What is left fills the remaining ceiling slots, one per member at the floor.
    let at_floor: Vec<usize> = (0..members)
        .filter(|&m| assigned[m].len() == floor)
        .collect();
    for (m, p) in at_floor.into_iter().zip(unassigned) {
        assigned[m].push(p);
    }
    assigned
}

/// One topic's state in [`assign_general`].
struct TopicState {
    partitions: u32,
    /// Member indexes subscribed to the topic, ascending.
    subscribers: Vec<usize>,
    /// Who holds which partitions of the topic now.
    held: BTreeMap<usize, BTreeSet<u32>>,
}

/// Members subscribe to different topics: keep valid owners, place the rest on the least
/// loaded subscriber, then level pairwise.
fn assign_general<'a>(
    partitions_per_topic: &'a BTreeMap<String, u32>,
    topics_of: &[BTreeSet<&'a str>],
    previous: &BTreeMap<Partition<'a>, usize>,
) -> Vec<Vec<Partition<'a>>> {
    let mut topics: BTreeMap<&'a str, TopicState> = BTreeMap::new();
    for (member, subscribed) in topics_of.iter().enumerate() {
        for &topic in subscribed {
            topics
                .entry(topic)
                .or_insert_with(|| TopicState {
                    partitions: partitions_per_topic.get(topic).copied().unwrap_or(0),
                    subscribers: Vec::new(),
                    held: BTreeMap::new(),
                })
                .subscribers
                .push(member);
        }
    }
    let mut counts = vec![0usize; topics_of.len()];
    for (&(topic, partition), &owner) in previous {
        // `previous` only has owners subscribed to the topic, so the topic is here.
        if let Some(state) = topics.get_mut(topic) {
            state.held.entry(owner).or_default().insert(partition);
            counts[owner] += 1;
        }
    }

    // Unowned partitions, those with the fewest possible members first: they have the least
    // choice, so placing them early leaves the flexible ones to even out the load.
    let mut unowned: Vec<(usize, &'a str, u32)> = topics
        .iter()
        .flat_map(|(&topic, state)| {
            (0..state.partitions)
                .filter(move |&p| !previous.contains_key(&(topic, p)))
                .map(move |p| (state.subscribers.len(), topic, p))
        })
        .collect();
    unowned.sort_unstable();
    for (_, topic, partition) in unowned {
        let Some(state) = topics.get_mut(topic) else {
            continue;
        };
        let Some(&member) = state.subscribers.iter().min_by_key(|&&m| (counts[m], m)) else {
            continue;
        };
        state.held.entry(member).or_default().insert(partition);
        counts[member] += 1;
    }

    // Level: move a partition from the most loaded holder of a topic to its least loaded
    // subscriber while they differ by two or more. Each move lowers the sum of squared counts,
    // so this ends; at the end no single move can improve the balance.
    let mut changed = true;
    while changed {
        changed = false;
        for (&topic, state) in &mut topics {
            while let Some((donor, receiver)) = level_step(state, &counts) {
                let Some(from) = state.held.get_mut(&donor) else {
                    break;
                };
                // Move a partition the donor did not own before if it has one: that keeps the
                // previous owners' partitions in place.
                let pick = from
                    .iter()
                    .copied()
                    .find(|&p| previous.get(&(topic, p)) != Some(&donor))
                    .or_else(|| from.last().copied());
                let Some(partition) = pick else {
                    break;
                };
                from.remove(&partition);
                if from.is_empty() {
                    state.held.remove(&donor);
                }
                state.held.entry(receiver).or_default().insert(partition);
                counts[donor] -= 1;
                counts[receiver] += 1;
                changed = true;
            }
        }
    }

    let mut assigned: Vec<Vec<Partition<'a>>> = vec![Vec::new(); topics_of.len()];
    for (&topic, state) in &topics {
        for (&member, partitions) in &state.held {
            assigned[member].extend(partitions.iter().map(|&p| (topic, p)));
        }
    }
    assigned
}

/// The next leveling move within one topic, if one improves the balance: the most loaded
/// member holding a partition of it (lowest id on ties) and its least loaded subscriber.
fn level_step(state: &TopicState, counts: &[usize]) -> Option<(usize, usize)> {
    let donor = state
        .held
        .keys()
        .copied()
        .max_by_key(|&m| (counts[m], std::cmp::Reverse(m)))?;
    let receiver = state
        .subscribers
        .iter()
        .copied()
        .min_by_key(|&m| (counts[m], m))?;
    (counts[donor] > counts[receiver] + 1).then_some((donor, receiver))
}

/// Property checks shared by `sticky` and `cooperative-sticky`.
#[cfg(test)]
pub(super) mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::super::testing::*;
    use super::super::{ConsumerPartitionAssignor, Subscription};

    /// One membership change: add a new member, or remove the member at this index (modulo
    /// the group size).
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Change {
        Add,
        Remove(usize),
    }

    pub(crate) fn arb_change() -> impl Strategy<Value = Change> {
        prop_oneof![Just(Change::Add), any::<usize>().prop_map(Change::Remove)]
    }

    /// A group with identical subscriptions: members, their subscriptions (with owned
    /// partitions fed back) and the current assignment.
    pub(crate) struct Group {
        pub(crate) ppt: BTreeMap<String, u32>,
        pub(crate) subs: BTreeMap<String, Subscription>,
        pub(crate) assignment: Assignment,
        pub(crate) generation: i32,
        added: usize,
    }

    impl Group {
        /// A fresh group of `members`, assigned once.
        pub(crate) fn new(
            assignor: &dyn ConsumerPartitionAssignor,
            ppt: BTreeMap<String, u32>,
            members: usize,
        ) -> Result<Group, TestCaseError> {
            let subs = identical_group(&ppt, members);
            let assignment = assign_checked(assignor, &ppt, &subs);
            prop_assert!(max_minus_min(&counts(&assignment)) <= 1);
            let subs = feed_back(&subs, &assignment, 1);
            Ok(Group {
                ppt,
                subs,
                assignment,
                generation: 1,
                added: 0,
            })
        }

        /// Applies `change`, rebalances and checks that the result is balanced and moved
        /// exactly the minimum number of partitions.
        pub(crate) fn change(
            &mut self,
            assignor: &dyn ConsumerPartitionAssignor,
            change: Change,
        ) -> Result<(), TestCaseError> {
            let mut subs = self.subs.clone();
            match change {
                Change::Add => {
                    let all: Vec<&str> = self.ppt.keys().map(String::as_str).collect();
                    subs.insert(format!("new{:02}", self.added), subscription(&all));
                    self.added += 1;
                }
                Change::Remove(i) => {
                    if subs.len() > 1 {
                        let victim = subs.keys().nth(i % subs.len()).cloned();
                        subs.remove(&victim.unwrap_or_default());
                    }
                }
            }
            let next = check_minimal(assignor, &self.ppt, &subs, &self.assignment)?;
            self.generation += 1;
            self.subs = feed_back(&subs, &next, self.generation);
            self.assignment = next;
            Ok(())
        }
    }

    /// Assigns `subs` (identical subscriptions whose owned partitions describe `before`) and
    /// checks the result is complete, balanced, and moved exactly the fewest partitions any
    /// balanced assignment could.
    pub(crate) fn check_minimal(
        assignor: &dyn ConsumerPartitionAssignor,
        ppt: &BTreeMap<String, u32>,
        subs: &BTreeMap<String, Subscription>,
        before: &Assignment,
    ) -> Result<Assignment, TestCaseError> {
        let after = assign_checked(assignor, ppt, subs);
        prop_assert!(
            max_minus_min(&counts(&after)) <= 1,
            "unbalanced: {:?}",
            counts(&after)
        );
        let owned: Vec<usize> = subs
            .keys()
            .map(|m| before.get(m).map_or(0, Vec::len))
            .collect();
        let total = all_partitions(ppt).len();
        prop_assert_eq!(moved(before, &after), minimum_moves(&owned, total));
        Ok(after)
    }

    /// From any disjoint previous ownership (partitions owned by present members, by members
    /// that left, or by nobody): balanced and the fewest moves.
    pub(crate) fn minimal_from_any_ownership(
        assignor: &dyn ConsumerPartitionAssignor,
        ppt: BTreeMap<String, u32>,
        members: usize,
        owner_picks: Vec<usize>,
    ) -> Result<(), TestCaseError> {
        let subs = identical_group(&ppt, members);
        // Owner k < members is a member, members..2*members a member that left, else nobody.
        let mut before: Assignment = BTreeMap::new();
        for (p, pick) in all_partitions(&ppt).into_iter().zip(owner_picks) {
            let pick = pick % (2 * members + 1);
            if pick < 2 * members {
                before.entry(member_name(pick)).or_default().push(p);
            }
        }
        let subs = feed_back(&subs, &before, 7);
        check_minimal(assignor, &ppt, &subs, &before)?;
        Ok(())
    }

    /// Heterogeneous subscriptions with random (partly stale, partly conflicting) ownership:
    /// complete, members with equal subscriptions within one of each other, and assigning
    /// the result again moves nothing.
    pub(crate) fn heterogeneous(
        assignor: &dyn ConsumerPartitionAssignor,
        ppt: BTreeMap<String, u32>,
        subs: BTreeMap<String, Subscription>,
        owned_picks: Vec<(usize, usize, Option<i32>)>,
    ) -> Result<(), TestCaseError> {
        let mut subs = subs;
        let names: Vec<String> = subs.keys().cloned().collect();
        let all = all_partitions(&ppt);
        for (member, partition, generation) in owned_picks {
            let Some(s) = subs.get_mut(&names[member % names.len()]) else {
                continue;
            };
            // Some picks name partitions past the end of a topic, which must be ignored.
            let p = match all.get(partition % (all.len() + 2)) {
                Some(p) => p.clone(),
                None => tp("t0", 1000),
            };
            s.owned_partitions.push(p);
            s.generation_id = generation;
        }
        let first = assign_checked(assignor, &ppt, &subs);
        for (a, sa) in &subs {
            for (b, sb) in &subs {
                let same = {
                    let ta: Vec<&String> =
                        sa.topics.iter().filter(|t| ppt.contains_key(*t)).collect();
                    let tb: Vec<&String> =
                        sb.topics.iter().filter(|t| ppt.contains_key(*t)).collect();
                    ta == tb
                };
                if same {
                    prop_assert!(
                        first[a].len().abs_diff(first[b].len()) <= 1,
                        "{a} vs {b}: {first:?}"
                    );
                }
            }
        }
        let again = assign_checked(assignor, &ppt, &feed_back(&subs, &first, 100));
        prop_assert_eq!(again, first);
        Ok(())
    }

    /// Claims on non-existent partitions, duplicates within a member, and conflicting claims
    /// across generations still give a complete, balanced assignment.
    pub(crate) fn tolerates_garbage_ownership(
        assignor: &dyn ConsumerPartitionAssignor,
        ppt: BTreeMap<String, u32>,
        members: usize,
        owned_picks: Vec<(usize, usize, Option<i32>)>,
    ) -> Result<(), TestCaseError> {
        let mut subs = identical_group(&ppt, members);
        let all = all_partitions(&ppt);
        for (member, partition, generation) in owned_picks {
            let Some(s) = subs.get_mut(&member_name(member % members)) else {
                continue;
            };
            let p = match all.get(partition % (all.len() + 2)) {
                Some(p) => p.clone(),
                None => tp("gone", 0),
            };
            s.owned_partitions.push(p);
            s.generation_id = generation;
        }
        let a = assign_checked(assignor, &ppt, &subs);
        prop_assert!(max_minus_min(&counts(&a)) <= 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::testing::*;
    use super::properties::*;
    use super::*;

    fn owning(topics: &[&str], owned: &[TopicPartition], generation: Option<i32>) -> Subscription {
        Subscription {
            owned_partitions: owned.to_vec(),
            generation_id: generation,
            ..subscription(topics)
        }
    }

    #[test]
    fn kafka_documented_example() {
        // StickyAssignor's Javadoc: three members, t0..t3 with two partitions each.
        let ppt = topics(&[("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2)]);
        let subs = identical_group(&ppt, 3);
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["m00"], vec![tp("t0", 0), tp("t1", 1), tp("t3", 0)]);
        assert_eq!(a["m01"], vec![tp("t0", 1), tp("t2", 0), tp("t3", 1)]);
        assert_eq!(a["m02"], vec![tp("t1", 0), tp("t2", 1)]);

        // m01 leaves: the others keep theirs and share its three.
        let mut subs = feed_back(&subs, &a, 1);
        subs.remove("m01");
        let b = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(b["m00"].len(), 4);
        assert_eq!(b["m02"].len(), 4);
        assert!(a["m00"].iter().all(|p| b["m00"].contains(p)));
        assert!(a["m02"].iter().all(|p| b["m02"].contains(p)));
    }

    #[test]
    fn kafka_documented_heterogeneous_example() {
        // StickyAssignor's Javadoc: C0 takes t0; C1 t0, t1; C2 t0, t1, t2.
        let ppt = topics(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let subs: BTreeMap<String, Subscription> = [
            ("c0".to_string(), subscription(&["t0"])),
            ("c1".to_string(), subscription(&["t0", "t1"])),
            ("c2".to_string(), subscription(&["t0", "t1", "t2"])),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["c0"], vec![tp("t0", 0)]);
        assert_eq!(a["c1"], vec![tp("t1", 0), tp("t1", 1)]);
        assert_eq!(a["c2"], vec![tp("t2", 0), tp("t2", 1), tp("t2", 2)]);

        // C0 leaves: only its partition moves.
        let mut subs = feed_back(&subs, &a, 1);
        subs.remove("c0");
        let b = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(b["c1"], vec![tp("t0", 0), tp("t1", 0), tp("t1", 1)]);
        assert_eq!(b["c2"], a["c2"]);
    }

    #[test]
    fn the_highest_generation_wins_a_contested_partition() {
        let ppt = topics(&[("t", 3)]);
        let all = ["t"];
        // Fresh, m00 would get t-0, m01 t-1 and m02 t-2.
        let subs: BTreeMap<String, Subscription> = [
            ("m00".to_string(), owning(&all, &[tp("t", 2)], Some(4))),
            ("m01".to_string(), owning(&all, &[tp("t", 2)], Some(5))),
            ("m02".to_string(), owning(&all, &[], None)),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["m01"], vec![tp("t", 2)]);

        // Any generation beats none.
        let subs: BTreeMap<String, Subscription> = [
            ("m00".to_string(), owning(&all, &[tp("t", 2)], Some(0))),
            ("m01".to_string(), owning(&all, &[tp("t", 2)], None)),
            ("m02".to_string(), owning(&all, &[], None)),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["m00"], vec![tp("t", 2)]);
    }

    #[test]
    fn a_tie_at_the_highest_generation_leaves_the_partition_ownerless() {
        // Fresh, m0k would get t-k; t-3 is contested by m00, m01 (a tie) and m02 (older).
        let ppt = topics(&[("t", 4)]);
        let all = ["t"];
        for generation in [None, Some(3)] {
            // Without generations there is nothing older than the tie.
            let older: &[TopicPartition] = if generation.is_some() {
                &[tp("t", 3)]
            } else {
                &[]
            };
            let subs: BTreeMap<String, Subscription> = [
                ("m00".to_string(), owning(&all, &[tp("t", 3)], generation)),
                ("m01".to_string(), owning(&all, &[tp("t", 3)], generation)),
                ("m02".to_string(), owning(&all, older, Some(1))),
                ("m03".to_string(), owning(&all, &[], None)),
            ]
            .into();
            let a = assign_checked(&StickyAssignor, &ppt, &subs);
            // As if nobody owned anything.
            for k in 0..4 {
                assert_eq!(
                    a[&member_name(k)],
                    vec![tp("t", k as u32)],
                    "{generation:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_claims_are_dropped() {
        let ppt = topics(&[("t0", 2), ("t1", 2)]);
        let all = ["t0", "t1"];
        let subs: BTreeMap<String, Subscription> = [
            // Duplicates do not make m00 contest itself; t0-7 and gone-0 do not exist.
            (
                "m00".to_string(),
                owning(
                    &all,
                    &[
                        tp("t0", 1),
                        tp("t0", 1),
                        tp("t0", 7),
                        tp("gone", 0),
                        tp("t1", 1),
                    ],
                    Some(2),
                ),
            ),
            ("m01".to_string(), owning(&all, &[], Some(2))),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["m00"], vec![tp("t0", 1), tp("t1", 1)]);
        assert_eq!(a["m01"], vec![tp("t0", 0), tp("t1", 0)]);
    }

    #[test]
    fn an_owner_that_dropped_the_topic_loses_its_partitions() {
        let ppt = topics(&[("t0", 2), ("t1", 2)]);
        let subs: BTreeMap<String, Subscription> = [
            (
                "m00".to_string(),
                owning(&["t0"], &[tp("t0", 0), tp("t1", 0), tp("t1", 1)], Some(2)),
            ),
            (
                "m01".to_string(),
                owning(&["t0", "t1"], &[tp("t0", 1)], Some(2)),
            ),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        // m00 keeps t0-0 but not t1; m01, the only subscriber of t1, takes both t1 partitions
        // and then, at 3 against 1, passes t0-1 to m00 for balance.
        assert_eq!(a["m00"], vec![tp("t0", 0), tp("t0", 1)]);
        assert_eq!(a["m01"], vec![tp("t1", 0), tp("t1", 1)]);
    }

    #[test]
    fn heterogeneous_leveling_moves_only_what_balance_needs() {
        // m00 owns t0-0..t0-3 and subscribes to t0 only; m01 owns nothing and subscribes to
        // t0 and t1 (one partition). t1-0 goes to m01; leveling then moves one t0 partition
        // from m00 (4) to m01 (1), the fewest moves that balance 3 and 2.
        let ppt = topics(&[("t0", 4), ("t1", 1)]);
        let owned: Vec<TopicPartition> = (0..4).map(|p| tp("t0", p)).collect();
        let subs: BTreeMap<String, Subscription> = [
            ("m00".to_string(), owning(&["t0"], &owned, Some(1))),
            ("m01".to_string(), owning(&["t0", "t1"], &[], Some(1))),
        ]
        .into();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert_eq!(a["m00"].len(), 3);
        assert_eq!(a["m01"].len(), 2);
        assert!(a["m00"].iter().all(|p| owned.contains(p)));
    }

    #[test]
    fn large_groups_are_assigned() {
        // 100 members, 2000 partitions: identical, then heterogeneous subscriptions, each
        // assigned twice (fresh, then sticky from the first result).
        let ppt: BTreeMap<String, u32> = (0..20).map(|t| (format!("t{t:02}"), 100)).collect();
        let subs = identical_group(&ppt, 100);
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        assert!(max_minus_min(&counts(&a)) <= 1);
        let mut subs = feed_back(&subs, &a, 1);
        subs.remove("m50");
        check_minimal(&StickyAssignor, &ppt, &subs, &a).unwrap();

        let names: Vec<&str> = ppt.keys().map(String::as_str).collect();
        let subs: BTreeMap<String, Subscription> = (0..100)
            .map(|m| {
                let mine: Vec<&str> = names
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| (t + m) % 3 != 0)
                    .map(|(_, n)| *n)
                    .collect();
                (member_name(m), subscription(&mine))
            })
            .collect();
        let a = assign_checked(&StickyAssignor, &ppt, &subs);
        let mut subs = feed_back(&subs, &a, 1);
        subs.remove("m50");
        assign_checked(&StickyAssignor, &ppt, &subs);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn identical_subscriptions_are_balanced(ppt in arb_topics(6, 30), members in 1usize..15) {
            Group::new(&StickyAssignor, ppt, members)?;
        }

        #[test]
        fn moves_the_minimum_from_any_previous_ownership(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            owner_picks in proptest::collection::vec(any::<usize>(), 100),
        ) {
            minimal_from_any_ownership(&StickyAssignor, ppt, members, owner_picks)?;
        }

        #[test]
        fn removing_a_member_moves_the_minimum(
            ppt in arb_topics(4, 25),
            members in 2usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
            victim in any::<usize>(),
        ) {
            let mut group = Group::new(&StickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&StickyAssignor, change)?;
            }
            group.change(&StickyAssignor, Change::Remove(victim))?;
        }

        #[test]
        fn adding_a_member_moves_the_minimum(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
        ) {
            let mut group = Group::new(&StickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&StickyAssignor, change)?;
            }
            group.change(&StickyAssignor, Change::Add)?;
        }

        #[test]
        fn the_same_members_again_move_nothing(
            ppt in arb_topics(4, 25),
            members in 1usize..10,
            churn in proptest::collection::vec(arb_change(), 0..4),
        ) {
            let mut group = Group::new(&StickyAssignor, ppt, members)?;
            for change in churn {
                group.change(&StickyAssignor, change)?;
            }
            let again = assign_checked(&StickyAssignor, &group.ppt, &group.subs);
            prop_assert_eq!(again, group.assignment);
        }

        #[test]
        fn garbage_ownership_is_tolerated(
            ppt in arb_topics(4, 20),
            members in 1usize..8,
            owned_picks in proptest::collection::vec(
                (any::<usize>(), any::<usize>(), proptest::option::of(0i32..3)), 0..40),
        ) {
            tolerates_garbage_ownership(&StickyAssignor, ppt, members, owned_picks)?;
        }

        #[test]
        fn heterogeneous_subscriptions_assign_each_partition_once_to_a_subscriber(
            (ppt, subs) in arb_heterogeneous(5, 12, 8),
            owned_picks in proptest::collection::vec(
                (any::<usize>(), any::<usize>(), proptest::option::of(0i32..3)), 0..40),
        ) {
            heterogeneous(&StickyAssignor, ppt, subs, owned_picks)?;
        }
    }
}
