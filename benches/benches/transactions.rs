//! Transactions (issue 5's benchmark): what exactly-once costs a read-process-write copier.
//!
//! Both copiers read the same input (1 M records, 8-byte keys, 100-byte values, 2 partitions)
//! with the same consumer (group, `read_committed`, auto-commit off, `max.poll.records` = N)
//! and copy every record, same key and value, to a 2-partition output topic with a producer of
//! the same settings (`linger.ms` 5, default `batch.size`). Every N records:
//! - transactional: the records went out in a transaction (`transactional.id` set), the input
//!   offsets are sent in it (`send_offsets_to_transaction`), and it commits: exactly once;
//! - non-transactional: a plain idempotent producer, `flush`, then `commit_sync` of the input
//!   offsets: at least once.
//!
//! The clock runs from the first poll to the last commit; the figure is input records copied
//! per second, the median of 5 runs (the two copiers alternate, each run on a fresh output
//! topic and group). Both use `FlushPolicy::Never` (as Kafka's default: the page cache, no
//! fsync), so the difference is the protocol's work (partition registration, offsets in the
//! transaction, commit markers, read_committed bookkeeping), not disk flushes. After each run
//! the output is checked: exactly the input's record count in data batches, the group's
//! offsets at the end of the input.
//!
//! Target (issue 5): transactional / non-transactional >= 0.85 at 1,000 records per
//! transaction. `MOLDAU_BENCH_DIR` moves the data (e.g. to tmpfs). Run:
//! `cargo bench -p moldau-benches --bench transactions`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use core_log::serialization::BytesSerde;
use core_log::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, FlushPolicy, IsolationLevel, Log,
    OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord, Record, TopicConfig,
    TopicPartition,
};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
type C = Consumer<Vec<u8>, Vec<u8>>;
type P = Producer<[u8], [u8]>;

const INPUT_PARTITIONS: u32 = 2;
const OUTPUT_PARTITIONS: u32 = 2;
const RECORDS: usize = 1_000_000;
const KEY_LEN: usize = 8;
const VALUE_LEN: usize = 100;
const APPEND_BATCH: usize = 1_000;
const PER_TXN: [usize; 3] = [100, 1_000, 10_000];
const RUNS: usize = 5;
const LINGER_MS: u64 = 5;
/// Issue 5's target, at [`TARGET_AT`] records per transaction.
const TARGET_RATIO: f64 = 0.85;
const TARGET_AT: usize = 1_000;

fn bench_dir() -> BenchResult<tempfile::TempDir> {
    let parent = std::env::var("MOLDAU_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    Ok(tempfile::tempdir_in(parent)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) this process has used, all threads: a figure that other
/// processes on a shared machine disturb less than wall-clock time. Linux's
/// `/proc/self/stat`, in clock ticks of 1/100 s (`USER_HZ`).
fn cpu_secs() -> BenchResult<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = f.get(11).ok_or("no utime")?.parse::<u64>()?
        + f.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// What one copy measured.
#[derive(Clone, Copy)]
struct Copy {
    /// Input records per second of wall-clock time.
    rate: f64,
    /// CPU microseconds per record, over every thread (the producer's sender included).
    cpu_us: f64,
}

/// Fills the input topic; returns the log bytes written.
fn fill(log: &Log) -> BenchResult<u64> {
    log.create_topic("in", INPUT_PARTITIONS, TopicConfig::default())?;
    let per_partition = RECORDS / INPUT_PARTITIONS as usize;
    let mut keys = vec![[0u8; KEY_LEN]; APPEND_BATCH];
    let mut values = vec![[b'.'; VALUE_LEN]; APPEND_BATCH];
    let mut bytes = 0;
    for p in 0..INPUT_PARTITIONS {
        let partition = log.partition("in", p)?;
        let mut written = 0;
        while written < per_partition {
            let n = APPEND_BATCH.min(per_partition - written);
            for i in 0..n {
                let id = (p as u64) << 32 | (written + i) as u64;
                keys[i].copy_from_slice(&id.to_be_bytes());
                values[i][..8].copy_from_slice(&id.to_le_bytes());
            }
            let records: Vec<Record<'_>> = (0..n)
                .map(|i| Record::new(Some(&keys[i][..]), Some(&values[i][..])))
                .collect();
            partition.append(&records)?;
            written += n;
        }
        bytes += partition.size_bytes()?;
    }
    Ok(bytes)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Transactional,
    /// Idempotent producer, `flush` and `commit_sync` per N records.
    AtLeastOnce,
}

/// One copy of the whole input with N records per transaction (or per offset commit).
fn copy(log: &Log, mode: Mode, per_txn: usize, tag: &str, ends: &[i64]) -> BenchResult<Copy> {
    let out = format!("out-{tag}");
    log.create_topic(&out, OUTPUT_PARTITIONS, TopicConfig::default())?;
    let config = ConsumerConfig::default()
        .group_id(format!("copier-{tag}"))
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted)
        .max_poll_records(per_txn);
    let mut consumer: C = Consumer::new(log, config, BytesSerde, BytesSerde)?;
    consumer.subscribe(&["in"])?;
    let mut config = ProducerConfig::default().linger_ms(LINGER_MS);
    if mode == Mode::Transactional {
        config = config.transactional_id(format!("copier-{tag}"));
    }
    let producer: P = Producer::new(log, config, BytesSerde, BytesSerde)?;
    if mode == Mode::Transactional {
        producer.init_transactions()?;
    }
    let total: i64 = ends.iter().sum();

    let cpu_start = cpu_secs()?;
    let start = Instant::now();
    let mut copied = 0i64;
    // Input partition -> the offset after the last record sent since the last commit.
    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
    let mut in_batch = 0usize;
    let mut txn = None;
    while copied < total {
        let records = consumer.poll(Duration::from_millis(100))?;
        if records.is_empty() && start.elapsed() > Duration::from_secs(120) {
            return Err(format!("the copier stalled at {copied} of {total}").into());
        }
        for r in &records {
            if mode == Mode::Transactional && txn.is_none() {
                txn = Some(producer.begin_transaction()?);
            }
            let record = ProducerRecord::new(out.as_str())
                .key(r.key.as_deref().ok_or("no key")?)
                .value(r.value.as_deref().ok_or("no value")?);
            // Not waited for one by one: the commit (or the flush) reports a failed record.
            let _delivery = match &txn {
                Some(t) => t.send(record)?,
                None => producer.send(record)?,
            };
            next.insert(r.partition, r.offset + 1);
            in_batch += 1;
            copied += 1;
            if in_batch == per_txn || copied == total {
                let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = next
                    .iter()
                    .map(|(&p, &o)| (TopicPartition::new("in", p), OffsetAndMetadata::new(o)))
                    .collect();
                match txn.take() {
                    Some(t) => {
                        t.send_offsets_to_transaction(&offsets, &consumer.group_metadata()?)?;
                        t.commit()?;
                    }
                    None => {
                        producer.flush();
                        consumer.commit_sync_offsets(offsets)?;
                    }
                }
                next.clear();
                in_batch = 0;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs()? - cpu_start;
    drop(txn);
    producer.close();
    consumer.close()?;
    verify(log, &out, &format!("copier-{tag}"), ends)?;
    log.delete_topic(&out)?;
    Ok(Copy {
        rate: total as f64 / secs,
        cpu_us: cpu * 1e6 / total as f64,
    })
}

/// The output holds exactly the input's number of records (data batches; aborted ones would
/// count too, and there are none), and the group's offsets are at the input's end.
fn verify(log: &Log, out: &str, group: &str, ends: &[i64]) -> BenchResult<()> {
    let mut buf = Vec::new();
    let mut records = 0i64;
    for p in 0..OUTPUT_PARTITIONS {
        let partition = log.partition(out, p)?;
        let (end, lso) = (partition.high_watermark()?, partition.last_stable_offset()?);
        if lso != end {
            return Err(format!("{out}-{p}: a transaction is still open").into());
        }
        let mut offset = 0;
        while offset < end {
            let fetch = partition.read_into(offset, 1 << 20, &mut buf)?;
            for b in fetch.batches().filter(|b| !b.is_control()) {
                records += i64::from(b.records_count());
            }
            offset = fetch.next_offset();
        }
    }
    let total: i64 = ends.iter().sum();
    if records != total {
        return Err(format!("{out} holds {records} records, not {total}").into());
    }
    let offsets = Admin::new(log).list_consumer_group_offsets(group)?;
    for (p, end) in ends.iter().enumerate() {
        let committed = offsets
            .get(&TopicPartition::new("in", p as u32))
            .map(|o| o.offset);
        if committed != Some(*end) {
            return Err(format!("{group} committed {committed:?} for in-{p}, not {end}").into());
        }
    }
    Ok(())
}

fn main() -> BenchResult<()> {
    let total_time = Instant::now();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "moldau transactions: a read-process-write copier, exactly once against at least once"
    );
    println!(
        "  cpus: {}, cpu: {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let dir = bench_dir()?;
    let log = Log::builder(dir.path())
        .flush_policy(FlushPolicy::Never)
        .offsets_topic_num_partitions(4)
        .transaction_state_log_num_partitions(4)
        .open()?;
    let fill_start = Instant::now();
    let bytes = fill(&log)?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let ends: Vec<i64> = (0..INPUT_PARTITIONS)
        .map(|p| log.partition("in", p).and_then(|p| p.high_watermark()))
        .collect::<Result<_, _>>()?;
    let total: i64 = ends.iter().sum();
    println!();
    println!(
        "copy {total} records ({KEY_LEN}-byte keys, {VALUE_LEN}-byte values; {:.1} MB of log) from {INPUT_PARTITIONS} to {OUTPUT_PARTITIONS} partitions; {RUNS} runs each",
        bytes as f64 / 1e6
    );
    println!(
        "  FlushPolicy::Never for both (page cache, no fsync); linger.ms {LINGER_MS}; max.poll.records = records per transaction"
    );
    println!(
        "  input filled with Partition::append of {APPEND_BATCH}-record batches at {:.0} records/s",
        total as f64 / fill_secs
    );
    println!(
        "{:>11} {:>28} {:>28} {:>6} {:>20} {:>9}",
        "records/txn",
        "exactly once rec/s",
        "at least once rec/s",
        "ratio",
        "CPU us/record EO/ALO",
        "CPU ratio"
    );
    let mut ratio_at_target = None;
    for &n in &PER_TXN {
        let (mut txn, mut plain) = (Vec::new(), Vec::new());
        // Alternating, so that a disturbance of the shared machine hits both alike.
        for run in 0..RUNS {
            let tag = format!("{n}-{run}");
            txn.push(copy(
                &log,
                Mode::Transactional,
                n,
                &format!("txn-{tag}"),
                &ends,
            )?);
            plain.push(copy(
                &log,
                Mode::AtLeastOnce,
                n,
                &format!("plain-{tag}"),
                &ends,
            )?);
        }
        let spread = |v: &[Copy]| {
            let rates: Vec<f64> = v.iter().map(|c| c.rate).collect();
            format!(
                "{:.0} ({:.0}-{:.0})",
                median(rates.clone()),
                rates.iter().copied().fold(f64::INFINITY, f64::min),
                rates.iter().copied().fold(0.0, f64::max)
            )
        };
        let rate = |v: &[Copy]| median(v.iter().map(|c| c.rate).collect());
        let cpu = |v: &[Copy]| median(v.iter().map(|c| c.cpu_us).collect());
        let ratio = rate(&txn) / rate(&plain);
        if n == TARGET_AT {
            ratio_at_target = Some(ratio);
        }
        println!(
            "{:>11} {:>28} {:>28} {:>6.2} {:>20} {:>9.2}",
            n,
            spread(&txn),
            spread(&plain),
            ratio,
            format!("{:.2} / {:.2}", cpu(&txn), cpu(&plain)),
            cpu(&plain) / cpu(&txn)
        );
    }
    println!(
        "  rec/s: median (min-max) of {RUNS} runs; ratio: exactly once / at least once, of the medians"
    );
    println!(
        "  CPU us/record: all threads' CPU time per input record (median); CPU ratio: at least once / exactly once"
    );
    println!(
        "  exactly once: transactional producer, offsets sent in the transaction, commit every N records"
    );
    println!(
        "  at least once: idempotent producer, flush and commit_sync of the offsets every N records"
    );
    let ratio = ratio_at_target.ok_or("no run at the target's records per transaction")?;
    println!(
        "target: ratio >= {TARGET_RATIO} at {TARGET_AT} records per transaction: {:.2}, {}",
        ratio,
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(log);
    println!(
        "total bench time: {:.1} s",
        total_time.elapsed().as_secs_f64()
    );
    Ok(())
}
