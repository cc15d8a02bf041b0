//! The source node: the first node of a sub-topology, reading its topics' raw records and
//! forwarding them typed (Kafka Streams' `SourceNode`).

use crate::builder::{Data, SourceDef};
use crate::error::{Error, Result};
use crate::processor::context::{ErrorSource, Raw};
use crate::processor::node::{Cx, InputNode, Lifecycle};
use crate::processor::{ProcessorContext, Record};
use crate::serde::{Serde, SerdeError, SharedSerde};
use crate::topology::{Instantiate, MakeNode};

impl<K: Data, V: Data> MakeNode<Raw, Raw> for SourceDef<K, V> {
    fn make(&self, _: &Instantiate<'_>) -> Box<dyn InputNode<Raw, Raw>> {
        Box::new(SourceNode {
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        })
    }
}

/// Reads the raw records of its topics and forwards them typed. Bad bytes go to the
/// deserialization error handler; a failure downstream goes to the processing error handler,
/// both with the raw record for a dead-letter queue.
struct SourceNode<K, V> {
    key_serde: SharedSerde<K>,
    value_serde: SharedSerde<V>,
}

/// One side (key or value) of a raw record: its bytes decoded with `de`, or the serde's null
/// for a null; `None` when the serde has no null (the record is skipped).
fn decode_side<T: 'static, B>(
    serde: &dyn Serde<T>,
    raw: Option<B>,
    de: impl FnOnce(B) -> std::result::Result<T, SerdeError>,
) -> std::result::Result<Option<T>, SerdeError> {
    match raw {
        Some(bytes) => de(bytes).map(Some),
        None => Ok(serde.null()),
    }
}

impl<K: Data, V: Data> SourceNode<K, V> {
    /// Decodes a record's bytes (slices of the consumer's fetch buffer). A null key only
    /// reaches a topology whose key serde has a null (`Nullable`); otherwise the record is
    /// skipped and counted, as Kafka's aggregations skip them.
    fn decode(
        &self,
        topic: &str,
        key: &Raw,
        value: &Raw,
    ) -> std::result::Result<Option<(K, V)>, SerdeError> {
        let (ks, vs) = (&*self.key_serde, &*self.value_serde);
        let Some(key) = decode_side(ks, key.as_deref(), |b| ks.deserialize(topic, b))? else {
            return Ok(None);
        };
        let value = decode_side(vs, value.as_deref(), |b| vs.deserialize(topic, b))?;
        Ok(value.map(|v| (key, v)))
    }
}

impl<K: Data, V: Data> Lifecycle for SourceNode<K, V> {}

impl<K: Data, V: Data> InputNode<Raw, Raw> for SourceNode<K, V> {
    fn process(&mut self, cx: &mut Cx<'_>, raw: Record<Raw, Raw>) -> Result<()> {
        let Record {
            key,
            value,
            timestamp,
            headers,
        } = raw;
        let topic = &cx.task.record.topic;
        let decoded = self.decode(topic, &key, &value);
        // A dead-letter queue needs the raw bytes after decoding (sharing the fetch buffer,
        // not copied).
        let raw = if cx.task.keeps_raw_records() {
            Record {
                key,
                value,
                timestamp,
                headers: headers.clone(),
            }
        } else {
            Record {
                key: None,
                value: None,
                timestamp,
                headers: Vec::new(),
            }
        };
        let (key, value) = match decoded {
            Ok(Some(kv)) => kv,
            Ok(None) => {
                cx.task.metrics.skipped_records += 1;
                return Ok(());
            }
            Err(source) => {
                let error = cx.task.serde_error(source);
                return cx
                    .task
                    .handle_error(ErrorSource::Deserialization, error, &raw);
            }
        };
        let mut ctx = ProcessorContext::<K, V>::new(cx.reborrow(cx.node));
        match ctx.forward(Record {
            key,
            value,
            timestamp,
            headers,
        }) {
            Err(e @ (Error::Processing { .. } | Error::Serde { .. })) => {
                cx.task.handle_error(ErrorSource::Processing, e, &raw)
            }
            r => r,
        }
    }
}
