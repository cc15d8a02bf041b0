//! The record accumulator: per-partition queues of batches being filled, bounded by
//! `batch.size`, `linger.ms` and `buffer.memory` (Kafka's `RecordAccumulator` and `BufferPool`).
//!
//! Records are encoded straight into their batch's buffer with [`BatchBuilder`]; buffers of
//! sent batches are pooled and reused, so steady-state sending allocates nothing per record.
//!
//! One mutex guards all queues. Senders hold it only to place and encode a record; the
//! sender thread holds it only to take ready batches out and to give memory back. Waiting is
//! on condition variables, never by spinning:
//! - the sender thread sleeps on `sender_cv` until a batch is ready or the earliest linger
//!   deadline passes; it is woken only when that moment moves earlier (a batch became full,
//!   a batch was created while it slept without a deadline, a flush, a close, or a `send`
//!   waiting for memory, which makes every batch ready, as Kafka's "exhausted" rule does);
//! - a `send` short of memory and a `flush` sleep on `progress_cv`, woken when a batch
//!   completes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::delivery::{BatchCompletion, Callback, RecordInfo, SharedCallback, Stored};
use super::partitioner::{Placement, Rng};
use crate::codec::{BATCH_HEADER_LEN, BatchBuilder};
use crate::error::{Error, Result};
use crate::record::Header;

/// An upper bound of the bytes a record takes in a batch (Kafka's
/// `DefaultRecord.recordSizeUpperBound`): every varint at its longest.
pub(crate) fn record_size_upper_bound(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) -> usize {
    const VARINT: usize = 5;
    const VARLONG: usize = 10;
    let bytes = |b: Option<&[u8]>| VARINT + b.map_or(0, <[u8]>::len);
    // length, attributes, timestamp delta, offset delta, key, value, header count, headers
    let mut n = VARINT + 1 + VARLONG + VARINT + bytes(key) + bytes(value) + VARINT;
    for h in headers {
        n += bytes(Some(h.key.as_bytes())) + bytes(h.value);
    }
    n
}

/// A serialized record on its way into a batch.
pub(crate) struct RecordParts<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [Header<'a>],
    /// [`record_size_upper_bound`] plus a batch header: the most a batch of its own needs.
    pub batch_size_upper_bound: usize,
}

/// A batch being filled or waiting for the sender.
pub(crate) struct ProducerBatch {
    pub id: u64,
    pub builder: BatchBuilder,
    pub completion: Arc<BatchCompletion>,
    /// Delivery-report callbacks of its records, in record order.
    pub callbacks: Vec<(RecordInfo, Stored)>,
    /// The shared callbacks its records have, each once (a record sent with the same one as
    /// the record before adds no reference).
    pub shared: Vec<SharedCallback>,
    /// Bytes of `buffer.memory` it holds until it completes.
    pub reserved: usize,
    created: Instant,
    /// No record goes in any more: it reached `batch.size`, or a record did not fit.
    full: bool,
}

impl ProducerBatch {
    fn push(
        &mut self,
        rec: &RecordParts<'_>,
        sizes: (i32, i32),
        callback: Option<Callback<'_>>,
        batch_size: usize,
    ) -> RecordInfo {
        // A batch holds at most batch.size bytes (or one record), far below 2^31 records.
        let index = self.builder.records_count() as u32;
        self.builder
            .append(rec.timestamp, rec.key, rec.value, rec.headers);
        let info = RecordInfo {
            index,
            timestamp: rec.timestamp,
            key_size: sizes.0,
            value_size: sizes.1,
        };
        if let Some(cb) = callback {
            if self.callbacks.capacity() == 0 {
                // Room for a batch of records like this one at once, not a doubling per
                // power of two (each a reallocation, on the sending thread's hot path).
                let record = rec
                    .batch_size_upper_bound
                    .saturating_sub(crate::codec::BATCH_HEADER_LEN)
                    .max(1);
                self.callbacks
                    .reserve((batch_size / record + 1).min(MAX_CALLBACKS_RESERVED));
            }
            let stored = match cb {
                Callback::Once(f) => Stored::Once(f),
                Callback::Shared(f) => {
                    if !self.shared.last().is_some_and(|last| Arc::ptr_eq(last, f)) {
                        self.shared.push(f.clone());
                    }
                    // At most one per record, and a batch's records fit in a u32.
                    Stored::Shared((self.shared.len() - 1) as u32)
                }
            };
            self.callbacks.push((info, stored));
        }
        if self.builder.size() >= batch_size {
            self.full = true;
        }
        info
    }
}

/// The most callbacks a batch makes room for at its first record.
const MAX_CALLBACKS_RESERVED: usize = 512;

/// The producer's settings the accumulator applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub batch_size: usize,
    pub linger: Duration,
    pub buffer_memory: usize,
    pub max_block: Duration,
}

pub(crate) struct Accumulator {
    limits: Limits,
    state: Mutex<State>,
    /// The sender thread waits here for a batch to become ready.
    sender_cv: Condvar,
    /// Sends short of memory and flushes wait here for batches to complete.
    progress_cv: Condvar,
}

struct State {
    /// Index into `topics` by name: one hash per record, and no borrow of the map kept.
    index: HashMap<Arc<str>, usize>,
    topics: Vec<TopicQueues>,
    /// `buffer.memory` held by batches not yet completed.
    buffer_used: usize,
    /// Buffers of completed batches, for new batches.
    free: Vec<Vec<u8>>,
    next_batch_id: u64,
    /// Ids of batches created and not yet completed (queued or being appended).
    incomplete: BTreeSet<u64>,
    /// `flush` calls in progress: every batch is ready meanwhile.
    flushes: usize,
    /// Sends waiting for memory: every batch is ready meanwhile (Kafka's "exhausted").
    memory_waiters: usize,
    /// Threads waiting on `progress_cv`.
    progress_waiters: usize,
    closed: bool,
    /// The sender thread is waiting on `sender_cv`, until `sender_deadline` if set.
    sender_parked: bool,
    sender_deadline: Option<Instant>,
    rng: Rng,
}

struct TopicQueues {
    name: Arc<str>,
    /// Per partition, the batches in send order; only the last one may still take records.
    partitions: Vec<VecDeque<ProducerBatch>>,
    /// The sticky partition for keyless records and the batch it is filling.
    sticky: Option<(u32, u64)>,
    round_robin: u32,
}

impl TopicQueues {
    /// The sticky partition: the current one while the batch it started is still open, else
    /// another one, chosen at random (Kafka's sticky partitioner, KIP-480).
    fn sticky_partition(&self, count: u32, rng: &mut Rng) -> u32 {
        match self.sticky {
            Some((p, batch)) if p < count => {
                let open = self.partitions[p as usize]
                    .back()
                    .is_some_and(|b| !b.full && b.id == batch);
                if open { p } else { next_sticky(p, count, rng) }
            }
            _ => rng.next_below(count),
        }
    }
}

/// A partition other than `prev`, uniformly, when there is one.
fn next_sticky(prev: u32, count: u32, rng: &mut Rng) -> u32 {
    if count <= 1 {
        0
    } else {
        (prev + 1 + rng.next_below(count - 1)) % count
    }
}

/// How many buffers of completed batches to keep for reuse.
const MAX_POOLED: usize = 64;

impl State {
    fn topic_index(&mut self, topic: &str) -> usize {
        if let Some(&i) = self.index.get(topic) {
            return i;
        }
        let name: Arc<str> = Arc::from(topic);
        self.topics.push(TopicQueues {
            name: name.clone(),
            partitions: Vec::new(),
            sticky: None,
            round_robin: 0,
        });
        self.index.insert(name, self.topics.len() - 1);
        self.topics.len() - 1
    }

    /// Places the record in a batch. `Ok(None)`: it needs a new batch and `buffer.memory`
    /// has no room for one. The bool asks to wake the sender now.
    #[allow(clippy::too_many_arguments)]
    fn try_append(
        &mut self,
        limits: &Limits,
        topic: &str,
        count: u32,
        placement: Placement,
        round_robin: &mut Option<u32>,
        rec: &RecordParts<'_>,
        sizes: (i32, i32),
        callback: &mut Option<Callback<'_>>,
    ) -> Option<(Arc<BatchCompletion>, RecordInfo, bool)> {
        let idx = self.topic_index(topic);
        let tq = &mut self.topics[idx];
        if tq.partitions.len() < count as usize {
            tq.partitions.resize_with(count as usize, VecDeque::new);
        }
        let mut wake = false;
        let mut partition = match placement {
            Placement::Fixed(p) => p,
            // Resolved once per send: a send that waits for memory keeps its turn.
            Placement::RoundRobin => *round_robin.get_or_insert_with(|| {
                let p = tq.round_robin % count;
                tq.round_robin = tq.round_robin.wrapping_add(1);
                p
            }),
            Placement::Sticky => tq.sticky_partition(count, &mut self.rng),
        };
        // Each pass marks one open batch full, so this ends.
        while let Some(last) = tq.partitions[partition as usize]
            .back_mut()
            .filter(|b| !b.full)
        {
            let size = last
                .builder
                .record_size(rec.timestamp, rec.key, rec.value, rec.headers);
            if last.builder.size() + size <= limits.batch_size {
                let info = last.push(rec, sizes, callback.take(), limits.batch_size);
                wake |= last.full;
                if placement == Placement::Sticky {
                    tq.sticky = Some((partition, last.id));
                }
                return Some((last.completion.clone(), info, wake));
            }
            last.full = true;
            wake = true;
            if placement != Placement::Sticky || count <= 1 {
                break;
            }
            // The sticky batch is full: move on to another partition.
            partition = next_sticky(partition, count, &mut self.rng);
        }

        // A new batch. It reserves batch.size (or the record's size, if larger), never more
        // than the whole buffer: send rejected records larger than that already.
        let need = rec
            .batch_size_upper_bound
            .max(limits.batch_size)
            .min(limits.buffer_memory);
        if self.buffer_used + need > limits.buffer_memory {
            return None;
        }
        self.buffer_used += need;
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.incomplete.insert(id);
        let buf = self.free.pop().unwrap_or_else(|| Vec::with_capacity(need));
        let mut batch = ProducerBatch {
            id,
            builder: BatchBuilder::new(buf),
            completion: BatchCompletion::new(tq.name.clone(), partition),
            callbacks: Vec::new(),
            shared: Vec::new(),
            reserved: need,
            created: Instant::now(),
            full: false,
        };
        let info = batch.push(rec, sizes, callback.take(), limits.batch_size);
        // The sender must learn of the batch now if it is sendable at once, or if it sleeps
        // with no deadline (a later deadline it has already covers this batch's).
        wake |= batch.full
            || limits.linger.is_zero()
            || (self.sender_parked && self.sender_deadline.is_none());
        let completion = batch.completion.clone();
        if placement == Placement::Sticky {
            tq.sticky = Some((partition, id));
        }
        tq.partitions[partition as usize].push_back(batch);
        Some((completion, info, wake))
    }
}

impl Accumulator {
    pub(crate) fn new(limits: Limits) -> Accumulator {
        Accumulator {
            limits,
            state: Mutex::new(State {
                index: HashMap::new(),
                topics: Vec::new(),
                buffer_used: 0,
                free: Vec::new(),
                next_batch_id: 0,
                incomplete: BTreeSet::new(),
                flushes: 0,
                memory_waiters: 0,
                progress_waiters: 0,
                closed: false,
                sender_parked: false,
                sender_deadline: None,
                rng: Rng::seeded(),
            }),
            sender_cv: Condvar::new(),
            progress_cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the state consistent before anything that can panic (user
        // code never runs under this lock), so a poisoned lock is still usable.
        crate::sync::lock(&self.state)
    }

    fn wake_sender(&self, st: &mut State) {
        if st.sender_parked {
            st.sender_parked = false;
            self.sender_cv.notify_one();
        }
    }

    /// Appends a record to its partition's open batch, or to a new batch, waiting up to
    /// `max.block.ms` for `buffer.memory` when a new batch does not fit. On an error nothing
    /// was added and the callback is dropped uncalled.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &self,
        topic: &str,
        count: u32,
        placement: Placement,
        rec: &RecordParts<'_>,
        sizes: (i32, i32),
        mut callback: Option<Callback<'_>>,
    ) -> Result<(Arc<BatchCompletion>, RecordInfo)> {
        let mut st = self.lock();
        let mut round_robin = None;
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if st.closed {
                return Err(Error::Closed);
            }
            if let Some((completion, info, wake)) = st.try_append(
                &self.limits,
                topic,
                count,
                placement,
                &mut round_robin,
                rec,
                sizes,
                &mut callback,
            ) {
                if wake {
                    self.wake_sender(&mut st);
                }
                return Ok((completion, info));
            }
            let now = Instant::now();
            // None: max.block.ms is too large to add to an Instant: wait without a bound.
            let until = *deadline.get_or_insert_with(|| now.checked_add(self.limits.max_block));
            if until.is_some_and(|d| now >= d) {
                return Err(Error::Timeout {
                    operation: "send waiting for buffer.memory",
                    after_ms: self.limits.max_block.as_millis() as u64,
                });
            }
            st.memory_waiters += 1;
            st.progress_waiters += 1;
            // Every batch is ready while someone waits for memory: the sender frees it.
            self.wake_sender(&mut st);
            st = match until {
                Some(d) => {
                    self.progress_cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .progress_cv
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            st.memory_waiters -= 1;
            st.progress_waiters -= 1;
        }
    }

    /// For the sender thread: waits until batches are ready and moves them to `out`, each
    /// partition's in order. Returns false once the accumulator is closed and empty.
    pub(crate) fn drain(&self, out: &mut Vec<ProducerBatch>) -> bool {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let all_ready = st.closed || st.flushes > 0 || st.memory_waiters > 0;
            let mut deadline: Option<Instant> = None;
            let mut queued = false;
            let linger = self.limits.linger;
            for tq in &mut st.topics {
                for q in &mut tq.partitions {
                    while let Some(head) = q.front() {
                        // None: linger.ms too large to add to an Instant, so never expires.
                        let expires = head.created.checked_add(linger);
                        let ready = all_ready
                            || head.full
                            || q.len() > 1
                            || expires.is_some_and(|e| now >= e);
                        if !ready {
                            queued = true;
                            if let Some(e) = expires {
                                deadline = Some(deadline.map_or(e, |d| d.min(e)));
                            }
                            break;
                        }
                        if let Some(b) = q.pop_front() {
                            out.push(b);
                        }
                    }
                }
            }
            if !out.is_empty() {
                return true;
            }
            if st.closed && !queued {
                return false;
            }
            st.sender_parked = true;
            st.sender_deadline = deadline;
            st = match deadline {
                Some(d) => {
                    self.sender_cv
                        .wait_timeout(st, d.saturating_duration_since(now))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .sender_cv
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            st.sender_parked = false;
        }
    }

    /// For the sender thread: a batch has completed; gives back its memory and its buffer.
    pub(crate) fn release(&self, id: u64, reserved: usize, mut buf: Vec<u8>) {
        let mut st = self.lock();
        st.buffer_used -= reserved;
        st.incomplete.remove(&id);
        // Only batch.size buffers are pooled; a large record's buffer goes back to the
        // allocator.
        if buf.capacity() <= self.limits.batch_size.max(BATCH_HEADER_LEN) * 2
            && st.free.len() < MAX_POOLED
        {
            buf.clear();
            st.free.push(buf);
        }
        if st.progress_waiters > 0 {
            self.progress_cv.notify_all();
        }
    }

    /// Makes every batch ready and waits until all batches created before the call have
    /// completed (records sent meanwhile by other threads are not waited for).
    pub(crate) fn flush(&self) {
        let mut st = self.lock();
        let upto = st.next_batch_id;
        st.flushes += 1;
        self.wake_sender(&mut st);
        while st.incomplete.first().is_some_and(|&id| id < upto) {
            st.progress_waiters += 1;
            st = self
                .progress_cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.progress_waiters -= 1;
        }
        st.flushes -= 1;
    }

    /// Refuses new records; the sender sends everything queued, then stops.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.wake_sender(&mut st);
    }
}
