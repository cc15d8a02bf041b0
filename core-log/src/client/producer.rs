//! The producer: Kafka's `KafkaProducer` over the embedded log.
//!
//! `send` serializes the key and value, picks the partition, and encodes the record into that
//! partition's open batch in the record accumulator; one background sender thread appends
//! ready batches to the log and completes each record's [`DeliveryFuture`] or callback with its
//! offset. A batch is ready when it reaches `batch.size`, when `linger.ms` has passed since its
//! first record, on `flush`, and on `close`.
//!
//! See [`Producer`] for an example.
//!
//! Timestamps: a record without one gets the system clock's time at `send` (Kafka's
//! create time); a topic with `message.timestamp.type=LogAppendTime` replaces it with the
//! log's clock at append, and the delivery report carries that time.

mod accumulator;
mod config;
mod delivery;
mod partitioner;
mod sender;
mod transaction;

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

pub use config::{Acks, ProducerConfig};
pub use delivery::{DeliveryFuture, RecordMetadata};
pub use partitioner::{Partitioner, PartitionerKind, murmur2, partition_for_key, to_positive};
pub use transaction::Transaction;

use accumulator::{Accumulator, Limits, RecordParts, record_size_upper_bound};
pub use delivery::SharedCallback;
use delivery::{Appended, BatchCompletion, Callback, RecordInfo};
use partitioner::Placement;

use crate::broker::Broker;
use crate::clock::Clock;
use crate::codec::BATCH_HEADER_LEN;
use crate::coordinator::producer_id::ProducerIdentity;
use crate::error::{Error, Result};
use crate::record::Header;
use crate::serialization::Serializer;

/// A record to send: Kafka's `ProducerRecord`, borrowing its parts (they are serialized
/// during `send`, so nothing needs to outlive the call).
///
/// ```
/// use core_log::{Header, ProducerRecord};
/// let headers = [Header { key: "trace-id", value: Some(b"abc") }];
/// let r: ProducerRecord<'_, str, str> = ProducerRecord::new("likes")
///     .key("product-42")
///     .value("+1")
///     .timestamp(1_700_000_000_000)
///     .headers(&headers);
/// assert_eq!(r.partition, None); // the partitioner chooses
/// ```
pub struct ProducerRecord<'a, K: ?Sized, V: ?Sized> {
    /// The topic.
    pub topic: &'a str,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// The key; `None` for a keyless record.
    pub key: Option<&'a K>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a V>,
    /// Create time in milliseconds since the epoch; `None` takes the time of `send`.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: &'a [Header<'a>],
}

impl<'a, K: ?Sized, V: ?Sized> ProducerRecord<'a, K, V> {
    /// A record for `topic` with no key, no value, no partition, no timestamp and no headers.
    pub fn new(topic: &'a str) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: None,
            timestamp: None,
            headers: &[],
        }
    }
    /// Sets the key.
    pub fn key(mut self, key: &'a K) -> Self {
        self.key = Some(key);
        self
    }
    /// Sets the value.
    pub fn value(mut self, value: &'a V) -> Self {
        self.value = Some(value);
        self
    }
    /// Sets the partition, overriding the partitioner.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
    /// Sets the create time in milliseconds since the epoch.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
    /// Sets the headers.
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }
}

// Manual impls: derives would demand `K: Clone` although only references are copied.
impl<K: ?Sized, V: ?Sized> Clone for ProducerRecord<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: ?Sized, V: ?Sized> Copy for ProducerRecord<'_, K, V> {}

impl<K: ?Sized + std::fmt::Debug, V: ?Sized + std::fmt::Debug> std::fmt::Debug
    for ProducerRecord<'_, K, V>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("timestamp", &self.timestamp)
            .field("headers", &self.headers)
            .finish()
    }
}

/// What the sender thread shares with the producer handle.
pub(crate) struct Shared {
    log: Broker,
    config: ProducerConfig,
    accumulator: Accumulator,
    /// With idempotence, the id and epoch the log assigned. A transactional producer gets
    /// them from `init_transactions`, and a new epoch at every commit or abort.
    identity: Mutex<Option<ProducerIdentity>>,
    /// With a `transactional.id`: the open transaction's state.
    txn: Option<transaction::TxnState>,
}

impl Shared {
    fn identity_lock(&self) -> std::sync::MutexGuard<'_, Option<ProducerIdentity>> {
        crate::sync::lock(&self.identity)
    }
}

/// Kafka's `KafkaProducer`: sends records to the log's topics, batching them per partition.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use core_log::serialization::StringSerde;
/// use core_log::{Log, Producer, ProducerConfig, ProducerRecord, TopicConfig};
///
/// let log = Log::open(dir.path())?;
/// log.create_topic("likes", 3, TopicConfig::default())?;
/// let producer: Producer<str, str> =
///     Producer::new(&log, ProducerConfig::default(), StringSerde, StringSerde)?;
///
/// // A future per record (await it in async code, or wait for it)...
/// let sent = producer.send(ProducerRecord::new("likes").key("product-42").value("+1"))?;
/// let metadata = sent.wait()?;
/// assert_eq!(metadata.partition, core_log::partition_for_key(b"product-42", 3));
/// assert_eq!(metadata.offset, 0);
///
/// // ... or a delivery-report callback, called on the sender thread.
/// producer.send_with_callback(ProducerRecord::new("likes").value("anonymous"), |result| {
///     if let Err(e) = result {
///         eprintln!("delivery failed: {e}");
///     }
/// })?;
/// producer.flush(); // every record sent so far is appended, its callback called
/// producer.close();
/// # Ok::<(), core_log::Error>(())
/// ```
///
/// `K` and `V` are the key and value types, unsized types included (`Producer<str, [u8]>`):
/// records borrow them. The serializers are boxed trait objects, so the producer's type names
/// only `K` and `V` and can be stored and passed around freely; the cost is one virtual call
/// per serialization, small next to encoding the record.
///
/// A producer is `Send + Sync`: share it between threads (`Arc<Producer<..>>`), as Kafka's
/// producer is shared. Records of one partition are appended in the order their `send` calls
/// returned.
///
/// Errors of `send` concern that record only and lose nothing else: serialization, an unknown
/// topic or partition, a record larger than `max.request.size` or `buffer.memory`, a full
/// `buffer.memory` for longer than `max.block.ms` (`Error::Timeout`), a closed producer. An
/// append the log refuses fails every record of that batch (with a copy of the log's error);
/// later batches go on. Nothing is retried: the log does not fail transiently. Note that a
/// topic whose `max.message.bytes` is below `batch.size` can refuse whole batches.
pub struct Producer<K: ?Sized, V: ?Sized> {
    shared: Arc<Shared>,
    key_serializer: Box<dyn Serializer<K>>,
    value_serializer: Box<dyn Serializer<V>>,
    /// The log's clock: records without a timestamp get its time, as in tests with a
    /// `ManualClock`.
    clock: Arc<dyn Clock>,
    sender: Mutex<Option<JoinHandle<()>>>,
    sender_thread: ThreadId,
    /// The partition counts of the topics sent to, so that a send does not look its topic up
    /// in the log's shared topic map (a lock and a hash every record, bouncing between the
    /// threads of every producer).
    partition_counts: Mutex<PartitionCounts>,
}

/// Partition counts as of one metadata version of the log (topics created, deleted or given
/// more partitions bump it, and the counts are looked up again).
#[derive(Default)]
struct PartitionCounts {
    version: u64,
    counts: Vec<(Box<str>, u32)>,
}

/// At most this many topics' counts are kept; a producer sending to more looks the others up.
const PARTITION_COUNTS_KEPT: usize = 32;

impl<K: ?Sized, V: ?Sized> std::fmt::Debug for Producer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.shared.config)
            .field("identity", &*self.shared.identity_lock())
            .finish_non_exhaustive()
    }
}

/// Serialization buffers, one pair per thread, reused across sends of every producer.
#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Larger scratch buffers are given back after the send instead of being kept.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl<K: ?Sized, V: ?Sized> Producer<K, V> {
    /// A producer for `log` (a [`Log`](crate::Log), or its [`Broker`]) that starts its sender
    /// thread. With `enable.idempotence` it asks
    /// the log for a producer id first. Fails with `InvalidConfig` if a setting is out of
    /// Kafka's range.
    pub fn new(
        log: &impl AsRef<Broker>,
        config: ProducerConfig,
        key_serializer: impl Serializer<K> + 'static,
        value_serializer: impl Serializer<V> + 'static,
    ) -> Result<Self> {
        let log = log.as_ref();
        config.validate()?;
        // A transactional producer gets its id from the transaction coordinator, in
        // `init_transactions`.
        let identity = if config.enable_idempotence && config.transactional_id.is_none() {
            Some(log.init_producer_id()?)
        } else {
            None
        };
        let txn = config
            .transactional_id
            .clone()
            .map(|id| transaction::TxnState::new(id, config.transaction_timeout_ms as i64));
        let limits = Limits {
            batch_size: config.batch_size,
            linger: Duration::from_millis(config.linger_ms),
            buffer_memory: config.buffer_memory,
            max_block: Duration::from_millis(config.max_block_ms),
        };
        let shared = Arc::new(Shared {
            log: log.clone(),
            config,
            accumulator: Accumulator::new(limits),
            identity: Mutex::new(identity),
            txn,
        });
        let for_sender = shared.clone();
        let handle = std::thread::Builder::new()
            .name("producer-sender".into())
            .spawn(move || sender::run(for_sender))
            .map_err(Error::io(log.dir()))?;
        Ok(Producer {
            sender_thread: handle.thread().id(),
            shared,
            key_serializer: Box::new(key_serializer),
            value_serializer: Box::new(value_serializer),
            clock: log.clock(),
            sender: Mutex::new(Some(handle)),
            partition_counts: Mutex::default(),
        })
    }

    /// The producer's settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    /// Sends a record: serializes it, places it in its partition's batch and returns a future
    /// of its [`RecordMetadata`]. Blocks only while `buffer.memory` is full, up to
    /// `max.block.ms`. With `acks=0` the future is already resolved (offset -1).
    ///
    /// An `Err` concerns this record only (see [`Producer`]); the record was not sent.
    pub fn send(&self, record: ProducerRecord<'_, K, V>) -> Result<DeliveryFuture> {
        let (completion, info) = self.enqueue(&record, None)?;
        Ok(match self.shared.config.acks {
            Acks::Zero => DeliveryFuture::ready(info.metadata(
                &completion.topic,
                completion.partition,
                Appended {
                    base_offset: -1,
                    log_append_time: None,
                },
            )),
            Acks::One | Acks::All => DeliveryFuture::pending(completion, info),
        })
    }

    /// Sends a record and calls `callback` once with its outcome (the delivery-report
    /// pattern), on the producer's sender thread, in the order of the partition's records:
    /// keep it short, and do not call [`Producer::flush`] from it.
    ///
    /// Exactly one of two things happens: this returns `Err` (the record was not sent and the
    /// callback is dropped uncalled), or it returns `Ok` and the callback is called once.
    ///
    /// The callback must not block on the producer: waiting there for another record's
    /// [`DeliveryFuture`] would wait for the very thread it runs on.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord<'_, K, V>,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        self.enqueue(&record, Some(Callback::Once(Box::new(callback))))
            .map(|_| ())
    }

    /// [`Producer::send_with_callback`] with a callback many records share: it is called once
    /// for each of them, in the same order and on the same thread. A batch keeps one reference
    /// to it for all its records, so a send does not allocate for its callback.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use core_log::serialization::StringSerde;
    /// use core_log::{Log, Producer, ProducerConfig, ProducerRecord, SharedCallback, TopicConfig};
    ///
    /// let log = Log::open(dir.path())?;
    /// log.create_topic("likes", 1, TopicConfig::default())?;
    /// let producer: Producer<str, str> =
    ///     Producer::new(&log, ProducerConfig::default(), StringSerde, StringSerde)?;
    /// let delivered = Arc::new(AtomicUsize::new(0));
    /// let counter = delivered.clone();
    /// let callback: SharedCallback = Arc::new(move |r| {
    ///     if r.is_ok() {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// for _ in 0..3 {
    ///     producer.send_with_shared_callback(ProducerRecord::new("likes").value("+1"), &callback)?;
    /// }
    /// producer.flush();
    /// assert_eq!(delivered.load(Ordering::Relaxed), 3);
    /// # Ok::<(), core_log::Error>(())
    /// ```
    pub fn send_with_shared_callback(
        &self,
        record: ProducerRecord<'_, K, V>,
        callback: &SharedCallback,
    ) -> Result<()> {
        self.enqueue(&record, Some(Callback::Shared(callback)))
            .map(|_| ())
    }

    /// Makes every buffered record ready to send and waits until every record sent before the
    /// call is appended (or failed) and its callback has run. Records sent meanwhile by other
    /// threads may or may not be waited for.
    ///
    /// Called from a delivery callback (the sender thread), waiting would deadlock: it logs an
    /// error and returns at once.
    pub fn flush(&self) {
        if std::thread::current().id() == self.sender_thread {
            tracing::error!("Producer::flush called from a delivery callback; not waiting");
            return;
        }
        self.shared.accumulator.flush();
    }

    /// Closes the producer: later sends fail with `Error::Closed`, every record sent so far is
    /// appended and reported, and the sender thread stops. Waits for all of that, except when
    /// called from a delivery callback (then the sender finishes on its own). Dropping the
    /// producer closes it.
    pub fn close(&self) {
        self.shared.accumulator.close();
        if std::thread::current().id() == self.sender_thread {
            return;
        }
        // Held while joining, so that a concurrent close also returns only once it is done.
        let mut sender = crate::sync::lock(&self.sender);
        if let Some(handle) = sender.take()
            && handle.join().is_err()
        {
            tracing::error!("the producer's sender thread panicked");
        }
    }

    /// `topic`'s partition count, from [`PartitionCounts`] when it holds the log's current
    /// metadata version. The version is read before the count, so a change made in between
    /// bumps it past what is kept and the next send looks again.
    fn partition_count(&self, topic: &str) -> Result<u32> {
        self.shared.log.check_open()?;
        let version = self.shared.log.metadata_version();
        let mut kept = crate::sync::lock(&self.partition_counts);
        if kept.version != version {
            kept.version = version;
            kept.counts.clear();
        }
        if let Some(&(_, count)) = kept.counts.iter().find(|(t, _)| &**t == topic) {
            return Ok(count);
        }
        let count = self.shared.log.partition_count(topic)?;
        if kept.counts.len() < PARTITION_COUNTS_KEPT {
            kept.counts.push((topic.into(), count));
        }
        Ok(count)
    }

    fn enqueue(
        &self,
        record: &ProducerRecord<'_, K, V>,
        callback: Option<Callback<'_>>,
    ) -> Result<(Arc<BatchCompletion>, RecordInfo)> {
        let mut callback = callback;
        let done = SCRATCH.try_with(|cell| {
            let mut scratch = cell.try_borrow_mut().ok()?;
            let r = self.enqueue_with(&mut scratch, record, &mut callback);
            let Scratch { key, value } = &mut *scratch;
            for buf in [key, value] {
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
            }
            Some(r)
        });
        match done {
            Ok(Some(r)) => r,
            // The thread's buffers are in use (a serializer that sends) or being destroyed.
            _ => self.enqueue_with(&mut Scratch::default(), record, &mut callback),
        }
    }

    fn enqueue_with(
        &self,
        scratch: &mut Scratch,
        record: &ProducerRecord<'_, K, V>,
        callback: &mut Option<Callback<'_>>,
    ) -> Result<(Arc<BatchCompletion>, RecordInfo)> {
        let topic = record.topic;
        if let Some(txn) = &self.shared.txn {
            txn.check_open()?;
        }
        if let Some(ts) = record.timestamp
            && ts < 0
        {
            return Err(Error::InvalidRecord {
                reason: "a record timestamp must not be negative",
            });
        }
        let count = self.partition_count(topic).map_err(|e| match e {
            Error::UnknownTopicOrPartition { topic, .. } => Error::UnknownTopicOrPartition {
                topic,
                partition: record.partition.unwrap_or(0),
            },
            e => e,
        })?;
        let unknown = |partition| Error::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition,
        };

        scratch.key.clear();
        scratch.value.clear();
        let key = match record.key {
            Some(k) => {
                self.key_serializer
                    .serialize(topic, k, &mut scratch.key)
                    .map_err(|source| Error::Serialization {
                        topic: topic.to_string(),
                        part: "key",
                        source,
                    })?;
                Some(&scratch.key[..])
            }
            None => None,
        };
        let value = match record.value {
            Some(v) => {
                self.value_serializer
                    .serialize(topic, v, &mut scratch.value)
                    .map_err(|source| Error::Serialization {
                        topic: topic.to_string(),
                        part: "value",
                        source,
                    })?;
                Some(&scratch.value[..])
            }
            None => None,
        };

        let placement = match record.partition {
            Some(p) if p < count => Placement::Fixed(p),
            Some(p) => return Err(unknown(p)),
            None => match &self.shared.config.partitioner {
                PartitionerKind::BuiltIn => match key {
                    Some(k) => Placement::Fixed(partition_for_key(k, count)),
                    None => Placement::Sticky,
                },
                PartitionerKind::RoundRobin => Placement::RoundRobin,
                PartitionerKind::Custom(partitioner) => {
                    let p = partitioner.partition(topic, key, value, count);
                    if p >= count {
                        return Err(unknown(p));
                    }
                    Placement::Fixed(p)
                }
            },
        };

        let size = BATCH_HEADER_LEN + record_size_upper_bound(key, value, record.headers);
        let config = &self.shared.config;
        if size > config.max_request_size {
            return Err(Error::RecordTooLarge {
                size,
                max: config.max_request_size,
            });
        }
        if size > config.buffer_memory {
            return Err(Error::RecordTooLarge {
                size,
                max: config.buffer_memory,
            });
        }
        // Serialized sizes are below max.request.size, itself below 2^31.
        let sizes = (
            key.map_or(-1, |k| k.len() as i32),
            value.map_or(-1, |v| v.len() as i32),
        );
        let parts = RecordParts {
            key,
            value,
            timestamp: record.timestamp.unwrap_or_else(|| self.clock.now_ms()),
            headers: record.headers,
            batch_size_upper_bound: size,
        };
        self.shared
            .accumulator
            .append(topic, count, placement, &parts, sizes, callback.take())
    }
}

impl<K: ?Sized, V: ?Sized> Drop for Producer<K, V> {
    fn drop(&mut self) {
        self.close();
    }
}
