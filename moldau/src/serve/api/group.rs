//! The consumer group requests of remote members: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup, driving the log's group coordinator (`Broker::join_group`, ...), the same one
//! embedded consumers use.
//!
//! ```text
//!   JoinGroup ─▶ join_group ─ Pending ─▶ wait on the member's link (woken when the group
//!       ▲                                changes) or its rebalance timeout ─┐
//!       └───────────────────── call again with the member id ◀─────────────┘
//!   SyncGroup ─▶ sync_group ─ Pending (leader not there yet) ─▶ same wait ─▶ again
//! ```
//!
//! A remote member's [`MemberLink`] is kept here while the member is known (until it leaves,
//! or a rebalance finds the coordinator dropped it); through it the coordinator wakes the
//! member's waiting request. Because a linked member is also held to its poll deadline
//! (`max.poll.interval.ms`, which a remote client enforces itself), every Heartbeat counts
//! as a poll: a remote member lives by its heartbeats, its session timeout and the rebalance
//! timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use core_log::{
    AppendWaker, Broker, Error, JoinOutcome, JoinRequest, MemberLink, MemberRef, SyncOutcome,
};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Apis;
use super::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use crate::serve::error_code::error_code;

/// The only protocol type the coordinator keeps (its subscriptions are consumers').
const CONSUMER: &str = "consumer";

/// The shortest wait between two calls of a waiting request once its timeout has passed: the
/// coordinator completes a rebalance at its deadline only when called.
const RECHECK: Duration = Duration::from_millis(100);

/// The remote members this server knows: their links, kept alive while they are members.
#[derive(Debug, Default)]
pub struct RemoteMembers {
    members: Mutex<HashMap<(String, String), Remote>>,
}

#[derive(Debug, Clone)]
struct Remote {
    link: Arc<MemberLink>,
    rebalance_timeout: Duration,
    protocol: Option<String>,
}

impl RemoteMembers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Remote>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, group: &str, member: &str) -> Option<Remote> {
        self.lock()
            .get(&(group.to_string(), member.to_string()))
            .cloned()
    }

    fn insert(&self, group: &str, member: &str, remote: Remote) {
        self.lock()
            .insert((group.to_string(), member.to_string()), remote);
    }

    fn remove(&self, group: &str, member: &str) {
        self.lock().remove(&(group.to_string(), member.to_string()));
    }

    /// Forgets the members of `group` other than `members` (the coordinator removed them:
    /// their sessions expired).
    fn retain_group(&self, group: &str, members: &[String]) {
        self.lock()
            .retain(|(g, m), _| g != group || members.contains(m));
    }

    /// Forgets a member the coordinator no longer knows.
    fn forget_if_unknown(&self, group: &str, member: &str, e: &Error) {
        if matches!(
            e,
            Error::UnknownMemberId { .. } | Error::FencedInstanceId { .. }
        ) {
            self.remove(group, member);
        }
    }
}

fn broker(apis: &Apis) -> &Broker {
    apis.log().as_ref()
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Waits on `waker` until `deadline`, or [`RECHECK`] once it has passed.
fn wait(waker: &AppendWaker, deadline: Instant) {
    let now = Instant::now();
    waker.wait(deadline.saturating_duration_since(now).max(RECHECK));
}

/// JoinGroup, v0–v9. The whole join happens in one request: a new member gets its id in the
/// response (v4's MEMBER_ID_REQUIRED round trip is not needed).
pub fn join(
    apis: &Apis,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let failed = |code: i16, member_id: &str| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
    };
    if &*req.protocol_type != CONSUMER {
        return failed(
            ResponseError::InconsistentGroupProtocol.code(),
            &req.member_id,
        );
    }
    let instance = req.group_instance_id.as_deref();
    let subscription = match req
        .protocols
        .first()
        .map(|p| decode_subscription(&p.metadata, instance))
    {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "join refused");
            return failed(
                ResponseError::InconsistentGroupProtocol.code(),
                &req.member_id,
            );
        }
        None => {
            return failed(
                ResponseError::InconsistentGroupProtocol.code(),
                &req.member_id,
            );
        }
    };
    let protocols: Vec<String> = req.protocols.iter().map(|p| p.name.to_string()).collect();
    let group: &str = &req.group_id;
    let session_timeout_ms = i64::from(req.session_timeout_ms);
    let rebalance_timeout_ms = if version >= 1 {
        i64::from(req.rebalance_timeout_ms)
    } else {
        session_timeout_ms
    };
    let rebalance_timeout = millis(rebalance_timeout_ms as i32);
    let waker = Arc::new(AppendWaker::default());
    let link = Arc::new(MemberLink::new(Arc::clone(&waker)));
    apis.register_waiter(&waker);
    let deadline = Instant::now() + rebalance_timeout;
    let mut member_id: Option<String> =
        (!req.member_id.is_empty()).then(|| req.member_id.to_string());
    loop {
        let outcome = broker(apis).join_group(JoinRequest {
            group_id: group,
            member_id: member_id.as_deref(),
            group_instance_id: instance,
            client_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: CONSUMER,
            protocols: &protocols,
            subscription: &subscription,
            link: Some(Arc::downgrade(&link)),
        });
        let remote = |protocol| Remote {
            link: Arc::clone(&link),
            rebalance_timeout,
            protocol,
        };
        match outcome {
            Ok(JoinOutcome::Pending { member_id: id }) => {
                apis.members().insert(group, &id, remote(None));
                if apis.is_shutting_down() {
                    return failed(ResponseError::CoordinatorNotAvailable.code(), &id);
                }
                member_id = Some(id);
                wait(&waker, deadline);
            }
            Ok(JoinOutcome::Joined(r)) => {
                apis.members()
                    .insert(group, &r.member_id, remote(Some(r.protocol.clone())));
                // A rebalance is when the coordinator drops members whose sessions expired:
                // their links go too.
                if let Ok(d) = broker(apis).describe_group(group) {
                    let ids: Vec<String> = d.members.into_iter().map(|m| m.member_id).collect();
                    apis.members().retain_group(group, &ids);
                }
                let members = r
                    .members
                    .iter()
                    .map(|(id, s)| {
                        let m = JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id.clone()))
                            .with_metadata(encode_subscription(s));
                        if version >= 5 {
                            m.with_group_instance_id(
                                s.group_instance_id.clone().map(StrBytes::from_string),
                            )
                        } else {
                            m
                        }
                    })
                    .collect();
                let mut res = JoinGroupResponse::default()
                    .with_generation_id(r.generation)
                    .with_protocol_name(Some(StrBytes::from_string(r.protocol)))
                    .with_leader(StrBytes::from_string(r.leader))
                    .with_member_id(StrBytes::from_string(r.member_id))
                    .with_members(members);
                if version >= 7 {
                    res = res.with_protocol_type(Some(StrBytes::from_static_str(CONSUMER)));
                }
                if version >= 9 {
                    res = res.with_skip_assignment(r.skip_assignment);
                }
                return res;
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "join refused");
                let id = member_id.unwrap_or_default();
                apis.members().forget_if_unknown(group, &id, &e);
                return failed(error_code(&e), &id);
            }
        }
    }
}

/// SyncGroup, v0–v5.
pub fn sync(apis: &Apis, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let failed = |code: i16| SyncGroupResponse::default().with_error_code(code);
    let group: &str = &req.group_id;
    let member: &str = &req.member_id;
    let mut assignments = BTreeMap::new();
    for a in &req.assignments {
        match decode_assignment(&a.assignment) {
            Ok(parts) => {
                assignments.insert(a.member_id.to_string(), parts);
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "sync refused");
                return failed(ResponseError::InconsistentGroupProtocol.code());
            }
        }
    }
    let who = MemberRef {
        group_id: group,
        generation: req.generation_id,
        member_id: member,
        group_instance_id: req.group_instance_id.as_deref(),
    };
    let remote = apis.members().get(group, member);
    let waker = Arc::new(AppendWaker::default());
    if let Some(r) = &remote {
        r.link.set_waker(Arc::clone(&waker));
    }
    apis.register_waiter(&waker);
    let deadline = Instant::now()
        + remote
            .as_ref()
            .map_or(Duration::from_secs(30), |r| r.rebalance_timeout);
    let mut assignment = Some(assignments);
    loop {
        match broker(apis).sync_group(who, assignment.take()) {
            Ok(SyncOutcome::Pending) => {
                if apis.is_shutting_down() {
                    return failed(ResponseError::CoordinatorNotAvailable.code());
                }
                wait(&waker, deadline);
            }
            Ok(SyncOutcome::Assigned(parts)) => {
                let mut res =
                    SyncGroupResponse::default().with_assignment(encode_assignment(&parts));
                if version >= 5 {
                    res = res
                        .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER)))
                        .with_protocol_name(
                            remote.and_then(|r| r.protocol).map(StrBytes::from_string),
                        );
                }
                return res;
            }
            Err(e) => {
                apis.members().forget_if_unknown(group, member, &e);
                return failed(error_code(&e));
            }
        }
    }
}

/// Heartbeat, v0–v4. Counts as the member's poll (see the module doc).
pub fn heartbeat(apis: &Apis, req: HeartbeatRequest) -> HeartbeatResponse {
    let who = MemberRef {
        group_id: &req.group_id,
        generation: req.generation_id,
        member_id: &req.member_id,
        group_instance_id: req.group_instance_id.as_deref(),
    };
    match broker(apis).heartbeat(who, true) {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => {
            apis.members()
                .forget_if_unknown(&req.group_id, &req.member_id, &e);
            HeartbeatResponse::default().with_error_code(error_code(&e))
        }
    }
}

/// LeaveGroup, v0–v5 (v3+: a batch of members).
pub fn leave(apis: &Apis, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group: &str = &req.group_id;
    let leave_one = |member: &str| -> i16 {
        let res = broker(apis).leave_group(group, member);
        apis.members().remove(group, member);
        match res {
            Ok(()) => 0,
            Err(e) => error_code(&e),
        }
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(leave_one(&req.member_id));
    }
    let members = req
        .members
        .iter()
        .map(|m| {
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(leave_one(&m.member_id))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
