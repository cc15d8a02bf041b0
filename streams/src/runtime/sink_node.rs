//! The sink node: writes the records it receives to a topic through the task's producer
//! (Kafka Streams' `SinkNode`), choosing the partition and counting keys for hot-key
//! detection at repartition topics.

use std::sync::Arc;

use crate::builder::{Data, SinkDef, StreamPartitioner};
use crate::error::{Error, Result};
use crate::processor::Record;
use crate::processor::node::{Cx, InputNode, Lifecycle};
use crate::serde::{SharedSerde, encode};
use crate::topology::{Instantiate, MakeNode};

impl<K: Data, V: Data> MakeNode<K, V> for SinkDef<K, V> {
    fn make(&self, i: &Instantiate<'_>) -> Box<dyn InputNode<K, V>> {
        Box::new(SinkNode {
            topic: self.topic.resolve(i.application_id).into(),
            key_serde: self.produced.key_serde.clone(),
            value_serde: self.produced.value_serde.clone(),
            partitioner: self.produced.partitioner.clone(),
            partitions: None,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            repartition: self.detect_hot_keys,
            hot_keys: None,
        })
    }
}

/// Writes records to a topic through the task's producer.
struct SinkNode<K, V> {
    topic: Arc<str>,
    key_serde: SharedSerde<K>,
    value_serde: SharedSerde<V>,
    partitioner: Option<StreamPartitioner<K, V>>,
    partitions: Option<u32>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    /// Whether the sink counts its keys for hot-key detection (a repartition topic's, unless a
    /// hot-key router counts them before it).
    repartition: bool,
    /// The task's hot-key summary of this sink (`TaskContext::hot_keys`), set at init.
    hot_keys: Option<usize>,
}

impl<K: Data, V: Data> Lifecycle for SinkNode<K, V> {
    fn init(&mut self, cx: &mut Cx<'_>) -> Result<()> {
        if self.repartition {
            self.hot_keys = cx.task.hot_keys.register(&self.topic);
        }
        Ok(())
    }
}

impl<K: Data, V: Data> InputNode<K, V> for SinkNode<K, V> {
    fn process(&mut self, cx: &mut Cx<'_>, r: Record<K, V>) -> Result<()> {
        let serde_error = |source| Error::Serde {
            topic: String::new(),
            partition: None,
            offset: None,
            source,
        };
        let has_key = encode(&*self.key_serde, &self.topic, &r.key, &mut self.key_buf)
            .map_err(serde_error)?;
        let has_value = encode(
            &*self.value_serde,
            &self.topic,
            &r.value,
            &mut self.value_buf,
        )
        .map_err(serde_error)?;
        let partitions = match self.partitions {
            Some(p) => p,
            None => {
                let p = cx.task.admin.partition_count(&self.topic)?;
                self.partitions = Some(p);
                p
            }
        };
        if has_key && let Some(sink) = self.hot_keys {
            cx.task.hot_keys.offer(sink, &self.key_buf);
        }
        let partition = match &self.partitioner {
            Some(f) => f(&r.key, &r.value, partitions) % partitions.max(1),
            None if has_key => core_log::partition_for_key(&self.key_buf, partitions),
            None => (cx.task.record.offset.unsigned_abs() % u64::from(partitions.max(1))) as u32,
        };
        cx.task.send(
            &self.topic,
            partition,
            has_key.then_some(&self.key_buf[..]),
            has_value.then_some(&self.value_buf[..]),
            r.timestamp,
            &r.headers,
        )
    }
}
