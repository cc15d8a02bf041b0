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
