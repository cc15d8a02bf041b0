//! Locks that outlive a panic.
//!
//! A mutex is poisoned when a thread panics while holding it. Every mutex in this crate is
//! taken as it is even then, for one reason: none guards an invariant a panic can leave half
//! made. Each holds a value replaced whole (the application's state and its listener and
//! handler, a thread's error slot, a task's hot-key report), or a stream thread's own tasks
//! (`TaskManager`), which a panic abandons: the panic, in user code, is caught at the thread,
//! whose tasks are dropped uncommitted and start again from the last commit. A poisoned lock
//! therefore never turns one panic into a cascade of them, and never drops an error report.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `m`, poisoned or not (see the module documentation for why that is safe).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `condvar` for at most `timeout`, poisoned or not (see [`lock`]).
pub(crate) fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match condvar.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}
