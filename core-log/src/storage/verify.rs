//! Checking a log directory without changing it: Kafka's `DumpLogSegments --deep-iteration`
//! over every segment, plus every metadata file.
//!
//! ```text
//!  topics.json ── checksum, topics ──┐
//!  checkpoints, producer id block ───┤
//!  each <topic>-<partition>/         ├──> VerifyReport { findings, counts }
//!    every batch of every segment ───┤     LostOffsets, Garbage, TornTail: what the next
//!    (framing, CRC, records,         │     open keeps, reports and truncates
//!     offsets against the previous)  │     RebuiltFile: what it rebuilds
//!    indexes, txn indexes, snapshots ┘     StrayDirectory, MissingPartition, Manifest
//! ```
//!
//! The judgement is the one recovery makes (see `partition::recovery`), so the report says
//! what the next open will do: which offsets are lost and reported, which unflushed tail is
//! truncated, which files are rebuilt. Unlike an open, it reads every byte of every segment.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::partition::index::{OffsetIndex, TimeIndex};
use crate::storage::partition::producer_state;
use crate::storage::partition::recovery::{SegmentSpan, missing_offsets};
use crate::storage::partition::segment::{self, ScanRules};
use crate::storage::partition::swap;
use crate::storage::partition::txn_index::{self, TxnIndex};
use crate::storage::topic::{Manifest, parse_partition_dir, partition_dir_name};

/// What [`verify`] found in a log directory.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Every problem found, partition by partition.
    pub findings: Vec<Finding>,
    /// Partition directories checked.
    pub partitions: usize,
    /// Segment files checked.
    pub segments: usize,
    /// Valid batches read, every one of them decoded in full.
    pub batches: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
}

impl VerifyReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The offset ranges lost to damage, per topic and partition.
    pub fn lost_offsets(&self) -> Vec<(String, u32, std::ops::Range<i64>)> {
        self.findings
            .iter()
            .filter_map(|f| match f {
                Finding::LostOffsets {
                    topic,
                    partition,
                    first_offset,
                    end_offset,
                    ..
                } => Some((topic.clone(), *partition, *first_offset..*end_offset)),
                _ => None,
            })
            .collect()
    }
}

/// One problem [`verify`] found, and what the next open does about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// `topics.json` cannot be trusted: `Log::open` fails with `Corrupt`.
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Offsets whose bytes are damaged or missing. The open keeps everything else; reads of
    /// these offsets fail with `CorruptRecord`.
    LostOffsets {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The first offset lost.
        first_offset: i64,
        /// The offset after the last one lost.
        end_offset: i64,
        /// The segment holding the damage (for a gap, the segment after it).
        file: PathBuf,
        /// The byte position of the damage.
        position: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// Bytes that are not a batch but cost no offsets (garbage between batches, or after the
    /// last batch of a segment whose successor continues its offsets). Never served.
    Garbage {
        /// The segment.
        file: PathBuf,
        /// The first bad byte.
        position: u64,
        /// Where valid batches resume (or the file ends).
        end: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// Invalid bytes past the recovery point: a write a crash tore before it was flushed (or,
    /// after a clean close, bytes after the log end). The open truncates them, and any later
    /// segment.
    TornTail {
        /// The segment.
        file: PathBuf,
        /// Where the truncation happens.
        position: u64,
        /// The first offset the truncation gives back.
        from_offset: i64,
        /// Which check failed.
        reason: &'static str,
    },
    /// A file that fails its checks and that the open rebuilds or does without: an index, a
    /// time index, an aborted-transaction index, a producer state snapshot, a checkpoint, the
    /// producer id block, an interrupted compaction's files.
    RebuiltFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A directory named like a partition that no topic has. The open leaves it in place
    /// (or removes it if it holds no records).
    StrayDirectory {
        /// The directory.
        path: PathBuf,
        /// Whether any segment in it holds bytes.
        holds_records: bool,
    },
    /// A topic whose deletion a crash interrupted (a partition directory renamed with Kafka's
    /// `-delete` suffix): the open finishes the deletion.
    InterruptedDeletion {
        /// The topic.
        topic: String,
    },
    /// A partition the manifest names whose directory is missing: its records are lost, and
    /// the open recreates it empty from the checkpointed recovery point.
    MissingPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The missing directory.
        path: PathBuf,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Manifest { path, reason } => {
                write!(f, "{}: {reason}; the log does not open", path.display())
            }
            Finding::LostOffsets {
                topic,
                partition,
                first_offset,
                end_offset,
                file,
                position,
                reason,
            } => write!(
                f,
                "{topic}-{partition}: offsets {first_offset}..{end_offset} lost: {reason} in {} at byte {position}",
                file.display()
            ),
            Finding::Garbage {
                file,
                position,
                end,
                reason,
            } => write!(
                f,
                "{}: bytes {position}..{end} are not a batch ({reason}); no offsets lost",
                file.display()
            ),
            Finding::TornTail {
                file,
                position,
                from_offset,
                reason,
            } => write!(
                f,
                "{}: unflushed tail from byte {position} (offset {from_offset}) is torn ({reason}); the next open truncates it",
                file.display()
            ),
            Finding::RebuiltFile { path, reason } => {
                write!(f, "{}: {reason}; rebuilt at open", path.display())
            }
            Finding::StrayDirectory {
                path,
                holds_records,
            } => write!(
                f,
                "{}: a partition directory of no topic ({}); left in place",
                path.display(),
                if *holds_records {
                    "holds records"
                } else {
                    "empty"
                }
            ),
            Finding::InterruptedDeletion { topic } => {
                write!(
                    f,
                    "{topic}: its deletion was interrupted; the open finishes it"
                )
            }
            Finding::MissingPartition {
                topic,
                partition,
                path,
            } => write!(
                f,
                "{topic}-{partition}: directory {} is missing; its records are lost",
                path.display()
            ),
        }
    }
}

/// Checks the log directory `dir` without changing anything: every byte of every segment
/// (framing, CRC, every record, offsets against the batch before), every index, snapshot,
/// checkpoint and the manifest. The report names every damaged range and what the next open
/// does with it.
///
/// Run it on a log that no process has open (it takes the directory's lock, and fails with
/// `LogDirLocked` otherwise), or on a copy.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use core_log::{Log, Record, TopicConfig, verify};
/// let log = Log::open(dir.path()).unwrap();
/// log.create_topic("likes", 2, TopicConfig::default()).unwrap();
/// log.partition("likes", 0).unwrap().append(&[Record::new(None, Some(b"+1"))]).unwrap();
/// log.close().unwrap();
/// let report = verify(dir.path()).unwrap();
/// assert!(report.is_clean(), "{:?}", report.findings);
/// assert_eq!((report.partitions, report.batches), (2, 1));
/// ```
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let _lock = lock_dir(dir)?;
    let mut report = VerifyReport::default();

    let manifest_path = dir.join(Manifest::FILE);
    let manifest = match std::fs::read(&manifest_path) {
        Ok(bytes) => match Manifest::decode(&bytes, &manifest_path) {
            Ok((m, _)) => Some(m),
            Err(e) => {
                report.findings.push(Finding::Manifest {
                    path: manifest_path.clone(),
                    reason: e.to_string(),
                });
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Manifest::default()),
        Err(e) => return Err(Error::io(&manifest_path)(e)),
    };
    let clean = dir
        .join(crate::storage::log_manager::CLEAN_SHUTDOWN)
        .exists();
    let mut read_checkpoint = |name: &str| {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).ok()?;
        let map = crate::storage::checkpoint::parse_checkpoint(&text);
        if map.is_none() {
            report.findings.push(Finding::RebuiltFile {
                path,
                reason: "checkpoint fails its checksum or format",
            });
        }
        map
    };
    let recovery_points =
        read_checkpoint(crate::storage::checkpoint::RECOVERY_POINT_CHECKPOINT).unwrap_or_default();
    let _ = read_checkpoint(crate::storage::checkpoint::CLEANER_CHECKPOINT);
    let log_starts =
        read_checkpoint(crate::storage::checkpoint::LOG_START_CHECKPOINT).unwrap_or_default();
    let id_block = dir.join(crate::storage::checkpoint::PRODUCER_ID_BLOCK);
    if let Ok(text) = std::fs::read_to_string(&id_block)
        && crate::storage::checkpoint::parse_producer_id_block(&text).is_err()
    {
        report.findings.push(Finding::RebuiltFile {
            path: id_block,
            reason: "producer id block fails its checksum (ids move on to a fresh range)",
        });
    }

    let mut named = BTreeMap::new();
    if let Some(m) = &manifest {
        for t in &m.topics {
            for p in 0..t.partitions {
                named.insert(
                    partition_dir_name(&t.name, p),
                    (t.name.clone(), p, t.compacted),
                );
            }
        }
    }
    let mut renamed_for_deletion = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let name = entry.map_err(Error::io(dir))?.file_name();
        if let Some(pdir) =
            crate::storage::log_manager::deleted_dir_partition(&name.to_string_lossy())
        {
            renamed_for_deletion.insert(pdir.to_string());
        }
    }
    let deleting: std::collections::BTreeSet<String> = named
        .iter()
        .filter(|(name, _)| renamed_for_deletion.contains(*name) && !dir.join(name).exists())
        .map(|(_, (topic, _, _))| topic.clone())
        .collect();
    for topic in &deleting {
        report.findings.push(Finding::InterruptedDeletion {
            topic: topic.clone(),
        });
    }
    for (name, (topic, partition, compacted)) in &named {
        if deleting.contains(topic) {
            continue;
        }
        let pdir = dir.join(name);
        if !pdir.is_dir() {
            report.findings.push(Finding::MissingPartition {
                topic: topic.clone(),
                partition: *partition,
                path: pdir,
            });
            continue;
        }
        let rp = recovery_points.get(&(topic.clone(), *partition)).copied();
        let flushed_below = match (clean, rp) {
            (_, Some(rp)) => rp,
            (true, None) => i64::MAX,
            (false, None) => 0,
        };
        let p = PartitionCheck {
            topic,
            partition: *partition,
            compacted: *compacted,
            flushed_below,
            known_end: rp.unwrap_or(0),
            recovery_point: rp,
            log_start: log_starts.get(&(topic.clone(), *partition)).copied(),
        };
        verify_partition(&pdir, &p, &mut report)?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .collect::<std::io::Result<_>>()
        .map_err(Error::io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() && parse_partition_dir(&name).is_some() && !named.contains_key(&name) {
            // Without a readable manifest every partition directory is unaccounted for.
            report.findings.push(Finding::StrayDirectory {
                holds_records: crate::storage::log_manager::holds_records(&path),
                path,
            });
        }
    }
    Ok(report)
}

/// What recovery knows about one partition.
struct PartitionCheck<'a> {
    topic: &'a str,
    partition: u32,
    compacted: bool,
    flushed_below: i64,
    known_end: i64,
    recovery_point: Option<i64>,
    log_start: Option<i64>,
}

fn verify_partition(pdir: &Path, p: &PartitionCheck<'_>, report: &mut VerifyReport) -> Result<()> {
    report.partitions += 1;
    let mut logs = BTreeMap::new();
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(pdir).map_err(Error::io(pdir))? {
        let entry = entry.map_err(Error::io(pdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = segment::parse_base_offset(&name, "log") {
            logs.insert(base, entry.path());
        } else if let Some((base, end)) = swap::parse_swap_name(&name) {
            swaps.push((base, end, entry.path()));
        } else if name.ends_with(".cleaned") || swap::is_txn_swap(&name) {
            report.findings.push(Finding::RebuiltFile {
                path: entry.path(),
                reason: "left by an interrupted compaction; removed at open",
            });
        }
    }
    // An interrupted compaction whose swap committed: the open completes it, so the swap is
    // what the partition holds in place of the segments it replaces.
    for (base, end, path) in swaps {
        report.findings.push(Finding::RebuiltFile {
            path: path.clone(),
            reason: "an interrupted compaction's committed swap; completed at open",
        });
        logs.retain(|b, _| !(base..end).contains(b));
        logs.insert(base, path);
    }
    let bases: Vec<i64> = logs.keys().copied().collect();
    // (base offset, next offset, valid bytes) of each segment scanned, for the gaps around them.
    let mut spans = Vec::new();
    let mut torn = false;
    for (i, (&base, path)) in logs.iter().enumerate() {
        report.segments += 1;
        let upper = bases.get(i + 1).copied();
        let file = Arc::new(File::open(path).map_err(Error::io(path))?);
        let len = file.metadata().map_err(Error::io(path))?.len();
        let rules = ScanRules {
            flushed_below: p.flushed_below,
            known_end: p.known_end,
            contiguous: !p.compacted,
            upper,
        };
        let mut positions = BTreeMap::new();
        let (mut next_offset, mut size) = (base, 0);
        let outcome = segment::scan_batches(
            &file,
            path,
            base,
            0,
            base,
            !p.compacted,
            len,
            &rules,
            |position, meta| {
                positions.insert(position, meta.base_offset);
                next_offset = meta.next_offset;
                size = position + u64::from(meta.size);
                report.batches += 1;
                report.bytes += u64::from(meta.size);
            },
        )?;
        for d in &outcome.damage {
            next_offset = next_offset.max(d.end_offset);
            report.findings.push(if d.first_offset < d.end_offset {
                Finding::LostOffsets {
                    topic: p.topic.to_string(),
                    partition: p.partition,
                    first_offset: d.first_offset,
                    end_offset: d.end_offset,
                    file: path.clone(),
                    position: d.position,
                    reason: d.reason,
                }
            } else {
                Finding::Garbage {
                    file: path.clone(),
                    position: d.position,
                    end: d.end,
                    reason: d.reason,
                }
            });
        }
        if let Some(t) = &outcome.torn {
            report.findings.push(Finding::TornTail {
                file: path.clone(),
                position: t.position,
                from_offset: next_offset,
                reason: t.reason,
            });
        }
        verify_indexes(
            pdir,
            base,
            len,
            &positions,
            next_offset,
            i + 1 < bases.len(),
            report,
        );
        spans.push((base, next_offset, size));
        if outcome.torn.is_some() {
            // Recovery truncates here and drops every later segment.
            torn = true;
            break;
        }
    }
    let spans: Vec<SegmentSpan<'_>> = spans
        .iter()
        .map(|&(base_offset, next_offset, size)| SegmentSpan {
            base_offset,
            next_offset,
            size,
            path: &logs[&base_offset],
        })
        .collect();
    let recovery_point = p.recovery_point.filter(|_| !torn);
    for l in missing_offsets(&spans, p.log_start, recovery_point, p.compacted) {
        report.findings.push(Finding::LostOffsets {
            topic: p.topic.to_string(),
            partition: p.partition,
            first_offset: l.first_offset,
            end_offset: l.end_offset,
            file: l.file,
            position: l.position,
            reason: l.reason,
        });
    }
    verify_snapshots(pdir, report)
}

fn verify_snapshots(pdir: &Path, report: &mut VerifyReport) -> Result<()> {
    for offset in producer_state::list_snapshots(pdir)? {
        let path = pdir.join(segment::file_name(offset, producer_state::SNAPSHOT_EXT));
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        if let Err(reason) = producer_state::ProducerStateManager::decode(&bytes, offset) {
            report.findings.push(Finding::RebuiltFile { path, reason });
        }
    }
    Ok(())
}

/// Checks a segment's index files against the batches found at `positions` (position -> base
/// offset). Missing index files are normal for the active segment and are rebuilt otherwise.
fn verify_indexes(
    pdir: &Path,
    base: i64,
    len: u64,
    positions: &BTreeMap<u64, i64>,
    next_offset: i64,
    sealed: bool,
    report: &mut VerifyReport,
) {
    let index_path = pdir.join(segment::file_name(base, "index"));
    match std::fs::read(&index_path) {
        Ok(bytes) => match OffsetIndex::decode(&bytes, len) {
            None => report.findings.push(Finding::RebuiltFile {
                path: index_path,
                reason: "offset index fails its checksum or order",
            }),
            Some(index) => {
                let points_at_batches = index.entries().iter().all(|&(rel, pos)| {
                    positions.get(&u64::from(pos)) == Some(&(base + i64::from(rel)))
                });
                if !points_at_batches {
                    report.findings.push(Finding::RebuiltFile {
                        path: index_path,
                        reason: "offset index entry not at the batch it names",
                    });
                }
            }
        },
        Err(_) if sealed => report.findings.push(Finding::RebuiltFile {
            path: index_path,
            reason: "offset index missing",
        }),
        Err(_) => {}
    }
    let time_path = pdir.join(segment::file_name(base, "timeindex"));
    match std::fs::read(&time_path) {
        Ok(bytes) if TimeIndex::decode(&bytes).is_none() => {
            report.findings.push(Finding::RebuiltFile {
                path: time_path,
                reason: "time index fails its checksum or order",
            })
        }
        Ok(_) => {}
        Err(_) if sealed => report.findings.push(Finding::RebuiltFile {
            path: time_path,
            reason: "time index missing",
        }),
        Err(_) => {}
    }
    let txn_path = txn_index::path(pdir, base);
    match std::fs::read(&txn_path) {
        Ok(bytes) => {
            if let Err(reason) = TxnIndex::decode(&bytes, base, next_offset) {
                report.findings.push(Finding::RebuiltFile {
                    path: txn_path,
                    reason,
                });
            }
        }
        Err(_) if sealed => report.findings.push(Finding::RebuiltFile {
            path: txn_path,
            reason: "aborted-transaction index missing",
        }),
        Err(_) => {}
    }
}

/// Takes the directory's lock if the directory has one (a log was opened there), so that no
/// process changes the files while they are read.
fn lock_dir(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(".lock");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                return Err(Error::io(dir)(e));
            }
            return Ok(None);
        }
        Err(e) => return Err(Error::io(&path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::LogDirLocked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path)(e)),
    }
}
