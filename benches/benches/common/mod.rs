//! What the streams benchmarks share: the like events (Zipf-distributed products, written
//! once to `likes`), their generated counts, and small helpers.
#![allow(dead_code, reason = "each bench uses a part")]

use std::time::Instant;

use core_log::{Log, Partition, Record, TopicConfig, partition_for_key};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const INPUT: &str = "likes";
pub const PARTITIONS: u32 = 8;
pub const KEYS: usize = 100_000;
pub const ZIPF_EXPONENT: f64 = 0.99;
pub const DEFAULT_EVENTS: usize = 10_000_000;
pub const DEFAULT_SAMPLES: usize = 3;
pub const APPEND_BATCH: usize = 1_000;
/// user id (u64 BE), timestamp (i64 BE), action (1: like).
pub const VALUE_LEN: usize = 17;
pub const SEED: u64 = 0x6d6f_6c64_6175;
pub const BASE_TS: i64 = 1_700_000_000_000;
/// Timestamps advance 1 ms every this many events.
pub const EVENTS_PER_MS: usize = 100;

pub fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

pub fn bench_dir() -> BenchResult<tempfile::TempDir> {
    let parent = std::env::var("MOLDAU_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
    Ok(tempfile::tempdir_in(parent)?)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) this process has used, all threads: Linux's
/// `/proc/self/stat`, in clock ticks of 1/100 s (`USER_HZ`).
pub fn cpu_secs() -> BenchResult<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = f.get(11).ok_or("no utime")?.parse::<u64>()?
        + f.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

pub fn product_key(i: usize) -> String {
    format!("p{i:06}")
}

/// The cumulative distribution of a Zipf law over ranks 1..=n: `cdf[k]` is the probability
/// of a rank at most `k + 1`.
pub fn zipf_cdf(n: usize, exponent: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += (k as f64).powf(-exponent);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

/// A product drawn from the Zipf law: index 0 is the most liked.
pub fn zipf_sample(cdf: &[f64], rng: &mut fastrand::Rng) -> usize {
    let u = rng.f64();
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

/// The input as written.
pub struct Input {
    pub events: usize,
    /// High watermark of each partition of `likes`.
    pub ends: Vec<i64>,
    /// Events per product.
    pub counts: Vec<u64>,
    pub bytes: u64,
    pub fill_secs: f64,
    /// The share of events on the busiest partition.
    pub busiest_partition: f64,
    /// The share of events of the most liked product.
    pub top_product: f64,
}

/// Writes the events. `span_ms`: `None`, timestamps advance 1 ms every `EVENTS_PER_MS`
/// events; `Some(span)`, they spread evenly over `span` ms with a jitter of up to a second
/// back (a separate generator: the products and users are the same either way).
pub fn fill(log: &Log, events: usize, span_ms: Option<i64>) -> BenchResult<Input> {
    let start = Instant::now();
    log.create_topic(INPUT, PARTITIONS, TopicConfig::default())?;
    let keys: Vec<String> = (0..KEYS).map(product_key).collect();
    let partition_of: Vec<u32> = keys
        .iter()
        .map(|k| partition_for_key(k.as_bytes(), PARTITIONS))
        .collect();
    let partitions: Vec<Partition> = (0..PARTITIONS)
        .map(|p| log.partition(INPUT, p))
        .collect::<Result<_, _>>()?;
    let cdf = zipf_cdf(KEYS, ZIPF_EXPONENT);
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut jitter = fastrand::Rng::with_seed(SEED ^ 1);
    let mut counts = vec![0u64; KEYS];
    type Pending = Vec<(usize, [u8; VALUE_LEN], i64)>;
    let mut pending: Vec<Pending> = (0..PARTITIONS)
        .map(|_| Vec::with_capacity(APPEND_BATCH))
        .collect();
    let append = |p: usize, batch: &mut Pending| -> BenchResult<()> {
        let records: Vec<Record<'_>> = batch
            .iter()
            .map(|(product, value, ts)| {
                Record::new(Some(keys[*product].as_bytes()), Some(&value[..])).timestamp(*ts)
            })
            .collect();
        partitions[p].append(&records)?;
        batch.clear();
        Ok(())
    };
    for i in 0..events {
        let product = zipf_sample(&cdf, &mut rng);
        let ts = match span_ms {
            None => BASE_TS + (i / EVENTS_PER_MS) as i64,
            Some(span) => {
                let even = (i as i128 * i128::from(span) / events as i128) as i64;
                BASE_TS + (even - jitter.i64(0..1_000)).max(0)
            }
        };
        let mut value = [0u8; VALUE_LEN];
        value[..8].copy_from_slice(&rng.u64(..10_000_000).to_be_bytes());
        value[8..16].copy_from_slice(&ts.to_be_bytes());
        value[16] = 1;
        counts[product] += 1;
        let p = partition_of[product] as usize;
        pending[p].push((product, value, ts));
        if pending[p].len() == APPEND_BATCH {
            append(p, &mut pending[p])?;
        }
    }
    for (p, batch) in pending.iter_mut().enumerate() {
        if !batch.is_empty() {
            append(p, batch)?;
        }
    }
    let mut ends = Vec::new();
    let mut bytes = 0;
    for p in &partitions {
        ends.push(p.high_watermark()?);
        bytes += p.size_bytes()?;
    }
    let total: i64 = ends.iter().sum();
    if total != events as i64 {
        return Err(format!("wrote {events} events, the partitions hold {total}").into());
    }
    Ok(Input {
        events,
        busiest_partition: ends.iter().copied().max().unwrap_or(0) as f64 / events as f64,
        top_product: counts.iter().copied().max().unwrap_or(0) as f64 / events as f64,
        ends,
        counts,
        bytes,
        fill_secs: start.elapsed().as_secs_f64(),
    })
}

/// Checks a product -> count map against the generated counts.
pub fn check_counts<'a>(
    what: &str,
    counts: impl Iterator<Item = (&'a [u8], u64)>,
    expected: &[u64],
) -> BenchResult<()> {
    let mut seen = 0usize;
    for (key, n) in counts {
        let index = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix('p'))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|&i| i < expected.len())
            .ok_or_else(|| format!("{what}: unexpected key {:?}", String::from_utf8_lossy(key)))?;
        if expected[index] != n {
            return Err(format!(
                "{what}: {} counted {n}, generated {}",
                product_key(index),
                expected[index]
            )
            .into());
        }
        seen += 1;
    }
    let want = expected.iter().filter(|&&n| n > 0).count();
    if seen != want {
        return Err(format!("{what}: {seen} products counted, {want} generated").into());
    }
    Ok(())
}

/// Waits until the group `app` has committed the end of every topic it reads, `input` (of
/// `partitions` partitions) among them; an error after `timeout`.
pub fn wait_caught_up(
    log: &Log,
    app: &str,
    input: &str,
    partitions: u32,
    timeout: std::time::Duration,
) -> BenchResult<()> {
    let admin = core_log::Admin::new(log);
    let started = Instant::now();
    loop {
        let lag = admin.consumer_group_lag(app).unwrap_or_default();
        let input_seen =
            lag.iter().filter(|r| r.partition.topic == input).count() == partitions as usize;
        if input_seen && lag.iter().all(|r| r.lag == Some(0)) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("the application did not catch up in {timeout:?}").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
