//! Model-based property test: random operations run against a real [`Log`] and against a plain
//! in-memory model of what Kafka's storage semantics promise; every answer the log gives is
//! compared with the model's.
//!
//! The model of a partition is the list of records it holds (offset, key, value, timestamp, and
//! the base offset of the batch each was appended in), its log start offset and its log end
//! offset. Offsets are dense: record `i` of the list has offset `log_start + i`.
//!
//! Retention deletes whole segments, and the model does not know where segments begin, so it
//! cannot say which records retention removes. After `enforce_retention` the test takes the new
//! log start from the log, checks it against Kafka's retention rules (with the segment files on
//! disk for the segment boundaries and the model for their timestamps), and then drops the
//! records below it from the model. Everything at or above the log start must still be exactly
//! what the model holds.
//!
//! A crash is simulated inside the process: a clean close, then the clean-shutdown marker and
//! the recovery-point checkpoint are deleted, so the next open re-validates every segment.
//! Optionally the crash also tears the last batch of a partition (its segment file is cut at a
//! random byte inside that batch), which the model mirrors by forgetting that batch.
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::fs::{self, OpenOptions};
use std::path::PathBuf;

use core_log::codec::RecordBatch;
use core_log::{Clock, Error, Log, ManualClock, Partition, Record, TopicConfig};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use tempfile::TempDir;

const TOPIC: &str = "model";
/// The clock's start. Records are stamped a few milliseconds before the clock at append.
const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// One record as the model remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelRecord {
    offset: i64,
    /// Base offset of the batch the record was appended in.
    batch_base: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// What one partition must hold.
#[derive(Debug, Default)]
struct ModelPartition {
    /// Every record at or above `log_start`, in offset order, offsets dense.
    records: Vec<ModelRecord>,
    log_start: i64,
    log_end: i64,
}

impl ModelPartition {
    /// Appends one batch; returns its base offset.
    fn append(&mut self, batch: &[RecordSpec], now: i64) -> i64 {
        let base = self.log_end;
        for (i, r) in batch.iter().enumerate() {
            self.records.push(ModelRecord {
                offset: base + i as i64,
                batch_base: base,
                timestamp: now - r.age_ms,
                key: r.key.clone(),
                value: r.value.clone(),
            });
        }
        self.log_end = base + batch.len() as i64;
        base
    }

    /// The record at `offset`, which must be in `[log_start, log_end)`.
    fn get(&self, offset: i64) -> &ModelRecord {
        let r = &self.records[(offset - self.log_start) as usize];
        assert_eq!(r.offset, offset, "the model's offsets are dense");
        r
    }

    /// The records in `[from, to)`.
    fn range(&self, from: i64, to: i64) -> impl Iterator<Item = &ModelRecord> {
        self.records
            .iter()
            .filter(move |r| r.offset >= from && r.offset < to)
    }

    /// Kafka's `offsetsForTimes`: the first record, in offset order, stamped at or after `ts`.
    fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        self.records
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| (r.offset, r.timestamp))
    }

    /// Retention moved the log start: forget what lies below it.
    fn advance_log_start(&mut self, start: i64) {
        assert!(start >= self.log_start && start <= self.log_end);
        self.records.retain(|r| r.offset >= start);
        self.log_start = start;
    }

    /// Base offset of the last batch, if the partition holds any record.
    fn last_batch_base(&self) -> Option<i64> {
        self.records.last().map(|r| r.batch_base)
    }

    /// A torn write lost the last batch.
    fn drop_last_batch(&mut self) {
        let base = self.last_batch_base().expect("a batch to drop");
        self.records.retain(|r| r.offset < base);
        self.log_end = base;
    }
}

// ---------------------------------------------------------------------------------------------
// Operations and their generators
// ---------------------------------------------------------------------------------------------

/// A record to append: its timestamp is the clock at append minus `age_ms`, so timestamps are
/// mostly but not always increasing.
#[derive(Clone, Debug)]
struct RecordSpec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    age_ms: i64,
}

#[derive(Clone, Debug)]
enum Op {
    /// Append one batch to a partition.
    Append {
        partition: usize,
        batch: Vec<RecordSpec>,
    },
    /// Read at an offset picked in `[log_start - 2, log_end + 2]`.
    Read {
        partition: usize,
        at: Index,
        max_bytes: usize,
    },
    AdvanceClock(i64),
    EnforceRetention,
    /// Look up a timestamp picked between just before `T0` and just after now.
    OffsetForTimestamp {
        partition: usize,
        at: Index,
    },
    /// Clean close and open.
    Reopen,
    /// Simulated crash and open; optionally the last batch of a partition is torn first.
    Crash {
        torn: Option<(usize, Index)>,
    },
}

/// How a test case's log is set up.
#[derive(Clone, Debug)]
struct Setup {
    partitions: u32,
    config: TopicConfig,
}

fn setup() -> impl Strategy<Value = Setup> {
    let retention = prop_oneof![
        (50..1500i64, Just(-1i64)),
        (Just(-1i64), 0..4000i64),
        (50..1500i64, 0..4000i64),
    ];
    (
        1..=2u32,
        300..=2000u32,
        prop_oneof![Just(4096u32), 1..200u32],
        prop_oneof![3 => Just(7 * DAY_MS), 1 => 200..2000i64],
        retention,
    )
        .prop_map(
            |(partitions, segment_bytes, index_interval, segment_ms, (ret_ms, ret_bytes))| {
                let mut config = TopicConfig::default()
                    .segment_bytes(segment_bytes)
                    .segment_ms(segment_ms)
                    .retention_ms(ret_ms)
                    .retention_bytes(ret_bytes);
                config.index_interval_bytes = index_interval;
                Setup { partitions, config }
            },
        )
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    (
        option::weighted(0.8, vec(any::<u8>(), 0..16)),
        option::weighted(0.9, vec(any::<u8>(), 0..120)),
        0..=20i64,
    )
        .prop_map(|(key, value, age_ms)| RecordSpec { key, value, age_ms })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..2usize, vec(record_spec(), 1..=5))
            .prop_map(|(partition, batch)| Op::Append { partition, batch }),
        6 => (0..2usize, any::<Index>(), 1..3000usize)
            .prop_map(|(partition, at, max_bytes)| Op::Read { partition, at, max_bytes }),
        4 => (0..400i64).prop_map(Op::AdvanceClock),
        3 => Just(Op::EnforceRetention),
        3 => (0..2usize, any::<Index>())
            .prop_map(|(partition, at)| Op::OffsetForTimestamp { partition, at }),
        1 => Just(Op::Reopen),
        1 => option::of((0..2usize, any::<Index>())).prop_map(|torn| Op::Crash { torn }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The harness: a real log next to the model
// ---------------------------------------------------------------------------------------------

/// A segment file as found on disk.
#[derive(Clone, Debug)]
struct SegmentFile {
    base: i64,
    len: u64,
    path: PathBuf,
}

struct Harness {
    clock: ManualClock,
    config: TopicConfig,
    log: Option<Log>,
    partitions: Vec<Partition>,
    models: Vec<ModelPartition>,
    /// Last, so that the log closes before the directory goes.
    dir: TempDir,
}

impl Harness {
    fn new(setup: &Setup) -> Harness {
        let mut h = Harness {
            clock: ManualClock::new(T0),
            config: setup.config.clone(),
            log: None,
            partitions: Vec::new(),
            models: (0..setup.partitions)
                .map(|_| ModelPartition::default())
                .collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        h.open();
        h.log()
            .create_topic(TOPIC, setup.partitions, setup.config.clone())
            .unwrap();
        h.partitions = (0..setup.partitions)
            .map(|p| h.log().partition(TOPIC, p).unwrap())
            .collect();
        h
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("the log is open")
    }

    fn open(&mut self) {
        let log = Log::builder(self.dir.path())
            .clock(self.clock.clone())
            .background_maintenance(false)
            .open()
            .unwrap();
        self.partitions = match log.partition_count(TOPIC) {
            Ok(n) => (0..n).map(|p| log.partition(TOPIC, p).unwrap()).collect(),
            Err(_) => Vec::new(),
        };
        self.log = Some(log);
    }

    fn close(&mut self) {
        self.partitions.clear();
        self.log.take().expect("the log is open").close().unwrap();
    }

    fn reopened_checks(&self) {
        assert_eq!(self.log().topics(), vec![TOPIC.to_string()]);
        assert_eq!(self.log().topic_config(TOPIC).unwrap(), self.config);
        assert_eq!(self.partitions.len(), self.models.len());
        for p in 0..self.models.len() {
            self.check_contents(p);
        }
    }

    fn partition_dir(&self, p: usize) -> PathBuf {
        self.dir.path().join(format!("{TOPIC}-{p}"))
    }

    /// The partition's segment files, in offset order.
    fn segment_files(&self, p: usize) -> Vec<SegmentFile> {
        let mut files: Vec<SegmentFile> = fs::read_dir(self.partition_dir(p))
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let stem = name.strip_suffix(".log")?;
                Some(SegmentFile {
                    base: stem.parse().ok()?,
                    len: e.metadata().unwrap().len(),
                    path: e.path(),
                })
            })
            .collect();
        files.sort_by_key(|f| f.base);
        files
    }

    fn apply(&mut self, op: &Op) {
        let n = self.models.len();
        match op {
            Op::Append { partition, batch } => self.append(partition % n, batch),
            Op::Read {
                partition,
                at,
                max_bytes,
            } => self.read(partition % n, at, *max_bytes),
            Op::AdvanceClock(ms) => self.clock.advance_ms(*ms),
            Op::EnforceRetention => self.enforce_retention(),
            Op::OffsetForTimestamp { partition, at } => {
                let now = self.clock.now_ms();
                let lo = T0 - 30;
                let ts = lo + at.index((now + 5 - lo) as usize) as i64;
                let p = partition % n;
                assert_eq!(
                    self.partitions[p].offset_for_timestamp(ts).unwrap(),
                    self.models[p].offset_for_timestamp(ts),
                    "offset_for_timestamp({ts}) on partition {p}"
                );
            }
            Op::Reopen => {
                self.close();
                self.open();
                self.reopened_checks();
            }
            Op::Crash { torn } => {
                self.close();
                fs::remove_file(self.dir.path().join("clean-shutdown")).unwrap();
                fs::remove_file(self.dir.path().join("recovery-point-offset-checkpoint")).unwrap();
                if let Some((p, cut)) = torn {
                    self.tear_last_batch(p % n, cut);
                }
                self.open();
                self.reopened_checks();
            }
        }
    }

    fn append(&mut self, p: usize, batch: &[RecordSpec]) {
        let now = self.clock.now_ms();
        let records: Vec<Record<'_>> = batch
            .iter()
            .map(|r| Record::new(r.key.as_deref(), r.value.as_deref()).timestamp(now - r.age_ms))
            .collect();
        let info = self.partitions[p].append(&records).unwrap();
        let model = &mut self.models[p];
        let base = model.append(batch, now);
        assert_eq!(info.base_offset, base);
        assert_eq!(info.last_offset, model.log_end - 1);
        assert_eq!(info.log_start_offset, model.log_start);
        assert_eq!(info.log_append_time, None);
    }

    /// One read, every record of the answer compared with the model.
    fn read(&self, p: usize, at: &Index, max_bytes: usize) {
        let m = &self.models[p];
        let (lo, hi) = (m.log_start - 2, m.log_end + 2);
        let offset = lo + at.index((hi - lo + 1) as usize) as i64;
        let result = self.partitions[p].read(offset, max_bytes);
        if offset < m.log_start || offset > m.log_end {
            match result {
                Err(Error::OffsetOutOfRange {
                    requested,
                    log_start,
                    log_end,
                    ..
                }) => assert_eq!(
                    (requested, log_start, log_end),
                    (offset, m.log_start, m.log_end)
                ),
                other => panic!("read({offset}) outside [{lo}, {hi}]: {other:?}"),
            }
            return;
        }
        let fetch = result.unwrap();
        assert_eq!(
            (
                fetch.fetch_offset,
                fetch.log_start_offset,
                fetch.log_end_offset,
                fetch.high_watermark
            ),
            (offset, m.log_start, m.log_end, m.log_end)
        );
        if offset == m.log_end {
            assert!(fetch.records.is_empty(), "a read at the log end is empty");
            assert_eq!(fetch.next_offset(), offset);
            return;
        }
        // Whole, valid batches that tile the bytes, at most max_bytes unless the first batch
        // alone is larger; batch boundaries are the appends' boundaries.
        let first = fetch.batches().next().expect("a read below the log end");
        assert!(fetch.records.len() <= max_bytes.max(first.size()));
        let mut tiled = 0;
        for b in fetch.batches() {
            b.validate().unwrap();
            assert_eq!(m.get(b.base_offset()).batch_base, b.base_offset());
            tiled += b.size();
        }
        assert_eq!(tiled, fetch.records.len());
        // The records: from exactly the requested offset, dense, equal to the model's.
        let mut expected = offset;
        for r in fetch.records() {
            let want = m.get(expected);
            assert_eq!(r.offset, want.offset);
            assert_eq!(r.timestamp, want.timestamp, "timestamp at {expected}");
            assert_eq!(r.key, want.key.as_deref(), "key at {expected}");
            assert_eq!(r.value, want.value.as_deref(), "value at {expected}");
            expected += 1;
        }
        assert!(
            expected > offset,
            "a read below the log end returns records"
        );
        assert_eq!(fetch.next_offset(), expected);
    }

    /// Reads the whole partition and compares it with the model, batch boundaries included.
    fn check_contents(&self, p: usize) {
        let (part, m) = (&self.partitions[p], &self.models[p]);
        assert_eq!(part.log_start_offset().unwrap(), m.log_start);
        assert_eq!(part.log_end_offset().unwrap(), m.log_end);
        let mut got = Vec::new();
        let mut offset = m.log_start;
        while offset < m.log_end {
            let fetch = part.read(offset, 700).unwrap();
            for b in fetch.batches() {
                for r in b.records() {
                    let r = r.unwrap();
                    got.push(ModelRecord {
                        offset: r.offset,
                        batch_base: b.base_offset(),
                        timestamp: r.timestamp,
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.map(<[u8]>::to_vec),
                    });
                }
            }
            let next = fetch.next_offset();
            assert!(next > offset, "reading from {offset} makes progress");
            offset = next;
        }
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (m.log_start..m.log_end).collect::<Vec<_>>(),
            "offsets are dense from the log start to the log end"
        );
        assert_eq!(got, m.records);
    }

    /// Cheap checks after every operation: offsets, and sizes against the files on disk.
    fn check_offsets(&self) {
        for (p, (part, m)) in self.partitions.iter().zip(&self.models).enumerate() {
            assert_eq!(part.log_start_offset().unwrap(), m.log_start, "log start");
            assert_eq!(part.log_end_offset().unwrap(), m.log_end, "log end");
            assert_eq!(part.high_watermark().unwrap(), m.log_end, "high watermark");
            let files = self.segment_files(p);
            assert_eq!(part.segment_count().unwrap(), files.len());
            assert_eq!(
                part.size_bytes().unwrap(),
                files.iter().map(|f| f.len).sum::<u64>()
            );
            assert_eq!(
                files[0].base, m.log_start,
                "the first segment starts the log"
            );
        }
    }

    /// Runs retention and checks the result against Kafka's rules:
    ///
    /// - segments go oldest first, and each one that went was expired (its newest record older
    ///   than `retention.ms`) or the partition was still at least its size above
    ///   `retention.bytes` without it;
    /// - the first segment kept, unless it is the active one, is neither;
    /// - when every record has expired, the active segment is rolled and deleted too: the log
    ///   start reaches the log end.
    fn enforce_retention(&mut self) {
        let now = self.clock.now_ms();
        let (ret_ms, ret_bytes) = (self.config.retention_ms, self.config.retention_bytes);
        let expired = |ts: i64| ret_ms >= 0 && now - ts > ret_ms;
        let before: Vec<Vec<SegmentFile>> = (0..self.models.len())
            .map(|p| self.segment_files(p))
            .collect();
        let deleted = self.log().enforce_retention().unwrap();

        let mut counted = 0;
        for (p, before) in before.iter().enumerate() {
            let after = self.segment_files(p);
            let m = &self.models[p];
            let new_start = self.partitions[p].log_start_offset().unwrap();
            assert!(new_start >= m.log_start, "the log start never decreases");
            assert!(new_start <= m.log_end);
            assert_eq!(after[0].base, new_start);
            if new_start < m.log_end {
                assert_eq!(
                    m.get(new_start).batch_base,
                    new_start,
                    "the log start is a batch boundary"
                );
            }
            // The newest timestamp of the records in each segment before retention ran.
            let max_ts = |segs: &[SegmentFile], i: usize| {
                let end = segs.get(i + 1).map_or(m.log_end, |s| s.base);
                m.range(segs[i].base, end).map(|r| r.timestamp).max()
            };

            let gone: Vec<usize> = (0..before.len())
                .filter(|&i| before[i].base < new_start)
                .collect();
            let mut remaining: i64 = before.iter().map(|s| s.len as i64).sum();
            for &i in &gone {
                let by_time = max_ts(before, i).is_some_and(expired);
                let by_size = ret_bytes >= 0 && remaining - ret_bytes >= before[i].len as i64;
                assert!(
                    by_time || by_size,
                    "partition {p}: segment {} ({} bytes) was deleted, but it had not expired \
                     and {remaining} bytes are within retention.bytes {ret_bytes}",
                    before[i].base,
                    before[i].len
                );
                remaining -= before[i].len as i64;
            }
            if after.len() > 1 {
                let total_after: i64 = after.iter().map(|s| s.len as i64).sum();
                assert!(
                    !max_ts(&after, 0).is_some_and(expired),
                    "partition {p}: retention kept expired segment {}",
                    after[0].base
                );
                assert!(
                    ret_bytes < 0 || total_after - ret_bytes < after[0].len as i64,
                    "partition {p}: retention kept segment {} ({} bytes) with the partition at \
                     {total_after} bytes, retention.bytes {ret_bytes}",
                    after[0].base,
                    after[0].len
                );
            }
            if !m.records.is_empty() && m.records.iter().all(|r| expired(r.timestamp)) {
                assert_eq!(
                    new_start, m.log_end,
                    "every record expired: all are deleted"
                );
            }
            // Deleted segments, plus the active segment rolled (and then deleted) when every
            // record had expired.
            let rolled = usize::from(
                before.last().unwrap().len > 0
                    && after.len() == 1
                    && after[0].len == 0
                    && after[0].base == m.log_end,
            );
            counted += before.len() + rolled - after.len();

            self.models[p].advance_log_start(new_start);
        }
        assert_eq!(
            deleted, counted,
            "enforce_retention counts deleted segments"
        );
        for p in 0..self.models.len() {
            self.check_contents(p);
        }
    }

    /// With the log closed: cuts the partition's last batch at a random byte inside it.
    fn tear_last_batch(&mut self, p: usize, cut: &Index) {
        let files = self.segment_files(p);
        let Some(last) = files.iter().rev().find(|f| f.len > 0) else {
            assert!(self.models[p].records.is_empty());
            return;
        };
        let bytes = fs::read(&last.path).unwrap();
        let mut rest = &bytes[..];
        let mut last_batch = None;
        while let Some((b, r)) = RecordBatch::split(rest).unwrap() {
            last_batch = Some((bytes.len() - rest.len(), b.size(), b.base_offset()));
            rest = r;
        }
        assert!(rest.is_empty(), "the segment file holds whole batches");
        let (position, size, base) = last_batch.unwrap();
        assert_eq!(Some(base), self.models[p].last_batch_base());
        let keep = position + cut.index(size);
        let file = OpenOptions::new().write(true).open(&last.path).unwrap();
        file.set_len(keep as u64).unwrap();
        self.models[p].drop_last_batch();
    }
}

fn run(setup: &Setup, ops: &[Op]) {
    let mut h = Harness::new(setup);
    for op in ops {
        h.apply(op);
        h.check_offsets();
    }
    for p in 0..h.models.len() {
        h.check_contents(p);
    }
    h.close();
    // One last clean reopen: everything survives it.
    h.open();
    h.reopened_checks();
    h.check_offsets();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Appends, reads, clock moves, retention, timestamp lookups, clean reopens and crashes
    /// (some tearing the last batch) leave the log equal to the model.
    #[test]
    fn log_behaves_like_the_model(setup in setup(), ops in vec(op(), 1..80)) {
        run(&setup, &ops);
    }
}
