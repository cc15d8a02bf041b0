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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::builder::{Data, Key, Materialized};
use crate::dsl::{Change, KGroupedStream, KTable, split};
use crate::error::{Error, Result};
use crate::processor::{Processor, ProcessorContext, PunctuationType, Record, StoreHandle};
use crate::serde::{IntegerSerde, SharedSerde, StringSerde};
use crate::state::store::AnyStore;
use crate::topology::TopicRef;
use crate::window::{
    SessionWindows, SlidingWindows, SlotKey, SlotKeySerde, TimeWindows, Window, Windowed,
    WindowedSerde,
};

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

#[derive(Clone)]
enum Kind {
    Time(TimeWindows),
    Session(SessionWindows),
    Sliding(SlidingWindows),
}

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

/// A grouped stream in time windows (tumbling or hopping), ready for an aggregation.
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
    options: Options,
}

/// A grouped stream in session windows, ready for an aggregation.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
    options: Options,
}

/// A grouped stream in sliding windows, ready for an aggregation.
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
    options: Options,
}

/// Windows a grouped stream can be cut into: [`TimeWindows`], [`SessionWindows`] or
/// [`SlidingWindows`].
pub trait WindowedBy<K, V> {
    /// The windowed stream.
    type Stream;
    /// Cuts `grouped` into these windows.
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream;
}

impl<K, V> WindowedBy<K, V> for TimeWindows {
    type Stream = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        TimeWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
}

impl<K, V> WindowedBy<K, V> for SessionWindows {
    type Stream = SessionWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        SessionWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
}

impl<K, V> WindowedBy<K, V> for SlidingWindows {
    type Stream = SlidingWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        SlidingWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
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

macro_rules! options {
    () => {
        /// Emits each window once, final, when stream time closes it (Kafka's
        /// `emitStrategy(onWindowClose)`), with at most `max_open_windows` open windows per
        /// task; `on_full` says what happens beyond.
        pub fn emit_on_window_close(
            mut self,
            max_open_windows: usize,
            on_full: BufferFull,
        ) -> Self {
            self.options.emit_final = Some((max_open_windows, on_full));
            self
        }

        /// Closes windows on idle input: when no record arrived for `idle` of wall-clock time,
        /// stream time moves forward by the wall-clock time that passed.
        pub fn close_on_idle(mut self, idle: Duration) -> Self {
            self.options.idle = Some(millis(idle).max(1));
            self
        }

        /// Keeps windows in the store for `retention` after they start (sessions: after they
        /// end), at least until they close.
        pub fn with_retention(mut self, retention: Duration) -> Self {
            self.options.retention = Some(millis(retention));
            self
        }

        /// Writes late records (with the key and value serdes of the grouped stream) to `topic`.
        pub fn late_records_to(mut self, topic: &str) -> Self {
            self.options.late_topic = Some(topic.to_owned());
            self
        }

        /// The number of late records dropped, over every task of the aggregation.
        pub fn dropped_records(&self) -> Arc<AtomicU64> {
            self.options.dropped.clone()
        }
    };
}

/// count, reduce and aggregate of a stream in windows of a fixed size (time or sliding).
macro_rules! fixed_size_aggregations {
    ($variant:ident) => {
        /// The number of records per key and window.
        pub fn count(self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
            let m = if materialized.value_serde.is_none() {
                materialized.value_serde(IntegerSerde)
            } else {
                materialized
            };
            let (init, fold) = aggregate_fns(|| 0i64, |_, _, n| n + 1);
            let kind = Kind::$variant(self.windows);
            let sum = Some(split::sum());
            build(self.grouped, kind, self.options, m, init, fold, None, sum)
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
            let reducer: split::Reducer<V> = Arc::new(reducer);
            let r = reducer.clone();
            let (init, fold) = reduce_fns(move |a: &V, b: &V| r(a, b));
            let kind = Kind::$variant(self.windows);
            let merge = Some(split::reducing(reducer));
            build(self.grouped, kind, self.options, m, init, fold, None, merge)
        }

        /// Folds the values of each key and window into an aggregate that starts at
        /// `initializer()`.
        pub fn aggregate<VA: Data>(
            self,
            initializer: impl Fn() -> VA + Send + Sync + 'static,
            aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
            materialized: Materialized<K, VA>,
        ) -> KTable<Windowed<K>, VA> {
            let (init, fold) = aggregate_fns(initializer, aggregator);
            let kind = Kind::$variant(self.windows);
            build(
                self.grouped,
                kind,
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

impl<K: Key, V: Data> TimeWindowedKStream<K, V> {
    options!();
    fixed_size_aggregations!(Time);
}

impl<K: Key, V: Data> SlidingWindowedKStream<K, V> {
    options!();
    fixed_size_aggregations!(Sliding);
}

impl<K: Key, V: Data> SessionWindowedKStream<K, V> {
    options!();

    /// The number of records per key and session.
    pub fn count(self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        let m = if materialized.value_serde.is_none() {
            materialized.value_serde(IntegerSerde)
        } else {
            materialized
        };
        self.aggregate(|| 0, |_, _, n| n + 1, |_, a, b| a + b, m)
    }

    /// Combines the values of each key and session with `reducer` (also used to merge
    /// sessions).
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
        let reducer = Arc::new(reducer);
        let r = reducer.clone();
        let (init, fold) = reduce_fns(move |a: &V, b: &V| r(a, b));
        let merge: Merge<K, V> = Arc::new(move |_, a, b| reducer(&a, &b));
        let kind = Kind::Session(self.windows);
        build(
            self.grouped,
            kind,
            self.options,
            m,
            init,
            fold,
            Some(merge),
            None,
        )
    }

    /// Folds the values of each key and session into an aggregate that starts at
    /// `initializer()`; `merger` combines the aggregates of sessions a record joins.
    pub fn aggregate<VA: Data>(
        self,
        initializer: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
        merger: impl Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> KTable<Windowed<K>, VA> {
        let (init, fold) = aggregate_fns(initializer, aggregator);
        let kind = Kind::Session(self.windows);
        let merge: Merge<K, VA> = Arc::new(merger);
        build(
            self.grouped,
            kind,
            self.options,
            materialized,
            init,
            fold,
            Some(merge),
            None,
        )
    }
}

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

/// What the windowed aggregate forwards: table updates, or a late record (keyed by its
/// key in the window `[timestamp, timestamp]`).
#[derive(Clone)]
enum Out<V, VA> {
    Update(Change<VA>),
    Late(V),
}

/// The windowed aggregation of `grouped`; `merge` merges sessions, `split` merges the partials
/// of a hot-key split (`None`: the aggregation cannot split).
#[allow(clippy::too_many_arguments)]
fn build<K: Key, V: Data, VA: Data>(
    mut grouped: KGroupedStream<K, V>,
    kind: Kind,
    options: Options,
    materialized: Materialized<K, VA>,
    init: Init<VA>,
    fold: Fold<K, V, VA>,
    merge: Option<Merge<K, VA>>,
    split: Option<split::Merge<K, VA>>,
) -> KTable<Windowed<K>, VA> {
    let Some(hot) = grouped.grouped.hot_keys.take() else {
        let stream = grouped.partitioned(&materialized.name);
        return build_on(stream, kind, options, materialized, init, fold, merge);
    };
    // Every window boundary is a multiple of the pane (the gcd of size and advance): a pane
    // is in a window or out of it.
    let (pane, refused) = match &kind {
        Kind::Time(w) => {
            let (mut a, mut b) = (w.size, w.advance);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            let late = options.late_topic.is_some();
            let why = late.then_some("a windowed aggregation with late_records_to");
            (Some(a.max(1)), why)
        }
        _ => (None, Some("a session or sliding window aggregation")),
    };
    let aggregate = materialized.value_serde.clone();
    let (name, i) = (&materialized.name, init.clone());
    let split = split::split_grouped(
        &grouped, hot, name, aggregate, i, fold, split, pane, refused,
    );
    match split {
        Some((stream, fold)) => build_on(stream, kind, options, materialized, init, fold, None),
        None => KTable::new(grouped.stream.graph, grouped.stream.node, None, None, None),
    }
}

/// The windowed aggregation of `stream` (partitioned by key).
fn build_on<K: Key, V: Data, VA: Data>(
    stream: crate::dsl::KStream<K, V>,
    kind: Kind,
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
    let session = matches!(kind, Kind::Session(_));
    let (min_retention, size) = match &kind {
        Kind::Time(w) => (w.size.saturating_add(w.grace), Some(w.size)),
        Kind::Session(w) => (w.grace, None),
        // [start, start + d] closes once stream time > start + d + grace.
        Kind::Sliding(w) => (
            w.difference.saturating_add(w.grace).saturating_add(1),
            Some(w.difference),
        ),
    };
    let retention = options.retention.unwrap_or(0).max(min_retention);
    let slot_serde: SharedSerde<SlotKey<K>> = Arc::new(SlotKeySerde {
        inner: key_serde.clone(),
        session,
    });
    let store = g.add_store(
        &materialized.name,
        materialized.store_type,
        materialized.caching,
        materialized.logging,
        slot_serde,
        value_serde.clone(),
    );
    let records_name = format!("{}-records", materialized.name);
    let mut stores = vec![store];
    if matches!(kind, Kind::Sliding(_)) {
        match stream.value_serde.clone() {
            Some(value) => {
                let record_serde: SharedSerde<SlotKey<K>> = Arc::new(SlotKeySerde {
                    inner: key_serde.clone(),
                    session: true,
                });
                stores.push(g.add_store(
                    &records_name,
                    materialized.store_type,
                    false,
                    materialized.logging,
                    record_serde,
                    value,
                ));
            }
            None => g.errors.push(format!(
                "sliding-window aggregation {:?} keeps its records: it needs the stream's value serde",
                materialized.name
            )),
        }
    }
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
            name: pname.clone(),
            store_name: name.clone(),
            meta_name: meta_name.clone(),
            records_name: records_name.clone(),
            store: None,
            meta: None,
            records: None,
            kind: kind.clone(),
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
            records_through: i64::MIN,
            open: 0,
            last_activity: 0,
            stored_through: i64::MAX,
            fresh: BTreeMap::new(),
            fresh_len: 0,
            hasher: foldhash::fast::RandomState::default(),
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

struct WindowAggregate<K, V, VA> {
    name: String,
    store_name: String,
    meta_name: String,
    records_name: String,
    store: Option<StoreHandle<SlotKey<K>, VA>>,
    meta: Option<StoreHandle<String, i64>>,
    /// Sliding windows: the accepted records, by `[timestamp][key][sequence]`.
    records: Option<StoreHandle<SlotKey<K>, V>>,
    kind: Kind,
    init: Init<VA>,
    fold: Fold<K, V, VA>,
    merge: Option<Merge<K, VA>>,
    emit_final: Option<(usize, BufferFull)>,
    idle: Option<i64>,
    retention: i64,
    dropped: Arc<AtomicU64>,
    /// The processor's stream time (`i64::MIN`: none yet).
    observed: i64,
    /// The stream time last written to the meta store.
    persisted: i64,
    /// Windows whose store time is below this are closed (and were emitted if emit-final).
    closed_through: i64,
    /// Windows whose store time is below this are deleted.
    expired_through: i64,
    /// Sliding windows: records with a timestamp below this are deleted.
    records_through: i64,
    /// Open windows (emit-final only).
    open: usize,
    /// Wall-clock time of the last record or idle advance.
    last_activity: i64,
    /// Time windows: every window the store had when the task started (restored from the
    /// changelog or left by an earlier run) starts at or before this (`i64::MAX`: unknown).
    stored_through: i64,
    /// Time windows: per start after `stored_through`, the hashes of the keys whose window this
    /// processor created; an open window of a start past `stored_through` whose key's hash is
    /// not here was never written, so it is not read from the backend (`Store::update_known_at`).
    /// `None`: no longer tracked (past `FRESH_MAX`), read as before. Closed windows are dropped:
    /// they are never updated again.
    fresh: BTreeMap<i64, Option<foldhash::HashSet<u64>>>,
    /// The number of hashes in `fresh`.
    fresh_len: usize,
    hasher: foldhash::fast::RandomState,
}

type Ctx<'a, 'b, K, V, VA> = &'a mut ProcessorContext<'b, Windowed<K>, Out<V, VA>>;

const OBSERVED: &str = "observed";

/// At most this many key hashes (about 4 MiB) are kept per task to skip backend reads; the
/// window whose set would pass it is no longer tracked.
const FRESH_MAX: usize = 1 << 18;

impl<K: Key, V: Data, VA: Data> WindowAggregate<K, V, VA> {
    /// Store times below the returned cuts are closed / expired at stream time `t`.
    fn cuts(&self, t: i64) -> (i64, i64) {
        match &self.kind {
            Kind::Time(w) => (
                t.saturating_sub(w.size.saturating_add(w.grace) - 1),
                t.saturating_sub(self.retention - 1),
            ),
            Kind::Session(w) => (t.saturating_sub(w.grace), t.saturating_sub(self.retention)),
            Kind::Sliding(w) => (
                t.saturating_sub(w.difference.saturating_add(w.grace)),
                t.saturating_sub(self.retention - 1),
            ),
        }
    }

    /// Sliding windows: records below the returned timestamp can neither join nor define an
    /// open window at stream time `t` (the last window a record at `r` defines is
    /// `[r + 1, r + 1 + d]`, open while `t <= r + 1 + d + grace`).
    fn records_cut(&self, t: i64) -> Option<i64> {
        match &self.kind {
            Kind::Sliding(w) => {
                Some(t.saturating_sub(w.difference.saturating_add(w.grace).saturating_add(1)))
            }
            _ => None,
        }
    }

    /// Whether a window's store time lies in `[from, to)` (time windows start on multiples of
    /// the advance: most advances of stream time cross no window boundary).
    fn crosses(&self, from: i64, to: i64) -> bool {
        if to <= from {
            return false;
        }
        match &self.kind {
            Kind::Time(w) => {
                if from == i64::MIN {
                    return true;
                }
                let first = from.div_euclid(w.advance) * w.advance;
                let first = if first < from {
                    first + w.advance
                } else {
                    first
                };
                first < to
            }
            Kind::Session(_) | Kind::Sliding(_) => true,
        }
    }

    fn window(&self, slot: &SlotKey<K>) -> Window {
        match &self.kind {
            Kind::Time(w) => Window::new(slot.time, slot.time.saturating_add(w.size)),
            Kind::Session(_) => Window::new(slot.other, slot.time),
            Kind::Sliding(w) => Window::new(slot.time, slot.time.saturating_add(w.difference)),
        }
    }

    fn emit_time(&self, window: Window) -> i64 {
        match self.kind {
            Kind::Time(_) => window.end - 1,
            Kind::Session(_) | Kind::Sliding(_) => window.end,
        }
    }

    fn late(&self, ctx: Ctx<'_, '_, K, V, VA>, r: Record<K, V>) -> Result<()> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let ts = r.timestamp;
        ctx.forward(Record {
            key: Windowed::new(r.key, Window::new(ts, ts)),
            value: Out::Late(r.value),
            timestamp: ts,
            headers: r.headers,
        })
    }

    fn forward_update(
        ctx: Ctx<'_, '_, K, V, VA>,
        key: Windowed<K>,
        change: Change<VA>,
        ts: i64,
    ) -> Result<()> {
        let r = ctx.forward(Record::new(key, Out::Update(change), ts));
        ctx.cx.task.handle_node_error(r)
    }

    /// Forwards what the store's cache wrote, without the deletes of expired windows.
    fn forward_flushed(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let Some(h) = self.store else { return Ok(()) };
        if self.emit_final.is_some() {
            return Ok(());
        }
        let session = matches!(self.kind, Kind::Session(_));
        for f in ctx.store(h).take_flushed() {
            // Deletes reach downstream only for sessions merged away (expiry is not forwarded:
            // `delete_range` writes nothing to the cache).
            if f.new.is_none() && (!session || f.old.is_none()) {
                continue;
            }
            let window = self.window(&f.key);
            let Some(key) = f.key.key else { continue };
            Self::forward_update(
                ctx,
                Windowed::new(key, window),
                Change {
                    new: f.new,
                    old: f.old,
                },
                f.timestamp,
            )?;
        }
        Ok(())
    }

    /// Closes (emit-final: emits) and expires the windows stream time left behind.
    fn advance(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let Some(h) = self.store else { return Ok(()) };
        if self.observed == i64::MIN {
            return Ok(());
        }
        let (close, expire) = self.cuts(self.observed);
        if self.crosses(self.closed_through, close) {
            if self.emit_final.is_some() {
                let closed = ctx.store(h).range(
                    Some(&SlotKey::bound(self.closed_through)),
                    Some(&SlotKey::bound(close)),
                )?;
                self.open = self.open.saturating_sub(closed.len());
                for (slot, value) in closed {
                    let window = self.window(&slot);
                    let ts = self.emit_time(window);
                    let Some(key) = slot.key else { continue };
                    let change = Change {
                        new: Some(value),
                        old: None,
                    };
                    Self::forward_update(ctx, Windowed::new(key, window), change, ts)?;
                }
            }
            self.closed_through = close;
            // Closed windows are never updated again.
            if !self.fresh.is_empty() {
                let open = self.fresh.split_off(&close);
                let closed = std::mem::replace(&mut self.fresh, open);
                self.fresh_len -= closed.values().flatten().map(|s| s.len()).sum::<usize>();
            }
        }
        if self.crosses(self.expired_through, expire) {
            // One range delete: expired windows are neither decoded nor written; the last
            // updates of those still dirty in the cache are forwarded (emit on update) instead
            // of being written and deleted at once. The rest of the cache stays until the commit.
            let (lo, hi) = (self.expired_through, expire);
            let (from, to) = (SlotKey::bound(lo), SlotKey::bound(hi));
            let inside = |s: &SlotKey<K>| lo <= s.time && s.time < hi;
            ctx.store(h)
                .delete_range(&from, &to, inside, self.observed)?;
            self.expired_through = expire;
            self.forward_flushed(ctx)?;
        }
        if let (Some(rh), Some(cut)) = (self.records, self.records_cut(self.observed))
            && cut > self.records_through
        {
            let (lo, hi) = (self.records_through, cut);
            let (from, to) = (SlotKey::bound(lo), SlotKey::bound(hi));
            let inside = |s: &SlotKey<K>| lo <= s.time && s.time < hi;
            ctx.store(rh)
                .delete_range(&from, &to, inside, self.observed)?;
            self.records_through = cut;
        }
        Ok(())
    }

    fn observe(&mut self, ctx: Ctx<'_, '_, K, V, VA>, timestamp: i64) {
        self.observed = self.observed.max(ctx.stream_time()).max(timestamp);
        if self.idle.is_some() {
            self.last_activity = ctx.wall_clock_time();
        }
    }

    /// Counts a new window against the bound of emit-final; `Ok(true)`: emit it early.
    fn new_window(&mut self) -> Result<bool> {
        let Some((max, on_full)) = self.emit_final else {
            return Ok(false);
        };
        self.open += 1;
        if self.open <= max {
            return Ok(false);
        }
        match on_full {
            BufferFull::EmitEarly => Ok(true),
            BufferFull::Fail => {
                self.open -= 1;
                Err(Error::Processing {
                    processor: self.name.clone(),
                    source: format!(
                        "emit-on-window-close buffer full: {max} open windows (BufferFull::Fail)"
                    )
                    .into(),
                })
            }
        }
    }

    fn process_time(
        &mut self,
        ctx: Ctx<'_, '_, K, V, VA>,
        w: &TimeWindows,
        r: Record<K, V>,
    ) -> Result<()> {
        let Some(h) = self.store else { return Ok(()) };
        let observed = self.observed;
        // Kafka's rule: a window is open while stream time < end + grace. Ends grow with
        // starts, so the open windows of a record are the newest ones.
        let open = |start: i64| (start + w.size).saturating_add(w.grace) > observed;
        let Some((first, last)) = w.starts_for(r.timestamp).filter(|&(_, l)| open(l)) else {
            return self.late(ctx, r);
        };
        let mut start = first;
        while !open(start) {
            start += w.advance;
        }
        let (timestamp, value) = (r.timestamp, r.value);
        let mut key = Some(r.key);
        loop {
            // The newest window takes the key; the others (hopping) a copy.
            let slot_key = if start == last {
                key.take()
            } else {
                key.clone()
            };
            let slot = SlotKey {
                time: start,
                key: slot_key,
                other: 0,
            };
            // Emit-final: a new window beyond the bound is emitted at once (or fails).
            let early = self
                .emit_final
                .is_some_and(|(max, _)| self.open >= max)
                .then(|| slot.clone());
            let mut created = false;
            let (init, fold) = (&self.init, &self.fold);
            let stored_through = self.stored_through;
            let (fresh, fresh_len, hasher) = (&mut self.fresh, &mut self.fresh_len, &self.hasher);
            // Asked on a cache miss only: a window past everything the store started with,
            // whose key this processor never put in it, is not in the backend.
            let absent = |s: &SlotKey<K>| {
                let Some(k) = s.key.as_ref().filter(|_| s.time > stored_through) else {
                    return false;
                };
                let tracked = fresh
                    .entry(s.time)
                    .or_insert_with(|| Some(foldhash::HashSet::default()));
                match tracked {
                    Some(set) if *fresh_len < FRESH_MAX => {
                        let new = set.insert(hasher.hash_one(k));
                        *fresh_len += usize::from(new);
                        new
                    }
                    _ => {
                        // Too many: this window's keys are read from now on.
                        *fresh_len -= tracked.take().map_or(0, |set| set.len());
                        false
                    }
                }
            };
            ctx.store(h)
                .update_known_at(slot, timestamp, absent, |s, current| {
                    created = current.is_none();
                    match &s.key {
                        Some(k) => fold(k, &value, current.or_else(|| init())),
                        None => current,
                    }
                })?;
            if created
                && self.new_window()?
                && let Some(slot) = early
            {
                let new = ctx.store(h).get(&slot)?;
                if let Some(k) = slot.key {
                    let change = Change { new, old: None };
                    let key = Windowed::new(k, Window::new(start, start + w.size));
                    Self::forward_update(ctx, key, change, timestamp)?;
                }
            }
            if start >= last {
                return Ok(());
            }
            start += w.advance;
        }
    }

    fn process_session(
        &mut self,
        ctx: Ctx<'_, '_, K, V, VA>,
        w: &SessionWindows,
        r: Record<K, V>,
    ) -> Result<()> {
        let Some(h) = self.store else { return Ok(()) };
        let t = r.timestamp;
        let close = self.observed.saturating_sub(w.grace);
        // Open sessions of the key within the gap of the record (closed ones are final).
        let lo = t.saturating_sub(w.gap).max(close);
        let hi = t.saturating_add(w.gap);
        let found: Vec<(SlotKey<K>, VA)> = ctx
            .store(h)
            .range(Some(&SlotKey::bound(lo)), None)?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key) && s.other <= hi)
            .collect();
        if found.is_empty() && t < close {
            return self.late(ctx, r);
        }
        let (mut start, mut end) = (t, t);
        let mut agg = (self.init)();
        for (slot, value) in &found {
            start = start.min(slot.other);
            end = end.max(slot.time);
            agg = Some(match (agg, &self.merge) {
                (Some(a), Some(m)) => m(&r.key, a, value.clone()),
                _ => value.clone(),
            });
        }
        let agg = (self.fold)(&r.key, &r.value, agg);
        let new_slot = SlotKey {
            time: end,
            key: Some(r.key.clone()),
            other: start,
        };
        let store = ctx.store(h);
        let mut kept = false;
        for (slot, _) in &found {
            if *slot == new_slot {
                kept = true;
            } else {
                store.put_at(slot.clone(), None, t)?;
            }
        }
        store.put_at(new_slot, agg.clone(), t)?;
        if self.emit_final.is_some() {
            let merged = found.len() - usize::from(kept);
            self.open = self.open.saturating_sub(merged);
            if !kept && self.new_window()? {
                let change = Change {
                    new: agg,
                    old: None,
                };
                let key = Windowed::new(r.key.clone(), Window::new(start, end));
                Self::forward_update(ctx, key, change, t)?;
            }
        }
        Ok(())
    }

    /// A record into sliding windows (see the module documentation for the algorithm).
    fn process_sliding(
        &mut self,
        ctx: Ctx<'_, '_, K, V, VA>,
        w: &SlidingWindows,
        r: Record<K, V>,
    ) -> Result<()> {
        let (Some(h), Some(rh)) = (self.store, self.records) else {
            return Ok(());
        };
        let (t, d) = (r.timestamp, w.difference);
        // Kafka's rule: dropped when [t, t + d], the last window that can hold it, is closed.
        if t.saturating_add(d).saturating_add(w.grace) < self.observed {
            return self.late(ctx, r);
        }
        // The key's records that share a window with the record or define one that holds it.
        let lo = t.saturating_sub(d).saturating_sub(1).max(0);
        let hi = t.saturating_add(d).saturating_add(2);
        let records: Vec<(i64, V)> = ctx
            .store(rh)
            .range(Some(&SlotKey::bound(lo)), Some(&SlotKey::bound(hi)))?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key))
            .map(|(s, v)| (s.time, v))
            .collect();
        let seq = records.iter().filter(|(ts, _)| *ts == t).count();
        // The key's windows that hold t (start in [t - d, t]) and its right window (t + 1).
        let first = t.saturating_sub(d).max(0);
        let existing: HashSet<i64> = ctx
            .store(h)
            .range(
                Some(&SlotKey::bound(first)),
                Some(&SlotKey::bound(t.saturating_add(2))),
            )?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key))
            .map(|(s, _)| s.time)
            .collect();
        let mut starts: BTreeSet<i64> = existing.iter().copied().collect();
        // Its left window ([0, d] for t < d).
        starts.insert(first);
        // The right windows of earlier records that now hold t.
        for (ts, _) in &records {
            if *ts < t && ts.saturating_add(1).saturating_add(d) >= t {
                starts.insert(ts + 1);
            }
        }
        // Its own right window, if a record (out of order) is in it already.
        let right = t.saturating_add(1);
        if records
            .iter()
            .any(|(ts, _)| *ts >= right && *ts <= right.saturating_add(d))
        {
            starts.insert(right);
        }
        for start in starts {
            let end = start.saturating_add(d);
            // Closed windows keep their value (Kafka: `windowEnd >= streamTime - grace`).
            if end.saturating_add(w.grace) < self.observed {
                continue;
            }
            let holds = start <= t && t <= end;
            let in_window = |ts: i64| start <= ts && ts <= end;
            let last = records
                .iter()
                .map(|(ts, _)| *ts)
                .filter(|ts| in_window(*ts))
                .chain(holds.then_some(t))
                .max()
                .unwrap_or(t);
            let slot = SlotKey {
                time: start,
                key: Some(r.key.clone()),
                other: 0,
            };
            let window = Window::new(start, end);
            if existing.contains(&start) {
                if holds {
                    let (init, fold) = (&self.init, &self.fold);
                    ctx.store(h).update_at(slot, last, |_, current| {
                        fold(&r.key, &r.value, current.or_else(|| init()))
                    })?;
                }
                continue;
            }
            // A new window: its records in timestamp order, the new one after those at t.
            let mut agg = (self.init)();
            for (_, v) in records.iter().filter(|(ts, _)| in_window(*ts) && *ts <= t) {
                agg = (self.fold)(&r.key, v, agg);
            }
            if holds {
                agg = (self.fold)(&r.key, &r.value, agg);
            }
            for (_, v) in records.iter().filter(|(ts, _)| in_window(*ts) && *ts > t) {
                agg = (self.fold)(&r.key, v, agg);
            }
            ctx.store(h).put_at(slot, agg.clone(), last)?;
            if self.new_window()? {
                let change = Change {
                    new: agg,
                    old: None,
                };
                let key = Windowed::new(r.key.clone(), window);
                Self::forward_update(ctx, key, change, last)?;
            }
        }
        let slot = SlotKey {
            time: t,
            key: Some(r.key),
            other: i64::try_from(seq).unwrap_or(i64::MAX),
        };
        ctx.store(rh).put_at(slot, Some(r.value), t)
    }
}

impl<K: Key, V: Data, VA: Data> Processor<K, V, Windowed<K>, Out<V, VA>>
    for WindowAggregate<K, V, VA>
{
    fn init(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let store = ctx.key_value_store::<SlotKey<K>, VA>(&self.store_name)?;
        let meta = ctx.key_value_store::<String, i64>(&self.meta_name)?;
        ctx.store(store).set_forwarding(self.emit_final.is_none());
        self.store = Some(store);
        self.meta = Some(meta);
        if matches!(self.kind, Kind::Sliding(_)) {
            self.records = Some(ctx.key_value_store::<SlotKey<K>, V>(&self.records_name)?);
        }
        let persisted = ctx.store(meta).get(&OBSERVED.to_owned())?;
        if let Some(t) = persisted {
            self.observed = t;
            self.persisted = t;
            let (close, expire) = self.cuts(t);
            self.closed_through = close;
            self.expired_through = expire;
            self.records_through = self.records_cut(t).unwrap_or(i64::MIN);
        }
        if matches!(self.kind, Kind::Time(_)) {
            // The newest window the store starts with (restored, or left by an earlier run).
            // Windows start at or before the stream time that saw them, so the persisted stream
            // time is a bound unless a crash left newer windows than it (found past it).
            let from = persisted.map(|t| SlotKey::bound(t.saturating_add(1)));
            let newer = ctx.store(store).range(from.as_ref(), None)?;
            self.stored_through = newer
                .last()
                .map(|(s, _)| s.time)
                .or(persisted)
                .unwrap_or(i64::MIN);
            self.fresh.clear();
            self.fresh_len = 0;
        }
        if self.emit_final.is_some() {
            self.open = ctx
                .store(store)
                .range(Some(&SlotKey::bound(self.closed_through)), None)?
                .len();
        }
        if let Some(idle) = self.idle {
            self.last_activity = ctx.wall_clock_time();
            ctx.schedule(
                Duration::from_millis(idle.unsigned_abs()),
                PunctuationType::WallClockTime,
            )?;
        }
        Ok(())
    }

    fn process(&mut self, ctx: Ctx<'_, '_, K, V, VA>, r: Record<K, V>) -> Result<()> {
        if r.timestamp < 0 {
            return self.late(ctx, r);
        }
        self.observe(ctx, r.timestamp);
        // Windows the record's stream time closes go first (they make room in the bound).
        self.advance(ctx)?;
        match self.kind.clone() {
            Kind::Time(w) => self.process_time(ctx, &w, r)?,
            Kind::Session(w) => self.process_session(ctx, &w, r)?,
            Kind::Sliding(w) => self.process_sliding(ctx, &w, r)?,
        }
        self.forward_flushed(ctx)
    }

    fn punctuate(
        &mut self,
        ctx: Ctx<'_, '_, K, V, VA>,
        kind: PunctuationType,
        timestamp: i64,
    ) -> Result<()> {
        let (Some(idle), PunctuationType::WallClockTime) = (self.idle, kind) else {
            return Ok(());
        };
        let elapsed = timestamp - self.last_activity;
        if self.observed == i64::MIN || elapsed < idle {
            return Ok(());
        }
        self.observed = self.observed.saturating_add(elapsed);
        self.last_activity = timestamp;
        self.advance(ctx)?;
        self.forward_flushed(ctx)
    }

    fn flush(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        if let Some(h) = self.store
            && self.emit_final.is_none()
        {
            AnyStore::flush_cache(ctx.store(h))?;
            self.forward_flushed(ctx)?;
        }
        if let Some(m) = self.meta
            && self.observed != self.persisted
        {
            ctx.store(m).put(OBSERVED.to_owned(), self.observed)?;
            self.persisted = self.observed;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Restarts of a windowed count (emit on update) against a recount, with caches small
    //! enough to evict, none, or the default: windows the store starts with (kept on disk,
    //! restored from the changelog, or newer than the persisted stream time, as a crash after
    //! an eviction leaves them) keep their counts, so the backend reads that new windows skip
    //! are only those of windows nobody wrote.
    #![allow(clippy::unwrap_used, reason = "a panic is the test's failure report")]

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use core_log::{Admin, IsolationLevel, Log, Record as LogRecord, TopicConfig};

    use crate::serde::{IntegerSerde, Nullable, Serde, StringSerde};
    use crate::window::{SlotKey, SlotKeySerde, TimeWindows, Windowed, WindowedSerde};
    use crate::{Consumed, Materialized, Produced, Streams, StreamsBuilder, StreamsConfig};

    const PARTITIONS: u32 = 2;
    const SIZE: i64 = 100;
    const APP: &str = "win";

    fn ms(n: i64) -> Duration {
        Duration::from_millis(n as u64)
    }

    fn partition_of(key: &str) -> u32 {
        core_log::partition_for_key(key.as_bytes(), PARTITIONS)
    }

    fn topology(advance: i64) -> crate::Topology {
        let b = StreamsBuilder::new();
        b.stream(
            "events",
            Consumed::<String, i64>::with(StringSerde, IntegerSerde),
        )
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(ms(SIZE), ms(20)).advance_by(ms(advance)))
        .count(Materialized::named("w"))
        .to_stream()
        .to(
            "counts",
            Produced::with(
                WindowedSerde::time(StringSerde, ms(SIZE)),
                Nullable(IntegerSerde),
            ),
        );
        b.build().unwrap()
    }

    /// Appends `(key, timestamp)` events and adds them to `model` (count per key and window).
    fn produce(
        log: &Log,
        advance: i64,
        events: &[(String, i64)],
        model: &mut BTreeMap<(String, i64), i64>,
    ) {
        let w = TimeWindows::of_size_and_grace(ms(SIZE), ms(20)).advance_by(ms(advance));
        let one = 1i64.to_be_bytes();
        for (k, t) in events {
            let record = LogRecord::new(Some(k.as_bytes()), Some(&one[..]));
            log.partition("events", partition_of(k))
                .unwrap()
                .append(&[record.timestamp(*t)])
                .unwrap();
            for window in w.windows_for(*t) {
                *model.entry((k.clone(), window.start)).or_default() += 1;
            }
        }
    }

    /// In-order events of 12 keys from `from` to `to` (every key in every window).
    fn events(from: i64, to: i64) -> Vec<(String, i64)> {
        (from..to)
            .step_by(3)
            .enumerate()
            .map(|(i, t)| (format!("k{}", (i * 7) % 12), t))
            .collect()
    }

    fn run(log: &Log, state: &Path, advance: i64, cache: usize, eos: bool) {
        let mut config = StreamsConfig::new(APP)
            .num_stream_threads(1)
            .commit_interval_ms(20)
            .poll_ms(10)
            .statestore_cache_max_bytes(cache)
            .state_dir(state);
        if eos {
            config = config.exactly_once();
        }
        let app = Streams::new(topology(advance), log, config).unwrap();
        app.start().unwrap();
        let admin = Admin::new(log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let offsets = admin.list_consumer_group_offsets(APP).unwrap_or_default();
            let done = (0..PARTITIONS).all(|p| {
                let end = log
                    .partition("events", p)
                    .unwrap()
                    .high_watermark()
                    .unwrap();
                offsets
                    .iter()
                    .find(|(tp, _)| tp.topic == "events" && tp.partition == p)
                    .map_or(0, |(_, o)| o.offset)
                    == end
            });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the application did not catch up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        app.close().unwrap();
    }

    /// Calls `f` with the key and value of every record of `topic` read_committed readers see.
    fn read_committed(log: &Log, topic: &str, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        let mut buf = Vec::new();
        for p in 0..PARTITIONS {
            let part = log.partition(topic, p).unwrap();
            let mut offset = 0;
            while offset < part.last_stable_offset().unwrap() {
                let fetch = part
                    .read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)
                    .unwrap();
                for r in fetch.committed_records() {
                    f(r.key.unwrap(), r.value);
                }
                offset = fetch.next_offset();
            }
        }
    }

    /// The latest count of each (key, window start) in the output.
    fn latest(log: &Log) -> BTreeMap<(String, i64), i64> {
        let serde = WindowedSerde::time(StringSerde, ms(SIZE));
        let mut out = BTreeMap::new();
        read_committed(log, "counts", |k, v| {
            let k: Windowed<String> = serde.deserialize("counts", k).unwrap();
            let v = i64::from_be_bytes(v.unwrap().try_into().unwrap());
            out.insert((k.key, k.window.start), v);
        });
        out
    }

    /// What a restore of the window store would read: the latest value of each key of its
    /// changelog, without tombstoned keys.
    fn changelog_windows(log: &Log) -> BTreeMap<(String, i64), i64> {
        let topic = format!("{APP}-w-changelog");
        let slot_serde = SlotKeySerde {
            inner: std::sync::Arc::new(StringSerde),
            session: false,
        };
        let mut out = BTreeMap::new();
        read_committed(log, &topic, |k, v| {
            let slot = slot_serde.deserialize(&topic, k).unwrap();
            let key = (slot.key.unwrap(), slot.time);
            match v {
                Some(v) => out.insert(key, i64::from_be_bytes(v.try_into().unwrap())),
                None => out.remove(&key),
            };
        });
        out
    }

    fn restarts_keep_counts(advance: i64, eos: bool) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::builder(dir.path().join("log"))
            .background_maintenance(false)
            .open()
            .unwrap();
        for t in ["events", "counts"] {
            log.create_topic(t, PARTITIONS, TopicConfig::default())
                .unwrap();
        }
        let mut model = BTreeMap::new();
        let local = dir.path().join("local");
        // Windows open across each restart get updates of keys they have and of new ones.
        produce(&log, advance, &events(0, 350), &mut model);
        run(&log, &local, advance, 2_048, eos);
        produce(&log, advance, &events(350, 700), &mut model);
        run(&log, &local, advance, 0, eos);
        produce(&log, advance, &events(700, 1_050), &mut model);
        run(&log, &dir.path().join("restored-1"), advance, 10 << 20, eos);
        // A crash after an eviction: the window store's changelog has a window newer than
        // the stream time the meta store persisted (every event so far is below 1_050).
        let slot = SlotKey {
            time: 1_100,
            key: Some("k0".to_owned()),
            other: 0,
        };
        let slot_serde = SlotKeySerde {
            inner: std::sync::Arc::new(StringSerde),
            session: false,
        };
        let mut key = Vec::new();
        slot_serde.serialize("", &slot, &mut key).unwrap();
        log.partition(&format!("{APP}-w-changelog"), partition_of("k0"))
            .unwrap()
            .append(&[LogRecord::new(Some(&key), Some(&40i64.to_be_bytes()[..])).timestamp(1_100)])
            .unwrap();
        *model.entry(("k0".to_owned(), 1_100)).or_default() += 40;
        produce(&log, advance, &events(1_050, 1_400), &mut model);
        run(&log, &local, advance, 2_048, eos);
        let last = events(1_400, 1_750);
        produce(&log, advance, &last, &mut model);
        run(&log, &dir.path().join("restored-2"), advance, 0, eos);
        assert_eq!(latest(&log), model);
        // The changelog holds exactly the windows not expired (retention: size + grace), with
        // their counts: expired ones are tombstoned, none is lost.
        let mut stream_time = [i64::MIN; PARTITIONS as usize];
        for (k, t) in &last {
            let p = partition_of(k) as usize;
            stream_time[p] = stream_time[p].max(*t);
        }
        let live: BTreeMap<(String, i64), i64> = model
            .iter()
            .filter(|((k, start), _)| start + SIZE + 20 > stream_time[partition_of(k) as usize])
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(changelog_windows(&log), live);
    }

    #[test]
    fn tumbling_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE, false);
    }

    #[test]
    fn hopping_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE / 4, false);
    }

    #[test]
    fn exactly_once_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE / 2, true);
    }
}
