//! The crate's one error type.

use core_log::serialization::SerdeError;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a user's processor returns; the runtime hands it to the processing error handler.
pub type ProcessingError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in a topology, a store or the runtime. Messages are short and lowercase;
/// the details are in the fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log underneath refused or failed (unknown topic, fenced producer, I/O, ...).
    #[error(transparent)]
    Log(#[from] core_log::Error),
    /// A topology that cannot run: a name used twice, a store nobody declared, a sink with no
    /// topic, co-partitioned topics with different partition counts, ...
    #[error("invalid topology: {reason}")]
    InvalidTopology {
        /// What is wrong, naming the node or topic.
        reason: String,
    },
    /// A setting out of its range.
    #[error("invalid config {key}={value:?}: {reason}")]
    InvalidConfig {
        /// Kafka Streams' name of the setting, e.g. `commit.interval.ms`.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A record whose key or value could not be read or written with the topic's serde.
    #[error("serde error on {topic}{}: {source}", position(.partition, .offset))]
    Serde {
        /// The topic (or store) whose bytes failed.
        topic: String,
        /// The partition, when the record came from one.
        partition: Option<u32>,
        /// The offset, when the record came from a partition.
        offset: Option<i64>,
        /// The serde's own error.
        #[source]
        source: SerdeError,
    },
    /// A user processor failed on a record.
    #[error("processor {processor:?} failed: {source}")]
    Processing {
        /// The processor's name in the topology.
        processor: String,
        /// The processor's own error.
        #[source]
        source: ProcessingError,
    },
    /// A state store failed (RocksDB reported an error, or its files are unusable).
    #[error("state store {store:?}: {reason}{}", cause(.source))]
    Store {
        /// The store's name.
        store: String,
        /// What failed, or what the store found (`cannot open <dir>`, `corrupt checkpoint`).
        reason: String,
        /// The error underneath, when one caused it (RocksDB's, the file system's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A processor asked for a store that is not connected to it.
    #[error("no state store {name:?} is connected to processor {processor:?}")]
    UnknownStore {
        /// The store asked for.
        name: String,
        /// The processor that asked.
        processor: String,
    },
    /// A dead-letter queue (`errors.dead.letter.queue.topic.name`, or a handler's
    /// [`ErrorHandling::DeadLetterQueue`](crate::ErrorHandling::DeadLetterQueue)) names a topic
    /// that does not exist. `start` checks it, as Kafka Streams checks source topics: found at
    /// the first failed record instead, it would stop the application there. Create the topic,
    /// then start again.
    #[error("dead-letter queue topic {topic:?} does not exist")]
    MissingDeadLetterTopic {
        /// The topic the config names.
        topic: String,
    },
    /// The application is not in a state that allows the call (for example starting it twice).
    #[error("illegal state: {reason}")]
    IllegalState {
        /// What the call found.
        reason: &'static str,
    },
}

impl Error {
    /// Whether retrying the same operation later can succeed (a busy state directory, a
    /// timeout), as opposed to a bug or bad input that will fail again.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Log(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// A store error found by the store itself.
    pub(crate) fn store(store: &str, reason: impl Into<String>) -> Self {
        Error::Store {
            store: store.to_owned(),
            reason: reason.into(),
            source: None,
        }
    }

    /// A store error caused by `source` while the store did `reason`.
    pub(crate) fn store_caused(
        store: &str,
        reason: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Store {
            store: store.to_owned(),
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

/// Where a record was: ` /<partition>@<offset>`, or nothing for one that came from no
/// partition (a store's bytes, a record a processor made).
fn position(partition: &Option<u32>, offset: &Option<i64>) -> String {
    match (partition, offset) {
        (Some(p), Some(o)) => format!("/{p}@{o}"),
        (Some(p), None) => format!("/{p}"),
        (None, Some(o)) => format!("@{o}"),
        (None, None) => String::new(),
    }
}

/// `: <source>` when there is one: the message says what happened underneath as well (the
/// source stays reachable through `Error::source`).
fn cause(source: &Option<Box<dyn std::error::Error + Send + Sync>>) -> String {
    source
        .as_ref()
        .map_or_else(String::new, |e| format!(": {e}"))
}
