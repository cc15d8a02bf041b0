//! Each DSL operator, repartitioning, tables with adder and subtractor, describe(), error
//! handling and the Processor API, run through the test driver.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of these tests unwrap as the tests do: a failure is a test failure"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use streams::serde::{BytesSerde, IntegerSerde, Json, Nullable, StringSerde};
use streams::{
    Consumed, Error, ErrorHandling, Grouped, Materialized, Processor, ProcessorContext, Produced,
    PunctuationType, Record, Repartitioned, StoreHandle, StreamsBuilder, StreamsConfig,
    TopologyTestDriver,
};

fn s(x: &str) -> String {
    x.to_owned()
}

fn strings() -> Consumed<String, String> {
    Consumed::with(StringSerde, StringSerde)
}

fn out_strings() -> Produced<String, String> {
    Produced::with(StringSerde, StringSerde)
}

#[test]
fn stateless_operators_transform_filter_and_fan_out() {
    let seen = Arc::new(AtomicUsize::new(0));
    let peeked = seen.clone();
    let counted = Arc::new(AtomicUsize::new(0));
    let each = counted.clone();
    let b = StreamsBuilder::new();
    let input = b.stream("in", strings());
    input
        .filter(|_, v| v.starts_with('a'))
        .to("filtered", out_strings());
    input
        .filter_not(|_, v| v.starts_with('a'))
        .to("filtered-not", out_strings());
    input
        .map_values(|_, v| v.len() as i64)
        .to("lengths", Produced::with(StringSerde, IntegerSerde));
    input.map(|k, v| (v, k)).to("swapped", out_strings());
    input
        .flat_map(|k, v| {
            v.split(' ')
                .map(|w| (w.to_owned(), k.clone()))
                .collect::<Vec<_>>()
        })
        .to("words", out_strings());
    input
        .flat_map_values(|_, v| v.chars().take(2).map(String::from).collect::<Vec<_>>())
        .to("chars", out_strings());
    input
        .select_key(|_, v| v.to_uppercase())
        .peek(move |_, _| {
            peeked.fetch_add(1, Ordering::SeqCst);
        })
        .to("upper-keys", out_strings());
    input.foreach(move |_, _| {
        each.fetch_add(1, Ordering::SeqCst);
    });
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("ops")).unwrap();
    let topic = d.input_topic("in", StringSerde, StringSerde);
    topic
        .pipe_input(&mut d, &s("k1"), &s("apple pie"), 10)
        .unwrap();
    topic
        .pipe_input(&mut d, &s("k2"), &s("banana"), 20)
        .unwrap();

    let read = |d: &mut TopologyTestDriver, t: &str| {
        d.output_topic(t, StringSerde, StringSerde)
            .read_key_values(d)
            .unwrap()
    };
    assert_eq!(read(&mut d, "filtered"), vec![(s("k1"), s("apple pie"))]);
    assert_eq!(read(&mut d, "filtered-not"), vec![(s("k2"), s("banana"))]);
    let lengths = d
        .output_topic("lengths", StringSerde, IntegerSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(lengths, vec![(s("k1"), 9i64), (s("k2"), 6)]);
    assert_eq!(
        read(&mut d, "swapped"),
        vec![(s("apple pie"), s("k1")), (s("banana"), s("k2"))]
    );
    assert_eq!(
        read(&mut d, "words"),
        vec![
            (s("apple"), s("k1")),
            (s("pie"), s("k1")),
            (s("banana"), s("k2"))
        ]
    );
    assert_eq!(
        read(&mut d, "chars"),
        vec![
            (s("k1"), s("a")),
            (s("k1"), s("p")),
            (s("k2"), s("b")),
            (s("k2"), s("a"))
        ]
    );
    assert_eq!(
        read(&mut d, "upper-keys"),
        vec![(s("APPLE PIE"), s("apple pie")), (s("BANANA"), s("banana"))]
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(counted.load(Ordering::SeqCst), 2);
    // Timestamps are carried through.
    let records = d
        .output_topic("filtered", StringSerde, StringSerde)
        .read_records(&mut d)
        .unwrap();
    assert!(records.is_empty(), "a topic is read once");
}

#[test]
fn split_sends_each_record_to_its_first_matching_branch_and_merge_joins_streams() {
    let b = StreamsBuilder::new();
    let branches = b
        .stream("in", strings())
        .split()
        .branch("likes", |_, v| v == "like")
        .branch("unlikes", |_, v| v == "unlike")
        .default_branch("other")
        .build();
    branches["likes"].to("likes", out_strings());
    branches["unlikes"].to("unlikes", out_strings());
    branches["other"].to("other", out_strings());
    branches["likes"]
        .merge(&branches["unlikes"])
        .to("actions", out_strings());
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("split")).unwrap();
    let input = d.input_topic("in", StringSerde, StringSerde);
    for (k, v) in [
        ("a", "like"),
        ("b", "unlike"),
        ("c", "share"),
        ("d", "like"),
    ] {
        input.pipe_input(&mut d, &s(k), &s(v), 0).unwrap();
    }
    let read = |d: &mut TopologyTestDriver, t: &str| {
        d.output_topic(t, StringSerde, StringSerde)
            .read_key_values(d)
            .unwrap()
    };
    assert_eq!(
        read(&mut d, "likes"),
        vec![(s("a"), s("like")), (s("d"), s("like"))]
    );
    assert_eq!(read(&mut d, "unlikes"), vec![(s("b"), s("unlike"))]);
    assert_eq!(read(&mut d, "other"), vec![(s("c"), s("share"))]);
    assert_eq!(
        read(&mut d, "actions"),
        vec![
            (s("a"), s("like")),
            (s("b"), s("unlike")),
            (s("d"), s("like"))
        ]
    );
}

#[test]
fn group_after_select_key_goes_through_a_repartition_topic_with_correct_counts() {
    let b = StreamsBuilder::new();
    // Events keyed by user, valued by product; count per product.
    b.stream("likes", strings())
        .select_key(|_user, product| product.clone())
        .group_by_key_with(Grouped::named("by-product"))
        .count(Materialized::named("product-counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    let topology = b.build().unwrap();
    assert!(
        topology
            .describe()
            .contains("<application.id>-by-product-repartition")
    );
    let mut d = TopologyTestDriver::with_partitions(topology, StreamsConfig::new("rp"), 4).unwrap();
    let input = d.input_topic("likes", StringSerde, StringSerde);
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..400u32 {
        let user = format!("user-{}", i % 37);
        let product = format!("p{}", (i * 7) % 13);
        *expected.entry(product.clone()).or_default() += 1;
        batch.push((user, product, i64::from(i)));
    }
    input.pipe_inputs(&mut d, &batch).unwrap();
    let mut store: HashMap<String, i64> = d
        .key_value_store::<String, i64>("product-counts")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(store, expected);
    let out = d
        .output_topic("counts", StringSerde, Nullable(IntegerSerde))
        .read_key_values_to_map(&mut d)
        .unwrap();
    let out: HashMap<String, i64> = out.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    assert_eq!(out, expected);
    // The repartition topic is real and holds every event, and each product lives in exactly
    // one task (partition).
    let rp = d
        .log()
        .partition_count("rp-by-product-repartition")
        .unwrap();
    assert_eq!(rp, 4);
    let total: i64 = (0..rp)
        .map(|p| {
            d.log()
                .partition("rp-by-product-repartition", p)
                .unwrap()
                .log_end_offset()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 400);
    store.clear();
}

#[test]
fn explicit_repartition_and_custom_partitioner() {
    let b = StreamsBuilder::new();
    let stream = b.stream("in", strings());
    stream
        .repartition(Repartitioned::named("spread").partitions(3))
        .to(
            "out",
            out_strings().partitioner(|_, v, n| v.len() as u32 % n),
        );
    let topology = b.build().unwrap();
    let mut d =
        TopologyTestDriver::with_partitions(topology, StreamsConfig::new("rp2"), 2).unwrap();
    assert_eq!(
        d.log().partition_count("rp2-spread-repartition").unwrap(),
        3
    );
    let input = d.input_topic("in", StringSerde, StringSerde);
    for v in ["a", "bb", "ccc", "dddd"] {
        input.pipe_input(&mut d, &s(v), &s(v), 0).unwrap();
    }
    let records = d
        .output_topic("out", StringSerde, StringSerde)
        .read_records(&mut d)
        .unwrap();
    assert_eq!(records.len(), 4);
    for r in records {
        assert_eq!(r.partition, r.value.len() as u32 % 2, "{r:?}");
    }
}

#[test]
fn reduce_and_aggregate_per_key() {
    let b = StreamsBuilder::new();
    let amounts = b.stream("amounts", Consumed::with(StringSerde, IntegerSerde));
    amounts
        .group_by_key()
        .reduce(
            |a: &i64, b: &i64| a.max(b).to_owned(),
            Materialized::named("max"),
        )
        .to_stream()
        .to("max", Produced::with(StringSerde, Nullable(IntegerSerde)));
    amounts
        .group_by_key()
        .aggregate(
            || (0i64, 0i64),
            |_, v: &i64, (sum, n)| (sum + v, n + 1),
            Materialized::named("sum-count")
                .value_serde(Json::<(i64, i64)>::default())
                .in_memory(),
        )
        .to_stream()
        .to(
            "sum-count",
            Produced::with(StringSerde, Nullable(Json::<(i64, i64)>::default())),
        );
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("agg")).unwrap();
    let input = d.input_topic("amounts", StringSerde, IntegerSerde);
    for (k, v) in [("a", 5i64), ("b", 1), ("a", 9), ("a", 2), ("b", 4)] {
        input.pipe_input(&mut d, &s(k), &v, 0).unwrap();
    }
    let max = d
        .output_topic("max", StringSerde, Nullable(IntegerSerde))
        .read_key_values_to_map(&mut d)
        .unwrap();
    assert_eq!(
        max,
        HashMap::from([(s("a"), Some(9i64)), (s("b"), Some(4))])
    );
    let sc = d
        .output_topic(
            "sum-count",
            StringSerde,
            Nullable(Json::<(i64, i64)>::default()),
        )
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(sc.last(), Some(&(s("b"), Some((5, 2)))));
    assert_eq!(
        sc.iter().rfind(|(k, _)| k == "a"),
        Some(&(s("a"), Some((16, 3))))
    );
}

#[test]
fn table_keeps_the_latest_value_and_tombstones_delete() {
    let b = StreamsBuilder::new();
    let table = b.table("profiles", strings(), Materialized::named("profiles"));
    table.to_stream().to(
        "profile-updates",
        Produced::with(StringSerde, Nullable(StringSerde)),
    );
    table
        .filter(|_, v| v.contains("vip"))
        .map_values(|_, v| v.to_uppercase())
        .to_stream()
        .to("vips", Produced::with(StringSerde, Nullable(StringSerde)));
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("tbl")).unwrap();
    let input = d.input_topic("profiles", StringSerde, Nullable(StringSerde));
    input
        .pipe_input(&mut d, &s("ann"), &Some(s("vip gold")), 0)
        .unwrap();
    input
        .pipe_input(&mut d, &s("bob"), &Some(s("basic")), 0)
        .unwrap();
    input
        .pipe_input(&mut d, &s("ann"), &Some(s("basic")), 0)
        .unwrap();
    input.pipe_input(&mut d, &s("bob"), &None, 0).unwrap();
    let store = d.key_value_store::<String, String>("profiles").unwrap();
    assert_eq!(store, vec![(s("ann"), s("basic"))]);
    let updates = d
        .output_topic("profile-updates", StringSerde, Nullable(StringSerde))
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(
        updates,
        vec![
            (s("ann"), Some(s("vip gold"))),
            (s("bob"), Some(s("basic"))),
            (s("ann"), Some(s("basic"))),
            (s("bob"), None)
        ]
    );
    // ann stops matching: the filtered table deletes her.
    let vips = d
        .output_topic("vips", StringSerde, Nullable(StringSerde))
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(
        vips,
        vec![(s("ann"), Some(s("VIP GOLD"))), (s("ann"), None)]
    );
}

#[test]
fn grouped_table_count_follows_likes_and_unlikes_with_adder_and_subtractor() {
    // Latest action per (user, product), then likes per product: a like followed by an
    // unlike leaves the count unchanged, and a repeated like counts once.
    let b = StreamsBuilder::new();
    b.stream("actions", strings())
        .to_table(Materialized::named("latest-action"))
        .filter(|_, action| action == "like")
        .group_by(
            |user_product, _| {
                (
                    user_product
                        .split('/')
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned(),
                    1i64,
                )
            },
            Grouped::with(StringSerde, IntegerSerde).name("likes-by-product"),
        )
        .count(Materialized::named("likes"))
        .to_stream()
        .to("likes", Produced::with(StringSerde, Nullable(IntegerSerde)));
    let mut d =
        TopologyTestDriver::with_partitions(b.build().unwrap(), StreamsConfig::new("like"), 3)
            .unwrap();
    let input = d.input_topic("actions", StringSerde, StringSerde);
    let events = [
        ("ann/p1", "like"),
        ("bob/p1", "like"),
        ("ann/p1", "like"), // duplicate like: no change
        ("cid/p2", "like"),
        ("ann/p1", "unlike"), // p1 goes down
        ("bob/p1", "unlike"),
        ("bob/p1", "like"),
    ];
    for (k, v) in events {
        input.pipe_input(&mut d, &s(k), &s(v), 0).unwrap();
    }
    let counts: HashMap<String, i64> = d
        .key_value_store::<String, i64>("likes")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts, HashMap::from([(s("p1"), 1), (s("p2"), 1)]));
    let history: Vec<i64> = d
        .output_topic("likes", StringSerde, Nullable(IntegerSerde))
        .read_key_values(&mut d)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k == "p1")
        .map(|(_, v)| v.unwrap())
        .collect();
    // The repeated like is an update of the table (like -> like): subtracted and added again.
    assert_eq!(history, vec![1, 2, 2, 1, 0, 1]);
}

#[test]
fn grouped_table_reduce_moves_values_between_keys() {
    // Salary per department: a person changing department moves their salary.
    let b = StreamsBuilder::new();
    b.table(
        "people",
        Consumed::with(StringSerde, StringSerde),
        Materialized::named("people"),
    )
    .group_by(
        |_, v| {
            let (dept, salary) = v.split_once(':').unwrap();
            (dept.to_owned(), salary.parse::<i64>().unwrap())
        },
        Grouped::with(StringSerde, IntegerSerde),
    )
    .reduce(|a, b| a + b, |a, b| a - b, Materialized::named("payroll"))
    .to_stream()
    .to(
        "payroll",
        Produced::with(StringSerde, Nullable(IntegerSerde)),
    );
    let mut d =
        TopologyTestDriver::with_partitions(b.build().unwrap(), StreamsConfig::new("pay"), 2)
            .unwrap();
    let input = d.input_topic("people", StringSerde, StringSerde);
    input
        .pipe_input(&mut d, &s("ann"), &s("eng:100"), 0)
        .unwrap();
    input
        .pipe_input(&mut d, &s("bob"), &s("eng:50"), 0)
        .unwrap();
    input
        .pipe_input(&mut d, &s("ann"), &s("ops:120"), 0)
        .unwrap();
    let payroll: HashMap<String, i64> = d
        .key_value_store::<String, i64>("payroll")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(payroll, HashMap::from([(s("eng"), 50), (s("ops"), 120)]));
}

#[test]
fn record_cache_collapses_updates_between_commits_in_store_output_and_changelog() {
    let run = |caching: bool| {
        let b = StreamsBuilder::new();
        let m = Materialized::named("counts");
        let m = if caching { m } else { m.without_caching() };
        b.stream("in", strings())
            .group_by_key()
            .count(m)
            .to_stream()
            .to("out", Produced::with(StringSerde, Nullable(IntegerSerde)));
        let mut d =
            TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("cache")).unwrap();
        let input = d.input_topic("in", StringSerde, StringSerde);
        let batch: Vec<_> = (0..100)
            .map(|i| (s(if i % 4 == 0 { "x" } else { "y" }), s("v"), i))
            .collect();
        input.pipe_inputs(&mut d, &batch).unwrap();
        let out = d
            .output_topic("out", StringSerde, Nullable(IntegerSerde))
            .read_key_values(&mut d)
            .unwrap();
        let changelog = d
            .log()
            .partition("cache-counts-changelog", 0)
            .unwrap()
            .log_end_offset()
            .unwrap();
        (out, changelog)
    };
    let (out, changelog) = run(true);
    let mut out_sorted = out.clone();
    out_sorted.sort();
    assert_eq!(out_sorted, vec![(s("x"), Some(25i64)), (s("y"), Some(75))]);
    assert_eq!(changelog, 2);
    let (out, changelog) = run(false);
    assert_eq!(out.len(), 100);
    assert_eq!(changelog, 100);
}

#[test]
fn describe_shows_subtopologies_stores_and_internal_topics() {
    let b = StreamsBuilder::new();
    b.stream("likes", strings())
        .select_key(|_, v| v.clone())
        .group_by_key_with(Grouped::named("by-product"))
        .count(Materialized::named("counts"))
        .to_stream()
        .to(
            "counts",
            Produced::with(StringSerde, Nullable(IntegerSerde)),
        );
    let described = b.build().unwrap().describe();
    let expected = "\
Topologies:
   Sub-topology: 0
    Source: source-1 (topics: [likes])
      --> select-key-2
    Processor: select-key-2 (stores: [])
      --> by-product-repartition-sink
      <-- source-1
    Sink: by-product-repartition-sink (topic: <application.id>-by-product-repartition)
      <-- select-key-2

   Sub-topology: 1
    Source: by-product-repartition-source (topics: [<application.id>-by-product-repartition])
      --> counts-aggregate
    Processor: counts-aggregate (stores: [counts])
      --> to-stream-3
      <-- by-product-repartition-source
    Processor: to-stream-3 (stores: [])
      --> sink-4
      <-- counts-aggregate
    Sink: sink-4 (topic: counts)
      <-- to-stream-3

Stores:
    counts (RocksDb, cache: on, changelog: <application.id>-counts-changelog)
Repartition topics:
    <application.id>-by-product-repartition (partitions: as the upstream sources)
";
    assert_eq!(described, expected);
}

#[test]
fn adding_an_operator_keeps_store_and_internal_topic_names() {
    let build = |extra_filter: bool| {
        let b = StreamsBuilder::new();
        let mut s = b.stream("likes", strings());
        if extra_filter {
            s = s.filter(|_, v| !v.is_empty());
        }
        s.select_key(|_, v| v.clone())
            .group_by_key_with(Grouped::named("by-product"))
            .count(Materialized::named("counts"));
        b.build().unwrap()
    };
    let (a, b) = (build(false), build(true));
    assert_eq!(a.store_names(), b.store_names());
    let internal = |t: &streams::Topology| -> Vec<String> {
        t.describe()
            .lines()
            .filter(|l| l.contains("<application.id>"))
            .map(|l| l.split("<application.id>").nth(1).unwrap().to_owned())
            .collect()
    };
    let (ia, ib) = (internal(&a), internal(&b));
    assert!(!ia.is_empty());
    let set = |v: Vec<String>| v.into_iter().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(set(ia), set(ib));
}

#[test]
fn invalid_topologies_are_refused_with_the_reason() {
    let b = StreamsBuilder::new();
    let s = b.stream("in", strings());
    s.group_by_key().count(Materialized::named("counts"));
    s.group_by_key().count(Materialized::named("counts"));
    let err = b.build().err().unwrap();
    assert!(
        matches!(&err, Error::InvalidTopology { reason } if reason.contains("counts")),
        "{err}"
    );

    // A key change to a type without serdes cannot be repartitioned.
    let b = StreamsBuilder::new();
    b.stream("in", strings())
        .map(|k, v| (k.len() as i64, v))
        .group_by_key()
        .count(Materialized::named("c"));
    let err = b.build().err().unwrap();
    assert!(
        matches!(&err, Error::InvalidTopology { reason } if reason.contains("serdes")),
        "{err}"
    );

    let b = StreamsBuilder::new();
    b.stream("bad topic name!", strings());
    assert!(matches!(b.build(), Err(Error::InvalidTopology { .. })));
}

#[test]
fn topics_that_are_not_co_partitioned_are_refused_at_start() {
    let b = StreamsBuilder::new();
    b.stream_from(&["a", "b"], strings())
        .group_by_key()
        .count(Materialized::named("c"));
    let topology = b.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = core_log::Log::open(dir.path()).unwrap();
    log.create_topic("a", 2, Default::default()).unwrap();
    log.create_topic("b", 3, Default::default()).unwrap();
    let app = streams::Streams::new(topology, &log, StreamsConfig::new("cp")).unwrap();
    let err = app.start().err().unwrap();
    assert!(
        matches!(&err, Error::InvalidTopology { reason } if reason.contains("co-partitioned")),
        "{err}"
    );
}

fn poison_topology() -> streams::Topology {
    let b = StreamsBuilder::new();
    b.stream("numbers", Consumed::with(StringSerde, IntegerSerde))
        .map_values(|_, v: i64| if v == 13 { Err(()) } else { Ok(v * 2) })
        .process::<String, i64, _>("check", || Check, &[])
        .to("doubled", Produced::with(StringSerde, IntegerSerde));
    b.build().unwrap()
}

/// Fails on the unlucky number: a processing error.
struct Check;
impl Processor<String, Result<i64, ()>, String, i64> for Check {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        r: Record<String, Result<i64, ()>>,
    ) -> streams::Result<()> {
        match r.value {
            Ok(v) => ctx.forward(r.with_value(v)),
            Err(()) => Err(Error::Processing {
                processor: "check".into(),
                source: "unlucky number".into(),
            }),
        }
    }
}

#[test]
fn poison_pills_go_to_the_dead_letter_queue_with_provenance_and_processing_continues() {
    let config = StreamsConfig::new("dlq").dead_letter_queue_topic("dead-letters");
    let mut d = TopologyTestDriver::new(poison_topology(), config).unwrap();
    d.log()
        .create_topic("dead-letters", 1, Default::default())
        .unwrap();
    d.pipe_raw("numbers", None, Some(b"a"), Some(&1i64.to_be_bytes()), 0)
        .unwrap();
    d.pipe_raw("numbers", None, Some(b"b"), Some(b"not a long"), 0)
        .unwrap(); // deserialization
    d.pipe_raw("numbers", None, Some(b"c"), Some(&13i64.to_be_bytes()), 0)
        .unwrap(); // processing
    d.pipe_raw("numbers", None, Some(b"d"), Some(&4i64.to_be_bytes()), 0)
        .unwrap();
    let out = d
        .output_topic("doubled", StringSerde, IntegerSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(out, vec![(s("a"), 2i64), (s("d"), 8)]);
    let dead = d
        .output_topic("dead-letters", BytesSerde, BytesSerde)
        .read_records(&mut d)
        .unwrap();
    assert_eq!(dead.len(), 2);
    let header = |r: &streams::TestRecord<Vec<u8>, Vec<u8>>, k: &str| {
        r.headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v).unwrap())
    };
    assert_eq!(dead[0].value, b"not a long");
    assert_eq!(
        header(&dead[0], "__streams.errors.topic").as_deref(),
        Some("numbers")
    );
    assert_eq!(
        header(&dead[0], "__streams.errors.partition").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&dead[0], "__streams.errors.offset").as_deref(),
        Some("1")
    );
    assert_eq!(
        header(&dead[0], "__streams.errors.exception").as_deref(),
        Some("deserialization")
    );
    assert_eq!(dead[1].value, 13i64.to_be_bytes());
    assert_eq!(
        header(&dead[1], "__streams.errors.offset").as_deref(),
        Some("2")
    );
    assert_eq!(
        header(&dead[1], "__streams.errors.exception").as_deref(),
        Some("processing")
    );
    assert!(
        header(&dead[1], "__streams.errors.message")
            .unwrap()
            .contains("unlucky number")
    );
}

#[test]
fn error_handlers_fail_or_log_and_continue() {
    let config = StreamsConfig::new("fail");
    let mut d = TopologyTestDriver::new(poison_topology(), config).unwrap();
    let err = d
        .pipe_raw("numbers", None, Some(b"b"), Some(b"xx"), 0)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Serde { topic, offset: Some(0), .. } if topic == "numbers"),
        "{err}"
    );

    let config = StreamsConfig::new("skip")
        .deserialization_exception_handler(ErrorHandling::LogAndContinue)
        .processing_exception_handler(ErrorHandling::LogAndContinue);
    let mut d = TopologyTestDriver::new(poison_topology(), config).unwrap();
    d.pipe_raw("numbers", None, Some(b"b"), Some(b"xx"), 0)
        .unwrap();
    d.pipe_raw("numbers", None, Some(b"c"), Some(&13i64.to_be_bytes()), 0)
        .unwrap();
    d.pipe_raw("numbers", None, Some(b"d"), Some(&5i64.to_be_bytes()), 0)
        .unwrap();
    let out = d
        .output_topic("doubled", StringSerde, IntegerSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(out, vec![(s("d"), 10i64)]);
}

/// Counts per key in a store; emits the totals on punctuation.
#[derive(Default)]
struct Totals {
    store: Option<StoreHandle<String, i64>>,
}

impl Processor<String, String, String, String> for Totals {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, String>) -> streams::Result<()> {
        self.store = Some(ctx.key_value_store("totals")?);
        ctx.schedule(Duration::from_millis(100), PunctuationType::StreamTime)?;
        ctx.schedule(Duration::from_secs(10), PunctuationType::WallClockTime)?;
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        r: Record<String, String>,
    ) -> streams::Result<()> {
        let store = ctx.store(self.store.unwrap());
        let n = store.get(&r.key)?.unwrap_or(0) + 1;
        store.put(r.key.clone(), n)?;
        let rc = ctx.record_context().clone();
        ctx.forward(Record::new(
            r.key,
            format!("seen {}@{}/{}", rc.topic, rc.partition, rc.offset),
            r.timestamp,
        ))
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        kind: PunctuationType,
        ts: i64,
    ) -> streams::Result<()> {
        let all = ctx.store(self.store.unwrap()).all()?;
        let summary = all
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        ctx.forward(Record::new(
            format!("{kind:?}"),
            format!("{ts}:{summary}"),
            ts,
        ))
    }
}

#[test]
fn processor_api_stores_record_context_and_punctuation_on_both_clocks() {
    let b = StreamsBuilder::new();
    b.add_state_store(
        Materialized::<String, i64>::named("totals")
            .key_serde(StringSerde)
            .value_serde(IntegerSerde),
    );
    b.stream("in", strings())
        .process("totals", Totals::default, &["totals"])
        .to("out", out_strings());
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("papi")).unwrap();
    let input = d.input_topic("in", StringSerde, StringSerde);
    input.pipe_input(&mut d, &s("a"), &s("x"), 1_000).unwrap(); // first record: stream-time punctuation fires
    input.pipe_input(&mut d, &s("a"), &s("x"), 1_050).unwrap(); // not yet due (next at 1100)
    input.pipe_input(&mut d, &s("b"), &s("x"), 1_100).unwrap(); // due
    d.advance_wall_clock_time(10_000).unwrap(); // wall-clock punctuation
    let out = d
        .output_topic("out", StringSerde, StringSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(
        out,
        vec![
            (s("a"), s("seen in@0/0")),
            (s("StreamTime"), s("1000:a=1")),
            (s("a"), s("seen in@0/1")),
            (s("b"), s("seen in@0/2")),
            (s("StreamTime"), s("1100:a=2,b=1")),
            (s("WallClockTime"), s("10000:a=2,b=1")),
        ]
    );
    // A processor asking for a store it is not connected to gets a typed error.
    struct Sneaky;
    impl Processor<String, String> for Sneaky {
        fn init(&mut self, ctx: &mut ProcessorContext<'_, String, String>) -> streams::Result<()> {
            ctx.key_value_store::<String, i64>("totals").map(|_| ())
        }
        fn process(
            &mut self,
            _: &mut ProcessorContext<'_, String, String>,
            _: Record<String, String>,
        ) -> streams::Result<()> {
            Ok(())
        }
    }
    let b = StreamsBuilder::new();
    b.add_state_store(
        Materialized::<String, i64>::named("totals")
            .key_serde(StringSerde)
            .value_serde(IntegerSerde),
    );
    b.stream("in", strings())
        .process::<String, String, _>("sneaky", || Sneaky, &[]);
    b.stream("in2", strings())
        .process("owner", Totals::default, &["totals"]);
    let err = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("papi2"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::UnknownStore { name, processor } if name == "totals" && processor == "sneaky"),
        "{err}"
    );
}

/// The like/unlike count against a brute-force count, with a cache small enough to evict
/// constantly (evictions must forward the right old values) and with caching off.
#[test]
fn grouped_table_count_is_exact_under_cache_evictions() {
    for cache in [0usize, 600, 4_000, 1 << 20] {
        let b = StreamsBuilder::new();
        b.stream("actions", strings())
            .to_table(Materialized::named("latest-action"))
            .filter(|_, action| action == "like")
            .group_by(
                |user_product, _| {
                    (
                        user_product
                            .split('/')
                            .nth(1)
                            .unwrap_or_default()
                            .to_owned(),
                        1i64,
                    )
                },
                Grouped::with(StringSerde, IntegerSerde).name("likes-by-product"),
            )
            .count(Materialized::named("likes"))
            .to_stream()
            .to("likes", Produced::with(StringSerde, Nullable(IntegerSerde)));
        let config = StreamsConfig::new("evict").statestore_cache_max_bytes(cache);
        let mut d = TopologyTestDriver::with_partitions(b.build().unwrap(), config, 3).unwrap();
        let input = d.input_topic("actions", StringSerde, StringSerde);
        let mut state: u64 = 42;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        let mut latest: HashMap<String, bool> = HashMap::new();
        for round in 0..4 {
            let mut batch = Vec::new();
            for i in 0..300 {
                let key = format!("u{}/p{}", next() % 40, next() % 7);
                let like = next() % 3 != 0;
                latest.insert(key.clone(), like);
                batch.push((
                    key,
                    s(if like { "like" } else { "unlike" }),
                    round * 1000 + i,
                ));
            }
            input.pipe_inputs(&mut d, &batch).unwrap();
        }
        let mut expected: HashMap<String, i64> = HashMap::new();
        for (k, like) in &latest {
            let product = k.split('/').nth(1).unwrap().to_owned();
            *expected.entry(product).or_default() += i64::from(*like);
        }
        let counts: HashMap<String, i64> = d
            .key_value_store::<String, i64>("likes")
            .unwrap()
            .into_iter()
            .collect();
        let nonzero = |m: &HashMap<String, i64>| {
            m.iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            nonzero(&counts),
            nonzero(&expected),
            "cache of {cache} bytes"
        );
        let out = d
            .output_topic("likes", StringSerde, Nullable(IntegerSerde))
            .read_key_values_to_map(&mut d)
            .unwrap();
        let out: HashMap<String, i64> = out.into_iter().map(|(k, v)| (k, v.unwrap_or(0))).collect();
        assert_eq!(
            nonzero(&out),
            nonzero(&expected),
            "output, cache of {cache} bytes"
        );
    }
}

/// Sums the count store with `all()` whenever an update of it arrives.
#[derive(Default)]
struct SumAll {
    store: Option<StoreHandle<String, i64>>,
}

impl Processor<String, Option<i64>, String, i64> for SumAll {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> streams::Result<()> {
        self.store = Some(ctx.key_value_store("counts")?);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        r: Record<String, Option<i64>>,
    ) -> streams::Result<()> {
        let total: i64 = ctx
            .store(self.store.unwrap())
            .all()?
            .iter()
            .map(|(_, v)| v)
            .sum();
        ctx.forward(Record::new(r.key, total, r.timestamp))
    }
}

#[test]
fn a_reader_of_the_store_sees_the_updates_a_cache_flush_forwards() {
    let b = StreamsBuilder::new();
    b.stream("in", strings())
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .process("sum-all", SumAll::default, &["counts"])
        .to("out", Produced::with(StringSerde, IntegerSerde));
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("rng")).unwrap();
    let input = d.input_topic("in", StringSerde, StringSerde);
    for k in ["a", "b", "a"] {
        input.pipe_input(&mut d, &s(k), &s("x"), 0).unwrap();
    }
    let out = d
        .output_topic("out", StringSerde, IntegerSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(out, vec![(s("a"), 1i64), (s("b"), 2), (s("a"), 3)]);
}

/// Fails on the key `bad`.
struct FailOnBad;

impl Processor<String, Option<i64>, String, i64> for FailOnBad {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        r: Record<String, Option<i64>>,
    ) -> streams::Result<()> {
        if r.key == "bad" {
            return Err(Error::Processing {
                processor: "fail-on-bad".into(),
                source: "bad key".into(),
            });
        }
        ctx.forward(Record::new(r.key, r.value.unwrap_or(-1), r.timestamp))
    }
}

#[test]
fn a_failure_downstream_of_a_cache_flush_loses_only_its_own_update() {
    for cache in [400, 1 << 20] {
        let b = StreamsBuilder::new();
        b.stream("in", strings())
            .group_by_key()
            .count(Materialized::named("c"))
            .to_stream()
            .process("fail-on-bad", || FailOnBad, &[])
            .to("out", Produced::with(StringSerde, IntegerSerde));
        let config = StreamsConfig::new("ff")
            .statestore_cache_max_bytes(cache)
            .processing_exception_handler(ErrorHandling::LogAndContinue);
        let mut d = TopologyTestDriver::new(b.build().unwrap(), config).unwrap();
        let input = d.input_topic("in", StringSerde, StringSerde);
        let batch: Vec<_> = ["a", "bad", "c", "d", "e", "f", "g", "h"]
            .iter()
            .map(|k| (s(k), s("v"), 0))
            .collect();
        input.pipe_inputs(&mut d, &batch).unwrap();
        let mut out: Vec<String> = d
            .output_topic("out", StringSerde, IntegerSerde)
            .read_key_values(&mut d)
            .unwrap()
            .into_iter()
            .map(|(k, _): (String, i64)| k)
            .collect();
        out.sort();
        assert_eq!(
            out,
            ["a", "c", "d", "e", "f", "g", "h"].map(s).to_vec(),
            "cache {cache}"
        );
    }
}

#[test]
fn records_with_a_null_key_are_skipped_unless_the_key_serde_has_a_null() {
    let b = StreamsBuilder::new();
    let input = b.stream("in", strings());
    input.to("copy", out_strings());
    input.group_by_key().count(Materialized::named("counts"));
    b.stream("in2", Consumed::with(Nullable(StringSerde), StringSerde))
        .to("copy2", Produced::with(Nullable(StringSerde), StringSerde));
    let mut d = TopologyTestDriver::new(b.build().unwrap(), StreamsConfig::new("nk")).unwrap();
    d.pipe_raw("in", None, None, Some(b"v"), 0).unwrap();
    d.pipe_raw("in", None, Some(b"k"), Some(b"v"), 0).unwrap();
    d.pipe_raw("in2", None, None, Some(b"v"), 0).unwrap();
    assert_eq!(
        d.output_topic("copy", StringSerde, StringSerde)
            .read_key_values(&mut d)
            .unwrap(),
        vec![(s("k"), s("v"))]
    );
    assert_eq!(
        d.key_value_store::<String, i64>("counts").unwrap(),
        vec![(s("k"), 1)]
    );
    let copy2 = d
        .output_topic("copy2", Nullable(StringSerde), StringSerde)
        .read_key_values(&mut d)
        .unwrap();
    assert_eq!(
        copy2,
        vec![(None, s("v"))],
        "a Nullable key serde keeps the null key null"
    );
}

#[test]
fn a_topic_read_by_two_sources_is_refused() {
    let b = StreamsBuilder::new();
    b.stream("in", strings()).to("out1", out_strings());
    b.stream("in", strings()).to("out2", out_strings());
    let err = b.build().err().unwrap();
    assert!(
        matches!(&err, Error::InvalidTopology { reason } if reason.contains("two sources")),
        "{err}"
    );
}
