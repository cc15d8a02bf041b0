//! Exactly-once under SIGKILL, shaped like Kafka's `StreamsEosTest`: a topology echoing its
//! input and keeping per-key sum, min, max and count runs in a child process that also
//! produces the input; the child is killed at random moments 20 times. After a last clean
//! run, a verifier reading with read_committed checks that the echo equals the input record
//! by record per partition, and that every sum, min, max and count output is the running
//! aggregate of the input at some point, in order, ending at the final aggregate: nothing
//! lost, nothing counted twice, no aborted output visible.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of this test unwrap as the test does: a failure is a test failure"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DIR_ENV, RUN_ENV, SEED_ENV, ack, kill_repeatedly, open_retrying, read_committed, seed,
    start_acks,
};
use core_log::{Admin, Log, Record, TopicConfig};
use streams::serde::{IntegerSerde, Nullable, StringSerde};
use streams::{
    Consumed, Materialized, Produced, State, Streams, StreamsBuilder, StreamsConfig, Topology,
};

const PARTITIONS: u32 = 3;
const KEYS: u64 = 20;
const KILLS: u32 = 20;
const MAX_KILL_MS: u64 = 1_200;
const APP: &str = "eos-test";
const OUTPUTS: [&str; 4] = ["sum", "min", "max", "cnt"];

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let input = b.stream("data", Consumed::with(StringSerde, IntegerSerde));
    input.to("echo", Produced::with(StringSerde, IntegerSerde));
    let out = || Produced::with(StringSerde, Nullable(IntegerSerde));
    let agg = |name: &str| Materialized::<String, i64>::named(name).value_serde(IntegerSerde);
    input
        .group_by_key()
        .aggregate(|| 0, |_, v: &i64, s| s + v, agg("sum"))
        .to_stream()
        .to("sum", out());
    input
        .group_by_key()
        .aggregate(|| i64::MAX, |_, v: &i64, m: i64| m.min(*v), agg("min"))
        .to_stream()
        .to("min", out());
    input
        .group_by_key()
        .aggregate(|| i64::MIN, |_, v: &i64, m: i64| m.max(*v), agg("max"))
        .to_stream()
        .to("max", out());
    input
        .group_by_key()
        .count(Materialized::named("cnt"))
        .to_stream()
        .to("cnt", out());
    b.build().unwrap()
}

fn config(dir: &Path) -> StreamsConfig {
    StreamsConfig::new(APP)
        .exactly_once()
        .num_stream_threads(2)
        .poll_ms(10)
        .state_dir(dir.join("state"))
}

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

/// The child: produces records continuously (not in the last run) while the application runs
/// with exactly-once, until killed. Acknowledges `running`, and `done` once the group has
/// committed the whole input (last run).
#[test]
fn crash_child_streams_eos() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let dir = PathBuf::from(dir);
    let run: u32 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let last = run == KILLS;
    let log = open_retrying(&log_dir(&dir), |b| b);
    let producer = (!last).then(|| {
        let log = log.clone();
        let mut rng = fastrand::Rng::with_seed(seed() ^ u64::from(run));
        thread::spawn(move || {
            // Until killed: at any moment some records are processed but not yet committed.
            for i in 0u64.. {
                let key = format!("k{:02}", rng.u64(0..KEYS));
                let value = rng.i64(-1_000..1_000).to_be_bytes();
                let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS);
                log.partition("data", p)
                    .unwrap()
                    .append(&[Record::new(Some(key.as_bytes()), Some(&value))])
                    .unwrap();
                if i % 10 == 0 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        })
    });
    let app = Streams::new(topology(), &log, config(&dir)).unwrap();
    app.start().unwrap();
    // Liveness, not speed: a restart on a loaded 2-core machine opens and restores every store.
    assert!(app.wait_for_state(State::Running, Duration::from_secs(90)));
    ack(format_args!("running"));
    if last {
        let admin = Admin::new(&log);
        loop {
            let ends: Vec<i64> = (0..PARTITIONS)
                .map(|p| log.partition("data", p).unwrap().high_watermark().unwrap())
                .collect();
            let committed = admin.list_consumer_group_offsets(APP).unwrap_or_default();
            let at_end = (0..PARTITIONS).all(|p| {
                committed
                    .iter()
                    .find(|(tp, _)| tp.topic == "data" && tp.partition == p)
                    .map_or(0, |(_, o)| o.offset)
                    == ends[p as usize]
            });
            if at_end {
                app.close().unwrap();
                ack(format_args!("done"));
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(p) = producer {
        p.join().unwrap();
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// Every record of `topic` partition `p` as read_committed sees it: (key, value).
fn read_values(log: &Log, topic: &str, p: u32) -> Vec<(String, i64)> {
    read_committed(log, topic, p)
        .into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8(k.unwrap()).unwrap();
            (key, i64::from_be_bytes(v.unwrap().try_into().unwrap()))
        })
        .collect()
}

/// Checks that `outputs` (one key's) are running values of `input` (that key's), in order,
/// ending at the last one.
fn check_running(name: &str, key: &str, running: &[i64], outputs: &[i64]) {
    let mut at = 0;
    for (i, v) in outputs.iter().enumerate() {
        match running[at..].iter().position(|r| r == v) {
            Some(k) => at += k + 1,
            None => panic!(
                "{name} of {key}: output #{i} = {v} is not a later running value (outputs {outputs:?})"
            ),
        }
    }
    assert_eq!(
        outputs.last(),
        running.last(),
        "{name} of {key}: the last output is the final aggregate"
    );
}

#[test]
fn streams_exactly_once_survives_sigkill() {
    let started = Instant::now();
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let root = tempfile::tempdir().unwrap();
    {
        let log = open_retrying(&log_dir(root.path()), |b| b);
        for t in ["data", "echo"].into_iter().chain(OUTPUTS) {
            log.create_topic(t, PARTITIONS, TopicConfig::default())
                .unwrap();
        }
        log.close().unwrap();
    }
    let killed_running = kill_repeatedly(
        "crash_child_streams_eos",
        root.path(),
        KILLS,
        MAX_KILL_MS,
        seed,
    );
    assert!(
        killed_running >= 5,
        "too few kills while the application ran: {killed_running}"
    );

    let log = open_retrying(&log_dir(root.path()), |b| b.background_maintenance(false));
    let mut input_per_key: HashMap<String, Vec<i64>> = HashMap::new();
    let mut total = 0;
    for p in 0..PARTITIONS {
        let input = read_values(&log, "data", p);
        let echo = read_values(&log, "echo", p);
        assert_eq!(echo.len(), input.len(), "echo of partition {p}: length");
        assert_eq!(echo, input, "echo of partition {p}: record by record");
        total += input.len();
        for (k, v) in input {
            input_per_key.entry(k).or_default().push(v);
        }
    }
    assert!(total > 0, "the children produced input");
    for name in OUTPUTS {
        let mut outputs: HashMap<String, Vec<i64>> = HashMap::new();
        for p in 0..PARTITIONS {
            for (k, v) in read_values(&log, name, p) {
                outputs.entry(k).or_default().push(v);
            }
        }
        for (key, values) in &input_per_key {
            let running: Vec<i64> = values
                .iter()
                .scan(
                    (0i64, i64::MAX, i64::MIN, 0i64),
                    |(sum, min, max, cnt), v| {
                        *sum += v;
                        *min = (*min).min(*v);
                        *max = (*max).max(*v);
                        *cnt += 1;
                        Some(match name {
                            "sum" => *sum,
                            "min" => *min,
                            "max" => *max,
                            _ => *cnt,
                        })
                    },
                )
                .collect();
            let out = outputs.get(key).cloned().unwrap_or_default();
            check_running(name, key, &running, &out);
            if name == "cnt" {
                assert!(
                    out.windows(2).all(|w| w[0] < w[1]),
                    "count of {key} never repeats or goes back: {out:?}"
                );
            }
        }
    }
    log.close().unwrap();
    println!(
        "{total} records, {KILLS} kills ({killed_running} while running), {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
