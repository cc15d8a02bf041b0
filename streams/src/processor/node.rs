//! The node arena of a task: every node of a sub-topology as a `Box<dyn InputNode<K, V>>`,
//! wired by index, and how a record goes from a node to its children.
//!
//! ```text
//!  Task ─▶ deliver(source) ─▶ node.process(cx, record) ─▶ ctx.forward ─▶ deliver(child) ─▶ …
//!            (take the node out of its slot for the call, put it back after)
//! ```
//!
//! `forward` finds a child's input types by downcasting its slot (a type-id compare), so
//! records move between nodes typed, without boxing per record. The runtime's nodes (source,
//! sink, processor: `runtime/*_node.rs`) implement [`InputNode`]; the arena and the context
//! they run in live here, below the declaration, because the DSL's processors forward through
//! them too.

use std::any::Any;

use crate::error::{Error, Result};
use crate::processor::context::TaskContext;
use crate::processor::{PunctuationType, Record};

/// One node of a task's topology with its input types erased: `Box<dyn InputNode<K, V>>`
/// inside `Box<dyn Any>`, so a parent can find its child's input types by downcasting.
pub(crate) type AnyNode = Box<dyn Any + Send>;

/// A place of the arena: empty while its node runs (see [`with_node`]).
pub(crate) type Slot = Option<AnyNode>;

/// Recovers the lifecycle of a slot whatever its node's input types.
pub(crate) type LifecycleFn = fn(&mut (dyn Any + Send)) -> Option<&mut dyn Lifecycle>;

/// A sub-topology as a task's arena sees it: local node and store indices.
pub(crate) struct Wiring {
    pub names: Vec<String>,
    pub children: Vec<Vec<usize>>,
    /// Local store indices each node may use.
    pub node_stores: Vec<Vec<usize>>,
    pub lifecycles: Vec<LifecycleFn>,
}

/// The mutable parts of a task a node reaches while it runs.
pub(crate) struct Cx<'a> {
    pub task: &'a mut TaskContext,
    pub nodes: &'a mut [Slot],
    pub wiring: &'a Wiring,
    pub node: usize,
}

impl Cx<'_> {
    pub(crate) fn reborrow(&mut self, node: usize) -> Cx<'_> {
        Cx {
            task: self.task,
            nodes: self.nodes,
            wiring: self.wiring,
            node,
        }
    }
}

/// A node that receives `Record<K, V>`.
pub(crate) trait InputNode<K, V>: Lifecycle {
    fn process(&mut self, cx: &mut Cx<'_>, record: Record<K, V>) -> Result<()>;
}

/// What the task calls on every node, whatever its types.
/// Sources and sinks keep the no-op defaults; processor nodes pass each call on.
pub(crate) trait Lifecycle: Send {
    fn init(&mut self, _cx: &mut Cx<'_>) -> Result<()> {
        Ok(())
    }
    fn punctuate(
        &mut self,
        _cx: &mut Cx<'_>,
        _kind: PunctuationType,
        _timestamp: i64,
    ) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self, _cx: &mut Cx<'_>) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Finds the lifecycle of a slot holding a node with inputs `K`, `V`.
pub(crate) fn lifecycle_of<K: 'static, V: 'static>(
    slot: &mut (dyn Any + Send),
) -> Option<&mut dyn Lifecycle> {
    let node = slot.downcast_mut::<Box<dyn InputNode<K, V>>>()?;
    Some(&mut **node as &mut dyn Lifecycle)
}

pub(crate) fn slot_of<K: 'static, V: 'static>(node: Box<dyn InputNode<K, V>>) -> AnyNode {
    Box::new(node)
}

/// Runs `f` on node `index` of the arena, taken out for the call so that it can reach the
/// arena (its children) itself.
pub(crate) fn with_node<R>(
    cx: &mut Cx<'_>,
    index: usize,
    f: impl FnOnce(&mut (dyn Any + Send), &mut Cx<'_>) -> Result<R>,
) -> Result<R> {
    let mut slot = cx.nodes[index].take().ok_or(Error::IllegalState {
        reason: "a topology node was re-entered (a cycle)",
    })?;
    let result = f(&mut *slot, &mut cx.reborrow(index));
    cx.nodes[index] = Some(slot);
    result
}

/// Sends `record` to node `index`, which takes `K`, `V`.
pub(crate) fn deliver<K: 'static, V: 'static>(
    cx: &mut Cx<'_>,
    index: usize,
    record: Record<K, V>,
) -> Result<()> {
    with_node(cx, index, |slot, cx| {
        match slot.downcast_mut::<Box<dyn InputNode<K, V>>>() {
            Some(node) => node.process(cx, record),
            None => Err(Error::IllegalState {
                reason: "a node was wired to a child of another type",
            }),
        }
    })
}
