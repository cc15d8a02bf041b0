//! The maintenance thread ("log-maintenance"): every 50 ms it flushes partitions whose
//! `flush.ms` is due and the segments sealed since the last flush; every
//! `log.retention.check.interval.ms` it enforces retention, every `log.cleaner.backoff.ms` it
//! compacts, every `log.flush.offset.checkpoint.interval.ms` it writes the checkpoints, and it
//! runs the periodic tasks the layers above registered. It holds a `Weak` of the log manager,
//! so it never keeps a dropped log alive.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Inner, LogManager, Options};
use crate::error::Result;
use crate::sync::lock;

#[derive(Debug)]
pub(super) struct Maintenance {
    pub(super) stop: Arc<(Mutex<bool>, Condvar)>,
    pub(super) thread: JoinHandle<()>,
}

/// Work the maintenance thread runs for a layer above, every `every`.
pub(crate) struct PeriodicTask {
    pub name: &'static str,
    pub every: Duration,
    pub run: Box<dyn FnMut() -> Result<()> + Send>,
}

impl LogManager {
    /// Starts the maintenance thread, with the periodic tasks of the layers above.
    pub(crate) fn start_maintenance(&self, b: &Options, mut periodic: Vec<PeriodicTask>) {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop2 = stop.clone();
        let retention_every = Duration::from_millis(b.retention_check_interval_ms);
        let cleaner_every = Duration::from_millis(b.cleaner_backoff_ms);
        let checkpoint_every = Duration::from_millis(b.checkpoint_interval_ms);
        let thread = std::thread::Builder::new()
            .name("log-maintenance".into())
            .spawn(move || {
                let tick = Duration::from_millis(50);
                let (mut last_retention, mut last_clean, mut last_checkpoint) =
                    (Instant::now(), Instant::now(), Instant::now());
                let mut last_periodic: Vec<Instant> = periodic.iter().map(|_| Instant::now()).collect();
                loop {
                    {
                        let (m, cv) = &*stop2;
                        let guard = lock(m);
                        let (guard, _) = cv
                            .wait_timeout_while(guard, tick, |stopped| !*stopped)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *guard {
                            return;
                        }
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    let log = LogManager { inner };
                    let now = log.inner.clock.now_ms();
                    for p in log.all_partitions() {
                        if let Err(e) = p.flush_if_due(now).and_then(|()| p.flush_sealed()) {
                            tracing::error!(topic = p.topic(), partition = p.id(), error = %e, "background flush failed");
                        }
                    }
                    if last_retention.elapsed() >= retention_every {
                        last_retention = Instant::now();
                        if let Err(e) = log.enforce_retention() {
                            tracing::error!(error = %e, "retention failed");
                        }
                    }
                    if last_clean.elapsed() >= cleaner_every {
                        last_clean = Instant::now();
                        if let Err(e) = log.compact(false) {
                            tracing::error!(error = %e, "compaction failed");
                        }
                    }
                    for (task, last) in periodic.iter_mut().zip(last_periodic.iter_mut()) {
                        if last.elapsed() >= task.every {
                            *last = Instant::now();
                            if let Err(e) = (task.run)() {
                                tracing::error!(task = task.name, error = %e, "periodic task failed");
                            }
                        }
                    }
                    if last_checkpoint.elapsed() >= checkpoint_every {
                        last_checkpoint = Instant::now();
                        if let Err(e) = log.write_checkpoints() {
                            tracing::error!(error = %e, "checkpoint failed");
                        }
                    }
                }
            })
            .expect("spawn the log maintenance thread");
        *lock(&self.inner.maintenance) = Some(Maintenance { stop, thread });
    }
}
