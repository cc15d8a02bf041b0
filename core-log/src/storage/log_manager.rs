//! The log manager (Kafka's `LogManager`): a directory of topics and their partitions,
//! opened by one process at a time, with the maintenance that keeps it.
//!
//! ```text
//! <dir>/
//!   .lock                              flock: one log per directory
//!   topics.json                        topics, partition counts, configs (checksummed)
//!   clean-shutdown                     present only while the log is closed cleanly
//!   recovery-point-offset-checkpoint   per partition: everything below is fsynced
//!   cleaner-offset-checkpoint          per partition: everything below is compacted
//!   log-start-offset-checkpoint        per partition: the first offset retention kept
//!   <topic>-<partition>/               segments: 00000000000000000000.log .index ...
//! ```
//!
//! One background thread ("log-maintenance") flushes partitions whose `flush.ms` is due and
//! the segments sealed since the last flush, enforces retention, compacts `compact` topics,
//! writes the checkpoint files, and runs the periodic tasks the layers above register (the
//! transaction coordinator's timeout check). Its decisions read the injected [`Clock`]; tests
//! switch it off and call [`LogManager::enforce_retention`] and [`LogManager::compact`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod maintenance;

use crate::clock::Clock;
use crate::codec::RecordBatch;
use crate::error::{Error, Result};
use crate::storage::checkpoint::{
    CLEANER_CHECKPOINT, LOG_START_CHECKPOINT, RECOVERY_POINT_CHECKPOINT, read_checkpoint,
    write_checkpoint_file,
};
use crate::storage::config::{FlushPolicy, TopicConfig};
use crate::storage::fs::{fsync_dir, remove_if_exists, seal_text, write_atomic};
use crate::storage::partition::compaction::CleanerStats;
use crate::storage::partition::recovery::Recover;
use crate::storage::partition::{Checkpoints, Partition, recovery};
use crate::storage::topic::{
    MAX_PARTITIONS_PER_TOPIC, Manifest, ManifestTopic, parse_partition_dir, partition_dir_name,
    validate_topic_name,
};
use crate::sync::{lock, read, write};
use maintenance::Maintenance;
pub(crate) use maintenance::PeriodicTask;

pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";
/// How much of an internal topic one read takes while a coordinator loads it.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// The log's storage: topics, partitions and their maintenance. Cheap to clone: clones share
/// it. Closed cleanly by [`LogManager::close`] or when the last clone is dropped. The
/// coordinators and clients above take it; the public face is `Log`.
#[derive(Clone, Debug)]
pub(crate) struct LogManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    flush_policy: FlushPolicy,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation, deletion and changes, and manifest writes.
    admin: Mutex<()>,
    /// Serializes checkpoint writes (maintenance, `flush`, retention, topic changes): they
    /// share temporary file names.
    checkpoints: Mutex<()>,
    closed: Arc<AtomicBool>,
    maintenance: Mutex<Option<Maintenance>>,
    /// Bumped whenever topics or partition counts change: subscriptions by pattern and group
    /// leaders watch it.
    metadata_version: AtomicU64,
    _lock_file: File,
}

#[derive(Debug)]
struct Topic {
    config: RwLock<Arc<TopicConfig>>,
    partitions: RwLock<Vec<Partition>>,
    /// Compaction may have run on the topic (see `ManifestTopic::compacted`).
    compacted: AtomicBool,
}

/// How to open the storage (the log's builder settings that concern it).
#[derive(Debug)]
pub(crate) struct Options {
    pub dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    pub flush_policy: FlushPolicy,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`.
    pub cleaner_backoff_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`.
    pub checkpoint_interval_ms: u64,
}

impl LogManager {
    /// Opens (or creates) the storage in `b.dir`, recovering it if it was not closed cleanly.
    /// No maintenance runs until [`LogManager::start_maintenance`].
    pub(crate) fn open(b: &Options) -> Result<LogManager> {
        let dir = b.dir.clone();
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let lock_path = dir.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::LogDirLocked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
        }

        let manifest_path = dir.join(Manifest::FILE);
        let (manifest, legacy_manifest) = match fs::read(&manifest_path) {
            Ok(bytes) => Manifest::decode(&bytes, &manifest_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Manifest::default(), false),
            Err(e) => return Err(Error::io(&manifest_path)(e)),
        };
        let clean = dir.join(CLEAN_SHUTDOWN).exists();
        let recovery_points = read_checkpoint(&dir.join(RECOVERY_POINT_CHECKPOINT));
        let cleaner_points = read_checkpoint(&dir.join(CLEANER_CHECKPOINT));
        let log_starts = read_checkpoint(&dir.join(LOG_START_CHECKPOINT));
        // From here on the log may change: a crash must not find a stale clean marker.
        if clean {
            remove_if_exists(&dir.join(CLEAN_SHUTDOWN))?;
            fsync_dir(&dir)?;
        }

        // Partition directories renamed for deletion: a topic with one of them in place of a
        // partition directory was being deleted (the rename is the deletion's first step), and
        // its deletion is finished here.
        let mut renamed_for_deletion = std::collections::HashSet::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let name = entry.map_err(Error::io(&dir))?.file_name();
            if let Some(pdir) = deleted_dir_partition(&name.to_string_lossy()) {
                renamed_for_deletion.insert(pdir.to_string());
            }
        }
        let (manifest, deleting): (Vec<ManifestTopic>, Vec<ManifestTopic>) =
            manifest.topics.into_iter().partition(|t| {
                !(0..t.partitions).any(|p| {
                    let pdir = partition_dir_name(&t.name, p);
                    renamed_for_deletion.contains(&pdir) && !dir.join(&pdir).exists()
                })
            });
        let manifest = Manifest { topics: manifest };
        // The manifest drops the topics first; until it does, their directories stay, so that
        // a failure here is finished by the next open too.
        let finish_deletions = deleting.is_empty()
            || match write_atomic(&manifest_path, &manifest.encode(), true) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot finish an interrupted topic deletion now");
                    false
                }
            };
        for t in deleting.iter().filter(|_| finish_deletions) {
            tracing::info!(topic = %t.name, "finishing a topic deletion a crash interrupted");
            for p in 0..t.partitions {
                let pdir = dir.join(partition_dir_name(&t.name, p));
                if pdir.exists() {
                    fs::remove_dir_all(&pdir).map_err(Error::io(&pdir))?;
                }
            }
        }
        let rewrite_manifest = legacy_manifest;

        let closed = Arc::new(AtomicBool::new(false));
        let mut topics = BTreeMap::new();
        let mut live_dirs = std::collections::HashSet::new();
        for t in &manifest.topics {
            let config = Arc::new(t.config.clone());
            let name: Arc<str> = Arc::from(t.name.as_str());
            let mut partitions = Vec::new();
            for p in 0..t.partitions {
                let pdir_name = partition_dir_name(&t.name, p);
                let pdir = dir.join(&pdir_name);
                let key = (t.name.clone(), p);
                let recovery_point = recovery_points.get(&key).copied();
                if !pdir.is_dir() {
                    // Creation makes the directories before the manifest names the topic, so
                    // this is damage. The partition starts again where the checkpoint says the
                    // log had reached, so offsets never go back.
                    tracing::error!(
                        topic = %t.name,
                        partition = p,
                        from_offset = recovery_point.unwrap_or(0),
                        "partition directory missing: its records are lost; recreated empty"
                    );
                }
                let opened = recovery::open_partition(
                    &pdir,
                    &config,
                    Recover {
                        clean_shutdown: clean,
                        recovery_point,
                        cleaner_checkpoint: cleaner_points.get(&key).copied().unwrap_or(0),
                        log_start_offset: log_starts.get(&key).copied(),
                        compacted: t.compacted,
                    },
                )?;
                if opened.truncated_bytes > 0 {
                    tracing::warn!(topic = %t.name, partition = p, bytes = opened.truncated_bytes, "recovery truncated an unflushed tail");
                }
                partitions.push(Partition::new(
                    name.clone(),
                    p,
                    pdir,
                    b.clock.clone(),
                    b.flush_policy,
                    opened,
                    config.clone(),
                    closed.clone(),
                ));
                live_dirs.insert(pdir_name);
            }
            topics.insert(
                t.name.clone(),
                Arc::new(Topic {
                    config: RwLock::new(config),
                    partitions: RwLock::new(partitions),
                    compacted: AtomicBool::new(t.compacted),
                }),
            );
        }
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") && path.is_file() {
                // A manifest or checkpoint write that a crash interrupted before its rename.
                remove_if_exists(&path)?;
            } else if deleted_dir_partition(&name).is_some() && path.is_dir() && finish_deletions {
                // A deleted topic's partition, renamed after the manifest dropped the topic.
                fs::remove_dir_all(&path).map_err(Error::io(&path))?;
            } else if path.is_dir()
                && parse_partition_dir(&name).is_some()
                && !live_dirs.contains(&name)
                && !deleting
                    .iter()
                    .any(|t| parse_partition_dir(&name).is_some_and(|(topic, _)| topic == t.name))
            {
                // A directory the manifest does not name. Without records it is a leftover of
                // a creation a crash interrupted before its commit point. With records it is
                // never deleted: it may be data someone needs (the manifest is checksummed,
                // so it is not a topic the manifest lost to a flipped bit).
                if holds_records(&path) {
                    tracing::warn!(dir = %name, "partition directory of no topic: left in place (see verify)");
                } else {
                    fs::remove_dir_all(&path).map_err(Error::io(&path))?;
                }
            }
        }

        let log = LogManager {
            inner: Arc::new(Inner {
                dir,
                clock: b.clock.clone(),
                flush_policy: b.flush_policy,
                topics: RwLock::new(topics),
                admin: Mutex::new(()),
                checkpoints: Mutex::new(()),
                closed,
                maintenance: Mutex::new(None),
                metadata_version: AtomicU64::new(0),
                _lock_file: lock_file,
            }),
        };
        // Neither write is needed to read the log: on a full disk the log still opens, and the
        // next open checks more.
        if let Err(e) = log.write_checkpoints() {
            tracing::warn!(error = %e, "cannot write the checkpoints at open");
        }
        if rewrite_manifest {
            let _admin = lock(&log.inner.admin);
            // Unwritten, the next open does the same again.
            if let Err(e) = log.write_manifest(&log.manifest()) {
                tracing::warn!(error = %e, "cannot rewrite topics.json");
            }
        }
        Ok(log)
    }

    /// The clock the log stamps records with; clients use it for their own timestamps.
    /// The clock the log and its clients read time from.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Creates the internal compacted topic `name` (`__consumer_offsets`,
    /// `__transaction_state`) with `partitions` partitions unless it exists, and returns its
    /// partition count. Segments of 100 MiB, Kafka's `offsets.topic.segment.bytes`.
    pub(crate) fn ensure_internal_topic(&self, name: &str, partitions: u32) -> Result<u32> {
        match self.partition_count(name) {
            Err(Error::UnknownTopicOrPartition { .. }) => {
                let config = TopicConfig {
                    cleanup_policy: crate::storage::config::CleanupPolicy::COMPACT,
                    segment_bytes: 100 * 1024 * 1024,
                    ..TopicConfig::default()
                };
                self.create_topic(name, partitions, config)?;
                Ok(partitions)
            }
            other => other,
        }
    }

    /// Calls `f` with every batch of every partition of `topic` (control batches included),
    /// from the log start to the end, in offset order per partition: how the coordinators
    /// read their internal topics back. Lost offsets (damage) are stepped over.
    pub(crate) fn replay_topic(
        &self,
        topic: &str,
        mut f: impl FnMut(u32, &Partition, &RecordBatch<'_>) -> Result<()>,
    ) -> Result<()> {
        for p in 0..self.partition_count(topic)? {
            let partition = self.partition(topic, p)?;
            let mut offset = partition.log_start_offset()?;
            loop {
                let data = match partition.read(offset, REPLAY_READ_BYTES) {
                    Ok(data) => data,
                    // What the damage held is gone either way; the state after it is kept,
                    // rather than no group or transaction working again.
                    Err(Error::CorruptRecord {
                        first_offset,
                        resume_offset,
                        ..
                    }) => {
                        tracing::error!(
                            topic,
                            partition = p,
                            first_offset,
                            resume_offset,
                            "a coordinator's state lost the records in damaged offsets"
                        );
                        if resume_offset >= partition.log_end_offset()? {
                            break;
                        }
                        offset = resume_offset;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for batch in data.batches() {
                    f(p, &partition, &batch)?;
                }
                let next = data.next_offset();
                if next <= offset || next >= data.log_end_offset {
                    break;
                }
                offset = next;
            }
        }
        Ok(())
    }

    /// Changes whenever a topic is created or deleted or gains partitions.
    pub(crate) fn metadata_version(&self) -> u64 {
        self.inner.metadata_version.load(Ordering::SeqCst)
    }

    fn metadata_changed(&self) {
        self.inner.metadata_version.fetch_add(1, Ordering::SeqCst);
    }

    /// The highest producer id any partition keeps state for.
    pub(crate) fn max_producer_id(&self) -> Option<i64> {
        self.all_partitions()
            .iter()
            .filter_map(|p| p.max_producer_id().ok().flatten())
            .max()
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
        read(&self.inner.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: 0,
            })
    }

    /// Creates a topic with `partitions` partitions (at most
    /// [`MAX_PARTITIONS_PER_TOPIC`](crate::MAX_PARTITIONS_PER_TOPIC)).
    pub(crate) fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<()> {
        validate_topic_name(name)?;
        config.validate()?;
        if partitions == 0 {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                current: 0,
                requested: 0,
            });
        }
        check_partition_count(name, partitions)?;
        self.check_open()?;
        let _admin = lock(&self.inner.admin);
        if read(&self.inner.topics).contains_key(name) {
            return Err(Error::TopicAlreadyExists {
                topic: name.to_string(),
            });
        }
        let compacted = config.cleanup_policy.compact;
        let config = Arc::new(config);
        let parts = self.open_new_partitions(name, 0..partitions, &config, compacted)?;
        let mut manifest = self.manifest();
        manifest.topics.push(ManifestTopic {
            name: name.to_string(),
            partitions,
            config: (*config).clone(),
            compacted,
        });
        // Checkpoints without entries for the new partitions, durable before the manifest
        // names them: entries a deleted topic of the same name left would otherwise give the
        // new partitions its log start and recovery point after a crash.
        if let Err(e) = self
            .write_checkpoints()
            .and_then(|()| self.write_manifest(&manifest))
        {
            remove_new_partitions(&parts);
            return Err(e);
        }
        write(&self.inner.topics).insert(
            name.to_string(),
            Arc::new(Topic {
                config: RwLock::new(config),
                partitions: RwLock::new(parts),
                compacted: AtomicBool::new(compacted),
            }),
        );
        self.metadata_changed();
        Ok(())
    }

    /// Creates the directories of new partitions `ids` of topic `name`, before the manifest
    /// names them (its write is the commit point). On failure, what was created is removed.
    fn open_new_partitions(
        &self,
        name: &str,
        ids: std::ops::Range<u32>,
        config: &Arc<TopicConfig>,
        compacted: bool,
    ) -> Result<Vec<Partition>> {
        let topic: Arc<str> = Arc::from(name);
        let mut parts = Vec::new();
        for p in ids {
            let pdir = self.inner.dir.join(partition_dir_name(name, p));
            let opened = self
                .clear_for_new_partition(&pdir)
                .and_then(|()| {
                    recovery::open_partition(&pdir, config, Recover::new_partition(compacted))
                })
                .and_then(|opened| fsync_dir(&pdir).map(|()| opened));
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    remove_new_partitions(&parts);
                    let _ = fs::remove_dir_all(&pdir);
                    return Err(e);
                }
            };
            parts.push(Partition::new(
                topic.clone(),
                p,
                pdir,
                self.inner.clock.clone(),
                self.inner.flush_policy,
                opened,
                config.clone(),
                self.inner.closed.clone(),
            ));
        }
        if let Err(e) = fsync_dir(&self.inner.dir) {
            remove_new_partitions(&parts);
            return Err(e);
        }
        Ok(parts)
    }

    /// Makes room for a new partition's directory. A leftover without records goes; one with
    /// records (a partition of no topic, found at open) is moved aside under Kafka's name for
    /// a stray log, `<topic>-<partition>.<id>-stray`, never deleted.
    fn clear_for_new_partition(&self, pdir: &Path) -> Result<()> {
        if !pdir.exists() {
            return Ok(());
        }
        if !holds_records(pdir) {
            return fs::remove_dir_all(pdir).map_err(Error::io(pdir));
        }
        let aside = unique_sibling(pdir, "stray", self.inner.clock.now_ms());
        tracing::warn!(from = ?pdir, to = ?aside, "moving a partition directory of no topic aside");
        fs::rename(pdir, &aside).map_err(Error::io(pdir))?;
        fsync_dir(&self.inner.dir)
    }

    /// Grows a topic to `total` partitions. Partitions are never removed: a smaller or equal
    /// count is `InvalidPartitions`. (As in Kafka, keys may map to other partitions afterwards.)
    pub(crate) fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        let topic = self.topic(name)?;
        let _admin = lock(&self.inner.admin);
        let current = read(&topic.partitions).len() as u32;
        if total <= current {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                current,
                requested: total,
            });
        }
        check_partition_count(name, total)?;
        let config = read(&topic.config).clone();
        let compacted = topic.compacted.load(Ordering::SeqCst);
        let parts = self.open_new_partitions(name, current..total, &config, compacted)?;
        let mut manifest = self.manifest();
        for t in manifest.topics.iter_mut().filter(|t| t.name == name) {
            t.partitions = total;
        }
        // As for a new topic: no checkpoint entry may precede the new partitions.
        if let Err(e) = self
            .write_checkpoints()
            .and_then(|()| self.write_manifest(&manifest))
        {
            remove_new_partitions(&parts);
            return Err(e);
        }
        write(&topic.partitions).extend(parts);
        self.metadata_changed();
        Ok(())
    }

    /// Deletes a topic and its data. Handles to its partitions fail from then on.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<()> {
        let topic = self.topic(name)?;
        let _admin = lock(&self.inner.admin);
        write(&self.inner.topics).remove(name);
        self.metadata_changed();
        // The partition directories are renamed first (Kafka's `-delete` suffix): the first
        // rename records the deletion durably, and an open that finds a topic's directory
        // renamed so finishes the deletion. A crash part-way never leaves a partition of no
        // topic, and never a topic missing a partition.
        let now = self.inner.clock.now_ms();
        let mut doomed = Vec::new();
        for p in read(&topic.partitions).iter() {
            p.mark_deleted();
            let to = unique_sibling(p.dir(), "delete", now);
            fs::rename(p.dir(), &to).map_err(Error::io(p.dir()))?;
            doomed.push(to);
        }
        fsync_dir(&self.inner.dir)?;
        self.write_manifest(&self.manifest())?;
        for d in doomed {
            fs::remove_dir_all(&d).map_err(Error::io(&d))?;
        }
        fsync_dir(&self.inner.dir)
    }

    /// Replaces a topic's config (validated first).
    pub(crate) fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        config.validate()?;
        let topic = self.topic(name)?;
        let _admin = lock(&self.inner.admin);
        let config = Arc::new(config);
        let mut manifest = self.manifest();
        for t in manifest.topics.iter_mut().filter(|t| t.name == name) {
            t.config = (*config).clone();
            t.compacted |= config.cleanup_policy.compact;
        }
        self.write_manifest(&manifest)?;
        topic
            .compacted
            .fetch_or(config.cleanup_policy.compact, Ordering::SeqCst);
        *write(&topic.config) = config.clone();
        for p in read(&topic.partitions).iter() {
            p.set_config(config.clone())?;
        }
        Ok(())
    }

    /// The names of all topics, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        read(&self.inner.topics).keys().cloned().collect()
    }

    /// A topic's config.
    pub(crate) fn topic_config(&self, name: &str) -> Result<TopicConfig> {
        Ok((**read(&self.topic(name)?.config)).clone())
    }

    /// A topic's partition count.
    pub(crate) fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(read(&self.topic(name)?.partitions).len() as u32)
    }

    /// A handle to one partition.
    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Partition> {
        read(&self.topic(topic)?.partitions)
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    fn all_partitions(&self) -> Vec<Partition> {
        read(&self.inner.topics)
            .values()
            .flat_map(|t| read(&t.partitions).clone())
            .collect()
    }

    /// Deletes segments that `retention.ms` and `retention.bytes` no longer keep, in every
    /// topic whose `cleanup.policy` includes `delete`. Returns the number deleted.
    pub(crate) fn enforce_retention(&self) -> Result<usize> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let partitions = self.all_partitions();
        // One partition's failure does not stop the others'; the first error is returned.
        let mut first_error = None;
        let mut moved = false;
        for p in &partitions {
            match p.advance_log_start_by_retention(now) {
                Ok(m) => moved |= m,
                Err(Error::UnknownTopicOrPartition { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // The new log starts are durable before any segment goes: a segment missing below a
        // checkpointed log start is retention's, and one missing above it is damage. (On a
        // full disk the checkpoints are overwritten in place, so retention still frees space.)
        if moved {
            self.write_checkpoints()?;
        }
        // Every partition, not only those that moved: segments a crash left below a log start
        // go too.
        let mut n = 0;
        for p in &partitions {
            match p.delete_segments_below_start() {
                Ok(k) => n += k,
                Err(Error::UnknownTopicOrPartition { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Compacts every partition of every `compact` topic. With `force`, even partitions below
    /// `min.cleanable.dirty.ratio`.
    pub(crate) fn compact(&self, force: bool) -> Result<CleanerStats> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let mut total = CleanerStats::default();
        // One partition's failure does not stop the others'; the first error is returned.
        let mut first_error = None;
        for p in self.all_partitions() {
            match p.compact(now, force) {
                Ok(s) => {
                    total.segments_cleaned += s.segments_cleaned;
                    total.records_read += s.records_read;
                    total.records_removed += s.records_removed;
                    total.bytes_before += s.bytes_before;
                    total.bytes_after += s.bytes_after;
                }
                Err(Error::UnknownTopicOrPartition { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Fsyncs every partition.
    pub(crate) fn flush(&self) -> Result<()> {
        self.check_open()?;
        for p in self.all_partitions() {
            match p.flush() {
                Ok(()) | Err(Error::UnknownTopicOrPartition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.write_checkpoints()
    }

    /// Closes the log cleanly: stops maintenance, fsyncs every partition, writes indexes and
    /// checkpoints, and leaves the clean-shutdown marker so the next open skips recovery.
    pub(crate) fn close(&self) -> Result<()> {
        self.inner.shutdown()
    }

    fn manifest(&self) -> Manifest {
        let topics = read(&self.inner.topics);
        Manifest {
            topics: topics
                .iter()
                .map(|(name, t)| ManifestTopic {
                    name: name.clone(),
                    partitions: read(&t.partitions).len() as u32,
                    config: (**read(&t.config)).clone(),
                    compacted: t.compacted.load(Ordering::SeqCst),
                })
                .collect(),
        }
    }

    fn write_manifest(&self, m: &Manifest) -> Result<()> {
        write_atomic(&self.inner.dir.join(Manifest::FILE), &m.encode(), true)
    }

    fn write_checkpoints(&self) -> Result<()> {
        self.inner.write_checkpoints(|p| p.checkpoints())
    }
}

impl Inner {
    fn write_checkpoints(
        &self,
        mut f: impl FnMut(&Partition) -> Result<Checkpoints>,
    ) -> Result<()> {
        let _serial = lock(&self.checkpoints);
        let mut rp = String::new();
        let mut cp = String::new();
        let mut ls = String::new();
        let mut n = 0;
        for t in read(&self.topics).values() {
            for p in read(&t.partitions).iter() {
                let c = match f(p) {
                    Ok(x) => x,
                    Err(Error::UnknownTopicOrPartition { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let (topic, id) = (p.topic(), p.id());
                rp.push_str(&format!("{topic} {id} {}\n", c.recovery_point));
                cp.push_str(&format!("{topic} {id} {}\n", c.cleaner_checkpoint));
                ls.push_str(&format!("{topic} {id} {}\n", c.log_start_offset));
                n += 1;
            }
        }
        write_checkpoint_file(
            &self.dir.join(LOG_START_CHECKPOINT),
            &seal_text(&format!("0\n{n}\n{ls}")),
        )?;
        write_checkpoint_file(
            &self.dir.join(RECOVERY_POINT_CHECKPOINT),
            &seal_text(&format!("0\n{n}\n{rp}")),
        )?;
        write_checkpoint_file(
            &self.dir.join(CLEANER_CHECKPOINT),
            &seal_text(&format!("0\n{n}\n{cp}")),
        )
    }

    fn shutdown(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(m) = lock(&self.maintenance).take() {
            {
                let (flag, cv) = &*m.stop;
                *lock(flag) = true;
                cv.notify_all();
            }
            if m.thread.thread().id() != std::thread::current().id() {
                let _ = m.thread.join();
            }
        }
        let _admin = lock(&self.admin);
        // Close every partition, then mark the log closed: no write can land after the
        // checkpoints and the clean-shutdown marker. A partition that fails to close (an
        // offline one) keeps its old recovery point, and the marker is not written, so the
        // next open validates what is on disk.
        let mut closing: HashMap<(String, u32), Checkpoints> = HashMap::new();
        let mut first_error = None;
        for t in read(&self.topics).values() {
            for p in read(&t.partitions).iter() {
                let key = (p.topic().to_string(), p.id());
                match p.close() {
                    Ok(cp) => {
                        closing.insert(key, cp);
                    }
                    Err(e) => {
                        if let Ok(cp) = p.checkpoints() {
                            closing.insert(key, cp);
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        self.closed.store(true, Ordering::SeqCst);
        self.write_checkpoints(|p| {
            Ok(closing
                .get(&(p.topic().to_string(), p.id()))
                .copied()
                .unwrap_or_default())
        })?;
        match first_error {
            Some(e) => Err(e),
            None => write_atomic(&self.dir.join(CLEAN_SHUTDOWN), b"", true),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the log failed; it will be recovered on open");
        }
    }
}

/// Refuses a partition count above [`MAX_PARTITIONS_PER_TOPIC`] before anything is created.
fn check_partition_count(topic: &str, requested: u32) -> Result<()> {
    if requested > MAX_PARTITIONS_PER_TOPIC {
        return Err(Error::TooManyPartitions {
            topic: topic.to_string(),
            requested,
            max: MAX_PARTITIONS_PER_TOPIC,
        });
    }
    Ok(())
}

/// Removes the directories of partitions created for a topic change that failed before its
/// commit point. Best effort: what remains holds no records, and the next open removes it.
fn remove_new_partitions(parts: &[Partition]) {
    for p in parts {
        p.mark_deleted();
        if let Err(e) = fs::remove_dir_all(p.dir()) {
            tracing::warn!(dir = ?p.dir(), error = %e, "cannot remove a new partition's directory");
        }
    }
}

/// Whether a partition directory holds any record bytes (a non-empty segment file, or a
/// compaction's committed swap). An error reading it counts as yes: such a directory is kept.
pub(crate) fn holds_records(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return true;
    };
    entries.into_iter().any(|e| match e {
        Err(_) => true,
        Ok(e) => {
            let name = e.file_name();
            let name = name.to_string_lossy();
            (name.ends_with(".log") || name.ends_with(".swap"))
                && e.metadata().map_or(true, |m| m.len() > 0)
        }
    })
}

/// `<dir>.<unique id>-<suffix>`, Kafka's naming for a partition directory being deleted
/// (`delete`) or set aside (`stray`). The name no longer parses as a partition directory.
fn unique_sibling(dir: &Path, suffix: &str, now_ms: i64) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let parent = dir.parent().unwrap_or(dir);
    (0u32..)
        .map(|n| parent.join(format!("{name}.{now_ms:x}{n:x}-{suffix}")))
        .find(|p| !p.exists())
        .expect("some name is free")
}

/// The partition directory name that `name` renamed for deletion ([`unique_sibling`]), if it
/// is such a name.
pub(crate) fn deleted_dir_partition(name: &str) -> Option<&str> {
    let (partition_dir, id) = name.strip_suffix("-delete")?.rsplit_once('.')?;
    (parse_partition_dir(partition_dir).is_some()
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(partition_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, Record};

    /// On a full disk every checkpoint, index and manifest write fails. The close reports it
    /// (and leaves no clean-shutdown marker), and the log still opens, recovers and serves
    /// every record: nothing it needs to read is a file it must write first.
    #[test]
    fn a_full_disk_fails_the_close_but_never_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::builder(dir.path())
            .background_maintenance(false)
            .open()
            .unwrap();
        log.create_topic("t", 2, TopicConfig::default().segment_bytes(200))
            .unwrap();
        let p = log.partition("t", 0).unwrap();
        for i in 0..20u8 {
            p.append(&[Record::new(None, Some(&[i; 40]))]).unwrap();
        }
        assert!(p.segment_count().unwrap() > 2);
        crate::storage::fs::DISK_FULL.with(|f| f.set(true));
        assert!(log.close().is_err());
        assert!(!dir.path().join(CLEAN_SHUTDOWN).exists());
        for _ in 0..2 {
            let log = Log::builder(dir.path())
                .background_maintenance(false)
                .open()
                .unwrap();
            let p = log.partition("t", 0).unwrap();
            let mut values = Vec::new();
            while (values.len() as i64) < p.log_end_offset().unwrap() {
                let fetch = p.read(values.len() as i64, 1 << 20).unwrap();
                values.extend(fetch.records().map(|r| r.value.unwrap()[0]));
            }
            assert_eq!(values, (0..20).collect::<Vec<u8>>());
            assert!(log.close().is_err());
        }
        // No temporary file is left behind by the failed writes.
        let tmp = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(tmp, 0);
        crate::storage::fs::DISK_FULL.with(|f| f.set(false));
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.partition("t", 0).unwrap().log_end_offset().unwrap(), 20);
        log.close().unwrap();
    }

    /// Retention is the way out of a full disk: with no room for a temporary file, the log
    /// start checkpoint is overwritten in place and the expired segments are deleted; the
    /// next open knows where the log starts (nothing is reported lost).
    #[test]
    fn retention_frees_space_on_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::ManualClock::new(1_700_000_000_000);
        let open = || {
            Log::builder(dir.path())
                .clock(clock.clone())
                .background_maintenance(false)
                .open()
                .unwrap()
        };
        let log = open();
        log.create_topic(
            "t",
            1,
            TopicConfig::default()
                .segment_bytes(200)
                .retention_ms(1_000),
        )
        .unwrap();
        let p = log.partition("t", 0).unwrap();
        for i in 0..20u8 {
            p.append(&[Record::new(None, Some(&[i; 40]))]).unwrap();
        }
        clock.advance_ms(5_000);
        p.append(&[Record::new(None, Some(b"fresh"))]).unwrap();
        let segments = p.segment_count().unwrap();
        crate::storage::fs::DISK_FULL.with(|f| f.set(true));
        assert!(log.enforce_retention().unwrap() > 0);
        assert!(p.segment_count().unwrap() < segments);
        let start = p.log_start_offset().unwrap();
        assert!(start > 0);
        crate::storage::fs::DISK_FULL.with(|f| f.set(false));
        log.close().unwrap();
        let log = open();
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.log_start_offset().unwrap(), start);
        assert!(p.lost_ranges().unwrap().is_empty());
        log.close().unwrap();
    }
}
