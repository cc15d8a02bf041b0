//! What the examples share with the tests that check them: the like-count scenario's event
//! type and topology, and its ground truth.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use std::time::Duration;

use streams::serde::{Bincode, IntegerSerde, Nullable};
use streams::window::{TimeWindows, WindowedSerde};
use streams::{BufferFull, Consumed, Grouped, HotKeys, Materialized, Produced, StreamsBuilder};

/// The like-count input topic (keyed by product id).
pub const INPUT: &str = "like-events";
/// The like-count output topic: product id -> current number of likes.
pub const OUTPUT: &str = "like-counts";
/// Likes per product per minute, each window once when it closes: windowed product id ->
/// like events in the minute.
pub const PER_MINUTE: &str = "likes-per-minute";
/// The top products: one record (key 0) whose value is the [`TOP_N`] products with the most
/// likes, most first, as `(product id, likes)` pairs, updated as the counts change.
pub const TOP_PRODUCTS: &str = "top-products";
/// How many products [`TOP_PRODUCTS`] lists.
pub const TOP_N: usize = 10;
/// The per-minute windows: a minute, with 10 s of grace for late events.
pub const MINUTE_MS: i64 = 60_000;
/// The grace of the per-minute windows.
pub const GRACE_MS: i64 = 10_000;

/// What a user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// The user likes the product.
    Like,
    /// The user takes the like back.
    Unlike,
}

/// One event, keyed by product id in the input topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LikeEvent {
    /// Who.
    pub user_id: u64,
    /// Which product (the input key).
    pub product_id: u64,
    /// Like or unlike.
    pub action: Action,
    /// Event time, ms.
    pub ts: i64,
}

/// The like-count topology: the latest action per (user, product) in a table, its likes
/// grouped by product and counted with an adder and a subtractor, so a like followed by an
/// unlike leaves the count unchanged and a repeated like counts once.
///
/// The counts are grouped once more, all under one key, into a [`Ranking`] that keeps every
/// product with likes ordered by count (the adder inserts a product's new count, the
/// subtractor removes its old one), and its first [`TOP_N`] go to `top-products`. Likes per
/// product per minute come from the input directly, one record per closed minute.
///
/// ```text
///  like-events ──select_key (user, product)──▶ repartition ──▶ table latest-action
///     ──filter like──▶ group_by product ──▶ repartition ──▶ count ──▶ like-counts
///                                      ──group_by 0──▶ repartition ──▶ ranking ──▶ top-products
///  like-events ──filter like──▶ window 1 min, grace 10 s ──▶ count, emit final ──▶ likes-per-minute
/// ```
pub fn topology() -> Result<streams::Topology, streams::Error> {
    topology_with(true)
}

/// The like-count topology, with or without hot-key splitting of the likes-by-product count
/// ([`topology`] splits): a product the detector finds hot (at least `hot.keys.min.share` of
/// the likes a task writes) is counted in two stages, over several tasks first.
pub fn topology_with(split_hot_keys: bool) -> Result<streams::Topology, streams::Error> {
    let b = StreamsBuilder::new();
    let mut by_product = Grouped::with(IntegerSerde, IntegerSerde).name("likes-by-product");
    if split_hot_keys {
        by_product = by_product.split_hot_keys(HotKeys::detected());
    }
    let events = b.stream(
        INPUT,
        Consumed::with(IntegerSerde, Bincode::<LikeEvent>::default()),
    );
    let counts = events
        .select_key(|_product: &u64, e: &LikeEvent| (e.user_id, e.product_id))
        .to_table(
            Materialized::named("latest-action")
                .key_serde(Bincode::<(u64, u64)>::default())
                .value_serde(Bincode::<LikeEvent>::default()),
        )
        .filter(|_, e| e.action == Action::Like)
        .group_by(|&(user, product), _| (product, user), by_product)
        .count(Materialized::named(OUTPUT));
    counts
        .to_stream()
        .to(OUTPUT, Produced::with(IntegerSerde, Nullable(IntegerSerde)));
    counts
        .group_by(
            |&product, &likes| (0u64, (product, likes)),
            Grouped::with(IntegerSerde, Bincode::<(u64, i64)>::default()).name("top-products"),
        )
        .aggregate(
            Ranking::default,
            |_, &(product, likes), mut r: Ranking| {
                r.add(product, likes);
                r
            },
            |_, &(product, likes), mut r: Ranking| {
                r.remove(product, likes);
                r
            },
            Materialized::named("ranking").value_serde(Bincode::<Ranking>::default()),
        )
        .map_values(|_, r| r.top(TOP_N))
        .to_stream()
        .to(
            TOP_PRODUCTS,
            Produced::with(
                IntegerSerde,
                Nullable(Bincode::<Vec<(u64, i64)>>::default()),
            ),
        );
    let minute = Duration::from_millis(MINUTE_MS as u64);
    events
        .filter(|_, e| e.action == Action::Like)
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(
            minute,
            Duration::from_millis(GRACE_MS as u64),
        ))
        .emit_on_window_close(10_000_000, BufferFull::Fail)
        .count(Materialized::named(PER_MINUTE))
        .to_stream()
        .to(
            PER_MINUTE,
            Produced::with(
                WindowedSerde::time(IntegerSerde, minute),
                Nullable(IntegerSerde),
            ),
        );
    b.build()
}

/// Like events per (product, minute start) among `events`, for the minutes that have closed
/// when each partition's stream time is `stream_time(product)`: the expected per-minute output.
pub fn expected_per_minute<'a>(
    events: impl IntoIterator<Item = &'a LikeEvent>,
    stream_time: impl Fn(u64) -> i64,
) -> HashMap<(u64, i64), i64> {
    let mut counts: HashMap<(u64, i64), i64> = HashMap::new();
    for e in events {
        let start = e.ts - e.ts.rem_euclid(MINUTE_MS);
        if e.action == Action::Like && start + MINUTE_MS + GRACE_MS <= stream_time(e.product_id) {
            *counts.entry((e.product_id, start)).or_default() += 1;
        }
    }
    counts
}

/// The expected like count per product after `events` (in order): the number of users whose
/// latest action on the product is a like.
pub fn expected_counts<'a>(events: impl IntoIterator<Item = &'a LikeEvent>) -> HashMap<u64, i64> {
    let mut latest: HashMap<(u64, u64), Action> = HashMap::new();
    for e in events {
        latest.insert((e.user_id, e.product_id), e.action);
    }
    let mut counts: HashMap<u64, i64> = HashMap::new();
    for ((_, product), action) in latest {
        if action == Action::Like {
            *counts.entry(product).or_default() += 1;
        }
    }
    counts
}

/// Every product with likes, ordered by likes (most first, then by product id): the top
/// products' aggregate. Products at zero likes are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranking {
    /// `(-likes, product)`, so that iteration goes from the most liked.
    ranked: BTreeSet<(i64, u64)>,
}

impl Ranking {
    /// Enters `product` at `likes`.
    pub fn add(&mut self, product: u64, likes: i64) {
        if likes != 0 {
            self.ranked.insert((-likes, product));
        }
    }

    /// Takes `product`'s entry at `likes` out (its count is changing or going).
    pub fn remove(&mut self, product: u64, likes: i64) {
        self.ranked.remove(&(-likes, product));
    }

    /// The first `n` products with their likes.
    pub fn top(&self, n: usize) -> Vec<(u64, i64)> {
        self.ranked.iter().take(n).map(|&(l, p)| (p, -l)).collect()
    }
}

/// The `n` products with the most likes in `counts` (ties: the lower product id first), as
/// [`TOP_PRODUCTS`] lists them.
pub fn expected_top(counts: &HashMap<u64, i64>, n: usize) -> Vec<(u64, i64)> {
    let mut all: Vec<(u64, i64)> = counts
        .iter()
        .filter(|&(_, &likes)| likes != 0)
        .map(|(&product, &likes)| (product, likes))
        .collect();
    all.sort_by_key(|&(product, likes)| (std::cmp::Reverse(likes), product));
    all.truncate(n);
    all
}
