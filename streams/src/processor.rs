//! The Processor API: custom processors with `init`, `process`, `punctuate` and `close`, access
//! to state stores by name, forwarding to child nodes, punctuation on stream time and on
//! wall-clock time, and the context of the record being processed.
//!
//! ```
//! use streams::{Processor, ProcessorContext, Record, Result, StoreHandle};
//!
//! /// Counts records per key in a store and forwards the running count.
//! #[derive(Default)]
//! struct Counter { counts: Option<StoreHandle<String, i64>> }
//!
//! impl Processor<String, String, String, i64> for Counter {
//!     fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<()> {
//!         self.counts = Some(ctx.key_value_store("counts")?);
//!         Ok(())
//!     }
//!     fn process(&mut self, ctx: &mut ProcessorContext<'_, String, i64>, r: Record<String, String>) -> Result<()> {
//!         let store = ctx.store(self.counts.expect("init ran"));
//!         let n = store.get(&r.key)?.unwrap_or(0) + 1;
//!         store.put(r.key.clone(), n)?;
//!         ctx.forward(Record::new(r.key, n, r.timestamp))
//!     }
//! }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use core_log::OwnedHeader;

pub(crate) mod context;
pub(crate) mod node;

use crate::error::{Error, Result};
use crate::processor::context::TaskId;
use crate::processor::node::{Cx, deliver};
use crate::state::store::Store;

/// A record flowing through a topology: key, value, timestamp (milliseconds since the epoch)
/// and headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// Event time in milliseconds since the epoch.
    pub timestamp: i64,
    /// Headers, carried to sinks.
    pub headers: Vec<OwnedHeader>,
}

impl<K, V> Record<K, V> {
    /// A record without headers.
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Record {
            key,
            value,
            timestamp,
            headers: Vec::new(),
        }
    }

    /// The same record with another key.
    pub fn with_key<K2>(self, key: K2) -> Record<K2, V> {
        Record {
            key,
            value: self.value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another value.
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }
}

/// Where the record being processed came from (Kafka's `RecordMetadata` of the processor
/// context): the source topic, partition and offset. For records a punctuator or a cache flush
/// forwards, the last record's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordContext {
    /// The source topic.
    pub topic: Arc<str>,
    /// The source partition.
    pub partition: u32,
    /// The offset in the source partition.
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp: i64,
}

/// What drives a punctuation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// Stream time: the largest record timestamp the task has seen. Fires as records arrive,
    /// never on idle input.
    StreamTime,
    /// The clock of the log (the system clock, or a manual clock in tests).
    WallClockTime,
}

/// A user processor. Only `process` is required.
///
/// `K`/`V` are the types it receives, `KOut`/`VOut` the types it forwards. A processor belongs to
/// one task and is called from one thread at a time.
pub trait Processor<K, V, KOut = K, VOut = V>: Send {
    /// Called once before the first record: look up stores, schedule punctuations.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Processes one record.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
        record: Record<K, V>,
    ) -> Result<()>;

    /// A punctuation scheduled with [`ProcessorContext::schedule`] is due; `timestamp` is the
    /// stream time or the wall-clock time that made it due.
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
        kind: PunctuationType,
        timestamp: i64,
    ) -> Result<()> {
        let _ = (ctx, kind, timestamp);
        Ok(())
    }

    /// Called at every commit before stores are flushed: forward anything buffered.
    fn flush(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when the task closes.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A typed reference to a key-value store connected to a processor; look the store up with
/// [`ProcessorContext::store`].
pub struct StoreHandle<K, V> {
    pub(crate) index: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> StoreHandle<K, V> {
    pub(crate) fn new(index: usize) -> Self {
        StoreHandle {
            index,
            _types: PhantomData,
        }
    }
}

impl<K, V> Clone for StoreHandle<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for StoreHandle<K, V> {}
impl<K, V> std::fmt::Debug for StoreHandle<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreHandle").field(&self.index).finish()
    }
}

/// What a processor sees of its task: forward, stores, punctuation, record context.
pub struct ProcessorContext<'a, K, V> {
    pub(crate) cx: Cx<'a>,
    _types: PhantomData<fn(K, V)>,
}

impl<'a, K: Clone + 'static, V: Clone + 'static> ProcessorContext<'a, K, V> {
    pub(crate) fn new(cx: Cx<'a>) -> Self {
        ProcessorContext {
            cx,
            _types: PhantomData,
        }
    }

    /// Sends `record` to every child of this processor.
    pub fn forward(&mut self, record: Record<K, V>) -> Result<()> {
        let wiring = self.cx.wiring;
        let children = &wiring.children[self.cx.node];
        match children.split_last() {
            None => Ok(()),
            Some((&last, rest)) => {
                for &child in rest {
                    deliver(&mut self.cx, child, record.clone())?;
                }
                deliver(&mut self.cx, last, record)
            }
        }
    }

    /// Sends `record` to the `index`-th child (in the order they were added).
    pub(crate) fn forward_to_index(&mut self, index: usize, record: Record<K, V>) -> Result<()> {
        match self.cx.wiring.children[self.cx.node].get(index) {
            Some(&child) => deliver(&mut self.cx, child, record),
            None => Ok(()),
        }
    }

    /// Sends `record` to the child named `child` only.
    pub fn forward_to(&mut self, child: &str, record: Record<K, V>) -> Result<()> {
        let wiring = self.cx.wiring;
        let index = wiring.children[self.cx.node]
            .iter()
            .copied()
            .find(|&c| wiring.names[c] == child)
            .ok_or_else(|| Error::InvalidTopology {
                reason: format!(
                    "processor {:?} has no child {child:?}",
                    wiring.names[self.cx.node]
                ),
            })?;
        deliver(&mut self.cx, index, record)
    }
}

impl<K, V> ProcessorContext<'_, K, V> {
    /// The key-value store `name`, which must be connected to this processor. Call it in
    /// `init` and keep the handle.
    pub fn key_value_store<SK: 'static, SV: 'static>(
        &mut self,
        name: &str,
    ) -> Result<StoreHandle<SK, SV>> {
        let wiring = self.cx.wiring;
        let unknown = || Error::UnknownStore {
            name: name.to_owned(),
            processor: wiring.names[self.cx.node].clone(),
        };
        let index = wiring.node_stores[self.cx.node]
            .iter()
            .copied()
            .find(|&s| self.cx.task.store_name(s) == name)
            .ok_or_else(unknown)?;
        if self
            .cx
            .task
            .store_any(index)
            .downcast_ref::<Store<SK, SV>>()
            .is_none()
        {
            return Err(Error::InvalidTopology {
                reason: format!("store {name:?} holds other key or value types"),
            });
        }
        Ok(StoreHandle::new(index))
    }

    /// The store behind `handle`.
    pub fn store<SK: 'static, SV: 'static>(
        &mut self,
        handle: StoreHandle<SK, SV>,
    ) -> &mut Store<SK, SV> {
        self.cx.task.store_mut(handle)
    }

    /// Where the current record came from.
    pub fn record_context(&self) -> &RecordContext {
        &self.cx.task.record
    }

    /// The task's stream time: the largest record timestamp it has seen (-1 before any).
    pub fn stream_time(&self) -> i64 {
        self.cx.task.stream_time
    }

    /// The wall-clock time (the log's clock) in milliseconds.
    pub fn wall_clock_time(&self) -> i64 {
        self.cx.task.clock.now_ms()
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.cx.task.application_id
    }

    /// The task's id, `<sub-topology>_<partition>` as in Kafka Streams.
    pub fn task_id(&self) -> TaskId {
        self.cx.task.task_id
    }

    /// Calls this processor's [`Processor::punctuate`] every `interval` of stream time or
    /// wall-clock time. Returns the schedule's id for [`ProcessorContext::cancel`].
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> Result<usize> {
        let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        if ms <= 0 {
            return Err(Error::InvalidConfig {
                key: "punctuation interval".into(),
                value: format!("{interval:?}"),
                reason: "must be at least 1 ms",
            });
        }
        Ok(self.cx.task.schedule(self.cx.node, kind, ms))
    }

    /// Cancels a punctuation scheduled by this processor.
    pub fn cancel(&mut self, schedule: usize) {
        self.cx.task.cancel(schedule);
    }
}

/// A processor made of a closure: the DSL's stateless operators.
pub(crate) struct FnProcessor<F>(pub F);

impl<K, V, KOut, VOut, F> Processor<K, V, KOut, VOut> for FnProcessor<F>
where
    F: FnMut(&mut ProcessorContext<'_, KOut, VOut>, Record<K, V>) -> Result<()> + Send,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
        record: Record<K, V>,
    ) -> Result<()> {
        (self.0)(ctx, record)
    }
}
