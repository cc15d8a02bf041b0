//! The one place where the log's errors become Kafka's error codes.
//!
//! Every API answers per topic or partition with one of these codes; a client decides from the
//! code alone whether to retry, refresh its metadata or give up, so the mapping follows what a
//! Kafka broker answers for the same condition.

use core_log::Error;
use kafka_protocol::ResponseError;

/// Kafka's error code for `e`.
pub fn error_code(e: &Error) -> i16 {
    kafka_error(e).code()
}

/// Kafka's error for `e`.
pub fn kafka_error(e: &Error) -> ResponseError {
    use ResponseError as K;
    match e {
        Error::InvalidTopicName { .. } => K::InvalidTopicException,
        Error::TopicAlreadyExists { .. } => K::TopicAlreadyExists,
        Error::UnknownTopicOrPartition { .. } => K::UnknownTopicOrPartition,
        Error::InvalidPartitions { .. } | Error::TooManyPartitions { .. } => K::InvalidPartitions,
        // JoinGroup's session timeout outside the broker's bounds.
        Error::InvalidConfig { key, .. } if key == "session.timeout.ms" => K::InvalidSessionTimeout,
        Error::InvalidConfig { key, .. } if key == "transaction.timeout.ms" => {
            K::InvalidTransactionTimeout
        }
        Error::InvalidConfig { .. } => K::InvalidConfig,
        Error::RecordTooLarge { .. } => K::MessageTooLarge,
        // Kafka answers INVALID_RECORD for a batch its validation refuses (a null key on a
        // compacted topic, a bad timestamp); CRC and framing failures are CORRUPT_MESSAGE,
        // which clients retry. The log's validation does not tell them apart, and a retry of
        // the same bytes cannot succeed: not retriable.
        Error::InvalidRecord { .. } => K::InvalidRecord,
        Error::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
        // Damaged data on disk or a failed write: the partition is offline on this broker.
        Error::Corrupt { .. }
        | Error::CorruptRecord { .. }
        | Error::KafkaStorageError { .. }
        | Error::Io { .. } => K::KafkaStorageError,
        Error::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber,
        // What a partition leader answers a produce from an old epoch.
        Error::ProducerFenced { .. } => K::InvalidProducerEpoch,
        Error::IllegalGeneration { .. } => K::IllegalGeneration,
        Error::UnknownMemberId { .. } => K::UnknownMemberId,
        Error::RebalanceInProgress { .. } => K::RebalanceInProgress,
        Error::FencedInstanceId { .. } => K::FencedInstanceId,
        Error::InconsistentGroupProtocol { .. } => K::InconsistentGroupProtocol,
        Error::InvalidGroupId { .. } => K::InvalidGroupId,
        Error::GroupIdNotFound { .. } => K::GroupIdNotFound,
        Error::NonEmptyGroup { .. } => K::NonEmptyGroup,
        Error::InvalidCommitOffset { .. } => K::InvalidCommitOffsetSize,
        Error::InvalidTxnState { .. } => K::InvalidTxnState,
        Error::Timeout { .. } => K::RequestTimedOut,
        // The server is shutting down: the client should look for the partition again and
        // retry, which is what this retriable code makes it do.
        Error::Closed => K::NotLeaderOrFollower,
        _ => K::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_can_tell_retriable_errors_from_final_ones() {
        let unknown = Error::UnknownTopicOrPartition {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(error_code(&unknown), 3);
        assert!(kafka_error(&unknown).is_retriable());
        let too_large = Error::RecordTooLarge { size: 2, max: 1 };
        assert_eq!(error_code(&too_large), 10);
        assert!(!kafka_error(&too_large).is_retriable());
        assert!(kafka_error(&Error::Closed).is_retriable());
        let sequence = Error::OutOfOrderSequence {
            topic: "t".into(),
            partition: 0,
            producer_id: 1,
            expected: 0,
            received: 5,
        };
        assert_eq!(error_code(&sequence), 45);
    }
}
