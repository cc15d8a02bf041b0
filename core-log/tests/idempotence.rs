//! Idempotent producers as a Kafka user relies on them: a batch re-sent after a lost
//! acknowledgement is not appended twice and is answered with its original offsets; a gap in
//! the sequence is refused with `OutOfOrderSequence` and appends nothing; an older epoch is
//! fenced; and all of it keeps working after a clean reopen, a crash, lost or damaged producer
//! state snapshots, retention and compaction.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use core_log::codec::{BatchBuilder, BatchProducer};
use core_log::{
    AppendInfo, CleanupPolicy, Error, Log, Partition, ProducerIdentity, Record, Result, TopicConfig,
};

mod common;
use common::{NOW, open, simulate_crash};

/// Small segments, so that histories span several segments (and snapshots).
fn small_segments() -> TopicConfig {
    TopicConfig::default().segment_bytes(1024)
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("t-0")
}

/// The offsets of the producer state snapshots of partition `t-0`, ascending.
fn snapshots(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(partition_dir(dir))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".snapshot")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    partition_dir(dir).join(format!("{offset:020}.snapshot"))
}

/// Appends a copy of `bytes` (the log patches offsets into what it is given, so the caller's
/// bytes stay as the producer sent them, ready to be re-sent).
fn send(p: &Partition, bytes: &[u8]) -> Result<AppendInfo> {
    p.append_batches(&mut bytes.to_vec())
}

/// Every value in the partition, in offset order.
fn values(p: &Partition) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset().unwrap();
    let end = p.log_end_offset().unwrap();
    while offset < end {
        let data = p.read(offset, 1 << 20).unwrap();
        out.extend(data.records().map(|r| r.value.unwrap().to_vec()));
        offset = data.next_offset();
    }
    out
}

/// `(producer id, records)` of every batch in the partition, in offset order.
fn batches(p: &Partition) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset().unwrap();
    let end = p.log_end_offset().unwrap();
    while offset < end {
        let data = p.read(offset, 1 << 20).unwrap();
        out.extend(data.batches().map(|b| (b.producer_id(), b.records_count())));
        offset = data.next_offset();
    }
    out
}

/// An idempotent producer writing to one partition, remembering what it sent.
struct Producer {
    id: ProducerIdentity,
    /// Every record's key, if set; otherwise each record gets its own key.
    key: Option<&'static [u8]>,
    next_seq: i32,
    /// Each batch as sent, with the log's answer.
    sent: Vec<(Vec<u8>, AppendInfo)>,
}

impl Producer {
    fn new(log: &Log) -> Producer {
        Producer {
            id: log.init_producer_id().unwrap(),
            key: None,
            next_seq: 0,
            sent: Vec::new(),
        }
    }

    /// A batch of `n` records starting at sequence `seq`.
    fn batch(&self, seq: i32, n: i32) -> Vec<u8> {
        let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: self.id.producer_id,
            producer_epoch: self.id.epoch,
            base_sequence: seq,
            transactional: false,
        });
        for i in 0..n {
            let v = format!("p{}-e{}-s{}", self.id.producer_id, self.id.epoch, seq + i);
            let key = self.key.unwrap_or(v.as_bytes());
            b.append(NOW, Some(key), Some(v.as_bytes()), &[]);
        }
        b.finish()
    }

    /// Sends the next batch of `n` records; it must be appended.
    fn send_next(&mut self, p: &Partition, n: i32) -> AppendInfo {
        let bytes = self.batch(self.next_seq, n);
        let info = send(p, &bytes).unwrap();
        assert!(!info.duplicate);
        assert_eq!(info.last_offset - info.base_offset, i64::from(n) - 1);
        self.sent.push((bytes, info));
        self.next_seq += n;
        info
    }

    /// What the producer relies on, whatever happened to the log: re-sending any of its last
    /// `remembered` batches appends nothing and returns the original offsets; a gap is
    /// refused and appends nothing; the next sequence is accepted.
    fn assert_state(&mut self, p: &Partition, remembered: usize) {
        let end = p.log_end_offset().unwrap();
        for (bytes, original) in self.sent.iter().rev().take(remembered) {
            let again = send(p, bytes).unwrap();
            assert!(again.duplicate, "{:?}", self.id);
            assert_eq!(
                (again.base_offset, again.last_offset),
                (original.base_offset, original.last_offset)
            );
        }
        let gap = self.batch(self.next_seq + 1, 1);
        match send(p, &gap) {
            Err(Error::OutOfOrderSequence {
                producer_id,
                expected,
                received,
                ..
            }) => {
                assert_eq!(producer_id, self.id.producer_id);
                assert_eq!((expected, received), (self.next_seq, self.next_seq + 1));
            }
            other => panic!("expected OutOfOrderSequence, got {other:?}"),
        }
        assert_eq!(p.log_end_offset().unwrap(), end, "nothing appended");
        let info = self.send_next(p, 1);
        assert_eq!(info.base_offset, end);
    }
}

/// Two producers interleaved over several segments.
fn write_history(log: &Log, p: &Partition) -> (Producer, Producer) {
    let mut a = Producer::new(log);
    let mut b = Producer::new(log);
    for i in 0..15 {
        a.send_next(p, 1 + i % 3);
        b.send_next(p, 2);
    }
    assert!(p.segment_count().unwrap() >= 3);
    (a, b)
}

#[test]
fn a_resent_batch_is_not_appended_twice_and_gets_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = Producer::new(&log);
    for _ in 0..5 {
        a.send_next(&p, 3);
    }
    let before = values(&p);
    assert_eq!(before.len(), 15);

    // The latest batch, and the oldest of the five the log remembers.
    for i in [4, 0] {
        let (bytes, original) = a.sent[i].clone();
        let again = send(&p, &bytes).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, original.base_offset);
        assert_eq!(again.last_offset, original.last_offset);
    }
    assert_eq!(values(&p), before, "no record appended twice");
    assert_eq!(p.log_end_offset().unwrap(), 15);

    // A sixth batch pushes the first out of the five remembered: it is no longer recognised,
    // and its sequence is far behind.
    a.send_next(&p, 3);
    let first = a.sent[0].0.clone();
    assert!(matches!(
        send(&p, &first),
        Err(Error::OutOfOrderSequence {
            expected: 18,
            received: 0,
            ..
        })
    ));
    assert_eq!(p.log_end_offset().unwrap(), 18);
    a.assert_state(&p, 5);
}

#[test]
fn a_gap_is_out_of_order_and_leaves_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = Producer::new(&log);

    // A producer the partition has not seen starts at sequence 0.
    let err = send(&p, &a.batch(3, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfOrderSequence {
                ref topic,
                partition: 0,
                expected: 0,
                received: 3,
                ..
            } if topic == "t"
        ),
        "{err:?}"
    );
    assert_eq!(p.log_end_offset().unwrap(), 0);

    a.send_next(&p, 2);
    a.send_next(&p, 2);
    let before = values(&p);
    // Batch 4..6 lost: 6 is a gap, as is going back to a sequence not in a remembered batch.
    for seq in [6, 5, 3, 1] {
        let err = send(&p, &a.batch(seq, 1)).unwrap_err();
        assert!(
            matches!(err, Error::OutOfOrderSequence { expected: 4, received, .. } if received == seq),
            "{err:?}"
        );
    }
    assert_eq!(values(&p), before);
    assert_eq!(p.log_end_offset().unwrap(), 4);
    a.assert_state(&p, 2);
}

#[test]
fn an_older_epoch_is_fenced_and_a_new_epoch_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut old = Producer::new(&log);
    old.send_next(&p, 2);
    old.send_next(&p, 2);

    let mut new = Producer {
        id: ProducerIdentity {
            producer_id: old.id.producer_id,
            epoch: old.id.epoch + 1,
        },
        key: None,
        next_seq: 0,
        sent: Vec::new(),
    };
    // The new epoch must restart its sequence.
    assert!(matches!(
        send(&p, &new.batch(4, 1)),
        Err(Error::OutOfOrderSequence {
            expected: 0,
            received: 4,
            ..
        })
    ));
    new.send_next(&p, 1);

    // The old epoch is fenced, for new batches and for retries of its own batches alike.
    let end = p.log_end_offset().unwrap();
    for bytes in [old.batch(4, 1), old.sent[1].0.clone()] {
        let err = send(&p, &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ProducerFenced { producer_id, epoch: 0, current_epoch: 1 }
                    if producer_id == old.id.producer_id
            ),
            "{err:?}"
        );
    }
    assert_eq!(p.log_end_offset().unwrap(), end);
    new.assert_state(&p, 1);
}

#[test]
fn sequences_wrap_around_after_i32_max() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = Producer::new(&log);

    // One record whose batch covers sequences 0..=i32::MAX - 1 (its last offset delta is
    // what counts, as for a batch compaction has thinned out).
    let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
        producer_id: a.id.producer_id,
        producer_epoch: 0,
        base_sequence: 0,
        transactional: false,
    });
    b.append(NOW, Some(b"k"), Some(b"v"), &[]);
    b.set_last_offset_delta(i32::MAX - 1);
    let bytes = b.finish();
    let first = send(&p, &bytes).unwrap();
    assert_eq!(first.last_offset, i64::from(i32::MAX) - 1);
    a.sent.push((bytes, first));
    a.next_seq = i32::MAX;

    // i32::MAX, then 0: the batch's last sequence wraps.
    let wrapping = a.batch(i32::MAX, 2);
    let info = send(&p, &wrapping).unwrap();
    assert!(!info.duplicate);
    assert!(send(&p, &wrapping).unwrap().duplicate);
    a.sent.push((wrapping, info));
    a.next_seq = 1;
    a.assert_state(&p, 2);
    assert!(matches!(
        send(&p, &a.batch(i32::MAX, 1)),
        Err(Error::OutOfOrderSequence {
            expected: 2,
            received: i32::MAX,
            ..
        })
    ));
}

#[test]
fn several_producers_interleave_on_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut producers: Vec<Producer> = (0..4).map(|_| Producer::new(&log)).collect();
    for round in 0..6 {
        for (i, pr) in producers.iter_mut().enumerate() {
            pr.send_next(&p, 1 + ((round + i as i32) % 3));
        }
    }
    // A retry of one producer's batch, between other producers' appends, is still found.
    let (bytes, original) = producers[1].sent[4].clone();
    producers[2].send_next(&p, 1);
    let again = send(&p, &bytes).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.base_offset, original.base_offset);
    // Each producer's sequence is its own: a gap of one does not disturb the others.
    assert!(send(&p, &producers[0].batch(100, 1)).is_err());
    for pr in &mut producers {
        pr.assert_state(&p, 5);
    }
}

#[test]
fn batches_without_a_producer_id_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let mut a = Producer::new(&log);

    let mut plain = BatchBuilder::new(Vec::new());
    plain.append(NOW, None, Some(b"plain"), &[]);
    let plain = plain.finish();
    a.send_next(&p, 1);
    // Sent twice: appended twice (no idempotence without a producer id).
    let first = send(&p, &plain).unwrap();
    let second = send(&p, &plain).unwrap();
    assert!(!first.duplicate && !second.duplicate);
    assert_eq!(second.base_offset, first.base_offset + 1);
    // Several plain batches in one request are fine.
    let two = [plain.clone(), plain.clone()].concat();
    assert_eq!(send(&p, &two).unwrap().last_offset, 4);
    p.append(&[Record::new(None, Some(b"record"))]).unwrap();
    assert_eq!(values(&p).len(), 6);
    a.assert_state(&p, 1);
}

#[test]
fn an_idempotent_batch_must_be_alone_in_its_request_and_carry_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let a = Producer::new(&log);
    let mut plain = BatchBuilder::new(Vec::new());
    plain.append(NOW, None, Some(b"plain"), &[]);
    let plain = plain.finish();

    for request in [
        [a.batch(0, 1), plain.clone()].concat(),
        [plain.clone(), a.batch(0, 1)].concat(),
        [a.batch(0, 1), a.batch(1, 1)].concat(),
        a.batch(-1, 1),
    ] {
        let err = send(&p, &request).unwrap_err();
        assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    }
    assert_eq!(p.log_end_offset().unwrap(), 0);
    // Nothing of the refused requests counted: the producer still starts at 0.
    assert!(!send(&p, &a.batch(0, 1)).unwrap().duplicate);
}

#[test]
fn producer_state_survives_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();
    // The clean close left the state as of the log end: nothing to replay.
    assert_eq!(snapshots(dir.path()).last(), Some(&end));

    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
    // And again, after appends since the reopen.
    log.close().unwrap();
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    b.assert_state(&p, 5);
    a.assert_state(&p, 5);
}

#[test]
fn producer_state_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();
    // A crash leaves no clean-shutdown marker and no snapshot at the log end: the state
    // comes from the snapshot of the last roll and the batches after it.
    simulate_crash(dir.path());
    std::fs::remove_file(snapshot_path(dir.path(), end)).unwrap();
    assert!(!snapshots(dir.path()).is_empty());

    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), end);
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
}

#[test]
fn a_snapshot_above_the_recovered_log_end_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    let (lost_bytes, lost) = b.sent.pop().unwrap();
    b.next_seq -= 2;
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();

    // The last batch was torn by a crash: recovery cuts it off, and the snapshot the close
    // wrote at the old log end describes a state the log no longer has.
    simulate_crash(dir.path());
    let active = partition_dir(dir.path()).join(format!("{:020}.log", {
        let mut bases: Vec<i64> = std::fs::read_dir(partition_dir(dir.path()))
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        *bases.last().unwrap()
    }));
    let len = std::fs::metadata(&active).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    assert_eq!(p.log_end_offset().unwrap(), lost.base_offset);
    assert!(!snapshots(dir.path()).contains(&end));
    // The lost batch is not a duplicate: the producer's retry appends it again.
    let again = send(&p, &lost_bytes).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, lost.base_offset);
    b.sent.push((lost_bytes, again));
    b.next_seq += 2;
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
}

#[test]
fn without_snapshots_the_state_is_rebuilt_from_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    log.close().unwrap();
    for o in snapshots(dir.path()) {
        std::fs::remove_file(snapshot_path(dir.path(), o)).unwrap();
    }
    simulate_crash(dir.path());

    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
}

#[test]
fn a_damaged_snapshot_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments()).unwrap();
    let p = log.partition("t", 0).unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();
    let newest = snapshot_path(dir.path(), end);
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    assert!(!newest.exists(), "the damaged snapshot is dropped");
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
    // Damage every snapshot (a truncated file among them): the whole log is replayed.
    log.close().unwrap();
    for o in snapshots(dir.path()) {
        let path = snapshot_path(dir.path(), o);
        let len = std::fs::read(&path).unwrap().len();
        std::fs::write(&path, vec![0u8; len / 2]).unwrap();
    }
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    assert!(snapshots(dir.path()).is_empty());
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
}

#[test]
fn producer_state_survives_retention_deleting_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, small_segments().retention_bytes(1100))
        .unwrap();
    let p = log.partition("t", 0).unwrap();
    // `early` writes only at the start: retention deletes all of its batches.
    let mut early = Producer::new(&log);
    for _ in 0..5 {
        early.send_next(&p, 1);
    }
    let early_end = p.log_end_offset().unwrap();
    let (mut a, mut b) = write_history(&log, &p);
    assert!(log.enforce_retention().unwrap() > 0);
    let start = p.log_start_offset().unwrap();
    assert!(start > early_end, "all of early's batches are gone");
    // Snapshots below the log start are gone, except the newest.
    let snaps = snapshots(dir.path());
    assert!(!snaps.is_empty());
    assert!(snaps.iter().all(|&o| o >= start), "{snaps:?} start {start}");

    early.assert_state(&p, 5);
    a.assert_state(&p, 5);
    log.close().unwrap();
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    early.assert_state(&p, 5);
    b.assert_state(&p, 5);
    // After a crash too (the snapshot of the last roll knows `early`).
    let end = p.log_end_offset().unwrap();
    log.close().unwrap();
    simulate_crash(dir.path());
    std::fs::remove_file(snapshot_path(dir.path(), end)).unwrap();
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    early.assert_state(&p, 5);
    a.assert_state(&p, 5);
}

#[test]
fn compaction_keeps_what_a_replay_needs_of_each_producer() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let config = small_segments().cleanup_policy(CleanupPolicy::COMPACT);
    log.create_topic("t", 1, config).unwrap();
    let p = log.partition("t", 0).unwrap();
    // Every record of `a` is superseded by `b`'s later records with the same key.
    let mut a = Producer::new(&log);
    a.key = Some(b"same");
    let mut b = Producer::new(&log);
    b.key = Some(b"same");
    for _ in 0..6 {
        a.send_next(&p, 2);
    }
    for _ in 0..20 {
        b.send_next(&p, 2);
    }
    let end = p.log_end_offset().unwrap();
    let stats = log.compact(true).unwrap();
    assert!(stats.records_removed >= 12);
    let a_prefix = format!("p{}-", a.id.producer_id);
    assert!(
        values(&p)
            .iter()
            .all(|v| !v.starts_with(a_prefix.as_bytes())),
        "a's records are compacted away"
    );
    assert_eq!(p.log_end_offset().unwrap(), end);
    a.assert_state(&p, 5);
    b.assert_state(&p, 5);
    // These appends put a's and b's last batches in the active segment; roll past them and
    // compact again, so that their last batches are the ones compaction must keep.
    log.close().unwrap();
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    for _ in 0..10 {
        b.send_next(&p, 2);
    }
    log.compact(true).unwrap();
    assert!(
        values(&p)
            .iter()
            .all(|v| !v.starts_with(a_prefix.as_bytes())),
        "a's records are compacted away"
    );
    // Of `a` only its last batch is left, without records (Kafka's empty batch).
    let of_a: Vec<_> = batches(&p)
        .into_iter()
        .filter(|&(id, _)| id == a.id.producer_id)
        .collect();
    assert_eq!(of_a, vec![(a.id.producer_id, 0)]);

    // Rebuild the state from the compacted log alone, with every batch checked (the empty
    // batch compaction left included): only a's last batch is left to find.
    log.close().unwrap();
    for o in snapshots(dir.path()) {
        std::fs::remove_file(snapshot_path(dir.path(), o)).unwrap();
    }
    simulate_crash(dir.path());
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    a.assert_state(&p, 1);
    b.assert_state(&p, 1);
}
