//! What the examples share with the tests that check them: the like-count scenario's event
//! type and topology, and its ground truth.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use std::time::Duration;

use streams::serde::{Bincode, IntegerSerde, Nullable};
use streams::window::{TimeWindows, WindowedSerde};
use streams::{BufferFull, Consumed, Grouped, Materialized, Produced, StreamsBuilder};

/// The like-count input topic (keyed by product id).
pub const INPUT: &str = "like-events";
/// The like-count output topic: product id -> current number of likes.
pub const OUTPUT: &str = "like-counts";
/// Likes per product per minute, each window once when it closes: windowed product id ->
/// like events in the minute.
pub const PER_MINUTE: &str = "likes-per-minute";
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
/// ```text
///  like-events ──select_key (user, product)──▶ repartition ──▶ table latest-action
///     ──filter like──▶ group_by product ──▶ repartition ──▶ count ──▶ like-counts
/// ```
pub fn topology() -> Result<streams::Topology, streams::Error> {
    let b = StreamsBuilder::new();
    let events = b.stream(
        INPUT,
        Consumed::with(IntegerSerde, Bincode::<LikeEvent>::default()),
    );
    events
        .select_key(|_product: &u64, e: &LikeEvent| (e.user_id, e.product_id))
        .to_table(
            Materialized::named("latest-action")
                .key_serde(Bincode::<(u64, u64)>::default())
                .value_serde(Bincode::<LikeEvent>::default()),
        )
        .filter(|_, e| e.action == Action::Like)
        .group_by(
            |&(user, product), _| (product, user),
            Grouped::with(IntegerSerde, IntegerSerde).name("likes-by-product"),
        )
        .count(Materialized::named(OUTPUT))
        .to_stream()
        .to(OUTPUT, Produced::with(IntegerSerde, Nullable(IntegerSerde)));
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
