//! State stores: where a task keeps what it aggregates.
//!
//! ```text
//!  processor ──get/put──▶ typed store (serdes)            store.rs
//!                            ▼
//!                         caching (write-back, per store)  caching.rs
//!                            │ flush at commit or eviction
//!                            ▼
//!                         held writes (exactly-once)        held_writes.rs
//!                            ▼
//!                         change logging ──▶ changelog topic <application.id>-<store>-changelog
//!                            ▼                (through the task's RecordCollector)
//!                         KeyValueStore (bytes)             rocksdb.rs | memory.rs
//! ```
//!
//! Each layer imports only the layers below it (`streams/tests/layers.rs` checks it).
//!
//! The byte-level [`KeyValueStore`] is what a backend implements. Writes are staged with
//! [`KeyValueStore::put`] and applied atomically by [`KeyValueStore::write`], which records in the
//! same atomic write the changelog offset the store now reflects (its *checkpoint*). On start a
//! task restores a persistent store from that checkpoint to the changelog's end, reading only the
//! tail; an in-memory store has no checkpoint and restores the whole changelog.

pub(crate) mod caching;
pub(crate) mod change_logging;
pub(crate) mod held_writes;
pub(crate) mod memory;
pub(crate) mod rocksdb;
pub(crate) mod store;

pub use self::memory::InMemoryKeyValueStore;
pub use self::rocksdb::{RocksDbConfig, RocksDbKeyValueStore, RocksDbMemory};

use crate::error::Result;

/// One key and value read from a store.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A byte-level key-value store: the backend under every typed store.
///
/// Keys are ordered by their bytes (lexicographically), as in RocksDB. A store is owned by one
/// task and used from one thread at a time.
pub trait KeyValueStore: Send {
    /// The store's name (unique in its topology).
    fn name(&self) -> &str;

    /// Whether the store keeps its data on disk across restarts (RocksDB) or not (in-memory).
    fn persistent(&self) -> bool;

    /// The value of `key`, seeing only applied writes (not the staged ones).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Stages a write of `key`: `Some(value)` puts, `None` deletes. Nothing is visible to
    /// [`KeyValueStore::get`] until [`KeyValueStore::write`].
    fn put(&mut self, key: &[u8], value: Option<&[u8]>);

    /// Applies every staged write atomically, and, when `checkpoint` is given, records in the
    /// same atomic write that the store now reflects its changelog up to (excluding) that
    /// offset. After a crash a persistent store is at the last applied `write`, never between.
    fn write(&mut self, checkpoint: Option<i64>) -> Result<()>;

    /// The changelog offset recorded by the last [`KeyValueStore::write`] that gave one; `None`
    /// for a new or in-memory store.
    fn checkpoint(&self) -> Option<i64>;

    /// The entries with `from <= key < to` in key order (`None` bounds are open), seeing only
    /// applied writes.
    fn range<'a>(
        &'a self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Box<dyn Iterator<Item = Result<KeyValue>> + 'a>>;

    /// An estimate of the number of entries (RocksDB's `rocksdb.estimate-num-keys`).
    fn approximate_num_entries(&self) -> Result<u64>;

    /// Deletes every entry and the checkpoint (used when the changelog no longer covers the
    /// checkpoint and the store must restore from the beginning).
    fn clear(&mut self) -> Result<()>;

    /// Makes applied writes durable on disk (a no-op for in-memory stores) and releases the
    /// store's files.
    fn close(self: Box<Self>) -> Result<()>;
}
