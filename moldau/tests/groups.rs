//! Consumer groups over the wire: remote members join, sync, heartbeat and leave through the
//! log's group coordinator; they live by their heartbeats and session timeouts; committed
//! offsets are stored and fetched.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Client, Server, create_topics};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const GROUP: &str = "billing";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A consumer protocol subscription to `topics`, as a client encodes it.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .encode(&mut buf, 1)
        .unwrap();
    buf.freeze()
}

fn assignment(topic: &str, partitions: Vec<i32>) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(partitions),
        ])
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

fn assigned(bytes: &Bytes) -> Vec<i32> {
    let mut b = bytes.slice(2..);
    let a = ConsumerProtocolAssignment::decode(&mut b, 0).unwrap();
    a.assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.clone())
        .collect()
}

fn join(c: &mut Client, member_id: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(6_000)
        .with_rebalance_timeout_ms(6_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription(&["invoices"])),
        ]);
    c.send(7, &req)
}

fn sync(
    c: &mut Client,
    joined: &JoinGroupResponse,
    assignments: Vec<(&str, Vec<i32>)>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, p)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(assignment("invoices", p))
                })
                .collect(),
        );
    c.send(5, &req)
}

fn heartbeat(c: &mut Client, joined: &JoinGroupResponse) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    c.send(4, &req).error_code
}

#[test]
fn remote_members_rebalance_and_a_silent_member_leaves_at_its_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut admin = Client::connect(server.addr);
    assert_eq!(create_topics(&mut admin, &[("invoices", 4, 1)]), [0]);

    // A session timeout below group.min.session.timeout.ms is Kafka's INVALID_SESSION_TIMEOUT.
    let mut a = Client::connect(server.addr);
    let short = JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(100)
        .with_rebalance_timeout_ms(100)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription(&["invoices"])),
        ]);
    assert_eq!(a.send(7, &short).error_code, 26);
    // A protocol type other than the consumer's is refused.
    let connect = short
        .clone()
        .with_session_timeout_ms(6_000)
        .with_protocol_type(s("connect"));
    assert_eq!(a.send(7, &connect).error_code, 23);

    // A joins alone: the leader of generation 1, it assigns itself everything.
    let a1 = join(&mut a, "");
    assert_eq!(a1.error_code, 0);
    assert_eq!(a1.leader, a1.member_id);
    assert_eq!(a1.members.len(), 1);
    let a_id = a1.member_id.to_string();
    let synced = sync(&mut a, &a1, vec![(&a_id, vec![0, 1, 2, 3])]);
    assert_eq!(
        (synced.error_code, assigned(&synced.assignment)),
        (0, vec![0, 1, 2, 3])
    );
    assert_eq!(heartbeat(&mut a, &a1), 0);

    // B joins: its JoinGroup waits for A to rejoin, which A learns from its heartbeat.
    let addr = server.addr;
    let b = std::thread::spawn(move || {
        let mut b = Client::connect(addr);
        let joined = join(&mut b, "");
        (b, joined)
    });
    let mut code = 0;
    for _ in 0..100 {
        code = heartbeat(&mut a, &a1);
        if code != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(code, 27, "REBALANCE_IN_PROGRESS");
    let a2 = join(&mut a, &a_id);
    let (b, b2) = b.join().unwrap();
    assert_eq!((a2.error_code, b2.error_code), (0, 0));
    assert_eq!(a2.generation_id, b2.generation_id);
    assert!(a2.generation_id > a1.generation_id);
    let (leader, mut leader_client, follower, mut follower_client) = if a2.leader == a2.member_id {
        (a2, a, b2, b)
    } else {
        (b2, b, a2, a)
    };
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    // The follower's SyncGroup waits for the leader's assignment.
    let follower_id = follower.member_id.to_string();
    let waiting = std::thread::spawn(move || {
        let res = sync(&mut follower_client, &follower, vec![]);
        (follower_client, follower, res)
    });
    let leader_id = leader.member_id.to_string();
    let res = sync(
        &mut leader_client,
        &leader,
        vec![(&leader_id, vec![0, 1]), (&follower_id, vec![2, 3])],
    );
    assert_eq!(assigned(&res.assignment), vec![0, 1]);
    let (_, follower, res) = waiting.join().unwrap();
    assert_eq!(assigned(&res.assignment), vec![2, 3]);

    // The follower goes silent; the leader keeps heartbeating. After the follower's session
    // timeout the group rebalances and the leader's rejoin makes it the only member.
    let mut rebalanced = false;
    for _ in 0..200 {
        let code = heartbeat(&mut leader_client, &leader);
        if code == 27 {
            rebalanced = true;
            break;
        }
        assert_eq!(code, 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(rebalanced, "the silent member was never removed");
    let alone = join(&mut leader_client, &leader_id);
    assert_eq!(alone.error_code, 0);
    assert_eq!(alone.members.len(), 1);
    // The removed member is told so.
    assert_eq!(
        heartbeat(&mut Client::connect(server.addr), &follower),
        25,
        "UNKNOWN_MEMBER_ID"
    );

    // LeaveGroup.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(alone.member_id.clone());
    assert_eq!(leader_client.send(2, &leave).error_code, 0);
    assert!(server.stop().success());
}

#[test]
fn offsets_committed_by_a_consumer_without_membership_are_fetched_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("invoices", 2, 1)]), [0]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("invoices")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(42)
                        .with_committed_metadata(Some(s("checkpoint"))),
                ]),
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("missing")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1),
                ]),
        ]);
    // One commit is one write: an unknown partition fails all of it.
    let res = c.send(8, &commit);
    assert_eq!(res.topics[1].partitions[0].error_code, 3);
    assert_eq!(res.topics[0].partitions[0].error_code, 3);
    let commit = commit.with_topics(vec![
        OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("invoices")))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_committed_metadata(Some(s("checkpoint"))),
            ]),
    ]);
    assert_eq!(c.send(8, &commit).topics[0].partitions[0].error_code, 0);

    let fetch = |c: &mut Client| {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("invoices")))
                    .with_partition_indexes(vec![0, 1]),
            ]));
        let res = c.send(7, &req);
        assert_eq!(res.error_code, 0);
        res.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().map(str::to_string),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = vec![
        (0, -1, Some(String::new())),
        (1, 42, Some("checkpoint".to_string())),
    ];
    assert_eq!(fetch(&mut c), expected);
    // Committed offsets survive a restart.
    assert!(server.stop().success());
    let server = Server::start(&data, &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(fetch(&mut c), expected);
    assert!(server.stop().success());
}

#[test]
fn groups_are_listed_described_and_deleted_once_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("invoices", 2, 1)]), [0]);
    let joined = join(&mut c, "");
    let id = joined.member_id.to_string();
    assert_eq!(sync(&mut c, &joined, vec![(&id, vec![0, 1])]).error_code, 0);

    let list = |c: &mut Client| {
        let res = c.send(4, &ListGroupsRequest::default());
        assert_eq!(res.error_code, 0);
        res.groups
            .iter()
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.protocol_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(&mut c),
        vec![(GROUP.into(), "consumer".into(), "Stable".into())]
    );
    let stable_only = ListGroupsRequest::default().with_states_filter(vec![s("Empty")]);
    assert!(c.send(4, &stable_only).groups.is_empty());

    let describe = |c: &mut Client| {
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]);
        c.send(5, &req).groups.remove(0)
    };
    let g = describe(&mut c);
    assert_eq!(
        (g.error_code, &*g.group_state, &*g.protocol_data),
        (0, "Stable", "range")
    );
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].member_id, joined.member_id);
    assert_eq!(assigned(&g.members[0].member_assignment), vec![0, 1]);
    let mut metadata = g.members[0].member_metadata.slice(2..);
    let subscription = ConsumerProtocolSubscription::decode(&mut metadata, 1).unwrap();
    assert_eq!(subscription.topics, vec![s("invoices")]);

    let delete = |c: &mut Client| {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]);
        c.send(2, &req).results[0].error_code
    };
    assert_eq!(delete(&mut c), 68, "NON_EMPTY_GROUP");
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(joined.member_id.clone()),
        ]);
    let left = c.send(5, &leave);
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    assert_eq!(describe(&mut c).group_state.to_string(), "Empty");
    assert_eq!(delete(&mut c), 0);
    assert_eq!(delete(&mut c), 69, "GROUP_ID_NOT_FOUND");
    assert_eq!(describe(&mut c).group_state.to_string(), "Dead");
    assert!(list(&mut c).is_empty());
    assert!(server.stop().success());
}
