//! The typed key-value store a processor uses: serdes over a byte-level backend, a write-back
//! record cache, and a changelog.
//!
//! The cache (`statestore.cache.max.bytes`, split among a thread's stores) keeps recently used
//! entries deserialized. A `put` only marks its entry dirty; repeated updates of a key between
//! two commits become one write to the backend and one changelog record when the cache is
//! flushed: at commit, or when the cache outgrows its budget (then every dirty entry is written
//! and clean entries are dropped down to half the budget). Aggregations forward what a flush
//! writes, so their downstream sees one update per key per commit, as in Kafka Streams. With a
//! budget of 0 every `put` is written and forwarded at once.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use core_log::{Producer, ProducerRecord};

use crate::error::{Error, Result};
use crate::serde::{SharedSerde, encode};
use crate::state::KeyValueStore;

/// The producer every task of a thread writes output, repartition and changelog records with.
pub(crate) type BytesProducer = Producer<[u8], [u8]>;

/// A key-value store of `K` to `V`, reached from a processor through
/// [`ProcessorContext::store`](crate::ProcessorContext::store).
pub struct Store<K, V> {
    name: Arc<str>,
    backend: Box<dyn KeyValueStore>,
    key_serde: SharedSerde<K>,
    value_serde: SharedSerde<V>,
    /// foldhash: several times faster than SipHash on short keys, seeded per process.
    cache: foldhash::HashMap<K, Entry<V>>,
    /// Keys that became dirty since the last flush, in that order.
    dirty: Vec<K>,
    cache_bytes: usize,
    max_bytes: usize,
    changelog: Option<Changelog>,
    /// Whether an aggregation forwards flushed entries (then they are kept in `flushed`).
    forwarding: bool,
    flushed: Vec<Flushed<K, V>>,
    last_timestamp: i64,
    /// Serialized size of the value the last `backend_get` read.
    loaded_bytes: usize,
    /// Exactly-once: writes of the open transaction reach the backend only once it commits;
    /// until then reads find them in the cache (entries flushed in this generation) or, once
    /// the cache dropped them, in `pending`.
    transactional: bool,
    /// Exactly-once: flushed or evicted since the last committed transaction; reads see them.
    pending: foldhash::HashMap<K, Option<V>>,
    /// Exactly-once: the open transaction's generation (bumped when one commits).
    generation: u64,
    /// Exactly-once: serialized bytes (plus a per-entry overhead) of the writes held for the
    /// open transaction, in the backend's batch and `pending` (`statestore.uncommitted.max.bytes`).
    held_bytes: usize,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

struct Entry<V> {
    value: Option<V>,
    /// While dirty: the value the backend has (for the old value of what is forwarded).
    old: Option<Option<V>>,
    timestamp: i64,
    bytes: usize,
    /// Exactly-once: the transaction generation that flushed this value (not yet applied to
    /// the backend while it equals the store's `generation`).
    flushed_in: u64,
    /// Read or updated since the last eviction pass went by (CLOCK's second chance).
    referenced: bool,
}

pub(crate) struct Changelog {
    pub topic: Arc<str>,
    pub partition: u32,
    pub producer: Arc<BytesProducer>,
    /// One past the highest offset a changelog send of this store got (-1: none yet since
    /// the last commit); written by delivery callbacks.
    pub end: Arc<AtomicI64>,
    /// The delivery callback of every send: moves `end`, or reports a failure to the thread's
    /// slot (checked at every commit). One for all sends: a send does not allocate for it.
    on_delivery: core_log::SharedCallback,
}

impl Changelog {
    /// The changelog of a store in `partition` of `topic`, its failed sends reported to
    /// `send_error`.
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        producer: Arc<BytesProducer>,
        send_error: Arc<Mutex<Option<core_log::Error>>>,
    ) -> Self {
        let end = Arc::new(AtomicI64::new(-1));
        let sent = end.clone();
        Changelog {
            topic,
            partition,
            producer,
            end,
            on_delivery: Arc::new(move |r| match r {
                Ok(m) => {
                    sent.fetch_max(m.offset + 1, Ordering::AcqRel);
                }
                Err(e) => report_send_error(&send_error, e),
            }),
        }
    }
}

/// Keeps a failed send's error in the thread's slot (the first one, until a commit takes it).
pub(crate) fn report_send_error(slot: &Mutex<Option<core_log::Error>>, e: core_log::Error) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(e);
    }
}

/// An entry a flush wrote: the new value, the value before, and the last update's timestamp.
pub(crate) struct Flushed<K, V> {
    pub key: K,
    pub new: Option<V>,
    pub old: Option<V>,
    pub timestamp: i64,
}

/// Bytes an entry costs besides its serialized key: the map slot and the value, roughly.
fn entry_overhead<K, V>() -> usize {
    std::mem::size_of::<(K, Entry<V>)>() + 16
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
        Store {
            name: backend.name().into(),
            backend,
            key_serde,
            value_serde,
            cache: foldhash::HashMap::default(),
            dirty: Vec::new(),
            cache_bytes: 0,
            max_bytes: 0,
            changelog,
            forwarding: false,
            flushed: Vec::new(),
            last_timestamp: -1,
            loaded_bytes: 0,
            transactional: false,
            pending: foldhash::HashMap::default(),
            generation: 1,
            held_bytes: 0,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        if let Some(e) = self.cache.get_mut(key) {
            e.referenced = true;
            return Ok(e.value.clone());
        }
        let value = self.backend_get(key)?;
        if self.max_bytes > 0 {
            // Room first, so that the entry just read stays cached for the put that usually
            // follows (an eviction would otherwise drop it again).
            let bytes = self.key_buf.len() + self.loaded_bytes + entry_overhead::<K, V>();
            self.make_room(bytes)?;
            self.cache_bytes += bytes;
            self.cache.insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    old: None,
                    timestamp: -1,
                    bytes,
                    flushed_in: 0,
                    referenced: false,
                },
            );
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
        Ok(self.backend.approximate_num_entries()? + self.dirty.len() as u64)
    }

    /// Every entry with `from <= key < to` in the order of the serialized keys (`None` bounds
    /// are open), including updates still in the cache.
    pub fn range(&mut self, from: Option<&K>, to: Option<&K>) -> Result<Vec<(K, V)>> {
        let bound = |s: &mut Self, k: Option<&K>| -> Result<Option<Vec<u8>>> {
            match k {
                Some(k) => {
                    s.encode_key(k)?;
                    Ok(Some(s.key_buf.clone()))
                }
                None => Ok(None),
            }
        };
        let lo = bound(self, from)?;
        let hi = bound(self, to)?;
        let mut merged: BTreeMap<Vec<u8>, Option<V>> = BTreeMap::new();
        for kv in self.backend.range(lo.as_deref(), hi.as_deref())? {
            let (k, v) = kv?;
            merged.insert(k, Some(self.decode_value(&v)?));
        }
        let pending: Vec<(K, Option<V>)> = self
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, v) in pending {
            self.encode_key(&key)?;
            let k = self.key_buf.clone();
            if lo.as_ref().is_none_or(|lo| &k >= lo) && hi.as_ref().is_none_or(|hi| &k < hi) {
                merged.insert(k, v);
            }
        }
        // Dirty entries, and (exactly-once) those flushed in the open transaction.
        let generation = self.generation;
        let mut newer: Vec<K> = self.dirty.clone();
        if self.transactional {
            newer.extend(
                self.cache
                    .iter()
                    .filter(|(_, e)| e.flushed_in == generation)
                    .map(|(k, _)| k.clone()),
            );
        }
        for key in newer {
            self.encode_key(&key)?;
            let k = self.key_buf.clone();
            let inside =
                lo.as_ref().is_none_or(|lo| &k >= lo) && hi.as_ref().is_none_or(|hi| &k < hi);
            if inside && let Some(e) = self.cache.get(&key) {
                merged.insert(k, e.value.clone());
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        for (k, v) in merged {
            if let Some(v) = v {
                let key = self
                    .key_serde
                    .deserialize(&self.name, &k)
                    .map_err(|e| self.serde_error(e))?;
                out.push((key, v));
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

    /// `put_at`; `absent`: the caller knows the backend (and `pending`) has no value for `key`,
    /// so the old value forwarded with the update is `None` without a read.
    fn put_known_at(
        &mut self,
        key: K,
        value: Option<V>,
        timestamp: i64,
        absent: bool,
    ) -> Result<()> {
        self.last_timestamp = self.last_timestamp.max(timestamp);
        if self.max_bytes == 0 {
            let old = if self.forwarding && !absent {
                self.get(&key)?
            } else {
                None
            };
            self.write_entry(&key, value.as_ref(), timestamp)?;
            self.apply_or_hold(&key, &value)?;
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
        match self.cache.get_mut(&key) {
            Some(e) => {
                // Not a reference: the put after a read miss (`update_at`) would mark every
                // key read once, and a one-time key should go before a hot one.
                if e.old.is_none() {
                    e.old = Some(e.value.take());
                    self.dirty.push(key);
                }
                e.value = value;
                e.timestamp = timestamp;
            }
            None => {
                // The old value is forwarded with the update: read it when someone forwards.
                let old = if self.forwarding && !absent {
                    self.backend_get(&key)?
                } else {
                    None
                };
                self.encode_key(&key)?;
                let bytes = self.key_buf.len() + entry_overhead::<K, V>();
                self.make_room(bytes)?;
                self.cache_bytes += bytes;
                self.cache.insert(
                    key.clone(),
                    Entry {
                        value,
                        old: Some(old),
                        timestamp,
                        bytes,
                        flushed_in: 0,
                        referenced: false,
                    },
                );
                self.dirty.push(key);
            }
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
    /// the backend (and `pending`) has no value for it: then the backend is not read (windowed
    /// aggregations know which of their new windows were never written).
    pub(crate) fn update_known_at(
        &mut self,
        key: K,
        timestamp: i64,
        absent: impl FnOnce(&K) -> bool,
        f: impl FnOnce(&K, Option<V>) -> Option<V>,
    ) -> Result<()> {
        if self.max_bytes > 0
            && let Some(e) = self.cache.get_mut(&key)
        {
            e.referenced = true;
            let was_clean = e.old.is_none();
            if was_clean {
                e.old = Some(e.value.clone());
            }
            e.value = f(&key, e.value.take());
            e.timestamp = timestamp;
            if was_clean {
                self.dirty.push(key);
            }
            self.last_timestamp = self.last_timestamp.max(timestamp);
            return Ok(());
        }
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
    /// value of: those in the backend or in `pending`, and cached ones flushed since the last
    /// commit (a key that never left the cache was never logged).
    pub(crate) fn delete_range(
        &mut self,
        from: &K,
        to: &K,
        contains: impl Fn(&K) -> bool,
        timestamp: i64,
    ) -> Result<usize> {
        self.encode_key(from)?;
        let lo = self.key_buf.clone();
        self.encode_key(to)?;
        let hi = self.key_buf.clone();
        let generation = self.generation;
        // Keys in range the changelog may have a value of, besides those in the backend.
        let mut logged: Vec<K> = Vec::new();
        if self.dirty.iter().any(&contains) {
            let dirty = std::mem::take(&mut self.dirty);
            let mut kept = Vec::with_capacity(dirty.len());
            for key in dirty {
                if !contains(&key) {
                    kept.push(key);
                    continue;
                }
                let Some(e) = self.cache.remove(&key) else {
                    continue;
                };
                self.cache_bytes -= e.bytes;
                if e.flushed_in == generation {
                    logged.push(key.clone());
                }
                if self.forwarding
                    && let Some(old) = e.old
                {
                    self.flushed.push(Flushed {
                        key,
                        new: e.value,
                        old,
                        timestamp: e.timestamp,
                    });
                }
            }
            self.dirty = kept;
        }
        // The clean cached entries in range (and, exactly-once, pending ones).
        let mut freed = 0;
        self.cache.retain(|k, e| {
            if !contains(k) {
                return true;
            }
            freed += e.bytes;
            if e.flushed_in == generation {
                logged.push(k.clone());
            }
            false
        });
        self.cache_bytes -= freed;
        logged.extend(self.pending.keys().filter(|k| contains(k)).cloned());
        let mut gone: Vec<Vec<u8>> = Vec::new();
        for kv in self.backend.range(Some(&lo), Some(&hi))? {
            gone.push(kv?.0);
        }
        if self.transactional {
            // Reads before the commit must not find the applied values either.
            for raw in &gone {
                let k = self
                    .key_serde
                    .deserialize(&self.name, raw)
                    .map_err(|e| self.serde_error(e))?;
                self.pending.insert(k, None);
            }
        }
        for k in logged {
            self.encode_key(&k)?;
            gone.push(self.key_buf.clone());
            if self.transactional {
                self.pending.insert(k, None);
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for k in &gone {
            self.backend.put(k, None);
            Self::log_change(self.changelog.as_mut(), k, None, timestamp)?;
        }
        if self.transactional {
            // Held until the commit like every other write (staged, and in `pending`).
            self.held_bytes += gone
                .iter()
                .map(|k| k.len() + entry_overhead::<K, V>())
                .sum::<usize>();
        } else {
            self.backend.write(None)?;
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

    /// The value the backend has for `key` (leaves the key's bytes in `key_buf`).
    fn backend_get(&mut self, key: &K) -> Result<Option<V>> {
        self.encode_key(key)?;
        self.loaded_bytes = 0;
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        match self.backend.get(&self.key_buf)? {
            Some(bytes) => {
                self.loaded_bytes = bytes.len();
                Ok(Some(self.decode_value(&bytes)?))
            }
            None => Ok(None),
        }
    }

    /// Evicts if adding `bytes` would go over the budget.
    fn make_room(&mut self, bytes: usize) -> Result<()> {
        if self.cache_bytes + bytes <= self.max_bytes {
            return Ok(());
        }
        let key_buf = std::mem::take(&mut self.key_buf);
        let r = self.evict();
        self.key_buf = key_buf;
        r
    }

    fn maybe_evict(&mut self) -> Result<()> {
        if self.cache_bytes <= self.max_bytes {
            return Ok(());
        }
        self.evict()
    }

    /// Writes every dirty entry, then drops clean entries down to half the budget, those not
    /// read or updated since the last eviction first (CLOCK, an approximation of Kafka's LRU
    /// cache that needs one bit per entry): a hot key survives, and so do the newest windows
    /// of a windowed aggregation while old ones go.
    fn evict(&mut self) -> Result<()> {
        self.flush_dirty()?;
        if !self.transactional {
            self.backend.write(None)?;
        }
        let target = self.max_bytes / 2;
        let mut freed = 0;
        let over = self.cache_bytes.saturating_sub(target);
        let (generation, pending) = (self.generation, &mut self.pending);
        // The first pass spares referenced entries (clearing their bit); the second, needed
        // only when they hold most of the cache, takes any.
        for second_chance in [true, false] {
            self.cache.retain(|k, e| {
                if freed >= over {
                    return true;
                }
                if second_chance && std::mem::take(&mut e.referenced) {
                    return true;
                }
                freed += e.bytes;
                if e.flushed_in == generation {
                    // Not in the backend before the commit: reads find it in `pending`.
                    pending.insert(k.clone(), e.value.take());
                }
                false
            });
            if freed >= over {
                break;
            }
        }
        self.cache_bytes -= freed;
        Ok(())
    }

    /// Applies a written entry to the backend at once, or, under exactly-once, holds it in
    /// `pending` until its transaction commits.
    fn apply_or_hold(&mut self, key: &K, value: &Option<V>) -> Result<()> {
        if self.transactional {
            self.pending.insert(key.clone(), value.clone());
            Ok(())
        } else {
            self.backend.write(None)
        }
    }

    /// Writes every dirty entry to the backend (staged) and the changelog.
    fn flush_dirty(&mut self) -> Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty).into_iter();
        while let Some(key) = dirty.next() {
            let Some(e) = self.cache.get_mut(&key) else {
                continue;
            };
            let Some(old) = e.old.take() else { continue };
            let (new, timestamp) = (e.value.clone(), e.timestamp);
            if let Err(error) = self.write_entry(&key, new.as_ref(), timestamp) {
                // The update that cannot be written (its error goes to the handler) is
                // dropped: the entry is back to what the backend holds. The others stay
                // dirty for the next flush.
                if let Some(e) = self.cache.get_mut(&key) {
                    e.value = old;
                }
                self.dirty.extend(dirty);
                return Err(error);
            }
            // Charge the entry what it now weighs serialized (values may have grown).
            let bytes = self.key_buf.len() + self.value_buf.len() + entry_overhead::<K, V>();
            if let Some(e) = self.cache.get_mut(&key) {
                self.cache_bytes = self.cache_bytes - e.bytes + bytes;
                e.bytes = bytes;
                // Exactly-once only: at-least-once writes reach the backend with this flush,
                // and an evicted entry must not be kept in `pending` (unbounded until the commit).
                if self.transactional {
                    e.flushed_in = self.generation;
                }
            }
            if self.forwarding {
                self.flushed.push(Flushed {
                    key,
                    new,
                    old,
                    timestamp,
                });
            }
        }
        Ok(())
    }

    fn write_entry(&mut self, key: &K, value: Option<&V>, timestamp: i64) -> Result<()> {
        self.encode_key(key)?;
        let has_value = match value {
            Some(v) => encode(&*self.value_serde, &self.name, v, &mut self.value_buf)
                .map_err(|e| self.serde_error(e))?,
            None => {
                self.value_buf.clear();
                false
            }
        };
        let value = has_value.then_some(&self.value_buf[..]);
        if self.transactional {
            self.held_bytes += self.key_buf.len() + self.value_buf.len() + entry_overhead::<K, V>();
        }
        // The changelog first: if it refuses the record, the backend has not changed either.
        Self::log_change(self.changelog.as_mut(), &self.key_buf, value, timestamp)?;
        self.backend.put(&self.key_buf, value);
        Ok(())
    }

    /// Sends one change of `key` to the changelog, if the store has one.
    fn log_change(
        changelog: Option<&mut Changelog>,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<()> {
        if let Some(log) = changelog {
            let mut record = ProducerRecord::new(&log.topic)
                .key(key)
                .partition(log.partition);
            if let Some(v) = value {
                record = record.value(v);
            }
            if timestamp >= 0 {
                record = record.timestamp(timestamp);
            }
            log.producer
                .send_with_shared_callback(record, &log.on_delivery)?;
        }
        Ok(())
    }

    fn encode_key(&mut self, key: &K) -> Result<()> {
        encode(&*self.key_serde, &self.name, key, &mut self.key_buf)
            .map_err(|e| self.serde_error(e))?;
        Ok(())
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V> {
        self.value_serde
            .deserialize(&self.name, bytes)
            .map_err(|e| self.serde_error(e))
    }

    fn serde_error(&self, source: crate::serde::SerdeError) -> Error {
        Error::Serde {
            topic: self.name.to_string(),
            partition: -1,
            offset: -1,
            source,
        }
    }
}

/// What a task does with each of its stores, whatever their types.
pub(crate) trait AnyStore: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn name(&self) -> &str;
    /// Writes the dirty cache entries to the backend (staged) and the changelog.
    fn flush_cache(&mut self) -> Result<()>;
    /// Waits for the last changelog record and returns the offset after it, if any was sent
    /// since the last call.
    fn take_changelog_end(&mut self) -> Result<Option<i64>>;
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
        if self.max_bytes == 0 || self.dirty.is_empty() {
            return Ok(());
        }
        // Applied at once (held as pending under exactly-once), so that whoever receives the
        // forwarded updates reads them from the store (`range`); the checkpoint follows when
        // the changelog is acknowledged.
        self.flush_dirty()?;
        if self.transactional {
            return Ok(());
        }
        self.backend.write(None)
    }

    fn apply_committed(&mut self, end: Option<i64>) -> Result<()> {
        self.backend.write(end)?;
        self.held_bytes = 0;
        self.pending.clear();
        self.generation += 1;
        Ok(())
    }

    fn set_transactional(&mut self, on: bool) {
        self.transactional = on;
    }

    fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    fn take_changelog_end(&mut self) -> Result<Option<i64>> {
        Ok(self
            .changelog
            .as_ref()
            .map(|c| c.end.swap(-1, Ordering::AcqRel))
            .filter(|&end| end >= 0))
    }

    fn set_cache_max_bytes(&mut self, bytes: usize) -> Result<()> {
        self.max_bytes = bytes;
        if bytes == 0 {
            self.flush_dirty()?;
            if !self.transactional {
                self.backend.write(None)?;
            }
            for (k, e) in self.cache.drain() {
                if e.flushed_in == self.generation {
                    self.pending.insert(k, e.value);
                }
            }
            self.cache_bytes = 0;
            return Ok(());
        }
        self.maybe_evict()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.backend.close()
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
        assert!(store.pending.is_empty(), "evicted entries kept in memory");
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
        let backend = |k: &str| store.backend.get(k.as_bytes()).unwrap();
        for k in &keys {
            assert_eq!(backend(k), Some(8i64.to_be_bytes().to_vec()), "{k}");
        }
        // The bad update is dropped: the store reads what its backend holds.
        assert_eq!(backend("bad"), Some(1i64.to_be_bytes().to_vec()));
        assert_eq!(store.get(&"bad".to_owned()).unwrap(), Some(1));
    }
}
