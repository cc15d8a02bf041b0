//! The group coordinator: Kafka's broker-side `GroupCoordinator` (the classic protocol), in
//! the same process as its members.
//!
//! ```text
//!            join (all members)          sync (leader's assignment)
//!   Empty ──────────────► PreparingRebalance ──► CompletingRebalance ──► Stable
//!     ▲        new member,       │  all joined, or       │                    │
//!     │        leave, timeout    │  rebalance timeout:   │                    │
//!     └── last member gone ◄─────┘  generation + 1       └──◄── member joins, leaves,
//!                                                               times out, or leader rejoins
//! ```
//!
//! It is a plain state machine: every call takes `now` from the log's clock, and timers
//! (`session.timeout.ms`, `max.poll.interval.ms`, the rebalance timeout) are checked at the
//! start of every call for the group, so a [`crate::ManualClock`] drives them in tests.
//!
//! Liveness. A remote member would prove it is alive by heartbeats; an embedded consumer is
//! alive while its handle exists (the coordinator holds a `Weak` link to it), which is what
//! Kafka's background heartbeat thread proves. A consumer that does not poll within
//! `max.poll.interval.ms` is removed (a dynamic member at once, as Kafka's client leaves; a
//! static one `session.timeout.ms` later, as Kafka's static members stop heartbeating then).
//! A dropped dynamic consumer leaves; a dropped static one stops heartbeating and is removed
//! after `session.timeout.ms` unless a consumer with its `group.instance.id` comes back first,
//! which takes its place and its assignment without a rebalance.
//!
//! Members are woken through their link whenever the group changes state, so a consumer
//! sleeping in `poll` reacts to a rebalance at once.
//!
//! Persistence. Committed offsets and each generation's group metadata are records in the
//! compacted topic `__consumer_offsets` (Kafka's formats, see `records.rs`), in the partition
//! `hash(group) % offsets.topic.num.partitions`. The topic is read back when the coordinator
//! is first used after open. Dynamic members of the previous run are known to be gone (they
//! lived in this process), so only static members are restored; the generation continues.

mod offsets;
mod records;

use offsets::PendingOffset;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};

use crate::codec::{BatchBuilder, BatchProducer, ControlRecordType};
use crate::coordinator::producer_id::ProducerIdentity;
use crate::coordinator::protocol::Subscription;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::log_manager::LogManager;
use crate::storage::topic::TopicPartition;
use crate::sync::AppendWaker;

pub use records::OffsetAndMetadata;
use records::{CommittedOffset, GroupMetadataValue, MemberMetadata, OffsetsRecord};
pub(crate) use records::{OFFSETS_TOPIC, partition_for_group};

/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms` defaults.
const MIN_SESSION_TIMEOUT_MS: i64 = 6_000;
const MAX_SESSION_TIMEOUT_MS: i64 = 1_800_000;
/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Group ids are stored as Kafka strings (an i16 length).
const MAX_GROUP_ID_LEN: usize = i16::MAX as usize;

/// A consumer group's state, as Kafka names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (the group may still have committed offsets).
    Empty,
    /// Waiting for every member to (re)join.
    PreparingRebalance,
    /// Joined: waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        })
    }
}

/// One member of a group, as [`crate::Admin::describe_consumer_group`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The id the coordinator gave the member.
    pub member_id: String,
    /// Its `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
    /// Its `client.id`.
    pub client_id: String,
    /// The partitions it owns in the current generation.
    pub assignment: Vec<TopicPartition>,
    /// What it subscribed to when it joined (Kafka's member metadata).
    pub subscription: Subscription,
}

/// A group's state and members: Kafka's `ConsumerGroupDescription`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// The group.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// The current generation (it counts every completed rebalance).
    pub generation: i32,
    /// The assignor the members chose (`partition.assignment.strategy`), once they have.
    pub partition_assignor: Option<String>,
    /// The member whose consumer computes the assignment.
    pub leader: Option<String>,
    /// The members, by member id.
    pub members: Vec<MemberDescription>,
}

/// The link between a member and its membership: alive while the consumer exists (an
/// embedded consumer, or a network server's record of a remote one), and the way the
/// coordinator wakes a call waiting on `Pending`. A member with a link is also held to its
/// poll deadline (`max.poll.interval.ms`, restarted by `heartbeat(.., polled: true)` and by
/// SyncGroup).
#[derive(Debug, Default)]
pub struct MemberLink {
    waker: Mutex<Arc<AppendWaker>>,
}

impl MemberLink {
    /// A link that wakes `waker`.
    pub fn new(waker: Arc<AppendWaker>) -> Self {
        MemberLink {
            waker: Mutex::new(waker),
        }
    }
    /// Wakes `waker` from now on (the consumer's assignment shrank; another request of a
    /// remote member waits).
    pub fn set_waker(&self, waker: Arc<AppendWaker>) {
        *crate::sync::lock(&self.waker) = waker;
    }
    fn wake(&self) {
        crate::sync::lock(&self.waker).notify();
    }
}

/// A JoinGroup request.
#[derive(Debug)]
pub struct JoinRequest<'a> {
    /// The group.
    pub group_id: &'a str,
    /// `None` for a member joining for the first time (or a static member coming back).
    pub member_id: Option<&'a str>,
    /// `group.instance.id`, for static members.
    pub group_instance_id: Option<&'a str>,
    /// The client's `client.id`.
    pub client_id: &'a str,
    /// `session.timeout.ms`: how long the member lives without a heartbeat.
    pub session_timeout_ms: i64,
    /// `max.poll.interval.ms`: how long a rebalance waits for the member to rejoin.
    pub rebalance_timeout_ms: i64,
    /// `"consumer"` for consumers.
    pub protocol_type: &'a str,
    /// The member's assignor names, most preferred first.
    pub protocols: &'a [String],
    /// The member's subscription (the same for every assignor it offers).
    pub subscription: &'a Subscription,
    /// Set for a consumer that is woken (see [`MemberLink`]): alive while it exists, and the
    /// poll deadline applies.
    pub link: Option<Weak<MemberLink>>,
}

/// What a JoinGroup call got.
#[derive(Debug)]
pub enum JoinOutcome {
    /// The rebalance waits for other members; call again with this member id (the member
    /// is woken through its link).
    Pending {
        /// The member id the coordinator gave the member.
        member_id: String,
    },
    /// The member is in the new generation.
    Joined(JoinResult),
}

/// A completed join: Kafka's JoinGroup response.
#[derive(Debug)]
pub struct JoinResult {
    /// The new generation.
    pub generation: i32,
    /// The assignor the group uses, chosen among those every member offers.
    pub protocol: String,
    /// The member id of the leader, which computes the assignment.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member's subscription, for the leader only (empty for the others).
    pub members: Vec<(String, Subscription)>,
    /// A static leader came back without a rebalance (KIP-814): it gets the members, to watch
    /// their topics' metadata, but must not send a new assignment.
    pub skip_assignment: bool,
}

/// What a SyncGroup call got.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The leader has not sent the assignment yet; call again (the member is woken).
    Pending,
    /// The member's partitions in this generation.
    Assigned(Vec<TopicPartition>),
}

/// Who is calling on behalf of a member.
#[derive(Clone, Copy, Debug)]
pub struct MemberRef<'a> {
    /// The group.
    pub group_id: &'a str,
    /// The generation the member joined (-1 for a consumer without membership committing
    /// offsets).
    pub generation: i32,
    /// The member id (empty for a consumer without membership).
    pub member_id: &'a str,
    /// `group.instance.id`, for static members.
    pub group_instance_id: Option<&'a str>,
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    protocols: Vec<String>,
    subscription: Subscription,
    assignment: Vec<TopicPartition>,
    /// Has (re)joined in the current rebalance.
    joined: bool,
    last_heartbeat: i64,
    /// For embedded members: the last poll plus `max.poll.interval.ms`.
    poll_deadline: Option<i64>,
    link: Option<Weak<MemberLink>>,
}

impl Member {
    fn wake(&self) {
        if let Some(link) = self.link.as_ref().and_then(Weak::upgrade) {
            link.wake();
        }
    }
    /// The parts of the join metadata that decide whether a rejoin needs a rebalance.
    fn same_metadata(&self, protocols: &[String], subscription: &Subscription) -> bool {
        self.protocols == protocols && self.subscription == *subscription
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` to member id.
    static_members: HashMap<String, String>,
    /// When the current rebalance stops waiting for members to rejoin.
    rebalance_deadline: i64,
    state_timestamp: i64,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// Where in the group's `__consumer_offsets` partition each committed offset was written.
    /// A transaction's offsets take effect at its commit marker only where they are newer
    /// than what is committed: the later record wins, as it does after compaction.
    written_at: BTreeMap<TopicPartition, i64>,
}

impl Group {
    fn new(now: i64) -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: 0,
            state_timestamp: now,
            offsets: BTreeMap::new(),
            written_at: BTreeMap::new(),
        }
    }

    fn wake_all(&self) {
        for m in self.members.values() {
            m.wake();
        }
    }

    fn set_state(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp = now;
        self.wake_all();
    }

    fn metadata(&self) -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberMetadata {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: String::new(),
                    rebalance_timeout_ms: clamp_i32(m.rebalance_timeout_ms),
                    session_timeout_ms: clamp_i32(m.session_timeout_ms),
                    subscription: m.subscription.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i32::MAX as i64) as i32
}

/// The group coordinator of one log, loaded from `__consumer_offsets` on first use, behind its
/// lock.
#[derive(Debug)]
pub(crate) struct GroupCoordinatorCell {
    coordinator: Mutex<Option<GroupCoordinator>>,
    /// `offsets.topic.num.partitions`, used when `__consumer_offsets` is created.
    partitions: u32,
}

impl GroupCoordinatorCell {
    pub(crate) fn new(partitions: u32) -> Self {
        GroupCoordinatorCell {
            coordinator: Mutex::new(None),
            partitions,
        }
    }

    /// Runs `f` on the coordinator under its lock, loading it on first use. Lock order:
    /// coordinator, then partitions and topic administration.
    pub(crate) fn with<T>(
        &self,
        storage: &LogManager,
        f: impl FnOnce(&mut GroupCoordinator, &LogManager, i64) -> Result<T>,
    ) -> Result<T> {
        storage.check_open()?;
        let mut guard = crate::sync::lock(&self.coordinator);
        if guard.is_none() {
            *guard = Some(GroupCoordinator::load(storage, self.partitions)?);
        }
        let now = storage.clock().now_ms();
        match guard.as_mut() {
            Some(c) => f(c, storage, now),
            None => Err(Error::Closed),
        }
    }
}

/// The coordinator of every group of one log. Lives behind the log's coordinator lock.
#[derive(Debug)]
pub(crate) struct GroupCoordinator {
    groups: BTreeMap<String, Group>,
    /// Offsets committed inside transactions not decided yet, per `__consumer_offsets`
    /// partition and producer id: applied by the commit marker, dropped by the abort marker.
    pending_txn: BTreeMap<(u32, i64), Vec<PendingOffset>>,
    offsets_partitions: u32,
    /// Makes member ids unique across runs.
    nonce: u64,
    next_member: u64,
}

impl GroupCoordinator {
    /// Creates `__consumer_offsets` if needed and loads the groups and offsets it holds.
    pub(crate) fn load(log: &LogManager, partitions: u32) -> Result<Self> {
        let now = log.clock().now_ms();
        let partitions = log.ensure_internal_topic(OFFSETS_TOPIC, partitions)?;
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i64(now);
        let mut c = GroupCoordinator {
            groups: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
            offsets_partitions: partitions,
            nonce: hasher.finish(),
            next_member: 0,
        };
        let mut metadata: BTreeMap<String, Option<GroupMetadataValue>> = BTreeMap::new();
        log.replay_topic(OFFSETS_TOPIC, |p, partition, batch| {
            if batch.is_control() {
                // A transaction's decision: its offsets apply or vanish.
                let kind = batch
                    .records()
                    .next()
                    .and_then(|r| r.ok())
                    .map(|r| ControlRecordType::parse(r.key));
                if let Some(Ok(kind)) = kind {
                    let commit = kind == ControlRecordType::Commit;
                    c.complete_transactional_offsets(p, batch.producer_id(), commit);
                }
                return Ok(());
            }
            let transactional = batch.is_transactional().then(|| batch.producer_id());
            for r in batch.records() {
                let r = r.map_err(|e| Error::Corrupt {
                    file: partition.dir().to_path_buf(),
                    position: 0,
                    reason: e.0,
                })?;
                let Some(key) = r.key else { continue };
                match records::decode(key, r.value) {
                    Ok(OffsetsRecord::Offset {
                        group,
                        tp,
                        value: Some(value),
                    }) if transactional.is_some() => {
                        let pid = transactional.unwrap_or(-1);
                        c.pending_txn
                            .entry((p, pid))
                            .or_default()
                            .push(PendingOffset {
                                group,
                                tp,
                                value,
                                at: r.offset,
                            });
                    }
                    Ok(OffsetsRecord::Offset { group, tp, value }) => {
                        let g = c.groups.entry(group).or_insert_with(|| Group::new(now));
                        match value {
                            Some(v) => g.commit_offset(tp, v, r.offset),
                            None => {
                                g.offsets.remove(&tp);
                                g.written_at.remove(&tp);
                            }
                        };
                    }
                    Ok(OffsetsRecord::Group { group, value }) => {
                        metadata.insert(group, value);
                    }
                    Err(e) if e.is_unknown_key_version() => {}
                    Err(e) => {
                        tracing::warn!(partition = p, offset = r.offset, error = %e,
                            "skipping an undecodable __consumer_offsets record");
                    }
                }
            }
            Ok(())
        })?;
        for (id, value) in metadata {
            match value {
                Some(v) => c.restore_group(id, v, now),
                None => {
                    // Deleted (the offsets were tombstoned with it): gone, unless offsets were
                    // committed again after the deletion.
                    if c.groups.get(&id).is_some_and(|g| g.offsets.is_empty()) {
                        c.groups.remove(&id);
                    }
                }
            }
        }
        Ok(c)
    }

    /// A group as its last metadata record left it, without the dynamic members of the run
    /// that wrote it (they lived in that process, so they are gone).
    fn restore_group(&mut self, id: String, v: GroupMetadataValue, now: i64) {
        let g = self.groups.entry(id).or_insert_with(|| Group::new(now));
        g.generation = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        g.protocol = v.protocol;
        g.leader = v.leader;
        let total = v.members.len();
        for m in v.members {
            let Some(instance) = m.group_instance_id.clone() else {
                continue;
            };
            g.static_members.insert(instance, m.member_id.clone());
            g.members.insert(
                m.member_id,
                Member {
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    session_timeout_ms: m.session_timeout_ms as i64,
                    rebalance_timeout_ms: m.rebalance_timeout_ms as i64,
                    protocols: g.protocol.iter().cloned().collect(),
                    subscription: m.subscription,
                    assignment: m.assignment,
                    joined: false,
                    last_heartbeat: now,
                    poll_deadline: None,
                    link: None,
                },
            );
        }
        if g.leader
            .as_ref()
            .is_some_and(|l| !g.members.contains_key(l))
        {
            g.leader = None;
        }
        g.state = if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            GroupState::Empty
        } else if g.members.len() < total || g.leader.is_none() {
            // Some partitions' owners are gone: the static members must rejoin.
            g.rebalance_deadline = now + max_rebalance_timeout(g);
            GroupState::PreparingRebalance
        } else {
            for m in g.members.values_mut() {
                m.joined = true;
            }
            GroupState::Stable
        };
        g.state_timestamp = now;
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        format!("{client_id}-{:016x}-{}", self.nonce, self.next_member)
    }

    /// Appends records for `group` to its `__consumer_offsets` partition as one batch, so a
    /// multi-partition commit is all or nothing.
    /// Returns the offset of the first record.
    fn append(
        &self,
        log: &LogManager,
        group: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<i64> {
        let p = partition_for_group(group, self.offsets_partitions);
        let recs: Vec<Record<'_>> = records
            .iter()
            .map(|(k, v)| Record::new(Some(k), v.as_deref()))
            .collect();
        Ok(log.partition(OFFSETS_TOPIC, p)?.append(&recs)?.base_offset)
    }

    fn persist_group(&self, log: &LogManager, group_id: &str) -> Result<()> {
        let Some(g) = self.groups.get(group_id) else {
            return Ok(());
        };
        let value = records::group_metadata_value(&g.metadata());
        self.append(
            log,
            group_id,
            &[(records::group_metadata_key(group_id), Some(value))],
        )
        .map(|_| ())
    }

    /// Runs the group's timers: removes members whose session or poll interval expired, and
    /// ends a rebalance whose deadline passed.
    fn expire(&mut self, log: &LogManager, group_id: &str, now: i64) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        let mut removed = Vec::new();
        for (id, m) in g.members.iter_mut() {
            let alive = m.link.as_ref().is_some_and(|l| l.strong_count() > 0);
            let polling = m.poll_deadline.is_none_or(|d| now <= d);
            if alive && polling {
                m.last_heartbeat = now;
                continue;
            }
            if alive && !polling {
                if m.group_instance_id.is_none() {
                    removed.push((id.clone(), "max.poll.interval.ms expired"));
                    continue;
                }
                // A static member stops heartbeating when its poll interval expires.
                let stopped = m.poll_deadline.unwrap_or(now).min(now);
                m.last_heartbeat = m.last_heartbeat.max(stopped);
            }
            if now > m.last_heartbeat.saturating_add(m.session_timeout_ms) {
                removed.push((id.clone(), "session.timeout.ms expired"));
            }
        }
        let changed = !removed.is_empty();
        for (id, reason) in removed {
            tracing::info!(group = group_id, member = %id, reason, "removing member");
            remove_member(g, &id);
        }
        if changed
            && matches!(
                g.state,
                GroupState::Stable | GroupState::CompletingRebalance
            )
        {
            prepare_rebalance(g, now);
        }
        self.maybe_complete_join(log, group_id, now);
    }

    /// Completes the rebalance if every member rejoined or its deadline passed.
    fn maybe_complete_join(&mut self, log: &LogManager, group_id: &str, now: i64) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        if g.members.values().any(|m| !m.joined) {
            if now < g.rebalance_deadline {
                return;
            }
            // Kafka removes late dynamic members only: a static member keeps its place (and
            // gets an assignment) until its session times out, so a rolling restart does not
            // move its partitions.
            let late: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| !m.joined && m.group_instance_id.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in late {
                tracing::info!(group = group_id, member = %id, "removing member: did not rejoin within the rebalance timeout");
                remove_member(g, &id);
            }
            if !g.members.is_empty() && g.members.values().all(|m| !m.joined) {
                // Only absent static members: nobody could lead. Their sessions decide.
                return;
            }
        }
        g.generation = g.generation.wrapping_add(1).max(1);
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(GroupState::Empty, now);
        } else {
            g.protocol = select_protocol(g);
            // The leader must be a member that rejoined: it has to send the assignment.
            if g.leader
                .as_ref()
                .and_then(|l| g.members.get(l))
                .is_none_or(|m| !m.joined)
            {
                g.leader = g
                    .members
                    .iter()
                    .find(|(_, m)| m.joined)
                    .map(|(id, _)| id.clone());
            }
            g.set_state(GroupState::CompletingRebalance, now);
        }
        tracing::debug!(group = group_id, generation = g.generation, state = %g.state, members = g.members.len(), "join complete");
        if g.state == GroupState::Empty
            && let Err(e) = self.persist_group(log, group_id)
        {
            tracing::warn!(group = group_id, error = %e, "could not store group metadata");
        }
    }

    fn join_result(&self, group_id: &str, member_id: &str, with_members: bool) -> JoinResult {
        let g = &self.groups[group_id];
        let leader = g.leader.clone().unwrap_or_default();
        let members = if with_members && leader == member_id {
            g.members
                .iter()
                .map(|(id, m)| {
                    let mut s = m.subscription.clone();
                    s.group_instance_id = m.group_instance_id.clone();
                    (id.clone(), s)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation: g.generation,
            protocol: g.protocol.clone().unwrap_or_default(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    /// Kafka's JoinGroup, without blocking: `Pending` until the rebalance completes.
    pub(crate) fn join_group(
        &mut self,
        log: &LogManager,
        req: JoinRequest<'_>,
        now: i64,
    ) -> Result<JoinOutcome> {
        validate_group_id(req.group_id)?;
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&req.session_timeout_ms) {
            return Err(Error::InvalidConfig {
                key: "session.timeout.ms".into(),
                value: req.session_timeout_ms.to_string(),
                reason: "between group.min.session.timeout.ms (6000) and group.max.session.timeout.ms (1800000)",
            });
        }
        if req.protocols.is_empty() {
            return Err(Error::InconsistentGroupProtocol {
                group: req.group_id.to_string(),
                reason: "the member offers no assignor".into(),
            });
        }
        self.groups
            .entry(req.group_id.to_string())
            .or_insert_with(|| Group::new(now));
        self.expire(log, req.group_id, now);
        let group_id = req.group_id;
        self.check_protocols(&req)?;

        let member_id = match req.member_id {
            Some(id) => {
                let g = self.group_mut(group_id)?;
                check_member(g, group_id, id, req.group_instance_id)?;
                id.to_string()
            }
            None => match req
                .group_instance_id
                .and_then(|i| self.groups[group_id].static_members.get(i).cloned())
            {
                Some(old) => return self.replace_static_member(log, &req, &old, now),
                None => {
                    let id = self.new_member_id(req.client_id);
                    let g = self.group_mut(group_id)?;
                    g.members.insert(id.clone(), new_member(&req, now));
                    if let Some(instance) = req.group_instance_id {
                        g.static_members.insert(instance.to_string(), id.clone());
                    }
                    if g.protocol_type.is_none() {
                        g.protocol_type = Some(req.protocol_type.to_string());
                    }
                    tracing::info!(group = group_id, member = %id, "member joins");
                    if g.state != GroupState::PreparingRebalance {
                        prepare_rebalance(g, now);
                    } else {
                        // Joining an ongoing rebalance: the others' joins still count, but
                        // the deadline covers the newcomer's rebalance timeout too.
                        g.rebalance_deadline = g
                            .rebalance_deadline
                            .max(now.saturating_add(req.rebalance_timeout_ms));
                        g.wake_all();
                    }
                    mark_joined(g, &id);
                    self.maybe_complete_join(log, group_id, now);
                    return Ok(self.join_outcome(group_id, &id));
                }
            },
        };

        let g = self.group_mut(group_id)?;
        let is_leader = g.leader.as_deref() == Some(member_id.as_str());
        let m = g
            .members
            .get_mut(&member_id)
            .ok_or_else(|| unknown_member(group_id, &member_id))?;
        let same = m.same_metadata(req.protocols, req.subscription);
        m.protocols = req.protocols.to_vec();
        m.subscription = req.subscription.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.last_heartbeat = now;
        if req.link.is_some() {
            m.link = req.link.clone();
            m.poll_deadline = Some(now.saturating_add(req.rebalance_timeout_ms));
        }
        match g.state {
            GroupState::PreparingRebalance => {
                mark_joined(g, &member_id);
                self.maybe_complete_join(log, group_id, now);
            }
            GroupState::CompletingRebalance if same => {}
            GroupState::Stable if same && !is_leader => {}
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Changed metadata, or the leader asking for a new assignment (its metadata
                // view changed): a new generation.
                prepare_rebalance(g, now);
                mark_joined(g, &member_id);
                self.maybe_complete_join(log, group_id, now);
            }
            GroupState::Empty => return Err(unknown_member(group_id, &member_id)),
        }
        Ok(self.join_outcome(group_id, &member_id))
    }

    fn join_outcome(&self, group_id: &str, member_id: &str) -> JoinOutcome {
        match self.groups[group_id].state {
            GroupState::CompletingRebalance | GroupState::Stable => {
                JoinOutcome::Joined(self.join_result(group_id, member_id, true))
            }
            _ => JoinOutcome::Pending {
                member_id: member_id.to_string(),
            },
        }
    }

    /// A static member came back (a new consumer with a known `group.instance.id`): it takes
    /// the old member's place under a new member id, which fences the old one. With the same
    /// subscription in a stable group there is no rebalance: it gets the old assignment.
    fn replace_static_member(
        &mut self,
        log: &LogManager,
        req: &JoinRequest<'_>,
        old_id: &str,
        now: i64,
    ) -> Result<JoinOutcome> {
        let group_id = req.group_id;
        let new_id = self.new_member_id(req.client_id);
        let g = self.group_mut(group_id)?;
        let Some(mut m) = g.members.remove(old_id) else {
            return Err(unknown_member(group_id, old_id));
        };
        // Kafka's rule for a returning static member: no rebalance if it subscribes to the
        // same topics and still supports the group's chosen assignor (a new consumer owns
        // nothing yet, so owned partitions are not compared).
        let same = m.subscription.topics == req.subscription.topics
            && g.protocol
                .as_ref()
                .is_some_and(|p| req.protocols.contains(p));
        m.protocols = req.protocols.to_vec();
        m.subscription = req.subscription.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.to_string();
        m.last_heartbeat = now;
        m.link = req.link.clone();
        m.poll_deadline = req
            .link
            .as_ref()
            .map(|_| now.saturating_add(req.rebalance_timeout_ms));
        m.joined = true;
        g.members.insert(new_id.clone(), m);
        if let Some(instance) = req.group_instance_id {
            g.static_members
                .insert(instance.to_string(), new_id.clone());
        }
        if g.leader.as_deref() == Some(old_id) {
            g.leader = Some(new_id.clone());
        }
        tracing::info!(group = group_id, old = %old_id, new = %new_id, "static member rejoins");
        match g.state {
            GroupState::Stable if same => {
                self.persist_group(log, group_id)?;
                // No rebalance: the member syncs and gets its old assignment. A returning
                // leader still sees the members, to notice metadata changes later.
                let mut result = self.join_result(group_id, &new_id, true);
                result.skip_assignment = true;
                Ok(JoinOutcome::Joined(result))
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(log, group_id, now);
                Ok(self.join_outcome(group_id, &new_id))
            }
            _ => {
                prepare_rebalance(g, now);
                mark_joined(g, &new_id);
                self.maybe_complete_join(log, group_id, now);
                Ok(self.join_outcome(group_id, &new_id))
            }
        }
    }

    /// Rejects a member whose protocol type or assignors share nothing with the others.
    fn check_protocols(&self, req: &JoinRequest<'_>) -> Result<()> {
        let g = &self.groups[req.group_id];
        let inconsistent = |reason: String| {
            Err(Error::InconsistentGroupProtocol {
                group: req.group_id.to_string(),
                reason,
            })
        };
        let others = || {
            g.members
                .iter()
                .filter(|(id, _)| Some(id.as_str()) != req.member_id)
        };
        if others().next().is_none() {
            return Ok(());
        }
        if let Some(t) = &g.protocol_type
            && t != req.protocol_type
        {
            return inconsistent(format!(
                "protocol type {:?} differs from the group's {t:?}",
                req.protocol_type
            ));
        }
        for (id, m) in others() {
            if !req.protocols.iter().any(|p| m.protocols.contains(p)) {
                return inconsistent(format!(
                    "assignors {:?} share none with member {id}'s {:?}",
                    req.protocols, m.protocols
                ));
            }
        }
        Ok(())
    }

    fn group_mut(&mut self, group_id: &str) -> Result<&mut Group> {
        self.groups
            .get_mut(group_id)
            .ok_or_else(|| Error::GroupIdNotFound {
                group: group_id.to_string(),
            })
    }

    /// Checks that the caller is a current member of the current generation, and counts
    /// the call as a heartbeat.
    fn current_member(&mut self, who: MemberRef<'_>, now: i64) -> Result<&mut Group> {
        let g = self
            .groups
            .get_mut(who.group_id)
            .ok_or_else(|| unknown_member(who.group_id, who.member_id))?;
        check_member(g, who.group_id, who.member_id, who.group_instance_id)?;
        if let Some(m) = g.members.get_mut(who.member_id) {
            m.last_heartbeat = now;
        }
        if who.generation != g.generation {
            return Err(Error::IllegalGeneration {
                group: who.group_id.to_string(),
                generation: who.generation,
                current: g.generation,
            });
        }
        Ok(g)
    }

    /// Kafka's SyncGroup, without blocking: the leader hands in the assignment, every member
    /// gets its part (`Pending` until the leader has).
    pub(crate) fn sync_group(
        &mut self,
        log: &LogManager,
        who: MemberRef<'_>,
        assignment: Option<BTreeMap<String, Vec<TopicPartition>>>,
        now: i64,
    ) -> Result<SyncOutcome> {
        self.expire(log, who.group_id, now);
        let g = self.current_member(who, now)?;
        // SyncGroup comes from an embedded member's poll.
        restart_poll_timer(g, who.member_id, now);
        match g.state {
            GroupState::PreparingRebalance | GroupState::Empty => Err(Error::RebalanceInProgress {
                group: who.group_id.to_string(),
            }),
            GroupState::Stable => Ok(SyncOutcome::Assigned(
                g.members[who.member_id].assignment.clone(),
            )),
            GroupState::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(who.member_id);
                let Some(assignment) = assignment.filter(|_| is_leader) else {
                    return Ok(SyncOutcome::Pending);
                };
                for (id, m) in g.members.iter_mut() {
                    m.assignment = assignment.get(id).cloned().unwrap_or_default();
                }
                g.set_state(GroupState::Stable, now);
                let mine = g.members[who.member_id].assignment.clone();
                if let Err(e) = self.persist_group(log, who.group_id) {
                    // Kafka's coordinator resets the group when the metadata cannot be stored.
                    if let Some(g) = self.groups.get_mut(who.group_id) {
                        prepare_rebalance(g, now);
                    }
                    return Err(e);
                }
                Ok(SyncOutcome::Assigned(mine))
            }
        }
    }

    /// Kafka's Heartbeat: `RebalanceInProgress` tells the member to rejoin. `polled` is set by
    /// an embedded consumer's `poll`, which restarts its `max.poll.interval.ms`.
    pub(crate) fn heartbeat(
        &mut self,
        log: &LogManager,
        who: MemberRef<'_>,
        polled: bool,
        now: i64,
    ) -> Result<()> {
        // Timers first: a member already past its poll deadline is removed, whichever call
        // arrives first.
        self.expire(log, who.group_id, now);
        let g = self.current_member(who, now)?;
        if polled {
            restart_poll_timer(g, who.member_id, now);
        }
        match g.state {
            GroupState::PreparingRebalance => Err(Error::RebalanceInProgress {
                group: who.group_id.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Kafka's LeaveGroup: the member goes at once, and the others rebalance.
    pub(crate) fn leave_group(
        &mut self,
        log: &LogManager,
        group_id: &str,
        member_id: &str,
        now: i64,
    ) -> Result<()> {
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        if !g.members.contains_key(member_id) {
            return Err(unknown_member(group_id, member_id));
        }
        tracing::info!(group = group_id, member = %member_id, "member leaves");
        remove_member(g, member_id);
        if matches!(
            g.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            prepare_rebalance(g, now);
        }
        self.maybe_complete_join(log, group_id, now);
        Ok(())
    }

    /// Kafka's OffsetCommit. A member commits with its generation; a consumer without a
    /// group membership (manual `assign`) or an admin commits with generation -1 and an empty
    /// member id, which only a group without members accepts. All offsets are stored as one
    /// batch: all or none.
    pub(crate) fn list_groups(&mut self, log: &LogManager, now: i64) -> Vec<(String, GroupState)> {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in &ids {
            self.expire(log, id, now);
        }
        self.groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state))
            .collect()
    }

    /// One group's state and members (Kafka's DescribeGroups).
    pub(crate) fn describe_group(
        &mut self,
        log: &LogManager,
        group_id: &str,
        now: i64,
    ) -> Result<ConsumerGroupDescription> {
        self.expire(log, group_id, now);
        let g = self
            .groups
            .get(group_id)
            .ok_or_else(|| Error::GroupIdNotFound {
                group: group_id.to_string(),
            })?;
        Ok(ConsumerGroupDescription {
            group_id: group_id.to_string(),
            state: g.state,
            generation: g.generation,
            partition_assignor: g.protocol.clone(),
            leader: g.leader.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    assignment: m.assignment.clone(),
                    subscription: m.subscription.clone(),
                })
                .collect(),
        })
    }

    /// Overwrites committed offsets of a group without members (Kafka's
    /// AlterConsumerGroupOffsets, which `kafka-consumer-groups --reset-offsets` uses).
    /// Deletes a group without members and its committed offsets (Kafka's DeleteGroups).
    pub(crate) fn delete_group(
        &mut self,
        log: &LogManager,
        group_id: &str,
        now: i64,
    ) -> Result<()> {
        self.expire(log, group_id, now);
        let g = self
            .groups
            .get(group_id)
            .ok_or_else(|| Error::GroupIdNotFound {
                group: group_id.to_string(),
            })?;
        if !g.members.is_empty() {
            return Err(Error::NonEmptyGroup {
                group: group_id.to_string(),
            });
        }
        let mut recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = g
            .offsets
            .keys()
            .map(|tp| (records::offset_commit_key(group_id, tp), None))
            .collect();
        recs.push((records::group_metadata_key(group_id), None));
        self.append(log, group_id, &recs)?;
        self.groups.remove(group_id);
        Ok(())
    }
}

fn validate_group_id(group: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidGroupId {
            group: group.to_string(),
            reason,
        })
    };
    if group.is_empty() {
        return bad("empty");
    }
    if group.len() > MAX_GROUP_ID_LEN {
        return bad("longer than 32767 bytes");
    }
    Ok(())
}

fn unknown_member(group: &str, member_id: &str) -> Error {
    Error::UnknownMemberId {
        group: group.to_string(),
        member_id: member_id.to_string(),
    }
}

/// The caller is a member, and not a static member whose instance id moved on.
fn check_member(
    g: &Group,
    group_id: &str,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<()> {
    if let Some(instance) = group_instance_id
        && let Some(current) = g.static_members.get(instance)
        && current != member_id
    {
        return Err(Error::FencedInstanceId {
            group: group_id.to_string(),
            group_instance_id: instance.to_string(),
        });
    }
    if !g.members.contains_key(member_id) {
        return Err(unknown_member(group_id, member_id));
    }
    Ok(())
}

fn new_member(req: &JoinRequest<'_>, now: i64) -> Member {
    Member {
        group_instance_id: req.group_instance_id.map(str::to_string),
        client_id: req.client_id.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocols: req.protocols.to_vec(),
        subscription: req.subscription.clone(),
        assignment: Vec::new(),
        joined: false,
        last_heartbeat: now,
        poll_deadline: req
            .link
            .as_ref()
            .map(|_| now.saturating_add(req.rebalance_timeout_ms)),
        link: req.link.clone(),
    }
}

/// An embedded member polled: its `max.poll.interval.ms` starts again.
fn restart_poll_timer(g: &mut Group, member_id: &str, now: i64) {
    if let Some(m) = g.members.get_mut(member_id)
        && m.link.is_some()
    {
        m.poll_deadline = Some(now.saturating_add(m.rebalance_timeout_ms));
    }
}

fn mark_joined(g: &mut Group, member_id: &str) {
    if let Some(m) = g.members.get_mut(member_id) {
        m.joined = true;
    }
}

fn remove_member(g: &mut Group, member_id: &str) {
    if let Some(m) = g.members.remove(member_id) {
        if let Some(instance) = &m.group_instance_id
            && g.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            g.static_members.remove(instance);
        }
        m.wake();
    }
    if g.leader.as_deref() == Some(member_id) {
        g.leader = None;
    }
}

fn max_rebalance_timeout(g: &Group) -> i64 {
    g.members
        .values()
        .map(|m| m.rebalance_timeout_ms)
        .max()
        .unwrap_or(0)
}

/// Starts a rebalance: every member must rejoin within the longest rebalance timeout.
fn prepare_rebalance(g: &mut Group, now: i64) {
    for m in g.members.values_mut() {
        m.joined = false;
    }
    g.rebalance_deadline = now.saturating_add(max_rebalance_timeout(g));
    g.set_state(GroupState::PreparingRebalance, now);
}

/// The assignor every member supports that most members prefer (Kafka's vote); ties go to
/// the name first in order, so every run picks the same.
fn select_protocol(g: &Group) -> Option<String> {
    let mut members = g.members.values();
    let first = members.next()?;
    let candidates: Vec<&String> = first
        .protocols
        .iter()
        .filter(|p| g.members.values().all(|m| m.protocols.contains(p)))
        .collect();
    let mut votes: BTreeMap<&String, usize> = candidates.iter().map(|c| (*c, 0)).collect();
    for m in g.members.values() {
        if let Some(choice) = m.protocols.iter().find(|p| candidates.contains(p))
            && let Some(v) = votes.get_mut(choice)
        {
            *v += 1;
        }
    }
    let best = votes.values().copied().max()?;
    votes
        .into_iter()
        .find(|(_, v)| *v == best)
        .map(|(p, _)| p.clone())
}

#[cfg(test)]
mod tests;
