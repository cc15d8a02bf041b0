//! What an application instance's stream threads share: the topology and config, the
//! instance's state machine (Kafka Streams' `KafkaStreams.State`) with its listener and
//! uncaught-exception handler, the threads' errors, and the counters they report into.
//!
//! The [`Streams`](crate::Streams) handle (`app.rs`) owns it and hands each thread an `Arc`;
//! threads never see the handle itself, so the runtime does not depend on the API above it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Admin, KafkaClientSupplier};
use crate::config::{StreamThreadExceptionResponse, StreamsConfig};
use crate::error::Error;
use crate::hot_keys::{RepartitionHotKeys, SummarySnapshot};
use crate::processor::context::TaskId;
use crate::runtime::task::Task;
use crate::state::RocksDbConfig;
use crate::sync::{lock, wait_timeout};
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
        lock(&self.hot_keys).insert(task.id(), snapshot);
    }

    /// The hot keys of every task's last report, merged per repartition topic.
    pub(crate) fn hot_keys(&self, min_share: f64) -> Vec<RepartitionHotKeys> {
        crate::hot_keys::merge(lock(&self.hot_keys).values().flatten(), min_share)
    }

    /// Drops the summaries of a task this instance no longer runs.
    pub(crate) fn forget_hot_keys(&self, id: TaskId) {
        lock(&self.hot_keys).remove(&id);
    }
}

pub(crate) type StateListener = Box<dyn Fn(State, State) + Send + Sync>;
pub(crate) type ExceptionHandler =
    Box<dyn Fn(&Error) -> StreamThreadExceptionResponse + Send + Sync>;

/// What the stream threads of one application instance share with each other and with the
/// [`Streams`](crate::Streams) handle that owns them.
pub(crate) struct AppShared {
    pub topology: Topology,
    pub config: StreamsConfig,
    /// Where each thread takes its producer and consumers.
    pub clients: Arc<dyn KafkaClientSupplier>,
    /// The instance's admin client: internal topics, partition counts, end offsets.
    pub admin: Arc<dyn Admin>,
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

    /// The shared state of an instance about to start its threads.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        topology: Topology,
        config: StreamsConfig,
        clients: Arc<dyn KafkaClientSupplier>,
        admin: Arc<dyn Admin>,
        state_dir: PathBuf,
        rocksdb: RocksDbConfig,
        source_topics: Vec<String>,
        process_id: String,
        topic_to_sub: HashMap<String, u32>,
    ) -> Self {
        let n = config.num_stream_threads;
        AppShared {
            topology,
            config,
            clients,
            admin,
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
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        *lock(&self.state)
    }

    /// Waits until the state is `state` or `timeout` passes; whether it got there.
    pub(crate) fn wait_for_state(&self, state: State, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.state);
        while *s != state {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = wait_timeout(&self.state_changed, s, deadline - now);
        }
        true
    }

    pub(crate) fn set_state_listener(&self, listener: StateListener) {
        *lock(&self.listener) = Some(listener);
    }

    pub(crate) fn set_exception_handler(&self, handler: ExceptionHandler) {
        *lock(&self.handler) = Some(handler);
    }

    /// What the uncaught-exception handler decides for a failed thread (default: shut the
    /// instance down).
    pub(crate) fn exception_response(&self, e: &Error) -> StreamThreadExceptionResponse {
        match &*lock(&self.handler) {
            Some(h) => h(e),
            None => StreamThreadExceptionResponse::ShutdownClient,
        }
    }

    pub(crate) fn set_state(&self, to: State) {
        let mut s = lock(&self.state);
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
        let listener = lock(&self.listener);
        drop(s);
        self.state_changed.notify_all();
        if let Some(l) = &*listener {
            l(to, from);
        }
    }

    pub(crate) fn set_thread_rebalancing(&self, index: usize, on: bool) {
        // Under the lock: two threads' changes reach the state in the order they were made.
        let mut r = lock(&self.rebalancing);
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
        let mut errors = lock(&self.thread_errors);
        if let Some(slot) = errors.get_mut(index) {
            slot.get_or_insert(e);
        }
    }

    pub(crate) fn take_thread_error(&self, index: usize) -> Option<Error> {
        lock(&self.thread_errors).get_mut(index)?.take()
    }
}
