//! [`StreamsBuilder`]: where a topology is declared with the DSL, and the options its
//! operators take ([`Consumed`], [`Produced`], [`Grouped`], [`Materialized`], [`Repartitioned`]).

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use crate::dsl::{HotKeys, KStream, KTable};
use crate::error::{Error, Result};
use crate::processor::context::Raw;
use crate::processor::node::lifecycle_of;
use crate::processor::{FnProcessor, Processor, ProcessorContext, Record};
use crate::serde::{Serde, SharedSerde};
use crate::state::store::make_store;
use crate::topology::{
    MakeNode, NodeDef, NodeFactory, NodeKind, StoreDef, StoreType, TopicRef, Topology,
};

/// What every key and value type of a topology is: cloned when a node has several children,
/// moved between threads with its task.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// What keys of stores and aggregations are: [`Data`] that can be hashed (the record cache).
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// The serde of `A` as a serde of `B` when they are the same type: serdes carry over an
/// operation that keeps the type, as Kafka Streams' default serdes would.
pub(crate) fn carry<A: 'static, B: 'static>(
    serde: &Option<SharedSerde<A>>,
) -> Option<SharedSerde<B>> {
    let any: Box<dyn std::any::Any> = Box::new(serde.clone()?);
    any.downcast::<SharedSerde<B>>().ok().map(|b| *b)
}

/// How a source topic is read: its key and value serdes.
pub struct Consumed<K, V> {
    pub(crate) key_serde: SharedSerde<K>,
    pub(crate) value_serde: SharedSerde<V>,
}

impl<K, V> Consumed<K, V> {
    /// Reads keys with `key` and values with `value`.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Consumed {
            key_serde: Arc::new(key),
            value_serde: Arc::new(value),
        }
    }
}

/// A custom partitioner for a sink: `(key, value, partition count) -> partition`, as Kafka
/// Streams' `StreamPartitioner`.
pub type StreamPartitioner<K, V> = Arc<dyn Fn(&K, &V, u32) -> u32 + Send + Sync>;

/// How a sink writes: key and value serdes and, optionally, a partitioner (by default the
/// murmur2 hash of the serialized key, Kafka's default).
pub struct Produced<K, V> {
    pub(crate) key_serde: SharedSerde<K>,
    pub(crate) value_serde: SharedSerde<V>,
    pub(crate) partitioner: Option<StreamPartitioner<K, V>>,
}

impl<K, V> Produced<K, V> {
    /// Writes keys with `key` and values with `value`.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Produced {
            key_serde: Arc::new(key),
            value_serde: Arc::new(value),
            partitioner: None,
        }
    }

    /// Chooses partitions with `partitioner`.
    pub fn partitioner(
        mut self,
        partitioner: impl Fn(&K, &V, u32) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }
}

/// How records are grouped for an aggregation: the repartition topic's name and, after a
/// key-changing operation, the serdes to write it with.
pub struct Grouped<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) key_serde: Option<SharedSerde<K>>,
    pub(crate) value_serde: Option<SharedSerde<V>>,
    pub(crate) hot_keys: Option<HotKeys<K>>,
}

impl<K, V> Grouped<K, V> {
    /// Names the repartition topic `<application.id>-<name>-repartition`.
    pub fn named(name: impl Into<String>) -> Self {
        Grouped {
            name: Some(name.into()),
            key_serde: None,
            value_serde: None,
            hot_keys: None,
        }
    }

    /// Serdes for the repartition topic.
    pub fn with(key: impl Serde<K>, value: impl Serde<V>) -> Self {
        Grouped {
            name: None,
            key_serde: Some(Arc::new(key)),
            value_serde: Some(Arc::new(value)),
            hot_keys: None,
        }
    }

    /// Sets the key serde.
    pub fn key_serde(mut self, key: impl Serde<K>) -> Self {
        self.key_serde = Some(Arc::new(key));
        self
    }

    /// Sets the value serde.
    pub fn value_serde(mut self, value: impl Serde<V>) -> Self {
        self.value_serde = Some(Arc::new(value));
        self
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Splits the aggregation's hot keys into sub-keys aggregated in two stages (see
    /// [`HotKeys`]). The records then always go through a repartition topic, as if the key had
    /// changed.
    pub fn split_hot_keys(mut self, hot_keys: HotKeys<K>) -> Self {
        self.hot_keys = Some(hot_keys);
        self
    }
}

impl<K, V> Default for Grouped<K, V> {
    fn default() -> Self {
        Grouped {
            name: None,
            key_serde: None,
            value_serde: None,
            hot_keys: None,
        }
    }
}

/// An explicit repartition: the topic's name, its partition count, serdes.
pub struct Repartitioned<K, V> {
    pub(crate) name: String,
    pub(crate) partitions: Option<u32>,
    pub(crate) key_serde: Option<SharedSerde<K>>,
    pub(crate) value_serde: Option<SharedSerde<V>>,
}

impl<K, V> Repartitioned<K, V> {
    /// Repartitions through `<application.id>-<name>-repartition`.
    pub fn named(name: impl Into<String>) -> Self {
        Repartitioned {
            name: name.into(),
            partitions: None,
            key_serde: None,
            value_serde: None,
        }
    }

    /// The repartition topic's partition count (default: as many as the upstream sources).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Serdes for the repartition topic (needed when the stream's types changed).
    pub fn with(mut self, key: impl Serde<K>, value: impl Serde<V>) -> Self {
        self.key_serde = Some(Arc::new(key));
        self.value_serde = Some(Arc::new(value));
        self
    }
}

/// How a store is made: its name (which names its changelog), type, serdes, cache and logging.
pub struct Materialized<K, V> {
    pub(crate) name: String,
    pub(crate) store_type: StoreType,
    pub(crate) key_serde: Option<SharedSerde<K>>,
    pub(crate) value_serde: Option<SharedSerde<V>>,
    pub(crate) caching: bool,
    pub(crate) logging: bool,
}

impl<K, V> Materialized<K, V> {
    /// A RocksDB store `name` with caching and a changelog `<application.id>-<name>-changelog`.
    pub fn named(name: impl Into<String>) -> Self {
        Materialized {
            name: name.into(),
            store_type: StoreType::RocksDb,
            key_serde: None,
            value_serde: None,
            caching: true,
            logging: true,
        }
    }

    /// Keeps the store in memory instead of RocksDB.
    pub fn in_memory(mut self) -> Self {
        self.store_type = StoreType::InMemory;
        self
    }

    /// Sets the key serde (default: the stream's).
    pub fn key_serde(mut self, key: impl Serde<K>) -> Self {
        self.key_serde = Some(Arc::new(key));
        self
    }

    /// Sets the value serde (needed when the aggregate's type is not the stream's value type).
    pub fn value_serde(mut self, value: impl Serde<V>) -> Self {
        self.value_serde = Some(Arc::new(value));
        self
    }

    /// Turns the record cache off: every update is written and forwarded at once.
    pub fn without_caching(mut self) -> Self {
        self.caching = false;
        self
    }

    /// Turns the changelog off: the store is not restored after a restart or a move.
    pub fn without_logging(mut self) -> Self {
        self.logging = false;
        self
    }
}

/// Declares a topology with the DSL (streams, tables, grouping, aggregations) or with custom
/// processors, then [`StreamsBuilder::build`]s it.
///
/// ```
/// use streams::{Consumed, Materialized, Produced, StreamsBuilder};
/// use streams::serde::{IntegerSerde, Nullable, StringSerde};
///
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("likes", Consumed::with(StringSerde, StringSerde))
///     .filter(|_product, action| action == "like")
///     .group_by_key()
///     .count(Materialized::named("like-counts"))
///     .to_stream()
///     .to("like-counts", Produced::with(StringSerde, Nullable(IntegerSerde)));
/// let topology = builder.build().unwrap();
/// assert!(topology.describe().contains("<application.id>-like-counts-changelog"));
/// ```
#[derive(Clone, Default)]
pub struct StreamsBuilder {
    pub(crate) graph: Rc<RefCell<Graph>>,
}

#[derive(Default)]
pub(crate) struct Graph {
    pub nodes: Vec<NodeDef>,
    pub stores: Vec<StoreDef>,
    pub repartition_topics: Vec<(String, Option<u32>)>,
    /// Hot-key splits, as `describe()` shows them.
    pub splits: Vec<String>,
    names: HashSet<String>,
    source_topics: HashSet<TopicRef>,
    counter: usize,
    pub errors: Vec<String>,
}

impl Graph {
    /// A unique node name: the user's, or `<op>-<n>`.
    fn node_name(&mut self, op: &str, name: Option<&str>) -> String {
        let name = match name {
            Some(n) => n.to_owned(),
            None => loop {
                self.counter += 1;
                let n = format!("{op}-{}", self.counter);
                if !self.names.contains(&n) {
                    break n;
                }
            },
        };
        if !self.names.insert(name.clone()) {
            self.errors
                .push(format!("node name {name:?} is used twice"));
        }
        name
    }

    /// A node taking `Record<K, V>`, which each task makes with `factory`.
    pub fn add_node<K: 'static, V: 'static>(
        &mut self,
        op: &str,
        name: Option<&str>,
        kind: NodeKind,
        parents: &[usize],
        stores: Vec<usize>,
        factory: impl MakeNode<K, V>,
    ) -> usize {
        let name = self.node_name(op, name);
        let id = self.nodes.len();
        for &p in parents {
            self.nodes[p].children.push(id);
        }
        self.nodes.push(NodeDef {
            name,
            kind,
            parents: parents.to_vec(),
            children: Vec::new(),
            stores,
            factory: NodeFactory::new(factory),
            lifecycle: lifecycle_of::<K, V>,
        });
        id
    }

    /// A node running a processor made fresh for each task by `supplier`.
    pub fn add_processor<K, V, KOut, VOut, P>(
        &mut self,
        op: &str,
        name: Option<&str>,
        parents: &[usize],
        stores: Vec<usize>,
        supplier: impl Fn() -> P + Send + Sync + 'static,
    ) -> usize
    where
        K: 'static,
        V: 'static,
        KOut: Data,
        VOut: Data,
        P: Processor<K, V, KOut, VOut> + 'static,
    {
        let supplier: ProcessorSupplier<K, V, KOut, VOut> = Arc::new(move || Box::new(supplier()));
        self.add_node::<K, V>(
            op,
            name,
            NodeKind::Processor,
            parents,
            stores,
            ProcessorDef { supplier },
        )
    }

    /// A stateless node made of a closure, shared by every task.
    pub fn add_fn<K, V, KOut, VOut, F>(&mut self, op: &str, parent: usize, f: F) -> usize
    where
        K: 'static,
        V: 'static,
        KOut: Data,
        VOut: Data,
        F: Fn(&mut ProcessorContext<'_, KOut, VOut>, Record<K, V>) -> Result<()>
            + Send
            + Sync
            + 'static,
    {
        let f = Arc::new(f);
        self.add_processor::<K, V, KOut, VOut, _>(op, None, &[parent], Vec::new(), move || {
            let f = f.clone();
            FnProcessor(move |ctx: &mut ProcessorContext<'_, KOut, VOut>, r| f(ctx, r))
        })
    }

    pub fn add_source<K: Data, V: Data>(
        &mut self,
        name: Option<&str>,
        topics: Vec<TopicRef>,
        key_serde: SharedSerde<K>,
        value_serde: SharedSerde<V>,
    ) -> usize {
        for t in &topics {
            if !self.source_topics.insert(t.clone()) {
                self.errors.push(format!(
                    "topic {t:?} is read by two sources: read it once and use the stream twice"
                ));
            }
        }
        self.add_node::<Raw, Raw>(
            "source",
            name,
            NodeKind::Source { topics },
            &[],
            Vec::new(),
            SourceDef {
                key_serde,
                value_serde,
            },
        )
    }

    pub fn add_sink<K: Data, V: Data>(
        &mut self,
        name: Option<&str>,
        parent: usize,
        topic: TopicRef,
        produced: Produced<K, V>,
    ) -> usize {
        let detect = matches!(topic, TopicRef::Repartition(_));
        self.add_sink_with(name, parent, topic, produced, detect)
    }

    /// A sink; `detect`: it counts the keys it writes for hot-key detection.
    pub fn add_sink_with<K: Data, V: Data>(
        &mut self,
        name: Option<&str>,
        parent: usize,
        topic: TopicRef,
        produced: Produced<K, V>,
        detect: bool,
    ) -> usize {
        let def = SinkDef {
            topic: topic.clone(),
            produced,
            detect_hot_keys: detect,
        };
        self.add_node::<K, V>(
            "sink",
            name,
            NodeKind::Sink { topic },
            &[parent],
            Vec::new(),
            def,
        )
    }

    /// Declares a key-value store; returns its id.
    pub fn add_store<K: Key, V: Data>(
        &mut self,
        name: &str,
        store_type: StoreType,
        caching: bool,
        logging: bool,
        key_serde: SharedSerde<K>,
        value_serde: SharedSerde<V>,
    ) -> usize {
        if self.stores.iter().any(|s| s.name == name) {
            self.errors
                .push(format!("store name {name:?} is used twice"));
        }
        if let Err(e) = core_log::validate_topic_name(&crate::topology::changelog_topic("a", name))
        {
            self.errors.push(format!(
                "store name {name:?} cannot name a changelog topic: {e}"
            ));
        }
        self.stores.push(StoreDef {
            name: name.to_owned(),
            store_type,
            logging,
            caching,
            factory: Arc::new(move |backend, changelog| {
                make_store(backend, key_serde.clone(), value_serde.clone(), changelog)
            }),
        });
        self.stores.len() - 1
    }

    pub fn add_repartition_topic(&mut self, name: &str, partitions: Option<u32>) {
        if self.repartition_topics.iter().any(|(n, _)| n == name) {
            self.errors
                .push(format!("repartition topic name {name:?} is used twice"));
        }
        self.repartition_topics.push((name.to_owned(), partitions));
    }

    pub fn store_id(&self, name: &str) -> Option<usize> {
        self.stores.iter().position(|s| s.name == name)
    }
}

impl StreamsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream of the records of `topic`.
    pub fn stream<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        self.stream_from(&[topic], consumed)
    }

    /// One stream of the records of several topics (they must be co-partitioned).
    pub fn stream_from<K: Data, V: Data>(
        &self,
        topics: &[&str],
        consumed: Consumed<K, V>,
    ) -> KStream<K, V> {
        let mut g = self.graph.borrow_mut();
        for t in topics {
            if let Err(e) = core_log::validate_topic_name(t) {
                g.errors.push(format!("source topic: {e}"));
            }
        }
        let topics = topics
            .iter()
            .map(|t| TopicRef::User((*t).to_owned()))
            .collect();
        let node = g.add_source(
            None,
            topics,
            consumed.key_serde.clone(),
            consumed.value_serde.clone(),
        );
        drop(g);
        KStream::new(
            self.graph.clone(),
            node,
            Some(consumed.key_serde),
            Some(consumed.value_serde),
            false,
        )
    }

    /// A table of the latest value per key of `topic`, kept in the store `materialized` names. A
    /// null value (tombstone) deletes the key.
    pub fn table<K: Key, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let source = {
            let mut g = self.graph.borrow_mut();
            if let Err(e) = core_log::validate_topic_name(topic) {
                g.errors.push(format!("source topic: {e}"));
            }
            let value: SharedSerde<Option<V>> = Arc::new(crate::serde::Nullable(SharedAsSerde(
                consumed.value_serde.clone(),
            )));
            g.add_source(
                None,
                vec![TopicRef::User(topic.to_owned())],
                consumed.key_serde.clone(),
                value,
            )
        };
        KTable::from_source(self.graph.clone(), source, consumed, materialized)
    }

    /// Declares a key-value store for custom processors (connect it with
    /// [`KStream::process`]).
    pub fn add_state_store<K: Key, V: Data>(&self, store: Materialized<K, V>) -> &Self {
        let mut g = self.graph.borrow_mut();
        match (store.key_serde, store.value_serde) {
            (Some(k), Some(v)) => {
                g.add_store(
                    &store.name,
                    store.store_type,
                    store.caching,
                    store.logging,
                    k,
                    v,
                );
            }
            _ => g.errors.push(format!(
                "store {:?} needs a key and a value serde (Materialized::key_serde/value_serde)",
                store.name
            )),
        }
        self
    }

    /// Checks the declarations and returns the topology.
    pub fn build(self) -> Result<Topology> {
        // Streams and tables of this builder may still be alive: they keep an empty graph.
        let graph = std::mem::take(&mut *self.graph.borrow_mut());
        if let Some(reason) = graph.errors.first() {
            return Err(Error::InvalidTopology {
                reason: reason.clone(),
            });
        }
        if graph.nodes.is_empty() {
            return Err(Error::InvalidTopology {
                reason: "the topology has no nodes".into(),
            });
        }
        Ok(Topology::new(
            graph.nodes,
            graph.stores,
            graph.repartition_topics,
            graph.splits,
        ))
    }
}

/// A shared serde used where a `Serde` value is needed.
pub(crate) struct SharedAsSerde<T>(pub SharedSerde<T>);

impl<T: 'static> crate::serde::Serializer<T> for SharedAsSerde<T> {
    fn serialize(
        &self,
        topic: &str,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::serde::SerdeError> {
        self.0.serialize(topic, value, out)
    }
}

impl<T: 'static> crate::serde::Deserializer<T> for SharedAsSerde<T> {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T, crate::serde::SerdeError> {
        self.0.deserialize(topic, bytes)
    }

    fn deserialize_owned(
        &self,
        topic: &str,
        bytes: Vec<u8>,
    ) -> Result<T, crate::serde::SerdeError> {
        self.0.deserialize_owned(topic, bytes)
    }
}

/// A source as declared: the serdes of the records it reads. Each task runs it as a
/// `runtime::source_node::SourceNode`.
pub(crate) struct SourceDef<K, V> {
    pub key_serde: SharedSerde<K>,
    pub value_serde: SharedSerde<V>,
}

/// A sink as declared: its topic, how it writes, and whether it counts the keys it writes
/// for hot-key detection (a repartition topic's, unless a hot-key router counts them before
/// it). Each task runs it as a `runtime::sink_node::SinkNode`.
pub(crate) struct SinkDef<K, V> {
    pub topic: TopicRef,
    pub produced: Produced<K, V>,
    pub detect_hot_keys: bool,
}

/// Makes a fresh processor for each task.
pub(crate) type ProcessorSupplier<K, V, KOut, VOut> =
    Arc<dyn Fn() -> Box<dyn Processor<K, V, KOut, VOut>> + Send + Sync>;

/// A processor as declared: its supplier. Each task runs one it supplied as a
/// `runtime::processor_node::ProcessorNode`.
pub(crate) struct ProcessorDef<K, V, KOut, VOut> {
    pub supplier: ProcessorSupplier<K, V, KOut, VOut>,
}
