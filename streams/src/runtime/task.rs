//! A task: one sub-topology instantiated for one partition, with its stores.
//!
//! ```text
//!  raw record ─▶ source ─▶ processors ─▶ sinks ─▶ producer (output, repartition)
//!                               │
//!                               ▼ get/put
//!                        stores (cache) ─flush─▶ backend + changelog
//! ```
//!
//! Commit, at-least-once: `prepare_commit` flushes processors and caches (writing the
//! backends' staged batches and the changelog records), the thread flushes the producer, then
//! `finish_commit` applies each backend's batch with the changelog offset it reaches (the
//! checkpoint) and returns the input offsets the thread commits.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use core_log::{Clock, IsolationLevel, Log, OwnedHeader, ProducerRecord, TopicPartition};

use crate::builder::Raw;
use crate::config::ErrorHandling;
use crate::error::{Error, Result};
use crate::processor::{Cx, PunctuationType, Record, RecordContext, Slot, StoreHandle, deliver};
use crate::runtime::hot_keys::{HotKeysConfig, TaskHotKeys};
use crate::state::store::{AnyStore, BytesProducer, Changelog, Store};
use crate::state::{InMemoryKeyValueStore, KeyValueStore, RocksDbConfig, RocksDbKeyValueStore};
use crate::topology::{Instantiate, StoreType, Topology, Wiring, changelog_topic};

/// A task's id: the sub-topology and the partition, written `<sub-topology>_<partition>` as in
/// Kafka Streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The sub-topology.
    pub subtopology: u32,
    /// The partition of its source topics.
    pub partition: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Where an error met a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    Deserialization,
    Processing,
}

/// Counters of one task.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskMetrics {
    pub processed: u64,
    pub skipped_records: u64,
    pub dropped_errors: u64,
    pub dead_lettered: u64,
    pub restored_records: u64,
}

/// What every task of a thread shares.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub application_id: Arc<str>,
    pub log: Log,
    pub clock: Arc<dyn Clock>,
    pub producer: Arc<BytesProducer>,
    pub send_error: Arc<Mutex<Option<core_log::Error>>>,
    pub state_dir: PathBuf,
    pub rocksdb: RocksDbConfig,
    pub cache_bytes_per_store: usize,
    pub deserialization: ErrorHandling,
    pub processing: ErrorHandling,
    /// Stores hold writes until their transaction commits.
    pub exactly_once: bool,
    /// Hot-key detection at repartition sinks.
    pub hot_keys: HotKeysConfig,
}

struct Schedule {
    id: usize,
    node: usize,
    kind: PunctuationType,
    interval: i64,
    next: i64,
}

/// The state of a task a processor reaches through its context.
pub(crate) struct TaskContext {
    pub task_id: TaskId,
    pub application_id: Arc<str>,
    pub record: RecordContext,
    pub stream_time: i64,
    pub clock: Arc<dyn Clock>,
    pub log: Log,
    pub metrics: TaskMetrics,
    /// The hot-key summaries of the task's repartition sinks.
    pub hot_keys: TaskHotKeys,
    producer: Arc<BytesProducer>,
    /// The delivery callback of every send: a failure goes to the thread's slot (checked at
    /// every commit). One for all sends: a send does not allocate for it.
    on_delivery: core_log::SharedCallback,
    deserialization: ErrorHandling,
    processing: ErrorHandling,
    stores: Vec<Box<dyn AnyStore>>,
    schedules: Vec<Schedule>,
    next_schedule: usize,
}

impl TaskContext {
    pub(crate) fn store_name(&self, index: usize) -> &str {
        self.stores[index].name()
    }

    pub(crate) fn store_any(&self, index: usize) -> &dyn std::any::Any {
        self.stores[index].as_any()
    }

    pub(crate) fn store_mut<K: 'static, V: 'static>(
        &mut self,
        h: StoreHandle<K, V>,
    ) -> &mut Store<K, V> {
        match self.stores[h.index]
            .as_any_mut()
            .downcast_mut::<Store<K, V>>()
        {
            Some(s) => s,
            // A handle is only made by `key_value_store`, which checks the types.
            None => unreachable!("store handle of the wrong types"),
        }
    }

    pub(crate) fn schedule(&mut self, node: usize, kind: PunctuationType, interval: i64) -> usize {
        let id = self.next_schedule;
        self.next_schedule += 1;
        let next = match kind {
            PunctuationType::WallClockTime => self.clock.now_ms().saturating_add(interval),
            PunctuationType::StreamTime if self.stream_time >= 0 => {
                self.stream_time.saturating_add(interval)
            }
            PunctuationType::StreamTime => i64::MIN,
        };
        self.schedules.push(Schedule {
            id,
            node,
            kind,
            interval,
            next,
        });
        id
    }

    pub(crate) fn cancel(&mut self, id: usize) {
        self.schedules.retain(|s| s.id != id);
    }

    /// Sends a record through the thread's producer; a failed append is reported at commit.
    pub(crate) fn send(
        &mut self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[OwnedHeader],
    ) -> Result<()> {
        let borrowed: Vec<core_log::Header<'_>>;
        let mut record = ProducerRecord::new(topic)
            .partition(partition)
            .timestamp(timestamp);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.value(v);
        }
        if !headers.is_empty() {
            borrowed = headers.iter().map(OwnedHeader::as_header).collect();
            record = record.headers(&borrowed);
        }
        self.producer
            .send_with_shared_callback(record, &self.on_delivery)?;
        Ok(())
    }

    /// Whether a handler sends failed records to a dead-letter queue, which needs their raw
    /// bytes after decoding.
    pub(crate) fn keeps_raw_records(&self) -> bool {
        matches!(self.deserialization, ErrorHandling::DeadLetterQueue(_))
            || matches!(self.processing, ErrorHandling::DeadLetterQueue(_))
    }

    /// A deserialization error of the current record, with its provenance.
    pub(crate) fn serde_error(&self, source: crate::serde::SerdeError) -> Error {
        Error::Serde {
            topic: self.record.topic.to_string(),
            partition: self.record.partition as i32,
            offset: self.record.offset,
            source,
        }
    }

    /// A processor's error outside the processing of an input record (a punctuation, a
    /// flush, a forwarded cache flush) goes to the processing handler, without raw bytes;
    /// other errors (store, log) pass.
    pub(crate) fn handle_node_error(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Err(e @ (Error::Processing { .. } | Error::Serde { .. })) => {
                let none = Record {
                    key: None,
                    value: None,
                    timestamp: self.record.timestamp,
                    headers: Vec::new(),
                };
                self.handle_error(ErrorSource::Processing, e, &none)
            }
            r => r,
        }
    }

    /// Applies the configured handler to a record that failed; `Ok` means go on.
    pub(crate) fn handle_error(
        &mut self,
        source: ErrorSource,
        error: Error,
        raw: &Record<Raw, Raw>,
    ) -> Result<()> {
        let handling = match source {
            ErrorSource::Deserialization => self.deserialization.clone(),
            ErrorSource::Processing => self.processing.clone(),
        };
        match handling {
            ErrorHandling::Fail => Err(error),
            ErrorHandling::LogAndContinue => {
                tracing::warn!(task = %self.task_id, topic = %self.record.topic, partition = self.record.partition, offset = self.record.offset, %error, "skipping a record that failed");
                self.metrics.dropped_errors += 1;
                Ok(())
            }
            ErrorHandling::DeadLetterQueue(topic) => {
                let mut headers = raw.headers.clone();
                let h = |k: &str, v: String| OwnedHeader {
                    key: k.to_owned(),
                    value: Some(v.into_bytes()),
                };
                headers.push(h("__streams.errors.topic", self.record.topic.to_string()));
                headers.push(h(
                    "__streams.errors.partition",
                    self.record.partition.to_string(),
                ));
                headers.push(h("__streams.errors.offset", self.record.offset.to_string()));
                headers.push(h(
                    "__streams.errors.exception",
                    match source {
                        ErrorSource::Deserialization => "deserialization".to_owned(),
                        ErrorSource::Processing => "processing".to_owned(),
                    },
                ));
                headers.push(h("__streams.errors.message", error.to_string()));
                let partitions = self.log.partition_count(&topic)?;
                let partition = match &raw.key {
                    Some(k) => core_log::partition_for_key(k, partitions),
                    None => self.record.partition % partitions.max(1),
                };
                self.send(
                    &topic,
                    partition,
                    raw.key.as_deref(),
                    raw.value.as_deref(),
                    raw.timestamp,
                    &headers,
                )?;
                self.metrics.dead_lettered += 1;
                Ok(())
            }
        }
    }
}

struct Input {
    topic: Arc<str>,
    partition: u32,
    node: usize,
    next_offset: i64,
}

/// One sub-topology for one partition.
pub(crate) struct Task {
    ctx: TaskContext,
    nodes: Vec<Slot>,
    wiring: Arc<Wiring>,
    /// Resolved source topic -> local source node.
    sources: HashMap<String, usize>,
    /// Input partitions seen, with their source node and the offset after the last
    /// processed record; `last_input` is where the previous record came from (records
    /// arrive in runs per partition, so most lookups are one pointer compare).
    inputs: Vec<Input>,
    last_input: usize,
    store_logged: Vec<bool>,
    store_caching: Vec<bool>,
    closed: bool,
}

impl Task {
    /// Opens the task's stores, restores them from their changelogs and initialises the
    /// processors.
    pub(crate) fn new(topology: &Topology, id: TaskId, env: &TaskEnv) -> Result<Task> {
        let t = &*topology.inner;
        let sub = &t.subtopologies[id.subtopology as usize];
        let app = &*env.application_id;
        let mut stores: Vec<Box<dyn AnyStore>> = Vec::new();
        let mut store_logged = Vec::new();
        let mut store_caching = Vec::new();
        let mut restored = 0;
        for &s in &sub.stores {
            let def = &t.stores[s];
            let mut backend: Box<dyn KeyValueStore> = match def.store_type {
                StoreType::InMemory => Box::new(InMemoryKeyValueStore::new(def.name.clone())),
                StoreType::RocksDb => {
                    let dir = task_dir(&env.state_dir, app, id)
                        .join("rocksdb")
                        .join(&def.name);
                    std::fs::create_dir_all(&dir).map_err(|e| Error::store(&def.name, e))?;
                    Box::new(RocksDbKeyValueStore::open(&dir, &def.name, &env.rocksdb)?)
                }
            };
            let changelog = if def.logging {
                let topic = changelog_topic(app, &def.name);
                restored += restore(&env.log, &topic, id.partition, &mut *backend)?;
                Some(Changelog::new(
                    topic.into(),
                    id.partition,
                    env.producer.clone(),
                    env.send_error.clone(),
                ))
            } else {
                backend.clear()?;
                None
            };
            let mut store = (def.factory)(backend, changelog);
            store.set_transactional(env.exactly_once);
            store.set_cache_max_bytes(if def.caching {
                env.cache_bytes_per_store
            } else {
                0
            })?;
            stores.push(store);
            store_logged.push(def.logging);
            store_caching.push(def.caching);
        }
        let wiring = sub.wiring.clone();
        let inst = Instantiate {
            application_id: app,
        };
        let nodes: Vec<Slot> = wiring.factories.iter().map(|f| Some(f(&inst))).collect();
        let sources = wiring
            .sources
            .iter()
            .map(|(t, n)| (t.resolve(app), *n))
            .collect();
        let ctx = TaskContext {
            task_id: id,
            application_id: env.application_id.clone(),
            record: RecordContext::default(),
            stream_time: -1,
            clock: env.clock.clone(),
            log: env.log.clone(),
            metrics: TaskMetrics {
                restored_records: restored,
                ..TaskMetrics::default()
            },
            hot_keys: TaskHotKeys::new(env.hot_keys, env.clock.now_ms()),
            producer: env.producer.clone(),
            on_delivery: {
                let slot = env.send_error.clone();
                Arc::new(move |r| {
                    if let Err(e) = r {
                        crate::state::store::report_send_error(&slot, e);
                    }
                })
            },
            deserialization: env.deserialization.clone(),
            processing: env.processing.clone(),
            stores,
            schedules: Vec::new(),
            next_schedule: 0,
        };
        let mut task = Task {
            ctx,
            nodes,
            wiring,
            sources,
            inputs: Vec::new(),
            last_input: 0,
            store_logged,
            store_caching,
            closed: false,
        };
        for i in 0..task.nodes.len() {
            task.lifecycle(i, |n, cx| n.init(cx))?;
        }
        Ok(task)
    }

    fn lifecycle(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut dyn crate::processor::Lifecycle, &mut Cx<'_>) -> Result<()>,
    ) -> Result<()> {
        let get = self.wiring.lifecycles[index];
        let mut cx = Cx {
            task: &mut self.ctx,
            nodes: &mut self.nodes,
            wiring: &self.wiring,
            node: index,
        };
        crate::processor::with_node(&mut cx, index, |slot, cx| match get(slot) {
            Some(node) => f(node, cx),
            None => Err(Error::IllegalState {
                reason: "a node of unexpected type",
            }),
        })
    }

    /// The source topics this task reads, resolved.
    pub(crate) fn source_topics(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Processes one record of `topic`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        offset: i64,
        timestamp: i64,
        key: Raw,
        value: Raw,
        headers: Vec<OwnedHeader>,
    ) -> Result<()> {
        let input = self.input(topic, partition)?;
        let node = self.inputs[input].node;
        if !Arc::ptr_eq(&self.ctx.record.topic, topic) {
            self.ctx.record.topic = topic.clone();
        }
        self.ctx.record.partition = partition;
        self.ctx.record.offset = offset;
        self.ctx.record.timestamp = timestamp;
        let advanced = timestamp > self.ctx.stream_time;
        if advanced {
            self.ctx.stream_time = timestamp;
        }
        let mut cx = Cx {
            task: &mut self.ctx,
            nodes: &mut self.nodes,
            wiring: &self.wiring,
            node,
        };
        deliver::<Raw, Raw>(
            &mut cx,
            node,
            Record {
                key,
                value,
                timestamp,
                headers,
            },
        )?;
        self.ctx.metrics.processed += 1;
        self.inputs[input].next_offset = offset + 1;
        if advanced && !self.ctx.schedules.is_empty() {
            self.punctuate(PunctuationType::StreamTime, self.ctx.stream_time)?;
        }
        Ok(())
    }

    /// The index in `inputs` of `topic`/`partition`, added on first sight.
    fn input(&mut self, topic: &Arc<str>, partition: u32) -> Result<usize> {
        let same = |i: &Input| {
            i.partition == partition && (Arc::ptr_eq(&i.topic, topic) || *i.topic == **topic)
        };
        if let Some(i) = self.inputs.get(self.last_input)
            && same(i)
        {
            return Ok(self.last_input);
        }
        let index = match self.inputs.iter().position(same) {
            Some(index) => index,
            None => {
                let Some(&node) = self.sources.get(&**topic) else {
                    return Err(Error::IllegalState {
                        reason: "a record of a topic the task does not read",
                    });
                };
                self.inputs.push(Input {
                    topic: topic.clone(),
                    partition,
                    node,
                    next_offset: 0,
                });
                self.inputs.len() - 1
            }
        };
        self.last_input = index;
        Ok(index)
    }

    /// Runs wall-clock punctuations that are due.
    pub(crate) fn punctuate_wall_clock(&mut self) -> Result<()> {
        if self.ctx.schedules.is_empty() {
            return Ok(());
        }
        let now = self.ctx.clock.now_ms();
        self.punctuate(PunctuationType::WallClockTime, now)
    }

    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<()> {
        let mut due = Vec::new();
        for s in &mut self.ctx.schedules {
            if s.kind == kind && s.next <= now {
                due.push((s.id, s.node));
                s.next = if s.next == i64::MIN {
                    now.saturating_add(s.interval)
                } else {
                    let behind = (now - s.next) / s.interval;
                    s.next
                        .saturating_add((behind + 1).saturating_mul(s.interval))
                };
            }
        }
        for (id, node) in due {
            // An earlier punctuator of this round may have cancelled this one.
            if !self.ctx.schedules.iter().any(|s| s.id == id) {
                continue;
            }
            let r = self.lifecycle(node, |n, cx| n.punctuate(cx, kind, now));
            self.ctx.handle_node_error(r)?;
        }
        Ok(())
    }

    /// Flushes processors (parents first) and store caches: output and changelog records are
    /// sent, backend batches staged.
    pub(crate) fn prepare_commit(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            let r = self.lifecycle(i, |n, cx| n.flush(cx));
            self.ctx.handle_node_error(r)?;
        }
        for s in &mut self.ctx.stores {
            s.flush_cache()?;
        }
        let now = self.ctx.clock.now_ms();
        self.ctx.hot_keys.on_commit(now);
        Ok(())
    }

    /// After the producer has flushed: applies the stores' batches with their checkpoints and
    /// returns the input offsets to commit.
    pub(crate) fn finish_commit(&mut self) -> Result<Vec<(TopicPartition, i64)>> {
        self.apply_checkpoints()?;
        Ok(self.consumed_offsets())
    }

    /// Applies each store's staged writes with its checkpoint: one past the last changelog
    /// record it sent. Under exactly-once, only after the transaction committed.
    pub(crate) fn apply_checkpoints(&mut self) -> Result<()> {
        for (s, &logged) in self.ctx.stores.iter_mut().zip(&self.store_logged) {
            let end = if logged {
                s.take_changelog_end()?
            } else {
                None
            };
            s.apply_committed(end)?;
        }
        Ok(())
    }

    /// The offset after the last processed record of every input partition of the task, 0 for
    /// one it has processed nothing from (its position may still have moved past transaction
    /// markers: see `past_markers`).
    pub(crate) fn consumed_offsets(&self) -> Vec<(TopicPartition, i64)> {
        let partition = self.ctx.task_id.partition;
        self.sources
            .keys()
            .map(|topic| {
                let next = self
                    .inputs
                    .iter()
                    .find(|i| i.partition == partition && *i.topic == **topic)
                    .map_or(0, |i| i.next_offset);
                (TopicPartition::new(topic, partition), next)
            })
            .collect()
    }

    /// Exactly-once: the bytes the stores hold for the open transaction.
    pub(crate) fn held_bytes(&self) -> usize {
        self.ctx.stores.iter().map(|s| s.held_bytes()).sum()
    }

    /// The number of stores with a record cache.
    pub(crate) fn caching_stores(&self) -> usize {
        self.store_caching.iter().filter(|&&c| c).count()
    }

    /// Sets the cache budget of each caching store.
    pub(crate) fn set_cache_max_bytes(&mut self, bytes: usize) -> Result<()> {
        for (s, &caching) in self.ctx.stores.iter_mut().zip(&self.store_caching) {
            if caching {
                s.set_cache_max_bytes(bytes)?;
            }
        }
        Ok(())
    }

    /// Zeroes the counters (after they were added to the application's).
    pub(crate) fn reset_metrics(&mut self) {
        self.ctx.metrics = TaskMetrics::default();
    }

    /// The task's counters.
    pub(crate) fn metrics(&self) -> &TaskMetrics {
        &self.ctx.metrics
    }

    /// The task's id.
    pub(crate) fn id(&self) -> TaskId {
        self.ctx.task_id
    }

    /// The hot-key summaries of the task's repartition sinks.
    pub(crate) fn hot_keys(&self) -> &TaskHotKeys {
        &self.ctx.hot_keys
    }

    /// The typed store `name`, for reading (test driver, queries).
    pub(crate) fn store<K: 'static, V: 'static>(&mut self, name: &str) -> Option<&mut Store<K, V>> {
        let i = self.ctx.stores.iter().position(|s| s.name() == name)?;
        self.ctx.stores[i]
            .as_any_mut()
            .downcast_mut::<Store<K, V>>()
    }

    /// Closes processors and stores (without committing: call the commit steps first).
    pub(crate) fn close(mut self) -> Result<()> {
        self.closed = true;
        let mut first_error = None;
        for i in 0..self.nodes.len() {
            if let Err(e) = self.lifecycle(i, |n, _| n.close()) {
                first_error.get_or_insert(e);
            }
        }
        for s in std::mem::take(&mut self.ctx.stores) {
            if let Err(e) = s.close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `<state.dir>/<application.id>/<task id>`.
pub(crate) fn task_dir(state_dir: &Path, application_id: &str, id: TaskId) -> PathBuf {
    state_dir.join(application_id).join(id.to_string())
}

/// Brings `backend` up to the end of its changelog partition, from its checkpoint when the
/// changelog still covers it, else from the beginning (clearing the store). Returns the number
/// of changelog records read.
pub(crate) fn restore(
    log: &Log,
    topic: &str,
    partition: u32,
    backend: &mut dyn KeyValueStore,
) -> Result<u64> {
    let p = log.partition(topic, partition)?;
    let start = p.log_start_offset()?;
    let high_watermark = p.high_watermark()?;
    // Only what committed transactions wrote (everything, for a changelog written without
    // transactions): up to the last stable offset, skipping aborted batches.
    let end = p.last_stable_offset()?;
    let from = match backend.checkpoint() {
        Some(c) if (start..=high_watermark).contains(&c) => c,
        _ => {
            backend.clear()?;
            start
        }
    };
    let mut buf = Vec::new();
    let mut offset = from;
    let mut count = 0u64;
    let mut since_write = 0u64;
    while offset < end {
        let fetch =
            p.read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)?;
        let next = fetch.next_offset();
        for r in fetch.committed_records() {
            if r.offset < offset || r.offset >= end {
                continue;
            }
            if let Some(k) = r.key {
                backend.put(k, r.value);
                count += 1;
                since_write += 1;
            }
        }
        if next <= offset {
            break;
        }
        offset = next.min(end);
        if since_write >= 10_000 {
            backend.write(Some(offset))?;
            since_write = 0;
        }
    }
    let end = end.max(from);
    backend.write(Some(end))?;
    Ok(count)
}
