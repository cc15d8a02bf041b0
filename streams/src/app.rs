//! [`Streams`]: a running application (Kafka's `KafkaStreams`): threads, state, listeners.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::KafkaClientSupplier;
use crate::config::{StreamThreadExceptionResponse, StreamsConfig};
use crate::error::{Error, Result};
use crate::hot_keys::RepartitionHotKeys;
use crate::runtime::shared::AppShared;
pub use crate::runtime::shared::State;
use crate::sync::lock;
use crate::topology::Topology;

/// Counters over the application's lifetime, summed over its tasks (brought up to date at
/// every commit and when tasks close), and the hot keys of its repartition topics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamsMetrics {
    /// Records processed.
    pub processed: u64,
    /// Records skipped because their key or value was null and the serde has no null.
    pub skipped_records: u64,
    /// Records that failed and were logged and skipped.
    pub dropped_errors: u64,
    /// Records sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Changelog records read to restore stores.
    pub restored_records: u64,
    /// Per repartition topic written by this instance's tasks (sorted by topic): the keys
    /// whose estimated share of the records is at least `hot.keys.min.share`, from one
    /// SpaceSaving summary per task per repartition sink (`hot.keys.capacity` counters),
    /// merged over the tasks as of their last commit. A task's summary covers the records it
    /// wrote since it started on this instance; a task that moves away takes its summary with
    /// it. Empty when `hot.keys.capacity` is 0.
    pub hot_keys: Vec<RepartitionHotKeys>,
}

/// A streams application on a log: `num.stream.threads` threads share its tasks with the
/// other instances of the same `application.id` (through the log's consumer groups).
///
/// The log is whatever [`KafkaClientSupplier`] hands out the clients: a
/// [`Log`](core_log::Log) runs the application on the embedded log in this process.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use streams::{Consumed, Materialized, Produced, Streams, StreamsBuilder, StreamsConfig};
/// use streams::serde::{IntegerSerde, Nullable, StringSerde};
/// use core_log::{Log, TopicConfig};
///
/// let log = Log::open(dir.path())?;
/// log.create_topic("likes", 2, TopicConfig::default())?;
/// log.create_topic("counts", 2, TopicConfig::default())?;
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("likes", Consumed::with(StringSerde, StringSerde))
///     .group_by_key()
///     .count(Materialized::named("counts"))
///     .to_stream()
///     .to("counts", Produced::with(StringSerde, Nullable(IntegerSerde)));
/// let streams = Streams::new(builder.build()?, &log, StreamsConfig::new("like-count"))?;
/// streams.start()?;
/// streams.close()?;
/// # Ok::<(), streams::Error>(())
/// ```
pub struct Streams {
    shared: Arc<AppShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Streams {
    /// An application running `topology` on the log `clients` reach (`&log` for the
    /// embedded [`Log`](core_log::Log)). Nothing runs until [`Streams::start`].
    pub fn new<C>(topology: Topology, clients: &C, config: StreamsConfig) -> Result<Streams>
    where
        C: KafkaClientSupplier + Clone + 'static,
    {
        config.validate()?;
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| clients.default_state_dir());
        let admin = Arc::from(clients.admin()?);
        let rocksdb = config.rocksdb_config();
        let app = config.application_id.clone();
        let mut topic_to_sub = HashMap::new();
        for sub in &topology.inner.subtopologies {
            for t in &sub.source_topics {
                topic_to_sub.insert(t.resolve(&app), sub.id);
            }
        }
        let mut source_topics: Vec<String> = topic_to_sub.keys().cloned().collect();
        source_topics.sort();
        let process_id = process_id(&state_dir.join(&app))?;
        Ok(Streams {
            shared: Arc::new(AppShared::new(
                topology,
                config,
                Arc::new(clients.clone()),
                admin,
                state_dir,
                rocksdb,
                source_topics,
                process_id,
                topic_to_sub,
            )),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Calls `listener(new, old)` on every state change.
    pub fn set_state_listener(&self, listener: impl Fn(State, State) + Send + Sync + 'static) {
        self.shared.set_state_listener(Box::new(listener));
    }

    /// Decides what happens when a thread fails (default: shut the instance down).
    pub fn set_uncaught_exception_handler(
        &self,
        handler: impl Fn(&Error) -> StreamThreadExceptionResponse + Send + Sync + 'static,
    ) {
        self.shared.set_exception_handler(Box::new(handler));
    }

    /// Creates the internal topics (checking co-partitioning) and starts the threads.
    ///
    /// Fails, with nothing started and the application still startable, if a source topic or
    /// the dead-letter queue topic does not exist (`MissingDeadLetterTopic`).
    pub fn start(&self) -> Result<()> {
        if self.state() != State::Created {
            return Err(Error::IllegalState {
                reason: "start() on an application already started",
            });
        }
        let s = &self.shared;
        // First: a check without side effects, before any internal topic is created.
        crate::runtime::topics::check_dead_letter_topics(&*s.admin, &s.config)?;
        crate::runtime::topics::prepare(&*s.admin, &s.topology, &s.config.application_id, None)?;
        std::fs::create_dir_all(&s.state_dir).map_err(|e| {
            Error::store_caused(
                "state.dir",
                format!("cannot create {}", s.state_dir.display()),
                e,
            )
        })?;
        s.set_state(State::Rebalancing);
        let mut threads = lock(&self.threads);
        for index in 0..s.config.num_stream_threads {
            let shared = s.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-StreamThread-{index}", s.config.application_id))
                .spawn(move || crate::runtime::thread::main(&shared, index))
                .map_err(|e| Error::store_caused("thread", "cannot start a stream thread", e))?;
            threads.push(handle);
        }
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Waits until the state is `state` or `timeout` passes; whether it got there.
    pub fn wait_for_state(&self, state: State, timeout: Duration) -> bool {
        self.shared.wait_for_state(state, timeout)
    }

    /// The counters so far.
    pub fn metrics(&self) -> StreamsMetrics {
        let m = &self.shared.metrics;
        StreamsMetrics {
            processed: m.processed.load(Ordering::Relaxed),
            skipped_records: m.skipped_records.load(Ordering::Relaxed),
            dropped_errors: m.dropped_errors.load(Ordering::Relaxed),
            dead_lettered: m.dead_lettered.load(Ordering::Relaxed),
            restored_records: m.restored_records.load(Ordering::Relaxed),
            hot_keys: m.hot_keys(self.shared.config.hot_keys_min_share),
        }
    }

    /// Stops the threads after a last commit, closes the tasks and leaves the group.
    pub fn close(&self) -> Result<()> {
        let s = &self.shared;
        let errored = self.state() == State::Error;
        s.set_state(State::PendingShutdown);
        s.shutdown.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        if !errored {
            s.set_state(State::NotRunning);
        }
        Ok(())
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Reads the instance's process id from `dir/process-id`, or makes one (time and pid mixed by
/// a seeded hash) and keeps it there.
fn process_id(dir: &std::path::Path) -> Result<String> {
    use std::hash::{BuildHasher, Hasher};
    let path = dir.join("process-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_owned());
        }
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let id = format!("{:016x}", h.finish());
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::store_caused("state.dir", format!("cannot create {}", dir.display()), e)
    })?;
    let tmp = dir.join("process-id.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            Error::store_caused("state.dir", format!("cannot write {}", path.display()), e)
        })?;
    Ok(id)
}
