//! Hot keys: heavy-hitter detection at the repartition boundary.
//!
//! Every task keeps one [`SpaceSaving`] summary per repartition sink, counting the records it
//! writes by their serialized key (what the sink has just produced for the partitioner). At
//! each report the task hands a snapshot of its summaries to the application, which merges
//! the tasks writing the same topic into [`RepartitionHotKeys`]. Keys whose estimated share
//! reaches `hot.keys.min.share` are reported as [`HotKey`]s.
//!
//! The summary is the routing hook a later step (salting hot keys into sub-keys) needs:
//! [`SpaceSaving::offer`] returns the key's estimated count, to compare with the total.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Counters of the SpaceSaving algorithm (Metwally, Agrawal, El Abbadi, 2005) over byte
/// keys: at most `capacity` keys are tracked; a new key, when all counters are taken,
/// replaces a key with the smallest count and inherits that count as its error.
///
/// Guarantees, after `N` offers: every key counted more than `N / capacity` times is tracked;
/// for a tracked key, `count - error <= true count <= count` and `error <= N / capacity`; an
/// untracked key was counted at most [`SpaceSaving::min_count`] times.
///
/// After warm-up (every counter taken, key buffers grown to the longest keys seen) an offer
/// allocates nothing: keys live in reusable buffers, found through an open-addressing table of
/// counter indices (foldhash). The minimum is tracked lazily: a rescan of the counters
/// collects those at the minimum count, and replacements take them one by one (skipping those
/// counted since), so a replacement costs a rescan only when they run out.
///
/// ```
/// use streams::SpaceSaving;
///
/// let mut s = SpaceSaving::new(2);
/// for k in [b"a", b"a", b"b", b"c", b"a"] {
///     s.offer(k);
/// }
/// assert_eq!(s.total(), 5);
/// let a = s.estimate(b"a").unwrap();
/// assert_eq!((a.count, a.error), (3, 0));
/// ```
#[derive(Clone, Debug)]
pub struct SpaceSaving {
    capacity: usize,
    total: u64,
    counters: Vec<Counter>,
    /// Open addressing, linear probing: counter index or `EMPTY`; a power of two at least
    /// twice the capacity.
    slots: Vec<u32>,
    hasher: foldhash::fast::RandomState,
    /// A lower bound of the smallest count (the smallest at the last rescan: counts only
    /// grow); `candidates` had that count then.
    min_count: u64,
    candidates: Vec<u32>,
}

#[derive(Clone, Debug)]
struct Counter {
    hash: u64,
    count: u64,
    error: u64,
    /// Records since the current rate window opened (or since the key entered).
    window: u64,
    /// Records per second over the last closed rate window.
    rate: f64,
    key: Vec<u8>,
}

const EMPTY: u32 = u32::MAX;

/// A tracked key's estimate: the true count is in `count - error ..= count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The estimated count, an upper bound.
    pub count: u64,
    /// The most `count` may overcount by.
    pub error: u64,
}

impl SpaceSaving {
    /// A summary of `capacity` counters (at least 1, at most 2^24).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 24);
        SpaceSaving {
            capacity,
            total: 0,
            counters: Vec::with_capacity(capacity),
            slots: vec![EMPTY; (capacity * 2).next_power_of_two()],
            hasher: foldhash::fast::RandomState::default(),
            min_count: 0,
            candidates: Vec::with_capacity(capacity),
        }
    }

    /// The number of counters.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of keys tracked.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// The number of offers.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts one record of `key`; returns the key's estimated count.
    #[inline]
    pub fn offer(&mut self, key: &[u8]) -> u64 {
        self.total += 1;
        let hash = self.hasher.hash_one(key);
        match self.find(hash, key) {
            Ok(slot) => {
                let c = &mut self.counters[self.slots[slot] as usize];
                c.count += 1;
                c.window += 1;
                c.count
            }
            Err(slot) if self.counters.len() < self.capacity => {
                self.slots[slot] = self.counters.len() as u32;
                self.counters.push(Counter {
                    hash,
                    count: 1,
                    error: 0,
                    window: 1,
                    rate: 0.0,
                    key: key.to_vec(),
                });
                1
            }
            Err(_) => self.replace(hash, key),
        }
    }

    /// A new key takes the counter of a key with the smallest count.
    #[cold]
    fn replace(&mut self, hash: u64, key: &[u8]) -> u64 {
        let victim = self.victim();
        let mask = self.slots.len() - 1;
        let mut slot = self.counters[victim].hash as usize & mask;
        while self.slots[slot] != victim as u32 {
            slot = (slot + 1) & mask;
        }
        self.remove_slot(slot);
        let mut slot = hash as usize & mask;
        while self.slots[slot] != EMPTY {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = victim as u32;
        let c = &mut self.counters[victim];
        c.hash = hash;
        c.error = c.count;
        c.count += 1;
        c.window = 1;
        c.rate = 0.0;
        c.key.clear();
        c.key.extend_from_slice(key);
        c.count
    }

    /// A counter with the smallest count.
    fn victim(&mut self) -> usize {
        loop {
            while let Some(i) = self.candidates.pop() {
                if self.counters[i as usize].count == self.min_count {
                    return i as usize;
                }
            }
            self.min_count = self.counters.iter().map(|c| c.count).min().unwrap_or(0);
            let min = self.min_count;
            self.candidates.extend(
                self.counters
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.count == min)
                    .map(|(i, _)| i as u32),
            );
        }
    }

    /// `Ok(slot)` of `key`, or `Err(slot)`: the empty slot where it would go.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return Err(i);
            }
            let c = &self.counters[s as usize];
            if c.hash == hash && c.key == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Empties `slot`, shifting back the entries of its probe run that would no longer be
    /// found (deletion without tombstones).
    fn remove_slot(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let home = self.counters[s as usize].hash as usize & mask;
            // The entry at j stays if its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
    }

    /// The estimate of `key`, if it is tracked.
    pub fn estimate(&self, key: &[u8]) -> Option<Estimate> {
        let hash = self.hasher.hash_one(key);
        let slot = self.find(hash, key).ok()?;
        let c = &self.counters[self.slots[slot] as usize];
        Some(Estimate {
            count: c.count,
            error: c.error,
        })
    }

    /// The most an untracked key may have been counted: the smallest count when every
    /// counter is taken, else 0.
    pub fn min_count(&self) -> u64 {
        if self.counters.len() < self.capacity {
            0
        } else {
            self.counters.iter().map(|c| c.count).min().unwrap_or(0)
        }
    }

    /// The tracked keys with their estimates, largest count first.
    pub fn top(&self) -> Vec<(&[u8], Estimate)> {
        let mut out: Vec<(&[u8], Estimate)> = self
            .counters
            .iter()
            .map(|c| {
                (
                    &c.key[..],
                    Estimate {
                        count: c.count,
                        error: c.error,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        out
    }

    /// Closes a rate window of `elapsed_ms`: each counter's rate becomes the records it
    /// counted in the window per second, and the window starts again.
    pub(crate) fn close_window(&mut self, elapsed_ms: u64) {
        let secs = elapsed_ms.max(1) as f64 / 1000.0;
        for c in &mut self.counters {
            c.rate = c.window as f64 / secs;
            c.window = 0;
        }
    }
}

/// `hot.keys.capacity` and `hot.keys.min.share`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HotKeysConfig {
    /// Counters per summary; 0 turns detection off.
    pub capacity: usize,
    /// The estimated share of a topic's records from which a key is reported.
    pub min_share: f64,
    /// The records a router must have counted before it splits a detected key.
    pub min_records: u64,
}

/// A rate window closes at the first commit at least this long after it opened.
pub(crate) const RATE_WINDOW_MIN_MS: i64 = 1000;

/// The summaries of one task: one per repartition sink.
pub(crate) struct TaskHotKeys {
    capacity: usize,
    min_share: f64,
    min_records: u64,
    sinks: Vec<(Arc<str>, SpaceSaving)>,
    window_start: i64,
}

impl TaskHotKeys {
    pub(crate) fn new(config: HotKeysConfig, now_ms: i64) -> Self {
        TaskHotKeys {
            capacity: config.capacity,
            min_share: config.min_share,
            min_records: config.min_records,
            sinks: Vec::new(),
            window_start: now_ms,
        }
    }

    /// A summary for a sink writing the repartition topic `topic`; `None` when detection is
    /// off.
    pub(crate) fn register(&mut self, topic: &Arc<str>) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        self.sinks
            .push((topic.clone(), SpaceSaving::new(self.capacity)));
        Some(self.sinks.len() - 1)
    }

    /// Counts a record of `key` written by sink `sink`; returns the key's estimated count.
    #[inline]
    pub(crate) fn offer(&mut self, sink: usize, key: &[u8]) -> u64 {
        match self.sinks.get_mut(sink) {
            Some((_, s)) => s.offer(key),
            None => 0,
        }
    }

    /// Counts a record of `key` written by sink `sink`; returns whether the key is hot: the
    /// summary has counted at least `hot.keys.min.records` records and the key's estimated share
    /// of them is at least `hot.keys.min.share`.
    #[inline]
    pub(crate) fn offer_is_hot(&mut self, sink: usize, key: &[u8]) -> bool {
        match self.sinks.get_mut(sink) {
            Some((_, s)) => {
                let count = s.offer(key);
                s.total >= self.min_records && count as f64 >= self.min_share * s.total as f64
            }
            None => false,
        }
    }

    /// At a commit: closes the rate window if it is at least [`RATE_WINDOW_MIN_MS`] old.
    pub(crate) fn on_commit(&mut self, now_ms: i64) {
        let elapsed = now_ms.saturating_sub(self.window_start);
        if self.sinks.is_empty() || elapsed < RATE_WINDOW_MIN_MS {
            return;
        }
        for (_, s) in &mut self.sinks {
            s.close_window(elapsed as u64);
        }
        self.window_start = now_ms;
    }

    /// Whether the task has summaries.
    pub(crate) fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// A copy of every summary, for the application's metrics.
    pub(crate) fn snapshot(&self) -> Vec<SummarySnapshot> {
        self.sinks
            .iter()
            .map(|(topic, s)| SummarySnapshot {
                topic: topic.clone(),
                records: s.total,
                floor: s.min_count(),
                counters: s
                    .counters
                    .iter()
                    .map(|c| (c.key.clone(), c.count, c.error, c.rate))
                    .collect(),
            })
            .collect()
    }
}

/// One task's summary of one repartition topic, as reported.
#[derive(Clone, Debug)]
pub(crate) struct SummarySnapshot {
    topic: Arc<str>,
    records: u64,
    /// The most an untracked key may have been counted.
    floor: u64,
    /// Key, count, error, rate.
    counters: Vec<(Vec<u8>, u64, u64, f64)>,
}

/// The heavy hitters of one repartition topic, over the tasks of this instance that write it
/// (since each task started on this instance).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RepartitionHotKeys {
    /// The repartition topic, resolved (`<application.id>-<name>-repartition`).
    pub topic: String,
    /// Records with a key written to it, counted by the summaries.
    pub records: u64,
    /// The keys whose estimated share is at least `hot.keys.min.share`, largest count first.
    pub keys: Vec<HotKey>,
}

/// A hot key of a repartition topic.
#[derive(Clone, Debug, PartialEq)]
pub struct HotKey {
    /// The serialized key, as written to the repartition topic.
    pub key: Vec<u8>,
    /// Estimated records of the key: an upper bound (summed over tasks; a task that does not
    /// track the key adds the most it may have counted).
    pub count: u64,
    /// The most `count` overcounts by: the true count is in `count - error ..= count`, and
    /// `error <= records / hot.keys.capacity`.
    pub error: u64,
    /// `count / records`.
    pub share: f64,
    /// Records of the key per second over each task's last closed rate window (a window
    /// closes at the first commit at least 1 s after it opened; 0 before the first closes),
    /// summed over tasks. A key counts from when it entered a summary.
    pub rate: f64,
}

/// Merges the snapshots of several tasks by topic (sorted by topic): counts and errors add
/// up, a task that does not track a key contributing its floor to both (mergeable
/// SpaceSaving), and keys below `min_share` are left out.
pub(crate) fn merge<'a>(
    snapshots: impl IntoIterator<Item = &'a SummarySnapshot>,
    min_share: f64,
) -> Vec<RepartitionHotKeys> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<&SummarySnapshot>> =
        std::collections::BTreeMap::new();
    for s in snapshots {
        by_topic.entry(&s.topic).or_default().push(s);
    }
    by_topic
        .into_iter()
        .map(|(topic, snaps)| {
            let records: u64 = snaps.iter().map(|s| s.records).sum();
            let floors: u64 = snaps.iter().map(|s| s.floor).sum();
            // Key -> (count, error, rate, floors of the tasks tracking it).
            let mut keys: HashMap<&[u8], (u64, u64, f64, u64)> = HashMap::new();
            for s in &snaps {
                for (key, count, error, rate) in &s.counters {
                    let e = keys.entry(&key[..]).or_insert((0, 0, 0.0, 0));
                    e.0 += count;
                    e.1 += error;
                    e.2 += rate;
                    e.3 += s.floor;
                }
            }
            let mut hot: Vec<HotKey> = keys
                .into_iter()
                .filter_map(|(key, (count, error, rate, tracked_floors))| {
                    let untracked = floors - tracked_floors;
                    let count = count + untracked;
                    let share = if records == 0 {
                        0.0
                    } else {
                        count as f64 / records as f64
                    };
                    (share >= min_share).then(|| HotKey {
                        key: key.to_vec(),
                        count,
                        error: error + untracked,
                        share,
                        rate,
                    })
                })
                .collect();
            hot.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            RepartitionHotKeys {
                topic: topic.to_owned(),
                records,
                keys: hot,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_below_capacity() {
        let mut s = SpaceSaving::new(8);
        for i in 0..100u32 {
            s.offer(&(i % 5).to_be_bytes());
        }
        assert_eq!(s.len(), 5);
        assert_eq!(s.min_count(), 0);
        for i in 0..5u32 {
            assert_eq!(
                s.estimate(&i.to_be_bytes()),
                Some(Estimate {
                    count: 20,
                    error: 0
                })
            );
        }
    }

    #[test]
    fn replacement_inherits_the_minimum() {
        let mut s = SpaceSaving::new(2);
        s.offer(b"a");
        s.offer(b"a");
        s.offer(b"b");
        assert_eq!(s.offer(b"c"), 2);
        assert_eq!(s.estimate(b"b"), None);
        assert_eq!(s.estimate(b"c"), Some(Estimate { count: 2, error: 1 }));
        assert_eq!(s.min_count(), 2);
        // Every key still findable after many replacements (deletion keeps probe runs).
        for i in 0..10_000u32 {
            s.offer(&i.to_le_bytes());
            s.offer(b"hot");
            s.offer(b"hot");
            s.offer(b"hot");
        }
        assert!(
            s.estimate(b"hot")
                .is_some_and(|e| e.count - e.error >= 30_000)
        );
        let tracked = s.top();
        for (k, _) in tracked {
            assert!(s.estimate(k).is_some());
        }
    }

    #[test]
    fn windows_give_rates_and_merge_adds_up() {
        let mut t = TaskHotKeys::new(
            HotKeysConfig {
                capacity: 4,
                min_share: 0.3,
                min_records: 1_000,
            },
            0,
        );
        let topic: Arc<str> = "app-x-repartition".into();
        let i = t.register(&topic).unwrap_or(0);
        for n in 0..100u32 {
            let cold = n.to_be_bytes();
            t.offer(i, if n % 2 == 0 { &b"hot"[..] } else { &cold[..] });
        }
        t.on_commit(500); // too early: the window stays open
        t.on_commit(2000);
        let a = t.snapshot();
        let merged = merge(a.iter().chain(a.iter()), 0.3);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].records, 200);
        let hot = &merged[0].keys;
        assert_eq!(hot.len(), 1);
        assert_eq!(hot[0].key, b"hot");
        assert!(hot[0].count >= 100 && hot[0].count - hot[0].error <= 100);
        assert!((hot[0].share - 0.5).abs() < 0.1);
        // 50 records in 2 s, in each of two tasks.
        assert!((hot[0].rate - 50.0).abs() < 1e-9);
    }
}
