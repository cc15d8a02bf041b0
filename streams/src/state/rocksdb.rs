//! The persistent backend: one RocksDB database per task and store.
//!
//! Each database has two column families: `default` for the data and `moldau.checkpoint` for
//! the changelog offset the data reflects (one key, `offset`, an `i64` big-endian). A
//! [`KeyValueStore::write`] puts the staged writes and the new offset in one `WriteBatch`, so
//! RocksDB applies (and recovers) them together.
//!
//! All stores of an application share one [`RocksDbMemory`]: one LRU block cache, with a
//! write-buffer manager charging every memtable to that cache, so that block cache, index and
//! filter blocks and memtables of every store together stay within one budget.

use std::fmt;
use std::path::{Path, PathBuf};

use ::rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch, WriteBufferManager,
    WriteOptions,
};

use super::{KeyValue, KeyValueStore};
use crate::error::{Error, Result};

/// The column family holding the data.
const DATA_CF: &str = "default";
/// The column family holding the checkpoint.
const CHECKPOINT_CF: &str = "moldau.checkpoint";
/// The checkpoint's one key in [`CHECKPOINT_CF`].
const CHECKPOINT_KEY: &[u8] = b"offset";

/// The default total memory budget of [`RocksDbMemory`]: 64 MiB.
const DEFAULT_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// Staging buffers up to this size are kept from one write to the next.
const STAGED_KEEP_BYTES: usize = 1 << 20;
/// The memtable arena's allocation unit (see `cf_options`).
const ARENA_BLOCK_BYTES: usize = 64 * 1024;
/// The default share of the budget memtables may use.
const DEFAULT_WRITE_BUFFER_FRACTION: f64 = 0.5;

/// The memory every RocksDB store of an application shares: one LRU block cache of
/// `total_bytes`, and one write-buffer manager that charges memtables to that cache and makes
/// stores flush when memtables together pass `total_bytes * write_buffer_fraction`.
///
/// Cloning is cheap (reference-counted) and clones share the same cache and manager: give
/// every store of an application a clone of one `RocksDbMemory` (through its
/// [`RocksDbConfig`]) to bound their total memory, whatever the number of stores.
///
/// The bound is RocksDB's: blocks pinned by open iterators may hold the cache over its
/// capacity for a while.
#[derive(Clone)]
pub struct RocksDbMemory {
    total_bytes: usize,
    cache: Cache,
    write_buffer_manager: WriteBufferManager,
}

impl RocksDbMemory {
    /// A block cache of `total_bytes` and a write-buffer manager of
    /// `total_bytes * write_buffer_fraction` charged against it (without stalling writers).
    ///
    /// `write_buffer_fraction` is clamped to `0.05..=0.95` (a non-finite value gives the
    /// default, 0.5): memtables must leave room for blocks, and a zero-sized manager would
    /// mean no limit at all in RocksDB.
    pub fn new(total_bytes: usize, write_buffer_fraction: f64) -> Self {
        let fraction = if write_buffer_fraction.is_finite() {
            write_buffer_fraction.clamp(0.05, 0.95)
        } else {
            DEFAULT_WRITE_BUFFER_FRACTION
        };
        let total_bytes = total_bytes.max(1);
        let write_buffer_bytes = ((total_bytes as f64 * fraction) as usize).max(1);
        let cache = Cache::new_lru_cache(total_bytes);
        let write_buffer_manager = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_bytes,
            false,
            cache.clone(),
        );
        RocksDbMemory {
            total_bytes,
            cache,
            write_buffer_manager,
        }
    }

    /// The budget: the block cache's capacity.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// The bytes in use in the shared cache: cached blocks plus the memtables charged to it.
    pub fn usage_bytes(&self) -> usize {
        self.cache.get_usage()
    }

    /// The write-buffer manager's limit for memtables.
    pub fn write_buffer_bytes(&self) -> usize {
        self.write_buffer_manager.get_buffer_size()
    }
}

impl Default for RocksDbMemory {
    /// 64 MiB in all, half of it for memtables.
    fn default() -> Self {
        RocksDbMemory::new(DEFAULT_TOTAL_BYTES, DEFAULT_WRITE_BUFFER_FRACTION)
    }
}

impl fmt::Debug for RocksDbMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbMemory")
            .field("total_bytes", &self.total_bytes)
            .field("write_buffer_bytes", &self.write_buffer_bytes())
            .field("usage_bytes", &self.usage_bytes())
            .finish()
    }
}

/// How RocksDB stores are opened: the shared memory, and whether writes go through the
/// write-ahead log.
///
/// The WAL is on by default. The checkpoint offset is in the same `WriteBatch` as the data it
/// covers, so with the WAL a process crash (even SIGKILL) recovers every store exactly to its
/// last applied [`KeyValueStore::write`], offset included, and restoring reads only the
/// changelog after it. Writes are not synced: an operating-system crash may lose the last
/// writes, but then the recovered offset still matches the recovered data, and restoration
/// replays the rest from the changelog.
///
/// With the WAL off, writes are cheaper but live only in the memtable until RocksDB flushes
/// it: a process crash loses them, and to keep the checkpoint meaningful the store would have
/// to be flushed at every commit instead. Turn it off only for stores that are rebuilt from
/// their changelog anyway.
#[derive(Clone, Debug)]
pub struct RocksDbConfig {
    memory: RocksDbMemory,
    wal: bool,
}

impl RocksDbConfig {
    /// Stores sharing `memory`, with the WAL on.
    pub fn new(memory: RocksDbMemory) -> Self {
        RocksDbConfig { memory, wal: true }
    }

    /// Whether writes go through RocksDB's write-ahead log (default `true`; see the type's
    /// documentation before turning it off).
    pub fn wal(mut self, wal: bool) -> Self {
        self.wal = wal;
        self
    }

    /// The shared memory.
    pub fn memory(&self) -> &RocksDbMemory {
        &self.memory
    }

    /// Whether the write-ahead log is on.
    pub fn wal_enabled(&self) -> bool {
        self.wal
    }
}

impl Default for RocksDbConfig {
    /// The default [`RocksDbMemory`] (a fresh one: share one explicitly across stores), WAL on.
    fn default() -> Self {
        RocksDbConfig::new(RocksDbMemory::default())
    }
}

/// A [`KeyValueStore`] in a RocksDB database of its own.
///
/// Staged writes collect in a `WriteBatch`; [`KeyValueStore::write`] applies it, with the
/// checkpoint when given, in one atomic RocksDB write.
pub struct RocksDbKeyValueStore {
    name: String,
    dir: PathBuf,
    db: DB,
    /// Writes staged since the last `write`, applied in key order (see [`Staged`]).
    staged: Staged,
    write_options: WriteOptions,
    wal: bool,
    checkpoint: Option<i64>,
}

impl fmt::Debug for RocksDbKeyValueStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbKeyValueStore")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("wal", &self.wal)
            .field("checkpoint", &self.checkpoint)
            .field("staged", &self.staged.entries.len())
            .finish()
    }
}

/// The options of both column families: blocks, index and filters in the shared cache, a
/// bloom filter, no compression.
fn cf_options(memory: &RocksDbMemory) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&memory.cache);
    table.set_cache_index_and_filter_blocks(true);
    // Every point read of a key not in the memtable asks the filter of each L0 file: keep
    // those filters (and the top-level index) in the cache while the file lives, so a full
    // cache never sends a read to disk for its filter.
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::None);
    // A memtable is flushed at the latest when it reaches the whole write-buffer budget
    // (RocksDB's default of 64 MiB would never bind under a smaller budget).
    opts.set_write_buffer_size(
        memory
            .write_buffer_bytes()
            .clamp(64 * 1024, 64 * 1024 * 1024),
    );
    // Memtables are charged to the write-buffer manager by arena block, and RocksDB's default
    // block is an eighth of the write buffer (1 MiB and more here): with two column families
    // per store and dozens of stores, the empty arenas alone passed the budget, so the
    // manager flushed memtables of a few hundred KiB without end (tiny L0 files, compactions,
    // and a cache full of reservations evicting the filters every read needs: reading
    // filter blocks back from disk was 10-13% of a like-count's CPU).
    opts.set_arena_block_size(ARENA_BLOCK_BYTES);
    opts
}

/// The data column family's options: those of [`cf_options`], with memtables of an eighth of
/// the write-buffer budget and a bloom filter over each memtable's keys. Most point reads of
/// an aggregation or a table are for keys the memtable does not hold (new keys, or keys
/// flushed long ago); without the filter each walks the skip list, a sixth of a like-count's
/// CPU. RocksDB allocates the filter with the memtable (2% of its size, ~10 bits a key), so
/// the memtable is kept small enough for dozens of stores' filters to fit the budget.
fn data_cf_options(memory: &RocksDbMemory) -> Options {
    let mut opts = cf_options(memory);
    opts.set_write_buffer_size(
        (memory.write_buffer_bytes() / 8).clamp(64 * 1024, 64 * 1024 * 1024),
    );
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts
}

impl RocksDbKeyValueStore {
    /// Opens the store `name` in the RocksDB database in `dir`, creating it if missing (the
    /// caller gives each task's store a directory of its own).
    ///
    /// Fails with [`Error::Store`] if RocksDB cannot open the database (for example another
    /// open store holds its lock) or its checkpoint is not 8 bytes.
    ///
    /// ```
    /// use streams::state::{KeyValueStore, RocksDbConfig, RocksDbKeyValueStore};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = RocksDbConfig::default();
    /// let mut store = RocksDbKeyValueStore::open(dir.path(), "counts", &config).unwrap();
    /// store.put(b"a", Some(b"1"));
    /// store.write(Some(42)).unwrap();
    /// Box::new(store).close().unwrap();
    ///
    /// let store = RocksDbKeyValueStore::open(dir.path(), "counts", &config).unwrap();
    /// assert_eq!(store.checkpoint(), Some(42));
    /// assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    /// ```
    pub fn open(dir: &Path, name: &str, config: &RocksDbConfig) -> Result<Self> {
        let memory = &config.memory;
        let mut db_opts = cf_options(memory);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&memory.write_buffer_manager);
        db_opts.set_max_open_files(256);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        // Flush both column families together. Without the WAL, what survives a crash is what
        // was flushed, and the flushed checkpoint must match the flushed data. And a flush the
        // write-buffer manager triggers picks the column family with the oldest memtable, which
        // would mostly be the checkpoint's (written at every commit, never full): memtables
        // would grow far over the budget while tiny checkpoint tables are flushed.
        db_opts.set_atomic_flush(true);
        let cfs = [
            ColumnFamilyDescriptor::new(DATA_CF, data_cf_options(memory)),
            ColumnFamilyDescriptor::new(CHECKPOINT_CF, cf_options(memory)),
        ];
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)
            .map_err(|e| Error::store_caused(name, format!("cannot open {}", dir.display()), e))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(!config.wal);
        write_options.set_sync(false);
        let mut store = RocksDbKeyValueStore {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            db,
            staged: Staged::default(),
            write_options,
            wal: config.wal,
            checkpoint: None,
        };
        store.checkpoint = store.read_checkpoint()?;
        Ok(store)
    }

    /// The directory of the database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::store(&self.name, format!("column family {name} is missing")))
    }

    fn err(&self, what: &str, e: ::rocksdb::Error) -> Error {
        Error::store_caused(&self.name, what, e)
    }

    fn read_checkpoint(&self) -> Result<Option<i64>> {
        let cf = self.cf(CHECKPOINT_CF)?;
        let value = self
            .db
            .get_pinned_cf(cf, CHECKPOINT_KEY)
            .map_err(|e| self.err("cannot read the checkpoint", e))?;
        match value {
            None => Ok(None),
            Some(bytes) => match <[u8; 8]>::try_from(&bytes[..]) {
                Ok(be) => Ok(Some(i64::from_be_bytes(be))),
                Err(_) => Err(Error::store(
                    &self.name,
                    format!(
                        "corrupt checkpoint in {}: {} bytes, expected an 8-byte offset",
                        self.dir.display(),
                        bytes.len()
                    ),
                )),
            },
        }
    }
}

/// Staged writes: keys and values back to back in one buffer, so staging allocates nothing
/// per write. They reach RocksDB sorted by key (stable: a key's later write stays later):
/// a memtable insert resumes its skip-list search where the previous insert ended, so inserts
/// in key order cost a fraction of random ones (random inserts were a tenth of a
/// like-count's CPU).
#[derive(Default)]
struct Staged {
    bytes: Vec<u8>,
    /// (offset of the key in `bytes`, key length, value length; `None`: a delete).
    entries: Vec<(usize, usize, Option<usize>)>,
}

impl Staged {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.entries
            .push((self.bytes.len(), key.len(), value.map(<[u8]>::len)));
        self.bytes.extend_from_slice(key);
        if let Some(value) = value {
            self.bytes.extend_from_slice(value);
        }
    }

    /// Calls `f` with every staged write in key order, then forgets them all.
    fn drain_sorted(&mut self, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        let bytes = &self.bytes;
        let key = |&(at, len, _): &(usize, usize, Option<usize>)| &bytes[at..at + len];
        self.entries.sort_by(|a, b| key(a).cmp(key(b)));
        for &(at, len, value) in &self.entries {
            let value = value.map(|n| &bytes[at + len..at + len + n]);
            f(&bytes[at..at + len], value);
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        // A burst (a restore, a large transaction) leaves no lasting buffer behind.
        if self.bytes.capacity() > STAGED_KEEP_BYTES {
            self.bytes = Vec::new();
            self.entries = Vec::new();
        }
    }
}

impl KeyValueStore for RocksDbKeyValueStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn persistent(&self) -> bool {
        true
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(DATA_CF)?;
        let value = self
            .db
            .get_pinned_cf(cf, key)
            .map_err(|e| self.err("get failed", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.staged.push(key, value);
    }

    /// Applies the staged writes and the checkpoint in one RocksDB write. On error the staged
    /// writes are discarded and the checkpoint is unchanged.
    fn write(&mut self, checkpoint: Option<i64>) -> Result<()> {
        let mut batch = WriteBatch::default();
        if !self.staged.entries.is_empty() {
            let Some(cf) = self.db.cf_handle(DATA_CF) else {
                self.staged.clear();
                return Err(Error::store(&self.name, "column family default is missing"));
            };
            self.staged.drain_sorted(|key, value| match value {
                Some(value) => batch.put_cf(cf, key, value),
                None => batch.delete_cf(cf, key),
            });
        }
        if let Some(offset) = checkpoint {
            let cf = self.cf(CHECKPOINT_CF)?;
            batch.put_cf(cf, CHECKPOINT_KEY, offset.to_be_bytes());
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.err("write failed", e))?;
        if checkpoint.is_some() {
            self.checkpoint = checkpoint;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Option<i64> {
        self.checkpoint
    }

    fn range<'a>(
        &'a self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Box<dyn Iterator<Item = Result<KeyValue>> + 'a>> {
        let empty = match (from, to) {
            (_, Some([])) => true,
            (Some(from), Some(to)) => from >= to,
            _ => false,
        };
        if empty {
            return Ok(Box::new(std::iter::empty()));
        }
        let cf = self.cf(DATA_CF)?;
        let mut read_options = ReadOptions::default();
        if let Some(to) = to {
            read_options.set_iterate_upper_bound(to);
        }
        let mode = match from {
            Some(from) => IteratorMode::From(from, Direction::Forward),
            None => IteratorMode::Start,
        };
        let name = &self.name;
        Ok(Box::new(
            self.db
                .iterator_cf_opt(cf, read_options, mode)
                .map(move |item| {
                    item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                        .map_err(|e| Error::store_caused(name, "range read failed", e))
                }),
        ))
    }

    fn approximate_num_entries(&self) -> Result<u64> {
        let cf = self.cf(DATA_CF)?;
        let n = self
            .db
            .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
            .map_err(|e| self.err("cannot read rocksdb.estimate-num-keys", e))?;
        Ok(n.unwrap_or(0))
    }

    /// Deletes every entry and the checkpoint in one atomic write (a range deletion over the
    /// whole key space), and discards the writes staged since the last `write`.
    fn clear(&mut self) -> Result<()> {
        self.staged.clear();
        let data = self.cf(DATA_CF)?;
        let mut batch = WriteBatch::default();
        // The smallest key above the last one bounds the (end-exclusive) range deletion.
        let mut last = self.db.iterator_cf(data, IteratorMode::End);
        if let Some(item) = last.next() {
            let (key, _) = item.map_err(|e| self.err("cannot find the last key", e))?;
            let mut end = key.into_vec();
            end.push(0);
            batch.delete_range_cf(data, &b""[..], &end[..]);
        }
        drop(last);
        batch.delete_cf(self.cf(CHECKPOINT_CF)?, CHECKPOINT_KEY);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.err("clear failed", e))?;
        self.checkpoint = None;
        Ok(())
    }

    /// Without the WAL, flushes the memtables of both column families to disk together (with
    /// it, syncs the WAL), then closes the
    /// database. Writes staged since the last `write` are discarded.
    fn close(self: Box<Self>) -> Result<()> {
        if self.wal {
            self.db
                .flush_wal(true)
                .map_err(|e| self.err("cannot sync the WAL", e))?;
        } else {
            let cfs = [self.cf(DATA_CF)?, self.cf(CHECKPOINT_CF)?];
            self.db
                .flush_cfs_opt(&cfs, &FlushOptions::default())
                .map_err(|e| self.err("flush failed", e))?;
        }
        drop(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint that is not 8 bytes is a store error at open, not a panic.
    #[test]
    fn corrupt_checkpoint_is_a_store_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksDbConfig::new(RocksDbMemory::new(4 << 20, 0.5));
        let mut store = RocksDbKeyValueStore::open(dir.path(), "s", &config).unwrap();
        store.put(b"k", Some(b"v"));
        store.write(Some(1)).unwrap();
        let cf = store.db.cf_handle(CHECKPOINT_CF).unwrap();
        store.db.put_cf(cf, CHECKPOINT_KEY, [1u8, 2, 3]).unwrap();
        Box::new(store).close().unwrap();
        match RocksDbKeyValueStore::open(dir.path(), "s", &config) {
            Err(Error::Store { store, reason, .. }) => {
                assert_eq!(store, "s");
                assert!(
                    reason.contains("corrupt checkpoint") && reason.contains("3 bytes"),
                    "{reason}"
                );
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }
}
