//! Hot-key splitting: a two-stage aggregation that takes a hot key's records off the one task
//! its key hashes to.
//!
//! ```text
//!  upstream task ─▶ router ──cold records──▶ <name>-repartition ───────────────────▶ merge (store)
//!                     │ hot: fold into partials                                        ▲
//!                     └─partials, at commit─▶ <name>-hot-keys-repartition ─▶ pre-aggregate ─┘
//!                         (a sub-key's partition, round robin)                (at commit)
//! ```
//!
//! The router (in the upstream task) counts each record's key in the task's heavy-hitter
//! summary and decides, once per record, where it goes: a cold key's record to the
//! aggregation's repartition topic as before; a hot key's record is folded, in the upstream
//! task, into a partial aggregate per key (and per pane, for time windows). At every commit
//! the router sends each partial to the hot-keys topic, in a partition chosen round robin
//! among `sub_keys` partitions from the key's own: the key's partials spread over `sub_keys`
//! tasks (its sub-keys). The pre-aggregate (stage 1) merges what it reads per key and pane and,
//! at its commit, forwards each partial to the aggregation's repartition topic, keyed by the
//! original key; the merge (stage 2, the aggregation's own processor and store) folds records
//! and merges partials. A hot key's records thus never cross a topic one by one.
//!
//! Whatever path a record took, it reaches the store once, as without splitting: partials are
//! sent in the commit that commits the input they fold (under exactly-once, in its
//! transaction), and nothing of them is kept past it, so a restart, or a key that turns hot
//! or cools down, neither loses a record nor counts one twice (under at-least-once a crash
//! or a failed commit repeats input, split or not). A partial that fails downstream (a serde
//! error) is handled as one record by the processing handler: with `log-and-continue` it
//! drops every record it folds. The decision is recorded by the topic (and partition) the
//! record's contribution was written to. Results equal the unsplit aggregation's when the
//! merge is associative and commutative and the initial value is its identity: count, and
//! reduce with an associative and commutative reducer. Time windows are split per pane (the
//! greatest common divisor of size and advance), so a partial falls in exactly the windows of
//! its records; its timestamp is their newest, and a window's grace is judged at the merge when
//! the partial arrives, up to two commit intervals after its records (a late partial drops all
//! its records): give the windows at least that much grace in event time.

use std::collections::HashMap;
use std::sync::Arc;

use crate::builder::{Data, Key, Produced};
use crate::dsl::KStream;
use crate::error::Result;
use crate::processor::{Processor, ProcessorContext, Record};
use crate::serde::{Serde, SerdeError, SharedSerde, encode};
use crate::topology::{TopicRef, repartition_topic};

/// Hot-key splitting for an aggregation, set with
/// [`Grouped::split_hot_keys`](crate::Grouped::split_hot_keys): which keys are split, and into
/// how many sub-keys. Only count and reduce split (their merge is the reducer or a sum); time
/// windows split, session and sliding windows do not.
///
/// ```
/// use streams::{Consumed, Grouped, HotKeys, Materialized, StreamsBuilder};
/// use streams::serde::{IntegerSerde, StringSerde};
///
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("likes", Consumed::with(StringSerde, StringSerde))
///     .group_by(
///         |_user, product| product.clone(),
///         Grouped::with(StringSerde, StringSerde)
///             .name("by-product")
///             .split_hot_keys(HotKeys::detected().sub_keys(4)),
///     )
///     .count(Materialized::<String, i64>::named("likes").value_serde(IntegerSerde));
/// let description = builder.build().unwrap().describe();
/// assert!(description.contains("by-product-hot-key-pre-aggregate"));
/// assert!(description.contains("<application.id>-by-product-hot-keys-repartition"));
/// ```
pub struct HotKeys<K> {
    pub(crate) detected: bool,
    pub(crate) keys: Option<KeyFilter<K>>,
    pub(crate) sub_keys: Option<u32>,
}

impl<K> Clone for HotKeys<K> {
    fn clone(&self) -> Self {
        HotKeys {
            detected: self.detected,
            keys: self.keys.clone(),
            sub_keys: self.sub_keys,
        }
    }
}

impl<K> HotKeys<K> {
    /// Splits the keys the task's detector finds hot (automatic): once the task's router has
    /// counted `hot.keys.min.records` records (split or not), a key whose estimated share of
    /// them is at least `hot.keys.min.share` (needs `hot.keys.capacity` above 0).
    pub fn detected() -> Self {
        HotKeys {
            detected: true,
            keys: None,
            sub_keys: None,
        }
    }

    /// Splits the keys `is_hot` accepts (opt-in), and no others.
    pub fn keys(is_hot: impl Fn(&K) -> bool + Send + Sync + 'static) -> Self {
        HotKeys {
            detected: false,
            keys: Some(Arc::new(is_hot)),
            sub_keys: None,
        }
    }

    /// Also splits the keys `is_hot` accepts.
    pub fn and_keys(mut self, is_hot: impl Fn(&K) -> bool + Send + Sync + 'static) -> Self
    where
        K: 'static,
    {
        self.keys = Some(match self.keys.take() {
            Some(before) => Arc::new(move |k: &K| before(k) || is_hot(k)),
            None => Arc::new(is_hot),
        });
        self
    }

    /// Spreads each hot key over `n` sub-keys (partitions of the hot-keys topic; default and
    /// most: all of them).
    pub fn sub_keys(mut self, n: u32) -> Self {
        self.sub_keys = Some(n.max(1));
        self
    }

    fn describe(&self) -> String {
        let which = match (self.detected, self.keys.is_some()) {
            (true, true) => "detected and chosen keys",
            (true, false) => "detected keys",
            _ => "chosen keys",
        };
        match self.sub_keys {
            Some(n) => format!("{which}, {n} sub-keys"),
            None => format!("{which}, a sub-key per partition"),
        }
    }
}

/// Which keys are hot, chosen by the user.
type KeyFilter<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;
/// A reduce's reducer.
pub(crate) type Reducer<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

/// What the merge reads: a record, or a partial aggregate of a hot key.
#[derive(Clone, Debug)]
pub(crate) enum Split<V, VA> {
    Record(V),
    Partial(VA),
}

/// Folds a value into an aggregate (`None`: none yet).
pub(crate) type Fold<K, V, VA> = Arc<dyn Fn(&K, &V, Option<VA>) -> Option<VA> + Send + Sync>;
/// The aggregate a key starts from.
pub(crate) type Init<VA> = Arc<dyn Fn() -> Option<VA> + Send + Sync>;
/// Merges a partial aggregate into an aggregate.
pub(crate) type Merge<K, VA> = Arc<dyn Fn(&K, Option<VA>, &VA) -> Option<VA> + Send + Sync>;

/// The merge of a count: a sum.
pub(crate) fn sum<K>() -> Merge<K, i64> {
    Arc::new(|_, acc, d| Some(acc.unwrap_or(0) + d))
}

/// The merge of a reduce: the reducer.
pub(crate) fn reducing<K: 'static, V: Clone + 'static>(reducer: Reducer<V>) -> Merge<K, V> {
    Arc::new(move |_, acc, d| {
        Some(match acc {
            Some(a) => reducer(&a, d),
            None => d.clone(),
        })
    })
}

/// The merge's fold: records fold as before, partials merge.
pub(crate) fn merged<K: 'static, V: 'static, VA: 'static>(
    fold: Fold<K, V, VA>,
    merge: Merge<K, VA>,
) -> Fold<K, Split<V, VA>, VA> {
    Arc::new(move |k, s, acc| match s {
        Split::Record(v) => fold(k, v, acc),
        Split::Partial(d) => merge(k, acc, d),
    })
}

/// How an aggregation splits: its functions, and the panes of its windows.
pub(crate) struct Plan<K, V, VA> {
    pub initial: Init<VA>,
    pub fold: Fold<K, V, VA>,
    pub merge: Merge<K, VA>,
    /// Time windows: partials are per pane of this many ms.
    pub pane: Option<i64>,
}

/// The serdes of a split aggregation.
pub(crate) struct Serdes<K, V, VA> {
    pub key: SharedSerde<K>,
    pub value: SharedSerde<V>,
    pub aggregate: SharedSerde<VA>,
}

/// Adds router, hot-keys topic, pre-aggregate and repartition to `stream`; returns the stream
/// the merge reads (the aggregation's repartition topic).
pub(crate) fn route<K: Key, V: Data, VA: Data>(
    stream: &KStream<K, V>,
    name: &str,
    hot: HotKeys<K>,
    serdes: Serdes<K, V, VA>,
    plan: Plan<K, V, VA>,
) -> KStream<K, Split<V, VA>> {
    let hot_name = format!("{name}-hot-keys");
    let split: SharedSerde<Split<V, VA>> = Arc::new(SplitSerde {
        value: serdes.value.clone(),
        aggregate: serdes.aggregate.clone(),
    });
    let routed: SharedSerde<Routed<V, VA>> = Arc::new(RoutedSerde {
        value: serdes.value.clone(),
        aggregate: serdes.aggregate.clone(),
    });
    let key = serdes.key;
    let mut g = stream.graph.borrow_mut();
    g.add_repartition_topic(name, None);
    g.add_repartition_topic(&hot_name, None);
    g.splits.push(format!(
        "{name}: {} -> {} -> {name}-hot-key-pre-aggregate -> {} -> merge",
        hot.describe(),
        repartition_topic("<application.id>", &hot_name),
        repartition_topic("<application.id>", name),
    ));
    let (topic, hot_topic) = (
        TopicRef::Repartition(name.to_owned()),
        TopicRef::Repartition(hot_name.clone()),
    );
    let plan = Arc::new(plan);
    let router = {
        let (key, topic, hot_topic) = (key.clone(), topic.clone(), hot_topic.clone());
        let plan = plan.clone();
        g.add_processor::<K, V, K, Routed<V, VA>, _>(
            "hot-key-router",
            Some(&format!("{name}-hot-key-router")),
            &[stream.node],
            Vec::new(),
            move || Router {
                key_serde: key.clone(),
                hot: hot.clone(),
                plan: plan.clone(),
                partials: Partials::new(),
                topic: topic.clone(),
                hot_topic: hot_topic.clone(),
                topic_name: Arc::from(""),
                summary: None,
                hot_partitions: 0,
                next_sub_key: 0,
                key_buf: Vec::new(),
            },
        )
    };
    // Child 0: cold records; child 1: hot keys' partials.
    g.add_sink_with(
        Some(&format!("{name}-repartition-sink")),
        router,
        topic.clone(),
        Produced {
            key_serde: key.clone(),
            value_serde: routed.clone(),
            partitioner: None,
        },
        false,
    );
    g.add_sink_with(
        Some(&format!("{name}-hot-key-repartition-sink")),
        router,
        hot_topic.clone(),
        Produced {
            key_serde: key.clone(),
            value_serde: routed,
            partitioner: Some(Arc::new(|_: &K, r: &Routed<V, VA>, _| match r {
                Routed::Hot(partition, _) => *partition,
                Routed::Cold(_) => 0,
            })),
        },
        false,
    );
    let hot_source = g.add_source(
        Some(&format!("{name}-hot-key-repartition-source")),
        vec![hot_topic],
        key.clone(),
        split.clone(),
    );
    let pre = g.add_processor::<K, Split<V, VA>, K, Split<V, VA>, _>(
        "hot-key-pre-aggregate",
        Some(&format!("{name}-hot-key-pre-aggregate")),
        &[hot_source],
        Vec::new(),
        move || PreAggregate {
            plan: plan.clone(),
            partials: Partials::new(),
        },
    );
    g.add_sink_with(
        Some(&format!("{name}-hot-key-partial-sink")),
        pre,
        topic.clone(),
        Produced {
            key_serde: key.clone(),
            value_serde: split.clone(),
            partitioner: None,
        },
        false,
    );
    let source = g.add_source(
        Some(&format!("{name}-repartition-source")),
        vec![topic],
        key.clone(),
        split.clone(),
    );
    drop(g);
    KStream::new(stream.graph.clone(), source, Some(key), Some(split), false)
}

/// The stream the merge of a split aggregation reads, built by [`route`] with the serdes the
/// grouping, the stream or the store give; `None` (and an error for `build`) when one is
/// missing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn split_aggregation<K: Key, V: Data, VA: Data>(
    stream: &KStream<K, V>,
    name: &str,
    hot: HotKeys<K>,
    key: Option<SharedSerde<K>>,
    value: Option<SharedSerde<V>>,
    aggregate: Option<SharedSerde<VA>>,
    plan: Plan<K, V, VA>,
) -> Option<KStream<K, Split<V, VA>>> {
    let key = key.or_else(|| stream.key_serde.clone());
    let value = value.or_else(|| stream.value_serde.clone());
    let (Some(key), Some(value), Some(aggregate)) = (key, value, aggregate) else {
        stream.graph.borrow_mut().errors.push(format!(
            "hot-key split {name:?} needs key, value and aggregate serdes (Grouped::with, \
             Materialized::value_serde)"
        ));
        return None;
    };
    let serdes = Serdes {
        key,
        value,
        aggregate,
    };
    Some(route(stream, name, hot, serdes, plan))
}

/// The stream a split aggregation's merge reads, and the merge's fold.
pub(crate) type Merging<K, V, VA> = (KStream<K, Split<V, VA>>, Fold<K, Split<V, VA>, VA>);

/// The stream the merge of `grouped`'s split aggregation reads (store `store`), with the
/// merge's fold; `None` (and an error for `build`) when the aggregation cannot split (`merge`
/// is `None`, or `refused` says why) or a serde is missing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn split_grouped<K: Key, V: Data, VA: Data>(
    grouped: &crate::dsl::KGroupedStream<K, V>,
    hot: HotKeys<K>,
    store: &str,
    aggregate: Option<SharedSerde<VA>>,
    initial: Init<VA>,
    fold: Fold<K, V, VA>,
    merge: Option<Merge<K, VA>>,
    pane: Option<i64>,
    refused: Option<&str>,
) -> Option<Merging<K, V, VA>> {
    let g = &grouped.grouped;
    let name = g.name.clone().unwrap_or_else(|| store.to_owned());
    let merge = match (merge, refused) {
        (Some(merge), None) => merge,
        (_, why) => {
            refuse(
                &grouped.stream,
                &name,
                why.unwrap_or("aggregate (it has no merge)"),
            );
            return None;
        }
    };
    let plan = Plan {
        initial,
        fold: fold.clone(),
        merge: merge.clone(),
        pane,
    };
    let key = g.key_serde.clone();
    let value = g.value_serde.clone();
    let stream = split_aggregation(&grouped.stream, &name, hot, key, value, aggregate, plan)?;
    Some((stream, merged(fold, merge)))
}

/// Refuses a split of an aggregation that cannot merge partials.
pub(crate) fn refuse<K, V>(stream: &KStream<K, V>, name: &str, what: &str) {
    stream.graph.borrow_mut().errors.push(format!(
        "hot-key split {name:?}: {what} cannot split (count and reduce can, in time windows too)"
    ));
}

/// What the router forwards: a cold record (to the repartition topic), or a hot key's partial
/// with the partition of the hot-keys topic it goes to.
#[derive(Clone)]
enum Routed<V, VA> {
    Cold(V),
    Hot(u32, VA),
}

/// Partial aggregates per key and pane, with the newest timestamp of what they fold; sent and
/// forgotten at every commit (or once there are [`MAX_PARTIALS`]).
struct Partials<K, VA> {
    map: HashMap<(K, i64), (Option<VA>, i64)>,
}

/// The partials of a task's router or pre-aggregate, at most this many before they are sent
/// early.
const MAX_PARTIALS: usize = 1 << 16;

impl<K: Key, VA: Data> Partials<K, VA> {
    fn new() -> Self {
        Partials {
            map: HashMap::new(),
        }
    }

    /// Folds into the partial of `key` in `pane` with `f`; whether there are now too many.
    fn update(
        &mut self,
        key: K,
        pane: i64,
        timestamp: i64,
        f: impl FnOnce(&K, Option<VA>) -> Option<VA>,
    ) -> bool {
        let slot = (key, pane);
        match self.map.get_mut(&slot) {
            Some((partial, newest)) => {
                *partial = f(&slot.0, partial.take());
                *newest = (*newest).max(timestamp);
                false
            }
            None => {
                let partial = f(&slot.0, None);
                self.map.insert(slot, (partial, timestamp));
                self.map.len() >= MAX_PARTIALS
            }
        }
    }

    /// Forwards every partial with `forward` and forgets them. Each on its own: a failure
    /// downstream (handled by the processing handler) does not lose the others; a failure that
    /// stops the task stops its commit too, so the records of the partials not sent are read
    /// again.
    fn send<KO, VO>(
        &mut self,
        ctx: &mut ProcessorContext<'_, KO, VO>,
        mut forward: impl FnMut(&mut ProcessorContext<'_, KO, VO>, K, VA, i64) -> Result<()>,
    ) -> Result<()> {
        for ((key, _), (partial, timestamp)) in self.map.drain() {
            if let Some(p) = partial {
                let r = forward(ctx, key, p, timestamp);
                ctx.cx.task.handle_node_error(r)?;
            }
        }
        Ok(())
    }
}

/// The pane of a record at `timestamp`; `None` for a record that windows drop as late one by
/// one (before time 0).
fn pane_of(pane: Option<i64>, timestamp: i64) -> Option<i64> {
    match pane {
        Some(_) if timestamp < 0 => None,
        Some(width) => Some(timestamp.div_euclid(width)),
        None => Some(0),
    }
}

/// Stage 0, in the upstream task: sends each cold record on to the repartition topic; folds a
/// hot key's records into partials, and at every commit sends each partial to a sub-key's
/// partition of the hot-keys topic (round robin).
struct Router<K, V, VA> {
    key_serde: SharedSerde<K>,
    hot: HotKeys<K>,
    plan: Arc<Plan<K, V, VA>>,
    partials: Partials<K, VA>,
    topic: TopicRef,
    hot_topic: TopicRef,
    /// `topic`, resolved.
    topic_name: Arc<str>,
    /// The task's summary of the repartition topic (`None`: detection off).
    summary: Option<usize>,
    hot_partitions: u32,
    next_sub_key: u32,
    key_buf: Vec<u8>,
}

impl<K: Key, V: Data, VA: Data> Router<K, V, VA> {
    fn encode_key(&mut self, key: &K) -> Result<bool> {
        encode(&*self.key_serde, &self.topic_name, key, &mut self.key_buf).map_err(|source| {
            crate::error::Error::Serde {
                topic: self.topic_name.to_string(),
                partition: None,
                offset: None,
                source,
            }
        })
    }

    fn send(&mut self, ctx: &mut ProcessorContext<'_, K, Routed<V, VA>>) -> Result<()> {
        let n = self.hot_partitions.max(1);
        let sub_keys = self.hot.sub_keys.map_or(n, |s| s.min(n));
        let mut partials = std::mem::replace(&mut self.partials, Partials::new());
        let r = partials.send(ctx, |ctx, key, partial, timestamp| {
            self.encode_key(&key)?;
            let own = core_log::partition_for_key(&self.key_buf, n);
            let partition = (own + self.next_sub_key % sub_keys) % n;
            self.next_sub_key = self.next_sub_key.wrapping_add(1);
            let r = Record::new(key, Routed::Hot(partition, partial), timestamp);
            ctx.forward_to_index(1, r)
        });
        // The map keeps its capacity.
        self.partials = partials;
        r
    }
}

impl<K: Key, V: Data, VA: Data> Processor<K, V, K, Routed<V, VA>> for Router<K, V, VA> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Routed<V, VA>>) -> Result<()> {
        let app = ctx.application_id().to_owned();
        self.topic_name = self.topic.resolve(&app).into();
        self.summary = ctx.cx.task.hot_keys.register(&self.topic_name);
        self.hot_partitions = ctx
            .cx
            .task
            .admin
            .partition_count(&self.hot_topic.resolve(&app))?;
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Routed<V, VA>>,
        r: Record<K, V>,
    ) -> Result<()> {
        let has_key = self.encode_key(&r.key)?;
        let detected = match self.summary {
            Some(s) if has_key => {
                let hot = ctx.cx.task.hot_keys.offer_is_hot(s, &self.key_buf);
                hot && self.hot.detected
            }
            _ => false,
        };
        let hot = has_key && (detected || self.hot.keys.as_ref().is_some_and(|f| f(&r.key)));
        let pane = pane_of(self.plan.pane, r.timestamp);
        let (true, Some(pane)) = (hot, pane) else {
            let r = Record {
                key: r.key,
                value: Routed::Cold(r.value),
                timestamp: r.timestamp,
                headers: r.headers,
            };
            return ctx.forward_to_index(0, r);
        };
        let plan = &*self.plan;
        let value = r.value;
        let full = self
            .partials
            .update(r.key, pane, r.timestamp, |key, current| {
                (plan.fold)(key, &value, current.or_else(|| (plan.initial)()))
            });
        if full {
            self.send(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Routed<V, VA>>) -> Result<()> {
        self.send(ctx)
    }
}

/// Stage 1: merges the partials of a sub-key's hot keys per key (and pane) and forwards them at
/// every commit.
struct PreAggregate<K, V, VA> {
    plan: Arc<Plan<K, V, VA>>,
    partials: Partials<K, VA>,
}

impl<K: Key, V: Data, VA: Data> Processor<K, Split<V, VA>> for PreAggregate<K, V, VA> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Split<V, VA>>,
        r: Record<K, Split<V, VA>>,
    ) -> Result<()> {
        let plan = &*self.plan;
        let Some(pane) = pane_of(plan.pane, r.timestamp) else {
            return ctx.forward(r);
        };
        let value = r.value;
        let full = self
            .partials
            .update(r.key, pane, r.timestamp, |key, current| {
                let current = current.or_else(|| (plan.initial)());
                match &value {
                    Split::Record(v) => (plan.fold)(key, v, current),
                    Split::Partial(d) => (plan.merge)(key, current, d),
                }
            });
        if full {
            self.flush(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Split<V, VA>>) -> Result<()> {
        self.partials.send(ctx, |ctx, key, partial, timestamp| {
            ctx.forward(Record::new(key, Split::Partial(partial), timestamp))
        })
    }
}

/// A [`Split`] as bytes: the value's or the partial's bytes, then a tag (0: a record, 1: a
/// record with a null value, 2: a partial, 3: a null partial). At the end, so that the inner serde writes into an
/// empty buffer, as serdes expect.
struct SplitSerde<V, VA> {
    value: SharedSerde<V>,
    aggregate: SharedSerde<VA>,
}

const RECORD: u8 = 0;
const NULL_RECORD: u8 = 1;
const PARTIAL: u8 = 2;
const NULL_PARTIAL: u8 = 3;

fn write_record<V: 'static>(
    serde: &dyn Serde<V>,
    topic: &str,
    value: &V,
    out: &mut Vec<u8>,
) -> Result<(), SerdeError> {
    if serde.is_null(value) {
        out.push(NULL_RECORD);
        return Ok(());
    }
    serde.serialize(topic, value, out)?;
    out.push(RECORD);
    Ok(())
}

fn write_partial<VA: 'static>(
    serde: &dyn Serde<VA>,
    topic: &str,
    partial: &VA,
    out: &mut Vec<u8>,
) -> Result<(), SerdeError> {
    if serde.is_null(partial) {
        out.push(NULL_PARTIAL);
        return Ok(());
    }
    serde.serialize(topic, partial, out)?;
    out.push(PARTIAL);
    Ok(())
}

impl<V: 'static, VA: 'static> Serde<Split<V, VA>> for SplitSerde<V, VA> {
    fn serialize(
        &self,
        topic: &str,
        value: &Split<V, VA>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        match value {
            Split::Record(v) => write_record(&*self.value, topic, v, out),
            Split::Partial(p) => write_partial(&*self.aggregate, topic, p, out),
        }
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<Split<V, VA>, SerdeError> {
        match bytes.split_last() {
            Some((&RECORD, rest)) => self.value.deserialize(topic, rest).map(Split::Record),
            Some((&NULL_RECORD, [])) => self
                .value
                .null()
                .map(Split::Record)
                .ok_or_else(|| "a null record for a value serde without null".into()),
            Some((&PARTIAL, rest)) => self.aggregate.deserialize(topic, rest).map(Split::Partial),
            Some((&NULL_PARTIAL, [])) => self
                .aggregate
                .null()
                .map(Split::Partial)
                .ok_or_else(|| "a null partial for an aggregate serde without null".into()),
            Some((tag, _)) => Err(format!("hot-key split: unknown tag {tag}").into()),
            None => Err("hot-key split: an empty value".into()),
        }
    }

    fn deserialize_owned(
        &self,
        topic: &str,
        mut bytes: Vec<u8>,
    ) -> Result<Split<V, VA>, SerdeError> {
        match bytes.last() {
            Some(&RECORD) => {
                bytes.pop();
                self.value
                    .deserialize_owned(topic, bytes)
                    .map(Split::Record)
            }
            _ => self.deserialize(topic, &bytes),
        }
    }
}

/// Writes what the router forwards as [`SplitSerde`] writes a record or a partial (it is never
/// read back as a `Routed`).
struct RoutedSerde<V, VA> {
    value: SharedSerde<V>,
    aggregate: SharedSerde<VA>,
}

impl<V: 'static, VA: 'static> Serde<Routed<V, VA>> for RoutedSerde<V, VA> {
    fn serialize(
        &self,
        topic: &str,
        value: &Routed<V, VA>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        match value {
            Routed::Cold(v) => write_record(&*self.value, topic, v, out),
            Routed::Hot(_, p) => write_partial(&*self.aggregate, topic, p, out),
        }
    }

    fn deserialize(&self, _topic: &str, _bytes: &[u8]) -> Result<Routed<V, VA>, SerdeError> {
        Err("the hot-key router's records are read as split records".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serde::{IntegerSerde, Nullable, StringSerde};

    #[test]
    fn split_records_round_trip_and_bad_bytes_are_errors() {
        let serde = SplitSerde::<Option<String>, Option<i64>> {
            value: Arc::new(Nullable(StringSerde)),
            aggregate: Arc::new(Nullable(IntegerSerde)),
        };
        for v in [
            Split::Record(Some("a".to_owned())),
            Split::Record(None),
            Split::Partial(Some(-3)),
            Split::Partial(None),
        ] {
            let mut out = Vec::new();
            serde.serialize("t", &v, &mut out).unwrap();
            let back = serde.deserialize("t", &out).unwrap();
            assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        for bad in [
            &[][..],
            &[1, 9][..],
            &[1, 2, PARTIAL][..],
            &[0, NULL_RECORD][..],
        ] {
            assert!(serde.deserialize("t", bad).is_err(), "{bad:?}");
        }
        let no_null = SplitSerde::<String, i64> {
            value: Arc::new(StringSerde),
            aggregate: Arc::new(IntegerSerde),
        };
        assert!(no_null.deserialize("t", &[NULL_RECORD]).is_err());
    }
}
