//! Windows for windowed aggregations: tumbling and hopping [`TimeWindows`], [`SessionWindows`],
//! [`SlidingWindows`], the [`Window`] and [`Windowed`] key an aggregation emits, and their
//! serdes.
//!
//! Semantics follow Kafka Streams. Event time is the record timestamp (records with a negative
//! timestamp are dropped); stream time is the largest timestamp the task has seen. A time
//! window `[start, end)` accepts a record while `stream time < end + grace` (Kafka's
//! `windowEnd > streamTime - grace`): with stream time at exactly `end + grace - 1` a record of
//! the window is aggregated, at `end + grace` it is dropped as late. A session `[start, end]`
//! (both inclusive) closes once `end + grace < stream time` (Kafka's
//! `sessionEnd < streamTime - grace`). A sliding window `[start, end]` (both inclusive) accepts
//! updates while `stream time <= end + grace` (Kafka's `windowEnd >= streamTime - grace`); see
//! [`SlidingWindows`] for when a record is dropped.
//!
//! ```
//! use std::time::Duration;
//! use streams::window::{TimeWindows, Window};
//! let w = TimeWindows::of_size_and_grace(Duration::from_secs(60), Duration::from_secs(10))
//!     .advance_by(Duration::from_secs(30));
//! assert_eq!(w.windows_for(75_000), vec![Window::new(30_000, 90_000), Window::new(60_000, 120_000)]);
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::serde::{Serde, SerdeError, SharedSerde};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A window of event time in milliseconds: `[start, end)` for time windows, `[start, end]` for
/// sessions and sliding windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// The first millisecond of the window.
    pub start: i64,
    /// The end: exclusive for time windows; inclusive for sessions (the last record) and for
    /// sliding windows (`start + time difference`, as Kafka's `TimeWindow` of a sliding
    /// aggregation).
    pub end: i64,
}

impl Window {
    /// The window from `start` to `end`.
    pub fn new(start: i64, end: i64) -> Self {
        Window { start, end }
    }
}

/// A key with the window of its aggregate (Kafka's `Windowed<K>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// The window.
    pub window: Window,
}

impl<K> Windowed<K> {
    /// `key` in `window`.
    pub fn new(key: K, window: Window) -> Self {
        Windowed { key, window }
    }
}

/// Tumbling (advance = size, the default) or hopping (advance < size) windows of a fixed size,
/// aligned to the epoch, with a grace period for out-of-order records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeWindows {
    pub(crate) size: i64,
    pub(crate) advance: i64,
    pub(crate) grace: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size` that accept out-of-order records for `grace` after they end.
    pub fn of_size_and_grace(size: Duration, grace: Duration) -> Self {
        let size = millis(size).max(1);
        TimeWindows {
            size,
            advance: size,
            grace: millis(grace),
        }
    }

    /// Tumbling windows of `size` without grace: a record older than the end of its window by
    /// stream time is dropped.
    pub fn of_size_no_grace(size: Duration) -> Self {
        Self::of_size_and_grace(size, Duration::ZERO)
    }

    /// Hopping windows: a new window every `advance` (at most the size; 1 ms at least).
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance = millis(advance).clamp(1, self.size);
        self
    }

    /// The size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size
    }

    /// The advance in milliseconds.
    pub fn advance_ms(&self) -> i64 {
        self.advance
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// The windows that contain `timestamp`, oldest first (windows start at 0 or later).
    pub fn windows_for(&self, timestamp: i64) -> Vec<Window> {
        match self.starts_for(timestamp) {
            Some((first, last)) => (first..=last)
                .step_by(self.advance as usize)
                .map(|start| Window::new(start, start + self.size))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The first and last start of the windows that contain `timestamp` (they step by the
    /// advance), without allocating: the starts `s >= 0` with `s % advance == 0` and
    /// `timestamp - size < s <= timestamp`. `None` for a negative timestamp.
    pub(crate) fn starts_for(&self, timestamp: i64) -> Option<(i64, i64)> {
        if timestamp < 0 {
            return None;
        }
        let last = timestamp - timestamp % self.advance;
        // The oldest: the first multiple of the advance above `timestamp - size`, at least 0.
        let lo = (timestamp - self.size + 1).max(0);
        let first = match lo % self.advance {
            0 => lo,
            r => lo + (self.advance - r),
        };
        Some((first.min(last), last))
    }
}

/// Session windows: records of a key closer than `gap` in event time belong to one session;
/// sessions that a record brings within `gap` of each other merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionWindows {
    pub(crate) gap: i64,
    pub(crate) grace: i64,
}

impl SessionWindows {
    /// Sessions closed by `gap` of inactivity, accepting out-of-order records for `grace`.
    pub fn with_inactivity_gap_and_grace(gap: Duration, grace: Duration) -> Self {
        SessionWindows {
            gap: millis(gap),
            grace: millis(grace),
        }
    }

    /// The inactivity gap in milliseconds.
    pub fn gap_ms(&self) -> i64 {
        self.gap
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }
}

/// Sliding windows (Kafka's `SlidingWindows`, KIP-450): windows of a fixed time difference `d`,
/// both ends inclusive (`[start, start + d]`), defined by the records of each key rather than
/// aligned to the epoch. Each record at `t` ends a window `[t - d, t]` (its *left* window) and,
/// when it leaves the sliding window, starts one at `t + 1` (its *right* window
/// `[t + 1, t + 1 + d]`), which exists only if some record of the key falls into it. As in
/// Kafka, windows start at 0 or later: the left window of a record at `t < d` is `[0, d]`. The
/// aggregate of a window is over every accepted record of the key with `start <= ts <= end`.
///
/// **Grace** (Kafka's rule, exact to the millisecond): a window `[start, end]` is updated while
/// `stream time <= end + grace` and closed once `stream time > end + grace`. A record at `t` is
/// dropped as late when every window that could hold it is closed, that is when
/// `stream time > t + d + grace` (Kafka's `t + 1 + d <= streamTime - grace`; `[t, t + d]` is the
/// last window that can hold it). A record that is not dropped goes into those of its windows
/// that are still open; it is kept for the windows it may define later.
///
/// ```
/// use std::time::Duration;
/// use streams::window::SlidingWindows;
/// let w = SlidingWindows::of_time_difference_and_grace(Duration::from_secs(5), Duration::from_secs(1));
/// assert_eq!((w.time_difference_ms(), w.grace_ms()), (5_000, 1_000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindows {
    pub(crate) difference: i64,
    pub(crate) grace: i64,
}

impl SlidingWindows {
    /// Sliding windows of `time_difference` (the largest difference between the timestamps
    /// of two records of one window), accepting out-of-order records for `grace` after a
    /// window ends.
    pub fn of_time_difference_and_grace(time_difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            difference: millis(time_difference),
            grace: millis(grace),
        }
    }

    /// Sliding windows of `time_difference` without grace.
    pub fn of_time_difference_without_grace(time_difference: Duration) -> Self {
        Self::of_time_difference_and_grace(time_difference, Duration::ZERO)
    }

    /// The time difference in milliseconds (`end - start` of every window).
    pub fn time_difference_ms(&self) -> i64 {
        self.difference
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }
}

/// The serde of a [`Windowed`] key in output topics, as Kafka's `TimeWindowedSerializer` and
/// `SessionWindowedSerializer` write it: the key's bytes then the window start, big-endian
/// (time windows: `[key][start]`, the end being start + size); sessions: `[key][end][start]`.
pub struct WindowedSerde<K> {
    inner: SharedSerde<K>,
    /// `Some(size)`: time windows; `None`: sessions.
    size: Option<i64>,
}

impl<K> Clone for WindowedSerde<K> {
    fn clone(&self) -> Self {
        WindowedSerde {
            inner: self.inner.clone(),
            size: self.size,
        }
    }
}

impl<K: 'static> WindowedSerde<K> {
    /// For time windows of `size` (needed to read the end back).
    pub fn time(inner: impl Serde<K>, size: Duration) -> Self {
        WindowedSerde {
            inner: Arc::new(inner),
            size: Some(millis(size)),
        }
    }

    /// For sliding windows of `time_difference`: as [`WindowedSerde::time`] with the time
    /// difference as size, so the end read back is the inclusive `start + time_difference`
    /// (Kafka: `WindowedSerdes.timeWindowedSerdeFrom(type, timeDifference)`).
    pub fn sliding(inner: impl Serde<K>, time_difference: Duration) -> Self {
        Self::time(inner, time_difference)
    }

    /// For session windows.
    pub fn session(inner: impl Serde<K>) -> Self {
        WindowedSerde {
            inner: Arc::new(inner),
            size: None,
        }
    }

    pub(crate) fn from_shared(inner: SharedSerde<K>, size: Option<i64>) -> Self {
        WindowedSerde { inner, size }
    }
}

fn read_i64(bytes: &[u8]) -> Result<i64, SerdeError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| "windowed key: short window")?;
    Ok(i64::from_be_bytes(b))
}

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(
        &self,
        topic: &str,
        value: &Windowed<K>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        self.inner.serialize(topic, &value.key, out)?;
        if self.size.is_none() {
            out.extend_from_slice(&value.window.end.to_be_bytes());
        }
        out.extend_from_slice(&value.window.start.to_be_bytes());
        Ok(())
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<Windowed<K>, SerdeError> {
        let suffix = if self.size.is_some() { 8 } else { 16 };
        let cut = bytes
            .len()
            .checked_sub(suffix)
            .ok_or("windowed key: shorter than its window")?;
        let key = self.inner.deserialize(topic, &bytes[..cut])?;
        let window = match self.size {
            Some(size) => {
                let start = read_i64(&bytes[cut..])?;
                Window::new(start, start.saturating_add(size))
            }
            None => Window::new(
                read_i64(&bytes[cut + 8..])?,
                read_i64(&bytes[cut..cut + 8])?,
            ),
        };
        Ok(Windowed { key, window })
    }
}

/// The key of a window store: ordered by time first so that closed and expired windows are
/// one range at the start of the store. `time` is the window start for time windows and the
/// session end for sessions (then `other` is the session start). `key: None` is only a range
/// bound: it sorts before every key of its time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey<K> {
    pub time: i64,
    pub key: Option<K>,
    pub other: i64,
}

impl<K> SlotKey<K> {
    pub(crate) fn bound(time: i64) -> Self {
        SlotKey {
            time,
            key: None,
            other: 0,
        }
    }
}

/// `[time BE with the sign bit flipped][1][key bytes]` (+ `[other, flipped]` for sessions; a
/// bound is the time alone): the flipped sign bit makes byte order the order of signed times.
pub(crate) struct SlotKeySerde<K> {
    pub inner: SharedSerde<K>,
    pub session: bool,
}

const SIGN: u64 = 1 << 63;

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ SIGN).to_be_bytes()
}

fn unflip(bytes: &[u8]) -> Result<i64, SerdeError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| "window store key: short time")?;
    Ok((u64::from_be_bytes(b) ^ SIGN) as i64)
}

impl<K: 'static> Serde<SlotKey<K>> for SlotKeySerde<K> {
    fn serialize(
        &self,
        topic: &str,
        value: &SlotKey<K>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        out.extend_from_slice(&flip(value.time));
        if let Some(k) = &value.key {
            out.push(1);
            self.inner.serialize(topic, k, out)?;
            if self.session {
                out.extend_from_slice(&flip(value.other));
            }
        }
        Ok(())
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<SlotKey<K>, SerdeError> {
        if bytes.len() < 8 {
            return Err("window store key: shorter than its time".into());
        }
        let time = unflip(&bytes[..8])?;
        if bytes.len() == 8 {
            return Ok(SlotKey::bound(time));
        }
        let (key, other) = if self.session {
            let cut = bytes
                .len()
                .checked_sub(8)
                .filter(|&c| c >= 9)
                .ok_or("window store key: no session start")?;
            (&bytes[9..cut], unflip(&bytes[cut..])?)
        } else {
            (&bytes[9..], 0)
        };
        Ok(SlotKey {
            time,
            key: Some(self.inner.deserialize(topic, key)?),
            other,
        })
    }
}
