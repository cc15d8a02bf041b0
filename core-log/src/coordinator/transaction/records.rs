//! The records of the compacted topic `__transaction_state`, byte for byte as Kafka writes
//! them, so that a later Kafka wire front end (or Kafka's own tools, given the segment files)
//! reads the same transactions.
//!
//! Every record has a key and a value, each starting with an `i16` version. A null value is a
//! tombstone: the transactional id expired and compaction then drops the key.
//!
//! ```text
//! TransactionLogKey    version 0    transactional_id str
//!
//! TransactionLogValue  v0, v1       producer_id i64 | producer_epoch i16 |
//!                                   transaction_timeout_ms i32 | transaction_status i8 |
//!                                   transaction_partitions [topic str | partition_ids [i32]]? |
//!                                   transaction_last_update_timestamp_ms i64 |
//!                                   transaction_start_timestamp_ms i64
//!                      v1           flexible (see below), with tagged fields
//!                                     0  previous_producer_id i64        (default -1)
//!                                     1  next_producer_id i64            (default -1)
//!                                     2  client_transaction_version i16  (default 0)
//! ```
//!
//! Integers are big-endian. `str` is an `i16` length and UTF-8, `[x]` an `i32` count and the
//! elements; `?` marks a nullable field, whose length is -1 for null. The flexible version
//! (v1) uses Kafka's compact forms instead: an unsigned varint of length + 1 (0 for null)
//! before strings and arrays, and a tagged-field section after every structure: a varint
//! count, then per field a varint tag, a varint size and the field's bytes. A tagged field
//! holding its default is left out, and fields go in increasing tag order, as Kafka's
//! generated serializers do.
//!
//! `transaction_status` is Kafka's `TransactionState` id (see [`TransactionState`]). Kafka
//! writes null partitions for an `Empty` transaction (which has none) and, when reading,
//! ignores the partitions of an `Empty` one; this module does the same.
//!
//! This module writes value version 1, what Kafka writes once `transaction.version` is at
//! least 1, and reads both versions. Decoding checks every length against the bytes that
//! remain before using it, so corrupt bytes give an error and never a panic or an allocation
//! on behalf of a bogus length.

use crate::storage::topic::TopicPartition;
use crate::wire::{self, InternalRecordError, Reader, encode_with};

/// The internal topic holding the state of every transactional id.
pub(crate) const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's `CoordinatorRecordType.TRANSACTION_LOG`, the only key version.
const KEY_VERSION: i16 = 0;
/// The value version written: the flexible one.
const VALUE_VERSION: i16 = 1;
/// The first flexible value version (and the newest known).
const FIRST_FLEXIBLE_VALUE_VERSION: i16 = 1;
/// Kafka's `RecordBatch.NO_PRODUCER_ID`: the default of the producer id tagged fields.
const NO_PRODUCER_ID: i64 = -1;

const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

const KEY_RECORD: &str = "TransactionLogKey";
const VALUE_RECORD: &str = "TransactionLogValue";

/// The state of a transaction, with Kafka's ids (the `transaction_status` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransactionState {
    /// The transactional id has a producer id but no transaction in progress.
    Empty,
    /// A transaction is open: partitions or offsets have been added to it.
    Ongoing,
    /// The producer asked to commit; markers are being written.
    PrepareCommit,
    /// The producer (or a timeout) asked to abort; markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
    /// The transactional id expired and is about to be removed.
    Dead,
    /// The epoch is being bumped to fence an older producer; the open transaction will abort.
    PrepareEpochFence,
}

impl TransactionState {
    /// Kafka's id for the state, as stored in `transaction_status`.
    pub(crate) fn id(self) -> i8 {
        match self {
            TransactionState::Empty => 0,
            TransactionState::Ongoing => 1,
            TransactionState::PrepareCommit => 2,
            TransactionState::PrepareAbort => 3,
            TransactionState::CompleteCommit => 4,
            TransactionState::CompleteAbort => 5,
            TransactionState::Dead => 6,
            TransactionState::PrepareEpochFence => 7,
        }
    }

    /// The state with Kafka's id `id`, if there is one.
    pub(crate) fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => TransactionState::Empty,
            1 => TransactionState::Ongoing,
            2 => TransactionState::PrepareCommit,
            3 => TransactionState::PrepareAbort,
            4 => TransactionState::CompleteCommit,
            5 => TransactionState::CompleteAbort,
            6 => TransactionState::Dead,
            7 => TransactionState::PrepareEpochFence,
            _ => return None,
        })
    }
}

/// The value of a `__transaction_state` record: what the coordinator knows of one
/// transactional id. Kafka's `TransactionLogValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TransactionMetadataValue {
    /// The producer id in use by the transactional id.
    pub(crate) producer_id: i64,
    /// The producer id of the last committed transaction (transactions v2, when the epoch
    /// overflowed and a new producer id was handed out); -1 when none.
    pub(crate) previous_producer_id: i64,
    /// The latest producer id sent to the producer (transactions v2); -1 when none.
    pub(crate) next_producer_id: i64,
    /// The epoch of `producer_id`.
    pub(crate) producer_epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub(crate) timeout_ms: i32,
    /// Where the transaction is.
    pub(crate) state: TransactionState,
    /// The partitions in the transaction. Always empty for an `Empty` transaction: Kafka does
    /// not store them, so the encoder does not write them and the decoder ignores them.
    pub(crate) partitions: Vec<TopicPartition>,
    /// When the transaction last changed (ms).
    pub(crate) last_update_timestamp: i64,
    /// When the transaction started (ms); -1 when none has.
    pub(crate) start_timestamp: i64,
    /// The `transaction.version` the client uses (2 for transactions v2); 0 in version 0
    /// records.
    pub(crate) client_transaction_version: i16,
}

/// Why a `__transaction_state` record could not be read.
pub(crate) type TxnRecordsError = InternalRecordError;

type Decoded<T> = Result<T, TxnRecordsError>;

/// The `__transaction_state` partition of a transactional id: Kafka's `partitionFor`,
/// `Utils.abs(transactionalId.hashCode()) % partitions`, the same function as for groups.
/// `partitions` is at least 1 (the topic exists); 0 gives 0.
pub(crate) fn partition_for_transactional_id(id: &str, partitions: u32) -> u32 {
    wire::partition_for(id, partitions)
}

// ---------------------------------------------------------------------------------------
// Encoding

/// The key of `transactional_id`'s state: `TransactionLogKey`, version 0.
pub(crate) fn transaction_key(transactional_id: &str) -> Vec<u8> {
    encode_with(&|w| {
        w.i16(KEY_VERSION);
        w.string(transactional_id);
    })
}

/// A transaction's state: `TransactionLogValue` version 1.
pub(crate) fn transaction_value(v: &TransactionMetadataValue) -> Vec<u8> {
    encode_value(v, VALUE_VERSION)
}

/// `v` as `TransactionLogValue` version `version` (0 or 1). Version 0 has no room for the
/// tagged fields, which are then lost, as in Kafka.
fn encode_value(v: &TransactionMetadataValue, version: i16) -> Vec<u8> {
    encode_with(&|w| {
        w.flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION;
        w.i16(version);
        w.i64(v.producer_id);
        w.i16(v.producer_epoch);
        w.i32(v.timeout_ms);
        w.i8(v.state.id());
        // Kafka stores no partitions (null) for an Empty transaction.
        let partitions = (v.state != TransactionState::Empty).then_some(&v.partitions[..]);
        w.topic_partitions(partitions);
        w.i64(v.last_update_timestamp);
        w.i64(v.start_timestamp);
        let previous = v.previous_producer_id.to_be_bytes();
        let next = v.next_producer_id.to_be_bytes();
        let client_version = v.client_transaction_version.to_be_bytes();
        let tagged: Vec<(u32, &[u8])> = [
            (
                TAG_PREVIOUS_PRODUCER_ID,
                &previous[..],
                v.previous_producer_id != NO_PRODUCER_ID,
            ),
            (
                TAG_NEXT_PRODUCER_ID,
                &next[..],
                v.next_producer_id != NO_PRODUCER_ID,
            ),
            (
                TAG_CLIENT_TRANSACTION_VERSION,
                &client_version[..],
                v.client_transaction_version != 0,
            ),
        ]
        .into_iter()
        .filter(|&(_, _, set)| set)
        .map(|(tag, bytes, _)| (tag, bytes))
        .collect();
        w.tagged_fields(&tagged);
    })
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes one `__transaction_state` record into the transactional id and its state, `None`
/// for a tombstone. A key of another version gives [`TxnRecordsError::UnknownKeyVersion`],
/// whatever the value.
pub(crate) fn decode(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TransactionMetadataValue>), TxnRecordsError> {
    let mut k = Reader::new(key, KEY_RECORD);
    let version = k.i16()?;
    if version != KEY_VERSION {
        return Err(TxnRecordsError::UnknownKeyVersion {
            topic: TRANSACTION_STATE_TOPIC,
            version,
        });
    }
    let transactional_id = k.bounded_string()?;
    k.finish()?;
    Ok((transactional_id, value.map(decode_value).transpose()?))
}

fn decode_value(bytes: &[u8]) -> Decoded<TransactionMetadataValue> {
    let mut r = Reader::new(bytes, VALUE_RECORD);
    let version = r.i16()?;
    if !(0..=FIRST_FLEXIBLE_VALUE_VERSION).contains(&version) {
        return Err(TxnRecordsError::UnsupportedVersion {
            record: VALUE_RECORD,
            version,
        });
    }
    r.flexible = version >= FIRST_FLEXIBLE_VALUE_VERSION;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = r.i8()?;
    let state = TransactionState::from_id(status).ok_or(TxnRecordsError::UnknownCode {
        field: "transaction state",
        code: i64::from(status),
    })?;
    let partitions = r.nullable_topic_partitions()?;
    let last_update_timestamp = r.i64()?;
    let start_timestamp = r.i64()?;
    let mut previous_producer_id = NO_PRODUCER_ID;
    let mut next_producer_id = NO_PRODUCER_ID;
    let mut client_transaction_version = 0;
    r.tagged_fields(|tag, bytes| -> Decoded<()> {
        let wrong_size = || TxnRecordsError::Corrupt {
            record: VALUE_RECORD,
            reason: "tagged field of the wrong size",
        };
        match tag {
            TAG_PREVIOUS_PRODUCER_ID => {
                previous_producer_id =
                    i64::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?);
            }
            TAG_NEXT_PRODUCER_ID => {
                next_producer_id = i64::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?);
            }
            TAG_CLIENT_TRANSACTION_VERSION => {
                client_transaction_version =
                    i16::from_be_bytes(bytes.try_into().map_err(|_| wrong_size())?);
            }
            // Fields of a newer Kafka: not known here, skipped as Kafka skips them.
            _ => {}
        }
        Ok(())
    })?;
    r.finish()?;
    // Kafka ignores the partitions of an Empty transaction (it writes none). A null array in
    // any other state is read as no partitions.
    let partitions = match partitions {
        Some(partitions) if state != TransactionState::Empty => partitions,
        _ => Vec::new(),
    };
    Ok(TransactionMetadataValue {
        producer_id,
        previous_producer_id,
        next_producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_timestamp,
        start_timestamp,
        client_transaction_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_STRING_LEN as MAX_TRANSACTIONAL_ID_LEN;
    use proptest::prelude::*;

    const ALL_STATES: [TransactionState; 8] = [
        TransactionState::Empty,
        TransactionState::Ongoing,
        TransactionState::PrepareCommit,
        TransactionState::PrepareAbort,
        TransactionState::CompleteCommit,
        TransactionState::CompleteAbort,
        TransactionState::Dead,
        TransactionState::PrepareEpochFence,
    ];

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// Concatenates byte pieces, for writing Kafka layouts out by hand.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn sample() -> TransactionMetadataValue {
        TransactionMetadataValue {
            producer_id: 1000,
            previous_producer_id: 5,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TransactionState::Ongoing,
            partitions: vec![tp("a", 0), tp("a", 1), tp("b", 4)],
            last_update_timestamp: 0x10,
            start_timestamp: 0x0f,
            client_transaction_version: 2,
        }
    }

    /// `sample()`'s fields up to the partitions, after the version.
    const SAMPLE_HEAD: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0x03, 0xe8, // producer_id 1000
        0, 3, // producer_epoch
        0, 0, 0xea, 0x60, // transaction_timeout_ms 60000
        1,    // transaction_status Ongoing
    ];

    /// `sample()`'s two timestamps.
    const SAMPLE_TIMESTAMPS: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 0x10, // transaction_last_update_timestamp_ms
        0, 0, 0, 0, 0, 0, 0, 0x0f, // transaction_start_timestamp_ms
    ];

    // Golden bytes, written out from Kafka's TransactionLogKey.json and TransactionLogValue.json.

    #[test]
    fn key_matches_kafka_layout() {
        assert_eq!(transaction_key("txn"), [0, 0, 0, 3, b't', b'x', b'n']);
        assert_eq!(
            decode(&[0, 0, 0, 3, b't', b'x', b'n'], None).unwrap(),
            ("txn".to_string(), None)
        );
    }

    #[test]
    fn value_v1_matches_kafka_layout() {
        let want = cat(&[
            &[0, 1], // version 1
            SAMPLE_HEAD,
            &[3], // two partition entries (compact: count + 1)
            &[2, b'a', 3, 0, 0, 0, 0, 0, 0, 0, 1, 0], // "a" [0, 1], no tagged fields
            &[2, b'b', 2, 0, 0, 0, 4, 0], // "b" [4], no tagged fields
            SAMPLE_TIMESTAMPS,
            &[2], // two tagged fields; next_producer_id is the default, left out
            &[0, 8, 0, 0, 0, 0, 0, 0, 0, 5], // tag 0 previous_producer_id 5
            &[2, 2, 0, 2], // tag 2 client_transaction_version 2
        ]);
        let value = transaction_value(&sample());
        assert_eq!(value, want);
        assert_eq!(
            decode(&transaction_key("t"), Some(&want)).unwrap(),
            ("t".to_string(), Some(sample()))
        );
    }

    #[test]
    fn value_v0_matches_kafka_layout() {
        let v0 = cat(&[
            &[0, 0], // version 0
            SAMPLE_HEAD,
            &[0, 0, 0, 2], // two partition entries
            &[0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 1, b'b', 0, 0, 0, 1, 0, 0, 0, 4],
            SAMPLE_TIMESTAMPS,
        ]);
        let want = TransactionMetadataValue {
            previous_producer_id: NO_PRODUCER_ID,
            client_transaction_version: 0,
            ..sample()
        };
        assert_eq!(encode_value(&want, 0), v0);
        assert_eq!(
            decode(&transaction_key("t"), Some(&v0)).unwrap(),
            ("t".to_string(), Some(want))
        );
    }

    #[test]
    fn empty_transactions_store_null_partitions() {
        let v = TransactionMetadataValue {
            state: TransactionState::Empty,
            partitions: Vec::new(),
            previous_producer_id: NO_PRODUCER_ID,
            client_transaction_version: 0,
            ..sample()
        };
        let v1 = cat(&[
            &[0, 1],
            &SAMPLE_HEAD[..SAMPLE_HEAD.len() - 1],
            &[0], // transaction_status Empty
            &[0], // null partitions
            SAMPLE_TIMESTAMPS,
            &[0], // no tagged fields
        ]);
        assert_eq!(transaction_value(&v), v1);
        let v0 = cat(&[
            &[0, 0],
            &SAMPLE_HEAD[..SAMPLE_HEAD.len() - 1],
            &[0],
            &[0xff, 0xff, 0xff, 0xff],
            SAMPLE_TIMESTAMPS,
        ]);
        assert_eq!(encode_value(&v, 0), v0);
        // Partitions given to an Empty transaction are not stored (Kafka refuses them)...
        let with_partitions = TransactionMetadataValue {
            partitions: vec![tp("a", 0)],
            ..v.clone()
        };
        assert_eq!(transaction_value(&with_partitions), v1);
        // ...and, as in Kafka, stored ones are ignored when reading.
        let stored = transaction_value(&TransactionMetadataValue {
            state: TransactionState::Ongoing,
            ..with_partitions
        });
        let mut as_empty = stored;
        as_empty[2 + 8 + 2 + 4] = 0;
        let key = transaction_key("t");
        assert_eq!(decode(&key, Some(&as_empty)).unwrap().1, Some(v.clone()));
        // A null array in another state reads as no partitions.
        let mut null_ongoing = v1.clone();
        null_ongoing[2 + 8 + 2 + 4] = 1;
        let got = decode(&key, Some(&null_ongoing)).unwrap().1.unwrap();
        assert_eq!(got.state, TransactionState::Ongoing);
        assert!(got.partitions.is_empty());
    }

    #[test]
    fn unknown_and_oversized_tagged_fields() {
        let head = transaction_value(&TransactionMetadataValue {
            previous_producer_id: NO_PRODUCER_ID,
            client_transaction_version: 0,
            ..sample()
        });
        // Drop the empty tagged-field section to append others.
        let body = &head[..head.len() - 1];
        let key = transaction_key("t");
        // Fields in any order, and an unknown tag 9 that a newer Kafka might add.
        let tagged = cat(&[
            body,
            &[3],
            &[9, 3, 0xaa, 0xbb, 0xcc],
            &[1, 8, 0, 0, 0, 0, 0, 0, 0x01, 0x00],
            &[2, 2, 0, 2],
        ]);
        let got = decode(&key, Some(&tagged)).unwrap().1.unwrap();
        assert_eq!(got.next_producer_id, 0x100);
        assert_eq!(got.previous_producer_id, NO_PRODUCER_ID);
        assert_eq!(got.client_transaction_version, 2);
        // A known field of the wrong size is corrupt, not misread.
        let short = cat(&[body, &[1], &[0, 4, 0, 0, 0, 5]]);
        assert_eq!(
            decode(&key, Some(&short)).unwrap_err().to_string(),
            "corrupt TransactionLogValue: tagged field of the wrong size"
        );
        // A tagged field running past the end.
        assert!(decode(&key, Some(&cat(&[body, &[1], &[9, 5, 0]]))).is_err());
    }

    #[test]
    fn state_ids_are_kafkas() {
        for (id, state) in ALL_STATES.into_iter().enumerate() {
            assert_eq!(state.id(), id as i8);
            assert_eq!(TransactionState::from_id(id as i8), Some(state));
        }
        assert_eq!(TransactionState::from_id(8), None);
        assert_eq!(TransactionState::from_id(-1), None);
    }

    #[test]
    fn unknown_status_is_an_error() {
        let key = transaction_key("t");
        for version in [0, 1] {
            let mut bytes = encode_value(&sample(), version);
            for status in [8i8, 42, -1, i8::MIN] {
                bytes[2 + 8 + 2 + 4] = status as u8;
                assert_eq!(
                    decode(&key, Some(&bytes)),
                    Err(TxnRecordsError::UnknownCode {
                        field: "transaction state",
                        code: i64::from(status)
                    })
                );
            }
        }
    }

    #[test]
    fn unknown_key_versions_are_not_corruption() {
        for version in [1i16, 2, 3, 100, -1] {
            let key = cat(&[&version.to_be_bytes(), &[0, 1, b't']]);
            for value in [None, Some(&b"whatever"[..])] {
                let err = decode(&key, value).unwrap_err();
                assert!(err.is_unknown_key_version(), "{version}: {err}");
            }
        }
        let corrupt = decode(&[0, 0, 0, 5, b't'], None).unwrap_err();
        assert!(!corrupt.is_unknown_key_version());
        assert_eq!(corrupt.to_string(), "corrupt TransactionLogKey: truncated");
        assert!(decode(&[0], None).is_err());
    }

    #[test]
    fn unknown_value_versions_are_unsupported() {
        let key = transaction_key("t");
        for version in [2i16, 3, -1, i16::MAX] {
            let bytes = cat(&[&version.to_be_bytes(), &encode_value(&sample(), 1)[2..]]);
            assert_eq!(
                decode(&key, Some(&bytes)),
                Err(TxnRecordsError::UnsupportedVersion {
                    record: VALUE_RECORD,
                    version
                })
            );
        }
    }

    #[test]
    fn bad_lengths_are_errors_not_allocations() {
        let key = transaction_key("t");
        let head = cat(&[&[0, 0], SAMPLE_HEAD]);
        // i32::MAX partition entries in a few bytes.
        let huge = cat(&[&head, &i32::MAX.to_be_bytes(), SAMPLE_TIMESTAMPS]);
        assert!(decode(&key, Some(&huge)).is_err());
        // A negative count that is not -1.
        let negative = cat(&[&head, &(-2i32).to_be_bytes(), SAMPLE_TIMESTAMPS]);
        assert!(decode(&key, Some(&negative)).is_err());
        // A negative partition id.
        let entry = cat(&[
            &[0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 1],
            &(-1i32).to_be_bytes(),
        ]);
        let negative_partition = cat(&[&head, &entry, SAMPLE_TIMESTAMPS]);
        assert!(decode(&key, Some(&negative_partition)).is_err());
        // A null transactional id, a negative length, invalid UTF-8, trailing bytes.
        assert!(decode(&[0, 0, 0xff, 0xff], None).is_err());
        assert!(decode(&[0, 0, 0xff, 0xfe], None).is_err());
        assert!(decode(&[0, 0, 0, 1, 0xff], None).is_err());
        assert!(decode(&[0, 0, 0, 1, b't', 0], None).is_err());
        // A compact string longer than Kafka allows (32768 bytes, so varint 32769).
        let long_topic = cat(&[
            &[0, 1],
            SAMPLE_HEAD,
            &[2, 0x81, 0x80, 0x02],
            &vec![b'a'; 1 << 15],
            &[1, 0],
            SAMPLE_TIMESTAMPS,
            &[0],
        ]);
        assert_eq!(
            decode(&key, Some(&long_topic)).unwrap_err().to_string(),
            "corrupt TransactionLogValue: string longer than 32767 bytes"
        );
    }

    #[test]
    fn overlong_ids_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(MAX_TRANSACTIONAL_ID_LEN); // two bytes each
        let (id, _) = decode(&transaction_key(&long), None).unwrap();
        assert_eq!(id.len(), MAX_TRANSACTIONAL_ID_LEN - 1);
        assert!(long.starts_with(&id));
    }

    #[test]
    fn partition_for_transactional_id_matches_kafka() {
        // Kafka's default transaction.state.log.num.partitions is 50; the hash is Java's
        // String.hashCode, as for groups.
        assert_eq!(partition_for_transactional_id("my-group", 50), 12);
        assert_eq!(partition_for_transactional_id("kafka-txn-0", 50), 30);
        // Utils.abs(Integer.MIN_VALUE) is 0.
        assert_eq!(partition_for_transactional_id("polygenelubricants", 50), 0);
        assert_eq!(partition_for_transactional_id("a", 0), 0);
    }

    // Round trips and robustness on random input.

    fn name() -> impl Strategy<Value = String> {
        "[a-z\u{e9}\u{1F600}.-]{0,10}"
    }

    fn state() -> impl Strategy<Value = TransactionState> {
        proptest::sample::select(ALL_STATES.to_vec())
    }

    fn partitions() -> impl Strategy<Value = Vec<TopicPartition>> {
        proptest::collection::vec(("[ab]{1,2}", 0..=i32::MAX as u32), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .collect()
        })
    }

    /// A value as Kafka could hold it: no partitions when Empty.
    fn value() -> impl Strategy<Value = TransactionMetadataValue> {
        (
            (any::<i64>(), any::<i64>(), any::<i64>()),
            (any::<i16>(), any::<i32>(), state(), partitions()),
            (any::<i64>(), any::<i64>(), any::<i16>()),
        )
            .prop_map(
                |(
                    (producer_id, previous_producer_id, next_producer_id),
                    (producer_epoch, timeout_ms, state, partitions),
                    (last_update_timestamp, start_timestamp, client_transaction_version),
                )| TransactionMetadataValue {
                    producer_id,
                    previous_producer_id,
                    next_producer_id,
                    producer_epoch,
                    timeout_ms,
                    state,
                    partitions: if state == TransactionState::Empty {
                        Vec::new()
                    } else {
                        partitions
                    },
                    last_update_timestamp,
                    start_timestamp,
                    client_transaction_version,
                },
            )
    }

    /// Every proper prefix of `bytes` fails `decode` as corrupt.
    fn every_truncation_fails<T: std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<(), TestCaseError> {
        for len in 0..bytes.len() {
            let got = decode(&bytes[..len]);
            prop_assert!(
                matches!(got, Err(TxnRecordsError::Corrupt { .. })),
                "prefix {len}/{}: {got:?}",
                bytes.len()
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn v1_round_trips(id in name(), v in value()) {
            let key = transaction_key(&id);
            let value = transaction_value(&v);
            prop_assert_eq!(key.capacity(), key.len());
            prop_assert_eq!(value.capacity(), value.len());
            prop_assert_eq!(decode(&key, Some(&value))?, (id.clone(), Some(v)));
            prop_assert_eq!(decode(&key, None)?, (id, None));
            every_truncation_fails(&value, |b| decode(&key, Some(b)))?;
            every_truncation_fails(&key, |k| decode(k, None))?;
        }

        #[test]
        fn v0_round_trips(id in name(), mut v in value()) {
            // Version 0 has no tagged fields: they read back as their defaults.
            v.previous_producer_id = NO_PRODUCER_ID;
            v.next_producer_id = NO_PRODUCER_ID;
            v.client_transaction_version = 0;
            let key = transaction_key(&id);
            let value = encode_value(&v, 0);
            prop_assert_eq!(value.capacity(), value.len());
            prop_assert_eq!(decode(&key, Some(&value))?, (id, Some(v)));
            every_truncation_fails(&value, |b| decode(&key, Some(b)))?;
        }

        /// Any bytes at all give a record or an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let _ = decode(&key, value.as_deref());
        }

        /// Random bodies behind a valid key and value version reach the field decoders.
        #[test]
        fn decoding_arbitrary_values_never_panics(
            version in 0i16..=2,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let value = cat(&[&version.to_be_bytes(), &body]);
            let _ = decode(&transaction_key("t"), Some(&value));
        }

        /// Valid values with random bytes flipped never panic either.
        #[test]
        fn decoding_damaged_values_never_panics(
            v in value(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut value = transaction_value(&v);
            for (at, byte) in flips {
                let i = at.index(value.len());
                value[i] ^= byte;
            }
            let _ = decode(&transaction_key("t"), Some(&value));
        }
    }
}
