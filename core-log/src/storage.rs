//! The storage layer: topics, partitions, segments, indexes, recovery, retention, compaction,
//! and the checkpoints and manifest that describe them on disk. It knows nothing of groups,
//! transactions' coordination or clients; the layers above take it.

pub(crate) mod checkpoint;
pub(crate) mod config;
pub(crate) mod fs;
pub(crate) mod log_manager;
pub(crate) mod partition;
pub(crate) mod topic;
pub(crate) mod verify;
