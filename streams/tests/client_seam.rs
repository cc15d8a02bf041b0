//! The client seam: an application runs on whatever `KafkaClientSupplier` it is given, and
//! every record it reads or writes goes through the clients that supplier hands out — its
//! input through the main consumer, its output and changelog records through the producer,
//! restoration through the restore consumer. A supplier over the network can then take the
//! embedded log's place without the runtime reaching past it.
#![allow(
    clippy::unwrap_used,
    reason = "helpers of these tests unwrap as the tests do: a failure is a test failure"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use core_log::{
    Clock, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecords, Log, OffsetAndMetadata,
    ProducerConfig, ProducerRecord, Record as LogRecord, Result, SharedCallback, TopicConfig,
    TopicPartition,
};
use streams::client::{Admin, Consumer, ConsumerRebalanceListener, KafkaClientSupplier, Producer};
use streams::{State, Streams, StreamsConfig};

use common::{count_topology, wait_caught_up};

const PARTITIONS: u32 = 2;

/// What went through the clients a [`Recording`] supplier handed out.
#[derive(Default)]
struct Counts {
    /// Records sent, per topic.
    sent: std::sync::Mutex<HashMap<String, u64>>,
    /// Records returned by polls of main consumers.
    polled: AtomicU64,
    /// Records returned by polls of restore consumers.
    restored: AtomicU64,
    /// Admin clients handed out.
    admins: AtomicU64,
}

/// A supplier of the embedded log's clients that counts what passes through them: a second
/// implementation of the seam, as a network one would be.
#[derive(Clone)]
struct Recording {
    log: Log,
    counts: Arc<Counts>,
}

impl KafkaClientSupplier for Recording {
    fn producer(&self, config: ProducerConfig) -> Result<Box<dyn Producer>> {
        Ok(Box::new(RecordingProducer {
            inner: KafkaClientSupplier::producer(&self.log, config)?,
            counts: self.counts.clone(),
        }))
    }

    fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(RecordingConsumer {
            inner: KafkaClientSupplier::consumer(&self.log, config)?,
            counts: self.counts.clone(),
            restore: false,
        }))
    }

    fn restore_consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(RecordingConsumer {
            inner: KafkaClientSupplier::restore_consumer(&self.log, config)?,
            counts: self.counts.clone(),
            restore: true,
        }))
    }

    fn admin(&self) -> Result<Box<dyn Admin>> {
        self.counts.admins.fetch_add(1, Ordering::Relaxed);
        KafkaClientSupplier::admin(&self.log)
    }

    fn clock(&self) -> Arc<dyn Clock> {
        KafkaClientSupplier::clock(&self.log)
    }

    fn default_state_dir(&self) -> PathBuf {
        KafkaClientSupplier::default_state_dir(&self.log)
    }
}

struct RecordingProducer {
    inner: Box<dyn Producer>,
    counts: Arc<Counts>,
}

impl Producer for RecordingProducer {
    fn send(
        &self,
        record: ProducerRecord<'_, [u8], [u8]>,
        callback: &SharedCallback,
    ) -> Result<()> {
        *self
            .counts
            .sent
            .lock()
            .unwrap()
            .entry(record.topic.to_owned())
            .or_default() += 1;
        self.inner.send(record, callback)
    }
    fn flush(&self) {
        self.inner.flush()
    }
    fn init_transactions(&self) -> Result<()> {
        self.inner.init_transactions()
    }
    fn begin_transaction(&self) -> Result<()> {
        self.inner.begin_transaction()
    }
    fn in_transaction(&self) -> bool {
        self.inner.in_transaction()
    }
    fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.inner.send_offsets_to_transaction(offsets, group)
    }
    fn commit_transaction(&self) -> Result<()> {
        self.inner.commit_transaction()
    }
    fn abort_transaction(&self) -> Result<()> {
        self.inner.abort_transaction()
    }
}

struct RecordingConsumer {
    inner: Box<dyn Consumer>,
    counts: Arc<Counts>,
    restore: bool,
}

impl Consumer for RecordingConsumer {
    fn subscribe(
        &mut self,
        topics: &[String],
        listener: Box<dyn ConsumerRebalanceListener>,
    ) -> Result<()> {
        self.inner.subscribe(topics, listener)
    }
    fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.inner.assign(partitions)
    }
    fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }
    fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords<Bytes, Bytes>> {
        let records = self.inner.poll(timeout)?;
        let n = records.count() as u64;
        if self.restore {
            self.counts.restored.fetch_add(n, Ordering::Relaxed);
        } else {
            self.counts.polled.fetch_add(n, Ordering::Relaxed);
        }
        Ok(records)
    }
    fn position(&mut self, partition: &TopicPartition) -> Result<i64> {
        self.inner.position(partition)
    }
    fn seek(&mut self, partition: &TopicPartition, offset: i64) -> Result<()> {
        self.inner.seek(partition, offset)
    }
    fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.inner.seek_to_beginning(partitions)
    }
    fn commit_sync(&mut self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<()> {
        self.inner.commit_sync(offsets)
    }
    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        self.inner.committed(partitions)
    }
    fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        self.inner.group_metadata()
    }
}

fn count_app(clients: &Recording, state: &Path) -> Streams {
    let config = StreamsConfig::new("seam")
        .commit_interval_ms(20)
        .poll_ms(10)
        .state_dir(state);
    Streams::new(count_topology(), clients, config).unwrap()
}

/// The records in `topic`, over its partitions.
fn records_in(log: &Log, topic: &str) -> u64 {
    (0..log.partition_count(topic).unwrap())
        .map(|p| {
            let p = log.partition(topic, p).unwrap();
            (p.high_watermark().unwrap() - p.log_start_offset().unwrap()) as u64
        })
        .sum()
}

/// Appends likes number `events`, keyed `k<i % 20>`, to their key's partition.
fn append_likes(log: &Log, events: std::ops::Range<u32>) {
    for i in events {
        let key = format!("k{}", i % 20);
        let p = core_log::partition_for_key(key.as_bytes(), PARTITIONS);
        log.partition("likes", p)
            .unwrap()
            .append(&[LogRecord::new(Some(key.as_bytes()), Some(b"like"))])
            .unwrap();
    }
}

/// The last count written for each key.
fn latest_counts(log: &Log) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for p in 0..PARTITIONS {
        let part = log.partition("counts", p).unwrap();
        let (mut offset, mut buf) = (0, Vec::new());
        while offset < part.high_watermark().unwrap() {
            let fetch = part.read_into(offset, 1 << 20, &mut buf).unwrap();
            for r in fetch.records() {
                let v = i64::from_be_bytes(r.value.unwrap().try_into().unwrap());
                out.insert(String::from_utf8(r.key.unwrap().to_vec()).unwrap(), v);
            }
            offset = fetch.next_offset();
        }
    }
    out
}

#[test]
fn every_record_goes_through_the_supplied_clients() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path().join("log"))
        .background_maintenance(false)
        .open()
        .unwrap();
    for t in ["likes", "counts"] {
        log.create_topic(t, PARTITIONS, TopicConfig::default())
            .unwrap();
    }
    append_likes(&log, 0..1_000);
    let clients = Recording {
        log: log.clone(),
        counts: Arc::default(),
    };

    let app = count_app(&clients, &dir.path().join("state-a"));
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    wait_caught_up(&log, "seam", "likes");
    app.close().unwrap();

    let counts = &clients.counts;
    let changelog = "seam-counts-changelog";
    assert_eq!(counts.polled.load(Ordering::Relaxed), 1_000);
    assert!(counts.admins.load(Ordering::Relaxed) >= 1);
    let sent = counts.sent.lock().unwrap().clone();
    // The only writes to the output and the changelog are the ones the supplied producer
    // sent: no path of the runtime appends to the log past it.
    assert!(records_in(&log, "counts") > 0);
    assert_eq!(
        sent.get("counts").copied(),
        Some(records_in(&log, "counts"))
    );
    assert_eq!(
        sent.get(changelog).copied(),
        Some(records_in(&log, changelog))
    );
    assert_eq!(
        counts.restored.load(Ordering::Relaxed),
        0,
        "a fresh state dir"
    );

    // A second instance with an empty state directory restores the store from the whole
    // changelog, through its restore consumer, and counts on from the restored counts.
    let app = count_app(&clients, &dir.path().join("state-b"));
    app.start().unwrap();
    assert!(app.wait_for_state(State::Running, Duration::from_secs(10)));
    let restored = records_in(&log, changelog);
    assert!(restored > 0);
    append_likes(&log, 1_000..1_100);
    wait_caught_up(&log, "seam", "likes");
    app.close().unwrap();
    assert_eq!(counts.restored.load(Ordering::Relaxed), restored);
    assert_eq!(app.metrics().restored_records, restored);
    assert_eq!(app.metrics().processed, 100);
    // Every key had 50 likes before and 5 more after the restore.
    let latest = latest_counts(&log);
    assert_eq!(latest.len(), 20);
    assert!(latest.values().all(|&n| n == 55), "{latest:?}");
}
