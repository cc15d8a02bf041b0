//! The held-writes layer: under exactly-once, a store's writes reach its backend only once
//! the transaction that carries their changelog records has committed (KIP-892's idea).
//!
//! ```text
//!  flush / eviction ──▶ changelog record (in the open transaction)
//!                   └─▶ backend's staged batch ─────── applied at commit, after the
//!                   └─▶ pending (typed, for reads)      transaction, with the checkpoint
//! ```
//!
//! Until the commit the written values are staged in the backend's batch, which reads do not
//! see, so this layer keeps them readable: an entry flushed in the open transaction is found
//! in the record cache while it stays there (its flush stamp is the open transaction's
//! generation), and in `pending` once the cache drops it. A commit empties `pending` and
//! moves to the next generation, which unstamps every cached entry at once. A failed
//! transaction drops the task's stores with their held writes: the backend is at its last
//! committed point.
//!
//! Under at-least-once the layer holds nothing: every flush applies the backend's batch at
//! once.

use std::hash::Hash;

use crate::error::Result;
use crate::state::change_logging::ChangeLogging;

/// What a store's open transaction wrote.
pub(crate) struct HeldWrites<K, V> {
    /// Exactly-once: writes are held until their transaction commits.
    on: bool,
    /// Written since the last committed transaction and no longer in the cache; reads see them.
    pending: foldhash::HashMap<K, Option<V>>,
    /// The open transaction's generation (the flush stamp of entries it wrote), bumped when
    /// one commits. Starts at 1: 0 stamps nothing.
    generation: u64,
    /// Serialized bytes (plus a per-entry overhead) of the writes held for the open
    /// transaction, in the backend's batch and `pending` (`statestore.uncommitted.max.bytes`).
    bytes: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> HeldWrites<K, V> {
    /// The layer, off (at-least-once) until [`HeldWrites::set_on`].
    pub(crate) fn new() -> Self {
        HeldWrites {
            on: false,
            pending: foldhash::HashMap::default(),
            generation: 1,
            bytes: 0,
        }
    }

    pub(crate) fn set_on(&mut self, on: bool) {
        self.on = on;
    }

    /// Whether writes are held until their transaction commits (exactly-once).
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// The stamp a flush gives the cached entries it writes: the open transaction's
    /// generation under exactly-once; none otherwise (a flushed entry is in the backend, and
    /// an evicted one must not be kept in `pending`, unbounded until the commit).
    #[inline]
    pub(crate) fn flush_stamp(&self) -> Option<u64> {
        self.on.then_some(self.generation)
    }

    /// Whether an entry with this flush stamp was written in the open transaction (so it is
    /// not in the backend before the commit).
    #[inline]
    pub(crate) fn is_held(&self, flushed_in: u64) -> bool {
        flushed_in == self.generation
    }

    /// The value the open transaction wrote for `key` and the cache no longer has.
    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&Option<V>> {
        self.pending.get(key)
    }

    /// Keeps a write of the open transaction readable until it commits.
    pub(crate) fn hold(&mut self, key: K, value: Option<V>) {
        self.pending.insert(key, value);
    }

    /// Counts `bytes` more held for the open transaction.
    #[inline]
    pub(crate) fn charge(&mut self, bytes: usize) {
        if self.on {
            self.bytes += bytes;
        }
    }

    /// What the open transaction's writes hold in memory until it commits.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The held writes, for a range read.
    pub(crate) fn pending(&self) -> impl Iterator<Item = (&K, &Option<V>)> {
        self.pending.iter()
    }

    /// Applies what the backend has staged, unless writes are held (then the commit applies
    /// it).
    pub(crate) fn apply_unless_held(&self, below: &mut ChangeLogging) -> Result<()> {
        if self.on {
            return Ok(());
        }
        below.write(None)
    }

    /// The open transaction committed (or, at-least-once, a commit applied the batch): its
    /// writes are in the backend.
    pub(crate) fn committed(&mut self) {
        self.bytes = 0;
        self.pending.clear();
        self.generation += 1;
    }
}
