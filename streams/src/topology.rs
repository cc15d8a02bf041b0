//! An immutable, validated topology: nodes (sources, processors, sinks), state stores, and the
//! sub-topologies that repartition topics cut them into.
//!
//! A task runs one sub-topology for one partition. Names never come from an operator's position:
//! stores and internal topics are named by the user (`Materialized::named`, `Grouped::named`,
//! `Repartitioned::named`), so adding a filter to a running application leaves its state and
//! topics where they were. Internal topics are `<application.id>-<name>-repartition` and
//! `<application.id>-<store>-changelog`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::processor::node::{AnyNode, InputNode, LifecycleFn, Wiring, slot_of};
use crate::state::KeyValueStore;
use crate::state::change_logging::Changelog;
use crate::state::store::AnyStore;

/// A topic a node reads or writes: a user topic, or an internal one named relative to the
/// application id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TopicRef {
    User(String),
    /// `<application.id>-<name>-repartition`.
    Repartition(String),
}

impl TopicRef {
    pub(crate) fn resolve(&self, application_id: &str) -> String {
        match self {
            TopicRef::User(t) => t.clone(),
            TopicRef::Repartition(name) => repartition_topic(application_id, name),
        }
    }
}

pub(crate) fn repartition_topic(application_id: &str, name: &str) -> String {
    format!("{application_id}-{name}-repartition")
}

pub(crate) fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// What a node is.
#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Source { topics: Vec<TopicRef> },
    Processor,
    Sink { topic: TopicRef },
}

/// What a node factory gets: the application it is built for.
pub(crate) struct Instantiate<'a> {
    pub application_id: &'a str,
}

/// How a task makes its own instance of a node that takes `Record<K, V>`.
///
/// The declaration says what a node is (a source's serdes, a sink's topic and partitioner, a
/// processor's supplier: `builder::{SourceDef, SinkDef, ProcessorDef}`); the runtime says how
/// it runs, by implementing this for each of them next to its node (`runtime/source_node.rs`,
/// `sink_node.rs`, `processor_node.rs`). So declaring a topology never names a runtime type.
pub(crate) trait MakeNode<K, V>: Send + Sync + 'static {
    fn make(&self, instantiate: &Instantiate<'_>) -> Box<dyn InputNode<K, V>>;
}

/// A node's factory with its input types erased: what a task calls to fill its arena.
#[derive(Clone)]
pub(crate) struct NodeFactory(Arc<dyn Fn(&Instantiate<'_>) -> AnyNode + Send + Sync>);

impl NodeFactory {
    pub(crate) fn new<K: 'static, V: 'static>(make: impl MakeNode<K, V>) -> Self {
        NodeFactory(Arc::new(move |i| slot_of(make.make(i))))
    }

    /// A fresh node for one task, in the slot form the arena holds.
    pub(crate) fn instantiate(&self, instantiate: &Instantiate<'_>) -> AnyNode {
        (self.0)(instantiate)
    }
}

pub(crate) type StoreFactory =
    Arc<dyn Fn(Box<dyn KeyValueStore>, Option<Changelog>) -> Box<dyn AnyStore> + Send + Sync>;

pub(crate) struct NodeDef {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
    pub stores: Vec<usize>,
    pub factory: NodeFactory,
    pub lifecycle: LifecycleFn,
}

/// Where a store keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreType {
    /// RocksDB on local disk: restores only the changelog tail after its checkpoint.
    RocksDb,
    /// A `BTreeMap` in memory: restores the whole changelog on start.
    InMemory,
}

pub(crate) struct StoreDef {
    pub name: String,
    pub store_type: StoreType,
    pub logging: bool,
    pub caching: bool,
    pub factory: StoreFactory,
}

/// A connected part of the topology; a task runs one for one partition.
pub(crate) struct SubTopology {
    pub id: u32,
    /// Global node ids, parents before children.
    pub nodes: Vec<usize>,
    pub source_topics: Vec<TopicRef>,
    /// Global store ids.
    pub stores: Vec<usize>,
    /// The nodes' local wiring, shared by the sub-topology's tasks.
    pub wiring: Arc<Wiring>,
    /// The factory of each local node.
    pub factories: Vec<NodeFactory>,
    /// For each source topic, the local node reading it.
    pub sources: Vec<(TopicRef, usize)>,
}

/// A validated topology, shared by every task and thread that runs it.
#[derive(Clone)]
pub struct Topology {
    pub(crate) inner: Arc<TopologyInner>,
}

pub(crate) struct TopologyInner {
    pub nodes: Vec<NodeDef>,
    pub stores: Vec<StoreDef>,
    pub subtopologies: Vec<SubTopology>,
    /// Repartition topics with the partition count asked for (`None`: as many as the
    /// sub-topology writing them reads).
    pub repartition_topics: Vec<(String, Option<u32>)>,
    /// Hot-key splits, described.
    pub splits: Vec<String>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Topology {
    pub(crate) fn new(
        nodes: Vec<NodeDef>,
        stores: Vec<StoreDef>,
        repartition_topics: Vec<(String, Option<u32>)>,
        splits: Vec<String>,
    ) -> Self {
        // Union-find over parent-child edges and shared stores.
        let n = nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        let union = |p: &mut Vec<usize>, a: usize, b: usize| {
            let (ra, rb) = (find(p, a), find(p, b));
            if ra != rb {
                p[ra.max(rb)] = ra.min(rb);
            }
        };
        let mut store_owner: Vec<Option<usize>> = vec![None; stores.len()];
        for (i, node) in nodes.iter().enumerate() {
            for &c in &node.children {
                union(&mut parent, i, c);
            }
            for &s in &node.stores {
                match store_owner[s] {
                    Some(o) => union(&mut parent, o, i),
                    None => store_owner[s] = Some(i),
                }
            }
        }
        let mut roots: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for i in 0..n {
            let r = find(&mut parent, i);
            match roots.iter().position(|&x| x == r) {
                Some(k) => members[k].push(i),
                None => {
                    roots.push(r);
                    members.push(vec![i]);
                }
            }
        }
        let subtopologies = members
            .into_iter()
            .enumerate()
            .map(|(id, ids)| {
                let local = |g: usize| ids.iter().position(|&x| x == g);
                let mut store_ids: Vec<usize> = Vec::new();
                for &g in &ids {
                    for &s in &nodes[g].stores {
                        if !store_ids.contains(&s) {
                            store_ids.push(s);
                        }
                    }
                }
                let mut source_topics = Vec::new();
                let mut sources = Vec::new();
                for (l, &g) in ids.iter().enumerate() {
                    if let NodeKind::Source { topics } = &nodes[g].kind {
                        for t in topics {
                            source_topics.push(t.clone());
                            sources.push((t.clone(), l));
                        }
                    }
                }
                let wiring = Wiring {
                    names: ids.iter().map(|&g| nodes[g].name.clone()).collect(),
                    children: ids
                        .iter()
                        .map(|&g| nodes[g].children.iter().filter_map(|&c| local(c)).collect())
                        .collect(),
                    node_stores: ids
                        .iter()
                        .map(|&g| {
                            nodes[g]
                                .stores
                                .iter()
                                .filter_map(|s| store_ids.iter().position(|x| x == s))
                                .collect()
                        })
                        .collect(),
                    lifecycles: ids.iter().map(|&g| nodes[g].lifecycle).collect(),
                };
                SubTopology {
                    id: id as u32,
                    factories: ids.iter().map(|&g| nodes[g].factory.clone()).collect(),
                    nodes: ids,
                    source_topics,
                    stores: store_ids,
                    wiring: Arc::new(wiring),
                    sources,
                }
            })
            .collect();
        Topology {
            inner: Arc::new(TopologyInner {
                nodes,
                stores,
                subtopologies,
                repartition_topics,
                splits,
            }),
        }
    }

    /// Sub-topologies, sources, processors, stores and sinks, with the internal topics, in the
    /// shape of Kafka Streams' `TopologyDescription`. Internal topic names are shown relative
    /// to the application id (`<application.id>-...`).
    pub fn describe(&self) -> String {
        let t = &*self.inner;
        let mut out = String::from("Topologies:\n");
        let arrow = |ids: &[usize]| -> String {
            ids.iter()
                .map(|&i| t.nodes[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let topic = |r: &TopicRef| r.resolve("<application.id>");
        for sub in &t.subtopologies {
            let _ = writeln!(out, "   Sub-topology: {}", sub.id);
            for &g in &sub.nodes {
                let node = &t.nodes[g];
                let stores: Vec<&str> = node
                    .stores
                    .iter()
                    .map(|&s| t.stores[s].name.as_str())
                    .collect();
                match &node.kind {
                    NodeKind::Source { topics } => {
                        let names: Vec<String> = topics.iter().map(topic).collect();
                        let _ = writeln!(
                            out,
                            "    Source: {} (topics: [{}])",
                            node.name,
                            names.join(", ")
                        );
                    }
                    NodeKind::Processor => {
                        let _ = writeln!(
                            out,
                            "    Processor: {} (stores: [{}])",
                            node.name,
                            stores.join(", ")
                        );
                    }
                    NodeKind::Sink { topic: to } => {
                        let _ = writeln!(out, "    Sink: {} (topic: {})", node.name, topic(to));
                    }
                }
                if !node.children.is_empty() {
                    let _ = writeln!(out, "      --> {}", arrow(&node.children));
                }
                if !node.parents.is_empty() {
                    let _ = writeln!(out, "      <-- {}", arrow(&node.parents));
                }
            }
            out.push('\n');
        }
        if !t.stores.is_empty() {
            out.push_str("Stores:\n");
            for s in &t.stores {
                let changelog = if s.logging {
                    changelog_topic("<application.id>", &s.name)
                } else {
                    "none".to_owned()
                };
                let _ = writeln!(
                    out,
                    "    {} ({:?}, cache: {}, changelog: {})",
                    s.name,
                    s.store_type,
                    if s.caching { "on" } else { "off" },
                    changelog
                );
            }
        }
        if !t.repartition_topics.is_empty() {
            out.push_str("Repartition topics:\n");
            for (name, partitions) in &t.repartition_topics {
                let count =
                    partitions.map_or("as the upstream sources".to_owned(), |p| p.to_string());
                let _ = writeln!(
                    out,
                    "    {} (partitions: {count})",
                    repartition_topic("<application.id>", name)
                );
            }
        }
        if !t.splits.is_empty() {
            out.push_str("Hot-key splits (two-stage aggregation):\n");
            for s in &t.splits {
                let _ = writeln!(out, "    {s}");
            }
        }
        out
    }

    /// The user topics the topology reads (not internal ones).
    pub fn source_topics(&self) -> Vec<String> {
        let mut set = BTreeSet::new();
        for sub in &self.inner.subtopologies {
            for t in &sub.source_topics {
                if let TopicRef::User(name) = t {
                    set.insert(name.clone());
                }
            }
        }
        set.into_iter().collect()
    }

    /// The names of the state stores.
    pub fn store_names(&self) -> Vec<String> {
        self.inner.stores.iter().map(|s| s.name.clone()).collect()
    }
}
