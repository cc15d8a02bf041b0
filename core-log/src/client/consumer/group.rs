//! The consumer's side of a consumer group: Kafka's `ConsumerCoordinator`. It drives the
//! membership from `poll` (join, the leader's assignment, sync, heartbeat), revokes and
//! assigns partitions through the [`ConsumerRebalanceListener`], and commits offsets.
//!
//! ```text
//!  poll ─► Stable ──heartbeat: RebalanceInProgress──► prepare (auto-commit; eager: revoke all)
//!            ▲                                           │
//!            │                                         join ──Pending──► (woken, poll again)
//!            │                                           │ Joined (leader: run the assignor)
//!            └─── complete (cooperative: revoke moved,  sync ──Pending──► (woken, poll again)
//!                 rejoin if any; assign new ones) ◄──────┘ Assigned
//! ```
//!
//! Every step is a call into the in-process coordinator that returns at once; a step that
//! must wait for other members returns and `poll` sleeps until the coordinator wakes it (or
//! `heartbeat.interval.ms` passes), so one thread drives both fetching and membership. Under
//! cooperative rebalancing the consumer keeps fetching its partitions while the group
//! rebalances.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Consumer, Position};
use crate::client::consumer::assignor::{
    RebalanceProtocol, SharedAssignor, Subscription, cooperative_adjust, validate_assignment,
};
use crate::coordinator::group::{
    JoinOutcome, JoinRequest, MemberLink, MemberRef, OffsetAndMetadata, SyncOutcome,
};
use crate::error::{Error, Result};
use crate::storage::topic::{TopicPartition, is_internal_topic, validate_topic_name};
use crate::sync::AppendWaker;

/// Callbacks around a rebalance, run inside `poll` on the consumer's thread (Kafka's
/// `ConsumerRebalanceListener`). Each gets the consumer, so it may commit or seek.
///
/// ```
/// use core_log::{Consumer, ConsumerRebalanceListener, Result, TopicPartition};
/// /// Commits what was consumed before partitions go to another member.
/// struct CommitOnRevoke;
/// impl ConsumerRebalanceListener<String, String> for CommitOnRevoke {
///     fn on_partitions_revoked(
///         &mut self,
///         consumer: &mut Consumer<String, String>,
///         _partitions: &[TopicPartition],
///     ) -> Result<()> {
///         consumer.commit_sync()
///     }
/// }
/// ```
pub trait ConsumerRebalanceListener<K, V>: Send {
    /// The consumer gives these partitions up: commit what was processed now. Under eager
    /// rebalancing, every partition at the start of each rebalance; under cooperative, only
    /// those moving to another member, after the rebalance.
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut Consumer<K, V>,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let _ = (consumer, partitions);
        Ok(())
    }

    /// The consumer now owns these partitions (under cooperative rebalancing, the added
    /// ones only; possibly none). Positions start at the committed offsets.
    fn on_partitions_assigned(
        &mut self,
        consumer: &mut Consumer<K, V>,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let _ = (consumer, partitions);
        Ok(())
    }

    /// The consumer lost these partitions without a chance to commit: the group removed it
    /// (session or poll interval expired), so other members may own them already. Commits
    /// would fail. By default this calls `on_partitions_revoked`, as Kafka's does.
    fn on_partitions_lost(
        &mut self,
        consumer: &mut Consumer<K, V>,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.on_partitions_revoked(consumer, partitions)
    }
}

/// Who a consumer is in its group, for committing offsets through a transactional producer
/// (Kafka's `ConsumerGroupMetadata`, KIP-447): the group checks the generation, so a member
/// the group has moved on from cannot commit, even inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation of the member's assignment; -1 outside a generation.
    pub generation_id: i32,
    /// The member id; empty outside the group.
    pub member_id: String,
    /// `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
}

/// What the consumer subscribed to.
#[derive(Debug, Clone)]
pub(super) enum Subscribed {
    Topics(Vec<String>),
    /// Matched against whole topic names; internal topics never match.
    Pattern(regex_lite::Regex),
}

#[derive(Debug)]
enum MemberState {
    /// Not in a generation: the next step joins.
    Joining,
    /// Joined; waiting for the assignment. The leader carries the one it computed.
    Syncing {
        assignment: Option<BTreeMap<String, Vec<TopicPartition>>>,
    },
    /// Has its assignment for `generation`.
    Stable,
}

/// Used to name consumers that set no `client.id`, as Kafka's `consumer-<group>-<n>`.
static CLIENT_IDS: AtomicU64 = AtomicU64::new(1);

/// One consumer's membership in its group.
#[derive(Debug)]
pub(super) struct GroupMember {
    pub(super) group_id: String,
    instance_id: Option<String>,
    client_id: String,
    member_id: Option<String>,
    /// The generation of the current assignment, -1 before the first.
    generation: i32,
    state: MemberState,
    /// Held while the consumer lives: the coordinator's proof of liveness and its way to
    /// wake the consumer.
    pub(super) link: Arc<MemberLink>,
    protocol: RebalanceProtocol,
    assignors: Vec<SharedAssignor>,
    pub(super) subscribed: Option<Subscribed>,
    /// The topics the subscription resolved to, at `metadata_version`.
    topics: Vec<String>,
    metadata_version: u64,
    /// The leader's view when it assigned: partitions per topic of every member's topics.
    assigned_metadata: Option<BTreeMap<String, u32>>,
    /// Rejoin at the next step (cooperative follow-up, changed subscription or metadata).
    rejoin_needed: bool,
    /// When the next auto-commit is due (log clock, ms).
    next_auto_commit: i64,
    /// Another consumer took this one's `group.instance.id`: fatal, as in Kafka. Every later
    /// poll reports it.
    fenced: Option<String>,
}

impl GroupMember {
    pub(super) fn new(
        group_id: &str,
        config: &super::ConsumerConfig,
        waker: Arc<AppendWaker>,
        now: i64,
    ) -> Self {
        let client_id = if config.client_id.is_empty() {
            format!(
                "consumer-{group_id}-{}",
                CLIENT_IDS.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            config.client_id.clone()
        };
        GroupMember {
            group_id: group_id.to_string(),
            instance_id: config.group_instance_id.clone(),
            client_id,
            member_id: None,
            generation: -1,
            state: MemberState::Joining,
            link: Arc::new(MemberLink::new(waker)),
            protocol: config.rebalance_protocol(),
            assignors: config.partition_assignment_strategy.clone(),
            subscribed: None,
            topics: Vec::new(),
            metadata_version: u64::MAX,
            assigned_metadata: None,
            rejoin_needed: false,
            next_auto_commit: now.saturating_add(config.auto_commit_interval_ms as i64),
            fenced: None,
        }
    }

    fn who(&self) -> MemberRef<'_> {
        MemberRef {
            group_id: &self.group_id,
            generation: self.generation,
            member_id: self.member_id.as_deref().unwrap_or(""),
            group_instance_id: self.instance_id.as_deref(),
        }
    }

    /// Who commits: the member in its generation, or (not subscribed) the "simple" consumer
    /// with generation -1 that only a group without members accepts.
    fn committer(&self) -> MemberRef<'_> {
        if self.subscribed.is_some() && self.member_id.is_some() {
            self.who()
        } else {
            MemberRef {
                group_id: &self.group_id,
                generation: -1,
                member_id: "",
                group_instance_id: None,
            }
        }
    }
}

/// Which listener callback to run.
#[derive(Clone, Copy)]
enum Callback {
    Revoked,
    Assigned,
    Lost,
}

impl<K, V> Consumer<K, V> {
    /// Subscribes to `topics` as a member of the consumer group `group.id` (Kafka's
    /// `subscribe`): the group's partitions of these topics are divided among its members,
    /// and `poll` joins the group and follows its rebalances. Replaces an earlier
    /// subscription. Topics that do not exist yet are assigned once they are created.
    ///
    /// Fails with `IllegalState` without a `group.id` or while partitions are assigned by
    /// hand, and with `InvalidTopicName` for a bad name.
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<()> {
        let mut names: Vec<String> = Vec::with_capacity(topics.len());
        for t in topics {
            validate_topic_name(t.as_ref())?;
            names.push(t.as_ref().to_string());
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return self.unsubscribe();
        }
        self.set_subscription(Subscribed::Topics(names))
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a regular expression),
    /// now and as topics are created or deleted (Kafka's `subscribe(Pattern)`). Internal
    /// topics such as `__consumer_offsets` never match. Fails with `InvalidConfig` for a
    /// pattern that does not parse.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
            Error::InvalidConfig {
                key: "subscription pattern".into(),
                value: pattern.to_string(),
                reason: "a regular expression",
            }
        })?;
        self.set_subscription(Subscribed::Pattern(regex))
    }

    fn set_subscription(&mut self, subscribed: Subscribed) -> Result<()> {
        if self.in_callback {
            return Err(Error::IllegalState {
                reason: "subscribe from inside a rebalance callback",
            });
        }
        if !self.assigned.is_empty() && self.group.as_ref().is_none_or(|g| g.subscribed.is_none()) {
            return Err(Error::IllegalState {
                reason: "subscribe while partitions are assigned by hand: call unsubscribe first",
            });
        }
        let g = self.group.as_mut().ok_or(Error::IllegalState {
            reason: "subscribe needs a group.id",
        })?;
        g.subscribed = Some(subscribed);
        // Resolved (and a rejoin requested if it changed) at the next poll.
        g.metadata_version = u64::MAX;
        Ok(())
    }

    /// The topics the subscription covers now (for a pattern: the matching topics as of the
    /// last poll).
    pub fn subscription(&self) -> Vec<String> {
        match self.group.as_ref().and_then(|g| g.subscribed.as_ref()) {
            Some(Subscribed::Topics(t)) => t.clone(),
            Some(Subscribed::Pattern(_)) => self
                .group
                .as_ref()
                .map(|g| g.topics.clone())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Sets the callbacks run around rebalances (Kafka passes it to `subscribe`).
    pub fn set_rebalance_listener(
        &mut self,
        listener: impl ConsumerRebalanceListener<K, V> + 'static,
    ) {
        self.listener = Some(Box::new(listener));
    }

    /// Leaves the group (after committing, with `enable.auto.commit`, and revoking through
    /// the listener) and drops the subscription, or drops a manual assignment (Kafka's
    /// `unsubscribe`).
    pub fn unsubscribe(&mut self) -> Result<()> {
        if self.in_callback {
            return Err(Error::IllegalState {
                reason: "unsubscribe from inside a rebalance callback",
            });
        }
        let res = self.leave(true);
        if let Some(g) = self.group.as_mut() {
            g.subscribed = None;
            g.topics.clear();
        }
        self.set_assignment(&[])?;
        res
    }

    /// Commits the position of every assigned partition (the offset after the last record
    /// `poll` returned) to the group, and waits until it is stored. Kafka's `commitSync()`.
    ///
    /// Fails with `IllegalGeneration` or `UnknownMemberId` if the group rebalanced without
    /// this consumer meanwhile (its partitions may belong to another member now: the commit
    /// is rejected so it cannot overwrite theirs), `RebalanceInProgress` while the group
    /// waits for the leader's assignment, and `IllegalState` without a `group.id`.
    pub fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.consumed_offsets();
        self.commit_sync_offsets(offsets)
    }

    /// Commits the given offsets (the offset of the next record to read, with metadata).
    /// Kafka's `commitSync(Map)`.
    pub fn commit_sync_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, OffsetAndMetadata)>,
    ) -> Result<()> {
        let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = offsets.into_iter().collect();
        let g = self.group.as_ref().ok_or(Error::IllegalState {
            reason: "commit needs a group.id",
        })?;
        let who = g.committer();
        let rejoining = g.subscribed.is_some() && !matches!(g.state, MemberState::Stable);
        match self.log.offset_commit(who, &offsets) {
            // Mid-rebalance (cooperative members keep consuming meanwhile) the group may
            // already be at the next generation, which this member is joining: retriable, as
            // Kafka's client reports it, not a lost membership.
            Err(Error::IllegalGeneration { group, .. }) if rejoining => {
                Err(Error::RebalanceInProgress { group })
            }
            r => r,
        }
    }

    /// Commits the positions of every assigned partition and reports the outcome to
    /// `callback` (Kafka's `commitAsync`). The in-process coordinator stores commits at
    /// once, so the callback runs before this returns, on this thread.
    pub fn commit_async(
        &mut self,
        callback: impl FnOnce(Result<&[(TopicPartition, OffsetAndMetadata)]>),
    ) {
        let offsets = self.consumed_offsets();
        let res = self.commit_sync_offsets(offsets.iter().cloned());
        callback(res.map(|()| offsets.as_slice()));
    }

    /// The group's committed offsets for these partitions (`None` where nothing is
    /// committed). Kafka's `committed(Set)`.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let g = self.group.as_ref().ok_or(Error::IllegalState {
            reason: "committed offsets need a group.id",
        })?;
        let found = self.log.offset_fetch(&g.group_id, Some(partitions))?;
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), found.get(tp).cloned()))
            .collect())
    }

    /// The consumer's group identity, to hand to a transactional producer's
    /// `send_offsets_to_transaction`. Fails with `IllegalState` without a `group.id`.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let g = self.group.as_ref().ok_or(Error::IllegalState {
            reason: "group metadata needs a group.id",
        })?;
        let who = g.committer();
        Ok(ConsumerGroupMetadata {
            group_id: g.group_id.clone(),
            generation_id: who.generation,
            member_id: who.member_id.to_string(),
            group_instance_id: who.group_instance_id.map(str::to_string),
        })
    }

    /// The group member's id, once it has joined.
    pub fn member_id(&self) -> Option<&str> {
        self.group.as_ref().and_then(|g| g.member_id.as_deref())
    }

    /// The generation of the current assignment (-1 before the first).
    pub fn generation(&self) -> i32 {
        self.group.as_ref().map_or(-1, |g| g.generation)
    }

    /// Positions of the assigned partitions that have one: what `commit_sync` commits. A
    /// partition whose topic was deleted has nothing to commit (the group would refuse the
    /// whole commit for it, and a recreated topic is not where the old position was).
    fn consumed_offsets(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.assigned
            .iter()
            .filter(|a| !a.missing)
            .filter_map(|a| match a.position {
                Position::At(p) => Some((a.tp.clone(), OffsetAndMetadata::new(p))),
                _ => None,
            })
            .collect()
    }

    /// Auto-commit of the consumed positions, when due (or `force`d before a revocation).
    /// A failure is logged, as Kafka's client does: the next commit covers the same records.
    pub(super) fn maybe_auto_commit(&mut self, force: bool) {
        let Some(g) = self.group.as_ref() else { return };
        if !self.config.enable_auto_commit || self.assigned.is_empty() {
            return;
        }
        let now = self.log.clock().now_ms();
        if !force && now < g.next_auto_commit {
            return;
        }
        if g.subscribed.is_some() && g.generation < 0 {
            return;
        }
        let interval = self.config.auto_commit_interval_ms as i64;
        if let Some(g) = self.group.as_mut() {
            g.next_auto_commit = now.saturating_add(interval);
        }
        let offsets = self.consumed_offsets();
        if let Err(e) = self.commit_sync_offsets(offsets) {
            tracing::warn!(error = %e, "auto-commit failed");
        }
    }

    /// Runs one listener callback, with the consumer lent to it.
    fn callback(&mut self, which: Callback, partitions: &[TopicPartition]) -> Result<()> {
        let Some(mut listener) = self.listener.take() else {
            return Ok(());
        };
        self.in_callback = true;
        let res = match which {
            Callback::Revoked => listener.on_partitions_revoked(self, partitions),
            Callback::Assigned => listener.on_partitions_assigned(self, partitions),
            Callback::Lost => listener.on_partitions_lost(self, partitions),
        };
        self.in_callback = false;
        self.listener = Some(listener);
        res
    }

    /// Drives the membership as far as it goes without waiting: returns when the member is
    /// stable, or when a step waits for other members (the coordinator wakes the consumer).
    /// An error from a listener callback is returned after the step it happened in.
    pub(super) fn update_group(&mut self) -> Result<()> {
        if self.group.as_ref().is_none_or(|g| g.subscribed.is_none()) {
            return Ok(());
        }
        if let Some(g) = self.group.as_ref()
            && let Some(instance) = &g.fenced
        {
            return Err(Error::FencedInstanceId {
                group: g.group_id.clone(),
                group_instance_id: instance.clone(),
            });
        }
        let mut first_err: Option<Error> = None;
        let keep = |r: Result<()>, first_err: &mut Option<Error>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        self.refresh_subscription()?;
        // Each pass moves one state forward; a handful always suffices, and the bound keeps
        // a misbehaving coordinator from spinning.
        for _ in 0..8 {
            if self.group.as_ref().is_none_or(|g| g.subscribed.is_none()) {
                break;
            }
            let g = self
                .group
                .as_mut()
                .ok_or(Error::IllegalState { reason: "no group" })?;
            match &mut g.state {
                MemberState::Stable => {
                    if g.rejoin_needed {
                        let r = self.prepare_rejoin();
                        keep(r, &mut first_err);
                        continue;
                    }
                    let who = g.who();
                    let hb = self.log.heartbeat(who, true);
                    match hb {
                        Ok(()) => break,
                        Err(Error::RebalanceInProgress { .. }) => {
                            let r = self.prepare_rejoin();
                            keep(r, &mut first_err);
                        }
                        Err(e) => {
                            let r = self.handle_membership_error(e);
                            keep(r, &mut first_err);
                        }
                    }
                }
                MemberState::Joining => {
                    let topics = g.topics.clone();
                    let subscription = Subscription {
                        topics,
                        user_data: None,
                        owned_partitions: self.assigned.iter().map(|a| a.tp.clone()).collect(),
                        generation_id: (g.generation >= 0).then_some(g.generation),
                        group_instance_id: None,
                    };
                    let protocols: Vec<String> =
                        g.assignors.iter().map(|a| a.name().to_string()).collect();
                    let req = JoinRequest {
                        group_id: &g.group_id,
                        member_id: g.member_id.as_deref(),
                        group_instance_id: g.instance_id.as_deref(),
                        client_id: &g.client_id,
                        session_timeout_ms: self.config.session_timeout_ms as i64,
                        rebalance_timeout_ms: self.config.max_poll_interval_ms as i64,
                        protocol_type: "consumer",
                        protocols: &protocols,
                        subscription: &subscription,
                        link: Some(Arc::downgrade(&g.link)),
                    };
                    let joined = self.log.join_group(req);
                    let g = self
                        .group
                        .as_mut()
                        .ok_or(Error::IllegalState { reason: "no group" })?;
                    match joined {
                        Ok(JoinOutcome::Pending { member_id }) => {
                            g.member_id = Some(member_id);
                            break;
                        }
                        Ok(JoinOutcome::Joined(res)) => {
                            g.member_id = Some(res.member_id.clone());
                            g.generation = res.generation;
                            g.rejoin_needed = false;
                            let leader = res.leader == res.member_id && !res.members.is_empty();
                            let assignment = if leader && res.skip_assignment {
                                // A static leader back without a rebalance: it keeps the
                                // assignment but watches the members' topics from now on.
                                self.note_metadata(&res.members)?;
                                None
                            } else if leader {
                                Some(self.compute_assignment(&res.protocol, res.members)?)
                            } else {
                                None
                            };
                            if let Some(g) = self.group.as_mut() {
                                g.state = MemberState::Syncing { assignment };
                            }
                        }
                        Err(e) => {
                            let r = self.handle_membership_error(e);
                            keep(r, &mut first_err);
                        }
                    }
                }
                MemberState::Syncing { assignment } => {
                    let assignment = assignment.clone();
                    let who = g.who();
                    let synced = self.log.sync_group(who, assignment);
                    match synced {
                        Ok(SyncOutcome::Pending) => break,
                        Ok(SyncOutcome::Assigned(parts)) => {
                            let r = self.complete_rebalance(parts);
                            keep(r, &mut first_err);
                        }
                        Err(Error::RebalanceInProgress { .. }) => {
                            if let Some(g) = self.group.as_mut() {
                                g.state = MemberState::Joining;
                            }
                        }
                        Err(e) => {
                            let r = self.handle_membership_error(e);
                            keep(r, &mut first_err);
                        }
                    }
                }
            }
            if first_err.is_some() {
                break;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Resolves a pattern against the log's topics and notices changed metadata: a changed
    /// subscription, or (for the leader) changed partition counts, asks for a rejoin.
    fn refresh_subscription(&mut self) -> Result<()> {
        let version = self.log.metadata_version();
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        if g.metadata_version == version {
            return Ok(());
        }
        let topics = match &g.subscribed {
            Some(Subscribed::Topics(t)) => t.clone(),
            Some(Subscribed::Pattern(re)) => self
                .log
                .topics()
                .into_iter()
                .filter(|t| !is_internal_topic(t) && re.is_match(t))
                .collect(),
            None => return Ok(()),
        };
        let counts = g.assigned_metadata.as_ref().map(|m| {
            m.keys()
                .map(|t| (t.clone(), self.log.partition_count(t).unwrap_or(0)))
                .collect::<BTreeMap<String, u32>>()
        });
        let g = self
            .group
            .as_mut()
            .ok_or(Error::IllegalState { reason: "no group" })?;
        let metadata_changed = match (&g.assigned_metadata, counts) {
            (Some(before), Some(now)) => *before != now,
            _ => false,
        };
        if topics != g.topics || metadata_changed {
            g.topics = topics;
            g.rejoin_needed = true;
        }
        g.metadata_version = version;
        Ok(())
    }

    /// The partition counts of every member's topics (0 for a topic that does not exist):
    /// the leader rejoins when one changes.
    fn topic_counts(&self, subscriptions: &[&Subscription]) -> Result<BTreeMap<String, u32>> {
        let topics: BTreeSet<&String> = subscriptions.iter().flat_map(|s| &s.topics).collect();
        let mut seen = BTreeMap::new();
        for t in topics {
            match self.log.partition_count(t) {
                Ok(n) => seen.insert(t.clone(), n),
                Err(Error::UnknownTopicOrPartition { .. }) => seen.insert(t.clone(), 0),
                Err(e) => return Err(e),
            };
        }
        Ok(seen)
    }

    /// Records the metadata a leader watches, without assigning.
    fn note_metadata(&mut self, members: &[(String, Subscription)]) -> Result<()> {
        let subs: Vec<&Subscription> = members.iter().map(|(_, s)| s).collect();
        let seen = self.topic_counts(&subs)?;
        if let Some(g) = self.group.as_mut() {
            g.assigned_metadata = Some(seen);
        }
        Ok(())
    }

    /// The leader's part: runs the chosen assignor over every member's subscription.
    fn compute_assignment(
        &mut self,
        protocol: &str,
        members: Vec<(String, Subscription)>,
    ) -> Result<BTreeMap<String, Vec<TopicPartition>>> {
        let g = self
            .group
            .as_ref()
            .ok_or(Error::IllegalState { reason: "no group" })?;
        let assignor = g
            .assignors
            .iter()
            .find(|a| a.name() == protocol)
            .cloned()
            .ok_or(Error::IllegalState {
                reason: "the group chose an assignor this consumer does not have",
            })?;
        let subscriptions: BTreeMap<String, Subscription> = members.into_iter().collect();
        let seen = self.topic_counts(&subscriptions.values().collect::<Vec<_>>())?;
        let partitions_per_topic: BTreeMap<String, u32> = seen
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        let mut assignment = assignor.assign(&partitions_per_topic, &subscriptions);
        if let Err(reason) = validate_assignment(&partitions_per_topic, &subscriptions, &assignment)
        {
            tracing::error!(assignor = protocol, %reason, "invalid assignment");
            return Err(Error::IllegalState {
                reason: "the assignor returned an invalid assignment",
            });
        }
        // Always, whatever this leader's own protocol: a cooperative member keeps fetching
        // its partitions through the rebalance, so none of them may go to another member
        // before it has revoked them (eager members own nothing when they join, so this
        // changes nothing for them). Kafka's CooperativeStickyAssignor does the same.
        assignment = cooperative_adjust(&subscriptions, &assignment);
        if let Some(g) = self.group.as_mut() {
            g.assigned_metadata = Some(seen);
        }
        Ok(assignment)
    }

    /// Before rejoining: auto-commit, and under eager rebalancing revoke everything.
    fn prepare_rejoin(&mut self) -> Result<()> {
        self.maybe_auto_commit(true);
        let mut res = Ok(());
        let eager = self
            .group
            .as_ref()
            .is_some_and(|g| g.protocol == RebalanceProtocol::Eager);
        if eager {
            let owned = self.assignment();
            res = self.callback(Callback::Revoked, &owned);
            self.set_assignment(&[])?;
        }
        if let Some(g) = self.group.as_mut() {
            g.state = MemberState::Joining;
            g.rejoin_needed = false;
        }
        res
    }

    /// The generation's assignment arrived: revoke what moved away (cooperative), take what
    /// is new, from the committed offsets.
    fn complete_rebalance(&mut self, mut assigned: Vec<TopicPartition>) -> Result<()> {
        // A topic deleted since the leader assigned: its partitions are dropped, and the
        // group rebalances again with the current metadata.
        let before = assigned.len();
        assigned.retain(|tp| self.log.partition(&tp.topic, tp.partition).is_ok());
        if assigned.len() < before
            && let Some(g) = self.group.as_mut()
        {
            g.rejoin_needed = true;
        }
        let owned = self.assignment();
        let revoked: Vec<TopicPartition> = owned
            .iter()
            .filter(|tp| !assigned.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !owned.contains(tp))
            .cloned()
            .collect();
        let mut res = Ok(());
        if !revoked.is_empty() {
            // Only under cooperative rebalancing: eager revoked everything before joining.
            self.commit_revoked(&revoked);
            res = self.callback(Callback::Revoked, &revoked);
            if let Some(g) = self.group.as_mut() {
                // The moved partitions go to their new owner in a follow-up rebalance.
                g.rejoin_needed = true;
            }
        }
        let kept: Vec<TopicPartition> = owned
            .into_iter()
            .filter(|tp| assigned.contains(tp))
            .chain(added.iter().cloned())
            .collect();
        self.set_assignment(&kept)?;
        self.start_from_committed(&added)?;
        if let Some(g) = self.group.as_mut() {
            g.state = MemberState::Stable;
        }
        tracing::debug!(
            revoked = revoked.len(),
            added = added.len(),
            "rebalance complete"
        );
        let assigned_res = self.callback(Callback::Assigned, &added);
        res.and(assigned_res)
    }

    /// With auto-commit, the positions of partitions about to be revoked are committed first,
    /// so their next owner starts where this consumer stopped.
    fn commit_revoked(&mut self, revoked: &[TopicPartition]) {
        if !self.config.enable_auto_commit {
            return;
        }
        let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = self
            .consumed_offsets()
            .into_iter()
            .filter(|(tp, _)| revoked.contains(tp))
            .collect();
        if let Err(e) = self.commit_sync_offsets(offsets) {
            tracing::warn!(error = %e, "auto-commit of revoked partitions failed");
        }
    }

    /// Newly owned partitions start at the group's committed offsets, looked up at the next
    /// poll (`resolve_committed`); those without one are left to `auto.offset.reset`.
    pub(super) fn start_from_committed(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        for a in &mut self.assigned {
            if partitions.contains(&a.tp) {
                a.position = Position::Committed;
            }
        }
        Ok(())
    }

    /// Looks up the committed offsets of the partitions waiting for them. A partition for
    /// which an open transaction holds newer offsets (a transactional producer's
    /// `send_offsets_to_transaction`) keeps waiting: starting from the older committed offset
    /// would process records twice (Kafka's consumer retries on UNSTABLE_OFFSET_COMMIT). Such
    /// a transaction ends at its timeout at the latest, which this nudges.
    pub(super) fn resolve_committed(&mut self) -> Result<()> {
        let waiting: Vec<TopicPartition> = self
            .assigned
            .iter()
            .filter(|a| a.position == Position::Committed)
            .map(|a| a.tp.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        let group_id = g.group_id.clone();
        let (pending, committed) = self.log.offset_fetch_stable(&group_id, &waiting)?;
        for a in &mut self.assigned {
            if a.position != Position::Committed || pending.contains(&a.tp) {
                continue;
            }
            a.position = match committed.get(&a.tp) {
                Some(o) => Position::At(o.offset),
                None => Position::Unset,
            };
        }
        if !pending.is_empty() {
            self.log.abort_timed_out_transactions()?;
        }
        Ok(())
    }

    /// The group no longer knows this member (or its generation): its partitions are lost.
    fn handle_membership_error(&mut self, e: Error) -> Result<()> {
        match e {
            Error::UnknownMemberId { .. } | Error::IllegalGeneration { .. } => {
                tracing::info!(error = %e, "lost group membership: rejoining");
                let owned = self.assignment();
                let res = if owned.is_empty() {
                    Ok(())
                } else {
                    self.callback(Callback::Lost, &owned)
                };
                self.set_assignment(&[])?;
                if let Some(g) = self.group.as_mut() {
                    if matches!(e, Error::UnknownMemberId { .. }) {
                        g.member_id = None;
                    }
                    g.generation = -1;
                    g.state = MemberState::Joining;
                }
                res
            }
            Error::FencedInstanceId {
                ref group_instance_id,
                ..
            } => {
                let owned = self.assignment();
                let _ = self.callback(Callback::Lost, &owned);
                self.set_assignment(&[])?;
                if let Some(g) = self.group.as_mut() {
                    g.fenced = Some(group_instance_id.clone());
                    g.member_id = None;
                    g.generation = -1;
                    g.state = MemberState::Joining;
                }
                Err(e)
            }
            e => Err(e),
        }
    }

    /// Leaves the group: auto-commit, revoke through the listener (if `callbacks`), and
    /// LeaveGroup for a dynamic member. A static member does not leave (Kafka's rule): the
    /// group keeps its partitions for `session.timeout.ms`, for its return.
    pub(super) fn leave(&mut self, callbacks: bool) -> Result<()> {
        self.leave_with(callbacks, true)
    }

    /// [`Consumer::leave`], with the auto-commit only if `commit`.
    pub(super) fn leave_with(&mut self, callbacks: bool, commit: bool) -> Result<()> {
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        if g.subscribed.is_none() {
            if commit {
                self.maybe_auto_commit(true);
            }
            return Ok(());
        }
        let in_generation = matches!(g.state, MemberState::Stable) && g.generation >= 0;
        if in_generation && commit {
            self.maybe_auto_commit(true);
        }
        let mut res = Ok(());
        let owned = self.assignment();
        if callbacks && !owned.is_empty() {
            res = self.callback(Callback::Revoked, &owned);
        }
        let Some(g) = self.group.as_mut() else {
            return res;
        };
        if let Some(member_id) = g.member_id.take() {
            let group_id = g.group_id.clone();
            let static_member = g.instance_id.clone();
            let generation = g.generation;
            let left = match static_member {
                None => self.log.leave_group(&group_id, &member_id),
                // The session timer starts now: one last heartbeat.
                Some(instance) => {
                    let who = MemberRef {
                        group_id: &group_id,
                        generation,
                        member_id: &member_id,
                        group_instance_id: Some(&instance),
                    };
                    match self.log.heartbeat(who, false) {
                        Err(Error::RebalanceInProgress { .. }) => Ok(()),
                        r => r,
                    }
                }
            };
            if let Err(e) = left {
                tracing::debug!(error = %e, "leaving the group");
            }
        }
        if let Some(g) = self.group.as_mut() {
            g.generation = -1;
            g.state = MemberState::Joining;
        }
        res
    }
}
