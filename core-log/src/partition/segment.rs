//! One segment: a file of record batches named by its base offset, with its sparse indexes.
//!
//! A partition's segments are `00000000000000000000.log`, `00000000000000004096.log`, ...
//! (the 20-digit base offset, as Kafka names them). Only the last, active segment is appended
//! to; the others are sealed and immutable until retention deletes them or compaction
//! replaces them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{OffsetIndex, TimeIndex};
use super::txn_index::{self, TxnIndex};
use crate::codec::{self, LOG_OVERHEAD, NO_TIMESTAMP, RecordBatch};
use crate::error::{Error, Result};
use crate::fs::{remove_if_exists, write_atomic};

/// The largest batch the log reads back from disk. A length field above it (or above what the
/// file still holds) is corruption, and is never used to size a buffer.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;

/// Bytes read at a time when scanning a segment sequentially.
const SCAN_CHUNK: usize = 256 << 10;

/// The files of a segment, named by its base offset: the data, then its indexes.
pub(crate) const SEGMENT_FILE_EXTS: [&str; 4] =
    ["log", "index", "timeindex", txn_index::TXN_INDEX_EXT];

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_base_offset(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Summary of one batch, all a segment needs to maintain its indexes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchMeta {
    pub base_offset: i64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub size: u32,
}

impl BatchMeta {
    pub(crate) fn of(b: &RecordBatch<'_>) -> Self {
        BatchMeta {
            base_offset: b.base_offset(),
            next_offset: b.next_offset(),
            max_timestamp: b.max_timestamp(),
            size: b.size() as u32,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<File>,
    pub path: PathBuf,
    /// Bytes of valid batches; readers never look past it.
    pub size: u64,
    /// The offset after the last batch (`base_offset` when empty).
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// Clock time of the first append to the segment, or on open its first batch's timestamp
    /// (`segment.ms`).
    pub roll_timer_start: Option<i64>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes from here to `size` have had their CRC checked by this process: appended
    /// batches are validated in memory before they are written, and recovery validates what
    /// it scans. Only a segment trusted at open has an unchecked prefix, which reads check.
    pub verified_from: u64,
    /// The transactions aborted by markers in this segment. Filled by appends of markers, by
    /// recovery (loaded or rebuilt) and by compaction (carried over); empty until then.
    pub txn_index: TxnIndex,
    offset_of_max_timestamp: i64,
    bytes_since_index_entry: u64,
    index_interval: u64,
}

/// How a scan of a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte belonged to a valid batch.
    Clean,
    /// The bytes from this position on are not a valid batch.
    Invalid { position: u64, reason: &'static str },
}

impl Segment {
    pub(crate) fn create(dir: &Path, base_offset: i64, index_interval: u32) -> Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        Ok(Segment::empty(base_offset, file, path, index_interval))
    }

    fn empty(base_offset: i64, file: File, path: PathBuf, index_interval: u32) -> Segment {
        Segment {
            base_offset,
            file: Arc::new(file),
            path,
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            roll_timer_start: None,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            verified_from: 0,
            txn_index: TxnIndex::default(),
            offset_of_max_timestamp: base_offset,
            bytes_since_index_entry: 0,
            index_interval: u64::from(index_interval),
        }
    }

    /// Opens an existing segment file.
    ///
    /// A `trusted` segment (wholly below the recovery point: fsynced, or closed cleanly) loads
    /// its index files and checks only the batches after the last index entry. Any other
    /// segment, or one whose index files fail their checks or do not lead to valid batches
    /// to the end of the file, is scanned in full: every batch's framing and CRC, with the
    /// indexes rebuilt. Either way the returned [`ScanEnd`] says where the valid bytes end;
    /// the caller decides whether to truncate.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        trusted: bool,
    ) -> Result<(Segment, ScanEnd)> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let file_len = file.metadata().map_err(Error::io(&path))?.len();
        let mut seg = Segment::empty(base_offset, file, path, index_interval);
        let mut start = 0u64;
        if trusted && let Some((index, time_index)) = seg.load_indexes(dir, file_len) {
            start = u64::from(index.last_position());
            if let Some((ts, rel)) = time_index.last() {
                seg.max_timestamp = ts;
                seg.offset_of_max_timestamp = base_offset + i64::from(rel);
            }
            seg.index = index;
            seg.time_index = time_index;
            seg.size = start;
            seg.verified_from = start;
        }
        let end = seg.scan_from(start, file_len)?;
        if start > 0 && end != ScanEnd::Clean {
            // No batch where the index says, or a bad tail: the index may be what is wrong.
            // Scan the whole segment before the caller cuts anything.
            return Segment::open(dir, base_offset, index_interval, false);
        }
        Ok((seg, end))
    }

    fn load_indexes(&self, dir: &Path, file_len: u64) -> Option<(OffsetIndex, TimeIndex)> {
        let index = std::fs::read(dir.join(file_name(self.base_offset, "index"))).ok()?;
        let time = std::fs::read(dir.join(file_name(self.base_offset, "timeindex"))).ok()?;
        let index = OffsetIndex::decode(&index, file_len)?;
        let time = TimeIndex::decode(&time)?;
        Some((index, time))
    }

    /// Reads batches from `start` to `file_len`, checking each, and extends the segment's
    /// in-memory state (size, next offset, indexes) over the valid ones.
    fn scan_from(&mut self, start: u64, file_len: u64) -> Result<ScanEnd> {
        let mut scanner = Scanner::new(self.file.clone(), &self.path, start, file_len);
        let mut expected_min_offset = self.base_offset;
        loop {
            let position = scanner.position();
            let batch = match scanner.next_batch() {
                Ok(None) => return Ok(ScanEnd::Clean),
                Ok(Some(b)) => b,
                Err(ScanError::Io(e)) => return Err(e),
                Err(ScanError::Invalid(reason)) => {
                    return Ok(ScanEnd::Invalid { position, reason });
                }
            };
            if let Err(e) = batch.validate() {
                return Ok(ScanEnd::Invalid {
                    position,
                    reason: e.0,
                });
            }
            if batch.base_offset() < expected_min_offset
                || batch.last_offset() - self.base_offset > i64::from(i32::MAX)
            {
                return Ok(ScanEnd::Invalid {
                    position,
                    reason: "batch offsets out of order for this segment",
                });
            }
            expected_min_offset = batch.next_offset();
            let meta = BatchMeta::of(&batch);
            self.observe(position, &meta);
        }
    }

    /// Records a batch written (or found) at `position`: size, offsets, timestamps, indexes.
    pub(crate) fn observe(&mut self, position: u64, b: &BatchMeta) {
        let relative = (b.base_offset - self.base_offset) as u32;
        if self.bytes_since_index_entry > self.index_interval {
            self.index.push(relative, position as u32);
            self.time_index.push(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += u64::from(b.size);
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        self.next_offset = b.next_offset;
        self.size = position + u64::from(b.size);
    }

    /// Writes `bytes` (whole batches already assigned their offsets) at the end of the file.
    /// The caller updates the in-memory state with [`Segment::observe`] after success.
    pub(crate) fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.size)
    }

    pub(crate) fn fsync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the file back to `size` bytes, dropping a torn or corrupt tail.
    pub(crate) fn truncate_file(&mut self, size: u64) -> Result<()> {
        self.file.set_len(size).map_err(Error::io(&self.path))?;
        self.file.sync_all().map_err(Error::io(&self.path))?;
        self.size = size;
        Ok(())
    }

    /// Seals the segment's time index with its largest timestamp, then writes both indexes
    /// (atomically; they are checked on load and rebuilt if stale).
    pub(crate) fn save_indexes(&mut self, dir: &Path, durable: bool) -> Result<()> {
        if self.max_timestamp != NO_TIMESTAMP {
            self.time_index.push(
                self.max_timestamp,
                (self.offset_of_max_timestamp - self.base_offset) as u32,
            );
        }
        write_atomic(
            &dir.join(file_name(self.base_offset, "index")),
            &self.index.encode(),
            durable,
        )?;
        write_atomic(
            &dir.join(file_name(self.base_offset, "timeindex")),
            &self.time_index.encode(),
            durable,
        )
    }

    /// Writes the aborted-transaction index (or removes its file when empty). A non-empty index
    /// is always fsynced, whatever `durable` says: unlike the other indexes it has no checksum,
    /// so a trusted segment must never find it lost (see `txn_index`). Aborts are rare, so this
    /// costs little.
    pub(crate) fn save_txn_index(&self, dir: &Path, durable: bool) -> Result<()> {
        self.txn_index
            .save(dir, self.base_offset, durable || !self.txn_index.is_empty())
    }

    /// Removes the segment's files. Readers holding the file handle finish their reads.
    pub(crate) fn delete_files(&self, dir: &Path) -> Result<()> {
        for ext in SEGMENT_FILE_EXTS {
            remove_if_exists(&dir.join(file_name(self.base_offset, ext)))?;
        }
        Ok(())
    }

    /// Where to start scanning for `offset`.
    pub(crate) fn lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        u64::from(self.index.lookup(rel))
    }

    /// Where to start scanning for the first record with a timestamp at or after `target`.
    pub(crate) fn lookup_time(&self, target: i64) -> u64 {
        let rel = self.time_index.lookup(target);
        u64::from(self.index.lookup(rel))
    }
}

pub(crate) enum ScanError {
    Io(Error),
    Invalid(&'static str),
}

/// Sequential reader of the batches in `[start, end)` of a segment file, in large chunks.
/// Checks framing (lengths against what the file holds and [`MAX_BATCH_BYTES`], magic) but not
/// CRCs; callers validate what they use.
pub(crate) struct Scanner {
    file: Arc<File>,
    path: PathBuf,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Read cursor within `buf`.
    cursor: usize,
    end: u64,
}

impl Scanner {
    pub(crate) fn new(file: Arc<File>, path: &Path, start: u64, end: u64) -> Scanner {
        Scanner {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            buf_pos: start,
            cursor: 0,
            end,
        }
    }

    pub(crate) fn position(&self) -> u64 {
        self.buf_pos + self.cursor as u64
    }

    /// Ensures `want` bytes from the cursor are buffered (`want` must not pass `end`).
    fn fill(&mut self, want: usize) -> std::result::Result<(), ScanError> {
        if self.buf.len() - self.cursor >= want {
            return Ok(());
        }
        self.buf.drain(..self.cursor);
        self.buf_pos += self.cursor as u64;
        self.cursor = 0;
        let have = self.buf.len();
        let remaining_in_file = (self.end - self.buf_pos) as usize;
        let target = want.max(SCAN_CHUNK).min(remaining_in_file);
        self.buf.resize(target, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], self.buf_pos + have as u64)
            .map_err(|e| ScanError::Io(Error::io(&self.path)(e)))
    }

    /// The next batch, `None` at the end, or why the bytes at the cursor are not a batch.
    pub(crate) fn next_batch(&mut self) -> std::result::Result<Option<RecordBatch<'_>>, ScanError> {
        let remaining = self.end - self.position();
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < LOG_OVERHEAD as u64 {
            return Err(ScanError::Invalid("partial batch header at the end"));
        }
        self.fill(LOG_OVERHEAD)?;
        let (_, size) = codec::peek_header(&self.buf[self.cursor..])
            .map_err(|e| ScanError::Invalid(e.0))?
            .ok_or(ScanError::Invalid("partial batch header at the end"))?;
        if size > MAX_BATCH_BYTES {
            return Err(ScanError::Invalid(
                "batch length above the largest batch allowed",
            ));
        }
        if size as u64 > remaining {
            return Err(ScanError::Invalid(
                "batch extends past the end of the segment",
            ));
        }
        self.fill(size)?;
        let start = self.cursor;
        self.cursor += size;
        RecordBatch::new(&self.buf[start..start + size])
            .map(Some)
            .map_err(|e| ScanError::Invalid(e.0))
    }
}
