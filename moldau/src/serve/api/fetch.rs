//! Fetch: batches served as the log stores them, at the consumer's isolation level, with a
//! long poll.
//!
//! ```text
//!   watch every requested partition ─▶ read all ─▶ ≥ min_bytes, an error, or max_wait_ms up?
//!                  ▲                                   │ no                    │ yes
//!                  └──── AppendWaker::wait (an append, or shutdown, wakes it) ◀┘   ▶ respond
//! ```
//!
//! The waker is registered before the first read, so an append between a read and the wait
//! wakes the wait at once: no append is missed and nothing polls. Each partition's records
//! are the bytes the log read ([`Partition::read_isolated`](core_log::Partition::read_isolated))
//! handed on as `Bytes`.
//!
//! Fetch sessions (KIP-227) are not kept: every response has session id 0, which tells the
//! client to send full requests; a request in a session this server never opened gets
//! FETCH_SESSION_ID_NOT_FOUND, which makes the client start over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use core_log::{AppendWaker, Error, IsolationLevel, Partition};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::Apis;
use crate::serve::error_code::error_code;

/// The longest a fetch waits for `min_bytes`, whatever its `max_wait_ms`.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// One requested partition.
struct Target {
    /// Index into the response's topics.
    topic: usize,
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    /// The partition, or the error code of its lookup.
    partition: Result<Partition, i16>,
}

/// Fetch, v4–v12.
pub fn handle(apis: &Apis, req: FetchRequest, _version: i16) -> FetchResponse {
    if req.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let isolation = if req.isolation_level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut targets = Vec::new();
    for (i, t) in req.topics.into_iter().enumerate() {
        for p in &t.partitions {
            let partition = u32::try_from(p.partition)
                .map_err(|_| Error::UnknownTopicOrPartition {
                    topic: t.topic.to_string(),
                    partition: u32::MAX,
                })
                .and_then(|index| apis.log().partition(&t.topic, index))
                .map_err(|e| error_code(&e));
            targets.push(Target {
                topic: i,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                partition,
            });
        }
        topics.push(FetchableTopicResponse::default().with_topic(t.topic));
    }

    let waker = Arc::new(AppendWaker::default());
    for p in targets.iter().filter_map(|t| t.partition.as_ref().ok()) {
        p.watch(&waker);
    }
    apis.register_waiter(&waker);
    // A waiting fetch holds a thread of the blocking pool: its wait is capped, and a client
    // asking for longer gets an empty answer sooner and fetches again.
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    loop {
        let (partitions, bytes, errors) = read_all(&targets, isolation, max_bytes);
        let now = Instant::now();
        if bytes >= min_bytes || errors || now >= deadline || apis.is_shutting_down() {
            for (target, data) in targets.iter().zip(partitions) {
                topics[target.topic].partitions.push(data);
            }
            return FetchResponse::default().with_responses(topics);
        }
        waker.wait(deadline - now);
    }
}

/// Reads every target once: the partitions' data, the record bytes read, and whether a
/// partition failed (which answers at once, as Kafka does).
fn read_all(
    targets: &[Target],
    isolation: IsolationLevel,
    max_bytes: usize,
) -> (Vec<PartitionData>, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let read = match &t.partition {
            Err(code) => Err(failed(t.index, *code, None)),
            Ok(p) => {
                // The response stops growing at max_bytes, except that its first batch is
                // returned whatever its size, so that a consumer always makes progress.
                let room = max_bytes.saturating_sub(total).min(t.max_bytes);
                p.read_isolated(t.fetch_offset, room, isolation)
                    .map(|f| (f, room))
                    .map_err(|e| read_failed(t.index, &e))
            }
        };
        let data = match read {
            Ok((mut f, room)) => {
                if total > 0 && f.records.len() > room {
                    f.records = Bytes::new();
                }
                total += f.records.len();
                let aborted = (isolation == IsolationLevel::ReadCommitted).then(|| {
                    f.aborted_transactions
                        .iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(a.producer_id.into())
                                .with_first_offset(a.first_offset)
                        })
                        .collect()
                });
                PartitionData::default()
                    .with_partition_index(t.index)
                    .with_high_watermark(f.high_watermark)
                    .with_last_stable_offset(f.last_stable_offset)
                    .with_log_start_offset(f.log_start_offset)
                    .with_aborted_transactions(aborted)
                    .with_records(Some(f.records))
            }
            Err(data) => {
                errors = true;
                data
            }
        };
        out.push(data);
    }
    (out, total, errors)
}

/// A partition's answer to a failed read. An offset out of range comes with the valid range,
/// for the consumer's `auto.offset.reset`.
fn read_failed(index: i32, e: &Error) -> PartitionData {
    match e {
        Error::OffsetOutOfRange {
            log_start, log_end, ..
        } => failed(index, error_code(e), Some((*log_end, *log_start))),
        _ => {
            tracing::warn!(error = %e, "fetch failed");
            failed(index, error_code(e), None)
        }
    }
}

/// A partition's answer with an error: `range` is `(high watermark, log start offset)` when
/// known.
fn failed(index: i32, code: i16, range: Option<(i64, i64)>) -> PartitionData {
    let (high_watermark, log_start_offset) = range.unwrap_or((-1, -1));
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(-1)
        .with_log_start_offset(log_start_offset)
        .with_records(Some(Bytes::new()))
}
