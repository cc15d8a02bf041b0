//! Consumer groups as a Kafka user relies on them: members share a topic's partitions and
//! take over each other's when one stops, without losing or repeating records when commits
//! follow processing; eager and cooperative rebalances; session and poll-interval timeouts
//! on a manual clock; static membership; committed offsets (fencing, restart, auto-commit,
//! `auto.offset.reset`); several groups and several topics.
//!
//! The members run on one thread, interleaved by the test, so every rebalance happens in a
//! known order: `poll(Duration::ZERO)` takes one step of the membership and returns.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_log::serialization::StringSerde;
use core_log::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRebalanceListener,
    CooperativeStickyAssignor, Error, FlushPolicy, Log, ManualClock, OffsetAndMetadata, Record,
    Result, TopicConfig, TopicPartition,
};

mod common;
use common::NOW;

type C = Consumer<String, String>;

fn open_log(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::Never)
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

fn consumer(log: &Log, config: ConsumerConfig, topics: &[&str]) -> C {
    let mut c = Consumer::new(log, config, StringSerde, StringSerde).unwrap();
    c.subscribe(topics).unwrap();
    c
}

/// Appends `n` records to every partition of `topic`, values `"<partition>-<i>"`.
fn produce(log: &Log, topic: &str, n: usize) {
    for p in 0..log.partition_count(topic).unwrap() {
        let part = log.partition(topic, p).unwrap();
        let values: Vec<String> = (0..n).map(|i| format!("{p}-{i}")).collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record::new(None, Some(v.as_bytes())))
            .collect();
        part.append(&records).unwrap();
    }
}

fn sorted(mut v: Vec<TopicPartition>) -> Vec<TopicPartition> {
    v.sort();
    v
}

/// What the members processed: (partition, offset) -> how many times, and who saw each
/// (generation, partition).
#[derive(Default)]
struct Ledger {
    seen: BTreeMap<(u32, i64), usize>,
    owners: HashMap<(i32, u32), String>,
}

impl Ledger {
    /// One poll by `name`: records it returned are processed, then committed.
    fn poll_process_commit(&mut self, name: &str, c: &mut C) -> usize {
        let records = c.poll(Duration::ZERO).unwrap();
        let generation = c.generation();
        for r in &records {
            *self.seen.entry((r.partition, r.offset)).or_default() += 1;
            let owner = self
                .owners
                .entry((generation, r.partition))
                .or_insert_with(|| name.to_string());
            assert_eq!(
                owner, name,
                "partition {} delivered to two members in generation {generation}",
                r.partition
            );
        }
        if !records.is_empty() {
            c.commit_sync().unwrap();
        }
        records.count()
    }
}

/// The seeds' scenario: A1 and A2 share a 3-partition topic; A2 stops; A1 owns all three
/// and every record is processed exactly once.
#[test]
fn a_stopped_members_partitions_move_to_the_survivor_without_loss_or_repeats() {
    for graceful in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let log = open_log(dir.path(), &clock);
        log.create_topic("likes", 3, TopicConfig::default())
            .unwrap();
        produce(&log, "likes", 50);

        let mut ledger = Ledger::default();
        let mut a1 = consumer(&log, config("counters").max_poll_records(7), &["likes"]);
        let mut a2 = consumer(&log, config("counters").max_poll_records(7), &["likes"]);
        // Both join; they take turns until both own partitions and have consumed some.
        for _ in 0..6 {
            ledger.poll_process_commit("a1", &mut a1);
            ledger.poll_process_commit("a2", &mut a2);
        }
        let (own1, own2) = (a1.assignment(), a2.assignment());
        assert_eq!(own1.len() + own2.len(), 3, "{own1:?} {own2:?}");
        assert!(!own1.is_empty() && !own2.is_empty(), "{own1:?} {own2:?}");
        produce(&log, "likes", 20);
        ledger.poll_process_commit("a2", &mut a2);

        // A2 stops: closed, or dropped (which also leaves the group).
        if graceful {
            a2.close().unwrap();
        } else {
            drop(a2);
        }
        let mut rounds = 0;
        while ledger.seen.len() < 3 * 70 {
            ledger.poll_process_commit("a1", &mut a1);
            rounds += 1;
            assert!(
                rounds < 200,
                "a1 stopped making progress: {:?}",
                a1.assignment()
            );
        }
        assert_eq!(
            sorted(a1.assignment()),
            vec![tp("likes", 0), tp("likes", 1), tp("likes", 2)]
        );
        let repeated: Vec<_> = ledger.seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "processed twice: {repeated:?}");
        assert_eq!(ledger.seen.len(), 210, "every record once");
    }
}

/// Records every callback, per consumer.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

/// A callback's name and its partitions.
type Call = (&'static str, Vec<TopicPartition>);

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl ConsumerRebalanceListener<String, String> for Recorder {
    fn on_partitions_revoked(&mut self, c: &mut C, p: &[TopicPartition]) -> Result<()> {
        self.0.lock().unwrap().push(("revoked", sorted(p.to_vec())));
        if !p.is_empty() {
            c.commit_sync()?;
        }
        Ok(())
    }
    fn on_partitions_assigned(&mut self, _: &mut C, p: &[TopicPartition]) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(("assigned", sorted(p.to_vec())));
        Ok(())
    }
    fn on_partitions_lost(&mut self, _: &mut C, p: &[TopicPartition]) -> Result<()> {
        self.0.lock().unwrap().push(("lost", sorted(p.to_vec())));
        Ok(())
    }
}

fn cooperative(group: &str) -> ConsumerConfig {
    config(group).partition_assignment_strategy(vec![Arc::new(CooperativeStickyAssignor)])
}

#[test]
fn a_cooperative_rebalance_keeps_unaffected_partitions_consuming() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();

    let ra = Recorder::default();
    let mut a = consumer(&log, cooperative("g"), &["t"]);
    a.set_rebalance_listener(ra.clone());
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.assignment().len(), 4, "alone, a owns everything");
    ra.take();

    let mut b = consumer(&log, cooperative("g"), &["t"]);
    b.poll(Duration::ZERO).unwrap(); // joins: the group starts rebalancing
    let mut ledger = Ledger::default();
    let mut a_records_during_rebalance = 0;
    for _ in 0..10 {
        produce(&log, "t", 5);
        // a never loses the partitions it keeps, and keeps consuming them throughout.
        let before = a.assignment().len();
        a_records_during_rebalance += ledger.poll_process_commit("a", &mut a);
        assert!(
            a.assignment().len() >= 2,
            "a dropped below its share: {:?}",
            a.assignment()
        );
        assert!(before >= 2);
        ledger.poll_process_commit("b", &mut b);
    }
    assert!(a_records_during_rebalance > 0);
    assert_eq!(a.assignment().len(), 2, "{:?}", a.assignment());
    assert_eq!(b.assignment().len(), 2, "{:?}", b.assignment());
    let calls = ra.take();
    // a revoked exactly the two partitions that moved, never everything.
    let revoked: Vec<_> = calls.iter().filter(|(k, _)| *k == "revoked").collect();
    assert_eq!(revoked.len(), 1, "{calls:?}");
    assert_eq!(revoked[0].1.len(), 2, "{calls:?}");
    let moved: BTreeSet<_> = revoked[0].1.iter().cloned().collect();
    let b_owns: BTreeSet<_> = b.assignment().into_iter().collect();
    assert_eq!(moved, b_owns, "what a revoked is what b got");
    // Nothing was lost or repeated across the handover (a committed in on_partitions_revoked).
    produce(&log, "t", 1);
    for _ in 0..4 {
        ledger.poll_process_commit("a", &mut a);
        ledger.poll_process_commit("b", &mut b);
    }
    assert!(
        ledger.seen.values().all(|n| *n == 1),
        "a record was processed twice"
    );
    assert_eq!(ledger.seen.len(), 4 * 51);
}

#[test]
fn an_eager_rebalance_revokes_everything_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let ra = Recorder::default();
    let mut a = consumer(&log, config("g"), &["t"]);
    a.set_rebalance_listener(ra.clone());
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(
        ra.take(),
        vec![("assigned", (0..4).map(|p| tp("t", p)).collect())]
    );
    let mut b = consumer(&log, config("g"), &["t"]);
    b.poll(Duration::ZERO).unwrap();
    a.poll(Duration::ZERO).unwrap();
    b.poll(Duration::ZERO).unwrap();
    let calls = ra.take();
    assert_eq!(calls[0], ("revoked", (0..4).map(|p| tp("t", p)).collect()));
    assert_eq!(
        calls[1],
        ("assigned", vec![tp("t", 0), tp("t", 1)]),
        "range: a gets 0-1"
    );
    assert_eq!(b.assignment(), vec![tp("t", 2), tp("t", 3)]);
}

#[test]
fn a_member_that_stops_polling_leaves_after_max_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let cfg = || config("g").max_poll_interval_ms(60_000);
    let mut a = consumer(&log, cfg(), &["t"]);
    let mut b = consumer(&log, cfg(), &["t"]);
    let rb = Recorder::default();
    b.set_rebalance_listener(rb.clone());
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
    }
    assert_eq!((a.assignment().len(), b.assignment().len()), (1, 1));
    let b_generation = b.generation();

    // a keeps polling; b is stuck in processing (alive, but not polling).
    clock.advance_ms(59_000);
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.assignment().len(), 1, "b is within its interval");
    clock.advance_ms(2_000);
    a.poll(Duration::ZERO).unwrap();
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.assignment().len(), 2, "b was removed; a owns both");

    // b's commit is from a generation that is over: rejected, nothing overwritten.
    a.commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(5))])
        .unwrap();
    let err = b
        .commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(1))])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownMemberId { .. } | Error::IllegalGeneration { .. }
        ),
        "{err}"
    );
    assert_eq!(
        a.committed(&[tp("t", 0)]).unwrap()[&tp("t", 0)]
            .as_ref()
            .unwrap()
            .offset,
        5
    );

    // b's next poll finds out: its partitions are lost, and it joins again.
    rb.take();
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(rb.take().first().map(|c| c.0), Some("lost"));
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
    }
    assert_eq!((a.assignment().len(), b.assignment().len()), (1, 1));
    assert!(b.generation() > b_generation);
}

#[test]
fn a_static_member_keeps_its_partitions_across_a_restart_within_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let cfg = |instance: &str| {
        config("g")
            .group_instance_id(instance)
            .session_timeout_ms(30_000)
    };
    let mut a = consumer(&log, cfg("a"), &["t"]);
    let mut b = consumer(&log, cfg("b"), &["t"]);
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
    }
    let (own_a, own_b, generation) = (a.assignment(), b.assignment(), a.generation());
    assert_eq!((own_a.len(), own_b.len()), (2, 2));

    // b restarts within the session timeout: no rebalance, same partitions.
    drop(b);
    clock.advance_ms(20_000);
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(
        a.assignment(),
        own_a,
        "a does not take b's partitions while b may return"
    );
    let mut b = consumer(&log, cfg("b"), &["t"]);
    b.poll(Duration::ZERO).unwrap();
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(sorted(b.assignment()), sorted(own_b.clone()));
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(
        (a.generation(), b.generation()),
        (generation, generation),
        "no rebalance"
    );

    // b goes for longer than the session timeout: a takes over.
    drop(b);
    clock.advance_ms(30_001);
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(a.assignment().len(), 4);
    assert!(a.generation() > generation);
}

#[test]
fn a_second_consumer_with_the_same_instance_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let cfg = || config("g").group_instance_id("only-one");
    let mut first = consumer(&log, cfg(), &["t"]);
    first.poll(Duration::ZERO).unwrap();
    let mut second = consumer(&log, cfg(), &["t"]);
    second.poll(Duration::ZERO).unwrap();
    second.poll(Duration::ZERO).unwrap();
    assert_eq!(second.assignment().len(), 2);
    let err = first.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::FencedInstanceId { .. }), "{err}");
    assert!(first.assignment().is_empty());
}

#[test]
fn committed_offsets_survive_a_restart_and_positions_start_there() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    {
        let log = open_log(dir.path(), &clock);
        log.create_topic("t", 1, TopicConfig::default()).unwrap();
        produce(&log, "t", 10);
        let mut c = consumer(&log, config("g").max_poll_records(4), &["t"]);
        let first = c.poll(Duration::ZERO).unwrap();
        assert_eq!(first.count(), 4);
        c.commit_sync_offsets([(
            tp("t", 0),
            OffsetAndMetadata::new(4).with_metadata("batch-1"),
        )])
        .unwrap();
        c.close().unwrap();
        log.close().unwrap();
    }
    let log = open_log(dir.path(), &clock);
    let mut c = consumer(&log, config("g"), &["t"]);
    let committed = c.committed(&[tp("t", 0)]).unwrap();
    assert_eq!(
        committed[&tp("t", 0)],
        Some(OffsetAndMetadata::new(4).with_metadata("batch-1"))
    );
    let records = c.poll(Duration::ZERO).unwrap();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());
}

#[test]
fn auto_commit_commits_what_earlier_polls_returned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    produce(&log, "t", 10);
    let cfg = config("g")
        .enable_auto_commit(true)
        .auto_commit_interval_ms(5_000)
        .max_poll_records(3);
    let mut c = consumer(&log, cfg, &["t"]);
    let committed = |c: &C| {
        c.committed(&[tp("t", 0)]).unwrap()[&tp("t", 0)]
            .clone()
            .map(|o| o.offset)
    };
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 3);
    assert_eq!(committed(&c), None, "not due yet");
    clock.advance_ms(5_000);
    // This poll commits the 3 records the previous one returned, then returns 3 more.
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 3);
    assert_eq!(committed(&c), Some(3), "only what earlier polls returned");
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 3);
    assert_eq!(committed(&c), Some(3), "the interval has not passed again");
    c.close().unwrap();
    let c2 = consumer(&log, config("g"), &["t"]);
    assert_eq!(
        committed(&c2),
        Some(9),
        "close commits the consumed positions"
    );
}

#[test]
fn auto_offset_reset_applies_without_a_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    produce(&log, "t", 5);
    let mut none = consumer(
        &log,
        config("g1").auto_offset_reset(AutoOffsetReset::None),
        &["t"],
    );
    let err = none.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::NoOffsetForPartition { .. }), "{err}");
    let mut latest = consumer(
        &log,
        config("g2").auto_offset_reset(AutoOffsetReset::Latest),
        &["t"],
    );
    assert!(latest.poll(Duration::ZERO).unwrap().is_empty());
    produce(&log, "t", 1);
    assert_eq!(latest.poll(Duration::ZERO).unwrap().count(), 1);
    // With a committed offset, `none` starts there.
    none.commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(2))])
        .unwrap();
    drop(none);
    let mut none = consumer(
        &log,
        config("g1").auto_offset_reset(AutoOffsetReset::None),
        &["t"],
    );
    assert_eq!(none.poll(Duration::ZERO).unwrap().count(), 4);
}

#[test]
fn groups_are_independent_and_a_group_may_read_several_topics() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("likes", 2, TopicConfig::default())
        .unwrap();
    log.create_topic("views", 2, TopicConfig::default())
        .unwrap();
    produce(&log, "likes", 3);
    produce(&log, "views", 4);
    let mut both = consumer(&log, config("both"), &["likes", "views"]);
    let mut only = consumer(&log, config("only-likes"), &["likes"]);
    let drain = |c: &mut C| {
        let mut n = 0;
        for _ in 0..5 {
            let got = c.poll(Duration::ZERO).unwrap().count();
            n += got;
            if got > 0 {
                c.commit_sync().unwrap();
            }
        }
        n
    };
    assert_eq!(drain(&mut both), 2 * 3 + 2 * 4);
    assert_eq!(
        drain(&mut only),
        2 * 3,
        "the other group's commits do not matter"
    );
    assert_eq!(both.assignment().len(), 4);
}

#[test]
fn a_pattern_subscription_follows_topics_as_they_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("metrics.cpu", 1, TopicConfig::default())
        .unwrap();
    log.create_topic("other", 1, TopicConfig::default())
        .unwrap();
    let mut c =
        Consumer::<String, String>::new(&log, config("g"), StringSerde, StringSerde).unwrap();
    c.subscribe_pattern(r"metrics\..*").unwrap();
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(c.assignment(), vec![tp("metrics.cpu", 0)]);
    log.create_topic("metrics.mem", 2, TopicConfig::default())
        .unwrap();
    produce(&log, "metrics.mem", 1);
    let mut got = 0;
    for _ in 0..4 {
        got += c.poll(Duration::ZERO).unwrap().count();
    }
    assert_eq!(
        sorted(c.assignment()),
        vec![
            tp("metrics.cpu", 0),
            tp("metrics.mem", 0),
            tp("metrics.mem", 1)
        ]
    );
    assert_eq!(got, 2);
    assert!(c.subscription().iter().all(|t| t.starts_with("metrics.")));
    assert!(c.subscribe_pattern("(").is_err());
}

#[test]
fn a_topic_deleted_under_the_group_is_dropped_by_the_rebalance_without_poll_errors() {
    for cooperative_members in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let log = open_log(dir.path(), &clock);
        log.create_topic("kept", 2, TopicConfig::default()).unwrap();
        log.create_topic("gone", 2, TopicConfig::default()).unwrap();
        let make = || {
            let config = if cooperative_members {
                cooperative("g")
            } else {
                config("g")
            };
            consumer(&log, config, &["kept", "gone"])
        };
        let (mut a, mut b) = (make(), make());
        for _ in 0..6 {
            a.poll(Duration::ZERO).unwrap();
            b.poll(Duration::ZERO).unwrap();
        }
        assert_eq!(a.assignment().len() + b.assignment().len(), 4);

        // A cooperative member keeps its partitions (the deleted ones too) while the group
        // rebalances: polling them is not an error, and the rebalance drops them.
        log.delete_topic("gone").unwrap();
        produce(&log, "kept", 3);
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            for c in [&mut a, &mut b] {
                let records = c.poll(Duration::ZERO).unwrap();
                seen.extend(
                    records
                        .iter()
                        .map(|r| (r.topic.to_string(), r.partition, r.offset)),
                );
                // Mid-rebalance a commit is refused (retriable, as in Kafka); the next one
                // covers the same records.
                match c.commit_sync() {
                    Ok(()) | Err(Error::RebalanceInProgress { .. }) => {}
                    Err(e) => panic!("commit: {e:?}"),
                }
            }
        }
        let mut owned = a.assignment();
        owned.extend(b.assignment());
        assert_eq!(sorted(owned), vec![tp("kept", 0), tp("kept", 1)]);
        let expected: BTreeSet<_> = (0..2)
            .flat_map(|p| (0..3).map(move |o| ("kept".to_string(), p, o)))
            .collect();
        assert_eq!(seen, expected, "cooperative: {cooperative_members}");
    }
}

#[test]
fn subscribe_and_assign_do_not_mix_and_commits_need_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let mut c = consumer(&log, config("g"), &["t"]);
    assert!(matches!(
        c.assign(&[tp("t", 0)]),
        Err(Error::IllegalState { .. })
    ));
    c.unsubscribe().unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    assert!(matches!(
        c.subscribe(&["t"]),
        Err(Error::IllegalState { .. })
    ));

    let mut no_group =
        Consumer::<String, String>::new(&log, ConsumerConfig::default(), StringSerde, StringSerde)
            .unwrap();
    assert!(matches!(
        no_group.subscribe(&["t"]),
        Err(Error::IllegalState { .. })
    ));
    assert!(matches!(
        no_group.commit_sync(),
        Err(Error::IllegalState { .. })
    ));
    assert!(matches!(
        ConsumerConfig::default().set("heartbeat.interval.ms", "50000"),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        ConsumerConfig::default().set("partition.assignment.strategy", "range,bogus"),
        Err(Error::InvalidConfig { .. })
    ));
    let cfg = ConsumerConfig::default()
        .set(
            "partition.assignment.strategy",
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
        )
        .unwrap();
    assert_eq!(
        cfg.rebalance_protocol(),
        core_log::RebalanceProtocol::Cooperative
    );
    assert_eq!(
        ConsumerConfig::default().rebalance_protocol(),
        core_log::RebalanceProtocol::Eager
    );
}

/// A manually assigned consumer with a group id commits as a "simple" consumer and starts
/// from the committed offsets.
#[test]
fn a_manually_assigned_consumer_uses_the_groups_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    produce(&log, "t", 6);
    let mut c =
        Consumer::<String, String>::new(&log, config("g"), StringSerde, StringSerde).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    c.commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(4))])
        .unwrap();
    drop(c);
    let mut c =
        Consumer::<String, String>::new(&log, config("g"), StringSerde, StringSerde).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    assert_eq!(c.poll(Duration::ZERO).unwrap().count(), 2);
}

/// Members on their own threads, as an application runs them: a waiting poll is woken by
/// the rebalance, and every record is consumed once.
#[test]
fn threaded_members_share_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path())
        .flush_policy(FlushPolicy::Never)
        .background_maintenance(false)
        .offsets_topic_num_partitions(4)
        .open()
        .unwrap();
    log.create_topic("t", 6, TopicConfig::default()).unwrap();
    produce(&log, "t", 200);
    let seen = Arc::new(Mutex::new(BTreeMap::<(u32, i64), usize>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (log, seen, stop) = (log.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = consumer(&log, cooperative("g").heartbeat_interval_ms(50), &["t"]);
                c.set_rebalance_listener(Recorder::default());
                let mut owned_max = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let records = c.poll(Duration::from_millis(100)).unwrap();
                    for r in &records {
                        *seen
                            .lock()
                            .unwrap()
                            .entry((r.partition, r.offset))
                            .or_default() += 1;
                    }
                    if !records.is_empty() {
                        // As with Kafka's cooperative protocol, a commit while the group
                        // waits for the leader's assignment is refused and retriable; the
                        // partitions stay owned, and a revocation commits them.
                        match c.commit_sync() {
                            Ok(()) | Err(Error::RebalanceInProgress { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    owned_max = owned_max.max(c.assignment().len());
                }
                // The others close at the same time, so the group may be rebalancing and
                // the revocation commit refused: Kafka's close reports that too. Everything
                // consumed was committed after its poll already.
                match c.close() {
                    Ok(())
                    | Err(Error::RebalanceInProgress { .. })
                    | Err(Error::IllegalGeneration { .. }) => {}
                    Err(e) => panic!("close: {e}"),
                }
                owned_max
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 6 * 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6 * 200, "every record consumed");
    assert!(seen.values().all(|n| *n == 1), "no record consumed twice");
}

fn assert_disjoint(step: &str, consumers: &[(&str, &C)]) {
    let mut seen: Vec<(TopicPartition, &str)> = Vec::new();
    for (name, c) in consumers {
        for p in c.assignment() {
            if let Some((_, other)) = seen.iter().find(|(q, _)| *q == p) {
                panic!(
                    "{step}: {p} is assigned to {other} (gen {}) and {name} (gen {}) at once",
                    consumers
                        .iter()
                        .find(|(n, _)| n == other)
                        .unwrap()
                        .1
                        .generation(),
                    c.generation()
                );
            }
            seen.push((p, name));
        }
    }
}

/// Rolling upgrade range -> cooperative-sticky (the path `CooperativeStickyAssignor`'s doc
/// promises): the leader still lists `range` (so it is eager and skips `cooperative_adjust`),
/// while a cooperative member keeps consuming what it owns during the rebalance. The leader
/// hands that member's partition to a newcomer at once: two members fetch it together.
#[test]
fn a_mixed_eager_and_cooperative_group_never_assigns_a_partition_twice() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    produce(&log, "t", 10);
    // Default strategy [range, cooperative-sticky]: eager protocol. Joins first: the leader.
    let mut leader = consumer(&log, config("g"), &["t"]);
    leader.poll(Duration::ZERO).unwrap();
    // Already upgraded: [cooperative-sticky] only, so cooperative.
    let coop_cfg =
        config("g").partition_assignment_strategy(vec![Arc::new(CooperativeStickyAssignor)]);
    let mut coop = consumer(&log, coop_cfg, &["t"]);
    for _ in 0..4 {
        coop.poll(Duration::ZERO).unwrap();
        leader.poll(Duration::ZERO).unwrap();
    }
    assert_eq!((leader.assignment().len(), coop.assignment().len()), (2, 2));
    // Two newcomers (eager): 4 members, 1 partition each: coop must give one away.
    let mut c3 = consumer(&log, config("g"), &["t"]);
    let mut c4 = consumer(&log, config("g"), &["t"]);
    for round in 0..6 {
        c3.poll(Duration::ZERO).unwrap();
        c4.poll(Duration::ZERO).unwrap();
        leader.poll(Duration::ZERO).unwrap();
        assert_disjoint(
            &format!("round {round} after leader"),
            &[
                ("leader", &leader),
                ("coop", &coop),
                ("c3", &c3),
                ("c4", &c4),
            ],
        );
        c3.poll(Duration::ZERO).unwrap();
        c4.poll(Duration::ZERO).unwrap();
        assert_disjoint(
            &format!("round {round} after c3/c4"),
            &[
                ("leader", &leader),
                ("coop", &coop),
                ("c3", &c3),
                ("c4", &c4),
            ],
        );
        coop.poll(Duration::ZERO).unwrap();
    }
}

/// KIP-814: a static leader that comes back without a rebalance still has to watch metadata.
/// Here it gets no member list, so `assigned_metadata` stays `None` and a subscribed topic
/// created later is never assigned.
#[test]
fn a_static_leader_back_without_a_rebalance_still_assigns_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let cfg = || {
        config("g")
            .group_instance_id("s1")
            .session_timeout_ms(30_000)
    };
    let mut s = consumer(&log, cfg(), &["t", "later"]);
    for _ in 0..3 {
        s.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(s.assignment().len(), 2);
    let generation = s.generation();
    drop(s); // static: stays in the group
    let mut s = consumer(&log, cfg(), &["t", "later"]);
    for _ in 0..3 {
        s.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(s.generation(), generation, "came back without a rebalance");
    log.create_topic("later", 2, TopicConfig::default())
        .unwrap();
    for _ in 0..10 {
        clock.advance_ms(1_000);
        s.poll(Duration::ZERO).unwrap();
    }
    let owned: BTreeSet<_> = s.assignment().into_iter().collect();
    assert!(
        owned.contains(&tp("later", 0)) && owned.contains(&tp("later", 1)),
        "the new topic's partitions are never assigned: {owned:?}"
    );
}

/// After the log is reopened, a static member coming back triggers a rebalance with the
/// default two-assignor config: restore_group keeps only the selected protocol, and
/// replace_static_member compares the whole list (Kafka compares the selected protocol).
#[test]
fn a_static_member_returns_after_a_log_reopen_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let cfg = || {
        config("g")
            .group_instance_id("s1")
            .session_timeout_ms(30_000)
    };
    let generation;
    {
        let log = open_log(dir.path(), &clock);
        log.create_topic("t", 2, TopicConfig::default()).unwrap();
        let mut s = consumer(&log, cfg(), &["t"]);
        for _ in 0..3 {
            s.poll(Duration::ZERO).unwrap();
        }
        generation = s.generation();
        drop(s);
        log.close().unwrap();
    }
    let log = open_log(dir.path(), &clock);
    let mut s = consumer(&log, cfg(), &["t"]);
    for _ in 0..3 {
        s.poll(Duration::ZERO).unwrap();
    }
    assert_eq!(s.assignment().len(), 2);
    assert_eq!(
        s.generation(),
        generation,
        "a static member's return should not rebalance"
    );
}

/// Drop while unwinding from a panic in the processing code auto-commits the positions of the
/// records the last poll returned, which were never processed: they are lost.
#[test]
fn a_consumer_dropped_by_a_panic_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    produce(&log, "t", 10);
    let cfg = config("g").enable_auto_commit(true);
    let log2 = log.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut c = consumer(&log2, cfg, &["t"]);
        let records = c.poll(Duration::ZERO).unwrap();
        assert_eq!(records.count(), 10);
        panic!("processing failed before any record was handled");
    }));
    assert!(r.is_err());
    let c = Consumer::<String, String>::new(&log, config("g"), StringSerde, StringSerde).unwrap();
    let committed = c.committed(&[tp("t", 0)]).unwrap();
    assert_eq!(
        committed[&tp("t", 0)].as_ref().map(|o| o.offset),
        None,
        "records that were never processed were committed by Drop during unwinding"
    );
}

/// A dynamic member past max.poll.interval.ms is removed or not depending on which call
/// reaches the coordinator first: `heartbeat(polled = true)` refreshes the poll deadline
/// before `expire` runs, while `commit_offsets` expires first.
#[test]
fn a_late_member_is_removed_whichever_call_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let cfg = |g: &str| config(g).max_poll_interval_ms(60_000);
    let mut polls = consumer(&log, cfg("g1"), &["t"]);
    let mut commits = consumer(&log, cfg("g2"), &["t"]);
    for _ in 0..3 {
        polls.poll(Duration::ZERO).unwrap();
        commits.poll(Duration::ZERO).unwrap();
    }
    let (member, generation) = (polls.member_id().unwrap().to_string(), polls.generation());
    clock.advance_ms(61_000); // both stopped polling for longer than max.poll.interval.ms
    let commit = commits.commit_sync();
    assert!(commit.is_err(), "g2's member was removed: its commit fails");
    polls.poll(Duration::ZERO).unwrap();
    assert_ne!(
        (polls.member_id().unwrap().to_string(), polls.generation()),
        (member, generation),
        "g1's member is as late as g2's but was never removed"
    );
}

/// KIP-345: a static member that does not rejoin within the rebalance timeout stays in the
/// group (with its assignment) until session.timeout.ms. Here it is removed at the rebalance
/// deadline, so a restart of a static member during any rebalance moves its partitions.
#[test]
fn a_static_member_keeps_its_partitions_through_a_rebalance_within_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 4, TopicConfig::default()).unwrap();
    let cfg = |i: &str| {
        config("g")
            .group_instance_id(i)
            .session_timeout_ms(600_000)
            .max_poll_interval_ms(60_000)
    };
    let mut a = consumer(&log, cfg("a"), &["t"]);
    let mut b = consumer(&log, cfg("b"), &["t"]);
    for _ in 0..3 {
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
    }
    let b_owned = b.assignment();
    drop(b); // restarting, back within session.timeout.ms
    let mut c = consumer(&log, config("g").max_poll_interval_ms(60_000), &["t"]);
    c.poll(Duration::ZERO).unwrap();
    a.poll(Duration::ZERO).unwrap();
    // a and c keep polling; b is away for 70 s, far less than its 600 s session timeout.
    for _ in 0..7 {
        clock.advance_ms(10_000);
        a.poll(Duration::ZERO).unwrap();
        c.poll(Duration::ZERO).unwrap();
    }
    a.poll(Duration::ZERO).unwrap();
    c.poll(Duration::ZERO).unwrap();
    // b was not removed at the rebalance deadline: it is still a member and holds its share
    // (range over a, b, c), which nobody else consumes meanwhile.
    let d = core_log::Admin::new(&log)
        .describe_consumer_group("g")
        .unwrap();
    let b_member = d
        .members
        .iter()
        .find(|m| m.group_instance_id.as_deref() == Some("b"))
        .expect("b is still a member");
    assert!(!b_member.assignment.is_empty());
    let live: Vec<_> = a.assignment().into_iter().chain(c.assignment()).collect();
    assert!(b_member.assignment.iter().all(|p| !live.contains(p)));
    assert!(
        b_owned.iter().any(|p| b_member.assignment.contains(p)),
        "b keeps part of its old share"
    );
    // b comes back within its session timeout: its share, no rebalance.
    let generation = a.generation();
    let mut b = consumer(&log, cfg("b"), &["t"]);
    b.poll(Duration::ZERO).unwrap();
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(sorted(b.assignment()), sorted(b_member.assignment.clone()));
    a.poll(Duration::ZERO).unwrap();
    assert_eq!((a.generation(), b.generation()), (generation, generation));
}

/// `unsubscribe` from `on_partitions_assigned` is allowed, but `update_group`'s loop does not
/// notice: it joins again at once, as a new member with no topics, which the group then waits
/// for in every rebalance until its poll interval runs out.
#[test]
fn unsubscribe_inside_a_callback_is_refused() {
    use core_log::Admin;
    struct Quit;
    impl ConsumerRebalanceListener<String, String> for Quit {
        fn on_partitions_assigned(&mut self, c: &mut C, p: &[TopicPartition]) -> Result<()> {
            if !p.is_empty() {
                c.unsubscribe()?;
            }
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open_log(dir.path(), &clock);
    log.create_topic("t", 2, TopicConfig::default()).unwrap();
    let mut c = consumer(&log, config("g"), &["t"]);
    c.set_rebalance_listener(Quit);
    let err = c.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::IllegalState { .. }), "{err}");
    // Still a proper member: subscribed, owning its partitions, and the only member.
    assert_eq!(c.subscription(), vec!["t".to_string()]);
    assert_eq!(c.assignment().len(), 2);
    let members = Admin::new(&log)
        .describe_consumer_group("g")
        .unwrap()
        .members;
    assert_eq!(members.len(), 1);
    c.unsubscribe().unwrap();
    let members = Admin::new(&log)
        .describe_consumer_group("g")
        .unwrap()
        .members;
    assert!(members.is_empty(), "{members:?}");
}
