//! The caching layer: a write-back record cache of deserialized entries (Kafka Streams'
//! `CachingKeyValueStore` over its `ThreadCache`).
//!
//! A `put` only marks its entry dirty, remembering the value below it (the old value of the
//! update a flush forwards); repeated updates of a key between two flushes become one write
//! below. A flush writes the dirty entries in the order they became dirty. When the cache
//! outgrows its budget (`statestore.cache.max.bytes`, split among a thread's caching stores)
//! the store flushes it and then drops clean entries down to half the budget, by CLOCK: an
//! entry read or updated since the last eviction pass is spared once (its bit cleared), so hot
//! keys stay and keys seen once go first (Kafka's cache is LRU; one bit per entry approximates
//! it without a list).
//!
//! The cache knows nothing of serdes, changelogs or transactions: what it writes below, and
//! what becomes of an entry it drops, is the typed store's (`store.rs`) to say. It carries one
//! number for the layer below it: each entry's flush stamp, which the held-writes layer
//! (`held_writes.rs`) reads to tell an entry flushed in the open transaction.

use std::hash::Hash;

/// A cached entry.
pub(crate) struct Entry<V> {
    pub value: Option<V>,
    /// While dirty: the value below (for the old value of what is forwarded).
    pub old: Option<Option<V>>,
    pub timestamp: i64,
    /// What the entry is charged against the budget.
    pub bytes: usize,
    /// The stamp of the flush that last wrote it below (0: none since it was read).
    pub flushed_in: u64,
    /// Read or updated since the last eviction pass went by (CLOCK's second chance).
    pub referenced: bool,
}

/// Bytes an entry costs besides its serialized key and value: the map slot and the value,
/// roughly.
pub(crate) fn entry_overhead<K, V>() -> usize {
    std::mem::size_of::<(K, Entry<V>)>() + 16
}

/// The record cache of one store.
pub(crate) struct RecordCache<K, V> {
    /// foldhash: several times faster than SipHash on short keys, seeded per process.
    entries: foldhash::HashMap<K, Entry<V>>,
    /// Keys that became dirty since the last flush, in that order.
    dirty: Vec<K>,
    bytes: usize,
    max_bytes: usize,
}

/// An update a flush wrote below, or one dropped by [`RecordCache::remove_range`]: the new
/// value, the value before, and the last update's timestamp.
pub(crate) struct Flushed<K, V> {
    pub key: K,
    pub new: Option<V>,
    pub old: Option<V>,
    pub timestamp: i64,
}

/// An entry [`RecordCache::remove_range`] dropped.
pub(crate) enum Dropped<'a, K, V> {
    /// A dirty entry, taken out of the cache.
    Dirty(K, Entry<V>),
    /// A clean entry, as it goes.
    Clean(&'a K, &'a Entry<V>),
}

impl<K: Hash + Eq + Clone, V: Clone> RecordCache<K, V> {
    /// An empty cache with no budget (every write goes through).
    pub(crate) fn new() -> Self {
        RecordCache {
            entries: foldhash::HashMap::default(),
            dirty: Vec::new(),
            bytes: 0,
            max_bytes: 0,
        }
    }

    /// Whether the cache keeps anything (a budget above 0).
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    pub(crate) fn set_max_bytes(&mut self, bytes: usize) {
        self.max_bytes = bytes;
    }

    /// Whether adding `bytes` would take the cache over its budget.
    #[inline]
    pub(crate) fn needs_room(&self, bytes: usize) -> bool {
        self.bytes + bytes > self.max_bytes
    }

    /// Whether the cache is over its budget.
    #[inline]
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.max_bytes
    }

    /// The number of dirty entries.
    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// The value cached for `key`, marking it referenced.
    #[inline]
    pub(crate) fn get(&mut self, key: &K) -> Option<&Option<V>> {
        let e = self.entries.get_mut(key)?;
        e.referenced = true;
        Some(&e.value)
    }

    /// The entry of `key`, if cached, without marking it.
    pub(crate) fn peek(&self, key: &K) -> Option<&Entry<V>> {
        self.entries.get(key)
    }

    /// Caches `value`, read from below, as a clean entry (make room first).
    pub(crate) fn insert_clean(&mut self, key: K, value: Option<V>, bytes: usize) {
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                value,
                old: None,
                timestamp: -1,
                bytes,
                flushed_in: 0,
                referenced: false,
            },
        );
    }

    /// Sets a cached `key` to `value`, marking it dirty; gives `key` and `value` back when it
    /// is not cached.
    #[inline]
    pub(crate) fn put(
        &mut self,
        key: K,
        value: Option<V>,
        timestamp: i64,
    ) -> Option<(K, Option<V>)> {
        let Some(e) = self.entries.get_mut(&key) else {
            return Some((key, value));
        };
        // Not a reference: the put after a read miss (`Store::update_at`) would mark every
        // key read once, and a one-time key should go before a hot one.
        if e.old.is_none() {
            e.old = Some(e.value.take());
            self.dirty.push(key);
        }
        e.value = value;
        e.timestamp = timestamp;
        None
    }

    /// Caches a dirty entry for a `key` that is not cached (make room first): `value` over
    /// `old`, the value below.
    pub(crate) fn insert_dirty(
        &mut self,
        key: K,
        value: Option<V>,
        old: Option<V>,
        timestamp: i64,
        bytes: usize,
    ) {
        self.bytes += bytes;
        self.entries.insert(
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

    /// Replaces the value of a cached `key` by `f(key, value)` with one hash lookup, moving the
    /// value rather than cloning it (the aggregations' hot path), and marks it dirty and
    /// referenced; gives `key` and `f` back when it is not cached.
    #[inline]
    pub(crate) fn update<F>(&mut self, key: K, timestamp: i64, f: F) -> Option<(K, F)>
    where
        F: FnOnce(&K, Option<V>) -> Option<V>,
    {
        if !self.enabled() {
            return Some((key, f));
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return Some((key, f));
        };
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
        None
    }

    /// Writes every dirty entry below with `write(key, value, timestamp)`, in the order they
    /// became dirty, and hands each written update to `written`. `write` returns the entry's
    /// serialized size, which it is charged from then on (values may have grown); `stamp`, if
    /// given, becomes its flush stamp.
    ///
    /// An update that cannot be written (its error is returned, and goes to the handler) is
    /// dropped: its entry is back to the value below. The entries after it stay dirty for the
    /// next flush.
    pub(crate) fn flush(
        &mut self,
        stamp: Option<u64>,
        mut write: impl FnMut(&K, Option<&V>, i64) -> crate::error::Result<usize>,
        mut written: impl FnMut(Flushed<K, V>),
    ) -> crate::error::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty).into_iter();
        while let Some(key) = dirty.next() {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            let Some(old) = e.old.take() else { continue };
            let (new, timestamp) = (e.value.clone(), e.timestamp);
            let size = match write(&key, new.as_ref(), timestamp) {
                Ok(size) => size,
                Err(error) => {
                    if let Some(e) = self.entries.get_mut(&key) {
                        e.value = old;
                    }
                    self.dirty.extend(dirty);
                    return Err(error);
                }
            };
            let bytes = size + entry_overhead::<K, V>();
            if let Some(e) = self.entries.get_mut(&key) {
                self.bytes = self.bytes - e.bytes + bytes;
                e.bytes = bytes;
                if let Some(stamp) = stamp {
                    e.flushed_in = stamp;
                }
            }
            written(Flushed {
                key,
                new,
                old,
                timestamp,
            });
        }
        Ok(())
    }

    /// Drops clean entries down to half the budget, those not read or updated since the last
    /// pass first, handing each to `dropped` (which may take its value). Call it after a
    /// flush: dirty entries would be dropped too.
    pub(crate) fn evict(&mut self, mut dropped: impl FnMut(&K, &mut Entry<V>)) {
        let target = self.max_bytes / 2;
        let mut freed = 0;
        let over = self.bytes.saturating_sub(target);
        // The first pass spares referenced entries (clearing their bit); the second, needed
        // only when they hold most of the cache, takes any.
        for second_chance in [true, false] {
            self.entries.retain(|k, e| {
                if freed >= over {
                    return true;
                }
                if second_chance && std::mem::take(&mut e.referenced) {
                    return true;
                }
                freed += e.bytes;
                dropped(k, e);
                false
            });
            if freed >= over {
                break;
            }
        }
        self.bytes -= freed;
    }

    /// Drops every entry, handing each to `dropped`. Call it after a flush.
    pub(crate) fn drain(&mut self, mut dropped: impl FnMut(K, Entry<V>)) {
        for (k, e) in self.entries.drain() {
            dropped(k, e);
        }
        self.bytes = 0;
    }

    /// Drops the entries whose key `contains` says is in range, without writing them, handing
    /// each to `dropped`: the dirty ones first, in the order they became dirty.
    pub(crate) fn remove_range(
        &mut self,
        contains: impl Fn(&K) -> bool,
        mut dropped: impl FnMut(Dropped<'_, K, V>),
    ) {
        if self.dirty.iter().any(&contains) {
            let dirty = std::mem::take(&mut self.dirty);
            let mut kept = Vec::with_capacity(dirty.len());
            for key in dirty {
                if !contains(&key) {
                    kept.push(key);
                    continue;
                }
                let Some(e) = self.entries.remove(&key) else {
                    continue;
                };
                self.bytes -= e.bytes;
                dropped(Dropped::Dirty(key, e));
            }
            self.dirty = kept;
        }
        let mut freed = 0;
        self.entries.retain(|k, e| {
            if !contains(k) {
                return true;
            }
            freed += e.bytes;
            dropped(Dropped::Clean(k, e));
            false
        });
        self.bytes -= freed;
    }

    /// The dirty keys, in the order they became dirty.
    pub(crate) fn dirty_keys(&self) -> &[K] {
        &self.dirty
    }

    /// The cached entries.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&K, &Entry<V>)> {
        self.entries.iter()
    }
}
