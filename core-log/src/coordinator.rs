//! The coordinators: consumer groups (membership, assignment, committed offsets) and
//! transactions (producer ids, epochs, the two-phase commit), each a state machine driven by
//! request values, over the storage layer.

pub(crate) mod group;
pub(crate) mod producer_id;
pub(crate) mod protocol;
pub(crate) mod transaction;
