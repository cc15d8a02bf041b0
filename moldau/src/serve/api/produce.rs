//! Produce: each partition's records are appended as received, through
//! [`Partition::append_batches`](core_log::Partition::append_batches), which validates every
//! batch (framing, CRC, sizes, an idempotent producer's id, epoch and sequence) and assigns
//! the offsets. A partition's outcome is its own; one refused partition does not fail the
//! others.
//!
//! `acks`: with one broker, `1` and `-1` (all) both answer after the append, which is as
//! durable as the log's flush policy makes it; `0` gets no response at all, and a failure
//! closes the connection (Kafka's way of telling a fire-and-forget producer).

use bytes::Bytes;
use core_log::codec::RecordBatch;
use core_log::{Broker, TopicPartition};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Apis, RequestError};
use crate::serve::error_code::{error_code, kafka_error};

/// Produce, v3–v9. `None` for `acks=0`.
pub fn handle(
    apis: &Apis,
    req: ProduceRequest,
    version: i16,
) -> Result<Option<ProduceResponse>, RequestError> {
    let acks_valid = matches!(req.acks, -1..=1);
    let mut failed = 0;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let res = if acks_valid {
                append(apis, &topic.name, data.index, data.records, version)
            } else {
                refused(data.index, ResponseError::InvalidRequiredAcks.code(), None)
            };
            if res.error_code != 0 {
                failed += 1;
            }
            partitions.push(res);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if req.acks == 0 {
        return match failed {
            0 => Ok(None),
            failed => Err(RequestError::FireAndForgetFailed { failed }),
        };
    }
    Ok(Some(ProduceResponse::default().with_responses(responses)))
}

fn append(
    apis: &Apis,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    version: i16,
) -> PartitionProduceResponse {
    let Some(records) = records else {
        return refused(
            index,
            ResponseError::InvalidRecord.code(),
            Some("no records"),
        );
    };
    // The coordinators' own topics: a record written there by a client would forge group or
    // transaction state (Kafka refuses such appends the same way).
    if core_log::is_internal_topic(topic) {
        return refused(
            index,
            ResponseError::InvalidTopicException.code(),
            Some("internal topics are written by the log's coordinators only"),
        );
    }
    let partition = match u32::try_from(index)
        .map_err(|_| core_log::Error::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition: u32::MAX,
        })
        .and_then(|i| apis.log().partition(topic, i))
    {
        Ok(p) => p,
        Err(e) => return refused(index, error_code(&e), None),
    };
    if let Some(refusal) = outside_transaction(apis, topic, index, &records) {
        return refusal;
    }
    // The log patches offsets into the batches in place; the frame's bytes are shared.
    let mut bytes = records.to_vec();
    match partition.append_batches(&mut bytes) {
        Ok(info) => {
            if info.duplicate {
                tracing::debug!(
                    topic,
                    partition = index,
                    "duplicate batch of an idempotent producer"
                );
            }
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(info.log_append_time.unwrap_or(-1))
                .with_log_start_offset(info.log_start_offset)
        }
        Err(e) => {
            tracing::debug!(topic, partition = index, error = %e, "produce refused");
            let code = kafka_error(&e).code();
            // The message is a v8+ field.
            let message = (version >= 8).then(|| e.to_string());
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(code)
                .with_base_offset(-1)
                .with_error_message(message.map(StrBytes::from_string))
        }
    }
}

/// INVALID_TXN_STATE for a transactional batch whose producer has no open transaction with
/// this partition in it (KIP-890's verification): appended, it would start a transaction no
/// EndTxn or timeout marks, pinning the partition's last stable offset for good.
fn outside_transaction(
    apis: &Apis,
    topic: &str,
    index: i32,
    records: &[u8],
) -> Option<PartitionProduceResponse> {
    let (batch, _) = RecordBatch::split(records).ok().flatten()?;
    if !batch.is_transactional() {
        return None;
    }
    let tp = TopicPartition::new(topic, u32::try_from(index).ok()?);
    let broker: &Broker = apis.log().as_ref();
    match broker.partition_in_transaction(batch.producer_id(), batch.producer_epoch(), &tp) {
        Ok(true) => None,
        Ok(false) => Some(refused(
            index,
            ResponseError::InvalidTxnState.code(),
            Some("the partition was not added to the producer's open transaction"),
        )),
        Err(e) => Some(refused(index, error_code(&e), None)),
    }
}

fn refused(index: i32, code: i16, message: Option<&'static str>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_error_message(message.map(StrBytes::from_static_str))
}
