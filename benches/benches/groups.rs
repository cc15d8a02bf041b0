//! Consumer groups (issue 4's benchmark): how long a group takes to settle after a member
//! leaves, eager against cooperative rebalancing, and how fast a group drains a topic.
//!
//! (a) Settle time. 8 members, each on its own thread polling with a short timeout
//!     (`heartbeat.interval.ms` 10), share one topic of 64 partitions. One member closes.
//!     The group has settled when the 7 others own all 64 partitions between them, each
//!     exactly once, all at the same generation, and the coordinator reports that generation
//!     `Stable` (no rebalance pending). Each member publishes (generation, assignment) from
//!     its rebalance listener and after every poll, with the instant of the change; the
//!     settle time runs from just before `close()` to the publication that completed the
//!     picture. The listener also counts revoked partitions (the closing member's included)
//!     and sums, over partitions, the time from revocation to being assigned again.
//! (b) Consumption throughput. One topic of 8 partitions pre-filled with 100-byte values,
//!     drained by a group of one consumer and by a group of 4 (4 threads, a fresh group id
//!     each run, `auto.offset.reset=earliest`, auto-commit on so partitions that move while
//!     the members join continue where they were). The clock runs from the threads' start,
//!     joining included, to the last record. The limit: one thread reading the same
//!     partitions with `Partition::read_into`, counting records from batch headers without
//!     decoding them.
//!
//! Each figure is a median of several runs. `MOLDAU_BENCH_DIR` moves the data (e.g. to
//! tmpfs). Run: `cargo bench -p moldau-benches --bench groups`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use core_log::serialization::BytesSerde;
use core_log::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRebalanceListener,
    CooperativeStickyAssignor, GroupState, Log, RangeAssignor, Record, SharedAssignor, TopicConfig,
    TopicPartition,
};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
type C = Consumer<Vec<u8>, Vec<u8>>;

const MEMBERS: usize = 8;
const SETTLE_PARTITIONS: u32 = 64;
const SETTLE_RUNS: usize = 7;
/// A member's poll timeout: how often it publishes when nothing changes.
const POLL_MS: u64 = 5;
const HEARTBEAT_MS: u64 = 10;
/// A run that does not settle within this fails the bench.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

const DATA_PARTITIONS: u32 = 8;
const RECORDS: usize = 2_000_000;
const VALUE_LEN: usize = 100;
const APPEND_BATCH: usize = 1_000;
const GROUP_MEMBERS: usize = 4;
const THROUGHPUT_RUNS: usize = 3;

fn bench_dir() -> BenchResult<tempfile::TempDir> {
    let parent = std::env::var("MOLDAU_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    Ok(tempfile::tempdir_in(parent)?)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------
// (a) settle time

/// What the members report, shared with the main thread.
#[derive(Default)]
struct Board {
    /// Per member: (generation, partitions owned, sorted); `None` before the first poll and
    /// after it closed.
    members: Vec<Option<(i32, Vec<u32>)>>,
    /// When a member's published (generation, assignment) last changed.
    last_change: Option<Instant>,
    /// Revocations are counted from the close on.
    counting: bool,
    revoked: usize,
    /// Partition -> when it was revoked, until it is assigned again.
    revoked_at: HashMap<u32, Instant>,
    paused: Duration,
}

struct Shared {
    board: Mutex<Board>,
    changed: Condvar,
}

impl Shared {
    fn publish(&self, member: usize, consumer: &C) {
        let mut parts: Vec<u32> = consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect();
        parts.sort_unstable();
        let now = Some((consumer.generation(), parts));
        let mut b = lock(&self.board);
        if b.members[member] != now {
            b.members[member] = now;
            b.last_change = Some(Instant::now());
            drop(b);
            self.changed.notify_all();
        }
    }
}

struct Listener {
    shared: Arc<Shared>,
    member: usize,
}

impl ConsumerRebalanceListener<Vec<u8>, Vec<u8>> for Listener {
    fn on_partitions_revoked(
        &mut self,
        _consumer: &mut C,
        partitions: &[TopicPartition],
    ) -> core_log::Result<()> {
        let now = Instant::now();
        let mut b = lock(&self.shared.board);
        if b.counting {
            b.revoked += partitions.len();
            for tp in partitions {
                b.revoked_at.insert(tp.partition, now);
            }
        }
        Ok(())
    }

    fn on_partitions_assigned(
        &mut self,
        consumer: &mut C,
        partitions: &[TopicPartition],
    ) -> core_log::Result<()> {
        let now = Instant::now();
        {
            let mut b = lock(&self.shared.board);
            for tp in partitions {
                if let Some(at) = b.revoked_at.remove(&tp.partition) {
                    b.paused += now - at;
                }
            }
        }
        self.shared.publish(self.member, consumer);
        Ok(())
    }
}

/// The generation at which `members` own every partition exactly once, if they do.
fn settled(b: &Board, members: std::ops::Range<usize>) -> Option<i32> {
    let mut generation = None;
    let mut owned = Vec::with_capacity(SETTLE_PARTITIONS as usize);
    for m in members {
        let (g, parts) = b.members[m].as_ref()?;
        if *g <= 0 || generation.is_some_and(|x| x != *g) {
            return None;
        }
        generation = Some(*g);
        owned.extend_from_slice(parts);
    }
    owned.sort_unstable();
    (owned == (0..SETTLE_PARTITIONS).collect::<Vec<_>>()).then_some(generation?)
}

/// Waits until `members` have settled and the coordinator confirms the generation is
/// `Stable` with exactly those members. Returns the instant of the last change.
fn wait_settled(
    shared: &Shared,
    admin: &Admin,
    group: &str,
    members: std::ops::Range<usize>,
) -> BenchResult<Instant> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut b = lock(&shared.board);
    loop {
        if let Some(generation) = settled(&b, members.clone()) {
            let at = b.last_change.ok_or("no change published")?;
            drop(b);
            let d = admin.describe_consumer_group(group)?;
            if d.state == GroupState::Stable
                && d.generation == generation
                && d.members.len() == members.len()
            {
                return Ok(at);
            }
            b = lock(&shared.board);
        }
        if Instant::now() > deadline {
            return Err(format!("group {group} did not settle").into());
        }
        b = shared
            .changed
            .wait_timeout(b, Duration::from_millis(1))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[derive(Clone, Copy)]
struct SettleRun {
    ms: f64,
    revoked: usize,
    paused_ms: f64,
}

fn settle_run(log: &Log, group: &str, assignor: SharedAssignor) -> BenchResult<SettleRun> {
    let shared = Arc::new(Shared {
        board: Mutex::new(Board {
            members: vec![None; MEMBERS],
            ..Board::default()
        }),
        changed: Condvar::new(),
    });
    let stops: Vec<Arc<AtomicBool>> = (0..MEMBERS)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let close_started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut threads: Vec<JoinHandle<BenchResult<()>>> = Vec::new();
    for (member, stop) in stops.iter().enumerate() {
        let config = ConsumerConfig::default()
            .group_id(group)
            .enable_auto_commit(false)
            .heartbeat_interval_ms(HEARTBEAT_MS)
            .partition_assignment_strategy(vec![assignor.clone()]);
        let mut c: C = Consumer::new(log, config, BytesSerde, BytesSerde)?;
        c.subscribe(&["settle"])?;
        c.set_rebalance_listener(Listener {
            shared: shared.clone(),
            member,
        });
        let (shared, stop, close_started) = (shared.clone(), stop.clone(), close_started.clone());
        threads.push(std::thread::spawn(move || -> BenchResult<()> {
            while !stop.load(Ordering::SeqCst) {
                c.poll(Duration::from_millis(POLL_MS))?;
                shared.publish(member, &c);
            }
            *lock(&close_started) = Some(Instant::now());
            c.close()?;
            lock(&shared.board).members[member] = None;
            Ok(())
        }));
    }
    let admin = Admin::new(log);
    wait_settled(&shared, &admin, group, 0..MEMBERS)?;
    {
        let mut b = lock(&shared.board);
        b.counting = true;
    }
    // The last member leaves; the others keep polling.
    let leaving = MEMBERS - 1;
    stops[leaving].store(true, Ordering::SeqCst);
    let settled_at = wait_settled(&shared, &admin, group, 0..leaving)?;
    let started = lock(&close_started).ok_or("the member did not close")?;
    let run = {
        let b = lock(&shared.board);
        if !b.revoked_at.is_empty() {
            return Err(format!(
                "{} partitions revoked and never reassigned",
                b.revoked_at.len()
            )
            .into());
        }
        SettleRun {
            ms: settled_at.saturating_duration_since(started).as_secs_f64() * 1e3,
            revoked: b.revoked,
            paused_ms: b.paused.as_secs_f64() * 1e3,
        }
    };
    for s in &stops {
        s.store(true, Ordering::SeqCst);
    }
    for t in threads {
        t.join().map_err(|_| "member thread panicked")??;
    }
    Ok(run)
}

fn bench_settle() -> BenchResult<()> {
    let dir = bench_dir()?;
    let log = Log::builder(dir.path())
        .offsets_topic_num_partitions(4)
        .open()?;
    log.create_topic("settle", SETTLE_PARTITIONS, TopicConfig::default())?;
    println!();
    println!(
        "(a) settle after 1 of {MEMBERS} members closes: {SETTLE_PARTITIONS} partitions, one thread per member, poll {POLL_MS} ms, heartbeat.interval.ms {HEARTBEAT_MS}; {SETTLE_RUNS} runs"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>16} {:>20}",
        "assignor",
        "median ms",
        "min ms",
        "max ms",
        "revoked",
        "paused ms total",
        "paused ms/revoked"
    );
    let assignors: [(&str, SharedAssignor); 2] = [
        ("eager (range)", Arc::new(RangeAssignor)),
        (
            "cooperative (cooperative-sticky)",
            Arc::new(CooperativeStickyAssignor),
        ),
    ];
    for (name, assignor) in assignors {
        let mut runs = Vec::new();
        for i in 0..SETTLE_RUNS {
            let group = format!("settle-{}-{i}", assignor.name());
            runs.push(settle_run(&log, &group, assignor.clone())?);
        }
        let ms: Vec<f64> = runs.iter().map(|r| r.ms).collect();
        let revoked: Vec<usize> = runs.iter().map(|r| r.revoked).collect();
        let (rmin, rmax) = (
            revoked.iter().min().copied().unwrap_or(0),
            revoked.iter().max().copied().unwrap_or(0),
        );
        let revoked_text = if rmin == rmax {
            rmin.to_string()
        } else {
            format!("{rmin}-{rmax}")
        };
        let paused = median(runs.iter().map(|r| r.paused_ms).collect());
        let per = median(
            runs.iter()
                .map(|r| r.paused_ms / (r.revoked.max(1) as f64))
                .collect(),
        );
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>16.2} {:>20.2}",
            name,
            median(ms.clone()),
            ms.iter().copied().fold(f64::INFINITY, f64::min),
            ms.iter().copied().fold(0.0, f64::max),
            revoked_text,
            paused,
            per
        );
    }
    println!(
        "  revoked: partitions given up during the settle, the closing member's included; paused: sum over them of revoke -> assigned again (medians)"
    );
    drop(log);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (b) consumption throughput

/// Fills the data topic; returns the log bytes written.
fn fill(log: &Log) -> BenchResult<u64> {
    log.create_topic("data", DATA_PARTITIONS, TopicConfig::default())?;
    let per_partition = RECORDS / DATA_PARTITIONS as usize;
    let mut values = vec![[0u8; VALUE_LEN]; APPEND_BATCH];
    let mut bytes = 0;
    for p in 0..DATA_PARTITIONS {
        let partition = log.partition("data", p)?;
        let mut written = 0;
        while written < per_partition {
            let n = APPEND_BATCH.min(per_partition - written);
            for (i, v) in values.iter_mut().take(n).enumerate() {
                v[..8].copy_from_slice(&((written + i) as u64).to_le_bytes());
            }
            let records: Vec<Record<'_>> = values[..n]
                .iter()
                .map(|v| Record::new(None, Some(&v[..])))
                .collect();
            partition.append(&records)?;
            written += n;
        }
        bytes += partition.size_bytes()?;
    }
    Ok(bytes)
}

#[derive(Clone, Copy)]
struct Drain {
    secs: f64,
    /// Records returned more than once (a partition moved before its position was committed).
    duplicates: usize,
}

/// Drains the data topic with a fresh group of `members` threads.
fn drain_group(log: &Log, group: &str, members: usize, ends: &[i64]) -> BenchResult<Drain> {
    let next: Arc<Vec<AtomicI64>> = Arc::new(ends.iter().map(|_| AtomicI64::new(0)).collect());
    let remaining = Arc::new(AtomicUsize::new(ends.len()));
    let returned = Arc::new(AtomicUsize::new(0));
    let ends: Arc<Vec<i64>> = Arc::new(ends.to_vec());
    let start_line = Arc::new(Barrier::new(members + 1));
    // Set by the thread that sees the last partition reach its end.
    let finished: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut threads: Vec<JoinHandle<BenchResult<()>>> = Vec::new();
    for _ in 0..members {
        let config = ConsumerConfig::default()
            .group_id(group)
            .auto_offset_reset(AutoOffsetReset::Earliest);
        let mut c: C = Consumer::new(log, config, BytesSerde, BytesSerde)?;
        let (next, remaining, returned, ends, start_line, finished) = (
            next.clone(),
            remaining.clone(),
            returned.clone(),
            ends.clone(),
            start_line.clone(),
            finished.clone(),
        );
        threads.push(std::thread::spawn(move || -> BenchResult<()> {
            start_line.wait();
            c.subscribe(&["data"])?;
            let started = Instant::now();
            while remaining.load(Ordering::SeqCst) > 0 {
                let records = c.poll(Duration::from_millis(20))?;
                returned.fetch_add(records.count(), Ordering::Relaxed);
                for tp in records.partitions() {
                    let last = records.records(&tp).last().map_or(-1, |r| r.offset);
                    let p = tp.partition as usize;
                    let before = next[p].fetch_max(last + 1, Ordering::SeqCst);
                    if before < ends[p]
                        && last + 1 >= ends[p]
                        && remaining.fetch_sub(1, Ordering::SeqCst) == 1
                    {
                        *lock(&finished) = Some(Instant::now());
                    }
                }
                if started.elapsed() > Duration::from_secs(300) {
                    return Err("the group stalled".into());
                }
            }
            // The others see `remaining` reach 0 after their current poll; the clock stopped
            // at the last record already.
            drop(c);
            Ok(())
        }));
    }
    start_line.wait();
    let start = Instant::now();
    for t in threads {
        t.join().map_err(|_| "consumer thread panicked")??;
    }
    let end = lock(&finished).ok_or("no thread finished the topic")?;
    let secs = end.saturating_duration_since(start).as_secs_f64();
    let total: i64 = ends.iter().sum();
    Ok(Drain {
        secs,
        duplicates: returned
            .load(Ordering::SeqCst)
            .saturating_sub(total as usize),
    })
}

/// The same data read with `read_into` on one thread, counting records from batch headers.
fn drain_read_into(log: &Log, ends: &[i64]) -> BenchResult<f64> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut records = 0i64;
    for (p, end) in ends.iter().enumerate() {
        let partition = log.partition("data", p as u32)?;
        let mut offset = 0;
        while offset < *end {
            let fetch = partition.read_into(offset, 1 << 20, &mut buf)?;
            for b in fetch.batches() {
                records += i64::from(b.records_count());
            }
            offset = fetch.next_offset();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if records != ends.iter().sum::<i64>() {
        return Err(format!("read_into counted {records} records").into());
    }
    Ok(secs)
}

fn bench_throughput() -> BenchResult<()> {
    let dir = bench_dir()?;
    let log = Log::builder(dir.path())
        .offsets_topic_num_partitions(4)
        .open()?;
    let fill_start = Instant::now();
    let bytes = fill(&log)?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let ends: Vec<i64> = (0..DATA_PARTITIONS)
        .map(|p| log.partition("data", p).and_then(|p| p.high_watermark()))
        .collect::<Result<_, _>>()?;
    let total: i64 = ends.iter().sum();
    println!();
    println!(
        "(b) drain {total} records ({VALUE_LEN}-byte values, no keys; {:.1} MB of log) from {DATA_PARTITIONS} partitions; median of {THROUGHPUT_RUNS} runs",
        bytes as f64 / 1e6
    );
    println!(
        "  filled with Partition::append of {APPEND_BATCH}-record batches at {:.0} records/s",
        total as f64 / fill_secs
    );
    println!(
        "{:<40} {:>12} {:>10} {:>11}",
        "reader", "records/s", "MB/s", "duplicates"
    );
    let row = |name: &str, secs: &[f64], dups: usize| {
        let s = median(secs.to_vec());
        println!(
            "{:<40} {:>12.0} {:>10.1} {:>11}",
            name,
            total as f64 / s,
            bytes as f64 / 1e6 / s,
            dups
        );
    };
    for (name, members) in [
        ("consumer group of 1 (1 thread)", 1),
        ("consumer group of 4 (4 threads)", GROUP_MEMBERS),
    ] {
        let mut secs = Vec::new();
        let mut dups = 0;
        for i in 0..THROUGHPUT_RUNS {
            let d = drain_group(&log, &format!("drain-{members}-{i}"), members, &ends)?;
            secs.push(d.secs);
            dups = dups.max(d.duplicates);
        }
        row(name, &secs, dups);
    }
    let mut secs = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        secs.push(drain_read_into(&log, &ends)?);
    }
    row("limit: Partition::read_into (1 thread)", &secs, 0);
    println!(
        "  MB/s counts log bytes (batch framing included); duplicates: records returned more than once (the most in any run)"
    );
    drop(log);
    Ok(())
}

fn main() -> BenchResult<()> {
    let total = Instant::now();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("moldau groups: rebalance settle time and group consumption, in one process");
    println!(
        "  cpus: {}, cpu: {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    bench_settle()?;
    bench_throughput()?;
    println!("total bench time: {:.1} s", total.elapsed().as_secs_f64());
    Ok(())
}
