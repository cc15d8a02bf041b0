//! Streams (the keyed-count issue's benchmark): a keyed count over like events, against a
//! hand-written loop counting the same events into a `HashMap`.
//!
//! Input: `MOLDAU_BENCH_EVENTS` like events (default 10,000,000) in a topic `likes` of 8
//! partitions, written once with `Partition::append` of 1,000-record batches. An event's key
//! is its product, `p000000`..`p099999` (UTF-8, 7 bytes), so each product lives in one
//! partition (Kafka's murmur2 of the key); products are drawn from a Zipf distribution of
//! exponent 0.99 over the 100,000 products (a precomputed CDF and a binary search over it,
//! with a seeded `fastrand`: the same events every run). The value, 17 bytes, is a user id
//! (u64 BE), the timestamp (i64 BE) and an action byte; nothing reads it. Timestamps
//! increase.
//!
//! Rows, each a median of `MOLDAU_BENCH_SAMPLES` runs (default 3):
//! - hand-written HashMap loop (consumer): one thread, one `Consumer<String, Vec<u8>>`
//!   assigned the 8 partitions (`max.poll.records` 1000, as the stream threads), counting
//!   `*counts.entry(key).or_insert(0) += 1` into a `HashMap<String, u64>`: the same polling
//!   and deserialization the application's threads do, without the framework. The target's
//!   "hand-written loop" is this one.
//! - hand-written HashMap loop (raw): one thread, `Partition::read_into` of 1 MiB and the key
//!   slices of the borrowed records counted into a `HashMap<Box<[u8]>, u64>` (allocating only
//!   on a key's first sight): the absolute floor of the work.
//! - streams, 1 and 2 threads: `stream("likes", Consumed::with(StringSerde, BytesSerde))
//!   .group_by_key().count(Materialized::named("like-counts")).to_stream().to(..)`, a RocksDB
//!   store with its changelog and the default 10 MiB record cache, output to a topic of 8
//!   partitions (`Nullable(IntegerSerde)` values), at-least-once, `commit.interval.ms` 1000
//!   (not Kafka's 30000: with it a run would be mostly waiting for the one commit at the end).
//!   Every run has its own application id, state directory, output and changelog topics:
//!   fresh state, nothing restored. The clock runs from `start()` (internal topics, joining
//!   the group and opening the stores included) until the group's committed offsets (read
//!   with `Admin` every 2 ms) reach the end of every input partition. Offsets are committed
//!   every second, so the end-to-end figure includes the wait for the commit after the last
//!   record (0 to ~1.1 s): run times fall on a grid of about 1.05 s + k s, and a run of a few
//!   seconds moves by a whole step when its last record lands just after a commit instead of
//!   just before. The "between commits" column has no such step: each thread commits all its
//!   partitions at once, so the sum of its partitions' committed offsets changes only at its
//!   commits, each an exact (time, events) point; a thread's rate runs from its first commit
//!   once the group is stable to its last commit before its partitions' end, and the threads'
//!   rates are summed: the rate while every thread is busy (start-up, the final wait, and the
//!   tail where one thread has finished its partitions and the other has not are left out;
//!   the range assignor gives partitions 0-3 to one thread and 4-7 to the other, and the skew
//!   makes their shares unequal). "-" when a thread had fewer than two such commits. With
//!   10,000,000 events a 2-thread run has one or two commit intervals per thread, so this
//!   column is noisy too; a larger `MOLDAU_BENCH_EVENTS` steadies both.
//!   After `close`, the output topic's latest count per product must equal the generated
//!   counts (and each hand-written loop's map must too): the bench fails otherwise.
//!
//! CPU µs/event is the process's user + system time (every thread: stream threads, producer
//! senders, RocksDB's background threads, the poller) over the measured interval, divided by
//! the events: a figure other processes on a shared machine disturb less than wall time.
//!
//! Targets (the issue's): at least 1,000,000 events/s with 2 threads, and at least 25% of the
//! hand-written loop's rate. Printed, not asserted. `MOLDAU_BENCH_DIR` moves the data (e.g.
//! to tmpfs). Run: `cargo bench -p moldau-benches --bench streams`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use core_log::serialization::{BytesSerde, StringSerde};
use core_log::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, FlushPolicy, GroupState, IsolationLevel, Log,
    TopicConfig, TopicPartition,
};
use streams::serde::{IntegerSerde, Nullable};
use streams::{Consumed, Materialized, Produced, State, Streams, StreamsBuilder, StreamsConfig};

mod common;

use common::{
    BenchResult, DEFAULT_EVENTS, DEFAULT_SAMPLES, INPUT, Input, KEYS, PARTITIONS, VALUE_LEN,
    ZIPF_EXPONENT, bench_dir, check_counts, cpu_secs, env_usize, fill, median, product_key,
};

const STORE: &str = "like-counts";

const COMMIT_INTERVAL_MS: u64 = 1_000;

const MAX_POLL_RECORDS: usize = 1_000;

/// How often the group's committed offsets are read while the application runs.
const WATCH_EVERY: Duration = Duration::from_millis(2);

const TARGET_RATE: f64 = 1_000_000.0;

const TARGET_RATIO: f64 = 0.25;

/// Wall and CPU seconds of one run.
#[derive(Clone, Copy)]
struct Timing {
    secs: f64,
    cpu_secs: f64,
}

/// The hand-written loop over a consumer: poll, deserialize, count.
fn consumer_loop(log: &Log, input: &Input) -> BenchResult<Timing> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .max_poll_records(MAX_POLL_RECORDS);
    let mut consumer: Consumer<String, Vec<u8>> =
        Consumer::new(log, config, StringSerde, BytesSerde)?;
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(INPUT, p))
        .collect();
    let cpu = cpu_secs()?;
    let start = Instant::now();
    consumer.assign(&partitions)?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut seen = 0usize;
    while seen < input.events {
        let records = consumer.poll(Duration::from_millis(100))?;
        if records.is_empty() && start.elapsed() > Duration::from_secs(600) {
            return Err("the consumer loop stalled".into());
        }
        for r in records {
            seen += 1;
            if let Some(key) = r.key {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
    }
    let timing = Timing {
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_secs()? - cpu,
    };
    check_counts(
        "consumer loop",
        counts.iter().map(|(k, &n)| (k.as_bytes(), n)),
        &input.counts,
    )?;
    Ok(timing)
}

/// The hand-written loop over `read_into`: borrowed key slices, counted.
fn raw_loop(log: &Log, input: &Input) -> BenchResult<Timing> {
    let cpu = cpu_secs()?;
    let start = Instant::now();
    let mut counts: HashMap<Box<[u8]>, u64> = HashMap::new();
    let mut buf = Vec::new();
    for (p, &end) in input.ends.iter().enumerate() {
        let partition = log.partition(INPUT, p as u32)?;
        let mut offset = 0;
        while offset < end {
            let fetch = partition.read_into(offset, 1 << 20, &mut buf)?;
            for r in fetch.records() {
                if let Some(key) = r.key {
                    match counts.get_mut(key) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(key.into(), 1);
                        }
                    }
                }
            }
            let next = fetch.next_offset();
            if next <= offset {
                return Err(format!("read_into made no progress at {INPUT}-{p}@{offset}").into());
            }
            offset = next;
        }
    }
    let timing = Timing {
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_secs()? - cpu,
    };
    check_counts(
        "raw loop",
        counts.iter().map(|(k, &n)| (&k[..], n)),
        &input.counts,
    )?;
    Ok(timing)
}

/// What one run of the application measured.
struct AppRun {
    timing: Timing,
    /// Events per second while every thread is busy, from the commits (see [`steady_rate`]).
    between_commits: Option<f64>,
    /// Seconds from `start()` to the first commit seen.
    first_commit_secs: f64,
    commits_seen: usize,
    close_secs: f64,
    output_records: i64,
    processed: u64,
    /// The group's changes: time, state, generation, partitions per member.
    group: String,
    /// Changelog records read to restore stores (none expected: fresh state).
    restored: u64,
    /// The group's changes while the instance closed.
    closing: String,
}

/// The group's committed offset of each input partition (capped at its end), 0 for a
/// partition without a commit and before the group exists.
fn committed(admin: &Admin, group: &str, ends: &[i64]) -> BenchResult<Vec<i64>> {
    let mut per_partition = vec![0; ends.len()];
    let offsets = match admin.list_consumer_group_offsets(group) {
        Ok(o) => o,
        Err(core_log::Error::GroupIdNotFound { .. }) => return Ok(per_partition),
        Err(e) => return Err(e.into()),
    };
    for (tp, o) in offsets {
        if tp.topic == INPUT {
            let p = tp.partition as usize;
            per_partition[p] = o.offset.min(ends[p]);
        }
    }
    Ok(per_partition)
}

/// The group's committed offsets when the watcher saw them change.
struct CommitPoint {
    /// Seconds since `start()`.
    at: f64,
    /// Per input partition.
    offsets: Vec<i64>,
}

/// The rate while every thread is busy. Each thread (the partitions it owns from `stable_at`
/// on) commits all its partitions at once, so the sum over its partitions changes only at
/// its commits and each change is an exact (time, events) point. A thread's rate runs from
/// its first commit after `stable_at` to its last one before its partitions' end; the
/// threads' rates are summed. `None` when a thread has fewer than two such commits.
fn steady_rate(
    points: &[CommitPoint],
    owners: &[Vec<usize>],
    stable_at: f64,
    ends: &[i64],
) -> Option<f64> {
    let mut sum = 0.0;
    for parts in owners {
        let total: i64 = parts.iter().map(|&p| ends[p]).sum();
        let mut previous = 0;
        let mut series: Vec<(f64, i64)> = Vec::new();
        for point in points {
            let c: i64 = parts.iter().map(|&p| point.offsets[p]).sum();
            if c != previous && point.at >= stable_at && c < total {
                series.push((point.at, c));
            }
            previous = c;
        }
        let (&(t0, c0), &(t1, c1)) = (series.first()?, series.last()?);
        if t1 <= t0 {
            return None;
        }
        sum += (c1 - c0) as f64 / (t1 - t0);
    }
    Some(sum)
}

/// The latest count per product in the output topic, checked against the generated counts;
/// returns the number of output records.
fn verify_output(log: &Log, topic: &str, expected: &[u64]) -> BenchResult<i64> {
    let mut latest: HashMap<Vec<u8>, Option<i64>> = HashMap::new();
    let mut records = 0;
    let mut buf = Vec::new();
    for p in 0..log.partition_count(topic)? {
        let partition = log.partition(topic, p)?;
        // What read_committed readers see (all of it, without transactions).
        let end = partition.last_stable_offset()?;
        records += end;
        let mut offset = 0;
        while offset < end {
            let fetch = partition.read_into_isolated(
                offset,
                1 << 20,
                &mut buf,
                IsolationLevel::ReadCommitted,
            )?;
            for r in fetch.committed_records() {
                let key = r.key.ok_or("an output record without a key")?;
                let value = match r.value {
                    Some(v) => Some(i64::from_be_bytes(
                        v.try_into()
                            .map_err(|_| "an output value of other than 8 bytes")?,
                    )),
                    None => None,
                };
                latest.insert(key.to_vec(), value);
            }
            let next = fetch.next_offset();
            if next <= offset {
                return Err(format!("read_into made no progress at {topic}-{p}@{offset}").into());
            }
            offset = next;
        }
    }
    let mut counts = Vec::with_capacity(latest.len());
    for (k, v) in &latest {
        let n = v.ok_or_else(|| format!("a tombstone for {:?}", String::from_utf8_lossy(k)))?;
        counts.push((&k[..], u64::try_from(n).map_err(|_| "a negative count")?));
    }
    check_counts(
        &format!("output topic {topic}"),
        counts.into_iter(),
        expected,
    )?;
    Ok(records)
}

/// How a run processes: its guarantee and commit interval.
#[derive(Clone, Copy)]
struct Mode {
    exactly_once: bool,
    commit_ms: u64,
}

impl Mode {
    fn tag(self) -> String {
        format!(
            "{}{}",
            if self.exactly_once { "eos" } else { "alos" },
            self.commit_ms
        )
    }
}

fn streams_run(
    log: &Log,
    dir: &Path,
    input: &Input,
    threads: usize,
    run: usize,
    mode: Mode,
) -> BenchResult<AppRun> {
    let app = format!("like-count-{threads}t-{run}-{}", mode.tag());
    let output = format!("like-counts-{threads}t-{run}-{}", mode.tag());
    let changelog = format!("{app}-{STORE}-changelog");
    let state_dir = dir.join(format!("state-{app}"));
    log.create_topic(&output, PARTITIONS, TopicConfig::default())?;
    let builder = StreamsBuilder::new();
    builder
        .stream(
            INPUT,
            Consumed::<String, Vec<u8>>::with(StringSerde, BytesSerde),
        )
        .group_by_key()
        .count(Materialized::named(STORE))
        .to_stream()
        .to(&output, Produced::with(StringSerde, Nullable(IntegerSerde)));
    let mut config = StreamsConfig::new(app.as_str())
        .num_stream_threads(threads)
        .commit_interval_ms(mode.commit_ms)
        .max_poll_records(MAX_POLL_RECORDS)
        .state_dir(&state_dir);
    if mode.exactly_once {
        config = config.exactly_once();
    }
    let streams = Streams::new(builder.build()?, log, config)?;
    let admin = Admin::new(log);
    let total = input.events as i64;
    let limit = Duration::from_secs(120) + Duration::from_secs_f64(input.events as f64 / 20_000.0);
    let mut commits: Vec<CommitPoint> = Vec::new();
    // (seconds since start, state, generation, partitions per member) at every change seen.
    let mut group: Vec<(f64, GroupState, i32, Vec<usize>)> = Vec::new();
    // When the group was last seen stable with every thread owning partitions, and who owns what.
    let mut stable: Option<(f64, i32, Vec<Vec<usize>>)> = None;
    let cpu = cpu_secs()?;
    let start = Instant::now();
    streams.start()?;
    for round in 0u64.. {
        if round % 5 == 0
            && let Ok(d) = admin.describe_consumer_group(&app)
        {
            let at = start.elapsed().as_secs_f64();
            let mut owned: Vec<usize> = d.members.iter().map(|m| m.assignment.len()).collect();
            owned.sort_unstable();
            if group
                .last()
                .is_none_or(|(_, s, g, o)| (*s, *g, o) != (d.state, d.generation, &owned))
            {
                group.push((at, d.state, d.generation, owned));
            }
            let complete = d.state == GroupState::Stable
                && d.members.len() == threads
                && d.members.iter().all(|m| !m.assignment.is_empty());
            if complete && stable.as_ref().is_none_or(|s| s.1 != d.generation) {
                let owners = d
                    .members
                    .iter()
                    .map(|m| {
                        m.assignment
                            .iter()
                            .filter(|tp| tp.topic == INPUT)
                            .map(|tp| tp.partition as usize)
                            .collect()
                    })
                    .collect();
                stable = Some((at, d.generation, owners));
            }
        }
        let offsets = committed(&admin, &app, &input.ends)?;
        let c: i64 = offsets.iter().sum();
        if commits.last().map_or(c > 0, |last| offsets != last.offsets) {
            commits.push(CommitPoint {
                at: start.elapsed().as_secs_f64(),
                offsets,
            });
        }
        if c >= total {
            break;
        }
        if streams.state() == State::Error {
            return Err(format!("{app}: the application failed (state Error)").into());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{app}: {c} of {total} events committed after {:.0} s",
                limit.as_secs_f64()
            )
            .into());
        }
        std::thread::sleep(WATCH_EVERY);
    }
    let timing = Timing {
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_secs()? - cpu,
    };
    let close_start = Instant::now();
    // What the group goes through while the instance closes.
    let done = std::sync::atomic::AtomicBool::new(false);
    let closing: Vec<String> = std::thread::scope(|scope| -> BenchResult<Vec<String>> {
        let watcher = scope.spawn(|| {
            let mut seen: Vec<String> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if let Ok(d) = admin.describe_consumer_group(&app) {
                    let mut owned: Vec<usize> =
                        d.members.iter().map(|m| m.assignment.len()).collect();
                    owned.sort_unstable();
                    let owned: Vec<String> = owned.iter().map(usize::to_string).collect();
                    let now = format!("gen {} {} [{}]", d.generation, d.state, owned.join(" "));
                    if seen.last() != Some(&now) {
                        seen.push(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        let closed = streams.close();
        done.store(true, std::sync::atomic::Ordering::Release);
        let seen = watcher.join().map_err(|_| "the close watcher panicked")?;
        closed?;
        Ok(seen)
    })?;
    let close_secs = close_start.elapsed().as_secs_f64();
    if streams.state() != State::NotRunning {
        return Err(format!("{app}: state {:?} after close", streams.state()).into());
    }
    let metrics = streams.metrics();
    drop(streams);
    let output_records = verify_output(log, &output, &input.counts)?;
    let between_commits = stable.and_then(|(at, _, owners)| {
        // A rebalance after the stable generation seen would make the owners wrong.
        let last_change = group.last().map_or(0.0, |g| g.0);
        (last_change <= at).then(|| steady_rate(&commits, &owners, at, &input.ends))?
    });
    let group = group
        .iter()
        .map(|(at, state, generation, owned)| {
            let owned: Vec<String> = owned.iter().map(usize::to_string).collect();
            format!("{at:.2} s gen {generation} {state} [{}]", owned.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let run = AppRun {
        group,
        timing,
        between_commits,
        first_commit_secs: commits.first().map_or(f64::NAN, |c| c.at),
        commits_seen: commits.len(),
        close_secs,
        output_records,
        processed: metrics.processed,
        restored: metrics.restored_records,
        closing: closing.join(", "),
    };
    // Keep the disk use of many runs bounded.
    log.delete_topic(&output)?;
    log.delete_topic(&changelog)?;
    std::fs::remove_dir_all(&state_dir)?;
    Ok(run)
}

/// A table row: median rate, every sample, median CPU per event.
struct Row {
    name: String,
    rates: Vec<f64>,
    cpu_us: Vec<f64>,
    between_commits: Vec<f64>,
}

impl Row {
    fn new(name: impl Into<String>) -> Self {
        Row {
            name: name.into(),
            rates: Vec::new(),
            cpu_us: Vec::new(),
            between_commits: Vec::new(),
        }
    }

    fn push(&mut self, events: usize, t: Timing) {
        self.rates.push(events as f64 / t.secs);
        self.cpu_us.push(t.cpu_secs * 1e6 / events as f64);
    }

    fn rate(&self) -> f64 {
        median(self.rates.clone())
    }
}

fn print_row(row: &Row) {
    let samples: Vec<String> = row.rates.iter().map(|r| format!("{r:.0}")).collect();
    let between = if row.between_commits.is_empty() {
        "-".to_string()
    } else {
        format!("{:.0}", median(row.between_commits.clone()))
    };
    println!(
        "{:<40} {:>12.0} {:>16} {:>10.2}   {}",
        row.name,
        row.rate(),
        between,
        median(row.cpu_us.clone()),
        samples.join(", ")
    );
}

fn main() -> BenchResult<()> {
    let total_start = Instant::now();
    let events = env_usize("MOLDAU_BENCH_EVENTS", DEFAULT_EVENTS)?;
    let samples = env_usize("MOLDAU_BENCH_SAMPLES", DEFAULT_SAMPLES)?.max(1);
    if events == 0 {
        return Err("MOLDAU_BENCH_EVENTS must be at least 1".into());
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    println!("moldau streams: a keyed count against a hand-written HashMap loop, in one process");
    println!(
        "  cpus: {}, cpu: {cpu}, load average at start: {load}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let dir = bench_dir()?;
    let log = Log::builder(dir.path())
        .flush_policy(FlushPolicy::Never)
        .open()?;
    let input = fill(&log, events, None)?;
    println!(
        "  input: {events} events in {INPUT} ({PARTITIONS} partitions, {:.1} MB of log, {}-byte keys, {VALUE_LEN}-byte values), written at {:.0} events/s",
        input.bytes as f64 / 1e6,
        product_key(0).len(),
        events as f64 / input.fill_secs
    );
    println!(
        "  skew: {} of {KEYS} products liked; the top product has {:.1}% of the events, the busiest partition {:.1}% (even: {:.1}%)",
        input.counts.iter().filter(|&&n| n > 0).count(),
        input.top_product * 100.0,
        input.busiest_partition * 100.0,
        100.0 / f64::from(PARTITIONS)
    );
    let shares: Vec<String> = input
        .ends
        .iter()
        .map(|&e| format!("{:.1}", e as f64 * 100.0 / events as f64))
        .collect();
    let half = input.ends.len() / 2;
    let first_half: i64 = input.ends[..half].iter().sum();
    println!(
        "  events per partition (%): {}; partitions 0-{} hold {:.1}% (2 threads: one thread's share under the range assignor)",
        shares.join(" "),
        half - 1,
        first_half as f64 * 100.0 / events as f64
    );

    let mut consumer_row = Row::new("hand-written HashMap loop (consumer)");
    let mut raw_row = Row::new("hand-written HashMap loop (raw)");
    for _ in 0..samples {
        consumer_row.push(events, consumer_loop(&log, &input)?);
        raw_row.push(events, raw_loop(&log, &input)?);
    }
    let mut app_rows = [
        Row::new("streams, 1 thread"),
        Row::new("streams, 2 threads"),
    ];
    let mut details = Vec::new();
    for run in 0..samples {
        for (row, threads) in app_rows.iter_mut().zip([1, 2]) {
            let mode = Mode {
                exactly_once: false,
                commit_ms: COMMIT_INTERVAL_MS,
            };
            let r = streams_run(&log, dir.path(), &input, threads, run, mode)?;
            row.push(events, r.timing);
            if let Some(b) = r.between_commits {
                row.between_commits.push(b);
            }
            let duplicates = r.processed.saturating_sub(events as u64);
            details.push(format!(
                "  {threads} thread(s), run {run}: group {}; while closing: {}; {} changelog records restored",
                r.group, r.closing, r.restored
            ));
            details.push(format!(
                "  {threads} thread(s), run {run}: {:.2} s to the last commit ({:.2} CPU us/event, {:.2} cores busy), first commit at {:.2} s, {} commit points seen, close {:.2} s, {} output records, {} processed ({duplicates} reprocessed), verified",
                r.timing.secs,
                r.timing.cpu_secs * 1e6 / events as f64,
                r.timing.cpu_secs / r.timing.secs,
                r.first_commit_secs,
                r.commits_seen,
                r.close_secs,
                r.output_records,
                r.processed
            ));
        }
    }

    println!();
    println!(
        "keyed count, {events} events, {KEYS} keys (zipf {ZIPF_EXPONENT}), {PARTITIONS} partitions, RocksDB + changelog, record cache 10 MiB, at-least-once, commit.interval.ms={COMMIT_INTERVAL_MS}; median of {samples}"
    );
    println!(
        "{:<40} {:>12} {:>16} {:>10}   samples (events/s)",
        "row", "events/s", "between commits", "CPU us/ev"
    );
    print_row(&consumer_row);
    print_row(&raw_row);
    for row in &app_rows {
        print_row(row);
    }
    let (c, r) = (consumer_row.rate(), raw_row.rate());
    let (one, two) = (app_rows[0].rate(), app_rows[1].rate());
    println!(
        "{:<40} {:>12.3}",
        "ratio 2 threads / consumer loop",
        two / c
    );
    println!("{:<40} {:>12.3}", "ratio 2 threads / raw loop", two / r);
    println!("{:<40} {:>12.3}", "ratio 1 thread / consumer loop", one / c);
    println!("{:<40} {:>12.3}", "ratio 2 threads / 1 thread", two / one);
    println!(
        "  hand-written loops run on one thread; streams events/s: from start() to the commit that reaches the end (run times step by the 1 s commit interval); between commits: while every thread is busy"
    );
    for d in &details {
        println!("{d}");
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "target: >= {TARGET_RATE:.0} events/s with 2 threads: {} ({two:.0}); >= {:.0}% of the hand-written (consumer) loop: {} ({:.1}%)",
        met(two >= TARGET_RATE),
        TARGET_RATIO * 100.0,
        met(two / c >= TARGET_RATIO),
        two / c * 100.0
    );
    println!("  output verified: every run's latest count per product equals the generated counts");

    // Exactly-once against at-least-once, 2 threads, at two commit intervals.
    let modes = [
        Mode {
            exactly_once: false,
            commit_ms: 100,
        },
        Mode {
            exactly_once: true,
            commit_ms: 100,
        },
        Mode {
            exactly_once: false,
            commit_ms: 1_000,
        },
        Mode {
            exactly_once: true,
            commit_ms: 1_000,
        },
    ];
    let mut rows: Vec<Row> = modes
        .iter()
        .map(|m| {
            let g = if m.exactly_once {
                "exactly_once_v2"
            } else {
                "at_least_once"
            };
            Row::new(format!("2 threads, {g}, commit {} ms", m.commit_ms))
        })
        .collect();
    for run in 0..samples {
        for (row, mode) in rows.iter_mut().zip(modes) {
            // Run numbers after the first section's: every run has its own group and topics.
            let r = streams_run(&log, dir.path(), &input, 2, samples + run, mode)?;
            row.push(events, r.timing);
            if let Some(b) = r.between_commits {
                row.between_commits.push(b);
            }
        }
    }
    println!();
    println!("exactly-once vs at-least-once: the same keyed count, 2 threads; median of {samples}");
    println!(
        "{:<40} {:>12} {:>16} {:>10}   samples (events/s)",
        "row", "events/s", "between commits", "CPU us/ev"
    );
    for row in &rows {
        print_row(row);
    }
    let steady = |row: &Row| {
        if row.between_commits.is_empty() {
            row.rate()
        } else {
            median(row.between_commits.clone())
        }
    };
    for (pair, (commit_ms, target)) in rows.chunks(2).zip([(100, 0.85), (1_000, 0.95)]) {
        let (alos, eos) = (&pair[0], &pair[1]);
        let end_to_end = eos.rate() / alos.rate();
        let between = steady(eos) / steady(alos);
        // Events per CPU second: the least noisy of the three on a shared machine.
        let per_cpu = median(alos.cpu_us.clone()) / median(eos.cpu_us.clone());
        println!(
            "{:<40} {:>12.3} {:>16.3} {:>10.3}   (target >= {target}: {})",
            format!("ratio exactly-once / at-least-once, {commit_ms} ms"),
            end_to_end,
            between,
            per_cpu,
            met(end_to_end >= target && per_cpu >= target)
        );
    }
    println!(
        "  ratio columns: end to end (start to the last commit), between commits (steady state), events per CPU second; the target is checked on the first and the last"
    );
    drop(log);
    println!(
        "total bench time: {:.1} s",
        total_start.elapsed().as_secs_f64()
    );
    Ok(())
}
