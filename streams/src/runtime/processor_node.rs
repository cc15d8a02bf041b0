//! The processor node: runs a user [`Processor`] (or a DSL operator's) as a node of the
//! task's arena (Kafka Streams' `ProcessorNode`).

use crate::builder::ProcessorDef;
use crate::error::Result;
use crate::processor::node::{Cx, InputNode, Lifecycle};
use crate::processor::{Processor, ProcessorContext, PunctuationType, Record};
use crate::topology::{Instantiate, MakeNode};

impl<K, V, KOut, VOut> MakeNode<K, V> for ProcessorDef<K, V, KOut, VOut>
where
    K: 'static,
    V: 'static,
    KOut: Clone + 'static,
    VOut: Clone + 'static,
{
    fn make(&self, _: &Instantiate<'_>) -> Box<dyn InputNode<K, V>> {
        Box::new(ProcessorNode {
            processor: (self.supplier)(),
        })
    }
}

/// The node that runs a user [`Processor`].
struct ProcessorNode<K, V, KOut, VOut> {
    processor: Box<dyn Processor<K, V, KOut, VOut>>,
}

impl<K, V, KOut, VOut> Lifecycle for ProcessorNode<K, V, KOut, VOut>
where
    K: 'static,
    V: 'static,
    KOut: Clone + 'static,
    VOut: Clone + 'static,
{
    fn init(&mut self, cx: &mut Cx<'_>) -> Result<()> {
        self.processor
            .init(&mut ProcessorContext::new(cx.reborrow(cx.node)))
    }

    fn punctuate(&mut self, cx: &mut Cx<'_>, kind: PunctuationType, timestamp: i64) -> Result<()> {
        self.processor.punctuate(
            &mut ProcessorContext::new(cx.reborrow(cx.node)),
            kind,
            timestamp,
        )
    }

    fn flush(&mut self, cx: &mut Cx<'_>) -> Result<()> {
        self.processor
            .flush(&mut ProcessorContext::new(cx.reborrow(cx.node)))
    }

    fn close(&mut self) -> Result<()> {
        self.processor.close()
    }
}

impl<K, V, KOut, VOut> InputNode<K, V> for ProcessorNode<K, V, KOut, VOut>
where
    K: 'static,
    V: 'static,
    KOut: Clone + 'static,
    VOut: Clone + 'static,
{
    fn process(&mut self, cx: &mut Cx<'_>, record: Record<K, V>) -> Result<()> {
        self.processor
            .process(&mut ProcessorContext::new(cx.reborrow(cx.node)), record)
    }
}
