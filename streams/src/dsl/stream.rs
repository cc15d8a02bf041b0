//! [`KStream`]: a stream of events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::{
    Data, Graph, Grouped, Key, Materialized, Produced, Repartitioned, SharedAsSerde, carry,
};
use crate::dsl::{KGroupedStream, KTable};
use crate::error::Result;
use crate::processor::{Processor, ProcessorContext, Record};
use crate::serde::{Nullable, SharedSerde};
use crate::topology::TopicRef;

/// A stream of records: each one an independent event (Kafka's `KStream`).
///
/// Operators that may change the key (`map`, `flat_map`, `select_key`, `process`) mark the
/// stream: a grouping after them goes through a repartition topic, so that each key's
/// records meet in one task.
pub struct KStream<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) node: usize,
    pub(crate) key_serde: Option<SharedSerde<K>>,
    pub(crate) value_serde: Option<SharedSerde<V>>,
    pub(crate) repartition_required: bool,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            repartition_required: self.repartition_required,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(
        graph: Rc<RefCell<Graph>>,
        node: usize,
        key_serde: Option<SharedSerde<K>>,
        value_serde: Option<SharedSerde<V>>,
        repartition_required: bool,
    ) -> Self {
        KStream {
            graph,
            node,
            key_serde,
            value_serde,
            repartition_required,
        }
    }

    fn derive<K2: Data, V2: Data>(
        &self,
        node: usize,
        key_serde: Option<SharedSerde<K2>>,
        value_serde: Option<SharedSerde<V2>>,
        repartition_required: bool,
    ) -> KStream<K2, V2> {
        KStream::new(
            self.graph.clone(),
            node,
            key_serde,
            value_serde,
            repartition_required,
        )
    }

    fn add_fn<K2: Data, V2: Data>(
        &self,
        op: &str,
        f: impl Fn(&mut ProcessorContext<'_, K2, V2>, Record<K, V>) -> Result<()>
        + Send
        + Sync
        + 'static,
    ) -> usize {
        self.graph
            .borrow_mut()
            .add_fn::<K, V, K2, V2, _>(op, self.node, f)
    }

    /// The records for which `predicate` holds.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        let node = self.add_fn("filter", move |ctx, r: Record<K, V>| {
            if predicate(&r.key, &r.value) {
                ctx.forward(r)
            } else {
                Ok(())
            }
        });
        self.derive(
            node,
            self.key_serde.clone(),
            self.value_serde.clone(),
            self.repartition_required,
        )
    }

    /// The records for which `predicate` does not hold.
    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// A new key and value for each record (marks the stream for repartitioning).
    pub fn map<K2: Data, V2: Data>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let node = self.add_fn("map", move |ctx, r: Record<K, V>| {
            let (k, v) = f(r.key, r.value);
            ctx.forward(Record {
                key: k,
                value: v,
                timestamp: r.timestamp,
                headers: r.headers,
            })
        });
        self.derive(node, carry(&self.key_serde), carry(&self.value_serde), true)
    }

    /// A new value for each record; the key stays (no repartitioning).
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(&K, V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let node = self.add_fn("map-values", move |ctx, r: Record<K, V>| {
            let v = f(&r.key, r.value);
            ctx.forward(Record {
                key: r.key,
                value: v,
                timestamp: r.timestamp,
                headers: r.headers,
            })
        });
        self.derive(
            node,
            self.key_serde.clone(),
            carry(&self.value_serde),
            self.repartition_required,
        )
    }

    /// Zero or more records for each record (marks the stream for repartitioning).
    pub fn flat_map<K2: Data, V2: Data, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
    {
        let node = self.add_fn("flat-map", move |ctx, r: Record<K, V>| {
            for (k, v) in f(r.key, r.value) {
                ctx.forward(Record {
                    key: k,
                    value: v,
                    timestamp: r.timestamp,
                    headers: r.headers.clone(),
                })?;
            }
            Ok(())
        });
        self.derive(node, carry(&self.key_serde), carry(&self.value_serde), true)
    }

    /// Zero or more values for each record, with the same key.
    pub fn flat_map_values<V2: Data, I>(
        &self,
        f: impl Fn(&K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
    {
        let node = self.add_fn("flat-map-values", move |ctx, r: Record<K, V>| {
            for v in f(&r.key, r.value) {
                ctx.forward(Record {
                    key: r.key.clone(),
                    value: v,
                    timestamp: r.timestamp,
                    headers: r.headers.clone(),
                })?;
            }
            Ok(())
        });
        self.derive(
            node,
            self.key_serde.clone(),
            carry(&self.value_serde),
            self.repartition_required,
        )
    }

    /// A new key for each record (marks the stream for repartitioning).
    pub fn select_key<K2: Data>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        let node = self.add_fn("select-key", move |ctx, r: Record<K, V>| {
            let k = f(&r.key, &r.value);
            ctx.forward(r.with_key(k))
        });
        self.derive(node, carry(&self.key_serde), self.value_serde.clone(), true)
    }

    /// Calls `f` on each record and passes it on.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> Self {
        let node = self.add_fn("peek", move |ctx, r: Record<K, V>| {
            f(&r.key, &r.value);
            ctx.forward(r)
        });
        self.derive(
            node,
            self.key_serde.clone(),
            self.value_serde.clone(),
            self.repartition_required,
        )
    }

    /// Calls `f` on each record (a terminal operation; its side effects are outside any
    /// guarantee of the log).
    pub fn foreach(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        self.add_fn::<K, V>("foreach", move |_, r: Record<K, V>| {
            f(&r.key, &r.value);
            Ok(())
        });
    }

    /// Splits the stream by predicates: each record goes to the first branch whose predicate
    /// holds (or to the default branch, or nowhere).
    pub fn split(&self) -> Branches<K, V> {
        Branches {
            parent: self.clone(),
            branches: Vec::new(),
            default: None,
        }
    }

    /// The records of both streams.
    pub fn merge(&self, other: &KStream<K, V>) -> Self {
        let node = self
            .graph
            .borrow_mut()
            .add_fn::<K, V, K, V, _>("merge", self.node, |ctx, r| ctx.forward(r));
        {
            let mut g = self.graph.borrow_mut();
            g.nodes[other.node].children.push(node);
            g.nodes[node].parents.push(other.node);
        }
        let serde_k = self.key_serde.clone().or_else(|| other.key_serde.clone());
        let serde_v = self
            .value_serde
            .clone()
            .or_else(|| other.value_serde.clone());
        self.derive(
            node,
            serde_k,
            serde_v,
            self.repartition_required || other.repartition_required,
        )
    }

    /// Sends the stream through the topic `<application.id>-<name>-repartition`, partitioned by
    /// key.
    pub fn repartition(&self, repartitioned: Repartitioned<K, V>) -> Self {
        let key = repartitioned.key_serde.or_else(|| self.key_serde.clone());
        let value = repartitioned
            .value_serde
            .or_else(|| self.value_serde.clone());
        self.through_repartition(&repartitioned.name, repartitioned.partitions, key, value)
    }

    pub(crate) fn through_repartition(
        &self,
        name: &str,
        partitions: Option<u32>,
        key: Option<SharedSerde<K>>,
        value: Option<SharedSerde<V>>,
    ) -> Self {
        let mut g = self.graph.borrow_mut();
        let (Some(key), Some(value)) = (key, value) else {
            g.errors.push(format!(
                "repartition {name:?} needs key and value serdes: the types changed since the \
                 source, give them with Grouped::with or Repartitioned::with"
            ));
            drop(g);
            return self.clone();
        };
        g.add_repartition_topic(name, partitions);
        let topic = TopicRef::Repartition(name.to_owned());
        let produced = Produced {
            key_serde: key.clone(),
            value_serde: value.clone(),
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
            key.clone(),
            value.clone(),
        );
        drop(g);
        self.derive(source, Some(key), Some(value), false)
    }

    /// Writes the stream to `topic`.
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        let mut g = self.graph.borrow_mut();
        if let Err(e) = core_log::validate_topic_name(topic) {
            g.errors.push(format!("sink topic: {e}"));
        }
        g.add_sink(None, self.node, TopicRef::User(topic.to_owned()), produced);
    }

    /// Runs a custom processor made for each task by `supplier`, connected to the stores
    /// named in `stores` (declared with
    /// [`StreamsBuilder::add_state_store`](crate::StreamsBuilder::add_state_store) or by an
    /// aggregation). Marks the stream for repartitioning, as the processor may change keys.
    pub fn process<KOut: Data, VOut: Data, P>(
        &self,
        name: &str,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<KOut, VOut>
    where
        P: Processor<K, V, KOut, VOut> + 'static,
    {
        let mut g = self.graph.borrow_mut();
        let mut ids = Vec::new();
        for s in stores {
            match g.store_id(s) {
                Some(id) => ids.push(id),
                None => g.errors.push(format!(
                    "processor {name:?} uses store {s:?}, which is not declared"
                )),
            }
        }
        let node = g.add_processor::<K, V, KOut, VOut, P>(
            "process",
            Some(name),
            &[self.node],
            ids,
            supplier,
        );
        drop(g);
        self.derive(node, carry(&self.key_serde), carry(&self.value_serde), true)
    }

    /// Groups by the current key (through a repartition topic if the key may have changed).
    pub fn group_by_key(&self) -> KGroupedStream<K, V>
    where
        K: Key,
    {
        KGroupedStream::new(self.clone(), Grouped::default())
    }

    /// Groups by the key grouped with `grouped` (through a repartition topic if the key may
    /// have changed, with the serdes `grouped` gives).
    pub fn group_by_key_with(&self, grouped: Grouped<K, V>) -> KGroupedStream<K, V>
    where
        K: Key,
    {
        KGroupedStream::new(self.clone(), grouped)
    }

    /// Groups by a new key computed from each record (always through a repartition topic).
    pub fn group_by<K2: Key>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        grouped: Grouped<K2, V>,
    ) -> KGroupedStream<K2, V> {
        KGroupedStream::new(self.select_key(f), grouped)
    }

    /// A table of the latest value per key of this stream (through a repartition topic if
    /// the key may have changed).
    pub fn to_table(&self, materialized: Materialized<K, V>) -> KTable<K, V>
    where
        K: Key,
    {
        let stream = if self.repartition_required {
            let (k, v) = (
                materialized.key_serde.clone(),
                materialized.value_serde.clone(),
            );
            self.through_repartition(
                &materialized.name,
                None,
                k.or_else(|| self.key_serde.clone()),
                v.or_else(|| self.value_serde.clone()),
            )
        } else {
            self.clone()
        };
        let values = stream.map_values(|_, v| Some(v));
        let consumed_key = stream.key_serde.clone();
        let consumed_value = stream.value_serde.clone();
        KTable::from_nullable_stream(values, consumed_key, consumed_value, materialized)
    }
}

impl<K: Data, V: Data> KStream<K, Option<V>> {
    /// The value serde as `Nullable`, for a stream of a table's updates.
    pub(crate) fn nullable_serde(value: Option<SharedSerde<V>>) -> Option<SharedSerde<Option<V>>> {
        value.map(|v| Arc::new(Nullable(SharedAsSerde(v))) as SharedSerde<Option<V>>)
    }
}

type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// The branches of [`KStream::split`]: add them with [`Branches::branch`], then take the
/// streams by name.
pub struct Branches<K, V> {
    parent: KStream<K, V>,
    branches: Vec<(String, Predicate<K, V>)>,
    default: Option<String>,
}

impl<K: Data, V: Data> Branches<K, V> {
    /// A branch named `name` for the records `predicate` holds for (and no earlier one did).
    pub fn branch(
        mut self,
        name: &str,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.branches.push((name.to_owned(), Arc::new(predicate)));
        self
    }

    /// A branch for the records no predicate held for.
    pub fn default_branch(mut self, name: &str) -> Self {
        self.default = Some(name.to_owned());
        self
    }

    /// The streams, by branch name.
    pub fn build(self) -> HashMap<String, KStream<K, V>> {
        let predicates: Vec<_> = self.branches.iter().map(|(_, p)| p.clone()).collect();
        let has_default = self.default.is_some();
        let split =
            self.parent
                .add_fn::<K, V>("split", move |ctx, r: Record<K, V>| {
                    match predicates.iter().position(|p| p(&r.key, &r.value)) {
                        Some(i) => ctx.forward_to_index(i, r),
                        None if has_default => ctx.forward_to_index(predicates.len(), r),
                        None => Ok(()),
                    }
                });
        let mut out = HashMap::new();
        let names = self
            .branches
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.default);
        for name in names {
            let node = {
                let mut g = self.parent.graph.borrow_mut();
                g.add_processor::<K, V, K, V, _>(
                    "branch",
                    Some(&name),
                    &[split],
                    Vec::new(),
                    || {
                        crate::processor::FnProcessor(|ctx: &mut ProcessorContext<'_, K, V>, r| {
                            ctx.forward(r)
                        })
                    },
                )
            };
            let stream = self.parent.derive(
                node,
                self.parent.key_serde.clone(),
                self.parent.value_serde.clone(),
                self.parent.repartition_required,
            );
            out.insert(name, stream);
        }
        out
    }
}
