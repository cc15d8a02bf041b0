//! [`StreamsConfig`]: Kafka Streams' settings, with Kafka's names in snake_case.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `application.id` | (required) | group id, prefix of internal topics, state directory name |
//! | `num.stream.threads` | 1 | OS threads, each with a consumer and a producer |
//! | `processing.guarantee` | `at_least_once` | or `exactly_once_v2`: one transaction per commit |
//! | `commit.interval.ms` | 30000 (100 under exactly-once) | how often tasks flush and commit |
//! | `statestore.cache.max.bytes` | 10 MiB | record cache over all stores of the instance |
//! | `statestore.uncommitted.max.bytes` | 64 MiB | exactly-once: a thread's held store writes before it commits early |
//! | `state.dir` | `<log dir>/streams-state` | where RocksDB stores live |
//! | `poll.ms` | 100 | longest a thread blocks in `poll` |
//! | `max.poll.records` | 1000 | records per poll |
//! | `rocksdb.memory.bytes` | 64 MiB | block cache and write buffers of all RocksDB stores |
//! | `default.deserialization.exception.handler` | fail | `fail`, `log-and-continue`, or the dead-letter queue |
//! | `processing.exception.handler` | fail | the same, for errors in processors |
//! | `errors.dead.letter.queue.topic.name` | none | with it, both handlers default to the dead-letter queue (the topic must exist at `start`) |
//! | `hot.keys.capacity` | 64 | counters of each hot-key summary (one per task per repartition sink); 0 turns detection off |
//! | `hot.keys.min.share` | 0.05 | a key is reported hot when its estimated share of a repartition topic's records reaches this |
//! | `hot.keys.min.records` | 1000 | records a task's router must have counted before `HotKeys::detected` splits a key |

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::hot_keys::HotKeysConfig;
use crate::state::{RocksDbConfig, RocksDbMemory};

/// The largest `hot.keys.capacity`.
const MAX_HOT_KEYS_CAPACITY: usize = 1 << 16;

/// What happens to a record that fails to deserialize or to process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorHandling {
    /// Stop: the error reaches the thread's uncaught-error handler (Kafka's default).
    Fail,
    /// Log it, count it, and go on with the next record.
    LogAndContinue,
    /// Send the record, as read, to this topic with headers saying where it came from
    /// (`__streams.errors.topic`, `.partition`, `.offset`, `.exception`, `.message`) and go on.
    DeadLetterQueue(String),
}

/// `processing.guarantee`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Commits flush output and changelogs, then commit the input offsets: after a crash,
    /// records since the last commit are processed again (`at_least_once`, the default).
    #[default]
    AtLeastOnce,
    /// Each commit is one transaction of the thread's output, changelog records and input
    /// offsets; stores apply a commit's writes only once its transaction committed
    /// (`exactly_once_v2`).
    ExactlyOnceV2,
}

/// What to do when a stream thread fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamThreadExceptionResponse {
    /// Start a new thread in its place (its tasks are reassigned).
    ReplaceThread,
    /// Stop every thread of this instance; the state becomes `Error`.
    ShutdownClient,
}

/// Settings of a streams application.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    pub(crate) application_id: String,
    pub(crate) num_stream_threads: usize,
    /// `None`: Kafka's default for the guarantee (30 s, or 100 ms under exactly-once).
    pub(crate) commit_interval_ms: Option<u64>,
    pub(crate) guarantee: ProcessingGuarantee,
    pub(crate) cache_max_bytes: usize,
    pub(crate) uncommitted_max_bytes: usize,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) poll_ms: u64,
    pub(crate) max_poll_records: usize,
    pub(crate) rocksdb_memory_bytes: usize,
    pub(crate) deserialization: ErrorHandling,
    pub(crate) processing: ErrorHandling,
    pub(crate) session_timeout_ms: u64,
    pub(crate) max_poll_interval_ms: u64,
    pub(crate) hot_keys_capacity: usize,
    pub(crate) hot_keys_min_share: f64,
    pub(crate) hot_keys_min_records: u64,
}

impl StreamsConfig {
    /// Defaults for `application.id`.
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            num_stream_threads: 1,
            commit_interval_ms: None,
            guarantee: ProcessingGuarantee::AtLeastOnce,
            cache_max_bytes: 10 * 1024 * 1024,
            uncommitted_max_bytes: 64 * 1024 * 1024,
            state_dir: None,
            poll_ms: 100,
            max_poll_records: 1000,
            rocksdb_memory_bytes: 64 * 1024 * 1024,
            deserialization: ErrorHandling::Fail,
            processing: ErrorHandling::Fail,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            hot_keys_capacity: 64,
            hot_keys_min_share: 0.05,
            hot_keys_min_records: 1_000,
        }
    }

    /// `statestore.uncommitted.max.bytes` (KIP-892; default 64 MiB, `usize::MAX` or `-1`: no
    /// limit): under exactly-once, state store writes of the open transaction are held in
    /// memory until it commits; when a thread's tasks hold more than this (serialized), the
    /// thread commits at once instead of at the next interval.
    pub fn statestore_uncommitted_max_bytes(mut self, bytes: usize) -> Self {
        self.uncommitted_max_bytes = bytes;
        self
    }

    /// `num.stream.threads`.
    pub fn num_stream_threads(mut self, n: usize) -> Self {
        self.num_stream_threads = n;
        self
    }

    /// `commit.interval.ms`.
    pub fn commit_interval_ms(mut self, ms: u64) -> Self {
        self.commit_interval_ms = Some(ms);
        self
    }

    /// `processing.guarantee`.
    pub fn processing_guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// `processing.guarantee` = `exactly_once_v2`.
    pub fn exactly_once(self) -> Self {
        self.processing_guarantee(ProcessingGuarantee::ExactlyOnceV2)
    }

    /// The commit interval in effect: the one set, else 30000 ms, or 100 ms under
    /// exactly-once (Kafka's defaults).
    pub fn effective_commit_interval_ms(&self) -> u64 {
        self.commit_interval_ms.unwrap_or(match self.guarantee {
            ProcessingGuarantee::AtLeastOnce => 30_000,
            ProcessingGuarantee::ExactlyOnceV2 => 100,
        })
    }

    /// Whether `processing.guarantee` is exactly-once.
    pub fn is_exactly_once(&self) -> bool {
        self.guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    /// `statestore.cache.max.bytes` (0 turns caching off).
    pub fn statestore_cache_max_bytes(mut self, bytes: usize) -> Self {
        self.cache_max_bytes = bytes;
        self
    }

    /// `state.dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// `poll.ms`.
    pub fn poll_ms(mut self, ms: u64) -> Self {
        self.poll_ms = ms;
        self
    }

    /// `max.poll.records`.
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// `rocksdb.memory.bytes`: the shared block cache (write buffers are charged to it).
    pub fn rocksdb_memory_bytes(mut self, bytes: usize) -> Self {
        self.rocksdb_memory_bytes = bytes;
        self
    }

    /// `default.deserialization.exception.handler`.
    pub fn deserialization_exception_handler(mut self, h: ErrorHandling) -> Self {
        self.deserialization = h;
        self
    }

    /// `processing.exception.handler`.
    pub fn processing_exception_handler(mut self, h: ErrorHandling) -> Self {
        self.processing = h;
        self
    }

    /// `errors.dead.letter.queue.topic.name`: both handlers send failed records there. The
    /// topic is not created: [`Streams::start`](crate::Streams::start) fails with
    /// `MissingDeadLetterTopic` if it does not exist.
    pub fn dead_letter_queue_topic(mut self, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        self.deserialization = ErrorHandling::DeadLetterQueue(topic.clone());
        self.processing = ErrorHandling::DeadLetterQueue(topic);
        self
    }

    /// `session.timeout.ms` of the threads' consumers.
    pub fn session_timeout_ms(mut self, ms: u64) -> Self {
        self.session_timeout_ms = ms;
        self
    }

    /// `max.poll.interval.ms` of the threads' consumers: a thread that does not come back to
    /// poll within it (a processor stuck) leaves the group, and its tasks move.
    pub fn max_poll_interval_ms(mut self, ms: u64) -> Self {
        self.max_poll_interval_ms = ms;
        self
    }

    /// `hot.keys.capacity`: counters of each hot-key summary (SpaceSaving; one per task per
    /// repartition sink); 0 turns hot-key detection off. Every key with more than
    /// `1 / capacity` of a summary's records is tracked, so it must be more than
    /// `1 / hot.keys.min.share`.
    pub fn hot_keys_capacity(mut self, counters: usize) -> Self {
        self.hot_keys_capacity = counters;
        self
    }

    /// `hot.keys.min.records`: the records a task's hot-key router must have counted before
    /// [`HotKeys::detected`](crate::HotKeys::detected) splits a key (the warm-up of its
    /// estimates).
    pub fn hot_keys_min_records(mut self, records: u64) -> Self {
        self.hot_keys_min_records = records;
        self
    }

    /// `hot.keys.min.share`: a key of a repartition topic is reported hot when its estimated
    /// share of the topic's records is at least this (in `(0, 1]`).
    pub fn hot_keys_min_share(mut self, share: f64) -> Self {
        self.hot_keys_min_share = share;
        self
    }

    /// Sets a setting by its Kafka name, e.g. `("commit.interval.ms", "100")`.
    pub fn set(self, key: &str, value: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidConfig {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| bad("not a non-negative integer"))
        };
        let handler = || match value {
            "fail" => Ok(ErrorHandling::Fail),
            "log-and-continue" => Ok(ErrorHandling::LogAndContinue),
            _ => Err(bad("fail or log-and-continue")),
        };
        Ok(match key {
            "application.id" => StreamsConfig {
                application_id: value.to_owned(),
                ..self
            },
            "num.stream.threads" => self.num_stream_threads(num()? as usize),
            "commit.interval.ms" => self.commit_interval_ms(num()?),
            "processing.guarantee" => match value {
                "at_least_once" => self.processing_guarantee(ProcessingGuarantee::AtLeastOnce),
                "exactly_once_v2" | "exactly_once" => self.exactly_once(),
                _ => return Err(bad("at_least_once or exactly_once_v2")),
            },
            "statestore.cache.max.bytes" => self.statestore_cache_max_bytes(num()? as usize),
            "statestore.uncommitted.max.bytes" => match value {
                "-1" => self.statestore_uncommitted_max_bytes(usize::MAX),
                _ => self.statestore_uncommitted_max_bytes(num()? as usize),
            },
            "state.dir" => self.state_dir(value),
            "poll.ms" => self.poll_ms(num()?),
            "max.poll.records" => self.max_poll_records(num()? as usize),
            "rocksdb.memory.bytes" => self.rocksdb_memory_bytes(num()? as usize),
            "default.deserialization.exception.handler" => {
                self.deserialization_exception_handler(handler()?)
            }
            "processing.exception.handler" => self.processing_exception_handler(handler()?),
            "errors.dead.letter.queue.topic.name" => self.dead_letter_queue_topic(value),
            "session.timeout.ms" => self.session_timeout_ms(num()?),
            "max.poll.interval.ms" => self.max_poll_interval_ms(num()?),
            "hot.keys.capacity" => self.hot_keys_capacity(num()? as usize),
            "hot.keys.min.records" => self.hot_keys_min_records(num()?),
            "hot.keys.min.share" => match value.parse::<f64>() {
                Ok(share) if share > 0.0 && share <= 1.0 => self.hot_keys_min_share(share),
                _ => return Err(bad("a number in (0, 1]")),
            },
            _ => return Err(bad("unknown setting")),
        })
    }

    /// Checks ranges: an application id that can prefix topic names, at least one thread, ...
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String, reason| {
            Err(Error::InvalidConfig {
                key: key.to_owned(),
                value,
                reason,
            })
        };
        if core_log::validate_topic_name(&format!("{}-x-changelog", self.application_id)).is_err()
            || self.application_id.is_empty()
        {
            return bad(
                "application.id",
                self.application_id.clone(),
                "must be a valid topic name prefix",
            );
        }
        if self.num_stream_threads == 0 {
            return bad("num.stream.threads", "0".into(), "at least 1");
        }
        if self.max_poll_records == 0 {
            return bad("max.poll.records", "0".into(), "at least 1");
        }
        if self.rocksdb_memory_bytes < 1024 * 1024 {
            return bad(
                "rocksdb.memory.bytes",
                self.rocksdb_memory_bytes.to_string(),
                "at least 1 MiB",
            );
        }
        if !(self.hot_keys_min_share > 0.0 && self.hot_keys_min_share <= 1.0) {
            return bad(
                "hot.keys.min.share",
                self.hot_keys_min_share.to_string(),
                "a number in (0, 1]",
            );
        }
        if self.hot_keys_capacity > MAX_HOT_KEYS_CAPACITY {
            return bad(
                "hot.keys.capacity",
                self.hot_keys_capacity.to_string(),
                "at most 65536",
            );
        }
        if self.hot_keys_capacity > 0
            && (self.hot_keys_capacity as f64) * self.hot_keys_min_share <= 1.0
        {
            return bad(
                "hot.keys.capacity",
                self.hot_keys_capacity.to_string(),
                "0, or more than 1 / hot.keys.min.share (so that every key that hot is tracked)",
            );
        }
        Ok(())
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    pub(crate) fn hot_keys_config(&self) -> HotKeysConfig {
        HotKeysConfig {
            capacity: self.hot_keys_capacity,
            min_share: self.hot_keys_min_share,
            min_records: self.hot_keys_min_records,
        }
    }

    pub(crate) fn rocksdb_config(&self) -> RocksDbConfig {
        RocksDbConfig::new(RocksDbMemory::new(self.rocksdb_memory_bytes, 0.5))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a panic is the test's failure report")]

    use super::*;

    #[test]
    fn statestore_uncommitted_max_bytes_takes_bytes_or_minus_one_for_no_limit() {
        let c = StreamsConfig::new("app");
        assert_eq!(c.uncommitted_max_bytes, 64 * 1024 * 1024);
        let c = c.set("statestore.uncommitted.max.bytes", "4096").unwrap();
        assert_eq!(c.uncommitted_max_bytes, 4096);
        let c = c.set("statestore.uncommitted.max.bytes", "-1").unwrap();
        assert_eq!(c.uncommitted_max_bytes, usize::MAX);
        assert!(matches!(
            c.set("statestore.uncommitted.max.bytes", "-2"),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
