//! Sliding windows ([`SlidingWindows`], Kafka's KIP-450 definition), computed from the records
//! themselves: besides the window store, a changelogged store `<name>-records` keeps each
//! accepted record (`[timestamp][key][sequence]`) for as long as a window that can hold it or
//! that it defines may still change (`timestamp + d + 1 + grace >= stream time`); see the
//! parent module for the algorithm.

use std::collections::{BTreeSet, HashSet};

use super::Options;
use super::aggregate::{Aggregation, Ctx, WindowKind, Windows, delete_times};
use crate::builder::{Data, Graph, Key, Materialized};
use crate::dsl::{Change, KGroupedStream, KTable};
use crate::error::Result;
use crate::processor::{Record, StoreHandle};
use crate::serde::SharedSerde;
use crate::window::{SlidingWindows, SlotKey, SlotKeySerde, Window, Windowed};

/// A grouped stream in sliding windows, ready for an aggregation.
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
    options: Options,
}

impl<K, V> super::WindowedBy<K, V> for SlidingWindows {
    type Stream = SlidingWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        SlidingWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
}

impl<K: Key, V: Data> SlidingWindowedKStream<K, V> {
    options!();
    fixed_size_aggregations!();
}

/// The store of the accepted records of the sliding-window aggregation `name`.
fn records_store(name: &str) -> String {
    format!("{name}-records")
}

/// Sliding windows in a task's windowed aggregation.
pub(super) struct SlidingKind<K, V> {
    windows: SlidingWindows,
    /// The accepted records, by `[timestamp][key][sequence]`.
    records: Option<StoreHandle<SlotKey<K>, V>>,
    /// Records with a timestamp below this are deleted.
    records_through: i64,
}

impl<K, V> SlidingKind<K, V> {
    pub(super) fn new(windows: SlidingWindows) -> Self {
        SlidingKind {
            windows,
            records: None,
            records_through: i64::MIN,
        }
    }

    /// Records below the returned timestamp can neither join nor define an open window at
    /// stream time `t` (the last window a record at `r` defines is `[r + 1, r + 1 + d]`, open
    /// while `t <= r + 1 + d + grace`).
    fn records_cut(&self, t: i64) -> i64 {
        let w = &self.windows;
        t.saturating_sub(w.difference.saturating_add(w.grace).saturating_add(1))
    }
}

impl Windows for SlidingWindows {
    type Kind<K: Key, V: Data, VA: Data> = SlidingKind<K, V>;

    fn kind<K: Key, V: Data, VA: Data>(&self) -> SlidingKind<K, V> {
        SlidingKind::new(self.clone())
    }
}

impl<K: Key, V: Data, VA: Data> WindowKind<K, V, VA> for SlidingKind<K, V> {
    fn min_retention(&self) -> i64 {
        // [start, start + d] closes once stream time > start + d + grace.
        let w = &self.windows;
        w.difference.saturating_add(w.grace).saturating_add(1)
    }

    fn size(&self) -> Option<i64> {
        Some(self.windows.difference)
    }

    fn declare_stores(
        &self,
        g: &mut Graph,
        materialized: &Materialized<K, VA>,
        key_serde: &SharedSerde<K>,
        value_serde: Option<SharedSerde<V>>,
    ) -> Vec<usize> {
        let Some(value) = value_serde else {
            g.errors.push(format!(
                "sliding-window aggregation {:?} keeps its records: it needs the stream's value serde",
                materialized.name
            ));
            return Vec::new();
        };
        let record_serde: SharedSerde<SlotKey<K>> = std::sync::Arc::new(SlotKeySerde {
            inner: key_serde.clone(),
            session: true,
        });
        vec![g.add_store(
            &records_store(&materialized.name),
            materialized.store_type,
            false,
            materialized.logging,
            record_serde,
            value,
        )]
    }

    fn cuts(&self, t: i64, retention: i64) -> (i64, i64) {
        let w = &self.windows;
        (
            t.saturating_sub(w.difference.saturating_add(w.grace)),
            t.saturating_sub(retention - 1),
        )
    }

    fn window(&self, slot: &SlotKey<K>) -> Window {
        Window::new(slot.time, slot.time.saturating_add(self.windows.difference))
    }

    fn init(
        &mut self,
        agg: &Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        persisted: Option<i64>,
    ) -> Result<()> {
        self.records = Some(ctx.key_value_store::<SlotKey<K>, V>(&records_store(&agg.store_name))?);
        if let Some(t) = persisted {
            self.records_through = self.records_cut(t);
        }
        Ok(())
    }

    fn expire(&mut self, ctx: Ctx<'_, '_, K, V, VA>, observed: i64) -> Result<()> {
        let cut = self.records_cut(observed);
        if let Some(records) = self.records
            && cut > self.records_through
        {
            delete_times(ctx, records, self.records_through, cut, observed)?;
            self.records_through = cut;
        }
        Ok(())
    }

    /// A record into sliding windows (see the module documentation for the algorithm).
    fn process(
        &mut self,
        agg: &mut Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        r: Record<K, V>,
    ) -> Result<()> {
        let (Some(h), Some(rh)) = (agg.store, self.records) else {
            return Ok(());
        };
        let w = &self.windows;
        let (t, d) = (r.timestamp, w.difference);
        // Kafka's rule: dropped when [t, t + d], the last window that can hold it, is closed.
        if t.saturating_add(d).saturating_add(w.grace) < agg.observed {
            return agg.late(ctx, r);
        }
        // The key's records that share a window with the record or define one that holds it.
        let lo = t.saturating_sub(d).saturating_sub(1).max(0);
        let hi = t.saturating_add(d).saturating_add(2);
        let records: Vec<(i64, V)> = ctx
            .store(rh)
            .range(Some(&SlotKey::bound(lo)), Some(&SlotKey::bound(hi)))?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key))
            .map(|(s, v)| (s.time, v))
            .collect();
        let seq = records.iter().filter(|(ts, _)| *ts == t).count();
        // The key's windows that hold t (start in [t - d, t]) and its right window (t + 1).
        let first = t.saturating_sub(d).max(0);
        let existing: HashSet<i64> = ctx
            .store(h)
            .range(
                Some(&SlotKey::bound(first)),
                Some(&SlotKey::bound(t.saturating_add(2))),
            )?
            .into_iter()
            .filter(|(s, _)| s.key.as_ref() == Some(&r.key))
            .map(|(s, _)| s.time)
            .collect();
        let mut starts: BTreeSet<i64> = existing.iter().copied().collect();
        // Its left window ([0, d] for t < d).
        starts.insert(first);
        // The right windows of earlier records that now hold t.
        for (ts, _) in &records {
            if *ts < t && ts.saturating_add(1).saturating_add(d) >= t {
                starts.insert(ts + 1);
            }
        }
        // Its own right window, if a record (out of order) is in it already.
        let right = t.saturating_add(1);
        if records
            .iter()
            .any(|(ts, _)| *ts >= right && *ts <= right.saturating_add(d))
        {
            starts.insert(right);
        }
        for start in starts {
            let end = start.saturating_add(d);
            // Closed windows keep their value (Kafka: `windowEnd >= streamTime - grace`).
            if end.saturating_add(w.grace) < agg.observed {
                continue;
            }
            let holds = start <= t && t <= end;
            let in_window = |ts: i64| start <= ts && ts <= end;
            let last = records
                .iter()
                .map(|(ts, _)| *ts)
                .filter(|ts| in_window(*ts))
                .chain(holds.then_some(t))
                .max()
                .unwrap_or(t);
            let slot = SlotKey {
                time: start,
                key: Some(r.key.clone()),
                other: 0,
            };
            let window = Window::new(start, end);
            if existing.contains(&start) {
                if holds {
                    let (init, fold) = (&agg.init, &agg.fold);
                    ctx.store(h).update_at(slot, last, |_, current| {
                        fold(&r.key, &r.value, current.or_else(|| init()))
                    })?;
                }
                continue;
            }
            // A new window: its records in timestamp order, the new one after those at t.
            let mut value = (agg.init)();
            for (_, v) in records.iter().filter(|(ts, _)| in_window(*ts) && *ts <= t) {
                value = (agg.fold)(&r.key, v, value);
            }
            if holds {
                value = (agg.fold)(&r.key, &r.value, value);
            }
            for (_, v) in records.iter().filter(|(ts, _)| in_window(*ts) && *ts > t) {
                value = (agg.fold)(&r.key, v, value);
            }
            ctx.store(h).put_at(slot, value.clone(), last)?;
            if agg.new_window()? {
                let change = Change {
                    new: value,
                    old: None,
                };
                let key = Windowed::new(r.key.clone(), window);
                Aggregation::<K, V, VA>::forward_update(ctx, key, change, last)?;
            }
        }
        let slot = SlotKey {
            time: t,
            key: Some(r.key),
            other: i64::try_from(seq).unwrap_or(i64::MAX),
        };
        ctx.store(rh).put_at(slot, Some(r.value), t)
    }
}
