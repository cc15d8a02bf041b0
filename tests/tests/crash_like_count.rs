//! The like-count application under exactly-once, killed with SIGKILL 20 times while its
//! input is produced: after a last clean run, every product's count (as read_committed readers
//! see it) equals the ground truth computed from the input, and so does the last top-products
//! ranking. The record cache is off, so every
//! update crosses the repartition topics and changelogs at once: with at-least-once the same
//! test miscounts (records processed again after a kill are counted twice).
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
use core_log::{Admin, Record, TopicConfig};
use moldau_examples::{
    Action, INPUT, LikeEvent, OUTPUT, TOP_N, TOP_PRODUCTS, expected_counts, expected_top, topology,
};
use streams::{State, Streams, StreamsConfig};

const PARTITIONS: u32 = 4;
const USERS: u64 = 40;
const PRODUCTS: u64 = 25;
const KILLS: u32 = 20;
const MAX_KILL_MS: u64 = 1_200;
const APP: &str = "like-count-crash";

fn config(dir: &Path) -> StreamsConfig {
    StreamsConfig::new(APP)
        .exactly_once()
        .statestore_cache_max_bytes(0)
        .num_stream_threads(2)
        .poll_ms(10)
        // Product 0 takes half the likes: the likes-by-product count splits it.
        .hot_keys_min_share(0.2)
        .hot_keys_min_records(50)
        .state_dir(dir.join("state"))
}

/// The child: produces like/unlike events until killed (not in the last run) while the
/// application runs; in the last run, acknowledges `done` once every topic it reads is
/// committed to its end.
#[test]
fn crash_child_like_count() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let dir = PathBuf::from(dir);
    let run: u32 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let last = run == KILLS;
    let log = open_retrying(&dir.join("log"), |b| b);
    if !last {
        let log = log.clone();
        let mut rng = fastrand::Rng::with_seed(seed() ^ u64::from(run));
        thread::spawn(move || {
            for i in 0u64.. {
                let event = LikeEvent {
                    user_id: rng.u64(0..USERS),
                    product_id: if rng.bool() { 0 } else { rng.u64(0..PRODUCTS) },
                    action: if rng.u32(0..3) == 0 {
                        Action::Unlike
                    } else {
                        Action::Like
                    },
                    ts: i as i64,
                };
                let key = event.product_id.to_be_bytes();
                let value = bincode::serialize(&event).unwrap();
                let p = core_log::partition_for_key(&key, PARTITIONS);
                log.partition(INPUT, p)
                    .unwrap()
                    .append(&[Record::new(Some(&key), Some(&value))])
                    .unwrap();
                if i % 10 == 0 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        });
    }
    let app = Streams::new(topology().unwrap(), &log, config(&dir)).unwrap();
    app.start().unwrap();
    // Liveness, not speed: a restart on a loaded 2-core machine opens and restores every store.
    assert!(app.wait_for_state(State::Running, Duration::from_secs(90)));
    ack(format_args!("running"));
    if last {
        let admin = Admin::new(&log);
        let mut zero = 0;
        while zero < 3 {
            thread::sleep(Duration::from_millis(50));
            let lag = admin.consumer_group_lag(APP).unwrap_or_default();
            let input_done = (0..PARTITIONS).all(|p| {
                lag.iter()
                    .any(|r| r.partition.topic == INPUT && r.partition.partition == p)
            });
            zero = if input_done && lag.iter().all(|r| r.lag == Some(0)) {
                zero + 1
            } else {
                0
            };
        }
        app.close().unwrap();
        ack(format_args!("done"));
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn like_count_is_exact_under_sigkill() {
    let started = Instant::now();
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let root = tempfile::tempdir().unwrap();
    {
        let log = open_retrying(&root.path().join("log"), |b| b);
        log.create_topic(INPUT, PARTITIONS, TopicConfig::default())
            .unwrap();
        log.create_topic(OUTPUT, PARTITIONS, TopicConfig::default())
            .unwrap();
        log.create_topic(TOP_PRODUCTS, 1, TopicConfig::default())
            .unwrap();
        log.close().unwrap();
    }
    let killed_running = kill_repeatedly(
        "crash_child_like_count",
        root.path(),
        KILLS,
        MAX_KILL_MS,
        seed,
    );
    let log = open_retrying(&root.path().join("log"), |b| {
        b.background_maintenance(false)
    });
    // Events of one (user, product) share a partition (keyed by product): per-partition order
    // is the order the application saw them in.
    let mut events = Vec::new();
    for p in 0..PARTITIONS {
        for (_, v) in read_committed(&log, INPUT, p) {
            events.push(bincode::deserialize::<LikeEvent>(&v.unwrap()).unwrap());
        }
    }
    let expected = expected_counts(&events);
    let mut counted: HashMap<u64, i64> = HashMap::new();
    for p in 0..PARTITIONS {
        for (k, v) in read_committed(&log, OUTPUT, p) {
            let product = u64::from_be_bytes(k.unwrap().try_into().unwrap());
            counted.insert(
                product,
                v.map_or(0, |v| i64::from_be_bytes(v.try_into().unwrap())),
            );
        }
    }
    for product in 0..PRODUCTS {
        let want = expected.get(&product).copied().unwrap_or(0);
        let got = counted.get(&product).copied().unwrap_or(0);
        assert_eq!(
            got, want,
            "product {product}: counted {got}, expected {want}"
        );
    }
    // Product 0's likes went through the two-stage count (committed partials).
    let hot_topic = format!("{APP}-likes-by-product-hot-keys-repartition");
    let partials: usize = (0..log.partition_count(&hot_topic).unwrap())
        .map(|p| read_committed(&log, &hot_topic, p).len())
        .sum();
    assert!(partials > 0, "no hot-key partials were committed");
    let top = read_committed(&log, TOP_PRODUCTS, 0).pop();
    let top: Vec<(u64, i64)> = bincode::deserialize(&top.unwrap().1.unwrap()).unwrap();
    assert_eq!(top, expected_top(&expected, TOP_N), "the last top products");
    log.close().unwrap();
    println!(
        "{} events, {KILLS} kills ({killed_running} while running), {:.1}s",
        events.len(),
        started.elapsed().as_secs_f64()
    );
}
