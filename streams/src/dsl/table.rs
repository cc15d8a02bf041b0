//! [`KTable`]: the latest value per key, as a stream of updates.

use std::cell::RefCell;
use std::rc::Rc;

use crate::builder::{Consumed, Data, Graph, Grouped, Key, Materialized};
use crate::dsl::grouped::{flush_and_forward, forward_flushed, open_store};
use crate::dsl::{Change, KGroupedTable, KStream};
use crate::error::Result;
use crate::processor::{Processor, ProcessorContext, Record, StoreHandle};
use crate::serde::SharedSerde;

/// A table: the latest value per key (Kafka's `KTable`). Downstream it is a stream of
/// updates, each with the value after and before; with a store's record cache, one update per
/// key per commit.
pub struct KTable<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) node: usize,
    pub(crate) key_serde: Option<SharedSerde<K>>,
    pub(crate) value_serde: Option<SharedSerde<V>>,
    pub(crate) store: Option<String>,
}

impl<K: Key, V: Data> KTable<K, V> {
    pub(crate) fn new(
        graph: Rc<RefCell<Graph>>,
        node: usize,
        key_serde: Option<SharedSerde<K>>,
        value_serde: Option<SharedSerde<V>>,
        store: Option<String>,
    ) -> Self {
        KTable {
            graph,
            node,
            key_serde,
            value_serde,
            store,
        }
    }

    /// A table kept from `source`, a node emitting `Record<K, Option<V>>` (None deletes).
    pub(crate) fn from_source(
        graph: Rc<RefCell<Graph>>,
        source: usize,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> Self {
        let stream: KStream<K, Option<V>> =
            KStream::new(graph, source, Some(consumed.key_serde.clone()), None, false);
        Self::from_nullable_stream(
            stream,
            Some(consumed.key_serde),
            Some(consumed.value_serde),
            materialized,
        )
    }

    pub(crate) fn from_nullable_stream(
        stream: KStream<K, Option<V>>,
        key_serde: Option<SharedSerde<K>>,
        value_serde: Option<SharedSerde<V>>,
        materialized: Materialized<K, V>,
    ) -> Self {
        let graph = stream.graph.clone();
        let mut g = graph.borrow_mut();
        let key = materialized.key_serde.clone().or(key_serde);
        let value = materialized.value_serde.clone().or(value_serde);
        let (Some(key), Some(value)) = (key, value) else {
            g.errors.push(format!(
                "table {:?} needs key and value serdes",
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
            key.clone(),
            value.clone(),
        );
        let name = materialized.name.clone();
        let node = g.add_processor::<K, Option<V>, K, Change<V>, _>(
            "table-source",
            Some(&format!("{name}-table")),
            &[stream.node],
            vec![store],
            move || TableSource {
                store_name: name.clone(),
                store: None,
            },
        );
        drop(g);
        KTable::new(graph, node, Some(key), Some(value), Some(materialized.name))
    }

    /// The name of the store holding the table, if it is materialized.
    pub fn queryable_store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    fn add_change_fn<V2: Data>(
        &self,
        op: &str,
        f: impl Fn(&K, Change<V>) -> Option<Change<V2>> + Send + Sync + 'static,
    ) -> usize {
        self.graph
            .borrow_mut()
            .add_fn::<K, Change<V>, K, Change<V2>, _>(op, self.node, move |ctx, r| {
                match f(&r.key, r.value) {
                    Some(c) => ctx.forward(Record {
                        key: r.key,
                        value: c,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    }),
                    None => Ok(()),
                }
            })
    }

    /// The rows for which `predicate` holds; a row that stops matching is deleted downstream.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        let node = self.add_change_fn("table-filter", move |k, c| {
            let keep = |v: Option<V>| v.filter(|v| predicate(k, v));
            let change = Change {
                new: keep(c.new),
                old: keep(c.old),
            };
            (change.new.is_some() || change.old.is_some()).then_some(change)
        });
        KTable::new(
            self.graph.clone(),
            node,
            self.key_serde.clone(),
            self.value_serde.clone(),
            None,
        )
    }

    /// The rows for which `predicate` does not hold.
    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// A new value for each row.
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(&K, &V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let node = self.add_change_fn("table-map-values", move |k, c| {
            Some(Change {
                new: c.new.map(|v| f(k, &v)),
                old: c.old.map(|v| f(k, &v)),
            })
        });
        KTable::new(
            self.graph.clone(),
            node,
            self.key_serde.clone(),
            crate::builder::carry(&self.value_serde),
            None,
        )
    }

    /// The table's updates as a stream: the new value, `None` for a delete (write it with a
    /// [`Nullable`](crate::serde::Nullable) serde: a delete becomes a tombstone).
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let node = self
            .graph
            .borrow_mut()
            .add_fn::<K, Change<V>, K, Option<V>, _>("to-stream", self.node, |ctx, r| {
                ctx.forward(Record {
                    key: r.key,
                    value: r.value.new,
                    timestamp: r.timestamp,
                    headers: r.headers,
                })
            });
        KStream::new(
            self.graph.clone(),
            node,
            self.key_serde.clone(),
            KStream::<K, Option<V>>::nullable_serde(self.value_serde.clone()),
            false,
        )
    }

    /// Groups the rows by a new key and value, for an aggregation with an adder and a
    /// subtractor; always through the repartition topic `grouped` (or the store) names.
    pub fn group_by<K2: Key, V2: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
        grouped: Grouped<K2, V2>,
    ) -> KGroupedTable<K2, V2> {
        let node = self
            .graph
            .borrow_mut()
            .add_fn::<K, Change<V>, K2, Change<V2>, _>(
                "table-group-by",
                self.node,
                move |ctx, r| {
                    let old = r.value.old.map(|v| selector(&r.key, &v));
                    let new = r.value.new.map(|v| selector(&r.key, &v));
                    match (old, new) {
                        (Some((ko, vo)), Some((kn, vn))) if ko == kn => ctx.forward(Record::new(
                            kn,
                            Change {
                                new: Some(vn),
                                old: Some(vo),
                            },
                            r.timestamp,
                        )),
                        (old, new) => {
                            if let Some((k, v)) = old {
                                ctx.forward(Record::new(
                                    k,
                                    Change {
                                        new: None,
                                        old: Some(v),
                                    },
                                    r.timestamp,
                                ))?;
                            }
                            if let Some((k, v)) = new {
                                ctx.forward(Record::new(
                                    k,
                                    Change {
                                        new: Some(v),
                                        old: None,
                                    },
                                    r.timestamp,
                                ))?;
                            }
                            Ok(())
                        }
                    }
                },
            );
        let parent = KTable::new(
            self.graph.clone(),
            self.node,
            self.key_serde.clone(),
            self.value_serde.clone(),
            None,
        );
        KGroupedTable {
            parent: KTable::new(parent.graph, node, None, None, None),
            node,
            grouped,
        }
    }
}

struct TableSource<K, V> {
    store_name: String,
    store: Option<StoreHandle<K, V>>,
}

impl<K: Key, V: Data> Processor<K, Option<V>, K, Change<V>> for TableSource<K, V> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        self.store = Some(open_store(ctx, &self.store_name)?);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, K, Change<V>>,
        r: Record<K, Option<V>>,
    ) -> Result<()> {
        let Some(handle) = self.store else {
            return Ok(());
        };
        let store = ctx.store(handle);
        // Read first so that the cache knows the old value it forwards.
        store.get(&r.key)?;
        store.put_at(r.key, r.value, r.timestamp)?;
        forward_flushed(ctx, handle)
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_, K, Change<V>>) -> Result<()> {
        flush_and_forward(ctx, self.store)
    }
}
