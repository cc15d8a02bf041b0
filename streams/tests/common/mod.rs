//! What the integration tests that run a [`streams::Streams`] application share: the like
//! count topology, and waiting for an application to commit what they produced.

#![allow(dead_code, reason = "each test file uses a part")]
#![allow(clippy::unwrap_used, reason = "a panic is the test's failure report")]

use std::time::{Duration, Instant};

use streams::core_log::{Admin, Log};
use streams::serde::{IntegerSerde, Nullable, StringSerde};
use streams::{Consumed, Materialized, Produced, StreamsBuilder, Topology};

/// How long an application may take to catch up before the test fails.
const CATCH_UP: Duration = Duration::from_secs(60);

/// The like count: `likes` (string keys) counted per key in store `counts`, every change
/// written to topic `counts` as a big-endian i64.
pub fn count_topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("likes", Consumed::with(StringSerde, StringSerde))
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    b.build().unwrap()
}

/// Waits until group `app` has committed the end of every partition of `topic`.
pub fn wait_caught_up(log: &Log, app: &str, topic: &str) {
    let admin = Admin::new(log);
    let partitions = log.partition_count(topic).unwrap();
    wait_until(CATCH_UP, &format!("{app} to catch up on {topic}"), || {
        let Ok(offsets) = admin.list_consumer_group_offsets(app) else {
            return false;
        };
        (0..partitions).all(|p| {
            let end = log.partition(topic, p).unwrap().high_watermark().unwrap();
            let committed = offsets
                .iter()
                .find(|(tp, _)| tp.topic == topic && tp.partition == p)
                .map_or(0, |(_, o)| o.offset);
            committed == end
        })
    });
}

/// Waits until group `app` has committed every partition of `input` and has no lag on any
/// partition it reads (repartition topics included: a multi-stage topology is through).
pub fn wait_all_caught_up(log: &Log, app: &str, input: &str) {
    let admin = Admin::new(log);
    let partitions = log.partition_count(input).unwrap() as usize;
    wait_until(CATCH_UP, &format!("{app} to catch up"), || {
        let lag = admin.consumer_group_lag(app).unwrap_or_default();
        let input_seen = lag.iter().filter(|r| r.partition.topic == input).count() == partitions;
        input_seen && lag.iter().all(|r| r.lag == Some(0))
    });
}

/// Polls `done` every 10 ms until it holds; fails the test, naming `what` it waited for,
/// after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
