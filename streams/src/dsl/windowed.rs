//! Windowed aggregations: [`KGroupedStream::windowed_by`] with [`TimeWindows`] (tumbling,
//! hopping), [`SessionWindows`] or [`SlidingWindows`], then count, reduce or aggregate into a
//! `KTable<Windowed<K>, V>`.
//!
//! **Store.** Windows live in a key-value store (record cache, changelog and restore like every
//! store) whose keys are ordered by time first (`[window start][key]`, sessions
//! `[session end][key][session start]`), so that closed and expired windows are one range at
//! its start, dropped with a range scan and deletes whenever stream time crosses a window
//! boundary. Retention (how long a window stays queryable) is at least size + grace (sessions:
//! grace) and defaults to it. A second small store, `<name>-meta` (not cached), keeps the
//! processor's stream time, so that a restarted task knows which windows it already closed.
//!
//! **Cost of a window.** Expiry writes nothing for windows that never left the record cache:
//! their last update is forwarded and they are dropped, and the changelog gets tombstones only
//! for windows it has. A new time window is not read from the backend when it cannot be there:
//! its start is past every window the store had when the task started (the newest is found at
//! init, at or after the persisted stream time) and this processor never created it (it keeps
//! the hashes of the keys of each open window it created; a hash collision only costs a read).
//!
//! **Lateness.** A record is aggregated into each of its windows that is still open
//! (`stream time < end + grace`); a record no window accepts is late: it is dropped, counted
//! ([`TimeWindowedKStream::dropped_records`]) and, if configured, written to a late-records
//! topic. Records with a negative timestamp are late too.
//!
//! **Emission.** By default every update goes through the record cache: one update per window
//! per commit (and before a window expires), as in Kafka Streams. With
//! [`TimeWindowedKStream::emit_on_window_close`] each window is emitted once, when stream time
//! closes it, read back from the (changelogged) store: there is no separate buffer, so the
//! emission survives restarts. The buffer bound is the number of open windows per task; when
//! a new window would exceed it, [`BufferFull::Fail`] fails the record and
//! [`BufferFull::EmitEarly`] emits the window's first result at once (it is emitted again,
//! final, when it closes).
//!
//! **Sliding windows** (see [`SlidingWindows`] for the windows and the grace rule) are computed
//! from the records themselves: besides the window store, a changelogged store
//! `<name>-records` keeps each accepted record (`[timestamp][key][sequence]`, the stream's value
//! serde) for as long as a window that can hold it or that it defines may still change
//! (`timestamp + d + 1 + grace >= stream time`). On a record at `t` the processor reads the
//! key's records in `[t - d - 1, t + d + 1]` and its windows starting in `[t - d, t + 1]`;
//! folds the record into every open window of the key that holds it (created, from the stored
//! records, if it does not exist yet: its own left window `[t - d, t]` and the right windows
//! `[t0 + 1, t0 + 1 + d]` of earlier records `t0` that it makes non-empty); and creates its own
//! right window `[t + 1, t + 1 + d]` from the records already there (out-of-order input). A new
//! window folds its records in timestamp order (ties: arrival order); a record joining an
//! existing window is folded last. Windows are stored by start like time windows; the output
//! key's window is `[start, start + d]`, end inclusive, as Kafka's (serialize it with
//! [`WindowedSerde::sliding`]). Cost: two range scans of `2 d` of stream time per record (over
//! every key of the task, the store being ordered by time first).
//!
//! **Idle input.** [`TimeWindowedKStream::close_on_idle`]: when no record arrived for that long
//! of wall-clock time, the processor's stream time moves forward by the wall-clock time that
//! passed, so the last windows close without new events.
//!
//! **Files.** One per kind of window (`windowed/time.rs`, `session.rs`, `sliding.rs`: its
//! windowed stream, where its windows are in the store, when they close, how a record updates
//! them), and what they share in `windowed/aggregate.rs` (stream time, closing and expiry,
//! emit-final, lateness, forwarding).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::builder::{Data, Key, Materialized};
use crate::dsl::{Change, KGroupedStream, KTable, split};
use crate::processor::Record;
use crate::serde::{IntegerSerde, SharedSerde, StringSerde};
use crate::topology::TopicRef;
use crate::window::{SlotKey, SlotKeySerde, Windowed, WindowedSerde};

use self::aggregate::{Aggregation, Out, WindowAggregate, WindowKind, Windows};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What emit-on-window-close does when a new window would exceed the bound on open windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferFull {
    /// Emits the new window's first result at once (not final: it is emitted again when the
    /// window closes).
    EmitEarly,
    /// Fails the record (the processing error handler decides what follows).
    Fail,
}

/// The options every windowed stream takes.
struct Options {
    emit_final: Option<(usize, BufferFull)>,
    idle: Option<i64>,
    retention: Option<i64>,
    late_topic: Option<String>,
    dropped: Arc<AtomicU64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            emit_final: None,
            idle: None,
            retention: None,
            late_topic: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Windows a grouped stream can be cut into: [`TimeWindows`], [`SessionWindows`] or
/// [`SlidingWindows`].
pub trait WindowedBy<K, V> {
    /// The windowed stream.
    type Stream;
    /// Cuts `grouped` into these windows.
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream;
}

impl<K: Key, V: Data> KGroupedStream<K, V> {
    /// Cuts the grouped stream into windows: `TimeWindows` (tumbling, hopping),
    /// `SessionWindows` or `SlidingWindows`.
    pub fn windowed_by<W: WindowedBy<K, V>>(self, windows: W) -> W::Stream {
        windows.windowed(self)
    }
}

type Init<VA> = Arc<dyn Fn() -> Option<VA> + Send + Sync>;
type Fold<K, V, VA> = Arc<dyn Fn(&K, &V, Option<VA>) -> Option<VA> + Send + Sync>;
type Merge<K, VA> = Arc<dyn Fn(&K, VA, VA) -> VA + Send + Sync>;

/// The options of a windowed stream, as methods of each (expanded in the kinds' modules,
/// whose parent is this one).
macro_rules! options {
    () => {
        /// Emits each window once, final, when stream time closes it (Kafka's
        /// `emitStrategy(onWindowClose)`), with at most `max_open_windows` open windows per
        /// task; `on_full` says what happens beyond.
        pub fn emit_on_window_close(
            mut self,
            max_open_windows: usize,
            on_full: super::BufferFull,
        ) -> Self {
            self.options.emit_final = Some((max_open_windows, on_full));
            self
        }

        /// Closes windows on idle input: when no record arrived for `idle` of wall-clock time,
        /// stream time moves forward by the wall-clock time that passed.
        pub fn close_on_idle(mut self, idle: std::time::Duration) -> Self {
            self.options.idle = Some(super::millis(idle).max(1));
            self
        }

        /// Keeps windows in the store for `retention` after they start (sessions: after they
        /// end), at least until they close.
        pub fn with_retention(mut self, retention: std::time::Duration) -> Self {
            self.options.retention = Some(super::millis(retention));
            self
        }

        /// Writes late records (with the key and value serdes of the grouped stream) to `topic`.
        pub fn late_records_to(mut self, topic: &str) -> Self {
            self.options.late_topic = Some(topic.to_owned());
            self
        }

        /// The number of late records dropped, over every task of the aggregation.
        pub fn dropped_records(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
            self.options.dropped.clone()
        }
    };
}

/// count, reduce and aggregate of a stream in windows of a fixed size (time or sliding).
macro_rules! fixed_size_aggregations {
    () => {
        /// The number of records per key and window.
        pub fn count(self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
            let m = if materialized.value_serde.is_none() {
                materialized.value_serde(crate::serde::IntegerSerde)
            } else {
                materialized
            };
            let (init, fold) = super::aggregate_fns(|| 0i64, |_, _, n| n + 1);
            let sum = Some(crate::dsl::split::sum());
            super::build(
                self.grouped,
                self.windows,
                self.options,
                m,
                init,
                fold,
                None,
                sum,
            )
        }

        /// Combines the values of each key and window with `reducer`.
        pub fn reduce(
            self,
            reducer: impl Fn(&V, &V) -> V + Send + Sync + 'static,
            materialized: Materialized<K, V>,
        ) -> KTable<Windowed<K>, V> {
            let mut m = materialized;
            m.value_serde = m
                .value_serde
                .clone()
                .or_else(|| self.grouped.stream.value_serde.clone());
            let reducer: crate::dsl::split::Reducer<V> = std::sync::Arc::new(reducer);
            let r = reducer.clone();
            let (init, fold) = super::reduce_fns(move |a: &V, b: &V| r(a, b));
            let merge = Some(crate::dsl::split::reducing(reducer));
            super::build(
                self.grouped,
                self.windows,
                self.options,
                m,
                init,
                fold,
                None,
                merge,
            )
        }

        /// Folds the values of each key and window into an aggregate that starts at
        /// `initializer()`.
        pub fn aggregate<VA: Data>(
            self,
            initializer: impl Fn() -> VA + Send + Sync + 'static,
            aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
            materialized: Materialized<K, VA>,
        ) -> KTable<Windowed<K>, VA> {
            let (init, fold) = super::aggregate_fns(initializer, aggregator);
            super::build(
                self.grouped,
                self.windows,
                self.options,
                materialized,
                init,
                fold,
                None,
                None,
            )
        }
    };
}

mod aggregate;
mod session;
mod sliding;
mod time;

pub use self::session::SessionWindowedKStream;
pub use self::sliding::SlidingWindowedKStream;
pub use self::time::TimeWindowedKStream;

fn reduce_fns<K, V: Data>(
    reducer: impl Fn(&V, &V) -> V + Send + Sync + 'static,
) -> (Init<V>, Fold<K, V, V>) {
    (
        Arc::new(|| None),
        Arc::new(move |_, v: &V, agg: Option<V>| {
            Some(match agg {
                Some(a) => reducer(&a, v),
                None => v.clone(),
            })
        }),
    )
}

fn aggregate_fns<K, V, VA: Data>(
    initializer: impl Fn() -> VA + Send + Sync + 'static,
    aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
) -> (Init<VA>, Fold<K, V, VA>) {
    let init = Arc::new(initializer);
    (
        Arc::new(move || Some(init())),
        Arc::new(move |k, v, a: Option<VA>| a.map(|a| aggregator(k, v, a))),
    )
}

/// The windowed aggregation of `grouped`; `merge` merges sessions, `split` merges the partials
/// of a hot-key split (`None`: the aggregation cannot split).
#[allow(clippy::too_many_arguments)]
fn build<K: Key, V: Data, VA: Data, W: Windows>(
    mut grouped: KGroupedStream<K, V>,
    windows: W,
    options: Options,
    materialized: Materialized<K, VA>,
    init: Init<VA>,
    fold: Fold<K, V, VA>,
    merge: Option<Merge<K, VA>>,
    split: Option<split::Merge<K, VA>>,
) -> KTable<Windowed<K>, VA> {
    let Some(hot) = grouped.grouped.hot_keys.take() else {
        let stream = grouped.partitioned(&materialized.name);
        return build_on(stream, windows, options, materialized, init, fold, merge);
    };
    let (pane, refused) = match windows.split_pane(options.late_topic.is_some()) {
        Ok(pane) => (Some(pane), None),
        Err(why) => (None, Some(why)),
    };
    let aggregate = materialized.value_serde.clone();
    let (name, i) = (&materialized.name, init.clone());
    let split = split::split_grouped(
        &grouped, hot, name, aggregate, i, fold, split, pane, refused,
    );
    match split {
        Some((stream, fold)) => build_on(stream, windows, options, materialized, init, fold, None),
        None => KTable::new(grouped.stream.graph, grouped.stream.node, None, None, None),
    }
}

/// The windowed aggregation of `stream` (partitioned by key).
fn build_on<K: Key, V: Data, VA: Data, W: Windows>(
    stream: crate::dsl::KStream<K, V>,
    windows: W,
    options: Options,
    materialized: Materialized<K, VA>,
    init: Init<VA>,
    fold: Fold<K, V, VA>,
    merge: Option<Merge<K, VA>>,
) -> KTable<Windowed<K>, VA> {
    let key_serde = materialized
        .key_serde
        .clone()
        .or_else(|| stream.key_serde.clone());
    let graph = stream.graph.clone();
    let mut g = graph.borrow_mut();
    let (Some(key_serde), Some(value_serde)) = (key_serde, materialized.value_serde.clone()) else {
        g.errors.push(format!(
            "windowed aggregation {:?} needs key and value serdes (Materialized::key_serde/value_serde)",
            materialized.name
        ));
        drop(g);
        return KTable::new(graph, stream.node, None, None, None);
    };
    let kind = windows.kind::<K, V, VA>();
    let size = kind.size();
    let retention = options.retention.unwrap_or(0).max(kind.min_retention());
    let slot_serde: SharedSerde<SlotKey<K>> = Arc::new(SlotKeySerde {
        inner: key_serde.clone(),
        session: <W::Kind<K, V, VA> as WindowKind<K, V, VA>>::SESSIONS,
    });
    let store = g.add_store(
        &materialized.name,
        materialized.store_type,
        materialized.caching,
        materialized.logging,
        slot_serde,
        value_serde.clone(),
    );
    let mut stores = vec![store];
    stores.extend(kind.declare_stores(
        &mut g,
        &materialized,
        &key_serde,
        stream.value_serde.clone(),
    ));
    let meta_name = format!("{}-meta", materialized.name);
    // Not cached: it holds one key, written once per commit, and a caching store takes an
    // equal share of the thread's cache budget.
    let meta = g.add_store::<String, i64>(
        &meta_name,
        materialized.store_type,
        false,
        materialized.logging,
        Arc::new(StringSerde),
        Arc::new(IntegerSerde),
    );
    let name = materialized.name.clone();
    let processor_name = format!("{name}-aggregate");
    let (emit_final, idle, dropped) = (options.emit_final, options.idle, options.dropped.clone());
    let pname = processor_name.clone();
    stores.push(meta);
    let node = g.add_processor::<K, V, Windowed<K>, Out<V, VA>, _>(
        "windowed-aggregate",
        Some(&processor_name),
        &[stream.node],
        stores,
        move || WindowAggregate {
            agg: Aggregation {
                name: pname.clone(),
                store_name: name.clone(),
                meta_name: meta_name.clone(),
                store: None,
                meta: None,
                init: init.clone(),
                fold: fold.clone(),
                merge: merge.clone(),
                emit_final,
                idle,
                retention,
                dropped: dropped.clone(),
                observed: i64::MIN,
                persisted: i64::MIN,
                closed_through: i64::MIN,
                expired_through: i64::MIN,
                open: 0,
                last_activity: 0,
            },
            kind: windows.kind(),
        },
    );
    let updates = g.add_fn::<Windowed<K>, Out<V, VA>, Windowed<K>, Change<VA>, _>(
        "windowed-updates",
        node,
        |ctx, r| match r.value {
            Out::Update(c) => ctx.forward(Record {
                key: r.key,
                value: c,
                timestamp: r.timestamp,
                headers: r.headers,
            }),
            Out::Late(_) => Ok(()),
        },
    );
    if let Some(topic) = &options.late_topic {
        if let Err(e) = core_log::validate_topic_name(topic) {
            g.errors.push(format!("late-records topic: {e}"));
        }
        match stream.value_serde.clone() {
            Some(value) => {
                let late =
                    g.add_fn::<Windowed<K>, Out<V, VA>, K, V, _>("late-records", node, |ctx, r| {
                        match r.value {
                            Out::Late(v) => ctx.forward(Record {
                                key: r.key.key,
                                value: v,
                                timestamp: r.timestamp,
                                headers: r.headers,
                            }),
                            Out::Update(_) => Ok(()),
                        }
                    });
                let produced = crate::builder::Produced {
                    key_serde: key_serde.clone(),
                    value_serde: value,
                    partitioner: None,
                };
                g.add_sink(None, late, TopicRef::User(topic.clone()), produced);
            }
            None => g.errors.push(format!(
                "late-records topic {topic:?} needs the stream's value serde"
            )),
        }
    }
    drop(g);
    let windowed_serde: SharedSerde<Windowed<K>> =
        Arc::new(WindowedSerde::from_shared(key_serde, size));
    KTable::new(
        graph,
        updates,
        Some(windowed_serde),
        Some(value_serde),
        None,
    )
}
