//! Session windows ([`SessionWindows`]): per key, the records closer than the gap to each
//! other, merged as records arrive. Sessions are stored by end (`[end][key][start]`); a record
//! reads the key's open sessions within its gap, merges them with `merge` into one, and
//! deletes the others (forwarded downstream as deletes, emit on update).

use std::sync::Arc;

use super::aggregate::{Aggregation, Ctx, WindowKind, Windows};
use super::{Merge, Options, aggregate_fns, build, reduce_fns};
use crate::builder::{Data, Key, Materialized};
use crate::dsl::{Change, KGroupedStream, KTable};
use crate::error::Result;
use crate::processor::Record;
use crate::serde::IntegerSerde;
use crate::window::{SessionWindows, SlotKey, Window, Windowed};

/// A grouped stream in session windows, ready for an aggregation.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
    options: Options,
}

impl<K, V> super::WindowedBy<K, V> for SessionWindows {
    type Stream = SessionWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        SessionWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
}

impl<K: Key, V: Data> SessionWindowedKStream<K, V> {
    options!();

    /// The number of records per key and session.
    pub fn count(self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        let m = if materialized.value_serde.is_none() {
            materialized.value_serde(IntegerSerde)
        } else {
            materialized
        };
        self.aggregate(|| 0, |_, _, n| n + 1, |_, a, b| a + b, m)
    }

    /// Combines the values of each key and session with `reducer` (also used to merge
    /// sessions).
    pub fn reduce(
        self,
        reducer: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<Windowed<K>, V> {
        let mut m = materialized;
        m.value_serde = m
            .value_serde
            .clone()
            .or_else(|| self.grouped.stream.value_serde.clone());
        let reducer = Arc::new(reducer);
        let r = reducer.clone();
        let (init, fold) = reduce_fns(move |a: &V, b: &V| r(a, b));
        let merge: Merge<K, V> = Arc::new(move |_, a, b| reducer(&a, &b));
        build(
            self.grouped,
            self.windows,
            self.options,
            m,
            init,
            fold,
            Some(merge),
            None,
        )
    }

    /// Folds the values of each key and session into an aggregate that starts at
    /// `initializer()`; `merger` combines the aggregates of sessions a record joins.
    pub fn aggregate<VA: Data>(
        self,
        initializer: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, &V, VA) -> VA + Send + Sync + 'static,
        merger: impl Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized<K, VA>,
    ) -> KTable<Windowed<K>, VA> {
        let (init, fold) = aggregate_fns(initializer, aggregator);
        let merge: Merge<K, VA> = Arc::new(merger);
        build(
            self.grouped,
            self.windows,
            self.options,
            materialized,
            init,
            fold,
            Some(merge),
            None,
        )
    }
}

/// Session windows in a task's windowed aggregation.
pub(super) struct SessionKind {
    windows: SessionWindows,
}

impl Windows for SessionWindows {
    type Kind<K: Key, V: Data, VA: Data> = SessionKind;

    fn kind<K: Key, V: Data, VA: Data>(&self) -> SessionKind {
        SessionKind {
            windows: self.clone(),
        }
    }
}

impl<K: Key, V: Data, VA: Data> WindowKind<K, V, VA> for SessionKind {
    const SESSIONS: bool = true;

    fn min_retention(&self) -> i64 {
        self.windows.grace
    }

    fn size(&self) -> Option<i64> {
        None
    }

    fn cuts(&self, t: i64, retention: i64) -> (i64, i64) {
        (
            t.saturating_sub(self.windows.grace),
            t.saturating_sub(retention),
        )
    }

    fn window(&self, slot: &SlotKey<K>) -> Window {
        Window::new(slot.other, slot.time)
    }

    fn process(
        &mut self,
        agg: &mut Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        r: Record<K, V>,
    ) -> Result<()> {
        let Some(h) = agg.store else { return Ok(()) };
        let w = &self.windows;
        let t = r.timestamp;
        let close = agg.observed.saturating_sub(w.grace);
        // Open sessions of the key within the gap of the record (closed ones are final).
        let lo = t.saturating_sub(w.gap).max(close);
        let hi = t.saturating_add(w.gap);
        let found: Vec<(SlotKey<K>, VA)> = ctx
            .store(h)
            .range(Some(&SlotKey::bound(lo)), None)?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key) && s.other <= hi)
            .collect();
        if found.is_empty() && t < close {
            return agg.late(ctx, r);
        }
        let (mut start, mut end) = (t, t);
        let mut merged = (agg.init)();
        for (slot, value) in &found {
            start = start.min(slot.other);
            end = end.max(slot.time);
            merged = Some(match (merged, &agg.merge) {
                (Some(a), Some(m)) => m(&r.key, a, value.clone()),
                _ => value.clone(),
            });
        }
        let session = (agg.fold)(&r.key, &r.value, merged);
        let new_slot = SlotKey {
            time: end,
            key: Some(r.key.clone()),
            other: start,
        };
        let store = ctx.store(h);
        let mut kept = false;
        for (slot, _) in &found {
            if *slot == new_slot {
                kept = true;
            } else {
                store.put_at(slot.clone(), None, t)?;
            }
        }
        store.put_at(new_slot, session.clone(), t)?;
        if agg.emit_final.is_some() {
            let merged = found.len() - usize::from(kept);
            agg.open = agg.open.saturating_sub(merged);
            if !kept && agg.new_window()? {
                let change = Change {
                    new: session,
                    old: None,
                };
                let key = Windowed::new(r.key.clone(), Window::new(start, end));
                Aggregation::<K, V, VA>::forward_update(ctx, key, change, t)?;
            }
        }
        Ok(())
    }
}
