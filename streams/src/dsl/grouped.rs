//! Grouped streams and tables, and the aggregation processors behind count, reduce and
//! aggregate.

use std::sync::Arc;

use crate::builder::{Data, Grouped, Key, Materialized};
use crate::dsl::{Change, KStream, KTable, split};
use crate::error::Result;
use crate::processor::{Processor, ProcessorContext, Record, StoreHandle};
use crate::serde::{IntegerSerde, Serde, SerdeError, SharedSerde};
use crate::state::store::AnyStore;
use crate::topology::TopicRef;

/// A stream grouped by key, ready for an aggregation.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) grouped: Grouped<K, V>,
}

type Init<VA> = Arc<dyn Fn() -> VA + Send + Sync>;
type Fold<K, V, VA> = Arc<dyn Fn(&K, &V, VA) -> VA + Send + Sync>;

impl<K: Key, V: Data> KGroupedStream<K, V> {
    pub(crate) fn new(stream: KStream<K, V>, grouped: Grouped<K, V>) -> Self {
        KGroupedStream { stream, grouped }
    }

    /// The number of records per key, in the store `materialized` names.
    pub fn count(self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        let m = if materialized.value_serde.is_none() {
            materialized.value_serde(IntegerSerde)
        } else {
            materialized
        };
        self.aggregate_with(
            m,
            Arc::new(|| Some(0)),
            Arc::new(|_, _, n: Option<i64>| n.map(|n| n + 1)),
            Some(split::sum()),
        )
    }

    /// Combines the values of each key with `reducer` (the first value is kept as it is).
    pub fn reduce(
        self,
        reducer: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let value = materialized
            .value_serde
            .clone()
            .or_else(|| self.stream.value_serde.clone());
        let mut m = materialized;
        m.value_serde = value;
        let reducer: split::Reducer<V> = Arc::new(reducer);
        let merge = split::reducing(reducer.clone());
        self.aggregate_with(
            m,
            Arc::new(|| None),
            Arc::new(move |_, v: &V, agg: Option<V>| {
                Some(match agg {
                    Some(a) => reducer(&a, v),
                    None => v.clone(),
                })
            }),
            Some(merge),
        )
    }

    /// Folds the values of each key into an aggregate that starts at `initializer()`.
    pub fn aggregate<VA: Data>(
        self,
        initializer: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> KTable<K, VA> {
        let init = Arc::new(initializer);
        let agg = Arc::new(aggregator);
        self.aggregate_with(
            materialized,
            Arc::new(move || Some(init())),
            Arc::new(move |k, v, a: Option<VA>| a.map(|a| agg(k, v, a))),
            None,
        )
    }

    /// The grouped stream, through a repartition topic (named by the grouping, else `store`)
    /// if its key may have changed: each key's records in one task.
    pub(crate) fn partitioned(self, store: &str) -> KStream<K, V> {
        if !self.stream.repartition_required {
            return self.stream;
        }
        let name = self
            .grouped
            .name
            .clone()
            .unwrap_or_else(|| store.to_owned());
        let key = self
            .grouped
            .key_serde
            .clone()
            .or_else(|| self.stream.key_serde.clone());
        let value = self
            .grouped
            .value_serde
            .clone()
            .or_else(|| self.stream.value_serde.clone());
        self.stream.through_repartition(&name, None, key, value)
    }

    /// `fold` gets the current aggregate, `initial()` when the key has none; `merge` merges
    /// partials when the grouping splits hot keys (`None`: this aggregation cannot).
    fn aggregate_with<VA: Data>(
        mut self,
        materialized: Materialized<K, VA>,
        initial: Init<Option<VA>>,
        fold: Fold<K, V, Option<VA>>,
        merge: Option<split::Merge<K, VA>>,
    ) -> KTable<K, VA> {
        let Some(hot) = self.grouped.hot_keys.take() else {
            let stream = self.partitioned(&materialized.name);
            return aggregate_node(stream, materialized, initial, fold);
        };
        let aggregate = materialized.value_serde.clone();
        let (name, init) = (&materialized.name, initial.clone());
        match split::split_grouped(&self, hot, name, aggregate, init, fold, merge, None, None) {
            Some((stream, fold)) => aggregate_node(stream, materialized, initial, fold),
            None => KTable::new(self.stream.graph, self.stream.node, None, None, None),
        }
    }
}

/// The aggregation's processor and store over `stream` (partitioned by key).
fn aggregate_node<K: Key, V: Data, VA: Data>(
    stream: KStream<K, V>,
    materialized: Materialized<K, VA>,
    initial: Init<Option<VA>>,
    fold: Fold<K, V, Option<VA>>,
) -> KTable<K, VA> {
    let key_serde = materialized
        .key_serde
        .clone()
        .or_else(|| stream.key_serde.clone());
    let graph = stream.graph.clone();
    let mut g = graph.borrow_mut();
    let (Some(key_serde), Some(value_serde)) = (key_serde, materialized.value_serde.clone()) else {
        g.errors.push(format!(
            "aggregation {:?} needs key and value serdes (Materialized::key_serde/value_serde)",
            materialized.name
        ));
        drop(g);
        return KTable::new(graph, stream.node, None, None, None);
    };
    let store = g.add_store(
        &materialized.name,
        materialized.store_type,
        materialized.caching,
        materialized.logging,
        key_serde.clone(),
        value_serde.clone(),
    );
    let name = materialized.name.clone();
    let node = g.add_processor::<K, V, K, Change<VA>, _>(
        "aggregate",
        Some(&format!("{name}-aggregate")),
        &[stream.node],
        vec![store],
        move || StreamAggregate {
            store_name: name.clone(),
            store: None,
            initial: initial.clone(),
            fold: fold.clone(),
        },
    );
    drop(g);
    KTable::new(
        graph,
        node,
        Some(key_serde),
        Some(value_serde),
        Some(materialized.name),
    )
}

/// Looks up the store and makes it forward what its cache writes.
pub(crate) fn open_store<K: Key, V: Data, KO, VO>(
    ctx: &mut ProcessorContext<'_, KO, VO>,
    name: &str,
) -> Result<StoreHandle<K, V>> {
    let handle = ctx.key_value_store::<K, V>(name)?;
    ctx.store(handle).set_forwarding(true);
    Ok(handle)
}

/// Forwards what the store's cache wrote (at a flush or an eviction) as table updates.
pub(crate) fn forward_flushed<K: Key, V: Data>(
    ctx: &mut ProcessorContext<'_, K, Change<V>>,
    store: StoreHandle<K, V>,
) -> Result<()> {
    // Each update on its own: a failure downstream (handled by the processing handler) does
    // not lose the updates of the other keys.
    for f in ctx.store(store).take_flushed() {
        let r = ctx.forward(Record::new(
            f.key,
            Change {
                new: f.new,
                old: f.old,
            },
            f.timestamp,
        ));
        ctx.cx.task.handle_node_error(r)?;
    }
    Ok(())
}

/// Flushes the store's cache (once `init` opened it) and forwards what it wrote.
pub(crate) fn flush_and_forward<K: Key, V: Data>(
    ctx: &mut ProcessorContext<'_, K, Change<V>>,
    store: Option<StoreHandle<K, V>>,
) -> Result<()> {
    let Some(store) = store else { return Ok(()) };
    AnyStore::flush_cache(ctx.store(store))?;
    forward_flushed(ctx, store)
}

struct StreamAggregate<K, V, VA> {
    store_name: String,
    store: Option<StoreHandle<K, VA>>,
    initial: Init<Option<VA>>,
    fold: Fold<K, V, Option<VA>>,
}

impl<K: Key, V: Data, VA: Data> Processor<K, V, K, Change<VA>> for StreamAggregate<K, V, VA> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        self.store = Some(open_store(ctx, &self.store_name)?);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
        r: Record<K, V>,
    ) -> Result<()> {
        let Some(handle) = self.store else {
            return Ok(());
        };
        let (initial, fold) = (&self.initial, &self.fold);
        ctx.store(handle)
            .update_at(r.key, r.timestamp, |key, current| {
                fold(key, &r.value, current.or_else(|| initial()))
            })?;
        forward_flushed(ctx, handle)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        flush_and_forward(ctx, self.store)
    }
}

/// A table grouped by a new key, ready for an aggregation with an adder and a subtractor.
pub struct KGroupedTable<K, V> {
    pub(crate) parent: KTable<K, V>,
    pub(crate) node: usize,
    pub(crate) grouped: Grouped<K, V>,
}

type TableFold<K, V, VA> = Arc<dyn Fn(&K, &V, VA) -> VA + Send + Sync>;

impl<K: Key, V: Data> KGroupedTable<K, V> {
    /// The number of rows per key: +1 when a row takes this key, -1 when it leaves it.
    pub fn count(mut self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        let m = if materialized.value_serde.is_none() {
            materialized.value_serde(IntegerSerde)
        } else {
            materialized
        };
        let Some(hot) = self.grouped.hot_keys.take() else {
            return self.aggregate(|| 0, |_, _, n| n + 1, |_, _, n| n - 1, m);
        };
        let name = self.grouped.name.clone().unwrap_or_else(|| m.name.clone());
        let change = self
            .grouped
            .value_serde
            .clone()
            .map(|v| Arc::new(ChangeSerde(v)) as SharedSerde<Change<V>>);
        let graph = self.parent.graph.clone();
        let rows = KStream::new(
            graph.clone(),
            self.node,
            self.grouped.key_serde.clone(),
            None,
            true,
        );
        let initial: Init<Option<i64>> = Arc::new(|| Some(0));
        // A row taking the key counts +1, one leaving it -1.
        let fold: Fold<K, Change<V>, Option<i64>> = Arc::new(|_, c, n| {
            n.map(|n| n - i64::from(c.old.is_some()) + i64::from(c.new.is_some()))
        });
        let merge = split::sum();
        let plan = split::Plan {
            initial: initial.clone(),
            fold: fold.clone(),
            merge: merge.clone(),
            pane: None,
        };
        match split::split_aggregation(&rows, &name, hot, None, change, m.value_serde.clone(), plan)
        {
            Some(stream) => aggregate_node(stream, m, initial, split::merged(fold, merge)),
            None => KTable::new(graph, self.node, None, None, None),
        }
    }

    /// Combines values with `adder` when a row takes the key and `subtractor` when it leaves.
    pub fn reduce(
        self,
        adder: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        subtractor: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let value = materialized
            .value_serde
            .clone()
            .or_else(|| self.grouped.value_serde.clone());
        let mut m = materialized;
        m.value_serde = value;
        let adder = Arc::new(adder);
        self.aggregate_with(
            m,
            Arc::new(move |_, v: &V, agg: Option<V>| {
                Some(match agg {
                    Some(a) => adder(&a, v),
                    None => v.clone(),
                })
            }),
            Arc::new(move |_, v: &V, agg: Option<V>| agg.map(|a| subtractor(&a, v))),
            Arc::new(|| None),
        )
    }

    /// Folds rows into an aggregate per key: `adder` when a row takes the key, `subtractor`
    /// when it leaves it (an update that keeps the key does both, subtracting first).
    pub fn aggregate<VA: Data>(
        self,
        initializer: impl Fn() -> VA + Send + Sync + 'static,
        adder: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
        subtractor: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> KTable<K, VA> {
        let init = Arc::new(initializer);
        let (adder, subtractor) = (Arc::new(adder), Arc::new(subtractor));
        self.aggregate_with(
            materialized,
            Arc::new(move |k, v, a: Option<VA>| a.map(|a| adder(k, v, a))),
            Arc::new(move |k, v, a: Option<VA>| a.map(|a| subtractor(k, v, a))),
            Arc::new(move || Some(init())),
        )
    }

    fn aggregate_with<VA: Data>(
        self,
        materialized: Materialized<K, VA>,
        adder: TableFold<K, V, Option<VA>>,
        subtractor: TableFold<K, V, Option<VA>>,
        initial: Init<Option<VA>>,
    ) -> KTable<K, VA> {
        let graph = self.parent.graph.clone();
        let mut g = graph.borrow_mut();
        let name = self
            .grouped
            .name
            .clone()
            .unwrap_or_else(|| materialized.name.clone());
        if self.grouped.hot_keys.is_some() {
            g.errors.push(format!(
                "hot-key split {name:?}: a table's reduce and aggregate cannot split (count can)"
            ));
        }
        let (Some(key), Some(value)) = (
            self.grouped.key_serde.clone(),
            self.grouped.value_serde.clone(),
        ) else {
            g.errors.push(format!(
                "table group_by {name:?} needs key and value serdes (Grouped::with)"
            ));
            drop(g);
            return KTable::new(graph, self.node, None, None, None);
        };
        let Some(agg_serde) = materialized.value_serde.clone() else {
            g.errors.push(format!(
                "aggregation {:?} needs a value serde (Materialized::value_serde)",
                materialized.name
            ));
            drop(g);
            return KTable::new(graph, self.node, None, None, None);
        };
        let key_serde = materialized
            .key_serde
            .clone()
            .unwrap_or_else(|| key.clone());
        g.add_repartition_topic(&name, None);
        let topic = TopicRef::Repartition(name.clone());
        let change_serde: SharedSerde<Change<V>> = Arc::new(ChangeSerde(value.clone()));
        let produced = crate::builder::Produced {
            key_serde: key.clone(),
            value_serde: change_serde.clone(),
            partitioner: None,
        };
        g.add_sink(
            Some(&format!("{name}-repartition-sink")),
            self.node,
            topic.clone(),
            produced,
        );
        let source = g.add_source(
            Some(&format!("{name}-repartition-source")),
            vec![topic],
            key,
            change_serde,
        );
        let store = g.add_store(
            &materialized.name,
            materialized.store_type,
            materialized.caching,
            materialized.logging,
            key_serde.clone(),
            agg_serde.clone(),
        );
        let store_name = materialized.name.clone();
        let node = g.add_processor::<K, Change<V>, K, Change<VA>, _>(
            "table-aggregate",
            Some(&format!("{store_name}-aggregate")),
            &[source],
            vec![store],
            move || TableAggregate {
                store_name: store_name.clone(),
                store: None,
                adder: adder.clone(),
                subtractor: subtractor.clone(),
                initial: initial.clone(),
            },
        );
        drop(g);
        KTable::new(
            graph,
            node,
            Some(key_serde),
            Some(agg_serde),
            Some(materialized.name),
        )
    }
}

struct TableAggregate<K, V, VA> {
    store_name: String,
    store: Option<StoreHandle<K, VA>>,
    adder: TableFold<K, V, Option<VA>>,
    subtractor: TableFold<K, V, Option<VA>>,
    initial: Init<Option<VA>>,
}

impl<K: Key, V: Data, VA: Data> Processor<K, Change<V>, K, Change<VA>>
    for TableAggregate<K, V, VA>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        self.store = Some(open_store(ctx, &self.store_name)?);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<VA>>,
        r: Record<K, Change<V>>,
    ) -> Result<()> {
        let Some(handle) = self.store else {
            return Ok(());
        };
        let (initial, adder, subtractor) = (&self.initial, &self.adder, &self.subtractor);
        ctx.store(handle)
            .update_at(r.key, r.timestamp, |key, current| {
                let mut agg = current.or_else(|| initial());
                if let Some(old) = &r.value.old {
                    agg = subtractor(key, old, agg);
                }
                if let Some(new) = &r.value.new {
                    agg = adder(key, new, agg);
                }
                agg
            })?;
        forward_flushed(ctx, handle)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<VA>>) -> Result<()> {
        flush_and_forward(ctx, self.store)
    }
}

/// A table update in a repartition topic: a flags byte (1: old present, 2: new present), the
/// old value's length (u32, big-endian) and bytes, then the new value's bytes.
pub(crate) struct ChangeSerde<V>(pub SharedSerde<V>);

impl<V: 'static> Serde<Change<V>> for ChangeSerde<V> {
    fn serialize(
        &self,
        topic: &str,
        value: &Change<V>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        let flags = u8::from(value.old.is_some()) | (u8::from(value.new.is_some()) << 1);
        // `out` may hold bytes already: offsets are relative to where this value starts.
        let base = out.len();
        out.push(flags);
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        if let Some(old) = &value.old {
            crate::serde::append(
                &|v: &V, b: &mut Vec<u8>| self.0.serialize(topic, v, b),
                old,
                out,
            )?;
        }
        let len = u32::try_from(out.len() - start).map_err(|_| "old value longer than 4 GiB")?;
        out[base + 1..base + 5].copy_from_slice(&len.to_be_bytes());
        if let Some(new) = &value.new {
            crate::serde::append(
                &|v: &V, b: &mut Vec<u8>| self.0.serialize(topic, v, b),
                new,
                out,
            )?;
        }
        Ok(())
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<Change<V>, SerdeError> {
        let (&flags, rest) = bytes.split_first().ok_or("empty table update")?;
        if flags > 3 || rest.len() < 4 {
            return Err("malformed table update header".into());
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if len > rest.len() {
            return Err(format!(
                "table update: old value of {len} bytes in {} bytes",
                rest.len()
            )
            .into());
        }
        let (old, new) = rest.split_at(len);
        Ok(Change {
            old: if flags & 1 != 0 {
                Some(self.0.deserialize(topic, old)?)
            } else {
                None
            },
            new: if flags & 2 != 0 {
                Some(self.0.deserialize(topic, new)?)
            } else {
                None
            },
        })
    }
}
