//! Time windows (tumbling and hopping: [`TimeWindows`]): windows of a fixed size that start
//! every advance, stored by start (`[start][key]`), each record folded into every window
//! that holds it and is still open.
//!
//! **New windows skip the backend read.** At init the kind finds the newest window the store
//! starts with (a range scan from the persisted stream time + 1: restored windows, those of an
//! earlier run, and those a crash left newer than the persisted stream time). After that, a
//! window that starts later and whose key's hash is not among those this processor created
//! (kept per open window, at most [`FRESH_MAX`] hashes; closed windows drop theirs) cannot be
//! in the backend, and `Store::update_known_at` creates it without a read. A hash collision
//! only costs a read.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use super::Options;
use super::aggregate::{Aggregation, Ctx, WindowKind, Windows};
use crate::builder::{Data, Key, Materialized};
use crate::dsl::{Change, KGroupedStream, KTable};
use crate::error::Result;
use crate::processor::Record;
use crate::window::{SlotKey, TimeWindows, Window, Windowed};

/// A grouped stream in time windows (tumbling or hopping), ready for an aggregation.
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
    options: Options,
}

impl<K, V> super::WindowedBy<K, V> for TimeWindows {
    type Stream = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream {
        TimeWindowedKStream {
            grouped,
            windows: self,
            options: Options::default(),
        }
    }
}

impl<K: Key, V: Data> TimeWindowedKStream<K, V> {
    options!();
    fixed_size_aggregations!();
}

/// At most this many key hashes (about 4 MiB) are kept per task to skip backend reads; the
/// window whose set would pass it is no longer tracked.
const FRESH_MAX: usize = 1 << 18;

/// Time windows in a task's windowed aggregation.
pub(super) struct TimeKind {
    windows: TimeWindows,
    /// Every window the store had when the task started (restored from the changelog or left
    /// by an earlier run) starts at or before this (`i64::MAX`: unknown).
    stored_through: i64,
    /// Per start after `stored_through`, the hashes of the keys whose window this processor
    /// created; an open window of a start past `stored_through` whose key's hash is not here
    /// was never written, so it is not read from the backend (`Store::update_known_at`).
    /// `None`: no longer tracked (past `FRESH_MAX`), read as before. Closed windows are
    /// dropped: they are never updated again.
    fresh: BTreeMap<i64, Option<foldhash::HashSet<u64>>>,
    /// The number of hashes in `fresh`.
    fresh_len: usize,
    hasher: foldhash::fast::RandomState,
}

impl TimeKind {
    pub(super) fn new(windows: TimeWindows) -> Self {
        TimeKind {
            windows,
            stored_through: i64::MAX,
            fresh: BTreeMap::new(),
            fresh_len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl Windows for TimeWindows {
    type Kind<K: Key, V: Data, VA: Data> = TimeKind;

    fn kind<K: Key, V: Data, VA: Data>(&self) -> TimeKind {
        TimeKind::new(self.clone())
    }

    fn split_pane(&self, late_records: bool) -> std::result::Result<i64, &'static str> {
        if late_records {
            return Err("a windowed aggregation with late_records_to");
        }
        // Every window boundary is a multiple of the pane (the gcd of size and advance): a
        // pane is in a window or out of it.
        let (mut a, mut b) = (self.size, self.advance);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Ok(a.max(1))
    }
}

impl<K: Key, V: Data, VA: Data> WindowKind<K, V, VA> for TimeKind {
    fn min_retention(&self) -> i64 {
        self.windows.size.saturating_add(self.windows.grace)
    }

    fn size(&self) -> Option<i64> {
        Some(self.windows.size)
    }

    fn cuts(&self, t: i64, retention: i64) -> (i64, i64) {
        let w = &self.windows;
        (
            t.saturating_sub(w.size.saturating_add(w.grace) - 1),
            t.saturating_sub(retention - 1),
        )
    }

    fn crosses(&self, from: i64, to: i64) -> bool {
        if from == i64::MIN {
            return true;
        }
        let advance = self.windows.advance;
        let first = from.div_euclid(advance) * advance;
        let first = if first < from { first + advance } else { first };
        first < to
    }

    fn window(&self, slot: &SlotKey<K>) -> Window {
        Window::new(slot.time, slot.time.saturating_add(self.windows.size))
    }

    fn emit_time(&self, window: Window) -> i64 {
        window.end - 1
    }

    fn init(
        &mut self,
        agg: &Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        persisted: Option<i64>,
    ) -> Result<()> {
        let Some(store) = agg.store else {
            return Ok(());
        };
        // The newest window the store starts with (restored, or left by an earlier run).
        // Windows start at or before the stream time that saw them, so the persisted stream
        // time is a bound unless a crash left newer windows than it (found past it).
        let from = persisted.map(|t| SlotKey::bound(t.saturating_add(1)));
        let newer = ctx.store(store).range(from.as_ref(), None)?;
        self.stored_through = newer
            .last()
            .map(|(s, _)| s.time)
            .or(persisted)
            .unwrap_or(i64::MIN);
        self.fresh.clear();
        self.fresh_len = 0;
        Ok(())
    }

    fn closed(&mut self, close: i64) {
        if !self.fresh.is_empty() {
            let open = self.fresh.split_off(&close);
            let closed = std::mem::replace(&mut self.fresh, open);
            self.fresh_len -= closed.values().flatten().map(|s| s.len()).sum::<usize>();
        }
    }

    fn process(
        &mut self,
        agg: &mut Aggregation<K, V, VA>,
        ctx: Ctx<'_, '_, K, V, VA>,
        r: Record<K, V>,
    ) -> Result<()> {
        let Some(h) = agg.store else { return Ok(()) };
        let w = &self.windows;
        let observed = agg.observed;
        // Kafka's rule: a window is open while stream time < end + grace. Ends grow with
        // starts, so the open windows of a record are the newest ones.
        let open = |start: i64| (start + w.size).saturating_add(w.grace) > observed;
        let Some((first, last)) = w.starts_for(r.timestamp).filter(|&(_, l)| open(l)) else {
            return agg.late(ctx, r);
        };
        let mut start = first;
        while !open(start) {
            start += w.advance;
        }
        let (timestamp, value) = (r.timestamp, r.value);
        let mut key = Some(r.key);
        loop {
            // The newest window takes the key; the others (hopping) a copy.
            let slot_key = if start == last {
                key.take()
            } else {
                key.clone()
            };
            let slot = SlotKey {
                time: start,
                key: slot_key,
                other: 0,
            };
            // Emit-final: a new window beyond the bound is emitted at once (or fails).
            let early = agg
                .emit_final
                .is_some_and(|(max, _)| agg.open >= max)
                .then(|| slot.clone());
            let mut created = false;
            let (init, fold) = (&agg.init, &agg.fold);
            let stored_through = self.stored_through;
            let (fresh, fresh_len, hasher) = (&mut self.fresh, &mut self.fresh_len, &self.hasher);
            // Asked on a cache miss only: a window past everything the store started with,
            // whose key this processor never put in it, is not in the backend.
            let absent = |s: &SlotKey<K>| {
                let Some(k) = s.key.as_ref().filter(|_| s.time > stored_through) else {
                    return false;
                };
                let tracked = fresh
                    .entry(s.time)
                    .or_insert_with(|| Some(foldhash::HashSet::default()));
                match tracked {
                    Some(set) if *fresh_len < FRESH_MAX => {
                        let new = set.insert(hasher.hash_one(k));
                        *fresh_len += usize::from(new);
                        new
                    }
                    _ => {
                        // Too many: this window's keys are read from now on.
                        *fresh_len -= tracked.take().map_or(0, |set| set.len());
                        false
                    }
                }
            };
            ctx.store(h)
                .update_known_at(slot, timestamp, absent, |s, current| {
                    created = current.is_none();
                    match &s.key {
                        Some(k) => fold(k, &value, current.or_else(|| init())),
                        None => current,
                    }
                })?;
            if created
                && agg.new_window()?
                && let Some(slot) = early
            {
                let new = ctx.store(h).get(&slot)?;
                if let Some(k) = slot.key {
                    let change = Change { new, old: None };
                    let key = Windowed::new(k, Window::new(start, start + w.size));
                    Aggregation::<K, V, VA>::forward_update(ctx, key, change, timestamp)?;
                }
            }
            if start >= last {
                return Ok(());
            }
            start += w.advance;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Restarts of a windowed count (emit on update) against a recount, with caches small
    //! enough to evict, none, or the default: windows the store starts with (kept on disk,
    //! restored from the changelog, or newer than the persisted stream time, as a crash after
    //! an eviction leaves them) keep their counts, so the backend reads that new windows skip
    //! are only those of windows nobody wrote.
    #![allow(clippy::unwrap_used, reason = "a panic is the test's failure report")]

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use core_log::{Admin, IsolationLevel, Log, Record as LogRecord, TopicConfig};

    use crate::serde::{IntegerSerde, Nullable, Serde, StringSerde};
    use crate::window::{SlotKey, SlotKeySerde, TimeWindows, Windowed, WindowedSerde};
    use crate::{Consumed, Materialized, Produced, Streams, StreamsBuilder, StreamsConfig};

    const PARTITIONS: u32 = 2;
    const SIZE: i64 = 100;
    const APP: &str = "win";

    fn ms(n: i64) -> Duration {
        Duration::from_millis(n as u64)
    }

    fn partition_of(key: &str) -> u32 {
        core_log::partition_for_key(key.as_bytes(), PARTITIONS)
    }

    fn topology(advance: i64) -> crate::Topology {
        let b = StreamsBuilder::new();
        b.stream(
            "events",
            Consumed::<String, i64>::with(StringSerde, IntegerSerde),
        )
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(ms(SIZE), ms(20)).advance_by(ms(advance)))
        .count(Materialized::named("w"))
        .to_stream()
        .to(
            "counts",
            Produced::with(
                WindowedSerde::time(StringSerde, ms(SIZE)),
                Nullable(IntegerSerde),
            ),
        );
        b.build().unwrap()
    }

    /// Appends `(key, timestamp)` events and adds them to `model` (count per key and window).
    fn produce(
        log: &Log,
        advance: i64,
        events: &[(String, i64)],
        model: &mut BTreeMap<(String, i64), i64>,
    ) {
        let w = TimeWindows::of_size_and_grace(ms(SIZE), ms(20)).advance_by(ms(advance));
        let one = 1i64.to_be_bytes();
        for (k, t) in events {
            let record = LogRecord::new(Some(k.as_bytes()), Some(&one[..]));
            log.partition("events", partition_of(k))
                .unwrap()
                .append(&[record.timestamp(*t)])
                .unwrap();
            for window in w.windows_for(*t) {
                *model.entry((k.clone(), window.start)).or_default() += 1;
            }
        }
    }

    /// In-order events of 12 keys from `from` to `to` (every key in every window).
    fn events(from: i64, to: i64) -> Vec<(String, i64)> {
        (from..to)
            .step_by(3)
            .enumerate()
            .map(|(i, t)| (format!("k{}", (i * 7) % 12), t))
            .collect()
    }

    fn run(log: &Log, state: &Path, advance: i64, cache: usize, eos: bool) {
        let mut config = StreamsConfig::new(APP)
            .num_stream_threads(1)
            .commit_interval_ms(20)
            .poll_ms(10)
            .statestore_cache_max_bytes(cache)
            .state_dir(state);
        if eos {
            config = config.exactly_once();
        }
        let app = Streams::new(topology(advance), log, config).unwrap();
        app.start().unwrap();
        let admin = Admin::new(log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let offsets = admin.list_consumer_group_offsets(APP).unwrap_or_default();
            let done = (0..PARTITIONS).all(|p| {
                let end = log
                    .partition("events", p)
                    .unwrap()
                    .high_watermark()
                    .unwrap();
                offsets
                    .iter()
                    .find(|(tp, _)| tp.topic == "events" && tp.partition == p)
                    .map_or(0, |(_, o)| o.offset)
                    == end
            });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the application did not catch up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        app.close().unwrap();
    }

    /// Calls `f` with the key and value of every record of `topic` read_committed readers see.
    fn read_committed(log: &Log, topic: &str, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        let mut buf = Vec::new();
        for p in 0..PARTITIONS {
            let part = log.partition(topic, p).unwrap();
            let mut offset = 0;
            while offset < part.last_stable_offset().unwrap() {
                let fetch = part
                    .read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)
                    .unwrap();
                for r in fetch.committed_records() {
                    f(r.key.unwrap(), r.value);
                }
                offset = fetch.next_offset();
            }
        }
    }

    /// The latest count of each (key, window start) in the output.
    fn latest(log: &Log) -> BTreeMap<(String, i64), i64> {
        let serde = WindowedSerde::time(StringSerde, ms(SIZE));
        let mut out = BTreeMap::new();
        read_committed(log, "counts", |k, v| {
            let k: Windowed<String> = serde.deserialize("counts", k).unwrap();
            let v = i64::from_be_bytes(v.unwrap().try_into().unwrap());
            out.insert((k.key, k.window.start), v);
        });
        out
    }

    /// What a restore of the window store would read: the latest value of each key of its
    /// changelog, without tombstoned keys.
    fn changelog_windows(log: &Log) -> BTreeMap<(String, i64), i64> {
        let topic = format!("{APP}-w-changelog");
        let slot_serde = SlotKeySerde {
            inner: std::sync::Arc::new(StringSerde),
            session: false,
        };
        let mut out = BTreeMap::new();
        read_committed(log, &topic, |k, v| {
            let slot = slot_serde.deserialize(&topic, k).unwrap();
            let key = (slot.key.unwrap(), slot.time);
            match v {
                Some(v) => out.insert(key, i64::from_be_bytes(v.try_into().unwrap())),
                None => out.remove(&key),
            };
        });
        out
    }

    fn restarts_keep_counts(advance: i64, eos: bool) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::builder(dir.path().join("log"))
            .background_maintenance(false)
            .open()
            .unwrap();
        for t in ["events", "counts"] {
            log.create_topic(t, PARTITIONS, TopicConfig::default())
                .unwrap();
        }
        let mut model = BTreeMap::new();
        let local = dir.path().join("local");
        // Windows open across each restart get updates of keys they have and of new ones.
        produce(&log, advance, &events(0, 350), &mut model);
        run(&log, &local, advance, 2_048, eos);
        produce(&log, advance, &events(350, 700), &mut model);
        run(&log, &local, advance, 0, eos);
        produce(&log, advance, &events(700, 1_050), &mut model);
        run(&log, &dir.path().join("restored-1"), advance, 10 << 20, eos);
        // A crash after an eviction: the window store's changelog has a window newer than
        // the stream time the meta store persisted (every event so far is below 1_050).
        let slot = SlotKey {
            time: 1_100,
            key: Some("k0".to_owned()),
            other: 0,
        };
        let slot_serde = SlotKeySerde {
            inner: std::sync::Arc::new(StringSerde),
            session: false,
        };
        let mut key = Vec::new();
        slot_serde.serialize("", &slot, &mut key).unwrap();
        log.partition(&format!("{APP}-w-changelog"), partition_of("k0"))
            .unwrap()
            .append(&[LogRecord::new(Some(&key), Some(&40i64.to_be_bytes()[..])).timestamp(1_100)])
            .unwrap();
        *model.entry(("k0".to_owned(), 1_100)).or_default() += 40;
        produce(&log, advance, &events(1_050, 1_400), &mut model);
        run(&log, &local, advance, 2_048, eos);
        let last = events(1_400, 1_750);
        produce(&log, advance, &last, &mut model);
        run(&log, &dir.path().join("restored-2"), advance, 0, eos);
        assert_eq!(latest(&log), model);
        // The changelog holds exactly the windows not expired (retention: size + grace), with
        // their counts: expired ones are tombstoned, none is lost.
        let mut stream_time = [i64::MIN; PARTITIONS as usize];
        for (k, t) in &last {
            let p = partition_of(k) as usize;
            stream_time[p] = stream_time[p].max(*t);
        }
        let live: BTreeMap<(String, i64), i64> = model
            .iter()
            .filter(|((k, start), _)| start + SIZE + 20 > stream_time[partition_of(k) as usize])
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(changelog_windows(&log), live);
    }

    #[test]
    fn tumbling_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE, false);
    }

    #[test]
    fn hopping_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE / 4, false);
    }

    #[test]
    fn exactly_once_counts_survive_restarts_and_restores() {
        restarts_keep_counts(SIZE / 2, true);
    }
}
