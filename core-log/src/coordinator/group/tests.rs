//! The coordinator's state machine, driven as a protocol client would drive it (member ids,
//! generations, heartbeats), with a manual clock.

use super::*;
use crate::Log;
use crate::clock::ManualClock;
use crate::storage::config::TopicConfig;

const SESSION: i64 = 10_000;
const REBALANCE: i64 = 30_000;

struct Fixture {
    _dir: tempfile::TempDir,
    log: Log,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    let log = open_at(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default())
        .expect("create");
    Fixture {
        _dir: dir,
        log,
        clock,
    }
}

fn open_at(dir: &std::path::Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .background_maintenance(false)
        .offsets_topic_num_partitions(3)
        .open()
        .expect("open")
}

fn subscription() -> Subscription {
    Subscription {
        topics: vec!["t".into()],
        ..Subscription::default()
    }
}

fn protocols() -> Vec<String> {
    vec!["range".into()]
}

/// A JoinGroup of a remote-style member (no link: liveness by heartbeats only).
fn join(
    f: &Fixture,
    member_id: Option<&str>,
    instance: Option<&str>,
    subscription: &Subscription,
) -> Result<JoinOutcome> {
    let protocols = protocols();
    f.log.with_coordinator(|c, log, now| {
        c.join_group(
            log,
            JoinRequest {
                group_id: "g",
                member_id,
                group_instance_id: instance,
                client_id: "c",
                session_timeout_ms: SESSION,
                rebalance_timeout_ms: REBALANCE,
                protocol_type: "consumer",
                protocols: &protocols,
                subscription,
                link: None,
            },
            now,
        )
    })
}

fn who<'a>(member_id: &'a str, generation: i32) -> MemberRef<'a> {
    MemberRef {
        group_id: "g",
        generation,
        member_id,
        group_instance_id: None,
    }
}

fn sync(
    f: &Fixture,
    member_id: &str,
    generation: i32,
    assignment: Option<BTreeMap<String, Vec<TopicPartition>>>,
) -> Result<SyncOutcome> {
    f.log.with_coordinator(|c, log, now| {
        c.sync_group(log, who(member_id, generation), assignment, now)
    })
}

fn heartbeat(f: &Fixture, member_id: &str, generation: i32) -> Result<()> {
    f.log
        .with_coordinator(|c, log, now| c.heartbeat(log, who(member_id, generation), false, now))
}

fn commit(f: &Fixture, member_id: &str, generation: i32, offset: i64) -> Result<()> {
    f.log.with_coordinator(|c, log, now| {
        c.commit_offsets(
            log,
            who(member_id, generation),
            &[(TopicPartition::new("t", 0), OffsetAndMetadata::new(offset))],
            now,
        )
    })
}

fn committed(f: &Fixture) -> Option<i64> {
    f.log
        .with_coordinator(|c, _, _| Ok(c.fetch_offsets("g", Some(&[TopicPartition::new("t", 0)]))))
        .expect("fetch")
        .get(&TopicPartition::new("t", 0))
        .map(|o| o.offset)
}

fn state(f: &Fixture) -> ConsumerGroupDescription {
    f.log
        .with_coordinator(|c, log, now| c.describe_group(log, "g", now))
        .expect("describe")
}

fn joined(outcome: JoinOutcome) -> JoinResult {
    match outcome {
        JoinOutcome::Joined(r) => r,
        JoinOutcome::Pending { member_id } => panic!("{member_id} still pending"),
    }
}

fn pending(outcome: JoinOutcome) -> String {
    match outcome {
        JoinOutcome::Pending { member_id } => member_id,
        JoinOutcome::Joined(r) => panic!("joined at once: {r:?}"),
    }
}

fn assigned(outcome: SyncOutcome) -> Vec<TopicPartition> {
    match outcome {
        SyncOutcome::Assigned(p) => p,
        SyncOutcome::Pending => panic!("sync pending"),
    }
}

fn tps(ps: &[u32]) -> Vec<TopicPartition> {
    ps.iter().map(|p| TopicPartition::new("t", *p)).collect()
}

/// A alone, then B joins: the rebalance waits for A to rejoin; both get generation 2 and
/// the leader's assignment.
fn two_members(f: &Fixture) -> (String, String) {
    let a = joined(join(f, None, None, &subscription()).expect("join a"));
    assert_eq!((a.generation, a.leader.as_str()), (1, a.member_id.as_str()));
    assert_eq!(a.members.len(), 1, "the leader sees every member");
    let mut plan = BTreeMap::new();
    plan.insert(a.member_id.clone(), tps(&[0, 1, 2, 3]));
    assert_eq!(
        assigned(sync(f, &a.member_id, 1, Some(plan)).expect("sync")),
        tps(&[0, 1, 2, 3])
    );
    assert_eq!(state(f).state, GroupState::Stable);

    let b = pending(join(f, None, None, &subscription()).expect("join b"));
    assert_eq!(state(f).state, GroupState::PreparingRebalance);
    assert!(matches!(
        heartbeat(f, &a.member_id, 1),
        Err(Error::RebalanceInProgress { .. })
    ));
    let a2 = joined(join(f, Some(&a.member_id), None, &subscription()).expect("rejoin a"));
    assert_eq!(a2.generation, 2);
    assert_eq!(a2.members.len(), 2);
    let b2 = joined(join(f, Some(&b), None, &subscription()).expect("b again"));
    assert_eq!(
        (b2.generation, b2.members.len()),
        (2, 0),
        "followers get no member list"
    );
    assert!(matches!(
        sync(f, &b, 2, None).expect("sync b"),
        SyncOutcome::Pending
    ));
    let mut plan = BTreeMap::new();
    plan.insert(a.member_id.clone(), tps(&[0, 1]));
    plan.insert(b.clone(), tps(&[2, 3]));
    assert_eq!(
        assigned(sync(f, &a.member_id, 2, Some(plan)).expect("sync a")),
        tps(&[0, 1])
    );
    assert_eq!(
        assigned(sync(f, &b, 2, None).expect("sync b")),
        tps(&[2, 3])
    );
    (a.member_id, b)
}

#[test]
fn members_join_and_get_the_leaders_assignment() {
    let f = fixture();
    let (a, b) = two_members(&f);
    let d = state(&f);
    assert_eq!((d.state, d.generation), (GroupState::Stable, 2));
    assert_eq!(d.leader.as_deref(), Some(a.as_str()));
    assert_eq!(d.members.len(), 2);
    assert!(heartbeat(&f, &b, 2).is_ok());
}

#[test]
fn a_member_that_stops_heartbeating_is_removed_after_the_session_timeout() {
    let f = fixture();
    let (a, b) = two_members(&f);
    f.clock.advance_ms(SESSION - 1);
    heartbeat(&f, &a, 2).expect("a is fine");
    assert_eq!(state(&f).members.len(), 2, "b is not late yet");
    f.clock.advance_ms(2);
    assert!(matches!(
        heartbeat(&f, &a, 2),
        Err(Error::RebalanceInProgress { .. })
    ));
    let a3 = joined(join(&f, Some(&a), None, &subscription()).expect("rejoin"));
    assert_eq!((a3.generation, a3.members.len()), (3, 1));
    assert!(matches!(
        heartbeat(&f, &b, 2),
        Err(Error::UnknownMemberId { .. })
    ));
}

#[test]
fn a_member_that_does_not_rejoin_is_removed_at_the_rebalance_timeout() {
    let f = fixture();
    let (a, b) = two_members(&f);
    leave(&f, &a);
    // B heartbeats (so its session never expires) but does not rejoin.
    for _ in 0..(REBALANCE / 5_000) {
        f.clock.advance_ms(5_000);
        let _ = heartbeat(&f, &b, 2);
    }
    f.clock.advance_ms(1);
    let d = state(&f);
    assert_eq!((d.state, d.members.len()), (GroupState::Empty, 0));
}

fn leave(f: &Fixture, member: &str) {
    f.log
        .with_coordinator(|c, log, now| c.leave_group(log, "g", member, now))
        .expect("leave");
}

#[test]
fn commits_from_an_old_generation_or_an_unknown_member_are_rejected() {
    let f = fixture();
    let (a, b) = two_members(&f);
    commit(&f, &a, 2, 10).expect("current generation commits");
    assert_eq!(committed(&f), Some(10));
    let err = commit(&f, &a, 1, 5).expect_err("old generation");
    assert!(
        matches!(
            err,
            Error::IllegalGeneration {
                generation: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = commit(&f, "nobody", 2, 5).expect_err("unknown member");
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
    let err = commit(&f, "", -1, 5).expect_err("a simple commit into an active group");
    assert!(matches!(err, Error::UnknownMemberId { .. }), "{err}");
    assert_eq!(
        committed(&f),
        Some(10),
        "nothing overwrote the newer commit"
    );

    // While the group rebalances, the current generation may still commit (revocation
    // commits); once the join completed, until the assignment is synced, nobody may.
    leave(&f, &b);
    commit(&f, &a, 2, 11).expect("commit while preparing a rebalance");
    let a3 = joined(join(&f, Some(&a), None, &subscription()).expect("rejoin"));
    let err = commit(&f, &a, a3.generation, 12).expect_err("completing rebalance");
    assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
    assert_eq!(committed(&f), Some(11));
}

#[test]
fn a_group_without_members_takes_simple_commits() {
    let f = fixture();
    commit(&f, "", -1, 7).expect("simple commit");
    assert_eq!(committed(&f), Some(7));
    assert_eq!(state(&f).state, GroupState::Empty);
}

#[test]
fn offsets_and_generation_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    {
        let log = open_at(dir.path(), &clock);
        log.create_topic("t", 4, TopicConfig::default())
            .expect("create");
        let f = Fixture {
            _dir: tempfile::tempdir().expect("unused"),
            log,
            clock: clock.clone(),
        };
        let (a, _) = two_members(&f);
        commit(&f, &a, 2, 42).expect("commit");
        f.log.close().expect("close");
    }
    let log = open_at(dir.path(), &clock);
    let f = Fixture {
        _dir: tempfile::tempdir().expect("unused"),
        log,
        clock,
    };
    assert_eq!(committed(&f), Some(42));
    let d = state(&f);
    assert_eq!(
        d.state,
        GroupState::Empty,
        "dynamic members of the last run are gone"
    );
    let next = joined(join(&f, None, None, &subscription()).expect("join"));
    assert!(
        next.generation > 2,
        "generations continue: {}",
        next.generation
    );
}

#[test]
fn a_static_member_that_comes_back_keeps_its_assignment_without_a_rebalance() {
    let f = fixture();
    let a = joined(join(&f, None, Some("instance-a"), &subscription()).expect("join"));
    let b = pending(join(&f, None, None, &subscription()).expect("join b"));
    let a = joined(join(&f, Some(&a.member_id), Some("instance-a"), &subscription()).expect("a"));
    let _ = joined(join(&f, Some(&b), None, &subscription()).expect("b"));
    let mut plan = BTreeMap::new();
    plan.insert(a.member_id.clone(), tps(&[0, 1]));
    plan.insert(b.clone(), tps(&[2, 3]));
    let inst = |id: &'static str| Some(id);
    f.log
        .with_coordinator(|c, log, now| {
            c.sync_group(
                log,
                MemberRef {
                    group_id: "g",
                    generation: a.generation,
                    member_id: &a.member_id,
                    group_instance_id: inst("instance-a"),
                },
                Some(plan),
                now,
            )
        })
        .expect("sync");
    let generation = state(&f).generation;

    // A new consumer with the same instance id, before the session timeout.
    f.clock.advance_ms(SESSION / 2);
    heartbeat(&f, &b, generation).expect("b");
    let back = joined(join(&f, None, Some("instance-a"), &subscription()).expect("back"));
    assert_eq!(back.generation, generation, "no rebalance");
    assert_ne!(back.member_id, a.member_id);
    let mine = f
        .log
        .with_coordinator(|c, log, now| {
            c.sync_group(
                log,
                MemberRef {
                    group_id: "g",
                    generation,
                    member_id: &back.member_id,
                    group_instance_id: inst("instance-a"),
                },
                None,
                now,
            )
        })
        .expect("sync back");
    assert_eq!(assigned(mine), tps(&[0, 1]));
    assert_eq!(state(&f).state, GroupState::Stable);
    let fenced = f.log.with_coordinator(|c, log, now| {
        c.heartbeat(
            log,
            MemberRef {
                group_id: "g",
                generation,
                member_id: &a.member_id,
                group_instance_id: inst("instance-a"),
            },
            false,
            now,
        )
    });
    assert!(
        matches!(fenced, Err(Error::FencedInstanceId { .. })),
        "{fenced:?}"
    );
}

#[test]
fn members_without_a_common_assignor_are_refused() {
    let f = fixture();
    let _ = joined(join(&f, None, None, &subscription()).expect("join"));
    let other = vec!["roundrobin".to_string()];
    let res = f.log.with_coordinator(|c, log, now| {
        c.join_group(
            log,
            JoinRequest {
                group_id: "g",
                member_id: None,
                group_instance_id: None,
                client_id: "c",
                session_timeout_ms: SESSION,
                rebalance_timeout_ms: REBALANCE,
                protocol_type: "consumer",
                protocols: &other,
                subscription: &subscription(),
                link: None,
            },
            now,
        )
    });
    assert!(
        matches!(res, Err(Error::InconsistentGroupProtocol { .. })),
        "{res:?}"
    );
}

#[test]
fn bad_group_ids_offsets_and_timeouts_are_refused() {
    let f = fixture();
    let res = f.log.with_coordinator(|c, log, now| {
        c.commit_offsets(
            log,
            MemberRef {
                group_id: "",
                generation: -1,
                member_id: "",
                group_instance_id: None,
            },
            &[],
            now,
        )
    });
    assert!(matches!(res, Err(Error::InvalidGroupId { .. })), "{res:?}");
    let res = commit(&f, "", -1, -5);
    assert!(
        matches!(res, Err(Error::InvalidCommitOffset { .. })),
        "{res:?}"
    );
    let res = f.log.with_coordinator(|c, log, now| {
        c.commit_offsets(
            log,
            who("", -1),
            &[(
                TopicPartition::new("t", 0),
                OffsetAndMetadata::new(1).with_metadata("x".repeat(5000)),
            )],
            now,
        )
    });
    assert!(
        matches!(res, Err(Error::InvalidCommitOffset { .. })),
        "{res:?}"
    );
    let res = f.log.with_coordinator(|c, log, now| {
        c.commit_offsets(
            log,
            who("", -1),
            &[(TopicPartition::new("missing", 0), OffsetAndMetadata::new(1))],
            now,
        )
    });
    assert!(
        matches!(res, Err(Error::UnknownTopicOrPartition { .. })),
        "{res:?}"
    );
    assert_eq!(committed(&f), None, "nothing was stored");
    let protocols = protocols();
    let res = f.log.with_coordinator(|c, log, now| {
        c.join_group(
            log,
            JoinRequest {
                group_id: "g",
                member_id: None,
                group_instance_id: None,
                client_id: "c",
                session_timeout_ms: 10,
                rebalance_timeout_ms: REBALANCE,
                protocol_type: "consumer",
                protocols: &protocols,
                subscription: &subscription(),
                link: None,
            },
            now,
        )
    });
    assert!(matches!(res, Err(Error::InvalidConfig { .. })), "{res:?}");
}
