//! One producer to one consumer through the log, in one process (issue 3's benchmark).
//!
//! 16-byte keys, 100-byte values (an 8-byte send time, then JSON-like text naming a user and a
//! product, from a pool of 1,024), 8 partitions. For each setting (acks, linger.ms, fsync,
//! compression.type) it measures:
//! - throughput: the producer sends as fast as it can while the consumer polls; printed as
//!   produced records/s (sends until `flush` returns), consumed records/s, and end to end
//!   (every record produced and consumed, per second of the whole run);
//! - latency: the producer paced at half the measured end-to-end rate; each value carries its
//!   send instant and the consumer records `poll time - send time` in an HDR histogram;
//!   printed as p50/p99/p99.9;
//! - stored bytes per record: the partitions' size over the records, batch headers included.
//!
//! Each figure is the median of several runs. Run: `cargo bench -p moldau-benches --bench clients`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use core_log::serialization::BytesSerde;
use core_log::{
    Acks, AutoOffsetReset, Compression, Consumer, ConsumerConfig, FlushPolicy, Log, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};
use hdrhistogram::Histogram;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PARTITIONS: u32 = 8;
const KEYS: usize = 100_000;
const VALUE_LEN: usize = 100;
const RUNS: usize = 3;

struct Setting {
    name: &'static str,
    acks: Acks,
    linger_ms: u64,
    fsync_every_append: bool,
    compression: Compression,
    /// Records in a throughput run.
    records: usize,
    /// Length of a paced latency run.
    latency_secs: f64,
}

#[derive(Clone, Copy, Default)]
struct Throughput {
    produce: f64,
    consume: f64,
    end_to_end: f64,
    stored_bytes_per_record: f64,
}

#[derive(Clone, Copy, Default)]
struct Latency {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn keys() -> Vec<[u8; 16]> {
    (0..KEYS)
        .map(|i| {
            let mut k = [0u8; 16];
            k.copy_from_slice(format!("product-{i:08}").as_bytes());
            k
        })
        .collect()
}

/// The values' text after the send time: what a like event looks like.
fn values() -> Vec<[u8; VALUE_LEN]> {
    (0..1_024)
        .map(|i| {
            let text = format!(
                "{{\"user\":\"user-{:06}\",\"product\":\"product-{:08}\",\"action\":\"like\",\"ts\":{}}}",
                (i * 7_919) % 1_000_000,
                (i * 104_729) % KEYS,
                1_700_000_000_000u64 + i as u64 * 37
            );
            let mut v = [b' '; VALUE_LEN];
            let n = text.len().min(VALUE_LEN - 8);
            v[8..8 + n].copy_from_slice(&text.as_bytes()[..n]);
            v
        })
        .collect()
}

/// Runs one producer thread and one consumer (this thread) over a fresh log. With `rate`, the
/// producer is paced to that many records/s; the consumer records latencies then.
fn run(
    s: &Setting,
    keys: &Arc<Vec<[u8; 16]>>,
    records: usize,
    rate: Option<f64>,
) -> BenchResult<(Throughput, Histogram<u64>)> {
    // MOLDAU_BENCH_DIR moves the data (e.g. to tmpfs, to tell disk writeback stalls apart).
    let parent = std::env::var("MOLDAU_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    let dir = tempfile::tempdir_in(parent)?;
    let log = Log::builder(dir.path()).open()?;
    let mut config = TopicConfig::default();
    if s.fsync_every_append {
        config = config.flush_policy(FlushPolicy::EveryAppend);
    }
    log.create_topic("likes", PARTITIONS, config)?;
    let producer_config = ProducerConfig::default()
        .acks(s.acks)
        .enable_idempotence(s.acks == Acks::All)
        .linger_ms(s.linger_ms)
        .compression_type(s.compression);
    let producer: Producer<[u8], [u8]> =
        Producer::new(&log, producer_config, BytesSerde, BytesSerde)?;
    let mut consumer: Consumer<Vec<u8>, Vec<u8>> = Consumer::new(
        &log,
        ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest),
        BytesSerde,
        BytesSerde,
    )?;
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("likes", p))
        .collect();
    consumer.assign(&tps)?;

    let base = Instant::now();
    let ready = Arc::new(Barrier::new(2));
    let failed = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (keys, ready, failed) = (keys.clone(), ready.clone(), failed.clone());
        std::thread::spawn(move || -> BenchResult<f64> {
            let values = values();
            ready.wait();
            let start = Instant::now();
            for i in 0..records {
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                let sent = base.elapsed().as_nanos() as u64;
                let mut value = values[i % values.len()];
                value[..8].copy_from_slice(&sent.to_le_bytes());
                let key = &keys[i % KEYS];
                let record = ProducerRecord::new("likes").key(&key[..]).value(&value[..]);
                // The future is not awaited: delivery is checked by the consumer, and a
                // failed append fails the run below.
                if let Err(e) = producer.send(record) {
                    failed.store(true, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
            producer.flush();
            let secs = start.elapsed().as_secs_f64();
            producer.close();
            Ok(secs)
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    ready.wait();
    let start = Instant::now();
    let mut consumed = 0usize;
    while consumed < records {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let batch = consumer.poll(Duration::from_millis(200))?;
        let now = base.elapsed().as_nanos() as u64;
        for r in &batch {
            let v = r.value.as_deref().ok_or("record without value")?;
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&v[..8]);
            hist.record((now.saturating_sub(u64::from_le_bytes(sent))).max(1))?;
            consumed += 1;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err("consumer stalled".into());
        }
    }
    let consume_secs = start.elapsed().as_secs_f64();
    let produce_secs = producer_thread
        .join()
        .map_err(|_| "producer thread panicked")??;
    if consumed != records {
        return Err(format!("consumed {consumed} of {records} records").into());
    }
    let total = consume_secs.max(produce_secs);
    let mut stored = 0u64;
    for p in 0..PARTITIONS {
        stored += log.partition("likes", p)?.size_bytes()?;
    }
    drop(consumer);
    log.close()?;
    Ok((
        Throughput {
            produce: records as f64 / produce_secs,
            consume: records as f64 / consume_secs,
            end_to_end: records as f64 / total,
            stored_bytes_per_record: stored as f64 / records as f64,
        },
        hist,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    println!("moldau clients: one producer -> log -> one consumer, in one process");
    println!(
        "  cpus: {}, cpu: {cpu}; 16-byte keys ({KEYS} distinct), {VALUE_LEN}-byte values, {PARTITIONS} partitions; median of {RUNS} runs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let settings = [
        Setting {
            name: "acks=1, linger.ms=0",
            acks: Acks::One,
            linger_ms: 0,
            fsync_every_append: false,
            compression: Compression::None,
            records: 2_000_000,
            latency_secs: 3.0,
        },
        Setting {
            name: "acks=1, linger.ms=5",
            acks: Acks::One,
            linger_ms: 5,
            fsync_every_append: false,
            compression: Compression::None,
            records: 2_000_000,
            latency_secs: 3.0,
        },
        Setting {
            name: "acks=all, fsync every append",
            acks: Acks::All,
            linger_ms: 5,
            fsync_every_append: true,
            compression: Compression::None,
            records: 200_000,
            latency_secs: 3.0,
        },
    ]
    .into_iter()
    .chain(
        [
            ("acks=1, linger.ms=5, gzip", Compression::Gzip),
            ("acks=1, linger.ms=5, snappy", Compression::Snappy),
            ("acks=1, linger.ms=5, lz4", Compression::Lz4),
            ("acks=1, linger.ms=5, zstd", Compression::Zstd),
        ]
        .map(|(name, compression)| Setting {
            name,
            acks: Acks::One,
            linger_ms: 5,
            fsync_every_append: false,
            compression,
            records: 1_000_000,
            latency_secs: 2.0,
        }),
    );
    let keys = Arc::new(keys());
    println!();
    println!(
        "{:<30} {:>12} {:>12} {:>12} {:>9} | {:>10} {:>8} {:>8} {:>8} {:>8}",
        "setting",
        "produce/s",
        "consume/s",
        "end-to-end/s",
        "bytes/rec",
        "paced at/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for s in settings {
        let s = &s;
        let mut tputs = Vec::new();
        for _ in 0..RUNS {
            tputs.push(run(s, &keys, s.records, None)?.0);
        }
        let t = Throughput {
            produce: median(tputs.iter().map(|t| t.produce).collect()),
            consume: median(tputs.iter().map(|t| t.consume).collect()),
            end_to_end: median(tputs.iter().map(|t| t.end_to_end).collect()),
            stored_bytes_per_record: median(
                tputs.iter().map(|t| t.stored_bytes_per_record).collect(),
            ),
        };
        let rate = t.end_to_end / 2.0;
        let mut lats = Vec::new();
        for _ in 0..RUNS {
            let n = (rate * s.latency_secs) as usize;
            let (_, h) = run(s, &keys, n, Some(rate))?;
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
            lats.push(Latency {
                rate,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                max_ms: h.max() as f64 / 1e6,
            });
        }
        let l = Latency {
            rate,
            p50_ms: median(lats.iter().map(|l| l.p50_ms).collect()),
            p99_ms: median(lats.iter().map(|l| l.p99_ms).collect()),
            p999_ms: median(lats.iter().map(|l| l.p999_ms).collect()),
            max_ms: median(lats.iter().map(|l| l.max_ms).collect()),
        };
        println!(
            "{:<30} {:>12.0} {:>12.0} {:>12.0} {:>9.1} | {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            s.name,
            t.produce,
            t.consume,
            t.end_to_end,
            t.stored_bytes_per_record,
            l.rate,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms
        );
        if s.acks == Acks::One && s.linger_ms == 0 && s.compression == Compression::None {
            println!(
                "  target: >= 2,000,000 records/s produced and consumed: {:.0} ({}); p99 <= 5 ms at half that rate: {:.2} ms ({})",
                t.end_to_end,
                if t.end_to_end >= 2e6 {
                    "meets"
                } else {
                    "MISSES"
                },
                l.p99_ms,
                if l.p99_ms <= 5.0 { "meets" } else { "MISSES" }
            );
        }
    }
    println!("total bench time: {:.1} s", total.elapsed().as_secs_f64());
    Ok(())
}
