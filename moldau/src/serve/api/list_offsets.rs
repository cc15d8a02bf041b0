//! ListOffsets: a partition's earliest offset (-2), latest offset (-1: the high watermark, or
//! the last stable offset for read_committed), or the first offset whose record's timestamp is
//! at or after a time (Kafka's `offsetsForTimes`).

use core_log::{Error, IsolationLevel, Partition};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Apis;
use crate::serve::error_code::error_code;

/// Kafka's `ListOffsetsRequest.LATEST_TIMESTAMP`.
pub const LATEST_TIMESTAMP: i64 = -1;
/// Kafka's `ListOffsetsRequest.EARLIEST_TIMESTAMP`.
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// ListOffsets, v1–v6.
pub fn handle(apis: &Apis, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let isolation = if version >= 2 && req.isolation_level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let found = u32::try_from(p.partition_index)
                        .map_err(|_| Error::UnknownTopicOrPartition {
                            topic: t.name.to_string(),
                            partition: u32::MAX,
                        })
                        .and_then(|i| apis.log().partition(&t.name, i))
                        .and_then(|partition| lookup(&partition, p.timestamp, isolation));
                    let res = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match found {
                        Ok((offset, timestamp)) => res
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                        Err(e) => res.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)`: `(-1, -1)` when no record is that recent (Kafka's answer).
fn lookup(p: &Partition, timestamp: i64, isolation: IsolationLevel) -> Result<(i64, i64), Error> {
    let end = match isolation {
        IsolationLevel::ReadCommitted => p.last_stable_offset()?,
        IsolationLevel::ReadUncommitted => p.high_watermark()?,
    };
    Ok(match timestamp {
        EARLIEST_TIMESTAMP => (p.log_start_offset()?, -1),
        LATEST_TIMESTAMP => (end, -1),
        t => match p.offset_for_timestamp(t)? {
            // A read_committed consumer may not be sent past the last stable offset.
            Some((offset, ts)) if offset < end => (offset, ts),
            _ => (-1, -1),
        },
    })
}
