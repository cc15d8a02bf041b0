//! Windowed aggregations: tumbling and hopping windows, session windows and sliding windows
//! against a brute-force recomputation on random out-of-order input with late records (several
//! partitions, so several stream times), exact grace boundaries, emit-final exactly once,
//! idle close on a manual clock, and restore of window stores after a restart.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of these tests unwrap as the tests do: a failure is a test failure"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proptest::prelude::*;
use streams::core_log::{Log, Record as LogRecord, TopicConfig};
use streams::serde::{IntegerSerde, Nullable, Serde, StringSerde};
use streams::{
    BufferFull, Consumed, Materialized, Produced, SessionWindows, SlidingWindows, State, Streams,
    StreamsBuilder, StreamsConfig, TimeWindows, TopologyTestDriver, Window, Windowed,
    WindowedSerde,
};

use common::wait_caught_up;

fn ms(n: i64) -> Duration {
    Duration::from_millis(n as u64)
}

fn input() -> Consumed<String, i64> {
    Consumed::with(StringSerde, IntegerSerde)
}

fn partition_of(key: &str, partitions: u32) -> u32 {
    streams::core_log::partition_for_key(key.as_bytes(), partitions)
}

/// Kafka's rule, stated: a record is aggregated into window `[start, end)` while the task's
/// stream time (the largest timestamp it has seen, this record's included) is below
/// `end + grace`. At stream time `end + grace - 1` it is accepted, at `end + grace` dropped.
#[test]
fn grace_boundary_is_exact_to_the_millisecond() {
    let b = StreamsBuilder::new();
    let windowed = b
        .stream("in", input())
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(ms(10), ms(5)))
        .late_records_to("late");
    let dropped = windowed.dropped_records();
    windowed
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "out",
            Produced::with(
                WindowedSerde::time(StringSerde, ms(10)),
                Nullable(IntegerSerde),
            ),
        );
    let topology = b.build().unwrap();
    let description = topology.describe();
    assert!(description.contains("counts-aggregate"), "{description}");
    assert!(description.contains("counts-changelog"), "{description}");
    let mut d = TopologyTestDriver::new(topology, StreamsConfig::new("grace")).unwrap();
    let t = d.input_topic("in", StringSerde, IntegerSerde);
    let a = "a".to_owned();
    t.pipe_input(&mut d, &a, &1i64, 0).unwrap();
    t.pipe_input(&mut d, &a, &1i64, 14).unwrap(); // stream time = end + grace - 1
    t.pipe_input(&mut d, &a, &5i64, 5).unwrap(); // accepted
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    t.pipe_input(&mut d, &a, &1i64, 15).unwrap(); // stream time = end + grace
    t.pipe_input(&mut d, &a, &6i64, 6).unwrap(); // dropped
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    let late = d
        .output_topic::<String, i64>("late", StringSerde, IntegerSerde)
        .read_records(&mut d)
        .unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].key.as_str(), late[0].value, late[0].timestamp),
        ("a", 6, 6)
    );
    let out = d
        .output_topic::<Windowed<String>, Option<i64>>(
            "out",
            WindowedSerde::time(StringSerde, ms(10)),
            Nullable(IntegerSerde),
        )
        .read_key_values(&mut d)
        .unwrap();
    let w0 = Windowed::new(a.clone(), Window::new(0, 10));
    let w10 = Windowed::new(a.clone(), Window::new(10, 20));
    assert_eq!(
        out,
        vec![
            (w0.clone(), Some(1)),
            (w10.clone(), Some(1)),
            (w0, Some(2)),
            (w10, Some(2)),
        ]
    );
    // [0, 10) expired with the stream time at 15 (retention = size + grace).
    assert_eq!(
        d.window_store_fetch::<String, i64>("counts", &a, 0, 100)
            .unwrap(),
        vec![(10, 2)]
    );
}

#[derive(Debug, Clone)]
struct Case {
    size: i64,
    advance: i64,
    grace: i64,
    partitions: u32,
    records: Vec<(String, i64, i64)>,
    batch: usize,
}

fn cases() -> impl Strategy<Value = Case> {
    (1i64..20, 1i64..5, 0i64..12, 1u32..4, 1usize..9).prop_flat_map(
        |(size, div, grace, partitions, batch)| {
            let advance = (size / div).max(1);
            let record =
                (0u8..5, 1i64..100, 0i64..150).prop_map(|(k, v, t)| (format!("k{k}"), v, t));
            prop::collection::vec(record, 1..60).prop_map(move |records| Case {
                size,
                advance,
                grace,
                partitions,
                records,
                batch,
            })
        },
    )
}

/// Brute force: per key and window start, the sum and count of the accepted records; the
/// number of late records; and the final stream time per partition.
#[allow(clippy::type_complexity, reason = "a test model")]
fn time_model(c: &Case) -> (BTreeMap<(String, i64), (i64, i64)>, u64, HashMap<u32, i64>) {
    let mut agg = BTreeMap::new();
    let mut late = 0;
    let mut st: HashMap<u32, i64> = HashMap::new();
    for (k, v, t) in &c.records {
        let p = partition_of(k, c.partitions);
        let now = st.entry(p).or_insert(-1);
        *now = (*now).max(*t);
        let mut accepted = false;
        let mut start = 0;
        while start <= *t {
            if *t < start + c.size && start + c.size + c.grace > *now {
                let e = agg.entry((k.clone(), start)).or_insert((0, 0));
                e.0 += v;
                e.1 += 1;
                accepted = true;
            }
            start += c.advance;
        }
        if !accepted {
            late += 1;
        }
    }
    (agg, late, st)
}

fn run_time_case(c: &Case) {
    let b = StreamsBuilder::new();
    let windows = TimeWindows::of_size_and_grace(ms(c.size), ms(c.grace)).advance_by(ms(c.advance));
    let grouped = b.stream("in", input()).group_by_key();
    let wserde = || WindowedSerde::time(StringSerde, ms(c.size));
    let updates = grouped.windowed_by(windows.clone());
    let dropped = updates.dropped_records();
    updates
        .count(Materialized::named("upd"))
        .to_stream()
        .to("upd-out", Produced::with(wserde(), Nullable(IntegerSerde)));
    b.stream("in2", input())
        .group_by_key()
        .windowed_by(windows)
        .emit_on_window_close(10_000, BufferFull::Fail)
        .reduce(|a, b| a + b, Materialized::named("fin").in_memory())
        .to_stream()
        .to("fin-out", Produced::with(wserde(), Nullable(IntegerSerde)));
    let mut d = TopologyTestDriver::with_partitions(
        b.build().unwrap(),
        StreamsConfig::new("w"),
        c.partitions,
    )
    .unwrap();
    for topic in ["in", "in2"] {
        let t = d.input_topic(topic, StringSerde, IntegerSerde);
        for chunk in c.records.chunks(c.batch) {
            t.pipe_inputs(&mut d, chunk).unwrap();
        }
    }
    let (model, late, st) = time_model(c);
    assert_eq!(dropped.load(Ordering::SeqCst), late, "late records");

    // Emit on update: the last update of each window is its aggregate.
    let mut latest = BTreeMap::new();
    for (k, v) in d
        .output_topic("upd-out", wserde(), Nullable(IntegerSerde))
        .read_key_values(&mut d)
        .unwrap()
    {
        assert_eq!(k.window.end - k.window.start, c.size);
        latest.insert((k.key, k.window.start), v.unwrap());
    }
    let counts: BTreeMap<_, _> = model.iter().map(|(k, v)| (k.clone(), v.1)).collect();
    assert_eq!(latest, counts, "emit on update");

    // Emit final: each closed window exactly once, with its final sum.
    let mut finals = BTreeMap::new();
    for r in d
        .output_topic("fin-out", wserde(), Nullable(IntegerSerde))
        .read_records(&mut d)
        .unwrap()
    {
        let key = (r.key.key, r.key.window.start);
        assert!(
            finals.insert(key.clone(), r.value.unwrap()).is_none(),
            "{key:?} twice"
        );
    }
    let closed: BTreeMap<_, _> = model
        .iter()
        .filter(|((k, s), _)| s + c.size + c.grace <= st[&partition_of(k, c.partitions)])
        .map(|(k, v)| (k.clone(), v.0))
        .collect();
    assert_eq!(finals, closed, "emit final");

    // The store holds the windows that are still open (retention = size + grace).
    for k in 0..5 {
        let key = format!("k{k}");
        let got = d
            .window_store_fetch::<String, i64>("upd", &key, 0, 1_000)
            .unwrap();
        let want: Vec<(i64, i64)> = model
            .iter()
            .filter(|((mk, s), _)| {
                *mk == key && s + c.size + c.grace > st[&partition_of(mk, c.partitions)]
            })
            .map(|((_, s), v)| (*s, v.1))
            .collect();
        assert_eq!(got, want, "store of {key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn tumbling_and_hopping_windows_match_brute_force(c in cases()) {
        run_time_case(&c);
    }

    #[test]
    fn session_windows_match_brute_force(c in cases()) {
        run_session_case(&c);
    }

    #[test]
    fn sliding_windows_match_brute_force(c in cases()) {
        run_sliding_case(&c);
    }
}

/// Kafka's sliding windows of a key's accepted records (timestamp, value), by start: the left
/// window `[t - d, t]` of each record (`[0, d]` for `t < d`), and the right window
/// `[t + 1, t + 1 + d]` of each record that has a record in it.
fn sliding_starts(records: &[(i64, i64)], d: i64) -> BTreeSet<i64> {
    let mut starts = BTreeSet::new();
    for (t, _) in records {
        starts.insert((t - d).max(0));
        if records.iter().any(|(u, _)| *u > *t && *u <= t + 1 + d) {
            starts.insert(t + 1);
        }
    }
    starts
}

/// Brute force for sliding windows (time difference = the case's size - 1, so 0 is covered):
/// a record is late when stream time > t + d + grace; after each accepted record every open
/// window (stream time <= end + grace) of the key's accepted records holds the sum and count
/// of its records; a closed window keeps the value it had.
#[allow(clippy::type_complexity, reason = "a test model")]
fn sliding_model(c: &Case) -> (BTreeMap<(String, i64), (i64, i64)>, u64, HashMap<u32, i64>) {
    let d = c.size - 1;
    let mut accepted: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut agg = BTreeMap::new();
    let mut late = 0;
    let mut st: HashMap<u32, i64> = HashMap::new();
    for (k, v, t) in &c.records {
        let p = partition_of(k, c.partitions);
        let now = st.entry(p).or_insert(-1);
        *now = (*now).max(*t);
        if t + d + c.grace < *now {
            late += 1;
            continue;
        }
        let records = accepted.entry(k.clone()).or_default();
        records.push((*t, *v));
        for start in sliding_starts(records, d) {
            if start + d + c.grace < *now {
                continue;
            }
            let inside = records
                .iter()
                .filter(|(u, _)| start <= *u && *u <= start + d);
            let sum = inside.clone().map(|(_, v)| v).sum::<i64>();
            agg.insert((k.clone(), start), (sum, inside.count() as i64));
        }
    }
    (agg, late, st)
}

fn run_sliding_case(c: &Case) {
    let d = c.size - 1;
    let b = StreamsBuilder::new();
    let windows = SlidingWindows::of_time_difference_and_grace(ms(d), ms(c.grace));
    let wserde = || WindowedSerde::sliding(StringSerde, ms(d));
    let updates = b
        .stream("in", input())
        .group_by_key()
        .windowed_by(windows.clone());
    let dropped = updates.dropped_records();
    updates
        .count(Materialized::named("upd"))
        .to_stream()
        .to("upd-out", Produced::with(wserde(), Nullable(IntegerSerde)));
    b.stream("in2", input())
        .group_by_key()
        .windowed_by(windows)
        .emit_on_window_close(10_000, BufferFull::Fail)
        .reduce(|a, b| a + b, Materialized::named("fin").in_memory())
        .to_stream()
        .to("fin-out", Produced::with(wserde(), Nullable(IntegerSerde)));
    let mut driver = TopologyTestDriver::with_partitions(
        b.build().unwrap(),
        StreamsConfig::new("sl"),
        c.partitions,
    )
    .unwrap();
    let drv = &mut driver;
    for topic in ["in", "in2"] {
        let t = drv.input_topic(topic, StringSerde, IntegerSerde);
        for chunk in c.records.chunks(c.batch) {
            t.pipe_inputs(drv, chunk).unwrap();
        }
    }
    let (model, late, st) = sliding_model(c);
    assert_eq!(dropped.load(Ordering::SeqCst), late, "late records");

    // Emit on update: the last update of each window is its aggregate.
    let mut latest = BTreeMap::new();
    for (k, v) in drv
        .output_topic("upd-out", wserde(), Nullable(IntegerSerde))
        .read_key_values(drv)
        .unwrap()
    {
        assert_eq!(k.window.end - k.window.start, d);
        latest.insert((k.key, k.window.start), v.unwrap());
    }
    let counts: BTreeMap<_, _> = model.iter().map(|(k, v)| (k.clone(), v.1)).collect();
    assert_eq!(latest, counts, "emit on update");

    // Emit final: each closed window (stream time > end + grace) exactly once, final.
    let mut finals = BTreeMap::new();
    for r in drv
        .output_topic("fin-out", wserde(), Nullable(IntegerSerde))
        .read_records(drv)
        .unwrap()
    {
        assert_eq!(r.timestamp, r.key.window.end, "emitted at the window end");
        let key = (r.key.key, r.key.window.start);
        assert!(
            finals.insert(key.clone(), r.value.unwrap()).is_none(),
            "{key:?} twice"
        );
    }
    let closed: BTreeMap<_, _> = model
        .iter()
        .filter(|((k, s), _)| s + d + c.grace < st[&partition_of(k, c.partitions)])
        .map(|(k, v)| (k.clone(), v.0))
        .collect();
    assert_eq!(finals, closed, "emit final");

    // The store holds the open windows (retention = d + grace + 1).
    for k in 0..5 {
        let key = format!("k{k}");
        let got = drv
            .window_store_fetch::<String, i64>("upd", &key, 0, 1_000)
            .unwrap();
        let want: Vec<(i64, i64)> = model
            .iter()
            .filter(|((mk, s), _)| {
                *mk == key && s + d + c.grace >= st[&partition_of(mk, c.partitions)]
            })
            .map(|((_, s), v)| (*s, v.1))
            .collect();
        assert_eq!(got, want, "store of {key}");
    }
}

fn sliding_counts(
    windows: SlidingWindows,
    input_records: &[(i64, i64)],
) -> (BTreeMap<Window, i64>, u64) {
    let d = windows.time_difference_ms();
    let b = StreamsBuilder::new();
    let windowed = b.stream("in", input()).group_by_key().windowed_by(windows);
    let dropped = windowed.dropped_records();
    windowed
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "out",
            Produced::with(
                WindowedSerde::sliding(StringSerde, ms(d)),
                Nullable(IntegerSerde),
            ),
        );
    let topology = b.build().unwrap();
    let description = topology.describe();
    assert!(description.contains("counts-records"), "{description}");
    let mut drv = TopologyTestDriver::new(topology, StreamsConfig::new("sliding")).unwrap();
    let t = drv.input_topic("in", StringSerde, IntegerSerde);
    for (ts, v) in input_records {
        t.pipe_input(&mut drv, &"a".to_owned(), v, *ts).unwrap();
    }
    let mut latest = BTreeMap::new();
    for (k, v) in drv
        .output_topic::<Windowed<String>, Option<i64>>(
            "out",
            WindowedSerde::sliding(StringSerde, ms(d)),
            Nullable(IntegerSerde),
        )
        .read_key_values(&mut drv)
        .unwrap()
    {
        latest.insert(k.window, v.unwrap());
    }
    (latest, dropped.load(Ordering::SeqCst))
}

/// The example of Kafka's `SlidingWindows` documentation: a time difference of 5 s and records
/// at 8,000, 9,200 and 12,400 give five windows, both ends inclusive.
#[test]
fn sliding_windows_follow_the_kafka_example() {
    let windows = SlidingWindows::of_time_difference_without_grace(ms(5_000));
    let (got, dropped) = sliding_counts(windows, &[(8_000, 1), (9_200, 2), (12_400, 3)]);
    let want: BTreeMap<Window, i64> = [
        (Window::new(3_000, 8_000), 1),
        (Window::new(4_200, 9_200), 2),
        (Window::new(7_400, 12_400), 3),
        (Window::new(8_001, 13_001), 2),
        (Window::new(9_201, 14_201), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(dropped, 0);
}

/// Kafka's grace rule for sliding windows, exact to the millisecond (time difference 10,
/// grace 5): a window `[start, end]` is updated while stream time <= end + grace; a record at
/// `t` is dropped once stream time > t + 10 + 5 (every window that can hold it is closed).
#[test]
fn sliding_grace_boundary_is_exact_to_the_millisecond() {
    let windows = SlidingWindows::of_time_difference_and_grace(ms(10), ms(5));
    let (got, dropped) = sliding_counts(
        windows,
        &[
            (0, 1),
            (25, 1),
            // Stream time 25 = 10 + 10 + 5: accepted, though its windows [0, 10] and [1, 11]
            // are closed; it counts in [10, 20] below.
            (10, 1),
            // [10, 20] is still open at stream time 25 = its end + grace.
            (20, 1),
            // Stream time 25 > 9 + 10 + 5: dropped.
            (9, 1),
            (26, 1),
            // Stream time 26 = 11 + 10 + 5: accepted; goes into [11, 21] (open: 26 = 21 + 5)
            // but not into [10, 20] (closed: 26 > 20 + 5).
            (11, 1),
            // Stream time 26 > 5 + 10 + 5: dropped.
            (5, 1),
        ],
    );
    let want: BTreeMap<Window, i64> = [
        (Window::new(0, 10), 1),
        (Window::new(15, 25), 2),
        (Window::new(10, 20), 2),
        (Window::new(11, 21), 2),
        (Window::new(21, 31), 2),
        (Window::new(16, 26), 3),
        (Window::new(26, 36), 1),
        (Window::new(12, 22), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(dropped, 2);
}

/// Brute force for sessions (gap = the case's size): per key, the sessions with sum, count.
#[allow(clippy::type_complexity, reason = "a test model")]
fn session_model(
    c: &Case,
) -> (
    BTreeMap<(String, i64, i64), (i64, i64)>,
    u64,
    HashMap<u32, i64>,
) {
    let gap = c.size;
    let mut sessions: BTreeMap<(String, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut late = 0;
    let mut st: HashMap<u32, i64> = HashMap::new();
    for (k, v, t) in &c.records {
        let p = partition_of(k, c.partitions);
        let now = st.entry(p).or_insert(-1);
        *now = (*now).max(*t);
        let close = *now - c.grace;
        // Open sessions (end >= close) within the gap of the record merge with it.
        let merging: Vec<_> = sessions
            .keys()
            .filter(|(sk, s, e)| sk == k && *e >= close && *e >= t - gap && *s <= t + gap)
            .cloned()
            .collect();
        if merging.is_empty() && *t < close {
            late += 1;
            continue;
        }
        let (mut start, mut end, mut sum, mut n) = (*t, *t, *v, 1);
        for m in merging {
            let (s2, n2) = sessions.remove(&m).unwrap();
            start = start.min(m.1);
            end = end.max(m.2);
            sum += s2;
            n += n2;
        }
        sessions.insert((k.clone(), start, end), (sum, n));
    }
    (sessions, late, st)
}

fn run_session_case(c: &Case) {
    let windows = SessionWindows::with_inactivity_gap_and_grace(ms(c.size), ms(c.grace));
    let b = StreamsBuilder::new();
    let sessions = b
        .stream("in", input())
        .group_by_key()
        .windowed_by(windows.clone());
    let dropped = sessions.dropped_records();
    sessions.count(Materialized::named("upd")).to_stream().to(
        "upd-out",
        Produced::with(WindowedSerde::session(StringSerde), Nullable(IntegerSerde)),
    );
    b.stream("in2", input())
        .group_by_key()
        .windowed_by(windows)
        .emit_on_window_close(10_000, BufferFull::Fail)
        .aggregate(
            || 0i64,
            |_, v, a| a + v,
            |_, a, b| a + b,
            Materialized::named("fin").value_serde(IntegerSerde),
        )
        .to_stream()
        .to(
            "fin-out",
            Produced::with(WindowedSerde::session(StringSerde), Nullable(IntegerSerde)),
        );
    let mut d = TopologyTestDriver::with_partitions(
        b.build().unwrap(),
        StreamsConfig::new("s"),
        c.partitions,
    )
    .unwrap();
    for topic in ["in", "in2"] {
        let t = d.input_topic(topic, StringSerde, IntegerSerde);
        for chunk in c.records.chunks(c.batch) {
            t.pipe_inputs(&mut d, chunk).unwrap();
        }
    }
    let (model, late, st) = session_model(c);
    assert_eq!(dropped.load(Ordering::SeqCst), late, "late records");

    // Emit on update: merged-away sessions are deleted with tombstones.
    let mut latest = BTreeMap::new();
    for (k, v) in d
        .output_topic(
            "upd-out",
            WindowedSerde::session(StringSerde),
            Nullable(IntegerSerde),
        )
        .read_key_values(&mut d)
        .unwrap()
    {
        let key = (k.key, k.window.start, k.window.end);
        match v {
            Some(v) => latest.insert(key, v),
            None => latest.remove(&key),
        };
    }
    let counts: BTreeMap<_, _> = model.iter().map(|(k, v)| (k.clone(), v.1)).collect();
    assert_eq!(latest, counts, "emit on update");

    let mut finals = BTreeMap::new();
    for r in d
        .output_topic(
            "fin-out",
            WindowedSerde::session(StringSerde),
            Nullable(IntegerSerde),
        )
        .read_records(&mut d)
        .unwrap()
    {
        let key = (r.key.key, r.key.window.start, r.key.window.end);
        assert!(
            finals.insert(key.clone(), r.value.unwrap()).is_none(),
            "{key:?} twice"
        );
    }
    let closed: BTreeMap<_, _> = model
        .iter()
        .filter(|((k, _, e), _)| *e + c.grace < st[&partition_of(k, c.partitions)])
        .map(|(k, v)| (k.clone(), v.0))
        .collect();
    assert_eq!(finals, closed, "emit final");

    for k in 0..5 {
        let key = format!("k{k}");
        let got = d.session_store_fetch::<String, i64>("upd", &key).unwrap();
        let want: Vec<(Window, i64)> = model
            .iter()
            .filter(|((mk, _, e), _)| {
                *mk == key && *e + c.grace >= st[&partition_of(mk, c.partitions)]
            })
            .map(|((_, s, e), v)| (Window::new(*s, *e), v.1))
            .collect();
        let mut got = got;
        got.sort_by_key(|(w, _)| (w.start, w.end));
        assert_eq!(got, want, "store of {key}");
    }
}

#[test]
fn idle_input_closes_the_last_window_on_wall_clock_time() {
    let b = StreamsBuilder::new();
    b.stream("in", input())
        .group_by_key()
        .windowed_by(TimeWindows::of_size_no_grace(ms(10_000)))
        .emit_on_window_close(100, BufferFull::Fail)
        .close_on_idle(ms(5_000))
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "out",
            Produced::with(
                WindowedSerde::time(StringSerde, ms(10_000)),
                Nullable(IntegerSerde),
            ),
        );
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("idle")).unwrap();
    let t = d.input_topic("in", StringSerde, IntegerSerde);
    let out = d.output_topic::<Windowed<String>, Option<i64>>(
        "out",
        WindowedSerde::time(StringSerde, ms(10_000)),
        Nullable(IntegerSerde),
    );
    t.pipe_input(&mut d, &"a".to_owned(), &1i64, 1_000).unwrap();
    t.pipe_input(&mut d, &"a".to_owned(), &1i64, 3_000).unwrap();
    d.advance_wall_clock_time(4_999).unwrap();
    assert!(out.read_key_values(&mut d).unwrap().is_empty());
    // Idle for 5 s: stream time moves to 3,000 + 5,000 (the window ends at 10,000).
    d.advance_wall_clock_time(1).unwrap();
    assert!(out.read_key_values(&mut d).unwrap().is_empty());
    d.advance_wall_clock_time(5_000).unwrap();
    assert_eq!(
        out.read_key_values(&mut d).unwrap(),
        vec![(
            Windowed::new("a".to_owned(), Window::new(0, 10_000)),
            Some(2)
        )]
    );
    d.advance_wall_clock_time(20_000).unwrap();
    assert!(
        out.read_key_values(&mut d).unwrap().is_empty(),
        "emitted once"
    );
}

#[test]
fn emit_final_buffer_bound_fails_or_emits_early() {
    for policy in [BufferFull::Fail, BufferFull::EmitEarly] {
        let b = StreamsBuilder::new();
        b.stream("in", input())
            .group_by_key()
            .windowed_by(TimeWindows::of_size_no_grace(ms(10)))
            .emit_on_window_close(2, policy)
            .count(Materialized::named("counts"))
            .to_stream()
            .to(
                "out",
                Produced::with(
                    WindowedSerde::time(StringSerde, ms(10)),
                    Nullable(IntegerSerde),
                ),
            );
        let mut d =
            TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("bound")).unwrap();
        let t = d.input_topic("in", StringSerde, IntegerSerde);
        let out = d.output_topic::<Windowed<String>, Option<i64>>(
            "out",
            WindowedSerde::time(StringSerde, ms(10)),
            Nullable(IntegerSerde),
        );
        for k in ["a", "b"] {
            t.pipe_input(&mut d, &k.to_owned(), &1i64, 1).unwrap();
        }
        let third = t.pipe_input(&mut d, &"c".to_owned(), &1i64, 2);
        match policy {
            BufferFull::Fail => assert!(third.is_err()),
            BufferFull::EmitEarly => {
                third.unwrap();
                let w = |k: &str| Windowed::new(k.to_owned(), Window::new(0, 10));
                assert_eq!(
                    out.read_key_values(&mut d).unwrap(),
                    vec![(w("c"), Some(1))]
                );
                t.pipe_input(&mut d, &"a".to_owned(), &1i64, 10).unwrap();
                let mut got = out.read_key_values(&mut d).unwrap();
                got.sort_by(|a, b| a.0.key.cmp(&b.0.key));
                assert_eq!(
                    got,
                    vec![(w("a"), Some(1)), (w("b"), Some(1)), (w("c"), Some(1))]
                );
            }
        }
    }
}

const PARTITIONS: u32 = 2;

fn open_log(dir: &Path) -> Log {
    let log = Log::builder(dir.join("log"))
        .background_maintenance(false)
        .open()
        .unwrap();
    for t in ["events", "finals"] {
        if log.partition_count(t).is_err() {
            log.create_topic(t, PARTITIONS, TopicConfig::default())
                .unwrap();
        }
    }
    log
}

fn restore_topology() -> streams::Topology {
    let b = StreamsBuilder::new();
    b.stream("events", input())
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(ms(100), ms(20)))
        .emit_on_window_close(10_000, BufferFull::Fail)
        .count(Materialized::named("w"))
        .to_stream()
        .to(
            "finals",
            Produced::with(
                WindowedSerde::time(StringSerde, ms(100)),
                Nullable(IntegerSerde),
            ),
        );
    b.build().unwrap()
}

fn produce(log: &Log, records: &[(String, i64)]) {
    for (k, t) in records {
        let p = partition_of(k, PARTITIONS);
        log.partition("events", p)
            .unwrap()
            .append(&[
                LogRecord::new(Some(k.as_bytes()), Some(&1i64.to_be_bytes()[..])).timestamp(*t),
            ])
            .unwrap();
    }
}

fn run_app(log: &Log, dir: &Path, state: &str) -> u64 {
    let config = StreamsConfig::new("win")
        .num_stream_threads(1)
        .commit_interval_ms(20)
        .poll_ms(10)
        .state_dir(dir.join(state));
    let app = Streams::new(restore_topology(), log, config).unwrap();
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    wait_caught_up(log, "win", "events");
    app.close().unwrap();
    app.metrics().restored_records
}

/// A restart on an empty state directory restores the windows (and the stream time) from the
/// changelogs: windows open across the restart keep their counts, and no window closed before
/// the restart is emitted again.
#[test]
fn window_store_restores_from_its_changelog_and_emits_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let keys = ["a", "b", "c", "d"];
    let first: Vec<(String, i64)> = (0..200)
        .map(|i| (keys[i % 4].to_owned(), (i as i64) * 3))
        .collect();
    produce(&log, &first);
    run_app(&log, dir.path(), "state-1");
    // Every key's stream time is at least 588 here: [0, 100) .. [400, 500) are closed, [500,
    // 600) is open. The second run starts from nothing on disk.
    let second: Vec<(String, i64)> = (200..400)
        .map(|i| (keys[i % 4].to_owned(), (i as i64) * 3))
        .collect();
    produce(&log, &second);
    let restored = run_app(&log, dir.path(), "state-2");
    assert!(restored > 0, "the second run restored from the changelogs");

    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut stream_time: HashMap<u32, i64> = HashMap::new();
    for (k, t) in first.iter().chain(&second) {
        *expected.entry((k.clone(), t / 100 * 100)).or_default() += 1;
        let st = stream_time.entry(partition_of(k, PARTITIONS)).or_insert(-1);
        *st = (*st).max(*t);
    }
    expected.retain(|(k, s), _| s + 120 <= stream_time[&partition_of(k, PARTITIONS)]);
    let serde = WindowedSerde::time(StringSerde, ms(100));
    let mut got = BTreeMap::new();
    let mut buf = Vec::new();
    for p in 0..PARTITIONS {
        let part = log.partition("finals", p).unwrap();
        let mut offset = 0;
        while offset < part.high_watermark().unwrap() {
            let fetch = part.read_into(offset, 1 << 20, &mut buf).unwrap();
            for r in fetch.records() {
                let k: Windowed<String> =
                    Serde::deserialize(&serde, "finals", r.key.unwrap()).unwrap();
                let v = i64::from_be_bytes(r.value.unwrap().try_into().unwrap());
                let key = (k.key, k.window.start);
                assert!(
                    got.insert(key.clone(), v).is_none(),
                    "{key:?} emitted twice"
                );
            }
            offset = fetch.next_offset();
        }
    }
    assert_eq!(got, expected);
}

/// A record is kept for the right window it defines as long as that window can open: with a
/// time difference of 10 and grace 5, the record at 0 still defines `[1, 11]` at stream time
/// 16 (= 11 + 5), when a record at 1 arrives.
#[test]
fn sliding_record_defines_its_right_window_until_that_closes() {
    let windows = SlidingWindows::of_time_difference_and_grace(ms(10), ms(5));
    let (got, dropped) = sliding_counts(windows, &[(0, 1), (16, 1), (1, 1)]);
    let want: BTreeMap<Window, i64> = [
        (Window::new(0, 10), 1),
        (Window::new(6, 16), 1),
        (Window::new(1, 11), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(dropped, 0);
}
