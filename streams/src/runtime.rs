//! Running a topology: tasks (one sub-topology for one partition, owning its stores), the
//! nodes they run (source, processor, sink), stream threads (a consumer and a producer each,
//! a poll, process, commit loop), the internal topics they need, and what the threads of an
//! instance share.
//!
//! The runtime builds on the declaration (`topology.rs`, `builder.rs`, `dsl/`), which never
//! imports it; the [`Streams`](crate::Streams) handle (`app.rs`) owns the threads' shared state
//! (`shared.rs`), and the runtime never imports the handle (`streams/tests/layers.rs`).

pub(crate) mod processor_node;
pub(crate) mod shared;
pub(crate) mod sink_node;
pub(crate) mod source_node;
pub(crate) mod task;
pub(crate) mod thread;
pub(crate) mod topics;
