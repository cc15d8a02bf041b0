//! The change-logging layer (Kafka Streams' `ChangeLoggingKeyValueBytesStore`): every write
//! of a logged store is sent to its changelog topic, `<application.id>-<store>-changelog`,
//! before it is staged in the backend.
//!
//! ```text
//!  write(key, value) ──1──▶ RecordCollector::send_changelog ──▶ changelog partition
//!                    ──2──▶ backend.put (staged; applied by write(checkpoint))
//! ```
//!
//! The changelog comes first: if it refuses the record, the backend has not changed either.
//! The layer works on bytes, below the serdes; the record collector owns the producer and
//! tracks the changelog's end offset, which becomes the store's checkpoint.

use std::sync::Arc;

use crate::error::Result;
use crate::record_collector::{ChangelogId, RecordCollector};
use crate::state::{KeyValue, KeyValueStore};

/// Where a logged store sends its changes: its task's collector and its changelog partition
/// there.
pub(crate) struct Changelog {
    pub collector: Arc<RecordCollector>,
    pub id: ChangelogId,
}

/// A backend, with its writes logged when the store has a changelog.
pub(crate) struct ChangeLogging {
    backend: Box<dyn KeyValueStore>,
    changelog: Option<Changelog>,
}

impl ChangeLogging {
    pub(crate) fn new(backend: Box<dyn KeyValueStore>, changelog: Option<Changelog>) -> Self {
        ChangeLogging { backend, changelog }
    }

    /// Logs a write of `key` (`None`: a delete) and stages it in the backend.
    #[inline]
    pub(crate) fn put(&mut self, key: &[u8], value: Option<&[u8]>, timestamp: i64) -> Result<()> {
        if let Some(log) = &self.changelog {
            log.collector
                .send_changelog(log.id, key, value, timestamp)?;
        }
        self.backend.put(key, value);
        Ok(())
    }

    /// Applies the staged writes, with the checkpoint when given (see
    /// [`KeyValueStore::write`]).
    pub(crate) fn write(&mut self, checkpoint: Option<i64>) -> Result<()> {
        self.backend.write(checkpoint)
    }

    /// The backend's value of `key` (applied writes only).
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.backend.get(key)
    }

    /// The backend's entries with `from <= key < to` (applied writes only).
    pub(crate) fn range<'a>(
        &'a self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Box<dyn Iterator<Item = Result<KeyValue>> + 'a>> {
        self.backend.range(from, to)
    }

    pub(crate) fn approximate_num_entries(&self) -> Result<u64> {
        self.backend.approximate_num_entries()
    }

    pub(crate) fn close(self) -> Result<()> {
        self.backend.close()
    }

    /// The backend, for a test to look under the layers.
    #[cfg(test)]
    pub(crate) fn backend(&self) -> &dyn KeyValueStore {
        &*self.backend
    }
}
