//! The in-memory backend: a sorted map, lost when the process ends.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{KeyValue, KeyValueStore};
use crate::error::Result;

/// A store kept in a [`BTreeMap`]: fast, not persistent, no checkpoint.
///
/// A task restores it from the whole changelog on every start, so its
/// [`KeyValueStore::checkpoint`] is always `None`, even after a
/// [`KeyValueStore::write`] that gave one.
///
/// ```
/// use streams::state::{InMemoryKeyValueStore, KeyValueStore};
///
/// let mut store = InMemoryKeyValueStore::new("counts");
/// store.put(b"a", Some(b"1"));
/// assert_eq!(store.get(b"a").unwrap(), None); // staged, not applied
/// store.write(Some(7)).unwrap();
/// assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
/// assert_eq!(store.checkpoint(), None);
/// ```
#[derive(Debug, Default)]
pub struct InMemoryKeyValueStore {
    name: String,
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes staged by `put` since the last `write`, in order (`None` deletes).
    staged: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl InMemoryKeyValueStore {
    /// An empty store called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        InMemoryKeyValueStore {
            name: name.into(),
            data: BTreeMap::new(),
            staged: Vec::new(),
        }
    }
}

impl KeyValueStore for InMemoryKeyValueStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn persistent(&self) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.data.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.staged.push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    fn write(&mut self, _checkpoint: Option<i64>) -> Result<()> {
        for (key, value) in self.staged.drain(..) {
            match value {
                Some(value) => {
                    self.data.insert(key, value);
                }
                None => {
                    self.data.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&self) -> Option<i64> {
        None
    }

    fn range<'a>(
        &'a self,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
    ) -> Result<Box<dyn Iterator<Item = Result<KeyValue>> + 'a>> {
        // BTreeMap::range panics on an inverted range: an empty one is no entries.
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Ok(Box::new(std::iter::empty()));
        }
        let lower = from.map_or(Bound::Unbounded, |k| Bound::Included(k.to_vec()));
        let upper = to.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
        Ok(Box::new(
            self.data
                .range::<Vec<u8>, _>((lower, upper))
                .map(|(k, v)| Ok((k.clone(), v.clone()))),
        ))
    }

    fn approximate_num_entries(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }

    /// Deletes every entry, and discards the writes staged since the last `write`.
    fn clear(&mut self) -> Result<()> {
        self.data.clear();
        self.staged.clear();
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
