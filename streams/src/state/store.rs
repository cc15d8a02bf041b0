//! The typed store a processor uses, and the layers it is made of.
//!
//! ```text
//!  processor ──get/put──▶ Store<K, V>        typed store (here): the API, serdes, forwarding
//!                            │                of what a flush wrote
//!                            ▼
//!                         RecordCache<K, V>  caching (caching.rs): write-back, dirty entries,
//!                            │               CLOCK eviction within the cache budget
//!                            │ flush at commit or eviction: each dirty entry once, serialized
//!                            ▼
//!                         HeldWrites<K, V>   held writes (held_writes.rs): exactly-once, the
//!                            │               open transaction's writes, readable until it commits
//!                            ▼
//!                         ChangeLogging      change logging (change_logging.rs): the changelog
//!                            │               record through the task's RecordCollector, then
//!                            ▼               the backend's staged batch
//!                         KeyValueStore      backend (rocksdb.rs | memory.rs): bytes; the batch
//!                                            is applied with its changelog checkpoint
//! ```
//!
//! Reads go down the same way: the cache, then the held writes, then the backend. Each layer
//! is its own type with its own invariants; the typed store is the one place that runs a
//! write or a read through them, because the cache holds deserialized values and the layers
//! below it take bytes (this type encodes in between, into buffers it reuses).
//!
//! A `put` only marks its cache entry dirty; repeated updates of a key between two commits
//! become one write below and one changelog record when the cache is flushed: at commit, or
//! when the cache outgrows its budget. Aggregations forward what a flush writes, so their
//! downstream sees one update per key per commit, as in Kafka Streams. With a budget of 0
//! every `put` is written and forwarded at once.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::serde::{SharedSerde, encode};
use crate::state::KeyValueStore;
use crate::state::caching::{Dropped, Flushed, RecordCache, entry_overhead};
use crate::state::change_logging::{ChangeLogging, Changelog};
use crate::state::held_writes::HeldWrites;

/// A key-value store of `K` to `V`, reached from a processor through
/// [`ProcessorContext::store`](crate::ProcessorContext::store).
pub struct Store<K, V> {
    name: Arc<str>,
    codec: Codec<K, V>,
    cache: RecordCache<K, V>,
    held: HeldWrites<K, V>,
    log: ChangeLogging,
    /// Whether an aggregation forwards flushed entries (then they are kept in `flushed`).
    forwarding: bool,
    flushed: Vec<Flushed<K, V>>,
    last_timestamp: i64,
    /// Serialized size of the value the last `read_below` read.
    loaded_bytes: usize,
}

/// The store's serdes, with the buffers it encodes into.
struct Codec<K, V> {
    name: Arc<str>,
    key_serde: SharedSerde<K>,
    value_serde: SharedSerde<V>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl<K: 'static, V: 'static> Codec<K, V> {
    fn encode_key(&mut self, key: &K) -> Result<()> {
        encode(&*self.key_serde, &self.name, key, &mut self.key_buf)
            .map_err(|e| self.serde_error(e))?;
        Ok(())
    }

    /// Encodes `value` into `value_buf`; whether there is a value (`false`: a delete, or the
    /// serde's null).
    fn encode_value(&mut self, value: Option<&V>) -> Result<bool> {
        match value {
            Some(v) => encode(&*self.value_serde, &self.name, v, &mut self.value_buf)
                .map_err(|e| self.serde_error(e)),
            None => {
                self.value_buf.clear();
                Ok(false)
            }
        }
    }

    fn decode_key(&self, bytes: &[u8]) -> Result<K> {
        self.key_serde
            .deserialize(&self.name, bytes)
            .map_err(|e| self.serde_error(e))
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V> {
        self.value_serde
            .deserialize(&self.name, bytes)
            .map_err(|e| self.serde_error(e))
    }

    fn serde_error(&self, source: crate::serde::SerdeError) -> Error {
        Error::Serde {
            topic: self.name.to_string(),
            partition: None,
            offset: None,
            source,
        }
    }
}

/// Writes one entry below the cache: serialized once, charged to the open transaction under
/// exactly-once, logged and staged. Returns its serialized size.
fn write_entry<K, V>(
    codec: &mut Codec<K, V>,
    held: &mut HeldWrites<K, V>,
    log: &mut ChangeLogging,
    key: &K,
    value: Option<&V>,
    timestamp: i64,
) -> Result<usize>
where
    K: Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    codec.encode_key(key)?;
    let has_value = codec.encode_value(value)?;
    let size = codec.key_buf.len() + codec.value_buf.len();
    held.charge(size + entry_overhead::<K, V>());
    log.put(
        &codec.key_buf,
        has_value.then_some(&codec.value_buf[..]),
        timestamp,
    )?;
    Ok(size)
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    pub(crate) fn new(
        backend: Box<dyn KeyValueStore>,
        key_serde: SharedSerde<K>,
        value_serde: SharedSerde<V>,
        changelog: Option<Changelog>,
    ) -> Self {
        let name: Arc<str> = backend.name().into();
        Store {
            codec: Codec {
                name: name.clone(),
                key_serde,
                value_serde,
                key_buf: Vec::new(),
                value_buf: Vec::new(),
            },
            name,
            cache: RecordCache::new(),
            held: HeldWrites::new(),
            log: ChangeLogging::new(backend, changelog),
            forwarding: false,
            flushed: Vec::new(),
            last_timestamp: -1,
            loaded_bytes: 0,
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        if let Some(value) = self.cache.get(key) {
            return Ok(value.clone());
        }
        let value = self.read_below(key)?;
        if self.cache.enabled() {
            // Room first, so that the entry just read stays cached for the put that usually
            // follows (an eviction would otherwise drop it again).
            let bytes = self.codec.key_buf.len() + self.loaded_bytes + entry_overhead::<K, V>();
            self.make_room(bytes)?;
            self.cache.insert_clean(key.clone(), value.clone(), bytes);
        }
        Ok(value)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: K, value: V) -> Result<()> {
        self.put_at(key, Some(value), self.last_timestamp)
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: K) -> Result<()> {
        self.put_at(key, None, self.last_timestamp)
    }

    /// An estimate of the number of entries.
    pub fn approximate_num_entries(&self) -> Result<u64> {
        Ok(self.log.approximate_num_entries()? + self.cache.dirty_len() as u64)
    }

    /// Every entry with `from <= key < to` in the order of the serialized keys (`None` bounds
    /// are open), including updates still in the cache.
    pub fn range(&mut self, from: Option<&K>, to: Option<&K>) -> Result<Vec<(K, V)>> {
        let lo = match from {
            Some(k) => {
                self.codec.encode_key(k)?;
                Some(self.codec.key_buf.clone())
            }
            None => None,
        };
        let hi = match to {
            Some(k) => {
                self.codec.encode_key(k)?;
                Some(self.codec.key_buf.clone())
            }
            None => None,
        };
        let inside = |k: &Vec<u8>| {
            lo.as_ref().is_none_or(|lo| k >= lo) && hi.as_ref().is_none_or(|hi| k < hi)
        };
        // Newest last: the backend, the held writes, then what the cache has not written.
        let mut merged: BTreeMap<Vec<u8>, Option<V>> = BTreeMap::new();
        for kv in self.log.range(lo.as_deref(), hi.as_deref())? {
            let (k, v) = kv?;
            merged.insert(k, Some(self.codec.decode_value(&v)?));
        }
        for (key, v) in self.held.pending() {
            self.codec.encode_key(key)?;
            let k = self.codec.key_buf.clone();
            if inside(&k) {
                merged.insert(k, v.clone());
            }
        }
        // Dirty entries, and (exactly-once) those flushed in the open transaction.
        let mut newer: Vec<K> = self.cache.dirty_keys().to_vec();
        if self.held.is_on() {
            newer.extend(
                self.cache
                    .entries()
                    .filter(|(_, e)| self.held.is_held(e.flushed_in))
                    .map(|(k, _)| k.clone()),
            );
        }
        for key in newer {
            self.codec.encode_key(&key)?;
            let k = self.codec.key_buf.clone();
            if inside(&k)
                && let Some(e) = self.cache.peek(&key)
            {
                merged.insert(k, e.value.clone());
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        for (k, v) in merged {
            if let Some(v) = v {
                out.push((self.codec.decode_key(&k)?, v));
            }
        }
        Ok(out)
    }

    /// Every entry, in the order of the serialized keys.
    pub fn all(&mut self) -> Result<Vec<(K, V)>> {
        self.range(None, None)
    }

    pub(crate) fn put_at(&mut self, key: K, value: Option<V>, timestamp: i64) -> Result<()> {
        self.put_known_at(key, value, timestamp, false)
    }

    /// `put_at`; `absent`: the caller knows the layers below the cache have no value for
    /// `key`, so the old value forwarded with the update is `None` without a read.
    fn put_known_at(
        &mut self,
        key: K,
        value: Option<V>,
        timestamp: i64,
        absent: bool,
    ) -> Result<()> {
        self.last_timestamp = self.last_timestamp.max(timestamp);
        if !self.cache.enabled() {
            let old = if self.forwarding && !absent {
                self.get(&key)?
            } else {
                None
            };
            write_entry(
                &mut self.codec,
                &mut self.held,
                &mut self.log,
                &key,
                value.as_ref(),
                timestamp,
            )?;
            if self.held.is_on() {
                self.held.hold(key.clone(), value.clone());
            } else {
                self.log.write(None)?;
            }
            if self.forwarding {
                self.flushed.push(Flushed {
                    key,
                    new: value,
                    old,
                    timestamp,
                });
            }
            return Ok(());
        }
        if let Some((key, value)) = self.cache.put(key, value, timestamp) {
            // Not cached. The old value is forwarded with the update: read it when someone
            // forwards.
            let old = if self.forwarding && !absent {
                self.read_below(&key)?
            } else {
                None
            };
            self.codec.encode_key(&key)?;
            let bytes = self.codec.key_buf.len() + entry_overhead::<K, V>();
            self.make_room(bytes)?;
            self.cache.insert_dirty(key, value, old, timestamp, bytes);
        }
        self.maybe_evict()
    }

    /// Replaces the value of `key` by `f(current)` with one hash lookup when the key is
    /// cached (the aggregations' hot path), moving the value rather than cloning it.
    pub(crate) fn update_at(
        &mut self,
        key: K,
        timestamp: i64,
        f: impl FnOnce(&K, Option<V>) -> Option<V>,
    ) -> Result<()> {
        self.update_known_at(key, timestamp, |_| false, f)
    }

    /// `update_at`, where `absent(key)`, asked only when `key` is not cached, may prove that
    /// the layers below the cache have no value for it: then the backend is not read (windowed
    /// aggregations know which of their new windows were never written).
    pub(crate) fn update_known_at(
        &mut self,
        key: K,
        timestamp: i64,
        absent: impl FnOnce(&K) -> bool,
        f: impl FnOnce(&K, Option<V>) -> Option<V>,
    ) -> Result<()> {
        let Some((key, f)) = self.cache.update(key, timestamp, f) else {
            self.last_timestamp = self.last_timestamp.max(timestamp);
            return Ok(());
        };
        if absent(&key) {
            let new = f(&key, None);
            return self.put_known_at(key, new, timestamp, true);
        }
        let current = self.get(&key)?;
        let new = f(&key, current);
        self.put_at(key, new, timestamp)
    }

    /// Deletes every entry with `from <= key < to` (bounds by serialized key; `contains` must
    /// say the same of a key, without encoding it), in the backend, the cache and the changelog:
    /// how windowed aggregations drop expired windows without decoding or caching each one.
    /// Cached updates in range are dropped, not written: with forwarding on, the dirty ones are
    /// handed to [`Store::take_flushed`] as a flush would hand them (their last update, in the
    /// order they became dirty). The changelog gets a tombstone only for the keys it may hold a
    /// value of: those in the backend or held, and cached ones flushed since the last commit
    /// (a key that never left the cache was never logged).
    pub(crate) fn delete_range(
        &mut self,
        from: &K,
        to: &K,
        contains: impl Fn(&K) -> bool,
        timestamp: i64,
    ) -> Result<usize> {
        self.codec.encode_key(from)?;
        let lo = self.codec.key_buf.clone();
        self.codec.encode_key(to)?;
        let hi = self.codec.key_buf.clone();
        // Keys in range the changelog may have a value of, besides those in the backend.
        let mut logged: Vec<K> = Vec::new();
        let (held, flushed, forwarding) = (&self.held, &mut self.flushed, self.forwarding);
        self.cache.remove_range(&contains, |dropped| match dropped {
            Dropped::Dirty(key, e) => {
                if held.is_held(e.flushed_in) {
                    logged.push(key.clone());
                }
                if forwarding && let Some(old) = e.old {
                    flushed.push(Flushed {
                        key,
                        new: e.value,
                        old,
                        timestamp: e.timestamp,
                    });
                }
            }
            Dropped::Clean(key, e) => {
                if held.is_held(e.flushed_in) {
                    logged.push(key.clone());
                }
            }
        });
        logged.extend(
            self.held
                .pending()
                .filter(|(k, _)| contains(k))
                .map(|(k, _)| k.clone()),
        );
        let mut gone: Vec<Vec<u8>> = Vec::new();
        for kv in self.log.range(Some(&lo), Some(&hi))? {
            gone.push(kv?.0);
        }
        if self.held.is_on() {
            // Reads before the commit must not find the applied values either.
            for raw in &gone {
                let k = self.codec.decode_key(raw)?;
                self.held.hold(k, None);
            }
        }
        for k in logged {
            self.codec.encode_key(&k)?;
            gone.push(self.codec.key_buf.clone());
            if self.held.is_on() {
                self.held.hold(k, None);
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for k in &gone {
            self.log.put(k, None, timestamp)?;
        }
        if self.held.is_on() {
            // Held until the commit like every other write (staged, and in `pending`).
            self.held.charge(
                gone.iter()
                    .map(|k| k.len() + entry_overhead::<K, V>())
                    .sum::<usize>(),
            );
        } else {
            self.log.write(None)?;
        }
        Ok(gone.len())
    }

    /// Entries written by a flush or an eviction since the last call, for forwarding.
    pub(crate) fn take_flushed(&mut self) -> Vec<Flushed<K, V>> {
        std::mem::take(&mut self.flushed)
    }

    pub(crate) fn set_forwarding(&mut self, on: bool) {
        self.forwarding = on;
    }

    /// The value below the cache for `key`: held by the open transaction, or in the backend
    /// (leaves the key's bytes in `key_buf`).
    fn read_below(&mut self, key: &K) -> Result<Option<V>> {
        self.codec.encode_key(key)?;
        self.loaded_bytes = 0;
        if let Some(v) = self.held.get(key) {
            return Ok(v.clone());
        }
        match self.log.get(&self.codec.key_buf)? {
            Some(bytes) => {
                self.loaded_bytes = bytes.len();
                Ok(Some(self.codec.decode_value(&bytes)?))
            }
            None => Ok(None),
        }
    }

    /// Evicts if adding `bytes` would go over the budget.
    fn make_room(&mut self, bytes: usize) -> Result<()> {
        if !self.cache.needs_room(bytes) {
            return Ok(());
        }
        let key_buf = std::mem::take(&mut self.codec.key_buf);
        let r = self.evict();
        self.codec.key_buf = key_buf;
        r
    }

    fn maybe_evict(&mut self) -> Result<()> {
        if !self.cache.over_budget() {
            return Ok(());
        }
        self.evict()
    }

    /// Writes every dirty entry, then drops clean entries down to half the budget (see
    /// `caching.rs`); under exactly-once those written in the open transaction stay readable
    /// as held writes.
    fn evict(&mut self) -> Result<()> {
        self.flush_dirty()?;
        self.held.apply_unless_held(&mut self.log)?;
        let held = &mut self.held;
        self.cache.evict(|k, e| {
            if held.is_held(e.flushed_in) {
                // Not in the backend before the commit: reads find it held.
                held.hold(k.clone(), e.value.take());
            }
        });
        Ok(())
    }

    /// Writes every dirty entry below the cache (staged) and to the changelog.
    fn flush_dirty(&mut self) -> Result<()> {
        let Store {
            codec,
            cache,
            held,
            log,
            forwarding,
            flushed,
            ..
        } = self;
        let stamp = held.flush_stamp();
        cache.flush(
            stamp,
            |key, value, timestamp| write_entry(codec, held, log, key, value, timestamp),
            |update| {
                if *forwarding {
                    flushed.push(update);
                }
            },
        )
    }
}

/// What a task does with each of its stores, whatever their types.
pub(crate) trait AnyStore: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn name(&self) -> &str;
    /// Writes the dirty cache entries to the backend (staged) and the changelog.
    fn flush_cache(&mut self) -> Result<()>;
    /// Applies what the backend has staged with the checkpoint `end` (after the commit, or
    /// under exactly-once after the transaction, succeeded).
    fn apply_committed(&mut self, end: Option<i64>) -> Result<()>;
    fn set_transactional(&mut self, on: bool);
    /// Exactly-once: what the open transaction's writes hold in memory until it commits.
    fn held_bytes(&self) -> usize;
    fn set_cache_max_bytes(&mut self, bytes: usize) -> Result<()>;
    fn close(self: Box<Self>) -> Result<()>;
}

impl<K, V> AnyStore for Store<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn flush_cache(&mut self) -> Result<()> {
        if !self.cache.enabled() || self.cache.dirty_len() == 0 {
            return Ok(());
        }
        // Applied at once (held under exactly-once), so that whoever receives the forwarded
        // updates reads them from the store (`range`); the checkpoint follows when the
        // changelog is acknowledged.
        self.flush_dirty()?;
        self.held.apply_unless_held(&mut self.log)
    }

    fn apply_committed(&mut self, end: Option<i64>) -> Result<()> {
        self.log.write(end)?;
        self.held.committed();
        Ok(())
    }

    fn set_transactional(&mut self, on: bool) {
        self.held.set_on(on);
    }

    fn held_bytes(&self) -> usize {
        self.held.bytes()
    }

    fn set_cache_max_bytes(&mut self, bytes: usize) -> Result<()> {
        self.cache.set_max_bytes(bytes);
        if bytes == 0 {
            self.flush_dirty()?;
            self.held.apply_unless_held(&mut self.log)?;
            let held = &mut self.held;
            self.cache.drain(|k, e| {
                if held.is_held(e.flushed_in) {
                    held.hold(k, e.value);
                }
            });
            return Ok(());
        }
        self.maybe_evict()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.log.close()
    }
}

/// Makes a typed store; the topology keeps one per store to build it in each task.
pub(crate) fn make_store<K, V>(
    backend: Box<dyn KeyValueStore>,
    key_serde: SharedSerde<K>,
    value_serde: SharedSerde<V>,
    changelog: Option<Changelog>,
) -> Box<dyn AnyStore>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    Box::new(Store::new(backend, key_serde, value_serde, changelog))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a panic is the test's failure report")]

    use std::sync::atomic::AtomicUsize;

    use std::sync::atomic::Ordering;

    use super::*;
    use crate::serde::{IntegerSerde, StringSerde};
    use crate::state::InMemoryKeyValueStore;

    /// An in-memory backend that counts the reads of some keys.
    struct Counting {
        inner: InMemoryKeyValueStore,
        watched: Vec<Vec<u8>>,
        reads: Arc<AtomicUsize>,
    }

    impl KeyValueStore for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn persistent(&self) -> bool {
            false
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            if self.watched.iter().any(|w| w == key) {
                self.reads.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get(key)
        }
        fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
            self.inner.put(key, value);
        }
        fn write(&mut self, checkpoint: Option<i64>) -> Result<()> {
            self.inner.write(checkpoint)
        }
        fn checkpoint(&self) -> Option<i64> {
            None
        }
        fn range<'a>(
            &'a self,
            from: Option<&[u8]>,
            to: Option<&[u8]>,
        ) -> Result<Box<dyn Iterator<Item = Result<crate::state::KeyValue>> + 'a>> {
            self.inner.range(from, to)
        }
        fn approximate_num_entries(&self) -> Result<u64> {
            self.inner.approximate_num_entries()
        }
        fn clear(&mut self) -> Result<()> {
            self.inner.clear()
        }
        fn close(self: Box<Self>) -> Result<()> {
            Box::new(self.inner).close()
        }
    }

    #[test]
    fn hot_keys_outlive_evictions_of_keys_seen_once() {
        let hot: Vec<String> = (0..8).map(|i| format!("hot-{i}")).collect();
        let reads = Arc::new(AtomicUsize::new(0));
        let backend = Counting {
            inner: InMemoryKeyValueStore::new("counts"),
            watched: hot.iter().map(|k| k.as_bytes().to_vec()).collect(),
            reads: reads.clone(),
        };
        let mut store: Store<String, i64> = Store::new(
            Box::new(backend),
            Arc::new(StringSerde),
            Arc::new(IntegerSerde),
            None,
        );
        // Room for about 20 entries: thousands of one-time keys pass through.
        store
            .set_cache_max_bytes(20 * entry_overhead::<String, i64>())
            .unwrap();
        for i in 0..5_000 {
            let once = format!("once-{i}");
            for key in hot.iter().chain([&once]) {
                store
                    .update_at(key.clone(), i, |_, n| Some(n.unwrap_or(0) + 1))
                    .unwrap();
            }
        }
        for key in &hot {
            assert_eq!(store.get(key).unwrap(), Some(5_000));
        }
        // At-least-once: evicted entries are in the backend, not held beside the cache.
        assert!(
            store.held.pending().next().is_none(),
            "evicted entries kept in memory"
        );
        // One read each, when first seen: never evicted (read back) since.
        assert_eq!(
            reads.load(Ordering::Relaxed),
            hot.len(),
            "hot keys were evicted and read back"
        );
    }

    /// Integers, except 13, which cannot be written.
    struct No13;

    impl crate::serde::Serde<i64> for No13 {
        fn serialize(
            &self,
            topic: &str,
            value: &i64,
            out: &mut Vec<u8>,
        ) -> std::result::Result<(), crate::serde::SerdeError> {
            if *value == 13 {
                return Err("13 cannot be written".into());
            }
            crate::serde::Serde::serialize(&IntegerSerde, topic, value, out)
        }

        fn deserialize(
            &self,
            topic: &str,
            bytes: &[u8],
        ) -> std::result::Result<i64, crate::serde::SerdeError> {
            crate::serde::Serde::deserialize(&IntegerSerde, topic, bytes)
        }
    }

    #[test]
    fn a_value_that_cannot_be_written_loses_no_other_update() {
        let mut store: Store<String, i64> = Store::new(
            Box::new(InMemoryKeyValueStore::new("counts")),
            Arc::new(StringSerde),
            Arc::new(No13),
            None,
        );
        store.set_cache_max_bytes(1 << 20).unwrap();
        store.put("bad".to_owned(), 1).unwrap();
        store.flush_cache().unwrap();
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        store.put("bad".to_owned(), 13).unwrap();
        for k in &keys {
            store.put(k.clone(), 8).unwrap();
        }
        // The flush reports the bad value, first in the dirty list; the updates after it stay.
        assert!(store.flush_cache().is_err());
        store.flush_cache().unwrap();
        store.set_cache_max_bytes(0).unwrap();
        let backend = |k: &str| store.log.backend().get(k.as_bytes()).unwrap();
        for k in &keys {
            assert_eq!(backend(k), Some(8i64.to_be_bytes().to_vec()), "{k}");
        }
        // The bad update is dropped: the store reads what its backend holds.
        assert_eq!(backend("bad"), Some(1i64.to_be_bytes().to_vec()));
        assert_eq!(store.get(&"bad".to_owned()).unwrap(), Some(1));
    }
}
