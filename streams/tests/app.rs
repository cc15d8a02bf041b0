//! The application runtime: stream threads in a consumer group, at-least-once commits,
//! restarts that continue from the same state, restore from a checkpoint reading only the
//! changelog tail, instances sharing work, state listener and uncaught-error handling.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of these tests unwrap as the tests do: a failure is a test failure"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use core_log::{Admin, IsolationLevel, Log, Record as LogRecord, TopicConfig};
use streams::serde::{IntegerSerde, Nullable, StringSerde};
use streams::{
    Consumed, Error, Materialized, Processor, ProcessorContext, Produced, Record, State,
    StreamThreadExceptionResponse, Streams, StreamsBuilder, StreamsConfig, Topology,
};

use common::{count_topology, wait_caught_up, wait_until};

const PARTITIONS: u32 = 4;

fn open_log(dir: &Path) -> Log {
    // No background compaction: the tests count changelog records.
    let log = Log::builder(dir.join("log"))
        .background_maintenance(false)
        .open()
        .unwrap();
    for t in ["likes", "counts"] {
        if log.partition_count(t).is_err() {
            log.create_topic(t, PARTITIONS, TopicConfig::default())
                .unwrap();
        }
    }
    log
}

fn config(app: &str, dir: &Path, state: &str, threads: usize) -> StreamsConfig {
    StreamsConfig::new(app)
        .num_stream_threads(threads)
        .commit_interval_ms(20)
        .poll_ms(10)
        .state_dir(dir.join(state))
}

/// Appends `n` likes starting at event `from`, keyed `p<i % keys>`, to the key's partition.
fn produce(log: &Log, from: u64, n: u64, keys: u64, expected: &mut HashMap<String, i64>) {
    for i in from..from + n {
        let key = format!("p{}", i % keys);
        let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS);
        log.partition("likes", p)
            .unwrap()
            .append(&[LogRecord::new(Some(key.as_bytes()), Some(b"like"))])
            .unwrap();
        *expected.entry(key).or_default() += 1;
    }
}

/// Calls `f` with the key and value of every record of `counts` that read_committed readers
/// see (all of them without transactions).
fn read_output(log: &Log, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    let mut buf = Vec::new();
    for p in 0..PARTITIONS {
        let part = log.partition("counts", p).unwrap();
        let mut offset = 0;
        while offset < part.last_stable_offset().unwrap() {
            let fetch = part
                .read_into_isolated(
                    offset,
                    1 << 20,
                    &mut buf,
                    core_log::IsolationLevel::ReadCommitted,
                )
                .unwrap();
            for r in fetch.committed_records() {
                f(r.key.unwrap(), r.value);
            }
            offset = fetch.next_offset();
        }
    }
}

/// The latest count per key in the output topic, as read_committed readers see it.
fn output_counts(log: &Log) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    read_output(log, |k, v| {
        let v = i64::from_be_bytes(v.unwrap().try_into().unwrap());
        out.insert(String::from_utf8(k.to_vec()).unwrap(), v);
    });
    out
}

fn changelog_records(log: &Log, topic: &str) -> u64 {
    let mut n = 0;
    let mut buf = Vec::new();
    for p in 0..log.partition_count(topic).unwrap() {
        let part = log.partition(topic, p).unwrap();
        let mut offset = part.log_start_offset().unwrap();
        while offset < part.high_watermark().unwrap() {
            let fetch = part.read_into(offset, 1 << 20, &mut buf).unwrap();
            n += fetch.records().count() as u64;
            offset = fetch.next_offset();
        }
    }
    n
}

#[test]
fn two_threads_count_and_a_restart_continues_from_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    produce(&log, 0, 2_000, 50, &mut expected);

    let app = Streams::new(
        count_topology(),
        &log,
        config("restart", dir.path(), "state", 2),
    )
    .unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    wait_caught_up(&log, "restart", "likes");
    app.close().unwrap();
    assert_eq!(output_counts(&log), expected);
    assert_eq!(app.metrics().processed, 2_000);

    // A restart with the same state directory: the stores are at their checkpoints, nothing
    // is restored, and counting continues from the counts before.
    let app = Streams::new(
        count_topology(),
        &log,
        config("restart", dir.path(), "state", 2),
    )
    .unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    produce(&log, 2_000, 1_000, 50, &mut expected);
    wait_caught_up(&log, "restart", "likes");
    app.close().unwrap();
    assert_eq!(app.metrics().restored_records, 0);
    assert_eq!(
        app.metrics().processed,
        1_000,
        "nothing is processed twice after a clean close"
    );
    assert_eq!(output_counts(&log), expected);
}

#[test]
fn restore_from_a_checkpoint_reads_only_the_changelog_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    produce(&log, 0, 3_000, 500, &mut expected);
    let app = Streams::new(
        count_topology(),
        &log,
        config("tail", dir.path(), "state", 1),
    )
    .unwrap();
    app.start().unwrap();
    wait_caught_up(&log, "tail", "likes");
    app.close().unwrap();

    // Records appended to the changelog after the checkpoint (as another instance that owned
    // the task would have written them) are all a restart reads.
    let changelog = "tail-counts-changelog";
    let extra: u64 = 7;
    for i in 0..extra {
        let key = format!("p{i}");
        let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS);
        let value = (1_000 + i as i64).to_be_bytes();
        log.partition(changelog, p)
            .unwrap()
            .append(&[LogRecord::new(Some(key.as_bytes()), Some(&value))])
            .unwrap();
        expected.insert(key, 1_000 + i as i64);
    }
    let app = Streams::new(
        count_topology(),
        &log,
        config("tail", dir.path(), "state", 1),
    )
    .unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    // One more like for p0 shows the restored value was used.
    produce(&log, 3_000, 1, 500, &mut HashMap::new());
    *expected.get_mut("p0").unwrap() += 1;
    wait_caught_up(&log, "tail", "likes");
    app.close().unwrap();
    assert_eq!(app.metrics().restored_records, extra);
    assert_eq!(output_counts(&log)["p0"], expected["p0"]);

    // Without local state the whole changelog is read.
    let total = changelog_records(&log, changelog);
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let app = Streams::new(
        count_topology(),
        &log,
        config("tail", dir.path(), "state", 1),
    )
    .unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    app.close().unwrap();
    assert_eq!(app.metrics().restored_records, total);
}

#[test]
fn two_instances_in_one_process_share_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    let a = Streams::new(
        count_topology(),
        &log,
        config("shared", dir.path(), "state-a", 1),
    )
    .unwrap();
    let b = Streams::new(
        count_topology(),
        &log,
        config("shared", dir.path(), "state-b", 1),
    )
    .unwrap();
    a.start().unwrap();
    b.start().unwrap();
    assert!(a.wait_for_state(State::Running, Duration::from_secs(10)));
    assert!(b.wait_for_state(State::Running, Duration::from_secs(10)));
    produce(&log, 0, 4_000, 64, &mut expected);
    wait_caught_up(&log, "shared", "likes");
    a.close().unwrap();
    b.close().unwrap();
    let (pa, pb) = (a.metrics().processed, b.metrics().processed);
    assert!(pa > 0 && pb > 0, "both instances worked: {pa} and {pb}");
    assert_eq!(output_counts(&log), expected);
}

/// Fails the first time it sees `p3`, then works.
struct FailOnce(Arc<AtomicBool>);

impl Processor<String, String> for FailOnce {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        r: Record<String, String>,
    ) -> streams::Result<()> {
        if r.key == "p3" && !self.0.swap(true, Ordering::SeqCst) {
            return Err(Error::Processing {
                processor: "fail-once".into(),
                source: "transient failure".into(),
            });
        }
        ctx.forward(r)
    }
}

fn failing_topology(failed: Arc<AtomicBool>) -> Topology {
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .process::<String, String, _>("fail-once", move || FailOnce(failed.clone()), &[])
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    b.build().unwrap()
}

#[test]
fn a_failed_thread_is_replaced_and_no_record_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    produce(&log, 0, 500, 10, &mut expected);
    let failed = Arc::new(AtomicBool::new(false));
    let app = Streams::new(
        failing_topology(failed.clone()),
        &log,
        config("replace", dir.path(), "state", 1),
    )
    .unwrap();
    app.set_uncaught_exception_handler(|_| StreamThreadExceptionResponse::ReplaceThread);
    app.start().unwrap();
    wait_caught_up(&log, "replace", "likes");
    app.close().unwrap();
    assert!(failed.load(Ordering::SeqCst));
    // At-least-once: every record counted; records since the last commit may count twice.
    let out = output_counts(&log);
    for (k, n) in &expected {
        assert!(out[k] >= *n, "{k}: {} < {n}", out[k]);
    }
}

#[test]
fn shutdown_client_stops_the_instance_in_error_state_and_the_listener_sees_each_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    produce(&log, 0, 100, 10, &mut HashMap::new());
    let failed = Arc::new(AtomicBool::new(false));
    let app = Streams::new(
        failing_topology(failed),
        &log,
        config("error", dir.path(), "state", 1),
    )
    .unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    app.set_state_listener(move |new, old| seen.lock().unwrap().push((old, new)));
    assert_eq!(app.state(), State::Created);
    app.start().unwrap();
    assert!(app.wait_for_state(State::Error, Duration::from_secs(10)));
    app.close().unwrap();
    assert_eq!(app.state(), State::Error);
    let states = states.lock().unwrap().clone();
    assert_eq!(states.first(), Some(&(State::Created, State::Rebalancing)));
    assert_eq!(states.last().map(|s| s.1), Some(State::Error));

    // A clean life: Created -> Rebalancing -> Running -> PendingShutdown -> NotRunning.
    let app = Streams::new(
        count_topology(),
        &log,
        config("clean", dir.path(), "state2", 1),
    )
    .unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    app.set_state_listener(move |new, _| seen.lock().unwrap().push(new));
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    app.close().unwrap();
    let states = states.lock().unwrap().clone();
    assert_eq!(states.first(), Some(&State::Rebalancing));
    assert!(states.contains(&State::Running));
    assert_eq!(
        &states[states.len() - 2..],
        &[State::PendingShutdown, State::NotRunning]
    );
    assert!(matches!(app.start(), Err(Error::IllegalState { .. })));
}

#[test]
fn a_missing_dead_letter_topic_fails_start_and_the_app_starts_once_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let app = Streams::new(
        count_topology(),
        &log,
        config("dlq", dir.path(), "state", 1).dead_letter_queue_topic("dead-letters"),
    )
    .unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    app.set_state_listener(move |new, _| seen.lock().unwrap().push(new));

    // Refused at start, naming the topic, rather than at the first poison record.
    let err = app.start().unwrap_err();
    assert!(
        matches!(&err, Error::MissingDeadLetterTopic { topic } if topic == "dead-letters"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"dead-letters\""), "{err}");
    assert!(!err.is_retriable());
    // Nothing started, nothing created: the application is as it was.
    assert_eq!(app.state(), State::Created);
    assert!(states.lock().unwrap().is_empty());
    assert!(!log.topics().iter().any(|t| t.starts_with("dlq-")));

    // With the topic, the same application starts, and a poison record (a value that is not
    // UTF-8) goes there while processing goes on.
    log.create_topic("dead-letters", 1, TopicConfig::default())
        .unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    let key = "p0";
    let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS);
    log.partition("likes", p)
        .unwrap()
        .append(&[LogRecord::new(Some(key.as_bytes()), Some(&[0xff, 0xfe]))])
        .unwrap();
    produce(&log, 0, 1, 1, &mut HashMap::new());
    wait_caught_up(&log, "dlq", "likes");
    let dead = log.partition("dead-letters", 0).unwrap();
    assert_eq!(dead.high_watermark().unwrap(), 1);
    assert_eq!(app.metrics().dead_lettered, 1);
    assert_eq!(app.state(), State::Running);
    app.close().unwrap();
}

#[test]
fn a_changelog_write_the_log_refuses_fails_the_commit_instead_of_losing_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    // The changelog exists already with a small max.message.bytes: a big key cannot be logged.
    let small = TopicConfig {
        cleanup_policy: core_log::CleanupPolicy::COMPACT,
        ..TopicConfig::default()
    }
    .max_message_bytes(16 * 1024);
    log.create_topic("cl-counts-changelog", PARTITIONS, small)
        .unwrap();
    let app = Streams::new(count_topology(), &log, config("cl", dir.path(), "state", 1)).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    app.set_uncaught_exception_handler(move |e| {
        seen.lock().unwrap().push(e.to_string());
        StreamThreadExceptionResponse::ShutdownClient
    });
    app.start().unwrap();
    let big = "B".repeat(20 * 1024);
    let p = core_log::partition_for_key(big.as_bytes(), PARTITIONS);
    log.partition("likes", p)
        .unwrap()
        .append(&[LogRecord::new(Some(big.as_bytes()), Some(b"like"))])
        .unwrap();
    assert!(app.wait_for_state(State::Error, Duration::from_secs(10)));
    app.close().unwrap();
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max.message.bytes"), "{errors:?}");
    // Nothing was committed past the record whose state could not be logged.
    let committed = Admin::new(&log).list_consumer_group_offsets("cl").unwrap();
    assert!(
        committed
            .iter()
            .all(|(tp, o)| tp.topic != "likes" || tp.partition != p || o.offset == 0),
        "{committed:?}"
    );
}

#[test]
fn a_panic_in_user_code_reaches_the_uncaught_exception_handler() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .map_values(|_, v: String| {
            assert!(v != "boom", "user code panicked");
            v
        })
        .to("counts", Produced::with(StringSerde, StringSerde));
    let app = Streams::new(
        b.build().unwrap(),
        &log,
        config("panic", dir.path(), "state", 1),
    )
    .unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    app.set_uncaught_exception_handler(move |e| {
        seen.lock().unwrap().push(e.to_string());
        StreamThreadExceptionResponse::ShutdownClient
    });
    app.start().unwrap();
    log.partition("likes", 0)
        .unwrap()
        .append(&[LogRecord::new(Some(b"k"), Some(b"boom"))])
        .unwrap();
    assert!(app.wait_for_state(State::Error, Duration::from_secs(10)));
    app.close().unwrap();
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.len() == 1 && errors[0].contains("user code panicked"),
        "{errors:?}"
    );
}

/// Where the first processor to reach it stops until the test lets it go: the test sees it
/// arrive, and decides what happens in the meantime. Later arrivals pass.
#[derive(Default)]
struct Gate {
    /// (a processor has arrived, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Called by a processor: the first caller announces it has arrived and blocks until the
    /// gate opens; the others go on.
    fn hold(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 {
            return;
        }
        s.0 = true;
        self.changed.notify_all();
        while !s.1 {
            s = self.changed.wait(s).unwrap();
        }
    }

    /// Waits (at most `timeout`) until a processor has arrived.
    fn wait_arrived(&self, timeout: Duration) -> bool {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| !s.0)
            .unwrap();
        s.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Opens the gate when dropped: a failing test does not leave a thread held at it (closing
/// its application would wait for that thread forever).
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Echoes its input; the first record keyed `stall`, of any instance sharing `gate`, holds
/// its thread there.
fn gated_echo(gate: Arc<Gate>) -> Topology {
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .peek(move |k, _| {
            if k == "stall" {
                gate.hold();
            }
        })
        .to("counts", Produced::with(StringSerde, StringSerde));
    b.build().unwrap()
}

/// The records of `counts`, as (key, producer id): those read_committed readers see, and
/// those they do not (aborted transactions').
#[derive(Debug, Default)]
struct Output {
    committed: Vec<(String, i64)>,
    aborted: Vec<(String, i64)>,
}

impl Output {
    fn read(log: &Log) -> Output {
        let mut out = Output::default();
        let mut buf = Vec::new();
        for p in 0..PARTITIONS {
            let part = log.partition("counts", p).unwrap();
            let mut offset = 0;
            while offset < part.last_stable_offset().unwrap() {
                let fetch = part
                    .read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)
                    .unwrap();
                let visible: Vec<i64> = fetch.committed_records().map(|r| r.offset).collect();
                for batch in fetch.batches().filter(|b| !b.is_control()) {
                    for r in batch.records().map(Result::unwrap) {
                        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                        let record = (key, batch.producer_id());
                        if visible.contains(&r.offset) {
                            out.committed.push(record);
                        } else {
                            out.aborted.push(record);
                        }
                    }
                }
                offset = fetch.next_offset();
            }
        }
        out
    }

    /// The producer that wrote the committed record keyed `key`.
    fn producer_of(&self, key: &str) -> Option<i64> {
        self.committed
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, id)| *id)
    }
}

/// A thread the group has moved on from (a zombie: stuck in a processor past
/// `max.poll.interval.ms` while another instance took its partitions and committed them)
/// wakes up, writes, and tries to commit: the group refuses the commit of a member it has
/// moved on from (KIP-447), the transaction aborts, and the thread rejoins; every record is
/// in the output once. A gate, not a sleep, holds the zombie until the group has moved on.
#[test]
fn a_zombie_instance_is_fenced_after_the_group_moves_its_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let gate = Arc::new(Gate::default());
    let eos = |state: &str| {
        config("zombie", dir.path(), state, 1)
            .exactly_once()
            .max_poll_interval_ms(500)
    };
    // Every key to one input partition.
    let p = core_log::partition_for_key(b"stall", PARTITIONS);
    let append = |k: &str| {
        log.partition("likes", p)
            .unwrap()
            .append(&[LogRecord::new(Some(k.as_bytes()), Some(b"x"))])
            .unwrap()
    };
    let a = Streams::new(gated_echo(gate.clone()), &log, eos("state-a")).unwrap();
    let b = Streams::new(gated_echo(gate.clone()), &log, eos("state-b")).unwrap();
    let _release = OpenOnDrop(gate.clone());
    let a_states = Arc::new(Mutex::new(Vec::new()));
    let states = a_states.clone();
    a.set_state_listener(move |new, _| states.lock().unwrap().push(new));
    let a_failures = Arc::new(Mutex::new(Vec::new()));
    let failures = a_failures.clone();
    a.set_uncaught_exception_handler(move |e| {
        failures.lock().unwrap().push(e.to_string());
        StreamThreadExceptionResponse::ShutdownClient
    });
    a.start().unwrap();
    assert!(a.wait_for_state(State::Running, Duration::from_secs(10)));
    // A, alone in the group, processes and commits `before`, then stops at `stall`.
    append("before");
    wait_caught_up(&log, "zombie", "likes");
    append("stall");
    assert!(
        gate.wait_arrived(Duration::from_secs(10)),
        "A never reached `stall`"
    );

    // B joins; A, in its processor, misses the rebalance and is evicted after the poll
    // interval; B takes every partition, processes from A's last commit and commits.
    b.start().unwrap();
    append("after");
    wait_caught_up(&log, "zombie", "likes");
    let before_zombie = a_states.lock().unwrap().len();

    // A wakes up: it writes `stall` in its transaction and tries to commit it.
    gate.open();
    wait_until(
        Duration::from_secs(20),
        "the zombie's transaction to end",
        || Output::read(&log).aborted.iter().any(|(k, _)| k == "stall"),
    );
    let output = Output::read(&log);
    // The aborted `stall` is A's: the producer that wrote `before`, when A was alone.
    let a_producer = output.producer_of("before").unwrap();
    assert_eq!(
        output.aborted,
        [("stall".to_owned(), a_producer)],
        "{output:?}"
    );
    // B's `stall` and `after` are committed, by another producer.
    let b_producer = output.producer_of("after").unwrap();
    assert_ne!(a_producer, b_producer);
    assert_eq!(output.producer_of("stall"), Some(b_producer), "{output:?}");
    // Nor did the zombie's offsets land: the group's commit is still B's, past `after`.
    let committed = Admin::new(&log)
        .list_consumer_group_offsets("zombie")
        .unwrap();
    let end = log.partition("likes", p).unwrap().high_watermark().unwrap();
    let offset = committed
        .iter()
        .find(|(tp, _)| tp.topic == "likes" && tp.partition == p)
        .map(|(_, o)| o.offset);
    assert_eq!(offset, Some(end));

    // The refusal is the group's (the one commit error a thread carries on after; any other
    // would reach the exception handler): A's thread rejoins the group (rebalancing, then
    // running again) and never fails.
    wait_until(Duration::from_secs(20), "A to rejoin the group", || {
        let states = a_states.lock().unwrap();
        let after = &states[before_zombie..];
        after.contains(&State::Rebalancing) && after.last() == Some(&State::Running)
    });
    assert!(b.wait_for_state(State::Running, Duration::from_secs(10)));
    a.close().unwrap();
    b.close().unwrap();
    assert!(a_failures.lock().unwrap().is_empty(), "{a_failures:?}");

    let mut echoed = Vec::new();
    read_output(&log, |k, _| {
        echoed.push(String::from_utf8(k.to_vec()).unwrap())
    });
    echoed.sort();
    assert_eq!(
        echoed,
        ["after", "before", "stall"],
        "each record once: the zombie's writes were aborted"
    );
}

#[test]
fn exactly_once_counts_stay_exact_when_the_cache_evicts_within_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    // Many keys through a cache of a few entries: values flushed in the open transaction are
    // dropped from the cache before it commits, and must still be read back.
    let eos = config("eos-small", dir.path(), "state", 2)
        .exactly_once()
        .statestore_cache_max_bytes(2_000);
    let app = Streams::new(count_topology(), &log, eos).unwrap();
    app.start().unwrap();
    for round in 0..3 {
        produce(&log, round * 3_000, 3_000, 500, &mut expected);
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_caught_up(&log, "eos-small", "likes");
    app.close().unwrap();
    assert_eq!(output_counts(&log), expected);
}

/// Counts through a repartition topic (two hops, each waiting for the commit before it: the
/// cache flushes at commits, and exactly-once output is visible once committed), with a minute
/// between commits: the counts would appear after a minute, but a stream thread commits as
/// soon as a poll finds no more input.
fn output_is_visible_once_the_input_runs_dry(exactly_once: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .group_by(
            |k: &String, _: &String| k.clone(),
            streams::Grouped::with(StringSerde, StringSerde).name("by-product"),
        )
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    let mut config = config("idle", dir.path(), "state", 2).commit_interval_ms(60_000);
    if exactly_once {
        config = config.exactly_once();
    }
    let app = Streams::new(b.build().unwrap(), &log, config).unwrap();
    app.start().unwrap();
    let mut expected = HashMap::new();
    produce(&log, 0, 500, 20, &mut expected);
    let deadline = Instant::now() + Duration::from_secs(20);
    while output_counts(&log) != expected {
        assert!(
            Instant::now() < deadline,
            "the counts were not visible within 20 s (exactly-once: {exactly_once})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    app.close().unwrap();
}

#[test]
fn output_is_visible_once_the_input_runs_dry_not_at_the_next_commit_interval() {
    output_is_visible_once_the_input_runs_dry(false);
    output_is_visible_once_the_input_runs_dry(true);
}

#[test]
fn exactly_once_commits_early_when_held_store_writes_pass_the_uncommitted_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut expected = HashMap::new();
    produce(&log, 0, 3_000, 1_000, &mut expected);
    // A slow topology over a backlog: the thread is never idle until the end, and the next
    // commit interval is a minute away. Without a cache every update is a held write.
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .peek(|_, _| std::thread::sleep(Duration::from_micros(200)))
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    let eos = config("eos-held", dir.path(), "state", 1)
        .exactly_once()
        .commit_interval_ms(60_000)
        .statestore_cache_max_bytes(0)
        .statestore_uncommitted_max_bytes(4 * 1024);
    let app = Streams::new(b.build().unwrap(), &log, eos).unwrap();
    app.start().unwrap();
    let admin = Admin::new(&log);
    let committed = || -> i64 {
        admin
            .list_consumer_group_offsets("eos-held")
            .map_or(0, |o| o.values().map(|o| o.offset).sum())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut partial = Vec::new();
    loop {
        let c = committed();
        if c == 3_000 {
            break;
        }
        if c > 0 {
            partial.push(c);
        }
        assert!(Instant::now() < deadline, "not caught up in 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !partial.is_empty(),
        "no commit before the backlog was processed: held writes were not bounded"
    );
    app.close().unwrap();
    assert_eq!(output_counts(&log), expected);
}
