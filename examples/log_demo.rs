//! A tour of the embedded log, shaped like the like-count scenario that will become the
//! flagship once the streams crate lands.
//!
//! Users like (`+1`) and unlike (`-1`) products. Events are keyed by product id and appended
//! to an 8-partition topic in batches; the log is closed, reopened, and read back from the
//! start, and the per-product totals recomputed from the log must equal the totals the
//! generator counted on its own. Any mismatch exits non-zero.
//!
//! ```text
//! cargo run --release -p moldau-examples --bin log-demo -- [--events N] [--dir PATH]
//! ```

use std::collections::HashMap;
use std::time::Instant;

use core_log::codec::BatchBuilder;
use core_log::{FlushPolicy, Log, TopicConfig};

const PARTITIONS: u32 = 8;
const PRODUCTS: u64 = 10_000;
const BATCH_RECORDS: usize = 200;

/// A small deterministic generator (xorshift64*), so runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The log alone: produces like events into partitions, then reads them back and counts.
#[derive(clap::Parser)]
#[command(name = "log-demo", version)]
struct Args {
    /// Events to append.
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
    /// Data directory (default: a new one in the temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let events = args.events;
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("moldau-log-demo-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "log demo: {events} like/unlike events over {PRODUCTS} products, {PARTITIONS} partitions, data in {}",
        dir.display()
    );

    // 1. Produce: batches per partition, as a producer's accumulator would hand them over.
    let log = Log::builder(&dir).flush_policy(FlushPolicy::Never).open()?;
    log.create_topic(
        "likes",
        PARTITIONS,
        TopicConfig::default().segment_bytes(64 << 20),
    )?;
    let partitions: Vec<_> = (0..PARTITIONS)
        .map(|p| log.partition("likes", p))
        .collect::<Result<_, _>>()?;
    let mut expected: HashMap<u64, i64> = HashMap::new();
    let mut pending: Vec<Vec<(u64, i64, i64)>> = vec![Vec::new(); PARTITIONS as usize];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let now_ms = 1_700_000_000_000i64;
    let mut bytes_written = 0u64;
    let mut flush = |p: usize, events: &mut Vec<(u64, i64, i64)>| -> Result<(), core_log::Error> {
        let mut b = BatchBuilder::new(Vec::new());
        for (product, delta, ts) in events.drain(..) {
            let key = format!("product-{product}");
            let value = format!("{{\"user\":{},\"delta\":{delta}}}", product * 7 % 1000);
            b.append(ts, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
        }
        let mut bytes = b.finish();
        bytes_written += bytes.len() as u64;
        partitions[p].append_batches(&mut bytes)?;
        Ok(())
    };
    for i in 0..events {
        // Skewed: a quarter of the events go to 10 hot products.
        let product = if rng.next().is_multiple_of(4) {
            rng.next() % 10
        } else {
            rng.next() % PRODUCTS
        };
        let delta = if rng.next().is_multiple_of(5) { -1 } else { 1 };
        *expected.entry(product).or_default() += delta;
        let p = (product % u64::from(PARTITIONS)) as usize;
        pending[p].push((product, delta, now_ms + i as i64 / 1000));
        if pending[p].len() == BATCH_RECORDS {
            let mut batch = std::mem::take(&mut pending[p]);
            flush(p, &mut batch)?;
        }
    }
    for (p, batch) in pending.iter_mut().enumerate() {
        if !batch.is_empty() {
            flush(p, batch)?;
        }
    }
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "appended: {events} events, {:.1} MB in {produce_secs:.2}s ({:.0} events/s, {:.0} MB/s)",
        bytes_written as f64 / 1e6,
        events as f64 / produce_secs,
        bytes_written as f64 / 1e6 / produce_secs
    );
    drop(partitions);
    log.close()?;

    // 2. Reopen (a clean shutdown: no recovery scan) and consume everything from the start.
    let started = Instant::now();
    let log = Log::open(&dir)?;
    let mut counted: HashMap<u64, i64> = HashMap::new();
    let mut consumed = 0usize;
    for p in 0..PARTITIONS {
        let part = log.partition("likes", p)?;
        let mut offset = part.log_start_offset()?;
        let end = part.log_end_offset()?;
        while offset < end {
            let fetch = part.read(offset, 1 << 20)?;
            for r in fetch.records() {
                let key = std::str::from_utf8(r.key.unwrap_or_default())?;
                let product: u64 = key.trim_start_matches("product-").parse()?;
                let value = std::str::from_utf8(r.value.unwrap_or_default())?;
                let delta: i64 = if value.contains("\"delta\":-1") {
                    -1
                } else {
                    1
                };
                *counted.entry(product).or_default() += delta;
                consumed += 1;
            }
            offset = fetch.next_offset();
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    println!(
        "consumed: {consumed} events in {consume_secs:.2}s ({:.0} events/s)",
        consumed as f64 / consume_secs
    );

    // 3. Time lookup: the first event at or after a timestamp, per partition 0.
    let mid = now_ms + (events as i64 / 1000) / 2;
    if let Some((offset, ts)) = log.partition("likes", 0)?.offset_for_timestamp(mid)? {
        println!("offset_for_timestamp({mid}) on likes-0: offset {offset} (timestamp {ts})");
    }

    let mismatches = expected
        .iter()
        .filter(|(k, v)| counted.get(k) != Some(v))
        .count()
        + counted.keys().filter(|k| !expected.contains_key(k)).count();
    log.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "verified: {} products, {consumed} events, {mismatches} mismatches",
        expected.len()
    );
    if mismatches != 0 || consumed != events {
        std::process::exit(1);
    }
    Ok(())
}
