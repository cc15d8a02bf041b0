//! [`Streams`]: a running application (Kafka's `KafkaStreams`): threads, state, listeners.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap};

use core_log::Log;

use crate::config::{StreamThreadExceptionResponse, StreamsConfig};
use crate::error::{Error, Result};
use crate::runtime::hot_keys::{RepartitionHotKeys, SummarySnapshot};
use crate::runtime::task::{Task, TaskId};
use crate::state::RocksDbConfig;
use crate::topology::Topology;

/// The state of an application, as Kafka Streams names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Made, not started.
    Created,
    /// Some thread is between giving up and getting partitions.
    Rebalancing,
    /// Every thread has its tasks.
    Running,
    /// `close` was called.
    PendingShutdown,
    /// Closed.
    NotRunning,
    /// A thread failed and the handler chose to shut the instance down.
    Error,
}

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

#[derive(Default)]
pub(crate) struct Counters {
    pub processed: AtomicU64,
    pub skipped_records: AtomicU64,
    pub dropped_errors: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub restored_records: AtomicU64,
    /// The last report of each task's hot-key summaries.
    hot_keys: Mutex<BTreeMap<TaskId, Vec<SummarySnapshot>>>,
}

impl Counters {
    /// Keeps a copy of `task`'s hot-key summaries (at each commit and when it closes).
    pub(crate) fn report_hot_keys(&self, task: &Task) {
        if task.hot_keys().is_empty() {
            return;
        }
        let snapshot = task.hot_keys().snapshot();
        self.hot_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(task.id(), snapshot);
    }

    /// Drops the summaries of a task this instance no longer runs.
    pub(crate) fn forget_hot_keys(&self, id: TaskId) {
        self.hot_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

type StateListener = Box<dyn Fn(State, State) + Send + Sync>;
type ExceptionHandler = Box<dyn Fn(&Error) -> StreamThreadExceptionResponse + Send + Sync>;

pub(crate) struct AppShared {
    pub topology: Topology,
    pub config: StreamsConfig,
    pub log: Log,
    pub state_dir: PathBuf,
    pub rocksdb: RocksDbConfig,
    pub source_topics: Vec<String>,
    /// This instance's id, kept in its state directory (transactional ids derive from it).
    pub process_id: String,
    pub topic_to_sub: Arc<HashMap<String, u32>>,
    pub shutdown: AtomicBool,
    pub metrics: Counters,
    state: Mutex<State>,
    state_changed: Condvar,
    rebalancing: Mutex<Vec<bool>>,
    thread_errors: Mutex<Vec<Option<Error>>>,
    listener: Mutex<Option<StateListener>>,
    handler: Mutex<Option<ExceptionHandler>>,
}

impl AppShared {
    pub(crate) fn cache_bytes_per_thread(&self) -> usize {
        self.config.cache_max_bytes / self.config.num_stream_threads.max(1)
    }

    fn set_state(&self, to: State) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let from = *s;
        let allowed = match (from, to) {
            (a, b) if a == b => false,
            (State::NotRunning | State::Error, _) => false,
            (State::PendingShutdown, b) => b == State::NotRunning,
            _ => true,
        };
        if !allowed {
            return;
        }
        *s = to;
        // The listener lock is taken before the state lock is released: listeners see the
        // transitions in the order they happened (a listener may read `state()`).
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(s);
        self.state_changed.notify_all();
        if let Some(l) = &*listener {
            l(to, from);
        }
    }

    pub(crate) fn set_thread_rebalancing(&self, index: usize, on: bool) {
        // Under the lock: two threads' changes reach the state in the order they were made.
        let mut r = self
            .rebalancing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(x) = r.get_mut(index) {
            *x = on;
        }
        let all_running = !r.iter().any(|&x| x);
        self.set_state(if all_running {
            State::Running
        } else {
            State::Rebalancing
        });
    }

    pub(crate) fn record_thread_error(&self, index: usize, e: Error) {
        let mut errors = self
            .thread_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = errors.get_mut(index) {
            slot.get_or_insert(e);
        }
    }

    pub(crate) fn take_thread_error(&self, index: usize) -> Option<Error> {
        self.thread_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(index)?
            .take()
    }
}

/// A streams application on a [`Log`]: `num.stream.threads` threads share its tasks with the
/// other instances of the same `application.id` (through the log's consumer groups).
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
    /// An application running `topology` on `log`. Nothing runs until [`Streams::start`].
    pub fn new(topology: Topology, log: &Log, config: StreamsConfig) -> Result<Streams> {
        config.validate()?;
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| log.dir().join("streams-state"));
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
        let n = config.num_stream_threads;
        let process_id = process_id(&state_dir.join(&app))?;
        Ok(Streams {
            shared: Arc::new(AppShared {
                topology,
                config,
                log: log.clone(),
                state_dir,
                rocksdb,
                source_topics,
                process_id,
                topic_to_sub: Arc::new(topic_to_sub),
                shutdown: AtomicBool::new(false),
                metrics: Counters::default(),
                state: Mutex::new(State::Created),
                state_changed: Condvar::new(),
                rebalancing: Mutex::new(vec![true; n]),
                thread_errors: Mutex::new((0..n).map(|_| None).collect()),
                listener: Mutex::new(None),
                handler: Mutex::new(None),
            }),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Calls `listener(new, old)` on every state change.
    pub fn set_state_listener(&self, listener: impl Fn(State, State) + Send + Sync + 'static) {
        *self
            .shared
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(listener));
    }

    /// Decides what happens when a thread fails (default: shut the instance down).
    pub fn set_uncaught_exception_handler(
        &self,
        handler: impl Fn(&Error) -> StreamThreadExceptionResponse + Send + Sync + 'static,
    ) {
        *self
            .shared
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(handler));
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
        crate::runtime::topics::check_dead_letter_topics(&s.log, &s.config)?;
        crate::runtime::topics::prepare(&s.log, &s.topology, &s.config.application_id, None)?;
        std::fs::create_dir_all(&s.state_dir).map_err(|e| Error::store("state.dir", e))?;
        s.set_state(State::Rebalancing);
        let mut threads = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for index in 0..s.config.num_stream_threads {
            let shared = s.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-StreamThread-{index}", s.config.application_id))
                .spawn(move || thread_main(&shared, index))
                .map_err(|e| Error::store("thread", e))?;
            threads.push(handle);
        }
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the state is `state` or `timeout` passes; whether it got there.
    pub fn wait_for_state(&self, state: State, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *s != state {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = match self.shared.state_changed.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
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
            hot_keys: crate::runtime::hot_keys::merge(
                m.hot_keys
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .flatten(),
                self.shared.config.hot_keys_min_share,
            ),
        }
    }

    /// Stops the threads after a last commit, closes the tasks and leaves the group.
    pub fn close(&self) -> Result<()> {
        let s = &self.shared;
        let errored = self.state() == State::Error;
        s.set_state(State::PendingShutdown);
        s.shutdown.store(true, Ordering::Release);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
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
    std::fs::create_dir_all(dir).map_err(|e| Error::store("state.dir", e))?;
    let tmp = dir.join("process-id.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::store("state.dir", e))?;
    Ok(id)
}

fn thread_main(shared: &Arc<AppShared>, index: usize) {
    loop {
        // A panic in user code (a closure's unwrap) is an error like any other: the handler
        // decides, instead of the thread vanishing while the state says Running.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::runtime::thread::run(shared, index)
        }));
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
        let response = match &*shared
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(h) => h(&e),
            None => StreamThreadExceptionResponse::ShutdownClient,
        };
        match response {
            StreamThreadExceptionResponse::ReplaceThread => continue,
            StreamThreadExceptionResponse::ShutdownClient => {
                shared.set_state(State::Error);
                shared.shutdown.store(true, Ordering::Release);
                return;
            }
        }
    }
}
