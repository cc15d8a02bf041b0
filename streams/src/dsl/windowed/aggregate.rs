//! What every windowed aggregation shares, whatever its windows: the window store and its
//! meta store, the processor's stream time, closing and expiring the windows it leaves
//! behind, emit-on-window-close with its bound on open windows, late records, and forwarding
//! what the store's cache wrote.
//!
//! ```text
//!  record ─▶ observe (stream time) ─▶ advance: close ──▶ (emit-final) emit closed windows
//!                                     │        expire ─▶ one Store::delete_range per crossing
//!                                     ▼
//!                              kind.process (time.rs | session.rs | sliding.rs)
//!                                     ▼
//!                              forward what the cache flushed (emit on update)
//! ```
//!
//! A kind of window ([`WindowKind`]) says where its windows are in the store, when they
//! close and expire, and how a record updates them; the rest is here, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{BufferFull, Fold, Init, Merge};
use crate::builder::{Data, Graph, Key, Materialized};
use crate::dsl::Change;
use crate::error::{Error, Result};
use crate::processor::{Processor, ProcessorContext, PunctuationType, Record, StoreHandle};
use crate::serde::SharedSerde;
use crate::state::store::AnyStore;
use crate::window::{SlotKey, Window, Windowed};

/// What the windowed aggregate forwards: table updates, or a late record (keyed by its
/// key in the window `[timestamp, timestamp]`).
#[derive(Clone)]
pub(super) enum Out<V, VA> {
    Update(Change<VA>),
    Late(V),
}

pub(super) type Ctx<'a, 'b, K, V, VA> = &'a mut ProcessorContext<'b, Windowed<K>, Out<V, VA>>;

/// Windows as the user declares them ([`TimeWindows`](crate::TimeWindows),
/// [`SessionWindows`](crate::SessionWindows), [`SlidingWindows`](crate::SlidingWindows)): what
/// the aggregation needs before it has a value type for its records.
pub(super) trait Windows: Clone + Send + Sync + 'static {
    /// The kind of window a task's aggregation runs.
    type Kind<K: Key, V: Data, VA: Data>: WindowKind<K, V, VA>;

    /// A fresh instance of the kind, for one task (or to ask it about its windows).
    fn kind<K: Key, V: Data, VA: Data>(&self) -> Self::Kind<K, V, VA>;

    /// The pane a hot-key split folds into (every window is a union of panes), or why the
    /// aggregation cannot split.
    fn split_pane(&self, late_records: bool) -> std::result::Result<i64, &'static str> {
        let _ = late_records;
        Err("a session or sliding window aggregation")
    }
}

/// A kind of window: time (tumbling, hopping), session or sliding. The processor is generic
/// over it, so a record costs no switch on the kind.
pub(super) trait WindowKind<K: Key, V: Data, VA: Data>: Send + Sized + 'static {
    /// Whether the store keys are sessions' (`[end][key][start]`) rather than `[start][key]`.
    const SESSIONS: bool = false;

    /// The shortest retention: a window stays until it closes.
    fn min_retention(&self) -> i64;

    /// The window size the output keys carry (`None`: sessions, whose keys carry their end).
    fn size(&self) -> Option<i64>;

    /// Declares the stores the kind needs besides the window and meta stores; their ids.
    fn declare_stores(
        &self,
        g: &mut Graph,
        materialized: &Materialized<K, VA>,
        key_serde: &SharedSerde<K>,
        value_serde: Option<SharedSerde<V>>,
    ) -> Vec<usize> {
        let _ = (g, materialized, key_serde, value_serde);
        Vec::new()
    }

    /// Store times below the returned cuts are closed / expired at stream time `t`.
    fn cuts(&self, t: i64, retention: i64) -> (i64, i64);

    /// Whether a window's store time lies in `[from, to)`, `from < to` (time windows start on
    /// multiples of the advance: most advances of stream time cross no window boundary).
    fn crosses(&self, from: i64, to: i64) -> bool {
        let _ = (from, to);
        true
    }

    /// The window of a store key.
    fn window(&self, slot: &SlotKey<K>) -> Window;

    /// The timestamp a closed window is emitted with.
    fn emit_time(&self, window: Window) -> i64 {
        window.end
    }

    /// At init, after the stream time was read back (`persisted`).
    fn init(
        &mut self,
        agg: &Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        persisted: Option<i64>,
    ) -> Result<()> {
        let _ = (agg, ctx, persisted);
        Ok(())
    }

    /// Windows whose store time is below `close` are closed: never updated again.
    fn closed(&mut self, close: i64) {
        let _ = close;
    }

    /// After expiry at stream time `observed`: what else the kind keeps may go.
    fn expire(&mut self, ctx: Ctx<'_, '_, K, V, VA>, observed: i64) -> Result<()> {
        let _ = (ctx, observed);
        Ok(())
    }

    /// Aggregates a record that is not late by the processor's rule (non-negative timestamp)
    /// into its windows.
    fn process(
        &mut self,
        agg: &mut Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        r: Record<K, V>,
    ) -> Result<()>;
}

/// Deletes the store times `[lo, hi)` of `store` with one range delete: nothing decoded,
/// nothing written for what never left the cache (see `Store::delete_range`).
pub(super) fn delete_times<K: Key, V: Data, VA: Data, T: Data>(
    ctx: Ctx<'_, '_, K, V, VA>,
    store: StoreHandle<SlotKey<K>, T>,
    lo: i64,
    hi: i64,
    observed: i64,
) -> Result<()> {
    let (from, to) = (SlotKey::bound(lo), SlotKey::bound(hi));
    let inside = |s: &SlotKey<K>| lo <= s.time && s.time < hi;
    ctx.store(store)
        .delete_range(&from, &to, inside, observed)?;
    Ok(())
}

/// The state of a windowed aggregation that does not depend on its kind of window.
pub(super) struct Aggregation<K, V, VA> {
    pub name: String,
    pub store_name: String,
    pub meta_name: String,
    pub store: Option<StoreHandle<SlotKey<K>, VA>>,
    pub meta: Option<StoreHandle<String, i64>>,
    pub init: Init<VA>,
    pub fold: Fold<K, V, VA>,
    pub merge: Option<Merge<K, VA>>,
    pub emit_final: Option<(usize, BufferFull)>,
    pub idle: Option<i64>,
    pub retention: i64,
    pub dropped: Arc<AtomicU64>,
    /// The processor's stream time (`i64::MIN`: none yet).
    pub observed: i64,
    /// The stream time last written to the meta store.
    pub persisted: i64,
    /// Windows whose store time is below this are closed (and were emitted if emit-final).
    pub closed_through: i64,
    /// Windows whose store time is below this are deleted.
    pub expired_through: i64,
    /// Open windows (emit-final only).
    pub open: usize,
    /// Wall-clock time of the last record or idle advance.
    pub last_activity: i64,
}

/// The meta store's key of the processor's stream time.
const OBSERVED: &str = "observed";

impl<K: Key, V: Data, VA: Data> Aggregation<K, V, VA> {
    /// Drops a late record: counted, and forwarded to the late-records sink if there is one.
    pub fn late(&self, ctx: Ctx<'_, '_, K, V, VA>, r: Record<K, V>) -> Result<()> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let ts = r.timestamp;
        ctx.forward(Record {
            key: Windowed::new(r.key, Window::new(ts, ts)),
            value: Out::Late(r.value),
            timestamp: ts,
            headers: r.headers,
        })
    }

    pub fn forward_update(
        ctx: Ctx<'_, '_, K, V, VA>,
        key: Windowed<K>,
        change: Change<VA>,
        ts: i64,
    ) -> Result<()> {
        let r = ctx.forward(Record::new(key, Out::Update(change), ts));
        ctx.cx.task.handle_node_error(r)
    }

    /// Counts a new window against the bound of emit-final; `Ok(true)`: emit it early.
    pub fn new_window(&mut self) -> Result<bool> {
        let Some((max, on_full)) = self.emit_final else {
            return Ok(false);
        };
        self.open += 1;
        if self.open <= max {
            return Ok(false);
        }
        match on_full {
            BufferFull::EmitEarly => Ok(true),
            BufferFull::Fail => {
                self.open -= 1;
                Err(Error::Processing {
                    processor: self.name.clone(),
                    source: format!(
                        "emit-on-window-close buffer full: {max} open windows (BufferFull::Fail)"
                    )
                    .into(),
                })
            }
        }
    }
}

/// The windowed aggregation processor: the shared [`Aggregation`] and a kind of window.
pub(super) struct WindowAggregate<K, V, VA, W> {
    pub agg: Aggregation<K, V, VA>,
    pub kind: W,
}

impl<K: Key, V: Data, VA: Data, W: WindowKind<K, V, VA>> WindowAggregate<K, V, VA, W> {
    /// Forwards what the store's cache wrote, without the deletes of expired windows.
    fn forward_flushed(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let Some(h) = self.agg.store else {
            return Ok(());
        };
        if self.agg.emit_final.is_some() {
            return Ok(());
        }
        for f in ctx.store(h).take_flushed() {
            // Deletes reach downstream only for sessions merged away (expiry is not forwarded:
            // `delete_range` writes nothing to the cache).
            if f.new.is_none() && (!W::SESSIONS || f.old.is_none()) {
                continue;
            }
            let window = self.kind.window(&f.key);
            let Some(key) = f.key.key else { continue };
            Aggregation::<K, V, VA>::forward_update(
                ctx,
                Windowed::new(key, window),
                Change {
                    new: f.new,
                    old: f.old,
                },
                f.timestamp,
            )?;
        }
        Ok(())
    }

    /// Closes (emit-final: emits) and expires the windows stream time left behind.
    fn advance(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let Some(h) = self.agg.store else {
            return Ok(());
        };
        let agg = &mut self.agg;
        if agg.observed == i64::MIN {
            return Ok(());
        }
        let (close, expire) = self.kind.cuts(agg.observed, agg.retention);
        if agg.closed_through < close && self.kind.crosses(agg.closed_through, close) {
            if agg.emit_final.is_some() {
                let closed = ctx.store(h).range(
                    Some(&SlotKey::bound(agg.closed_through)),
                    Some(&SlotKey::bound(close)),
                )?;
                agg.open = agg.open.saturating_sub(closed.len());
                for (slot, value) in closed {
                    let window = self.kind.window(&slot);
                    let ts = self.kind.emit_time(window);
                    let Some(key) = slot.key else { continue };
                    let change = Change {
                        new: Some(value),
                        old: None,
                    };
                    Aggregation::<K, V, VA>::forward_update(
                        ctx,
                        Windowed::new(key, window),
                        change,
                        ts,
                    )?;
                }
            }
            agg.closed_through = close;
            self.kind.closed(close);
        }
        if agg.expired_through < expire && self.kind.crosses(agg.expired_through, expire) {
            // One range delete: expired windows are neither decoded nor written; the last
            // updates of those still dirty in the cache are forwarded (emit on update) instead
            // of being written and deleted at once. The rest of the cache stays until the commit.
            delete_times(ctx, h, agg.expired_through, expire, agg.observed)?;
            agg.expired_through = expire;
            self.forward_flushed(ctx)?;
        }
        self.kind.expire(ctx, self.agg.observed)
    }

    fn observe(&mut self, ctx: Ctx<'_, '_, K, V, VA>, timestamp: i64) {
        let agg = &mut self.agg;
        agg.observed = agg.observed.max(ctx.stream_time()).max(timestamp);
        if agg.idle.is_some() {
            agg.last_activity = ctx.wall_clock_time();
        }
    }
}

impl<K: Key, V: Data, VA: Data, W: WindowKind<K, V, VA>> Processor<K, V, Windowed<K>, Out<V, VA>>
    for WindowAggregate<K, V, VA, W>
{
    fn init(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        let agg = &mut self.agg;
        let store = ctx.key_value_store::<SlotKey<K>, VA>(&agg.store_name)?;
        let meta = ctx.key_value_store::<String, i64>(&agg.meta_name)?;
        ctx.store(store).set_forwarding(agg.emit_final.is_none());
        agg.store = Some(store);
        agg.meta = Some(meta);
        let persisted = ctx.store(meta).get(&OBSERVED.to_owned())?;
        if let Some(t) = persisted {
            agg.observed = t;
            agg.persisted = t;
            let (close, expire) = self.kind.cuts(t, agg.retention);
            agg.closed_through = close;
            agg.expired_through = expire;
        }
        self.kind.init(&self.agg, ctx, persisted)?;
        let agg = &mut self.agg;
        if agg.emit_final.is_some() {
            agg.open = ctx
                .store(store)
                .range(Some(&SlotKey::bound(agg.closed_through)), None)?
                .len();
        }
        if let Some(idle) = agg.idle {
            agg.last_activity = ctx.wall_clock_time();
            ctx.schedule(
                Duration::from_millis(idle.unsigned_abs()),
                PunctuationType::WallClockTime,
            )?;
        }
        Ok(())
    }

    fn process(&mut self, ctx: Ctx<'_, '_, K, V, VA>, r: Record<K, V>) -> Result<()> {
        if r.timestamp < 0 {
            return self.agg.late(ctx, r);
        }
        self.observe(ctx, r.timestamp);
        // Windows the record's stream time closes go first (they make room in the bound).
        self.advance(ctx)?;
        self.kind.process(&mut self.agg, ctx, r)?;
        self.forward_flushed(ctx)
    }

    fn punctuate(
        &mut self,
        ctx: Ctx<'_, '_, K, V, VA>,
        kind: PunctuationType,
        timestamp: i64,
    ) -> Result<()> {
        let (Some(idle), PunctuationType::WallClockTime) = (self.agg.idle, kind) else {
            return Ok(());
        };
        let elapsed = timestamp - self.agg.last_activity;
        if self.agg.observed == i64::MIN || elapsed < idle {
            return Ok(());
        }
        self.agg.observed = self.agg.observed.saturating_add(elapsed);
        self.agg.last_activity = timestamp;
        self.advance(ctx)?;
        self.forward_flushed(ctx)
    }

    fn flush(&mut self, ctx: Ctx<'_, '_, K, V, VA>) -> Result<()> {
        if let Some(h) = self.agg.store
            && self.agg.emit_final.is_none()
        {
            AnyStore::flush_cache(ctx.store(h))?;
            self.forward_flushed(ctx)?;
        }
        if let Some(m) = self.agg.meta
            && self.agg.observed != self.agg.persisted
        {
            ctx.store(m).put(OBSERVED.to_owned(), self.agg.observed)?;
            self.agg.persisted = self.agg.observed;
        }
        Ok(())
    }
}
