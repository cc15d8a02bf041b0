//! Windowed aggregation: likes per product per minute (tumbling 60 s windows, grace 10 s) and
//! per 5 minutes advancing by 1 minute (hopping), against the non-windowed count of the same
//! events in the same run.
//!
//! Input: the events of the `streams` bench (`common`: the same products and users,
//! `MOLDAU_BENCH_EVENTS`, default 10,000,000, in `likes` of 8 partitions) with timestamps
//! spread evenly over 3 hours of event time, each up to 1 s early (in order with a small
//! jitter; no record is late with 10 s of grace). Each row: `stream("likes").group_by_key()`,
//! then `count` (non-windowed) or `windowed_by(..).count(..)`, to an output topic, RocksDB
//! stores with changelogs and the default record cache, 2 stream threads, at-least-once,
//! `commit.interval.ms` 1000; timed from `start()` to the commit that reaches the end of every
//! input partition; median of `MOLDAU_BENCH_SAMPLES` (default 3). The tumbling run's output
//! is checked: the latest count of every (product, minute) sums to the number of events.
//! Target (printed, not asserted): tumbling / non-windowed >= 0.6.
//! Run: `cargo bench -p moldau-benches --bench windows`. `MOLDAU_BENCH_KINDS` (a comma-separated
//! subset of `count,tumbling,hopping`, default all) runs only some rows, e.g. to profile one;
//! `MOLDAU_BENCH_CACHE_BYTES` overrides `statestore.cache.max.bytes` (default 10 MiB).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use core_log::serialization::{BytesSerde, StringSerde};
use core_log::{Admin, FlushPolicy, Log, TopicConfig};
use streams::serde::{IntegerSerde, Nullable};
use streams::{
    Consumed, Materialized, Produced, State, Streams, StreamsBuilder, StreamsConfig, TimeWindows,
    WindowedSerde,
};

mod common;

use common::{
    BenchResult, DEFAULT_EVENTS, DEFAULT_SAMPLES, INPUT, Input, PARTITIONS, bench_dir, env_usize,
    fill, median,
};

/// Three hours of event time.
const SPAN_MS: i64 = 3 * 3_600_000;
const THREADS: usize = 2;
const TARGET_RATIO: f64 = 0.6;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Count,
    Tumbling,
    Hopping,
}

fn run(log: &Log, dir: &std::path::Path, input: &Input, kind: Kind, n: usize) -> BenchResult<f64> {
    let name = match kind {
        Kind::Count => "count",
        Kind::Tumbling => "tumbling",
        Kind::Hopping => "hopping",
    };
    let app = format!("win-{name}-{n}");
    let output = format!("out-{name}-{n}");
    log.create_topic(&output, PARTITIONS, TopicConfig::default())?;
    let b = StreamsBuilder::new();
    let grouped = b
        .stream(
            INPUT,
            Consumed::<String, Vec<u8>>::with(StringSerde, BytesSerde),
        )
        .group_by_key();
    let minute = Duration::from_secs(60);
    let out = |w: TimeWindows| {
        Produced::with(
            WindowedSerde::time(StringSerde, Duration::from_millis(w.size_ms() as u64)),
            Nullable(IntegerSerde),
        )
    };
    match kind {
        Kind::Count => grouped
            .count(Materialized::named("counts"))
            .to_stream()
            .to(&output, Produced::with(StringSerde, Nullable(IntegerSerde))),
        Kind::Tumbling => {
            let w = TimeWindows::of_size_and_grace(minute, Duration::from_secs(10));
            grouped
                .windowed_by(w.clone())
                .count(Materialized::named("counts"))
                .to_stream()
                .to(&output, out(w));
        }
        Kind::Hopping => {
            let w = TimeWindows::of_size_and_grace(5 * minute, Duration::from_secs(10))
                .advance_by(minute);
            grouped
                .windowed_by(w.clone())
                .count(Materialized::named("counts"))
                .to_stream()
                .to(&output, out(w));
        }
    }
    let mut config = StreamsConfig::new(app.as_str())
        .num_stream_threads(THREADS)
        .commit_interval_ms(1_000)
        .state_dir(dir.join(format!("state-{app}")));
    if let Ok(bytes) = std::env::var("MOLDAU_BENCH_CACHE_BYTES") {
        config = config.statestore_cache_max_bytes(
            bytes
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|e| format!("MOLDAU_BENCH_CACHE_BYTES={bytes}: {e}"))?,
        );
    }
    let streams = Streams::new(b.build()?, log, config)?;
    let admin = Admin::new(log);
    let start = Instant::now();
    streams.start()?;
    loop {
        if let Ok(offsets) = admin.list_consumer_group_offsets(&app) {
            let done = (0..PARTITIONS).all(|p| {
                offsets
                    .iter()
                    .find(|(tp, _)| tp.topic == INPUT && tp.partition == p)
                    .map_or(0, |(_, o)| o.offset)
                    == input.ends[p as usize]
            });
            if done {
                break;
            }
        }
        if streams.state() == State::Error {
            return Err(format!("{app} failed").into());
        }
        if start.elapsed() > Duration::from_secs(900) {
            return Err(format!("{app} did not finish").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = start.elapsed().as_secs_f64();
    streams.close()?;
    if kind == Kind::Tumbling {
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut buf = Vec::new();
        for p in 0..PARTITIONS {
            let part = log.partition(&output, p)?;
            let mut offset = 0;
            while offset < part.high_watermark()? {
                let fetch = part.read_into(offset, 1 << 20, &mut buf)?;
                for r in fetch.records() {
                    let v = r.value.ok_or("a tombstone")?;
                    let v = i64::from_be_bytes(v.try_into().map_err(|_| "not 8 bytes")?);
                    latest.insert(r.key.ok_or("no key")?.to_vec(), v);
                }
                offset = fetch.next_offset();
            }
        }
        let total: i64 = latest.values().sum();
        if total != input.events as i64 {
            return Err(format!("tumbling counts sum to {total}, not {}", input.events).into());
        }
    }
    log.delete_topic(&output)?;
    Ok(input.events as f64 / secs)
}

fn main() -> BenchResult<()> {
    let events = env_usize("MOLDAU_BENCH_EVENTS", DEFAULT_EVENTS)?.max(1);
    let samples = env_usize("MOLDAU_BENCH_SAMPLES", DEFAULT_SAMPLES)?.max(1);
    let dir = bench_dir()?;
    let log = Log::builder(dir.path())
        .flush_policy(FlushPolicy::Never)
        .open()?;
    let input = fill(&log, events, Some(SPAN_MS))?;
    println!(
        "windowed counts: {events} events over {} h of event time, {PARTITIONS} partitions, {THREADS} threads, RocksDB + changelog, median of {samples}",
        SPAN_MS / 3_600_000
    );
    let kinds = [
        (Kind::Count, "non-windowed count"),
        (Kind::Tumbling, "tumbling 60 s, grace 10 s"),
        (Kind::Hopping, "hopping 5 min by 1 min, grace 10 s"),
    ];
    let selected = std::env::var("MOLDAU_BENCH_KINDS").unwrap_or_default();
    let wanted = |kind: Kind| {
        let id = match kind {
            Kind::Count => "count",
            Kind::Tumbling => "tumbling",
            Kind::Hopping => "hopping",
        };
        selected.trim().is_empty() || selected.split(',').any(|s| s.trim() == id)
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for n in 0..samples {
        for (i, (kind, _)) in kinds.iter().enumerate() {
            if wanted(*kind) {
                rates[i].push(run(&log, dir.path(), &input, *kind, n)?);
            }
        }
    }
    let medians: Vec<Option<f64>> = rates
        .iter()
        .map(|r| (!r.is_empty()).then(|| median(r.clone())))
        .collect();
    for ((_, name), (m, r)) in kinds.iter().zip(medians.iter().zip(&rates)) {
        if let Some(m) = m {
            let s: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
            println!("{name:<40} {m:>12.0} events/s   samples: {}", s.join(", "));
        }
    }
    if let (Some(count), Some(tumbling)) = (medians[0], medians[1]) {
        let ratio = tumbling / count;
        println!(
            "ratio tumbling / non-windowed: {ratio:.3} (target >= {TARGET_RATIO}: {})",
            if ratio >= TARGET_RATIO {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    if let (Some(count), Some(hopping)) = (medians[0], medians[2]) {
        println!("ratio hopping / non-windowed: {:.3}", hopping / count);
    }
    Ok(())
}
