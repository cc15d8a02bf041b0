//! End to end like-count: a generator appends like/unlike events at a fixed rate, stamped with
//! the wall clock, while the like-count application (examples/lib.rs: latest action per user
//! and product, likes per product, likes per product per minute) runs with 2 stream threads;
//! a read_committed reader of `like-counts` measures how long after an event was produced the
//! count it changed became visible. Printed per guarantee: throughput (events/s from the first
//! event to the group's commit of the last), latency p50/p99, and peak RSS; and, for the floor
//! of the work, a hand-written loop: a consumer decoding the same events into HashMaps.
//!
//! Throughput is measured with the generator unthrottled (`MOLDAU_BENCH_EVENTS`, default
//! 1,000,000); latency at a steady offered rate the application keeps up with
//! (`MOLDAU_BENCH_RATE`, default 50,000 events/s, for 10 s), since behind a backlog latency only
//! measures the backlog. Each run is a child process (the bench re-executes itself), so that
//! peak RSS is its own. `MOLDAU_BENCH_SAMPLES` (default 3).
//!
//! Throughput runs at commit intervals of 100 ms and 1 s for both guarantees, and the bench
//! prints exactly-once / at-least-once per interval (targets 0.85 and 0.95): the median of
//! the ratios of runs made back to back.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{BenchResult, bench_dir, env_usize, median, zipf_cdf, zipf_sample};
use core_log::codec::BatchBuilder;
use core_log::serialization::BytesSerde;
use core_log::{
    AutoOffsetReset, Consumer, ConsumerConfig, FlushPolicy, IsolationLevel, Log, TopicConfig,
    TopicPartition,
};
use hdrhistogram::Histogram;
use moldau_examples::{Action, INPUT, LikeEvent, OUTPUT, PER_MINUTE, TOP_PRODUCTS, topology};
use streams::{Streams, StreamsConfig};

const PARTITIONS: u32 = 8;
const PRODUCTS: usize = 10_000;
const USERS: u64 = 50_000;
const APP: &str = "like-count-bench";
const MODE_ENV: &str = "MOLDAU_LIKE_COUNT_MODE";
const MODES: [&str; 3] = ["at_least_once", "exactly_once_v2", "hand-written"];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Peak resident set of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Appends `events` like events at `rate` per second, stamped with the wall clock.
fn produce(log: &Log, events: usize, rate: usize) -> BenchResult<()> {
    let cdf = zipf_cdf(PRODUCTS, 0.99);
    let mut rng = fastrand::Rng::with_seed(common::SEED);
    let parts: Vec<_> = (0..PARTITIONS)
        .map(|p| log.partition(INPUT, p))
        .collect::<Result<_, _>>()?;
    let mut batches: Vec<BatchBuilder> = (0..PARTITIONS)
        .map(|_| BatchBuilder::new(Vec::new()))
        .collect();
    let mut pending = vec![0usize; PARTITIONS as usize];
    let started = Instant::now();
    let mut value = Vec::new();
    let tick = (rate / 1_000).max(1);
    for i in 0..events {
        let product = zipf_sample(&cdf, &mut rng) as u64;
        let event = LikeEvent {
            user_id: rng.u64(0..USERS),
            product_id: product,
            action: if rng.u32(0..10) < 7 {
                Action::Like
            } else {
                Action::Unlike
            },
            ts: now_ms(),
        };
        value.clear();
        bincode::serialize_into(&mut value, &event)?;
        let key = product.to_be_bytes();
        let p = core_log::partition_for_key(&key, PARTITIONS) as usize;
        batches[p].append(event.ts, Some(&key), Some(&value), &[]);
        pending[p] += 1;
        // Every millisecond's worth of events: append what is batched, then keep to the rate.
        if (i + 1) % tick == 0 || i + 1 == events {
            for (p, b) in batches.iter_mut().enumerate() {
                if pending[p] > 0 {
                    let mut bytes = std::mem::replace(b, BatchBuilder::new(Vec::new())).finish();
                    parts[p].append_batches(&mut bytes)?;
                    pending[p] = 0;
                }
            }
            if rate > 0 {
                let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    Ok(())
}

fn open(dir: &std::path::Path) -> BenchResult<Log> {
    let log = Log::builder(dir.join("log"))
        .flush_policy(FlushPolicy::Never)
        .open()?;
    for t in [INPUT, OUTPUT, PER_MINUTE, TOP_PRODUCTS] {
        log.create_topic(
            t,
            PARTITIONS,
            TopicConfig::default().segment_bytes(64 << 20),
        )?;
    }
    Ok(log)
}

/// One mode, in this (child) process: prints `result <events/s> <p50 ms> <p99 ms> <rss MiB>`.
fn run_mode(mode: &str, events: usize, rate: usize) -> BenchResult<()> {
    let dir = bench_dir()?;
    let log = open(dir.path())?;
    if mode == "hand-written" {
        produce(&log, events, 0)?;
        let started = Instant::now();
        let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer: Consumer<Vec<u8>, Vec<u8>> =
            Consumer::new(&log, config, BytesSerde, BytesSerde)?;
        let tps: Vec<TopicPartition> = (0..PARTITIONS)
            .map(|p| TopicPartition::new(INPUT, p))
            .collect();
        consumer.assign(&tps)?;
        let mut latest: HashMap<(u64, u64), Action> = HashMap::new();
        let mut counts: HashMap<u64, i64> = HashMap::new();
        let mut seen = 0;
        while seen < events {
            for r in consumer.poll(Duration::from_millis(100))? {
                let e: LikeEvent = bincode::deserialize(r.value.as_deref().unwrap_or_default())?;
                let before = latest.insert((e.user_id, e.product_id), e.action);
                let delta =
                    i64::from(e.action == Action::Like) - i64::from(before == Some(Action::Like));
                *counts.entry(e.product_id).or_default() += delta;
                seen += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "result {:.0} NaN NaN {:.1}",
            events as f64 / secs,
            peak_rss_mib()
        );
        return Ok(());
    }
    let commit_ms = env_usize("MOLDAU_BENCH_COMMIT_MS", 100)? as u64;
    let mut config = StreamsConfig::new(APP)
        .num_stream_threads(2)
        .commit_interval_ms(commit_ms)
        .rocksdb_memory_bytes(env_usize("MOLDAU_BENCH_ROCKSDB_MIB", 64)? << 20)
        .state_dir(dir.path().join("state"));
    if mode == "exactly_once_v2" {
        config = config.exactly_once();
    }
    let app = Streams::new(topology()?, &log, config)?;
    app.start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || -> BenchResult<Histogram<u64>> {
            let mut hist = Histogram::<u64>::new(3)?;
            let config = ConsumerConfig::default()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .isolation_level(IsolationLevel::ReadCommitted);
            let mut c: Consumer<Vec<u8>, Vec<u8>> =
                Consumer::new(&log, config, BytesSerde, BytesSerde)?;
            let tps: Vec<TopicPartition> = (0..PARTITIONS)
                .map(|p| TopicPartition::new(OUTPUT, p))
                .collect();
            c.assign(&tps)?;
            while !stop.load(Ordering::Acquire) {
                for r in c.poll(Duration::from_millis(20))? {
                    hist.record((now_ms() - r.timestamp).max(0) as u64)?;
                }
            }
            Ok(hist)
        })
    };
    let started = Instant::now();
    produce(&log, events, rate)?;
    common::wait_caught_up(&log, APP, INPUT, PARTITIONS, Duration::from_secs(600))?;
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let hist = reader.join().map_err(|_| "the reader panicked")??;
    app.close()?;
    println!(
        "result {:.0} {} {} {:.1}",
        events as f64 / secs,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        peak_rss_mib()
    );
    Ok(())
}

/// One child run: `(mode, offered rate (0: unthrottled), commit interval ms)`.
type Run = (&'static str, usize, u64);

fn main() -> BenchResult<()> {
    let events = env_usize("MOLDAU_BENCH_EVENTS", 1_000_000)?.max(1);
    let rate = env_usize("MOLDAU_BENCH_RATE", 50_000)?.max(1);
    if let Ok(mode) = std::env::var(MODE_ENV) {
        let run_rate = env_usize("MOLDAU_LIKE_COUNT_RATE", 0)?;
        let run_events = if run_rate > 0 { run_rate * 10 } else { events };
        return run_mode(&mode, run_events, run_rate);
    }
    let samples = env_usize("MOLDAU_BENCH_SAMPLES", 3)?.max(1);
    let exe = std::env::current_exe()?;
    let [alos, eos, hand] = MODES;
    let runs: Vec<Run> = vec![
        (alos, 0, 100),
        (eos, 0, 100),
        (alos, 0, 1000),
        (eos, 0, 1000),
        (hand, 0, 0),
        (alos, rate, 100),
        (eos, rate, 100),
    ];
    let mut results: HashMap<Run, Vec<[f64; 4]>> = HashMap::new();
    // Samples interleave the runs, so a slow moment of the machine hits every run alike.
    for _ in 0..samples {
        for &run @ (mode, r, commit_ms) in &runs {
            let out = std::process::Command::new(&exe)
                .arg("--bench")
                .env(MODE_ENV, mode)
                .env("MOLDAU_LIKE_COUNT_RATE", r.to_string())
                .env("MOLDAU_BENCH_COMMIT_MS", commit_ms.to_string())
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("result "))
                .ok_or_else(|| {
                    format!(
                        "{mode}: no result ({}):\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            if v.len() != 4 {
                return Err(format!("{mode}: bad result line {line:?}").into());
            }
            results
                .entry(run)
                .or_default()
                .push([v[0], v[1], v[2], v[3]]);
        }
    }
    println!(
        "like-count end to end ({PRODUCTS} products, {USERS} users), 8 partitions, 2 stream threads; median of {samples}"
    );
    println!(
        "{:<58} {:>12} {:>10} {:>10} {:>10}",
        "run", "events/s", "p50 ms", "p99 ms", "RSS MiB"
    );
    let col = |run: &Run, i: usize| median(results[run].iter().map(|x| x[i]).collect());
    for run @ &(mode, r, commit_ms) in &runs {
        let what = match (mode, r) {
            ("hand-written", _) => format!("{mode}, {events} events"),
            (_, 0) => format!("{mode}, commit {commit_ms} ms, {events} events unthrottled"),
            _ => format!("{mode}, commit {commit_ms} ms, {r} events/s offered for 10 s"),
        };
        println!(
            "{:<58} {:>12.0} {:>10.0} {:>10.0} {:>10.0}",
            what,
            col(run, 0),
            col(run, 1),
            col(run, 2),
            col(run, 3)
        );
    }
    for (commit_ms, target) in [(100, 0.85), (1000, 0.95)] {
        // The ratio of each sample pair (run back to back), then their median.
        let ratios: Vec<f64> = results[&(eos, 0, commit_ms)]
            .iter()
            .zip(&results[&(alos, 0, commit_ms)])
            .map(|(e, a)| e[0] / a[0])
            .collect();
        let runs: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let ratio = median(ratios);
        println!(
            "exactly_once_v2 / at_least_once throughput at commit {commit_ms} ms: {ratio:.2} (samples {}; target >= {target}: {})",
            runs.join(" / "),
            if ratio >= target { "met" } else { "NOT met" }
        );
    }
    println!(
        "  throughput: events from the first produced to the group's commit of every topic's end; the generator runs unthrottled"
    );
    println!(
        "  latency: from the event's production (its timestamp, ms) to the count it changed being visible to a read_committed reader of like-counts"
    );
    println!(
        "  hand-written: one thread decoding the same events into HashMaps (latest action per user and product, likes per product), after they were all produced"
    );
    Ok(())
}
