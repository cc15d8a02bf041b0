//! Hot keys: the SpaceSaving summary's guarantees (property tests), and the heavy hitters of a
//! repartition topic as the test driver and a running application report them.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of these tests unwrap as the tests do: a failure is a test failure"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use core_log::{Log, Record as LogRecord, TopicConfig};
use proptest::prelude::*;
use streams::serde::StringSerde;
use streams::{
    Consumed, Error, Grouped, Materialized, SpaceSaving, Streams, StreamsBuilder, StreamsConfig,
    Topology, TopologyTestDriver,
};

/// Key `i` of a stream, in bytes of varying length (key buffers are reused and grown).
fn key_bytes(i: u32) -> Vec<u8> {
    let mut k = format!("key-{i}").into_bytes();
    k.extend(std::iter::repeat_n(b'x', (i % 7) as usize));
    k
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For random skewed streams: every key counted more than N/k times is tracked; each
    /// tracked key's estimate satisfies true <= count <= true + error with error <= N/k; an
    /// untracked key was counted at most `min_count` times; the counts add up to N.
    #[test]
    fn space_saving_guarantees(
        capacity in 1usize..40,
        keys in 1u32..400,
        skew in 1u32..5,
        draws in prop::collection::vec(0u32..1_000_000, 1..3000),
    ) {
        let mut s = SpaceSaving::new(capacity);
        let mut truth: HashMap<Vec<u8>, u64> = HashMap::new();
        for d in &draws {
            // x^skew concentrates the draws on the first keys.
            let x = f64::from(*d) / 1_000_000.0;
            let i = (x.powi(skew as i32) * f64::from(keys)) as u32;
            let k = key_bytes(i);
            let estimate = s.offer(&k);
            let t = truth.entry(k).or_default();
            *t += 1;
            prop_assert!(estimate >= *t);
        }
        let n = draws.len() as u64;
        let k = capacity as u64;
        prop_assert_eq!(s.total(), n);
        prop_assert!(s.len() <= capacity);
        let top = s.top();
        prop_assert_eq!(top.iter().map(|(_, e)| e.count).sum::<u64>(), n);
        prop_assert!(top.windows(2).all(|w| w[0].1.count >= w[1].1.count));
        for (key, &t) in &truth {
            match s.estimate(key) {
                Some(e) => {
                    prop_assert!(t <= e.count, "true {} > estimate {}", t, e.count);
                    prop_assert!(e.count <= t + e.error, "estimate {} > true {} + error {}", e.count, t, e.error);
                    prop_assert!(e.error * k <= n, "error {} > N/k = {}/{}", e.error, n, k);
                }
                None => {
                    prop_assert!(t * k <= n, "a key counted {} > N/k = {}/{} times is untracked", t, n, k);
                    prop_assert!(t <= s.min_count());
                }
            }
        }
    }
}

fn group_by_value_count() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("events", Consumed::with(StringSerde, StringSerde))
        .group_by(
            |_user, item| item.clone(),
            Grouped::with(StringSerde, StringSerde).name("by-item"),
        )
        .count(Materialized::named("item-counts"));
    b.build().unwrap()
}

/// `n` events keyed by user, valued by item: every other one `hot` when `skewed`, the rest
/// spread evenly over 100 items.
fn events(n: u32, skewed: bool) -> Vec<(String, String, i64)> {
    (0..n)
        .map(|i| {
            let item = if skewed && i % 2 == 0 {
                "hot".to_owned()
            } else {
                format!("item-{}", (i / 2 + i) % 100)
            };
            (format!("user-{i}"), item, i64::from(i))
        })
        .collect()
}

#[test]
fn the_driver_reports_a_key_with_half_the_records_as_the_top_hot_key() {
    let mut d =
        TopologyTestDriver::with_partitions(group_by_value_count(), StreamsConfig::new("hk"), 4)
            .unwrap();
    let input = d.input_topic("events", StringSerde, StringSerde);
    input.pipe_inputs(&mut d, &events(4000, true)).unwrap();
    // A rate window closes at the first commit at least 1 s after it opened.
    d.advance_wall_clock_time(2000).unwrap();
    let hot = d.hot_keys();
    assert_eq!(hot.len(), 1, "{hot:?}");
    assert_eq!(hot[0].topic, "hk-by-item-repartition");
    assert_eq!(hot[0].records, 4000);
    assert_eq!(hot[0].keys.len(), 1, "only `hot` passes 5%: {hot:?}");
    let top = &hot[0].keys[0];
    assert_eq!(top.key, b"hot");
    assert!(
        top.count >= 2000 && top.count - top.error <= 2000,
        "{top:?}"
    );
    assert!((top.share - 0.5).abs() < 0.03, "{top:?}");
    // 2000 records in 2 s, over the four tasks writing the topic.
    assert!((950.0..=1000.0).contains(&top.rate), "{top:?}");
    let counts: HashMap<String, i64> = d
        .key_value_store::<String, i64>("item-counts")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts["hot"], 2000);
}

#[test]
fn a_uniform_stream_has_no_hot_key() {
    let mut d =
        TopologyTestDriver::with_partitions(group_by_value_count(), StreamsConfig::new("hk"), 4)
            .unwrap();
    let input = d.input_topic("events", StringSerde, StringSerde);
    input.pipe_inputs(&mut d, &events(4000, false)).unwrap();
    let hot = d.hot_keys();
    assert_eq!(hot.len(), 1);
    assert_eq!(hot[0].records, 4000);
    assert!(hot[0].keys.is_empty(), "{hot:?}");
}

#[test]
fn capacity_zero_turns_detection_off_and_bad_settings_are_refused() {
    let config = StreamsConfig::new("hk")
        .set("hot.keys.capacity", "0")
        .unwrap();
    let mut d = TopologyTestDriver::new(group_by_value_count(), config).unwrap();
    let input = d.input_topic("events", StringSerde, StringSerde);
    input.pipe_inputs(&mut d, &events(100, true)).unwrap();
    assert!(d.hot_keys().is_empty());

    let config = StreamsConfig::new("hk")
        .set("hot.keys.capacity", "200")
        .unwrap()
        .set("hot.keys.min.share", "0.01")
        .unwrap();
    assert!(config.validate().is_ok());
    for (key, value) in [
        ("hot.keys.capacity", "-1"),
        ("hot.keys.min.records", "-1"),
        ("hot.keys.min.records", "many"),
        ("hot.keys.min.share", "0"),
        ("hot.keys.min.share", "1.5"),
        ("hot.keys.min.share", "NaN"),
        ("hot.keys.min.share", "a lot"),
    ] {
        let e = StreamsConfig::new("hk").set(key, value).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { .. }),
            "{key}={value}: {e}"
        );
    }
    // 10 counters cannot guarantee finding every key with 5% of the records.
    for config in [
        StreamsConfig::new("hk").hot_keys_capacity(10),
        StreamsConfig::new("hk").hot_keys_capacity(1 << 20),
        StreamsConfig::new("hk").hot_keys_min_share(-0.5),
    ] {
        let e = TopologyTestDriver::new(group_by_value_count(), config).err();
        assert!(matches!(e, Some(Error::InvalidConfig { .. })), "{e:?}");
    }
}

#[test]
fn a_running_application_reports_hot_keys_in_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path().join("log"))
        .background_maintenance(false)
        .open()
        .unwrap();
    log.create_topic("events", 2, TopicConfig::default())
        .unwrap();
    for (user, item, ts) in events(2000, true) {
        let p = core_log::partition_for_key(user.as_bytes(), 2);
        log.partition("events", p)
            .unwrap()
            .append(&[LogRecord::new(Some(user.as_bytes()), Some(item.as_bytes())).timestamp(ts)])
            .unwrap();
    }
    let config = StreamsConfig::new("hk-app")
        .num_stream_threads(2)
        .commit_interval_ms(20)
        .poll_ms(10)
        .state_dir(dir.path().join("state"));
    let app = Streams::new(group_by_value_count(), &log, config).unwrap();
    app.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = app.metrics();
        let written = m.hot_keys.first().map_or(0, |h| h.records);
        if written == 2000 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    app.close().unwrap();
    assert_eq!(metrics.hot_keys.len(), 1, "{:?}", metrics.hot_keys);
    let h = &metrics.hot_keys[0];
    assert_eq!(h.topic, "hk-app-by-item-repartition");
    assert_eq!(h.records, 2000);
    assert_eq!(h.keys.len(), 1, "{h:?}");
    assert_eq!(h.keys[0].key, b"hot");
    assert!((h.keys[0].share - 0.5).abs() < 0.03, "{h:?}");
}
