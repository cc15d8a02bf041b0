//! Like-count: users like and unlike products; the application keeps the current number of
//! likes per product, exactly right: a like followed by an unlike by the same user leaves the
//! count where it was, and a repeated like by the same user counts once.
//!
//! ```text
//!  generator ──▶ like-events (keyed by product) ──select_key (user, product)──▶ repartition
//!     ──▶ table latest-action (user, product) -> last event ──filter like──▶ group_by product
//!     ──▶ repartition ──▶ count with adder/subtractor ──▶ like-counts (product -> likes)
//!     ──group_by one key──▶ repartition ──▶ ranking ──▶ top-products (the 10 most liked)
//!  like-events ──filter like──▶ tumbling minute, grace 10 s, emit final ──▶ likes-per-minute
//! ```
//!
//! Exactly-once by default. A load generator appends events (Zipf-skewed over products) while the application, on the
//! embedded log in a local directory, processes them with `--threads` stream threads. At the
//! end the program compares every product's final count in `like-counts` with an independent
//! count of the generated events and exits non-zero on any mismatch.
//!
//! ```text
//! cargo run --release -p moldau-examples --bin like-count -- [--events N] [--products N]
//!     [--users N] [--skew S] [--unlike-ratio R] [--rate EVENTS_PER_S] [--threads N]
//!     [--dir PATH] [--guarantee exactly_once_v2|at_least_once]        (--help for more)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use core_log::codec::BatchBuilder;
use core_log::{Admin, FlushPolicy, IsolationLevel, Log, TopicConfig};
use moldau_examples::{
    Action, GRACE_MS, INPUT, LikeEvent, MINUTE_MS, OUTPUT, PER_MINUTE, TOP_N, TOP_PRODUCTS,
    expected_top, topology,
};
use streams::{Streams, StreamsConfig};

const PARTITIONS: u32 = 8;
const APP: &str = "like-count";

/// Like-count on the embedded log: generates like and unlike events, counts them with a
/// streams application, and checks every count against the events.
#[derive(clap::Parser)]
#[command(name = "like-count", version)]
struct Options {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct products (Zipf-skewed).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    products: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Zipf exponent of the products' popularity.
    #[arg(long, default_value_t = 1.0)]
    skew: f64,
    /// Share of events that are unlikes, within 0..=1.
    #[arg(long, default_value_t = 0.3, value_parser = unit_interval)]
    unlike_ratio: f64,
    /// Events per second the generator appends; 0 appends as fast as it can.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stream threads (`num.stream.threads`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,
    /// Processing guarantee (`processing.guarantee`).
    #[arg(long, value_enum, default_value_t = Guarantee::ExactlyOnceV2)]
    guarantee: Guarantee,
    /// Data directory (default: a new one in the temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Kafka's `processing.guarantee` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Guarantee {
    #[value(name = "exactly_once_v2")]
    ExactlyOnceV2,
    #[value(name = "at_least_once")]
    AtLeastOnce,
}

fn unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=1"))
    }
}

/// xorshift64*: small, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf over `n` items by inverse CDF.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|c| *c /= sum);
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1) as u64
    }
}

/// Appends the events in batches per partition at `rate` events/s (0: as fast as possible),
/// and returns the expected count per product.
/// What the generator counted on its own: likes per product now, and likes per (product,
/// minute) for the minutes each partition's stream time has closed.
struct Expected {
    counts: HashMap<u64, i64>,
    per_minute: HashMap<(u64, i64), i64>,
}

fn generate(log: &Log, o: &Options) -> Result<Expected, core_log::Error> {
    let zipf = Zipf::new(o.products, o.skew);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut latest: HashMap<(u64, u64), Action> = HashMap::new();
    let mut pending: Vec<BatchBuilder> = (0..PARTITIONS)
        .map(|_| BatchBuilder::new(Vec::new()))
        .collect();
    let mut counts = vec![0usize; PARTITIONS as usize];
    let partitions: Vec<_> = (0..PARTITIONS)
        .map(|p| log.partition(INPUT, p))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut value = Vec::new();
    let t0 = 1_700_000_000_000i64;
    let mut likes_per_minute: HashMap<(u64, i64), i64> = HashMap::new();
    let mut stream_time = vec![i64::MIN; PARTITIONS as usize];
    for i in 0..o.events {
        let product = zipf.sample(&mut rng);
        let user = rng.next() % o.users;
        // A user's first event for a product is a like; later ones unlike with unlike-ratio.
        let action = match latest.get(&(user, product)) {
            Some(_) if rng.unit() < o.unlike_ratio => Action::Unlike,
            _ => Action::Like,
        };
        latest.insert((user, product), action);
        let event = LikeEvent {
            user_id: user,
            product_id: product,
            action,
            ts: t0 + i as i64,
        };
        value.clear();
        bincode::serialize_into(&mut value, &event).map_err(|e| core_log::Error::Io {
            path: PathBuf::from(INPUT),
            source: std::io::Error::other(e.to_string()),
        })?;
        let key = product.to_be_bytes();
        let p = core_log::partition_for_key(&key, PARTITIONS) as usize;
        stream_time[p] = stream_time[p].max(event.ts);
        if action == Action::Like {
            let start = event.ts - event.ts.rem_euclid(MINUTE_MS);
            *likes_per_minute.entry((product, start)).or_default() += 1;
        }
        pending[p].append(event.ts, Some(&key), Some(&value), &[]);
        counts[p] += 1;
        if counts[p] == 500 {
            let mut bytes =
                std::mem::replace(&mut pending[p], BatchBuilder::new(Vec::new())).finish();
            partitions[p].append_batches(&mut bytes)?;
            counts[p] = 0;
        }
        if o.rate > 0 && i % 1000 == 0 {
            let due = Duration::from_secs_f64(i as f64 / o.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    for (p, b) in pending.into_iter().enumerate() {
        if counts[p] > 0 {
            partitions[p].append_batches(&mut b.finish())?;
        }
    }
    let mut counts: HashMap<u64, i64> = HashMap::new();
    for ((_, product), action) in latest {
        if action == Action::Like {
            *counts.entry(product).or_default() += 1;
        }
    }
    // A window has closed once its partition's stream time reached its end plus grace.
    likes_per_minute.retain(|&(product, start), _| {
        let p = core_log::partition_for_key(&product.to_be_bytes(), PARTITIONS) as usize;
        start + MINUTE_MS + GRACE_MS <= stream_time[p]
    });
    Ok(Expected {
        counts,
        per_minute: likes_per_minute,
    })
}

/// Records the application has not processed yet, over every topic it reads.
fn lag(admin: &Admin) -> Option<(i64, i64)> {
    let rows = admin.consumer_group_lag(APP).ok()?;
    let input: i64 = rows
        .iter()
        .filter(|r| r.partition.topic == INPUT)
        .map(|r| r.lag.unwrap_or(r.log_end_offset))
        .sum();
    let all: i64 = rows.iter().map(|r| r.lag.unwrap_or(r.log_end_offset)).sum();
    Some((input, all))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = <Options as clap::Parser>::parse();
    let dir = o.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("moldau-like-count-{}", std::process::id()))
    });
    let threads = o.threads as usize;
    let at_least_once = o.guarantee == Guarantee::AtLeastOnce;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "like-count: {} events, {} products (zipf {}), {} users, unlike ratio {}, {} stream threads, data in {}",
        o.events,
        o.products,
        o.skew,
        o.users,
        o.unlike_ratio,
        threads,
        dir.display()
    );
    let log = Log::builder(dir.join("log"))
        .flush_policy(FlushPolicy::Never)
        .open()?;
    log.create_topic(
        INPUT,
        PARTITIONS,
        TopicConfig::default().segment_bytes(64 << 20),
    )?;
    log.create_topic(OUTPUT, PARTITIONS, TopicConfig::default())?;
    log.create_topic(PER_MINUTE, PARTITIONS, TopicConfig::default())?;
    log.create_topic(TOP_PRODUCTS, 1, TopicConfig::default())?;

    let mut config = StreamsConfig::new(APP)
        .num_stream_threads(threads)
        .state_dir(dir.join("state"));
    config = if at_least_once {
        config.commit_interval_ms(200)
    } else {
        config.exactly_once()
    };
    let app = Streams::new(topology()?, &log, config)?;
    app.start()?;

    let started = Instant::now();
    let generator = {
        let log = log.clone();
        let o = Options {
            dir: Some(dir.clone()),
            ..o
        };
        std::thread::spawn(move || generate(&log, &o).map(|e| (e, o)))
    };
    let admin = Admin::new(&log);
    let mut last_print = Instant::now();
    let (expected, o): (Expected, Options) = loop {
        std::thread::sleep(Duration::from_millis(100));
        if generator.is_finished() {
            break generator.join().map_err(|_| "the generator panicked")??;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            progress(&log, &admin, started);
        }
    };
    let produced_in = started.elapsed();
    // Wait until every topic the application reads is committed to its end.
    let mut zero_lag_seen = 0;
    while zero_lag_seen < 3 {
        std::thread::sleep(Duration::from_millis(100));
        zero_lag_seen = match lag(&admin) {
            Some((_, 0)) => zero_lag_seen + 1,
            _ => 0,
        };
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            progress(&log, &admin, started);
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the application did not catch up within 10 minutes".into());
        }
    }
    let elapsed = started.elapsed();
    app.close()?;
    println!(
        "processed: {} events in {:.2}s ({:.0} events/s end to end; generator done after {:.2}s); {} changelog records restored",
        o.events,
        elapsed.as_secs_f64(),
        o.events as f64 / elapsed.as_secs_f64(),
        produced_in.as_secs_f64(),
        app.metrics().restored_records
    );

    // Verify: the last count per product in the output against the independent count, and
    // each closed minute's likes, emitted once, against the generator's.
    let mut counted: HashMap<u64, i64> = HashMap::new();
    read_committed(&log, OUTPUT, |k, v| {
        let product = u64::from_be_bytes(k.try_into().map_err(|_| "an 8-byte product key")?);
        counted.insert(
            product,
            i64::from_be_bytes(v.try_into().map_err(|_| "an 8-byte count")?),
        );
        Ok(())
    })?;
    let mut mismatches = 0;
    let mut report = |what: String| {
        if mismatches < 10 {
            eprintln!("mismatch: {what}");
        }
        mismatches += 1;
    };
    for product in 0..o.products {
        let want = expected.counts.get(&product).copied().unwrap_or(0);
        let got = counted.get(&product).copied().unwrap_or(0);
        if want != got {
            report(format!("product {product}: counted {got}, expected {want}"));
        }
    }
    let mut windows: HashMap<(u64, i64), Vec<i64>> = HashMap::new();
    read_committed(&log, PER_MINUTE, |k, v| {
        let k: [u8; 16] = k.try_into().map_err(|_| "a 16-byte windowed key")?;
        let product = u64::from_be_bytes(k[..8].try_into()?);
        let start = i64::from_be_bytes(k[8..].try_into()?);
        let count = i64::from_be_bytes(v.try_into().map_err(|_| "an 8-byte count")?);
        windows.entry((product, start)).or_default().push(count);
        Ok(())
    })?;
    for (window, want) in &expected.per_minute {
        match windows.get(window).map(Vec::as_slice) {
            Some([got]) if got == want => {}
            got => report(format!(
                "minute {window:?}: emitted {got:?}, expected [{want}] once"
            )),
        }
    }
    for window in windows.keys() {
        if !expected.per_minute.contains_key(window) {
            report(format!("minute {window:?} emitted before it closed"));
        }
    }
    let mut top: Option<Vec<(u64, i64)>> = None;
    read_committed(&log, TOP_PRODUCTS, |_, v| {
        top = Some(bincode::deserialize(v)?);
        Ok(())
    })?;
    let want_top = expected_top(&expected.counts, TOP_N);
    match &top {
        Some(top) if *top == want_top => {}
        got => report(format!("top products {got:?}, expected {want_top:?}")),
    }
    println!(
        "top {TOP_N} products (product: likes): {}",
        want_top
            .iter()
            .map(|(p, l)| format!("{p}: {l}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "verified: {} products, {} events, {} closed minutes, top {TOP_N}, {mismatches} mismatches",
        o.products,
        o.events,
        expected.per_minute.len()
    );
    log.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    if mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Calls `f` with the key and value of every record of `topic` that read_committed readers see.
fn read_committed(
    log: &Log,
    topic: &str,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut buf = Vec::new();
    for p in 0..log.partition_count(topic)? {
        let part = log.partition(topic, p)?;
        let mut offset = part.log_start_offset()?;
        while offset < part.last_stable_offset()? {
            let fetch =
                part.read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)?;
            for r in fetch.committed_records() {
                f(r.key.unwrap_or_default(), r.value.unwrap_or_default())?;
            }
            offset = fetch.next_offset();
        }
    }
    Ok(())
}

fn progress(log: &Log, admin: &Admin, started: Instant) {
    let produced: i64 = (0..PARTITIONS)
        .filter_map(|p| log.partition(INPUT, p).ok()?.high_watermark().ok())
        .sum();
    let (input_lag, all_lag) = lag(admin).unwrap_or((produced, produced));
    let done = produced - input_lag;
    println!(
        "  {:>5.1}s  produced {produced:>9}  processed {done:>9}  {:>8.0} events/s  lag {input_lag} (all topics {all_lag})",
        started.elapsed().as_secs_f64(),
        done as f64 / started.elapsed().as_secs_f64()
    );
}
