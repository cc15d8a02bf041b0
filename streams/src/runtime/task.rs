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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_log::{Clock, IsolationLevel, OwnedHeader, TopicPartition};

use crate::client::{Admin, Consumer, OffsetSpec, Producer};
use crate::config::ErrorHandling;
use crate::error::{Error, Result};
use crate::hot_keys::{HotKeysConfig, TaskHotKeys};
use crate::processor::context::{Raw, TaskContext, TaskContextParts, TaskId, TaskMetrics};
use crate::processor::node::{Cx, Lifecycle, Slot, Wiring, deliver, with_node};
use crate::processor::{PunctuationType, Record};
use crate::record_collector::{ChangelogId, RecordCollector, SendErrors};
use crate::state::change_logging::Changelog;
use crate::state::store::{AnyStore, Store};
use crate::state::{InMemoryKeyValueStore, KeyValueStore, RocksDbConfig, RocksDbKeyValueStore};
use crate::sync::lock;
use crate::topology::{Instantiate, StoreType, Topology, changelog_topic};

/// What every task of a thread shares.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub application_id: Arc<str>,
    /// The instance's admin client: partition counts and changelog end offsets.
    pub admin: Arc<dyn Admin>,
    /// The thread's restore consumer: reads changelogs into stores, one at a time.
    pub restore_consumer: Arc<Mutex<Box<dyn Consumer>>>,
    pub clock: Arc<dyn Clock>,
    pub producer: Arc<dyn Producer>,
    /// Where the sends of the thread's tasks report failures.
    pub send_errors: SendErrors,
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
    /// The task's sends (the task context holds it too, for sinks and error handlers).
    collector: Arc<RecordCollector>,
    /// Each store's changelog in the collector (`None`: not logged).
    store_changelogs: Vec<Option<ChangelogId>>,
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
        // One collector for every send of the task: its sinks', its error handlers' and its
        // stores' changelogs.
        let mut collector = RecordCollector::new(env.producer.clone(), env.send_errors.clone());
        let store_changelogs: Vec<Option<ChangelogId>> = sub
            .stores
            .iter()
            .map(|&s| {
                let def = &t.stores[s];
                def.logging.then(|| {
                    collector
                        .register_changelog(changelog_topic(app, &def.name).into(), id.partition)
                })
            })
            .collect();
        let collector = Arc::new(collector);
        let mut stores: Vec<Box<dyn AnyStore>> = Vec::new();
        let mut store_caching = Vec::new();
        let mut restored = 0;
        for (&s, changelog) in sub.stores.iter().zip(&store_changelogs) {
            let def = &t.stores[s];
            let mut backend: Box<dyn KeyValueStore> = match def.store_type {
                StoreType::InMemory => Box::new(InMemoryKeyValueStore::new(def.name.clone())),
                StoreType::RocksDb => {
                    let dir = task_dir(&env.state_dir, app, id)
                        .join("rocksdb")
                        .join(&def.name);
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        Error::store_caused(
                            &def.name,
                            format!("cannot create {}", dir.display()),
                            e,
                        )
                    })?;
                    Box::new(RocksDbKeyValueStore::open(&dir, &def.name, &env.rocksdb)?)
                }
            };
            let changelog = match *changelog {
                Some(changelog) => {
                    let topic = changelog_topic(app, &def.name);
                    let mut consumer = lock(&env.restore_consumer);
                    restored += restore(
                        &*env.admin,
                        &mut **consumer,
                        &topic,
                        id.partition,
                        &mut *backend,
                    )?;
                    Some(Changelog {
                        collector: collector.clone(),
                        id: changelog,
                    })
                }
                None => {
                    backend.clear()?;
                    None
                }
            };
            let mut store = (def.factory)(backend, changelog);
            store.set_transactional(env.exactly_once);
            store.set_cache_max_bytes(if def.caching {
                env.cache_bytes_per_store
            } else {
                0
            })?;
            stores.push(store);
            store_caching.push(def.caching);
        }
        let wiring = sub.wiring.clone();
        let inst = Instantiate {
            application_id: app,
        };
        let nodes: Vec<Slot> = sub
            .factories
            .iter()
            .map(|f| Some(f.instantiate(&inst)))
            .collect();
        let sources = sub
            .sources
            .iter()
            .map(|(t, n)| (t.resolve(app), *n))
            .collect();
        let ctx = TaskContext::new(TaskContextParts {
            task_id: id,
            application_id: env.application_id.clone(),
            clock: env.clock.clone(),
            admin: env.admin.clone(),
            metrics: TaskMetrics {
                restored_records: restored,
                ..TaskMetrics::default()
            },
            hot_keys: TaskHotKeys::new(env.hot_keys, env.clock.now_ms()),
            collector: collector.clone(),
            deserialization: env.deserialization.clone(),
            processing: env.processing.clone(),
            stores,
        });
        let mut task = Task {
            ctx,
            nodes,
            wiring,
            sources,
            inputs: Vec::new(),
            last_input: 0,
            collector,
            store_changelogs,
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
        f: impl FnOnce(&mut dyn Lifecycle, &mut Cx<'_>) -> Result<()>,
    ) -> Result<()> {
        let get = self.wiring.lifecycles[index];
        let mut cx = Cx {
            task: &mut self.ctx,
            nodes: &mut self.nodes,
            wiring: &self.wiring,
            node: index,
        };
        with_node(&mut cx, index, |slot, cx| match get(slot) {
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
        if advanced && self.ctx.has_schedules() {
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
        if !self.ctx.has_schedules() {
            return Ok(());
        }
        let now = self.ctx.clock.now_ms();
        self.punctuate(PunctuationType::WallClockTime, now)
    }

    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<()> {
        for (id, node) in self.ctx.take_due(kind, now) {
            // An earlier punctuator of this round may have cancelled this one.
            if !self.ctx.is_scheduled(id) {
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
        for (s, changelog) in self.ctx.stores.iter_mut().zip(&self.store_changelogs) {
            let end = changelog.and_then(|c| self.collector.take_changelog_end(c));
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
/// changelog still covers it, else from the beginning (clearing the store), reading with the
/// thread's restore `consumer` (Kafka Streams' restoration). Returns the number of changelog
/// records read.
pub(crate) fn restore(
    admin: &dyn Admin,
    consumer: &mut dyn Consumer,
    topic: &str,
    partition: u32,
    backend: &mut dyn KeyValueStore,
) -> Result<u64> {
    let tp = TopicPartition::new(topic, partition);
    let offset = |spec, isolation| admin.list_offsets(&tp, spec, isolation);
    let start = offset(OffsetSpec::Earliest, IsolationLevel::ReadUncommitted)?;
    let high_watermark = offset(OffsetSpec::Latest, IsolationLevel::ReadUncommitted)?;
    // Only what committed transactions wrote (everything, for a changelog written without
    // transactions): up to the last stable offset, skipping aborted batches.
    let end = offset(OffsetSpec::Latest, IsolationLevel::ReadCommitted)?;
    let from = match backend.checkpoint() {
        Some(c) if (start..=high_watermark).contains(&c) => c,
        _ => {
            backend.clear()?;
            start
        }
    };
    let mut count = 0u64;
    if from < end {
        consumer.assign(std::slice::from_ref(&tp))?;
        let read = read_changelog(consumer, &tp, from, end, backend, &mut count);
        // The consumer is the thread's: unassigned whatever happened, for the next store.
        let unassigned = consumer.assign(&[]);
        read?;
        unassigned?;
    }
    backend.write(Some(end.max(from)))?;
    Ok(count)
}

/// How long a restoration waits for a changelog's records before it gives up: the records
/// below the last stable offset are all decided, so a consumer that gets none of them for
/// this long is not going to.
const RESTORE_STALL: Duration = Duration::from_secs(30);

/// Puts the changelog records of `tp` in `[from, end)` into `backend`, writing a checkpoint
/// every 10,000 records.
fn read_changelog(
    consumer: &mut dyn Consumer,
    tp: &TopicPartition,
    from: i64,
    end: i64,
    backend: &mut dyn KeyValueStore,
    count: &mut u64,
) -> Result<()> {
    consumer.seek(tp, from)?;
    let mut position = from;
    let mut since_write = 0u64;
    let mut progress_at = std::time::Instant::now();
    while position < end {
        let records = consumer.poll(Duration::from_millis(100))?;
        for r in records.iter() {
            if r.offset >= end {
                break;
            }
            if let Some(k) = &r.key {
                backend.put(k, r.value.as_deref());
                *count += 1;
                since_write += 1;
            }
        }
        // Past the markers and aborted records a read_committed poll skipped.
        let next = consumer.position(tp)?;
        if next > position {
            position = next;
            progress_at = std::time::Instant::now();
        } else if progress_at.elapsed() >= RESTORE_STALL {
            return Err(Error::Log(core_log::Error::Timeout {
                operation: "restoring a store from its changelog",
                after_ms: RESTORE_STALL.as_millis() as u64,
            }));
        }
        if since_write >= 10_000 {
            backend.write(Some(position.min(end)))?;
            since_write = 0;
        }
    }
    Ok(())
}
