//! Running a topology: tasks (one sub-topology for one partition, owning its stores), stream
//! threads (a consumer and a producer each, a poll, process, commit loop), and the
//! application that starts them.

pub(crate) mod hot_keys;
pub(crate) mod task;
pub(crate) mod thread;
pub(crate) mod topics;
