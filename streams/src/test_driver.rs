//! [`TopologyTestDriver`]: runs a topology synchronously and deterministically, for tests.
//!
//! It is a real log in a temporary directory with a [`ManualClock`], and the same tasks,
//! stores and changelogs the application runs, without threads or consumer groups: every task
//! of every sub-topology for every partition, each reading its partitions directly. Unlike
//! Kafka's driver it supports several partitions, and repartition topics are real topics.
//! After each piped record the driver processes until no task has input left and commits
//! (flushing caches, as Kafka's driver does), so outputs appear record by record.
//!
//! ```
//! use streams::{Consumed, Materialized, Produced, StreamsBuilder, StreamsConfig, TopologyTestDriver};
//! use streams::serde::{IntegerSerde, Nullable, StringSerde};
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("likes", Consumed::with(StringSerde, StringSerde))
//!     .group_by_key()
//!     .count(Materialized::named("counts"))
//!     .to_stream()
//!     .to("counts", Produced::with(StringSerde, Nullable(IntegerSerde)));
//! let mut driver = TopologyTestDriver::new(builder.build()?, StreamsConfig::new("app"))?;
//! let likes = driver.input_topic("likes", StringSerde, StringSerde);
//! let counts = driver.output_topic("counts", StringSerde, Nullable(IntegerSerde));
//! likes.pipe_input(&mut driver, &"p1".to_string(), &"like".to_string(), 0)?;
//! likes.pipe_input(&mut driver, &"p1".to_string(), &"like".to_string(), 1)?;
//! let out: Vec<_> = counts.read_key_values(&mut driver)?;
//! assert_eq!(out, vec![("p1".to_string(), Some(1i64)), ("p1".to_string(), Some(2))]);
//! # Ok::<(), streams::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use core_log::{Log, ManualClock, OwnedHeader, ProducerConfig, Record as LogRecord};

use crate::builder::{Data, Key};
use crate::client::{Admin, KafkaClientSupplier};
use crate::config::StreamsConfig;
use crate::error::{Error, Result};
use crate::hot_keys::RepartitionHotKeys;
use crate::processor::context::TaskId;
use crate::record_collector::SendErrors;
use crate::runtime::task::{Task, TaskEnv};
use crate::runtime::thread::restore_consumer_config;
use crate::serde::{Serde, SharedSerde, encode};
use crate::topology::Topology;
use crate::window::{SlotKey, Window};

/// A synchronous, deterministic harness for a topology.
pub struct TopologyTestDriver {
    log: Log,
    clock: ManualClock,
    topology: Topology,
    env: TaskEnv,
    tasks: BTreeMap<TaskId, Task>,
    /// Next offset each task reads in each of its input partitions.
    inputs: BTreeMap<TaskId, Vec<(Arc<str>, u32, i64)>>,
    /// Next offset read by output topics.
    outputs: HashMap<(String, u32), i64>,
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl TopologyTestDriver {
    /// A driver whose missing topics get one partition.
    pub fn new(topology: Topology, config: StreamsConfig) -> Result<Self> {
        Self::with_partitions(topology, config, 1)
    }

    /// A driver whose missing source and sink topics get `partitions` partitions (repartition
    /// and changelog topics follow them).
    pub fn with_partitions(
        topology: Topology,
        config: StreamsConfig,
        partitions: u32,
    ) -> Result<Self> {
        config.validate()?;
        let dir = tempfile::tempdir().map_err(|e| {
            Error::store_caused("test driver", "cannot create a temporary directory", e)
        })?;
        let clock = ManualClock::new(0);
        let log = Log::builder(dir.path().join("log"))
            .clock(clock.clone())
            .background_maintenance(false)
            .open()?;
        let app = config.application_id.clone();
        // The tasks reach the log through the client seam, as an application's do; the
        // driver itself pipes and reads with the log (see the module's doc).
        let clients: &dyn KafkaClientSupplier = &log;
        let admin: Arc<dyn Admin> = Arc::from(clients.admin()?);
        let counts =
            crate::runtime::topics::prepare(&*admin, &topology, &app, Some(partitions.max(1)))?;
        let producer = clients.producer(ProducerConfig::default().linger_ms(0))?;
        let stores: usize = topology.inner.stores.len().max(1);
        let env = TaskEnv {
            application_id: app.as_str().into(),
            admin,
            restore_consumer: Arc::new(Mutex::new(
                clients.restore_consumer(restore_consumer_config(&app, 0))?,
            )),
            clock: clients.clock(),
            producer: Arc::from(producer),
            send_errors: SendErrors::default(),
            state_dir: dir.path().join("state"),
            rocksdb: config.rocksdb_config(),
            cache_bytes_per_store: config.cache_max_bytes / stores,
            deserialization: config.deserialization.clone(),
            processing: config.processing.clone(),
            exactly_once: false,
            hot_keys: config.hot_keys_config(),
        };
        let mut driver = TopologyTestDriver {
            log,
            clock,
            topology,
            env,
            tasks: BTreeMap::new(),
            inputs: BTreeMap::new(),
            outputs: HashMap::new(),
            buf: Vec::new(),
            _dir: dir,
        };
        for (sub, &n) in counts.iter().enumerate() {
            for partition in 0..n {
                let id = TaskId {
                    subtopology: sub as u32,
                    partition,
                };
                let task = Task::new(&driver.topology, id, &driver.env)?;
                let inputs = task
                    .source_topics()
                    .map(|t| (Arc::<str>::from(t), partition, 0))
                    .collect();
                driver.inputs.insert(id, inputs);
                driver.tasks.insert(id, task);
            }
        }
        Ok(driver)
    }

    /// The log under the driver, to create topics or look at any of them.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// A typed handle to pipe records into `topic`.
    pub fn input_topic<K, V>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> TestInputTopic<K, V> {
        TestInputTopic {
            topic: topic.to_owned(),
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }

    /// A typed handle to read what the topology wrote to `topic`.
    pub fn output_topic<K, V>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> TestOutputTopic<K, V> {
        TestOutputTopic {
            topic: topic.to_owned(),
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }

    /// Appends a raw record and processes until idle.
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<()> {
        let partitions = self.log.partition_count(topic)?;
        let partition = match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => core_log::partition_for_key(k, partitions),
            (None, None) => 0,
        };
        self.log
            .partition(topic, partition)?
            .append(&[LogRecord::new(key, value).timestamp(timestamp)])?;
        self.run()
    }

    /// Moves the wall clock forward, runs due wall-clock punctuations, and processes until idle.
    pub fn advance_wall_clock_time(&mut self, ms: i64) -> Result<()> {
        self.clock.advance_ms(ms);
        for task in self.tasks.values_mut() {
            task.punctuate_wall_clock()?;
        }
        self.run()
    }

    /// The entries of store `name` over every task (partition) that has it.
    pub fn key_value_store<K, V>(&mut self, name: &str) -> Result<Vec<(K, V)>>
    where
        K: Key,
        V: Data,
    {
        let mut out = Vec::new();
        let mut found = false;
        for task in self.tasks.values_mut() {
            if let Some(store) = task.store::<K, V>(name) {
                found = true;
                out.extend(store.all()?);
            }
        }
        if !found {
            return Err(Error::UnknownStore {
                name: name.to_owned(),
                processor: "test driver".into(),
            });
        }
        Ok(out)
    }

    /// The hot keys of the repartition topics, as [`Streams::metrics`] reports them: per
    /// topic, merged over every task, the keys whose estimated share is at least
    /// `hot.keys.min.share`. Rates need the wall clock to move
    /// ([`TopologyTestDriver::advance_wall_clock_time`]): a rate window closes at the first
    /// commit at least 1 s after it opened.
    ///
    /// [`Streams::metrics`]: crate::Streams::metrics
    pub fn hot_keys(&self) -> Vec<RepartitionHotKeys> {
        let snapshots: Vec<_> = self
            .tasks
            .values()
            .flat_map(|t| t.hot_keys().snapshot())
            .collect();
        crate::hot_keys::merge(&snapshots, self.env.hot_keys.min_share)
    }

    /// Processes until no task has input left, commits, and again until the commit produced no
    /// new input.
    fn run(&mut self) -> Result<()> {
        loop {
            if self.process_available()? > 0 {
                continue;
            }
            self.commit()?;
            if self.process_available()? == 0 {
                return Ok(());
            }
        }
    }

    fn process_available(&mut self) -> Result<u64> {
        let mut processed = 0;
        for (id, inputs) in &mut self.inputs {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            for (topic, partition, next) in inputs.iter_mut() {
                let p = self.log.partition(topic, *partition)?;
                read_new(&p, next, &mut self.buf, |r| {
                    task.process(
                        topic,
                        *partition,
                        r.offset,
                        r.timestamp,
                        r.key.map(bytes::Bytes::copy_from_slice),
                        r.value.map(bytes::Bytes::copy_from_slice),
                        owned_headers(&r),
                    )?;
                    processed += 1;
                    Ok(())
                })?;
            }
        }
        self.env.producer.flush();
        self.check_sends()?;
        Ok(processed)
    }

    fn commit(&mut self) -> Result<()> {
        for task in self.tasks.values_mut() {
            task.prepare_commit()?;
        }
        self.env.producer.flush();
        self.check_sends()?;
        for task in self.tasks.values_mut() {
            task.finish_commit()?;
        }
        Ok(())
    }

    fn check_sends(&mut self) -> Result<()> {
        match self.env.send_errors.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The windows of `key` in the time-window store `name` (of a windowed count, reduce or
    /// aggregate) that start in `[from, to]` (Kafka's `WindowStore::fetch`), as (start, value)
    /// in start order.
    pub fn window_store_fetch<K, V>(
        &mut self,
        name: &str,
        key: &K,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, V)>>
    where
        K: Key,
        V: Data,
    {
        let lo = SlotKey::bound(from);
        let hi = SlotKey::bound(to.saturating_add(1));
        let mut out = Vec::new();
        for (slot, v) in self.window_slots::<K, V>(name, Some(&lo), Some(&hi))? {
            if slot.key.as_ref() == Some(key) {
                out.push((slot.time, v));
            }
        }
        Ok(out)
    }

    /// The sessions of `key` in the session-window store `name`, in end order.
    pub fn session_store_fetch<K, V>(&mut self, name: &str, key: &K) -> Result<Vec<(Window, V)>>
    where
        K: Key,
        V: Data,
    {
        let mut out = Vec::new();
        for (slot, v) in self.window_slots::<K, V>(name, None, None)? {
            if slot.key.as_ref() == Some(key) {
                out.push((Window::new(slot.other, slot.time), v));
            }
        }
        Ok(out)
    }

    fn window_slots<K, V>(
        &mut self,
        name: &str,
        from: Option<&SlotKey<K>>,
        to: Option<&SlotKey<K>>,
    ) -> Result<Vec<(SlotKey<K>, V)>>
    where
        K: Key,
        V: Data,
    {
        let mut out = Vec::new();
        let mut found = false;
        for task in self.tasks.values_mut() {
            if let Some(store) = task.store::<SlotKey<K>, V>(name) {
                found = true;
                out.extend(store.range(from, to)?);
            }
        }
        if !found {
            return Err(Error::UnknownStore {
                name: name.to_owned(),
                processor: "test driver".into(),
            });
        }
        Ok(out)
    }

    /// Closes every task (committing first).
    pub fn close(mut self) -> Result<()> {
        self.commit()?;
        for (_, task) in std::mem::take(&mut self.tasks) {
            task.close()?;
        }
        Ok(())
    }
}

/// Pipes typed records into a topic of a [`TopologyTestDriver`].
pub struct TestInputTopic<K, V> {
    topic: String,
    key: SharedSerde<K>,
    value: SharedSerde<V>,
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    /// Writes `key`/`value` at `timestamp` (to the key's partition) and processes until idle.
    pub fn pipe_input(
        &self,
        driver: &mut TopologyTestDriver,
        key: &K,
        value: &V,
        timestamp: i64,
    ) -> Result<()> {
        let serde_error = |source| Error::Serde {
            topic: self.topic.clone(),
            partition: None,
            offset: None,
            source,
        };
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let has_key = encode(&*self.key, &self.topic, key, &mut k).map_err(serde_error)?;
        let has_value = encode(&*self.value, &self.topic, value, &mut v).map_err(serde_error)?;
        driver.pipe_raw(
            &self.topic,
            None,
            has_key.then_some(&k[..]),
            has_value.then_some(&v[..]),
            timestamp,
        )
    }

    /// Writes every record, then processes until idle and commits once: the record caches
    /// collapse repeated updates of a key within the batch, as between two commits of an
    /// application.
    pub fn pipe_inputs(
        &self,
        driver: &mut TopologyTestDriver,
        records: &[(K, V, i64)],
    ) -> Result<()> {
        let serde_error = |source| Error::Serde {
            topic: self.topic.clone(),
            partition: None,
            offset: None,
            source,
        };
        let partitions = driver.log.partition_count(&self.topic)?;
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for (key, value, timestamp) in records {
            let has_key = encode(&*self.key, &self.topic, key, &mut k).map_err(serde_error)?;
            let has_value =
                encode(&*self.value, &self.topic, value, &mut v).map_err(serde_error)?;
            let partition = if has_key {
                core_log::partition_for_key(&k, partitions)
            } else {
                0
            };
            let record = LogRecord::new(has_key.then_some(&k[..]), has_value.then_some(&v[..]))
                .timestamp(*timestamp);
            driver
                .log
                .partition(&self.topic, partition)?
                .append(&[record])?;
        }
        driver.run()
    }
}

/// A record read from an output topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRecord<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// The timestamp.
    pub timestamp: i64,
    /// The partition it was written to.
    pub partition: u32,
    /// Its headers.
    pub headers: Vec<OwnedHeader>,
}

/// Reads typed records from a topic of a [`TopologyTestDriver`].
pub struct TestOutputTopic<K, V> {
    topic: String,
    key: SharedSerde<K>,
    value: SharedSerde<V>,
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    /// The records written since the last read, partition by partition, each in offset order.
    pub fn read_records(&self, driver: &mut TopologyTestDriver) -> Result<Vec<TestRecord<K, V>>> {
        let partitions = driver.log.partition_count(&self.topic)?;
        let mut out = Vec::new();
        for partition in 0..partitions {
            let p = driver.log.partition(&self.topic, partition)?;
            let next = driver
                .outputs
                .entry((self.topic.clone(), partition))
                .or_insert(0);
            let mut buf = Vec::new();
            read_new(&p, next, &mut buf, |r| {
                let serde_error = |source| Error::Serde {
                    topic: self.topic.clone(),
                    partition: Some(partition),
                    offset: Some(r.offset),
                    source,
                };
                let key = match r.key {
                    Some(k) => self.key.deserialize(&self.topic, k).map_err(serde_error)?,
                    None => match self.key.null() {
                        Some(k) => k,
                        None => self
                            .key
                            .deserialize(&self.topic, &[])
                            .map_err(serde_error)?,
                    },
                };
                let value = match r.value {
                    Some(v) => self
                        .value
                        .deserialize(&self.topic, v)
                        .map_err(serde_error)?,
                    None => match self.value.null() {
                        Some(v) => v,
                        None => {
                            return Err(serde_error(
                                "a null value, and the value serde has no null (use Nullable)"
                                    .into(),
                            ));
                        }
                    },
                };
                let headers = owned_headers(&r);
                out.push(TestRecord {
                    key,
                    value,
                    timestamp: r.timestamp,
                    partition,
                    headers,
                });
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// The keys and values written since the last read.
    pub fn read_key_values(&self, driver: &mut TopologyTestDriver) -> Result<Vec<(K, V)>> {
        Ok(self
            .read_records(driver)?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }

    /// The last value per key written since the last read.
    pub fn read_key_values_to_map(&self, driver: &mut TopologyTestDriver) -> Result<HashMap<K, V>>
    where
        K: std::hash::Hash + Eq,
    {
        Ok(self
            .read_records(driver)?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }
}

/// Reads `p` from `*next` to its high watermark, calling `f` on each record and moving
/// `*next` past what was read.
fn read_new(
    p: &core_log::Partition,
    next: &mut i64,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(core_log::codec::RecordRef<'_>) -> Result<()>,
) -> Result<()> {
    while *next < p.high_watermark()? {
        let fetch = p.read_into(*next, 1 << 20, buf)?;
        let after = fetch.next_offset();
        for r in fetch.records() {
            f(r)?;
        }
        if after <= *next {
            break;
        }
        *next = after;
    }
    Ok(())
}

/// A record's headers, owned.
fn owned_headers(r: &core_log::codec::RecordRef<'_>) -> Vec<OwnedHeader> {
    r.headers()
        .filter_map(|h| h.ok())
        .map(|h| OwnedHeader {
            key: h.key.to_owned(),
            value: h.value.map(<[u8]>::to_vec),
        })
        .collect()
}
