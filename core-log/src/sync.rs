//! Synchronization the layers share: the append waker, and how a poisoned lock is taken.
//!
//! A `Mutex` or `RwLock` is poisoned when a thread panics while holding it. Every lock in this
//! crate guards state that each mutation leaves consistent before anything that can panic
//! (validation comes first, then the change), so a poisoned lock's data is still good: [`lock`],
//! [`read`] and [`write`] take it anyway rather than spread one thread's panic to every other.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Locks `m`, poisoned or not (see the module doc).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `m`, poisoned or not (see the module doc).
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `m`, poisoned or not (see the module doc).
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes a waiting reader (a consumer's `poll`, a long-polling fetch of `moldau serve`) when a
/// partition it watches gets an append. One waker may watch many partitions
/// ([`Partition::watch`](crate::Partition::watch)); an append notifies every live waker
/// watching it.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use std::sync::Arc;
/// use std::time::Duration;
/// use core_log::{AppendWaker, Log, Record, TopicConfig};
/// let log = Log::open(dir.path())?;
/// log.create_topic("likes", 1, TopicConfig::default())?;
/// let p = log.partition("likes", 0)?;
/// let waker = Arc::new(AppendWaker::default());
/// p.watch(&waker);
/// p.append(&[Record::new(None, Some(b"+1"))])?;
/// // The append came before the wait: it still counts.
/// assert!(waker.wait(Duration::from_secs(5)));
/// # Ok::<(), core_log::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct AppendWaker {
    notified: Mutex<bool>,
    cv: Condvar,
}

impl AppendWaker {
    /// Wakes the waiter, as an append does; a later [`AppendWaker::wait`] returns at once.
    /// Used to end a wait early (a server shutting down).
    pub fn notify(&self) {
        let mut n = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        *n = true;
        self.cv.notify_all();
    }

    /// Waits until notified or `timeout` passes; returns whether it was notified. A
    /// notification that arrived before the call counts (it is not lost between a reader's
    /// last check and its wait).
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let n = self.notified.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut n, _) = self
            .cv
            .wait_timeout_while(n, timeout, |n| !*n)
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *n, false)
    }
}
