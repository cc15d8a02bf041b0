//! A stream thread: one consumer in the application's group and one producer, running the
//! tasks of the partitions the group assigns it in a poll, process, commit loop.
//!
//! Tasks live in a [`TaskManager`] behind a mutex that the thread and its rebalance listener
//! share; the listener runs inside `poll`, when the thread does not hold the lock. Under the
//! eager protocol a rebalance revokes every partition: the listener commits every task and
//! closes it (releasing its RocksDB files for whichever thread gets it next), then creates the
//! tasks of the new assignment, which restore from their checkpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_log::{
    AutoOffsetReset, ConsumerConfig, IsolationLevel, OffsetAndMetadata, ProducerConfig,
    RangeAssignor, TopicPartition,
};

use crate::client::{Consumer, ConsumerRebalanceListener};
use crate::config::StreamThreadExceptionResponse;
use crate::error::{Error, Result};
use crate::processor::context::TaskId;
use crate::record_collector::SendErrors;
use crate::runtime::shared::{AppShared, State};
use crate::runtime::task::{Task, TaskEnv};
use crate::sync::lock;
use crate::topology::Topology;

/// The tasks of one thread.
pub(crate) struct TaskManager {
    pub tasks: BTreeMap<TaskId, Task>,
    pub env: TaskEnv,
    topology: Topology,
    /// Resolved source topic -> sub-topology.
    topic_to_sub: Arc<HashMap<String, u32>>,
    shared: Arc<AppShared>,
    index: usize,
}

impl TaskManager {
    pub(crate) fn new(
        topology: Topology,
        env: TaskEnv,
        topic_to_sub: Arc<HashMap<String, u32>>,
        shared: Arc<AppShared>,
        index: usize,
    ) -> Self {
        TaskManager {
            tasks: BTreeMap::new(),
            env,
            topology,
            topic_to_sub,
            shared,
            index,
        }
    }

    fn task_id(&self, topic: &str, partition: u32) -> Option<TaskId> {
        self.topic_to_sub.get(topic).map(|&subtopology| TaskId {
            subtopology,
            partition,
        })
    }

    /// Creates the tasks of `partitions` that do not exist yet.
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let ids: BTreeSet<TaskId> = partitions
            .iter()
            .filter_map(|tp| self.task_id(&tp.topic, tp.partition))
            .collect();
        for id in ids {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let task = Task::new(&self.topology, id, &self.env)?;
            self.shared
                .metrics
                .restored_records
                .fetch_add(task.metrics().restored_records, Ordering::Relaxed);
            self.tasks.insert(id, task);
        }
        self.update_cache_budget()
    }

    /// Closes the tasks of `partitions` (after committing them when `commit`).
    fn revoke(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
        commit: bool,
    ) -> Result<()> {
        if !commit && self.env.exactly_once && self.env.producer.in_transaction() {
            // Lost partitions: what this member did since its last commit must not land.
            let _ = self.env.producer.abort_transaction();
        }
        if commit && let Err(e) = self.commit(consumer) {
            tracing::warn!(thread = self.index, %e, "commit before giving partitions up failed; they will be reprocessed");
        }
        let ids: BTreeSet<TaskId> = partitions
            .iter()
            .filter_map(|tp| self.task_id(&tp.topic, tp.partition))
            .collect();
        let mut first_error = None;
        for id in ids {
            if let Some(task) = self.tasks.remove(&id) {
                self.report(&task);
                self.shared.metrics.forget_hot_keys(id);
                if let Err(e) = task.close() {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Splits the thread's share of `statestore.cache.max.bytes` among its stores.
    fn update_cache_budget(&mut self) -> Result<()> {
        let stores: usize = self.tasks.values().map(Task::caching_stores).sum();
        let per_store = self.shared.cache_bytes_per_thread() / stores.max(1);
        self.env.cache_bytes_per_store = per_store;
        for task in self.tasks.values_mut() {
            task.set_cache_max_bytes(per_store)?;
        }
        Ok(())
    }

    fn report(&self, task: &Task) {
        let m = task.metrics();
        let s = &self.shared.metrics;
        s.processed.fetch_add(m.processed, Ordering::Relaxed);
        s.skipped_records
            .fetch_add(m.skipped_records, Ordering::Relaxed);
        s.dropped_errors
            .fetch_add(m.dropped_errors, Ordering::Relaxed);
        s.dead_lettered
            .fetch_add(m.dead_lettered, Ordering::Relaxed);
        s.report_hot_keys(task);
    }

    /// At-least-once commit of every task: flush processors and caches, flush the producer,
    /// write the stores' batches with their changelog checkpoints, commit the input offsets.
    pub(crate) fn commit(&mut self, consumer: &mut dyn Consumer) -> Result<()> {
        if self.env.exactly_once {
            return self.commit_transaction(consumer);
        }
        let offsets = self.flush_all()?;
        if offsets.is_empty() {
            return Ok(());
        }
        let offsets = past_markers(consumer, offsets);
        consumer.commit_sync(offsets)?;
        Ok(())
    }

    /// Opens the thread's transaction if none is (exactly-once: every record sent belongs to
    /// one).
    fn ensure_transaction(&self) -> Result<()> {
        if self.env.exactly_once && !self.env.producer.in_transaction() {
            self.env.producer.begin_transaction()?;
        }
        Ok(())
    }

    /// Exactly-once commit: flush processors and caches into the open transaction, add the
    /// input offsets to it (checked against the consumer's group generation: a zombie cannot
    /// commit), commit it, and only then apply the stores' held writes with their checkpoints.
    /// On failure the transaction is aborted and every task rolls back to its last committed
    /// state: stores reopen at their checkpoints, restore the committed changelog tail, and
    /// the consumer goes back to the committed offsets.
    fn commit_transaction(&mut self, consumer: &mut dyn Consumer) -> Result<()> {
        let producer = self.env.producer.clone();
        let attempt = (|| -> Result<()> {
            self.ensure_transaction()?;
            for task in self.tasks.values_mut() {
                task.prepare_commit()?;
            }
            let offsets = past_markers(
                consumer,
                self.tasks
                    .values()
                    .flat_map(Task::consumed_offsets)
                    .collect(),
            );
            if !offsets.is_empty() {
                producer.send_offsets_to_transaction(&offsets, &consumer.group_metadata()?)?;
            }
            producer.commit_transaction()?;
            match self.env.send_errors.take() {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        })();
        match attempt {
            Ok(()) => {
                for task in self.tasks.values_mut() {
                    task.apply_checkpoints()?;
                }
                for task in self.tasks.values() {
                    self.report(task);
                }
                for task in self.tasks.values_mut() {
                    task.reset_metrics();
                }
                Ok(())
            }
            Err(e) => {
                if producer.in_transaction() {
                    let _ = producer.abort_transaction();
                }
                self.env.send_errors.take();
                self.rollback(consumer)?;
                Err(e)
            }
        }
    }

    /// Drops every task's uncommitted state and starts again from the last commit.
    fn rollback(&mut self, consumer: &mut dyn Consumer) -> Result<()> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for (_, task) in std::mem::take(&mut self.tasks) {
            // Closing drops the writes the stores held: they are at their checkpoints.
            let _ = task.close();
        }
        for id in ids {
            let task = Task::new(&self.topology, id, &self.env)?;
            self.shared
                .metrics
                .restored_records
                .fetch_add(task.metrics().restored_records, Ordering::Relaxed);
            self.tasks.insert(id, task);
        }
        self.update_cache_budget()?;
        let assignment = consumer.assignment();
        let committed = consumer.committed(&assignment)?;
        for tp in assignment {
            match committed.get(&tp).cloned().flatten() {
                Some(o) => consumer.seek(&tp, o.offset)?,
                None => consumer.seek_to_beginning(std::slice::from_ref(&tp))?,
            }
        }
        Ok(())
    }

    /// The commit without the offsets: what the test driver does.
    pub(crate) fn flush_all(&mut self) -> Result<Vec<(TopicPartition, i64)>> {
        for task in self.tasks.values_mut() {
            task.prepare_commit()?;
        }
        self.env.producer.flush();
        if let Some(e) = self.env.send_errors.take() {
            return Err(e.into());
        }
        let mut offsets = Vec::new();
        for task in self.tasks.values_mut() {
            offsets.extend(task.finish_commit()?);
        }
        for task in self.tasks.values() {
            self.report(task);
        }
        for task in self.tasks.values_mut() {
            task.reset_metrics();
        }
        Ok(offsets)
    }

    fn close_all(&mut self) -> Result<()> {
        let mut first_error = None;
        for (_, task) in std::mem::take(&mut self.tasks) {
            self.report(&task);
            if let Err(e) = task.close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The offsets to commit: after the last processed record, or the consumer's position when
/// that is further. Every polled record is processed before a commit, so the position only
/// differs by the transaction markers after the last record; committing it keeps a caught-up
/// group's lag at 0 instead of 1 per marker (as Kafka Streams does).
fn past_markers(
    consumer: &mut dyn Consumer,
    offsets: Vec<(TopicPartition, i64)>,
) -> Vec<(TopicPartition, OffsetAndMetadata)> {
    // A partition that only received markers since the last commit (an aborted or empty
    // transaction of a previous owner) is committed past them too, else its lag stays above 0.
    // Nothing processed and no position known: nothing to commit (never a rewind to 0).
    offsets
        .into_iter()
        .filter_map(|(tp, o)| match consumer.position(&tp) {
            Ok(position) => Some((tp, OffsetAndMetadata::new(o.max(position)))),
            Err(_) if o > 0 => Some((tp, OffsetAndMetadata::new(o))),
            Err(_) => None,
        })
        .collect()
}

struct Listener {
    manager: Arc<Mutex<TaskManager>>,
    shared: Arc<AppShared>,
    index: usize,
}

impl ConsumerRebalanceListener for Listener {
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> core_log::Result<()> {
        self.shared.set_thread_rebalancing(self.index, true);
        let r = lock(&self.manager).revoke(consumer, partitions, true);
        if let Err(e) = r {
            self.shared.record_thread_error(self.index, e);
        }
        Ok(())
    }

    fn on_partitions_assigned(
        &mut self,
        _: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> core_log::Result<()> {
        // While the instance closes, its threads leave one by one: the ones still polling
        // are handed the partitions of those gone, and would open and restore their stores
        // only to close them. They take nothing.
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = lock(&self.manager).assign(partitions);
        if let Err(e) = r {
            self.shared.record_thread_error(self.index, e);
        }
        self.shared.set_thread_rebalancing(self.index, false);
        Ok(())
    }

    fn on_partitions_lost(
        &mut self,
        consumer: &mut dyn Consumer,
        partitions: &[TopicPartition],
    ) -> core_log::Result<()> {
        self.shared.set_thread_rebalancing(self.index, true);
        let r = lock(&self.manager).revoke(consumer, partitions, false);
        if let Err(e) = r {
            self.shared.record_thread_error(self.index, e);
        }
        Ok(())
    }
}

/// Runs one stream thread until the application closes or the thread fails.
pub(crate) fn run(shared: &Arc<AppShared>, index: usize) -> Result<()> {
    let app = shared.config.application_id.clone();
    let exactly_once = shared.config.is_exactly_once();
    let mut producer_config = ProducerConfig::default().linger_ms(5);
    if exactly_once {
        // Stable across restarts of this instance (its state directory keeps the process
        // id), so a restarted thread fences its predecessor and aborts what it left open.
        producer_config = producer_config
            .transactional_id(format!("{app}-{}-{index}", shared.process_id))
            .transaction_timeout_ms(10_000);
    }
    let clients = &*shared.clients;
    let producer = clients.producer(producer_config)?;
    if exactly_once {
        producer.init_transactions()?;
    }
    let env = TaskEnv {
        application_id: app.as_str().into(),
        admin: shared.admin.clone(),
        restore_consumer: Arc::new(Mutex::new(
            clients.restore_consumer(restore_consumer_config(&app, index))?,
        )),
        clock: clients.clock(),
        producer: Arc::from(producer),
        send_errors: SendErrors::default(),
        state_dir: shared.state_dir.clone(),
        rocksdb: shared.rocksdb.clone(),
        cache_bytes_per_store: shared.cache_bytes_per_thread(),
        deserialization: shared.config.deserialization.clone(),
        processing: shared.config.processing.clone(),
        exactly_once,
        hot_keys: shared.config.hot_keys_config(),
    };
    let manager = Arc::new(Mutex::new(TaskManager::new(
        shared.topology.clone(),
        env,
        shared.topic_to_sub.clone(),
        shared.clone(),
        index,
    )));
    let config = ConsumerConfig::default()
        .group_id(app.clone())
        .client_id(format!("{app}-StreamThread-{index}"))
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(shared.config.max_poll_records)
        .session_timeout_ms(shared.config.session_timeout_ms)
        .max_poll_interval_ms(shared.config.max_poll_interval_ms)
        .partition_assignment_strategy(vec![Arc::new(RangeAssignor)])
        .isolation_level(if exactly_once {
            IsolationLevel::ReadCommitted
        } else {
            IsolationLevel::ReadUncommitted
        });
    let mut consumer = clients.consumer(config)?;
    consumer.subscribe(
        &shared.source_topics,
        Box::new(Listener {
            manager: manager.clone(),
            shared: shared.clone(),
            index,
        }),
    )?;
    let clock = clients.clock();
    let mut last_commit = clock.now_ms();
    // Records processed since the last commit: committed as soon as a poll finds nothing
    // more (see below).
    let mut uncommitted = false;
    let poll = Duration::from_millis(shared.config.poll_ms);
    let result = (|| -> Result<()> {
        while !shared.shutdown.load(Ordering::Acquire) {
            let records = consumer.poll(poll)?;
            if let Some(e) = shared.take_thread_error(index) {
                return Err(e);
            }
            let idle = records.is_empty();
            uncommitted |= !idle;
            let mut m = lock(&manager);
            m.ensure_transaction()?;
            // Records come in runs per partition: look the task up once per run.
            let mut current: Option<(Arc<str>, u32, Option<TaskId>)> = None;
            for r in records {
                let id = match &current {
                    Some((t, p, id)) if *p == r.partition && Arc::ptr_eq(t, &r.topic) => *id,
                    _ => {
                        let id = m.task_id(&r.topic, r.partition);
                        current = Some((r.topic.clone(), r.partition, id));
                        id
                    }
                };
                let Some(task) = id.and_then(|id| m.tasks.get_mut(&id)) else {
                    continue;
                };
                task.process(
                    &r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp,
                    r.key,
                    r.value,
                    r.headers,
                )?;
            }
            for task in m.tasks.values_mut() {
                task.punctuate_wall_clock()?;
            }
            let now = clock.now_ms();
            // What a commit releases (cached aggregates, forwarded only when caches flush;
            // under exactly-once, everything, to the next sub-topology and read_committed
            // readers) should not wait for the next interval once the input has run dry. A
            // busy thread commits at the interval; an idle one loses nothing by committing,
            // and each hop of a multi-stage topology then waits for a poll, not an interval.
            let idle_commit = idle && uncommitted;
            // Exactly-once stores hold their writes in memory until the commit: bound them.
            let held_full = exactly_once
                && m.tasks.values().map(Task::held_bytes).sum::<usize>()
                    > shared.config.uncommitted_max_bytes;
            if idle_commit
                || held_full
                || now.saturating_sub(last_commit)
                    >= shared.config.effective_commit_interval_ms() as i64
            {
                uncommitted = false;
                match m.commit(&mut *consumer) {
                    Ok(()) => {}
                    Err(Error::Log(
                        e @ (core_log::Error::RebalanceInProgress { .. }
                        | core_log::Error::IllegalGeneration { .. }
                        | core_log::Error::UnknownMemberId { .. }),
                    )) => {
                        // The group moved on (under exactly-once the transaction was aborted
                        // and the tasks rolled back): the next poll rejoins.
                        tracing::warn!(thread = index, %e, "commit refused by the group; records since the last commit will be processed again");
                    }
                    Err(e) => return Err(e),
                }
                last_commit = now;
            }
        }
        let mut m = lock(&manager);
        m.commit(&mut *consumer)?;
        m.close_all()
    })();
    if result.is_err() {
        // Leave the group without committing what was not processed; the failed thread's
        // tasks (another thread or instance takes them over) leave the hot-key metrics.
        let mut m = lock(&manager);
        let ids: Vec<TaskId> = m.tasks.keys().copied().collect();
        let _ = m.close_all();
        for id in ids {
            shared.metrics.forget_hot_keys(id);
        }
    }
    drop(consumer);
    result
}

/// The body of stream thread `index`: runs it, and when it fails asks the uncaught-exception
/// handler whether to run it again (a new consumer and tasks, from the last commit) or to
/// shut the instance down.
pub(crate) fn main(shared: &Arc<AppShared>, index: usize) {
    loop {
        // A panic in user code (a closure's unwrap) is an error like any other: the handler
        // decides, instead of the thread vanishing while the state says Running.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(shared, index)));
        let e = match run {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Error::Processing {
                    processor: format!("stream thread {index}"),
                    source: format!("panicked: {message}").into(),
                }
            }
        };
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        tracing::error!(thread = index, error = %e, "stream thread failed");
        match shared.exception_response(&e) {
            StreamThreadExceptionResponse::ReplaceThread => continue,
            StreamThreadExceptionResponse::ShutdownClient => {
                shared.set_state(State::Error);
                shared.shutdown.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// The restore consumer's config (Kafka Streams' `getRestoreConsumerConfigs`): no group,
/// partitions assigned by hand, only committed records, and an error rather than a silent
/// reset if a changelog no longer holds the checkpointed offset. Polls take more records than
/// the main consumer's: restoration only puts them into a store.
pub(crate) fn restore_consumer_config(app: &str, index: usize) -> ConsumerConfig {
    ConsumerConfig::default()
        .client_id(format!("{app}-StreamThread-{index}-restore-consumer"))
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::None)
        .max_poll_records(10_000)
        .isolation_level(IsolationLevel::ReadCommitted)
}
