//! Hot-key splitting, with and without, in the same run (samples interleaved, each run in a
//! fresh log; the events are written first, then the application catches up with them).
//!
//! - **like-count** (the scenario): one product receives `MOLDAU_BENCH_HOT_PERCENT`
//!   (default 50) of all like events, the rest follow a Zipf law over 10,000 products; the
//!   like-count application (examples/lib.rs) with 8 partitions and 2 stream threads, the
//!   likes-by-product count split on detected hot keys or not; and the same without a hot
//!   product (the router's cost when nothing is hot).
//! - **keyed count**: the same hot share of events keyed by user and grouped by product, counted
//!   (RocksDB store with changelog): the aggregation is the work, so the hot product's task
//!   is the bottleneck.
//!
//! Printed: events/s per run (median), and the median of the ratios split / unsplit of runs
//! made back to back; the cores the process kept busy (its CPU seconds, every thread, over
//! the run's wall time: median), and the most any spreading of the unsplit run's work could
//! give on this machine: the machine's cores over those. `MOLDAU_BENCH_EVENTS` (default
//! 1,000,000; the keyed count uses 4 times as many), `MOLDAU_BENCH_SAMPLES` (default 3),
//! `MOLDAU_BENCH_CASES` (the cases to run, by number from 0, comma-separated; default all) and
//! `MOLDAU_BENCH_SPLIT` (`on` or `off`: run one side only, for a profile).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{BenchResult, bench_dir, cpu_secs, env_usize, median, zipf_cdf, zipf_sample};
use core_log::codec::BatchBuilder;
use core_log::{FlushPolicy, Log, TopicConfig};
use moldau_examples::{Action, INPUT, LikeEvent, OUTPUT, PER_MINUTE, TOP_PRODUCTS, topology_with};
use streams::serde::{IntegerSerde, Nullable};
use streams::{
    Consumed, Grouped, HotKeys, Materialized, Produced, Streams, StreamsBuilder, StreamsConfig,
    Topology,
};

const PARTITIONS: u32 = 8;
const PRODUCTS: usize = 10_000;
const USERS: u64 = 50_000;
const APP: &str = "hot-keys-bench";
/// Event time starts here and advances 1 ms every 100 events.
const BASE_TS: i64 = 1_700_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scenario {
    LikeCount,
    KeyedCount,
}

/// Writes `events` events keyed as the scenario's input is: product 0 with probability
/// `hot`, else a Zipf-distributed product.
fn produce(log: &Log, scenario: Scenario, events: usize, hot: f64) -> BenchResult<()> {
    let cdf = zipf_cdf(PRODUCTS, 0.99);
    let mut rng = fastrand::Rng::with_seed(common::SEED);
    let parts: Vec<_> = (0..PARTITIONS)
        .map(|p| log.partition(INPUT, p))
        .collect::<Result<_, _>>()?;
    let mut batches: Vec<(BatchBuilder, usize)> = (0..PARTITIONS)
        .map(|_| (BatchBuilder::new(Vec::new()), 0))
        .collect();
    let mut value = Vec::new();
    for i in 0..events {
        let product = if rng.f64() < hot {
            0
        } else {
            zipf_sample(&cdf, &mut rng) as u64 + 1
        };
        let user = rng.u64(0..USERS);
        let ts = BASE_TS + (i / 100) as i64;
        value.clear();
        let key = match scenario {
            Scenario::LikeCount => {
                let event = LikeEvent {
                    user_id: user,
                    product_id: product,
                    action: if rng.u32(0..10) < 7 {
                        Action::Like
                    } else {
                        Action::Unlike
                    },
                    ts,
                };
                bincode::serialize_into(&mut value, &event)?;
                product.to_be_bytes()
            }
            Scenario::KeyedCount => {
                value.extend_from_slice(&product.to_be_bytes());
                user.to_be_bytes()
            }
        };
        let p = core_log::partition_for_key(&key, PARTITIONS) as usize;
        let (b, n) = &mut batches[p];
        b.append(ts, Some(&key), Some(&value), &[]);
        *n += 1;
        if *n == 1_000 || i + 1 == events {
            for (p, (b, n)) in batches.iter_mut().enumerate() {
                if *n > 0 {
                    let mut bytes = std::mem::replace(b, BatchBuilder::new(Vec::new())).finish();
                    parts[p].append_batches(&mut bytes)?;
                    *n = 0;
                }
            }
        }
    }
    Ok(())
}

/// Counts events per product: input keyed by user, valued by product.
fn keyed_count(split: bool) -> Result<Topology, streams::Error> {
    let b = StreamsBuilder::new();
    let mut grouped = Grouped::with(IntegerSerde, IntegerSerde).name("by-product");
    if split {
        grouped = grouped.split_hot_keys(HotKeys::detected());
    }
    b.stream(INPUT, Consumed::with(IntegerSerde, IntegerSerde))
        .group_by(|_user: &u64, &product: &u64| product, grouped)
        .count(Materialized::named(OUTPUT))
        .to_stream()
        .to(OUTPUT, Produced::with(IntegerSerde, Nullable(IntegerSerde)));
    b.build()
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Measured {
    events_per_s: f64,
    /// CPU seconds of the process (every thread) per second of the run.
    cores_busy: f64,
}

/// The median events/s of `runs`.
fn rate(runs: &[Measured]) -> f64 {
    median(runs.iter().map(|m| m.events_per_s).collect())
}

/// The median cores busy of `runs`.
fn busy(runs: &[Measured]) -> f64 {
    median(runs.iter().map(|m| m.cores_busy).collect())
}

/// One run: the application catching up with `events` written beforehand.
fn run(scenario: Scenario, events: usize, hot: f64, split: bool) -> BenchResult<Measured> {
    let dir = bench_dir()?;
    let log = Log::builder(dir.path().join("log"))
        .flush_policy(FlushPolicy::Never)
        .open()?;
    for t in [INPUT, OUTPUT, PER_MINUTE, TOP_PRODUCTS] {
        log.create_topic(
            t,
            PARTITIONS,
            TopicConfig::default().segment_bytes(64 << 20),
        )?;
    }
    produce(&log, scenario, events, hot)?;
    let config = StreamsConfig::new(APP)
        .num_stream_threads(2)
        .commit_interval_ms(100)
        .state_dir(dir.path().join("state"));
    let topology = match scenario {
        Scenario::LikeCount => topology_with(split)?,
        Scenario::KeyedCount => keyed_count(split)?,
    };
    let started = Instant::now();
    let cpu = cpu_secs()?;
    let app = Streams::new(topology, &log, config)?;
    app.start()?;
    common::wait_caught_up(&log, APP, INPUT, PARTITIONS, Duration::from_secs(600))?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs()? - cpu;
    app.close()?;
    Ok(Measured {
        events_per_s: events as f64 / secs,
        cores_busy: cpu / secs,
    })
}

fn main() -> BenchResult<()> {
    let events = env_usize("MOLDAU_BENCH_EVENTS", 1_000_000)?.max(1);
    let samples = env_usize("MOLDAU_BENCH_SAMPLES", 3)?.max(1);
    let hot = env_usize("MOLDAU_BENCH_HOT_PERCENT", 50)?.min(100) as f64 / 100.0;
    // (scenario, events, hot share); each runs unsplit then split.
    let cases = [
        (Scenario::LikeCount, events, hot),
        (Scenario::LikeCount, events, 0.0),
        (Scenario::KeyedCount, events * 4, hot),
    ];
    let chosen: Vec<usize> = match std::env::var("MOLDAU_BENCH_CASES") {
        Ok(v) => v
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|e| format!("MOLDAU_BENCH_CASES={v}: {e}"))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => (0..cases.len()).collect(),
    };
    let sides: &[bool] = match std::env::var("MOLDAU_BENCH_SPLIT").as_deref() {
        Ok("on") => &[true],
        Ok("off") => &[false],
        Ok(v) => return Err(format!("MOLDAU_BENCH_SPLIT={v}: on or off").into()),
        Err(_) => &[false, true],
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut results: HashMap<(usize, bool), Vec<Measured>> = HashMap::new();
    for _ in 0..samples {
        for (i, &(scenario, n, h)) in cases.iter().enumerate() {
            if !chosen.contains(&i) {
                continue;
            }
            for &split in sides {
                let r = run(scenario, n, h, split)?;
                results.entry((i, split)).or_default().push(r);
            }
        }
    }
    println!(
        "hot-key splitting, 8 partitions, 2 stream threads, at-least-once, commit 100 ms; median of {samples}"
    );
    println!(
        "{:<52} {:>12} {:>12} {:>8} {:>14} {:>12}   samples (split / unsplit)",
        "case", "unsplit ev/s", "split ev/s", "ratio", "cores unsplit", "cores split"
    );
    for (i, &(scenario, n, h)) in cases.iter().enumerate() {
        let (Some(off), Some(on)) = (results.get(&(i, false)), results.get(&(i, true))) else {
            for split in [false, true] {
                if let Some(r) = results.get(&(i, split)) {
                    println!(
                        "case {i}, split {split}: {:.0} events/s, {:.2} cores busy",
                        rate(r),
                        busy(r)
                    );
                }
            }
            continue;
        };
        let name = match scenario {
            Scenario::LikeCount => "like-count",
            Scenario::KeyedCount => "keyed count by product",
        };
        let what = format!("{name}, {n} events, hot product {:.0}%", h * 100.0);
        let ratios: Vec<f64> = on
            .iter()
            .zip(off)
            .map(|(s, u)| s.events_per_s / u.events_per_s)
            .collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{:<52} {:>12.0} {:>12.0} {:>8.2} {:>14.2} {:>12.2}   {}",
            what,
            rate(off),
            rate(on),
            median(ratios),
            busy(off),
            busy(on),
            shown.join(" / ")
        );
        println!(
            "{:<53}the most spreading the unsplit work over {cores} cores can give: {:.2}",
            "",
            cores / busy(off)
        );
    }
    println!(
        "  events/s: from start() to the group's commit of every topic's end, the events written beforehand"
    );
    println!(
        "  cores: the process's CPU seconds (every thread) over the same wall time; a split that does not \
         do less work gains at most the machine's cores over the unsplit run's"
    );
    println!("  target (issue 9): like-count with a 50% hot product, split / unsplit >= 1.6");
    Ok(())
}
