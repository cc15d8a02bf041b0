//! The DSL: [`KStream`] (every record an event), [`KTable`] (the latest value per key),
//! and their grouped forms with count, reduce and aggregate.

mod grouped;
mod split;
mod stream;
mod table;
mod windowed;

pub use self::grouped::{KGroupedStream, KGroupedTable};
pub use self::split::HotKeys;
pub use self::stream::{Branches, KStream};
pub use self::table::KTable;
pub use self::windowed::{
    BufferFull, SessionWindowedKStream, SlidingWindowedKStream, TimeWindowedKStream, WindowedBy,
};

/// An update of a table: the value after and before (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change<V> {
    pub new: Option<V>,
    pub old: Option<V>,
}
