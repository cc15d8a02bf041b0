//! `moldau serve` over the wire: the real binary, driven with Kafka's requests encoded by
//! kafka-protocol, as a client library would send them.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, Server, batch, create_topics};
use core_log::codec::{BatchBuilder, BatchProducer, RecordBatch};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Produces `records` to each `(topic, partition)`: per partition `(error code, base offset)`.
fn produce(c: &mut Client, acks: i16, parts: &[(&str, i32, Bytes)]) -> Vec<(i16, i64)> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(
            parts
                .iter()
                .map(|(t, p, records)| {
                    TopicProduceData::default()
                        .with_name(name(t))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(*p)
                                .with_records(Some(records.clone())),
                        ])
                })
                .collect(),
        );
    let res = c.send(9, &req);
    res.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (p.error_code, p.base_offset))
        })
        .collect()
}

fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn fetch(c: &mut Client, req: &FetchRequest) -> fetch_response::PartitionData {
    let res = c.send(12, req);
    assert_eq!(res.error_code, 0);
    res.responses[0].partitions[0].clone()
}

/// (offset, key, value) of every record in fetched batches.
fn records(bytes: &[u8]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((b, next))) = RecordBatch::split(rest) {
        for r in b.records() {
            let r = r.unwrap();
            out.push((r.offset, r.key.unwrap().to_vec(), r.value.unwrap().to_vec()));
        }
        rest = next;
    }
    out
}

#[test]
fn api_versions_lists_what_is_served_and_answers_newer_clients_in_v0() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    for version in 0..=3 {
        let res = c.send(version, &ApiVersionsRequest::default());
        assert_eq!(res.error_code, 0);
        let produce = res.api_keys.iter().find(|k| k.api_key == 0).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (3, 9));
        let fetch = res.api_keys.iter().find(|k| k.api_key == 1).unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
        assert!(res.api_keys.iter().any(|k| k.api_key == 18));
    }
    // KIP-511: a version newer than the server's is answered with UNSUPPORTED_VERSION and
    // the list, in v0's layout, on a connection that stays open.
    let mut raw = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(18)
        .with_request_api_version(7)
        .with_correlation_id(4242)
        .encode(&mut raw, 2)
        .unwrap();
    ApiVersionsRequest::default().encode(&mut raw, 3).unwrap();
    c.write_frame(&raw);
    let mut frame = c.read_frame().unwrap();
    assert_eq!(
        ResponseHeader::decode(&mut frame, 0)
            .unwrap()
            .correlation_id,
        4242
    );
    let res = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(res.error_code, 35);
    assert!(
        res.api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version == 3)
    );
    assert_eq!(c.send(3, &ApiVersionsRequest::default()).error_code, 0);
}

#[test]
fn records_are_fetched_as_stored_and_kept_across_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("likes", 2, 1)]), vec![0]);

    let first = batch(&[(b"k1", b"+1"), (b"k2", b"+2")], 1_000);
    let second = batch(&[(b"k3", b"+3")], 2_000);
    assert_eq!(
        produce(&mut c, 1, &[("likes", 0, first.clone())]),
        vec![(0, 0)]
    );
    assert_eq!(
        produce(&mut c, -1, &[("likes", 0, second.clone())]),
        vec![(0, 2)]
    );

    let p = fetch(&mut c, &fetch_request("likes", 0, 0));
    assert_eq!(
        (p.error_code, p.high_watermark, p.last_stable_offset),
        (0, 3, 3)
    );
    let fetched = p.records.unwrap();
    // The stored batches are the produced bytes, with the base offset and the partition
    // leader epoch (both outside the CRC) set by the log.
    assert_eq!(fetched.len(), first.len() + second.len());
    assert_eq!(&fetched[16..first.len()], &first[16..]);
    assert_eq!(
        records(&fetched),
        vec![
            (0, b"k1".to_vec(), b"+1".to_vec()),
            (1, b"k2".to_vec(), b"+2".to_vec()),
            (2, b"k3".to_vec(), b"+3".to_vec())
        ]
    );
    // From the middle of a batch: the whole batch (the consumer skips what it did not ask for).
    let p = fetch(&mut c, &fetch_request("likes", 0, 2));
    assert_eq!(
        records(&p.records.unwrap()),
        vec![(2, b"k3".to_vec(), b"+3".to_vec())]
    );
    let p = fetch(&mut c, &fetch_request("likes", 0, 3));
    assert!(p.records.unwrap().is_empty());
    let p = fetch(&mut c, &fetch_request("likes", 0, 4));
    assert_eq!(
        (p.error_code, p.high_watermark, p.log_start_offset),
        (1, 3, 0)
    );

    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
    // A clean close: the next open needs no recovery, and has everything.
    assert!(data.join("clean-shutdown").exists());
    {
        let log = core_log::Log::open(&data).unwrap();
        let read = log.partition("likes", 0).unwrap().read(0, 1 << 20).unwrap();
        let values: Vec<_> = read.records().map(|r| r.value.unwrap().to_vec()).collect();
        assert_eq!(values, vec![b"+1".to_vec(), b"+2".to_vec(), b"+3".to_vec()]);
        log.close().unwrap();
    }
    let server = Server::start(&data, &[]);
    let mut c = Client::connect(server.addr);
    let p = fetch(&mut c, &fetch_request("likes", 0, 0));
    assert_eq!(records(&p.records.unwrap()).len(), 3);
    assert!(server.stop().success());
}

#[test]
fn a_fetch_waits_for_min_bytes_until_an_append_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("events", 1, -1)]), vec![0]);

    // Nothing arrives: the wait ends at max_wait_ms with no records.
    let waiting = fetch_request("events", 0, 0)
        .with_max_wait_ms(200)
        .with_min_bytes(1);
    let p = fetch(&mut c, &waiting);
    assert_eq!((p.error_code, p.high_watermark), (0, 0));
    assert!(p.records.unwrap().is_empty());

    // A record arrives while the fetch waits (up to 60 s): the append wakes it, and it
    // returns the record.
    let addr = server.addr;
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = Client::connect(addr);
        produce(&mut c, 1, &[("events", 0, batch(&[(b"k", b"v")], 5))])
    });
    let long = fetch_request("events", 0, 0)
        .with_max_wait_ms(60_000)
        .with_min_bytes(1);
    let p = fetch(&mut c, &long);
    assert_eq!(producer.join().unwrap(), vec![(0, 0)]);
    assert_eq!(
        records(&p.records.unwrap()),
        vec![(0, b"k".to_vec(), b"v".to_vec())]
    );

    // A long poll does not hold up shutdown.
    let mut waiter = Client::connect(server.addr);
    waiter.send_request(
        12,
        &fetch_request("events", 0, 1)
            .with_max_wait_ms(60_000)
            .with_min_bytes(1),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.stop().success());
}

#[test]
fn list_offsets_finds_the_earliest_the_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("clicks", 1, 1)]), vec![0]);
    produce(
        &mut c,
        1,
        &[("clicks", 0, batch(&[(b"a", b"1"), (b"b", b"2")], 1_000))],
    );
    produce(&mut c, 1, &[("clicks", 0, batch(&[(b"c", b"3")], 5_000))]);
    let list = |c: &mut Client, ts: i64| {
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("clicks"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ]);
        let p = c.send(6, &req).topics[0].partitions[0].clone();
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(list(&mut c, -2), (0, 0, -1));
    assert_eq!(list(&mut c, -1), (0, 3, -1));
    assert_eq!(list(&mut c, 0), (0, 0, 1_000));
    assert_eq!(list(&mut c, 1_001), (0, 1, 1_001));
    assert_eq!(list(&mut c, 1_002), (0, 2, 5_000));
    assert_eq!(list(&mut c, 9_000), (0, -1, -1));
    assert!(server.stop().success());
}

#[test]
fn topics_are_created_grown_and_deleted_with_kafkas_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        create_topics(
            &mut c,
            &[("a", 3, 1), ("b", 2, 3), ("bad/name", 1, 1), ("c", 0, 1)]
        ),
        vec![0, 38, 17, 37]
    );
    assert_eq!(create_topics(&mut c, &[("a", 1, 1)]), vec![36]);
    // A config with Kafka's name, checked.
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("compacted"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_value(Some(StrBytes::from_static_str("compact"))),
            ]),
        CreatableTopic::default()
            .with_name(name("misconfigured"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("soon"))),
            ]),
    ]);
    let res = c.send(7, &req);
    assert_eq!(res.topics[0].error_code, 0);
    assert_eq!(res.topics[0].num_partitions, 1);
    assert_eq!(res.topics[1].error_code, 40);

    let grow = |c: &mut Client, topic: &str, count: i32| {
        let req = CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count),
        ]);
        c.send(3, &req).results[0].error_code
    };
    assert_eq!(grow(&mut c, "a", 5), 0);
    assert_eq!(grow(&mut c, "a", 4), 37);
    assert_eq!(grow(&mut c, "nope", 4), 3);

    let metadata = |c: &mut Client| {
        let res = c.send(12, &MetadataRequest::default().with_topics(None));
        let mut topics: Vec<_> = res
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().to_string(), t.partitions.len()))
            .collect();
        topics.sort();
        (res.brokers[0].port, topics)
    };
    let (port, topics) = metadata(&mut c);
    assert_eq!(port, i32::from(server.addr.port()));
    assert_eq!(topics, vec![("a".into(), 5), ("compacted".into(), 1)]);

    let req = DeleteTopicsRequest::default().with_topic_names(vec![name("a"), name("nope")]);
    let res = c.send(5, &req);
    let codes: Vec<_> = res.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![0, 3]);
    assert_eq!(metadata(&mut c).1, vec![("compacted".into(), 1)]);
    assert!(server.stop().success());
}

#[test]
fn metadata_creates_a_missing_topic_when_the_client_and_the_server_allow_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--num-partitions", "3"]);
    let mut c = Client::connect(server.addr);
    let ask = |c: &mut Client, topic: &str, allow: bool| {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic))),
            ]))
            .with_allow_auto_topic_creation(allow);
        let t = c.send(12, &req).topics[0].clone();
        (t.error_code, t.partitions.len())
    };
    assert_eq!(ask(&mut c, "not-yet", false), (3, 0));
    assert_eq!(ask(&mut c, "not-yet", true), (0, 3));
    assert!(server.stop().success());

    let server = Server::start(
        &dir.path().join("data"),
        &["--auto-create-topics-enable", "false"],
    );
    let mut c = Client::connect(server.addr);
    assert_eq!(ask(&mut c, "not-yet", true), (0, 3));
    assert_eq!(ask(&mut c, "other", true), (3, 0));
    assert!(server.stop().success());
}

#[test]
fn produce_refusals_are_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(
        create_topics(&mut c, &[("t", 1, 1), ("u", 1, 1)]),
        vec![0, 0]
    );

    let good = batch(&[(b"k", b"v")], 1);
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // fails the CRC
    // A codec id no client writes (5), under a valid CRC.
    let mut unknown = good.to_vec();
    unknown[22] |= 5;
    let crc = crc32c::crc32c(&unknown[21..]);
    unknown[17..21].copy_from_slice(&crc.to_be_bytes());
    let res = produce(
        &mut c,
        1,
        &[
            ("t", 0, good.clone()),
            ("missing", 0, good.clone()),
            ("u", 0, Bytes::from(corrupt)),
            ("u", 0, Bytes::from(unknown)),
            ("__consumer_offsets", 0, good.clone()),
        ],
    );
    let codes: Vec<_> = res.iter().map(|r| r.0).collect();
    // OK, UNKNOWN_TOPIC_OR_PARTITION, INVALID_RECORD twice, INVALID_TOPIC_EXCEPTION (an
    // internal topic: only the coordinators write it).
    assert_eq!(codes, vec![0, 3, 87, 87, 17]);
    // A transactional batch of a producer that never added the partition to an open
    // transaction: INVALID_TXN_STATE, so that no transaction starts that no marker would end.
    let mut b =
        core_log::codec::BatchBuilder::new(Vec::new()).producer(core_log::codec::BatchProducer {
            producer_id: 4_000,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
        });
    b.append(1, Some(b"k"), Some(b"v"), &[]);
    let res = produce(&mut c, 1, &[("u", 0, Bytes::from(b.finish()))]);
    assert_eq!(res[0].0, 48);
    assert_eq!(produce(&mut c, 2, &[("t", 0, good.clone())])[0].0, 21);
    // Nothing of the refused batches was appended.
    let p = fetch(&mut c, &fetch_request("u", 0, 0));
    assert_eq!(p.high_watermark, 0);
    let p = fetch(&mut c, &fetch_request("t", 0, 0));
    assert_eq!(p.high_watermark, 1);
    assert!(server.stop().success());
}

#[test]
fn acks_zero_gets_no_response_and_a_failure_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("t", 1, 1)]), vec![0]);
    let req = |topic: &str| {
        ProduceRequest::default().with_acks(0).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(&[(b"k", b"v")], 1))),
                ]),
        ])
    };
    c.send_request(9, &req("t"));
    // The next response on the connection is the metadata's, not the produce's.
    let res = c.send(12, &MetadataRequest::default().with_topics(None));
    assert_eq!(res.topics.len(), 1);
    let p = fetch(&mut c, &fetch_request("t", 0, 0));
    assert_eq!(p.high_watermark, 1);

    c.send_request(9, &req("missing"));
    assert!(c.is_closed_by_server());
    assert!(server.stop().success());
}

#[test]
fn an_idempotent_producer_gets_an_id_and_its_retries_are_not_appended_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("t", 1, 1)]), vec![0]);
    let idempotent_init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let res = c.send(4, &idempotent_init);
    assert_eq!(res.error_code, 0);
    assert!(res.producer_id.0 >= 0);
    let other = c.send(4, &idempotent_init);
    assert_eq!(other.error_code, 0);
    assert_ne!(other.producer_id, res.producer_id);
    // An empty transactional id is Kafka's INVALID_REQUEST.
    assert_eq!(c.send(4, &InitProducerIdRequest::default()).error_code, 42);
    // With a transactional id: the id's producer id, and a new epoch for each new instance,
    // fencing the older ones.
    let transactional_init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
        .with_transaction_timeout_ms(60_000);
    let first = c.send(4, &transactional_init);
    let second = c.send(4, &transactional_init);
    assert_eq!((first.error_code, second.error_code), (0, 0));
    assert_eq!(first.producer_id, second.producer_id);
    assert_eq!(second.producer_epoch, first.producer_epoch + 1);
    // Kafka's bound on transaction.timeout.ms.
    let too_long = transactional_init.with_transaction_timeout_ms(3_600_000);
    assert_eq!(
        c.send(4, &too_long).error_code,
        50,
        "INVALID_TRANSACTION_TIMEOUT"
    );

    let idempotent = |seq: i32| -> Bytes {
        let mut b = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: res.producer_id.0,
            producer_epoch: res.producer_epoch,
            base_sequence: seq,
            transactional: false,
        });
        b.append(1, Some(b"k"), Some(b"v"), &[]);
        b.finish().into()
    };
    assert_eq!(
        produce(&mut c, -1, &[("t", 0, idempotent(0))]),
        vec![(0, 0)]
    );
    assert_eq!(
        produce(&mut c, -1, &[("t", 0, idempotent(1))]),
        vec![(0, 1)]
    );
    // A retry whose acknowledgement was lost: answered with the original offset.
    assert_eq!(
        produce(&mut c, -1, &[("t", 0, idempotent(1))]),
        vec![(0, 1)]
    );
    // A gap in the sequence.
    assert_eq!(produce(&mut c, -1, &[("t", 0, idempotent(5))])[0].0, 45);
    assert_eq!(fetch(&mut c, &fetch_request("t", 0, 0)).high_watermark, 2);
    assert!(server.stop().success());
}
