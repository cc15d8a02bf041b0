//! Consumer-group administration as an operator relies on it: listing and describing groups
//! with live members, lag in records and in time, resetting offsets so that the group's next
//! consumers reprocess from there (the seeds' "rewind and reprocess"), the refusal to change
//! offsets under live members, unknown groups, and deleting a group.
//!
//! Members run on the test's thread: `poll(Duration::ZERO)` takes one membership step and
//! returns, so the test decides when each member joins.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use core_log::serialization::StringSerde;
use core_log::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerGroupListing, Error, GroupState, Log,
    ManualClock, OffsetAndMetadata, OffsetSpec, Record, TopicConfig, TopicPartition,
};

mod common;
use common::NOW;

type C = Consumer<String, String>;

fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .background_maintenance(false)
        .offsets_topic_num_partitions(4)
        .open()
        .unwrap()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
}

fn member(log: &Log, group: &str, topics: &[&str]) -> C {
    let mut c = Consumer::new(log, config(group), StringSerde, StringSerde).unwrap();
    c.subscribe(topics).unwrap();
    c
}

/// Appends one record per timestamp to `topic`/`partition`, value `"<partition>@<offset>"`.
fn append_at(log: &Log, topic: &str, partition: u32, timestamps: &[i64]) {
    let p = log.partition(topic, partition).unwrap();
    let start = p.log_end_offset().unwrap();
    let values: Vec<String> = (0..timestamps.len())
        .map(|i| format!("{partition}@{}", start + i as i64))
        .collect();
    let records: Vec<Record<'_>> = values
        .iter()
        .zip(timestamps)
        .map(|(v, ts)| Record::new(None, Some(v.as_bytes())).timestamp(*ts))
        .collect();
    p.append(&records).unwrap();
}

/// Polls the members in turn until all of them own partitions in the same generation and
/// every partition of the group's topics (`total`) is owned once.
fn settle(members: &mut [&mut C], total: usize) {
    for _ in 0..50 {
        for m in members.iter_mut() {
            // The records do not matter here: nothing is committed.
            m.poll(Duration::ZERO).unwrap();
        }
        let generation = members[0].generation();
        let owned: usize = members.iter().map(|m| m.assignment().len()).sum();
        if generation > 0
            && members.iter().all(|m| m.generation() == generation)
            && members.iter().all(|m| !m.assignment().is_empty())
            && owned == total
        {
            return;
        }
    }
    let state: Vec<_> = members
        .iter()
        .map(|m| (m.generation(), m.assignment()))
        .collect();
    panic!("the group did not settle: {state:?}");
}

/// A new member of `group` consumes everything it is given, commits it and closes; returns
/// the values it read, in order per partition.
fn reprocess(log: &Log, group: &str, topic: &str) -> BTreeMap<u32, Vec<String>> {
    let mut c = member(log, group, &[topic]);
    let mut read: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut idle = 0;
    // Joins within the first polls, then reads until a poll after joining returns nothing.
    for _ in 0..100 {
        let records = c.poll(Duration::ZERO).unwrap();
        for r in &records {
            read.entry(r.partition)
                .or_default()
                .push(r.value.clone().unwrap());
        }
        if !records.is_empty() {
            c.commit_sync().unwrap();
        }
        if c.generation() > 0 && records.is_empty() {
            idle += 1;
            if idle == 3 {
                break;
            }
        } else {
            idle = 0;
        }
    }
    assert!(c.generation() > 0, "the consumer never joined");
    c.close().unwrap();
    read
}

fn values(partition: u32, offsets: std::ops::Range<i64>) -> Vec<String> {
    offsets.map(|o| format!("{partition}@{o}")).collect()
}

fn committed(admin: &Admin, group: &str) -> BTreeMap<TopicPartition, i64> {
    admin
        .list_consumer_group_offsets(group)
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect()
}

#[test]
fn lists_and_describes_a_group_with_live_members() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let admin = Admin::new(&log);
    assert_eq!(admin.list_consumer_groups().unwrap(), vec![]);

    let mut a = member(&log, "g", &["t"]);
    let mut b = member(&log, "g", &["t"]);
    settle(&mut [&mut a, &mut b], 4);

    assert_eq!(
        admin.list_consumer_groups().unwrap(),
        vec![ConsumerGroupListing {
            group_id: "g".into(),
            state: GroupState::Stable
        }]
    );
    let d = admin.describe_consumer_group("g").unwrap();
    assert_eq!(d.group_id, "g");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.generation, a.generation());
    // The default strategy lists range first, and both members prefer it.
    assert_eq!(d.partition_assignor.as_deref(), Some("range"));
    let ids: Vec<&str> = d.members.iter().map(|m| m.member_id.as_str()).collect();
    let mut expected = vec![a.member_id().unwrap(), b.member_id().unwrap()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(ids.contains(&d.leader.as_deref().unwrap()));
    for c in [&a, &b] {
        let m = d
            .members
            .iter()
            .find(|m| Some(m.member_id.as_str()) == c.member_id())
            .unwrap();
        let mut mine = c.assignment();
        mine.sort();
        let mut described = m.assignment.clone();
        described.sort();
        assert_eq!(described, mine);
        assert_eq!(m.group_instance_id, None);
    }

    // One member leaves: the group rebalances, and describe shows it.
    b.close().unwrap();
    let d = admin.describe_consumer_group("g").unwrap();
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.members.len(), 1);
    settle(&mut [&mut a], 4);
    let d = admin.describe_consumer_group("g").unwrap();
    assert_eq!((d.state, d.members.len()), (GroupState::Stable, 1));
    assert_eq!(d.members[0].assignment.len(), 4);

    a.close().unwrap();
    let d = admin.describe_consumer_group("g").unwrap();
    assert_eq!(
        (d.state, d.members.len(), d.leader),
        (GroupState::Empty, 0, None)
    );
    assert_eq!(
        admin.list_consumer_groups().unwrap()[0].state,
        GroupState::Empty
    );
}

#[test]
fn lag_counts_records_and_time_lag_the_age_of_the_oldest_unprocessed_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    log.create_topic("other", 1, TopicConfig::default())
        .unwrap();
    // Partition 0: offsets 0..10 stamped a second apart, the last one 1 s ago.
    let ts: Vec<i64> = (0..10).map(|i| NOW - 10_000 + i * 1_000).collect();
    append_at(&log, "t", 0, &ts);
    append_at(&log, "t", 1, &[NOW - 500, NOW - 400]);
    append_at(&log, "other", 0, &[NOW - 60_000, NOW - 30_000]);
    let admin = Admin::new(&log);

    // The group processed "other" up to offset 1 earlier, and no member reads it now.
    admin
        .alter_consumer_group_offsets("g", &[(tp("other", 0), OffsetAndMetadata::new(1))])
        .unwrap();
    let mut c = member(&log, "g", &["t"]);
    settle(&mut [&mut c], 2);
    let member_id = c.member_id().unwrap().to_string();
    // Processed up to offset 4 of partition 0; nothing of partition 1.
    c.commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(4))])
        .unwrap();

    clock.advance_ms(2_000);
    let lag = admin.consumer_group_lag("g").unwrap();
    let rows: Vec<_> = lag
        .iter()
        .map(|r| {
            (
                r.partition.clone(),
                r.committed,
                r.log_end_offset,
                r.lag,
                r.time_lag_ms,
                r.member_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            // The record at offset 1 was stamped NOW - 30 s; it is 2 s later.
            (tp("other", 0), Some(1), 2, Some(1), Some(32_000), None),
            // Offset 4 was stamped NOW - 6 s.
            (
                tp("t", 0),
                Some(4),
                10,
                Some(6),
                Some(8_000),
                Some(member_id.clone())
            ),
            // Owned, but nothing committed: no lag can be computed.
            (tp("t", 1), None, 2, None, None, Some(member_id.clone())),
        ]
    );

    // Time lag grows with the clock while the group does not move; lag in records does not.
    clock.advance_ms(1_000);
    let row = admin.consumer_group_lag("g").unwrap().remove(1);
    assert_eq!((row.lag, row.time_lag_ms), (Some(6), Some(9_000)));

    // Caught up: no lag of either kind. Then a new record: the time lag is its age.
    c.commit_sync_offsets([
        (tp("t", 0), OffsetAndMetadata::new(10)),
        (tp("t", 1), OffsetAndMetadata::new(2)),
    ])
    .unwrap();
    for row in &admin.consumer_group_lag("g").unwrap()[1..] {
        assert_eq!((row.lag, row.time_lag_ms), (Some(0), Some(0)), "{row:?}");
    }
    append_at(&log, "t", 1, &[NOW + 3_000 - 250]);
    clock.advance_ms(1_000);
    let row = admin.consumer_group_lag("g").unwrap().remove(2);
    assert_eq!((row.lag, row.time_lag_ms), (Some(1), Some(1_250)));
}

#[test]
fn time_lag_starts_at_the_log_start_when_retention_deleted_the_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    // Small segments, so that each of these appends gets its own and retention can delete
    // the old ones.
    let config = TopicConfig::default()
        .segment_bytes(200)
        .retention_ms(60_000);
    log.create_topic("t", 1, config).unwrap();
    for ts in [
        NOW - 300_000,
        NOW - 200_000,
        NOW - 100_000,
        NOW - 5_000,
        NOW - 4_000,
    ] {
        let value = vec![b'x'; 120];
        log.partition("t", 0)
            .unwrap()
            .append(&[Record::new(None, Some(&value)).timestamp(ts)])
            .unwrap();
    }
    let admin = Admin::new(&log);
    admin
        .alter_consumer_group_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(1))])
        .unwrap();
    assert!(log.enforce_retention().unwrap() > 0);
    assert_eq!(
        log.partition("t", 0).unwrap().log_start_offset().unwrap(),
        3
    );

    let row = admin.consumer_group_lag("g").unwrap().remove(0);
    // Lag is counted from the commit, as Kafka's tool does; the oldest record left to
    // process is the one at the log start.
    assert_eq!(row.committed, Some(1));
    assert_eq!(row.lag, Some(4));
    assert_eq!(row.time_lag_ms, Some(5_000));
}

#[test]
fn reset_offsets_rewinds_and_the_groups_next_consumer_reprocesses_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    // Offset i of each partition is stamped NOW + i s.
    let ts: Vec<i64> = (0..10).map(|i| NOW + i * 1_000).collect();
    append_at(&log, "t", 0, &ts);
    append_at(&log, "t", 1, &ts[..6]);
    let admin = Admin::new(&log);

    // The group processes everything once.
    let first = reprocess(&log, "g", "t");
    assert_eq!(first[&0], values(0, 0..10));
    assert_eq!(first[&1], values(1, 0..6));
    assert_eq!(
        committed(&admin, "g"),
        [(tp("t", 0), 10), (tp("t", 1), 6)].into()
    );

    // Rewind to the beginning: everything again.
    let reset = admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Earliest)
        .unwrap();
    assert_eq!(reset, [(tp("t", 0), 0), (tp("t", 1), 0)].into());
    assert_eq!(committed(&admin, "g"), reset);
    let again = reprocess(&log, "g", "t");
    assert_eq!(again, first);

    // From a point in time: partition 0 from offset 7, partition 1 has nothing that new.
    let reset = admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Timestamp(NOW + 6_500))
        .unwrap();
    assert_eq!(reset, [(tp("t", 0), 7), (tp("t", 1), 6)].into());
    let since = reprocess(&log, "g", "t");
    assert_eq!(since, [(0, values(0, 7..10))].into());

    // To an offset, clamped into each partition's range as Kafka's tool does.
    let reset = admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Offset(8))
        .unwrap();
    assert_eq!(reset, [(tp("t", 0), 8), (tp("t", 1), 6)].into());
    let from_8 = reprocess(&log, "g", "t");
    assert_eq!(from_8, [(0, values(0, 8..10))].into());
    let reset = admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Offset(-3))
        .unwrap();
    assert_eq!(reset, [(tp("t", 0), 0), (tp("t", 1), 0)].into());

    // To the end: the backlog is skipped, and only new records are processed.
    let reset = admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(reset, [(tp("t", 0), 10), (tp("t", 1), 6)].into());
    append_at(&log, "t", 1, &[NOW + 20_000]);
    let latest = reprocess(&log, "g", "t");
    assert_eq!(latest, [(1, values(1, 6..7))].into());
}

#[test]
fn reset_creates_the_offsets_of_a_group_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    append_at(&log, "t", 0, &[NOW, NOW, NOW]);
    let admin = Admin::new(&log);

    // Prepared before the application first starts: it begins at offset 2, not at the
    // earliest its auto.offset.reset would choose.
    admin
        .reset_consumer_group_offsets("new-app", &["t"], OffsetSpec::Offset(2))
        .unwrap();
    assert_eq!(
        admin.list_consumer_groups().unwrap(),
        vec![ConsumerGroupListing {
            group_id: "new-app".into(),
            state: GroupState::Empty
        }]
    );
    assert_eq!(
        reprocess(&log, "new-app", "t"),
        [(0, values(0, 2..3))].into()
    );
}

#[test]
fn offsets_cannot_change_while_the_group_has_members() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    append_at(&log, "t", 0, &[NOW; 5]);
    let admin = Admin::new(&log);

    let mut c = member(&log, "g", &["t"]);
    settle(&mut [&mut c], 2);
    c.commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(3))])
        .unwrap();
    let before = committed(&admin, "g");

    for to in [
        OffsetSpec::Earliest,
        OffsetSpec::Latest,
        OffsetSpec::Offset(1),
    ] {
        let err = admin
            .reset_consumer_group_offsets("g", &["t"], to)
            .unwrap_err();
        assert!(
            matches!(err, Error::NonEmptyGroup { ref group } if group == "g"),
            "{err}"
        );
    }
    let err = admin
        .alter_consumer_group_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(0))])
        .unwrap_err();
    assert!(matches!(err, Error::NonEmptyGroup { .. }), "{err}");
    let err = admin.delete_consumer_group("g").unwrap_err();
    assert!(matches!(err, Error::NonEmptyGroup { .. }), "{err}");
    assert_eq!(committed(&admin, "g"), before);
    // The member was not disturbed: it keeps its generation and partitions.
    let generation = c.generation();
    c.poll(Duration::ZERO).unwrap();
    assert_eq!((c.generation(), c.assignment().len()), (generation, 2));

    // Once it stops, the reset goes through.
    c.close().unwrap();
    admin
        .reset_consumer_group_offsets("g", &["t"], OffsetSpec::Earliest)
        .unwrap();
    assert_eq!(
        committed(&admin, "g"),
        [(tp("t", 0), 0), (tp("t", 1), 0)].into()
    );
}

#[test]
fn unknown_groups_and_topics_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let admin = Admin::new(&log);

    let not_found = |e: Error| matches!(e, Error::GroupIdNotFound { ref group } if group == "nope");
    assert!(not_found(
        admin.describe_consumer_group("nope").unwrap_err()
    ));
    assert!(not_found(
        admin.list_consumer_group_offsets("nope").unwrap_err()
    ));
    assert!(not_found(admin.consumer_group_lag("nope").unwrap_err()));
    assert!(not_found(admin.delete_consumer_group("nope").unwrap_err()));

    // A reset naming a missing topic changes nothing, not even for the topics that exist.
    let err = admin
        .reset_consumer_group_offsets("g", &["t", "missing"], OffsetSpec::Earliest)
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { ref topic, .. } if topic == "missing"),
        "{err}"
    );
    let err = admin
        .alter_consumer_group_offsets("g", &[(tp("t", 5), OffsetAndMetadata::new(0))])
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. }),
        "{err}"
    );
    assert!(admin.describe_consumer_group("g").is_err());
    assert_eq!(admin.list_consumer_groups().unwrap(), vec![]);
}

#[test]
fn a_deleted_group_is_gone_with_its_offsets_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    append_at(&log, "t", 0, &[NOW; 4]);
    let admin = Admin::new(&log);
    assert_eq!(reprocess(&log, "g", "t"), [(0, values(0, 0..4))].into());
    admin
        .alter_consumer_group_offsets("kept", &[(tp("t", 0), OffsetAndMetadata::new(2))])
        .unwrap();
    assert_eq!(committed(&admin, "g"), [(tp("t", 0), 4)].into());

    admin.delete_consumer_group("g").unwrap();
    let groups: Vec<String> = admin
        .list_consumer_groups()
        .unwrap()
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(groups, vec!["kept".to_string()]);
    assert!(matches!(
        admin.describe_consumer_group("g").unwrap_err(),
        Error::GroupIdNotFound { .. }
    ));
    assert!(matches!(
        admin.delete_consumer_group("g").unwrap_err(),
        Error::GroupIdNotFound { .. }
    ));

    // The deletion is stored: after a restart the group is still gone, the other one kept.
    drop(admin);
    log.close().unwrap();
    let log = open_log(dir.path(), &clock);
    let admin = Admin::new(&log);
    assert!(matches!(
        admin.list_consumer_group_offsets("g").unwrap_err(),
        Error::GroupIdNotFound { .. }
    ));
    assert_eq!(committed(&admin, "kept"), [(tp("t", 0), 2)].into());
    // Its next consumer starts over from auto.offset.reset (earliest here).
    assert_eq!(reprocess(&log, "g", "t"), [(0, values(0, 0..4))].into());
}
